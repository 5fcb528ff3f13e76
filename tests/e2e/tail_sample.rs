//! Tail sampling in an exporter's chain, with the real OpenTelemetry SDK: traces whose spans
//! arrive in two requests seconds apart are kept or dropped whole, as the first policy that
//! holds says, and `/metrics` counts each decision.

use std::collections::BTreeSet;
use std::process::Command;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, client_json, client_script, eventually, python,
};
use crate::scale_out_gateways::spans_at;

#[tokio::test(flavor = "multi_thread")]
async fn whole_traces_are_kept_or_dropped_by_the_first_policy_that_holds() {
    let sink = Sink::start(Script::default()).await;
    let f = Ferry::start(
        "tail",
        &format!(
            r#"
            {PREAMBLE}
            [processors.tail]
            kind = "tail_sample"
            decision_wait = "4s"
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
        ),
    );
    // Every trace's error span (and `back`'s other spans) comes 2 s after the rest of it.
    let sent = client_json(
        Command::new(python())
            .arg(client_script("otel_tail_mix.py"))
            .args(["--endpoint", &format!("http://{}", f.grpc.unwrap())])
            .args(["--traces", "24", "--gap", "2", "--run", "tail"]),
    );
    let (mut kept, mut dropped) = (BTreeSet::new(), BTreeSet::new());
    for s in sent["spans"].as_array().unwrap() {
        let id = s["span_id"].as_str().unwrap().to_string();
        if s["kind"] == "fast" {
            dropped.insert(id);
        } else {
            kept.insert(id);
        }
    }
    assert_eq!((kept.len(), dropped.len()), (24, 24));
    let decided = async |policy: &str, decision: &str| {
        f.metric(
            "ferry_tail_traces_decided_total",
            &[
                "processor=\"tail\"",
                &format!("decision=\"{decision}\""),
                &format!("policy=\"{policy}\""),
            ],
        )
        .await
    };
    eventually("all 24 traces are decided", async || {
        decided("errors", "keep").await
            + decided("slow", "keep").await
            + decided("default", "drop").await
            == 24
    })
    .await;
    eventually("the kept traces reach the backend", async || {
        let (got, _) = spans_at(&sink);
        kept.iter().all(|s| got.contains_key(s))
    })
    .await;
    let (got, _) = spans_at(&sink);
    let arrived: BTreeSet<&String> = got.keys().collect();
    assert!(
        dropped.iter().all(|s| !arrived.contains(s)),
        "no span of a fast trace arrives"
    );
    assert_eq!(arrived.len(), kept.len(), "only the kept traces' spans");
    assert_eq!(
        (
            decided("errors", "keep").await,
            decided("slow", "keep").await,
            decided("default", "drop").await,
        ),
        (6, 6, 12),
        "each error trace decided by its late error span, each slow one by its root"
    );
    let dropped_items = f
        .metric(
            "ferry_processor_items_total",
            &[
                "processor=\"tail\"",
                "signal=\"traces\"",
                "outcome=\"dropped\"",
            ],
        )
        .await;
    assert_eq!(dropped_items, 24);
}
