//! Tail sampling in an exporter's chain, with the real OpenTelemetry SDK: traces whose spans
//! arrive in two requests seconds apart are kept or dropped whole, as the first policy that
//! holds says, and `/metrics` counts each decision; spans that come after their trace's
//! decision follow it, and so do those a durable queue replays after a `kill -9`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, client_json, client_script, eventually, python,
};
use crate::scale_out_gateways::spans_at;

/// One tail sampler keeping error and slow traces, in the chain of an exporter to `sink`.
fn config(sink: &Sink, wait: &str, queue: &str) -> String {
    format!(
        r#"
        {PREAMBLE}
        {queue}
        [processors.tail]
        kind = "tail_sample"
        decision_wait = "{wait}"
        policies = [
          {{ name = "errors", spans = {{ any = [{{ status = "error" }}] }} }},
          {{ name = "slow", duration_at_least = "500ms" }},
        ]
        [exporters.capture]
        plugin = "otlp-http"
        processors = ["tail"]
        config = {{ endpoint = "{}" }}
        "#,
        sink.url()
    )
}

/// The mix client sending to `f`, with `args`.
fn mix(f: &Ferry, args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(client_script("otel_tail_mix.py"))
        .args(["--endpoint", &format!("http://{}", f.grpc.unwrap())])
        .args(args);
    c
}

/// Span ids the client sent, of traces the policies keep (error, slow) and drop (fast).
fn split(sent: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut kept, mut dropped) = (BTreeSet::new(), BTreeSet::new());
    for s in sent["spans"].as_array().unwrap() {
        let id = s["span_id"].as_str().unwrap().to_string();
        if s["kind"] == "fast" {
            dropped.insert(id);
        } else {
            kept.insert(id);
        }
    }
    (kept, dropped)
}

async fn decided(f: &Ferry, policy: &str, decision: &str) -> u64 {
    let labels = [
        "processor=\"tail\"",
        &format!("decision=\"{decision}\""),
        &format!("policy=\"{policy}\""),
    ];
    f.metric("ferry_tail_traces_decided_total", &labels).await
}

/// Traces decided, by errors (kept), slow (kept) and default (dropped).
async fn decisions(f: &Ferry) -> (u64, u64, u64) {
    (
        decided(f, "errors", "keep").await,
        decided(f, "slow", "keep").await,
        decided(f, "default", "drop").await,
    )
}

async fn late(f: &Ferry, decision: &str) -> u64 {
    let d = format!("decision=\"{decision}\"");
    f.metric("ferry_tail_late_spans_total", &["processor=\"tail\"", &d])
        .await
}

async fn dropped_items(f: &Ferry) -> u64 {
    let labels = [
        "processor=\"tail\"",
        "signal=\"traces\"",
        "outcome=\"dropped\"",
    ];
    f.metric("ferry_processor_items_total", &labels).await
}

/// Waits until every kept span reached `sink`, then checks that nothing else did.
async fn only_kept_arrive(sink: &Sink, kept: &BTreeSet<String>, dropped: &BTreeSet<String>) {
    eventually("the kept traces reach the backend", async || {
        let (got, _) = spans_at(sink);
        kept.iter().all(|s| got.contains_key(s))
    })
    .await;
    let (got, _) = spans_at(sink);
    let arrived: BTreeSet<&String> = got.keys().collect();
    assert!(
        dropped.iter().all(|s| !arrived.contains(s)),
        "no span of a fast trace arrives"
    );
    assert_eq!(arrived.len(), kept.len(), "only the kept traces' spans");
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_traces_are_kept_or_dropped_by_the_first_policy_that_holds() {
    let sink = Sink::start(Script::default()).await;
    let f = Ferry::start("tail", &config(&sink, "4s", ""));
    // Every trace's error span (and `back`'s other spans) comes 2 s after the rest of it.
    let sent = client_json(&mut mix(
        &f,
        &["--traces", "24", "--gap", "2", "--run", "tail"],
    ));
    let (kept, dropped) = split(&sent);
    assert_eq!((kept.len(), dropped.len()), (24, 24));
    eventually("all 24 traces are decided", async || {
        let (e, s, d) = decisions(&f).await;
        e + s + d == 24
    })
    .await;
    only_kept_arrive(&sink, &kept, &dropped).await;
    assert_eq!(
        decisions(&f).await,
        (6, 6, 12),
        "each error trace decided by its late error span, each slow one by its root"
    );
    assert_eq!(dropped_items(&f).await, 24);
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_after_the_decision_follow_it() {
    let sink = Sink::start(Script::default()).await;
    let f = Ferry::start("tail-late", &config(&sink, "1s", ""));
    // The error is on `front`'s root, and `back`'s spans come 4 s later: all of them late.
    let sent = client_json(&mut mix(
        &f,
        &[
            "--traces",
            "8",
            "--gap",
            "4",
            "--error-on",
            "front",
            "--run",
            "late",
        ],
    ));
    let (kept, dropped) = split(&sent);
    only_kept_arrive(&sink, &kept, &dropped).await;
    assert_eq!(decisions(&f).await, (2, 2, 4));
    assert_eq!(
        (late(&f, "keep").await, late(&f, "drop").await),
        (4, 4),
        "each trace's `back` span, after its trace was decided on `front`'s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_wait_replays_what_is_undecided_and_no_trace_is_half_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await;
    let queue = format!(
        "[queue]\nmode = \"durable\"\ndir = \"{}\"\nsegment_bytes = \"1MiB\"\nmax_bytes = \"64MiB\"",
        dir.path().display()
    );
    let toml = config(&sink, "4s", &queue);
    let mut f = Ferry::start("tail-crash-a", &toml);
    // 8 traces decided on their first request (errors on `front`'s root, slow roots), whose
    // `back` spans come 8 s later with 8 fresh traces. The first request is exported and its
    // cursor saved before the second comes; the second waits for its fresh traces when the
    // daemon dies.
    let child = mix(
        &f,
        &[
            "--traces",
            "8",
            "--gap",
            "8",
            "--error-on",
            "front",
            "--fresh",
            "8",
            "--run",
            "crash",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    eventually("the first 8 traces are decided", async || {
        let (e, s, d) = decisions(&f).await;
        e + s + d == 8
    })
    .await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "every export was acknowledged");
    assert_eq!(
        decisions(&f).await,
        (2, 2, 4),
        "the fresh traces are still undecided"
    );
    f.kill9();
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (kept, dropped) = split(&sent);
    assert_eq!((kept.len(), dropped.len()), (16, 16));

    let f = Ferry::start("tail-crash-b", &toml);
    assert_eq!(
        f.metric("ferry_queue_replayed_records_total", &[]).await,
        1,
        "the second request alone is replayed"
    );
    only_kept_arrive(&sink, &kept, &dropped).await;
    // After the restart: the fresh traces are decided; the first traces' `back` spans follow
    // the decisions made before the crash; every dropped span replayed is counted.
    eventually("the fresh traces are decided", async || {
        let (e, s, d) = decisions(&f).await;
        e + s + d == 8
    })
    .await;
    assert_eq!(decisions(&f).await, (2, 2, 4));
    assert_eq!((late(&f, "keep").await, late(&f, "drop").await), (4, 4));
    assert_eq!(dropped_items(&f).await, 4 + 8);
    assert_eq!(f.metric("ferry_tail_journal_errors_total", &[]).await, 0);
}
