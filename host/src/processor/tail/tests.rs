use std::sync::Arc;

use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, Status};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

use super::*;

fn sampler(toml_text: &str) -> (Arc<TailSampler>, Telemetry) {
    let (s, t) = sampler_in(toml_text, None);
    (Arc::new(s), t)
}

/// The sampler `tail` for an exporter with `queue`.
fn sampler_in(toml_text: &str, queue: Option<&QueueView<'_>>) -> (TailSampler, Telemetry) {
    let c: TailConfig = toml::from_str(toml_text).unwrap();
    let t = Telemetry::default();
    let s = TailSampler::new("processors.tail", "tail", &c, &t, queue).unwrap();
    (s, t)
}

/// A durable queue's view, keeping state in `dir`.
fn durable(dir: &std::path::Path) -> QueueView<'_> {
    QueueView {
        state: Some(dir),
        budget: 1 << 30,
    }
}

/// The value of the metric line that starts with `line` (name and labels).
fn metric(t: &Telemetry, line: &str) -> u64 {
    let text = t.render();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
}

/// Late spans that followed `decision`.
fn late(t: &Telemetry, decision: &str) -> u64 {
    metric(
        t,
        &format!("ferry_tail_late_spans_total{{processor=\"tail\",decision=\"{decision}\"}}"),
    )
}

