use super::*;

fn limits(max_traces: usize, max_bytes: usize, remembered: usize) -> Limits {
    Limits {
        wait: Duration::from_secs(10),
        max_traces,
        max_bytes,
        remembered,
        max_batches: 100,
        idle: None,
    }
}

fn span(n: usize) -> HeldSpan {
    HeldSpan {
        resource: Bytes::new(),
        scope: Bytes::new(),
        span: Bytes::from(vec![0u8; n]),
    }
}

fn id(n: u8) -> TraceId {
    [n; 16]
}

fn held(a: Admitted) -> (Verdict, Instant) {
    match a {
        Admitted::Held(v, due, _) => (v, due),
        Admitted::Late(d) => panic!("late, {d:?}"),
    }
}

#[test]
fn with_idle_a_trace_is_due_that_long_after_its_root_when_that_is_sooner() {
    let mut h = Held::new(Limits {
        idle: Some(Duration::from_secs(2)),
        ..limits(100, 1 << 20, 100)
    });
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    held(h.admit(id(1), span(1), false, t0));
    let (_, due) = held(h.admit(id(1), span(1), true, at(1)));
    assert_eq!(due, at(3), "its root came at 1 s");
    held(h.admit(id(2), span(1), false, at(1)));
    // A root too late to bring its trace forward changes nothing.
    held(h.admit(id(3), span(1), false, at(2)));
    let (_, due3) = held(h.admit(id(3), span(1), true, at(11)));
    assert_eq!(due3, at(12));
    assert_eq!(h.next_due(), Some(at(3)));
    let taken = h.take_due(at(3), false);
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].0.id, taken[0].0.early), (id(1), false));
    h.settle(id(1), &taken[0].1, Decision::Keep);
    assert_eq!(
        h.next_due(),
        Some(at(10)),
        "trace 1's first place is passed over"
    );
    let taken: Vec<TraceId> = h
        .take_due(at(12), false)
        .iter()
        .map(|(d, _)| d.id)
        .collect();
    assert_eq!(taken, [id(2), id(3)]);
    assert_eq!((h.traces(), h.bytes()), (0, 0));
}

#[test]
fn a_trace_is_due_its_wait_after_its_first_span_and_late_spans_follow_it() {
    let mut h = Held::new(limits(100, 1 << 20, 100));
    let t0 = Instant::now();
    let (v1, due) = held(h.admit(id(1), span(10), false, t0));
    assert_eq!(due, t0 + Duration::from_secs(10));
    let (v1b, due_b) = held(h.admit(id(1), span(5), false, t0 + Duration::from_secs(3)));
    assert!(Arc::ptr_eq(&v1, &v1b), "one verdict per trace");
    assert_eq!(due_b, due, "a later span does not move the trace's time");
    held(h.admit(id(2), span(1), false, t0 + Duration::from_secs(1)));
    assert_eq!(h.traces(), 2);

    assert!(h.take_due(t0 + Duration::from_secs(9), false).is_empty());
    let due_now = h.take_due(t0 + Duration::from_secs(10), false);
    assert_eq!(due_now.len(), 1);
    let (trace, verdict) = &due_now[0];
    assert_eq!(
        (trace.id, trace.spans.len(), trace.early),
        (id(1), 2, false)
    );
    h.settle(trace.id, verdict, Decision::Keep);
    assert_eq!(v1.get(), Some(&Decision::Keep));
    assert_eq!(h.traces(), 1);
    assert_eq!(h.next_due(), Some(t0 + Duration::from_secs(11)));

    assert!(matches!(
        h.admit(id(1), span(3), false, t0 + Duration::from_secs(20)),
        Admitted::Late(Decision::Keep)
    ));
}

#[test]
fn over_a_bound_the_oldest_traces_are_decided_early() {
    let t0 = Instant::now();
    let mut by_count = Held::new(limits(2, 1 << 20, 10));
    for n in 1..=3 {
        held(by_count.admit(id(n), span(1), false, t0));
    }
    let early = by_count.take_due(t0, false);
    assert_eq!(early.len(), 1);
    assert_eq!((early[0].0.id, early[0].0.early), (id(1), true));

    let mut by_bytes = Held::new(limits(100, 100, 10));
    for n in 1..=4 {
        held(by_bytes.admit(id(n), span(1), false, t0));
    }
    let b1 = by_bytes.hold_batch(60, vec![id(1), id(2)]);
    by_bytes.hold_batch(30, vec![id(2), id(3)]);
    assert!(by_bytes.take_due(t0, false).is_empty());
    by_bytes.hold_batch(30, vec![id(4)]);
    let early: Vec<TraceId> = by_bytes
        .take_due(t0, false)
        .iter()
        .map(|(d, _)| d.id)
        .collect();
    assert_eq!(
        early,
        [id(1), id(2)],
        "the traces of the oldest batch: enough to get under"
    );
    assert_eq!(by_bytes.bytes(), 120, "until the batch is answered");
    by_bytes.release_batch(b1);
    assert_eq!(by_bytes.bytes(), 60);

    let mut by_batches = Held::new(Limits {
        max_batches: 1,
        ..limits(100, 1 << 20, 10)
    });
    for n in 1..=2 {
        held(by_batches.admit(id(n), span(1), false, t0));
        by_batches.hold_batch(1, vec![id(n)]);
    }
    let early: Vec<TraceId> = by_batches
        .take_due(t0, false)
        .iter()
        .map(|(d, _)| d.id)
        .collect();
    assert_eq!(early, [id(1)]);
}

#[test]
fn the_least_recently_used_decision_is_forgotten_first() {
    let t0 = Instant::now();
    let mut h = Held::new(limits(100, 1 << 20, 2));
    for n in 1..=2 {
        held(h.admit(id(n), span(1), false, t0));
    }
    for (d, v) in h.take_due(t0 + Duration::from_secs(10), false) {
        h.settle(d.id, &v, Decision::Drop);
    }
    // Trace 1 is used again, so trace 2 is the one a third decision pushes out.
    assert!(matches!(
        h.admit(id(1), span(1), false, t0),
        Admitted::Late(Decision::Drop)
    ));
    held(h.admit(id(3), span(1), false, t0));
    for (d, v) in h.take_due(t0 + Duration::from_secs(10), false) {
        h.settle(d.id, &v, Decision::Keep);
    }
    assert!(matches!(
        h.admit(id(1), span(1), false, t0),
        Admitted::Late(Decision::Drop)
    ));
    assert!(matches!(
        h.admit(id(3), span(1), false, t0),
        Admitted::Late(Decision::Keep)
    ));
    assert!(
        matches!(
            h.admit(id(2), span(1), false, t0),
            Admitted::Held(_, _, true)
        ),
        "forgotten, and known to have been decided"
    );
    assert!(
        matches!(
            h.admit(id(4), span(1), false, t0),
            Admitted::Held(_, _, false)
        ),
        "a new trace"
    );
    // Uses keep the stale entries bounded.
    for _ in 0..100 {
        h.admit(id(1), span(1), false, t0);
    }
    assert!(h.decided.order.len() <= 5, "{}", h.decided.order.len());
}
