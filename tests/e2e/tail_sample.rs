//! Tail sampling in an exporter's chain, with the real OpenTelemetry SDK: traces whose spans
//! arrive in two requests seconds apart are kept or dropped whole, as the first policy that
//! holds says, and `/metrics` counts each decision; spans that come after their trace's
//! decision follow it, and so do those a durable queue replays after a `kill -9`; and behind
//! two agents and two gateways on NATS JetStream (`by_trace`), traces whose services send to
//! different agents are still decided whole.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, client_json, client_script, eventually, python,
};
use crate::nats::NatsCluster;
use crate::scale_out_gateways::{agent, gateway_with, spans_at, two_shards_each};

/// A tail sampler keeping error and slow traces, named `tail`.
fn sampler(wait: &str) -> String {
    format!(
        r#"
        [processors.tail]
        kind = "tail_sample"
        decision_wait = "{wait}"
        policies = [
          {{ name = "errors", spans = {{ any = [{{ status = "error" }}] }} }},
          {{ name = "slow", duration_at_least = "500ms" }},
        ]
        "#
    )
}

/// A [`sampler`] in the chain of an exporter to `sink`.
fn config(sink: &Sink, wait: &str, queue: &str) -> String {
    format!(
        r#"
        {PREAMBLE}
        {queue}
        {}
        [exporters.capture]
        plugin = "otlp-http"
        processors = ["tail"]
        config = {{ endpoint = "{}" }}
        "#,
        sampler(wait),
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

#[tokio::test(flavor = "multi_thread")]
async fn past_max_traces_the_oldest_are_decided_early_whole_and_counted() {
    let sink = Sink::start(Script::default()).await;
    let toml = config(&sink, "3s", "").replace(
        "decision_wait = \"3s\"",
        "decision_wait = \"3s\"\nmax_traces = 4",
    );
    let f = Ferry::start("tail-bound", &toml);
    // 24 roots in one request: 20 of them over max_traces, decided early on their root alone
    // (so an error that comes with `back` 2 s later is not seen), and their `back` spans then
    // follow that decision.
    let sent = client_json(&mut mix(
        &f,
        &["--traces", "24", "--gap", "2", "--run", "bound"],
    ));
    eventually("all 24 traces are decided", async || {
        let (e, s, d) = decisions(&f).await;
        e + s + d == 24
    })
    .await;
    assert_eq!(
        f.metric("ferry_tail_early_decisions_total", &["processor=\"tail\""])
            .await,
        20
    );
    let (errors, slow, _) = decisions(&f).await;
    assert_eq!(slow, 6, "a slow root is seen in time");
    let mut traces: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in sent["spans"].as_array().unwrap() {
        traces
            .entry(s["trace_id"].as_str().unwrap())
            .or_default()
            .push(s["span_id"].as_str().unwrap());
    }
    let kept_spans = 2 * (errors + slow) as usize;
    eventually("the kept traces reach the backend", async || {
        spans_at(&sink).0.len() >= kept_spans
    })
    .await;
    let (got, twice) = spans_at(&sink);
    assert_eq!((got.len(), twice), (kept_spans, 0));
    for (trace, spans) in &traces {
        let arrived = spans.iter().filter(|s| got.contains_key(**s)).count();
        assert!(
            arrived == 0 || arrived == spans.len(),
            "trace {trace}: {arrived} of {} spans arrived",
            spans.len()
        );
    }
    assert_eq!(
        dropped_items(&f).await as usize,
        48 - kept_spans,
        "every span not delivered is counted"
    );
    assert_eq!(late(&f, "keep").await + late(&f, "drop").await, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_two_gateways_by_trace_traces_from_two_agents_are_decided_whole() {
    let cluster = NatsCluster::start(3).await;
    let sink = Sink::start(Script::default()).await;
    let gateways = ["tail-g1", "tail-g2"].map(|name| {
        let tail = sampler("4s");
        gateway_with(name, &cluster, "TAIL", "by_trace", &sink, &["tail"], &tail)
    });
    two_shards_each(&gateways).await;
    let agents = ["tail-a1", "tail-a2"].map(|name| agent(name, &cluster, "TAIL", "by_trace"));
    // `front` sends to one agent, `back` (with every error) to the other, 2 s later.
    let sent = client_json(
        Command::new(python())
            .arg(client_script("otel_tail_mix.py"))
            .args(["--endpoint", &format!("http://{}", agents[0].grpc.unwrap())])
            .args([
                "--back-endpoint",
                &format!("http://{}", agents[1].grpc.unwrap()),
            ])
            .args(["--traces", "24", "--gap", "2", "--run", "gateways"]),
    );
    let (kept, dropped) = split(&sent);
    let total = async || {
        let mut sum = (0, 0, 0);
        for g in &gateways {
            let (e, s, d) = decisions(g).await;
            sum = (sum.0 + e, sum.1 + s, sum.2 + d);
        }
        sum
    };
    eventually("all 24 traces are decided", async || {
        let (e, s, d) = total().await;
        e + s + d == 24
    })
    .await;
    only_kept_arrive(&sink, &kept, &dropped).await;
    assert_eq!(total().await, (6, 6, 12), "each trace decided once, whole");
    let mut through: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (trace, gw) in spans_at(&sink).0.into_values() {
        through.entry(trace).or_default().insert(gw);
    }
    let used: BTreeSet<&String> = through.values().flatten().collect();
    assert_eq!(used.len(), 2, "both gateways decide some: {used:?}");
    assert!(through.values().all(|g| g.len() == 1), "{through:?}");
}