/// A resource with this `service.name`.
pub(super) fn service_resource(service: &str) -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A request of `service`'s spans: (trace, span id, error?).
fn batch(service: &str, spans: &[(u8, u8, bool)]) -> Bytes {
    let spans = spans
        .iter()
        .map(|&(trace, id, error)| Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            status: Some(Status {
                code: if error { 2 } else { 0 },
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(service_resource(service)),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec().into()
}

/// Span ids (their first byte) of what a batch's answer holds.
fn kept(batch: &Bytes, out: &Output) -> Vec<u8> {
    let bytes = match out {
        Output::Unchanged => batch.clone(),
        Output::Replaced { payload, .. } => payload.clone(),
    };
    ExportTraceServiceRequest::decode(bytes)
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| s.span_id[0])
        .collect()
}

const ERRORS: &str = r#"
    decision_wait = "10s"
    policies = [{ name = "errors", spans = { any = [{ status = "error" }] } }]
"#;

#[tokio::test(start_paused = true)]
async fn a_batch_is_answered_once_its_traces_are_decided_whole_across_batches() {
    let (t, telemetry) = sampler(ERRORS);
    // Trace 1's error comes in the second batch; trace 2 has none.
    let b1 = batch("front", &[(1, 11, false), (2, 21, false)]);
    let b2 = batch("back", &[(1, 12, true), (2, 22, false)]);
    let first = tokio::spawn({
        let (t, b1) = (t.clone(), b1.clone());
        async move { t.process(&b1).await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!first.is_finished(), "held until its traces are due");
    let second = tokio::spawn({
        let (t, b2) = (t.clone(), b2.clone());
        async move { t.process(&b2).await }
    });
    let out1 = first.await.unwrap();
    assert_eq!(
        kept(&b1, &out1),
        [11],
        "trace 1 is kept for its later error"
    );
    assert_eq!(
        out1,
        Output::Replaced {
            payload: match &out1 {
                Output::Replaced { payload, .. } => payload.clone(),
                Output::Unchanged => unreachable!(),
            },
            items: 1
        }
    );
    let out2 = second.await.unwrap();
    assert_eq!(kept(&b2, &out2), [12]);
    // A late span follows its trace's decision at once.
    let after = batch("late", &[(1, 13, false), (2, 23, true)]);
    let out = tokio::time::timeout(Duration::from_millis(1), t.process(&after))
        .await
        .expect("late spans wait for nothing");
    assert_eq!(
        kept(&after, &out),
        [13],
        "trace 2 stays dropped despite a late error"
    );
    let decided = |policy: &str, d: &str| {
        metric(
            &telemetry,
            &format!(
                "ferry_tail_traces_decided_total{{processor=\"tail\",decision=\"{d}\",policy=\"{policy}\"}}"
            ),
        )
    };
    assert_eq!(
        (decided("errors", "keep"), decided("default", "drop")),
        (1, 1)
    );
    assert_eq!((late(&telemetry, "keep"), late(&telemetry, "drop")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn past_max_traces_the_oldest_are_decided_early_and_nothing_waits_forever() {
    let (t, telemetry) = sampler(
        r#"
        decision_wait = "60s"
        max_traces = 2
        default = "keep"
        "#,
    );
    let b = batch("a", &[(1, 1, false), (2, 2, false), (3, 3, false)]);
    let out = tokio::time::timeout(Duration::from_secs(61), t.process(&b))
        .await
        .unwrap();
    assert_eq!(out, Output::Unchanged, "every trace kept by the default");
    assert_eq!(t.held().traces(), 0);
    let early = "ferry_tail_early_decisions_total{processor=\"tail\"}";
    assert_eq!(
        metric(&telemetry, early),
        1,
        "the oldest of three, over max_traces = 2"
    );
}

#[tokio::test(start_paused = true)]
async fn kept_decisions_outlive_the_sampler_and_replayed_spans_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("x.d");
    let with_journal = |text: &str| sampler_in(text, Some(&durable(&state)));
    let (before, _) = with_journal(ERRORS);
    let b1 = batch("front", &[(1, 11, true), (2, 21, false)]);
    assert_eq!(kept(&b1, &before.process(&b1).await), [11]);
    drop(before);
    // The daemon restarts: a replayed batch holds the rest of both traces, an error now in
    // trace 2 and none in trace 1. Each follows the decision made before, at once.
    let (after, telemetry) = with_journal(ERRORS);
    let b2 = batch("back", &[(1, 12, false), (2, 22, true), (3, 31, true)]);
    let waiting = tokio::spawn(async move { after.process(&b2).await });
    tokio::time::sleep(Duration::from_secs(11)).await;
    let out = waiting.await.unwrap();
    assert_eq!(
        kept(
            &batch("back", &[(1, 12, false), (2, 22, true), (3, 31, true)]),
            &out
        ),
        [12, 31],
        "trace 1 kept and trace 2 dropped as before the restart; trace 3 is new"
    );
    assert_eq!((late(&telemetry, "keep"), late(&telemetry, "drop")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_decisions_file_is_cut_down_to_what_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tail.decisions");
    let (s, _) = sampler_in(
        "decision_wait = \"1s\"\ndecided_traces = 3",
        Some(&durable(dir.path())),
    );
    for trace in 1..=20 {
        s.process(&batch("a", &[(trace, trace, false)])).await;
    }
    let records = std::fs::metadata(&path).unwrap().len() / 17;
    assert!((3..=7).contains(&records), "{records} records");
    let j = journal::Journal::open(&path).unwrap();
    let last: Vec<u8> = j.read(100).unwrap().iter().map(|(id, _)| id[0]).collect();
    assert!(last.ends_with(&[18, 19, 20]), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn past_max_bytes_the_oldest_batches_traces_are_decided_early() {
    // Half the queue's budget by default: a batch is over it by itself here.
    let queue = QueueView {
        state: None,
        budget: 100,
    };
    let (t, telemetry) = sampler_in(ERRORS, Some(&queue));
    let b = batch("a", &[(1, 1, true), (2, 2, false)]);
    assert!(b.len() > 50);
    let out = tokio::time::timeout(Duration::from_millis(1), t.process(&b))
        .await
        .expect("decided at once");
    assert_eq!(kept(&b, &out), [1]);
    let early = "ferry_tail_early_decisions_total{processor=\"tail\"}";
    assert_eq!(metric(&telemetry, early), 2);
    assert_eq!(t.held().bytes(), 0, "answered, so no longer held");
}

#[tokio::test(start_paused = true)]
async fn with_idle_a_trace_is_decided_that_long_after_its_root() {
    let (t, _) = sampler("decision_wait = \"60s\"\nidle = \"2s\"\ndefault = \"keep\"");
    // The helper's spans have no parent: each is its trace's root.
    let b = batch("a", &[(1, 1, false)]);
    let started = Instant::now();
    let out = t.process(&b).await;
    assert_eq!(out, Output::Unchanged);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[test]
fn settings_are_checked_whole() {
    let c: TailConfig = toml::from_str(
        r#"
        decision_wait = "0s"
        idle = "1s"
        max_traces = 0
        max_bytes = 1000
        policies = [{ name = "p", percentage = -1 }]
        "#,
    )
    .unwrap();
    let queue = QueueView {
        state: None,
        budget: 1000,
    };
    let errors = TailSampler::new(
        "processors.tail",
        "tail",
        &c,
        &Telemetry::default(),
        Some(&queue),
    )
    .err()
    .unwrap()
    .join("\n");
    for needle in [
        "processors.tail.decision_wait: must be above 0",
        "processors.tail.idle: must be above 0 and below decision_wait",
        "processors.tail.max_bytes: 1000 bytes must be below the exporter's queue budget (1000 bytes)",
        "processors.tail.max_traces: must be at least 1",
        "processors.tail.policies[0].percentage",
    ] {
        assert!(errors.contains(needle), "{needle} missing from {errors}");
    }
}
