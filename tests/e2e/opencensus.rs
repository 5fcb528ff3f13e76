//! The real OpenCensus Python library with its agent exporter (opencensus-ext-ocagent, in its
//! own venv for protobuf 3.20.x) → Ferry's OpenCensus receiver → otlp-http → capture, checked
//! field by field; streams that break the agent protocol are refused with a clear status.

use std::process::Command;

use ferry_proto::metrics::metric::Data;
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use prost::Message;
use serde_json::{Value, json};

use crate::harness::{
    Ferry, Script, Sink, assert_attributes_and_events, capture_config, client_json, client_script,
    eventually, hex, json_attrs, python_in, spans_by_id,
};

fn config(sink: &Sink) -> String {
    capture_config("[receivers.opencensus]\ngrpc = \"127.0.0.1:0\"", sink)
}

/// Runs `tests/e2e/clients/oc_send.py MODE` against `ferry`'s OpenCensus port.
fn oc_send(ferry: &Ferry, mode: &str, run: &str) -> Value {
    let py = python_in(
        "e2e-venv-oc",
        &[
            "opencensus-ext-ocagent==0.7.1",
            "opencensus==0.11.4",
            "protobuf==3.20.3",
        ],
        "import opencensus.ext.ocagent.trace_exporter, opencensus.ext.ocagent.stats_exporter",
    );
    let endpoint = ferry.receiver_addr("opencensus").expect("opencensus port");
    client_json(Command::new(py).arg(client_script("oc_send.py")).args([
        mode,
        "--endpoint",
        &endpoint.to_string(),
        "--run",
        run,
    ]))
}

#[tokio::test(flavor = "multi_thread")]
async fn opencensus_python_spans_arrive_as_otlp() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("opencensus", &config(&sink));
    let sent = oc_send(&ferry, "traces", "oc-run");
    let want = sent["spans"].as_array().unwrap();
    eventually("OpenCensus spans arrive", async || {
        let got = spans_by_id(&sink);
        want.iter()
            .all(|w| got.contains_key(w["span_id"].as_str().unwrap()))
    })
    .await;
    let got = spans_by_id(&sink);
    for w in want {
        let copies = &got[w["span_id"].as_str().unwrap()];
        assert_eq!(copies.len(), 1, "each span arrives once");
        let (s, resource) = &copies[0];
        let res = json_attrs(resource);
        assert_eq!(res["service.name"], json!("oc-py"));
        assert_eq!(res["telemetry.sdk.language"], json!("python"));
        assert_eq!(res["telemetry.sdk.version"], json!("0.11.4"));
        assert_eq!(res["opencensus.exporterversion"], json!("0.0.1"));
        assert!(res["process.pid"].as_i64().unwrap() > 0, "{res:?}");
        assert!(res["host.name"].as_str().is_some_and(|h| !h.is_empty()));
        assert!(res.contains_key("opencensus.starttime"), "{res:?}");

        assert_eq!(hex(&s.trace_id), sent["trace_id"].as_str().unwrap());
        assert_eq!(hex(&s.parent_span_id), w["parent"].as_str().unwrap());
        assert_eq!(s.name, w["name"].as_str().unwrap());
        assert_eq!(i64::from(s.kind), w["kind"].as_i64().unwrap());
        match w["status"].as_array() {
            None => assert!(
                s.status.as_ref().is_none_or(|st| st.code == 0),
                "{:?}",
                s.status
            ),
            Some(st) => {
                let got = s.status.as_ref().expect("status");
                assert_eq!(i64::from(got.code), st[0].as_i64().unwrap());
                assert_eq!(got.message, st[1].as_str().unwrap());
            }
        }
        assert!(s.start_time_unix_nano > 1_600_000_000_000_000_000);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        assert_attributes_and_events(s, &w["attributes"], &w["events"]);
        let links: Vec<Value> = s
            .links
            .iter()
            .map(|l| json!([hex(&l.trace_id), hex(&l.span_id)]))
            .collect();
        assert_eq!(&json!(links), &w["links"]);
    }
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_accepted_items_total",
                &["receiver=\"opencensus\"", "signal=\"traces\""]
            )
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opencensus_python_metrics_arrive_as_otlp_over_one_stream() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("opencensus-metrics", &config(&sink));
    let run = "m1";
    oc_send(&ferry, "metrics", run);
    let metrics_of = |name: String| {
        let mut out = Vec::new();
        for body in sink.bodies("/v1/metrics") {
            for rm in ExportMetricsServiceRequest::decode(body)
                .unwrap()
                .resource_metrics
            {
                let res = json_attrs(&rm.resource.unwrap_or_default().attributes);
                for sm in rm.scope_metrics {
                    out.extend(
                        sm.metrics
                            .into_iter()
                            .filter(|m| m.name == name)
                            .map(|m| (m, res.clone())),
                    );
                }
            }
        }
        out
    };
    eventually("several export rounds arrive", async || {
        metrics_of(format!("e2e_latency_{run}")).len() >= 2
    })
    .await;

    // Every round, the first (with the node) and the later ones (without), carries the
    // stream's resource.
    let latency = metrics_of(format!("e2e_latency_{run}"));
    for (m, res) in &latency {
        assert_eq!(res["service.name"], json!("oc-py-metrics"));
        assert_eq!(res["telemetry.sdk.language"], json!("python"));
        assert_eq!(res["opencensus.resourcetype"], json!("global"));
        assert_eq!(m.description, "latency distribution");
        assert_eq!(m.unit, "ms");
        let Some(Data::Histogram(h)) = &m.data else {
            panic!("a histogram: {m:?}")
        };
        assert_eq!(h.aggregation_temporality, 2, "cumulative");
        let p = &h.data_points[0];
        assert_eq!(json_attrs(&p.attributes)["method"], json!("GET"));
        assert_eq!(p.count, 3);
        assert_eq!(p.sum, Some(555.0));
        assert_eq!(p.explicit_bounds, [10.0, 100.0]);
        assert_eq!(p.bucket_counts, [1, 1, 1]);
        assert!(p.start_time_unix_nano > 0 && p.time_unix_nano >= p.start_time_unix_nano);
    }
    let (count, _) = &metrics_of(format!("e2e_requests_{run}"))[0];
    let Some(Data::Sum(sum)) = &count.data else {
        panic!("a sum: {count:?}")
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, 2);
    assert_eq!(
        sum.data_points[0].value,
        Some(ferry_proto::metrics::number_data_point::Value::AsInt(3))
    );
    let (last, _) = &metrics_of(format!("e2e_last_{run}"))[0];
    let Some(Data::Gauge(g)) = &last.data else {
        panic!("a gauge: {last:?}")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(ferry_proto::metrics::number_data_point::Value::AsDouble(
            500.0
        ))
    );
    // No message of the long-lived stream was refused (later ones carry no node).
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["receiver=\"opencensus\""]
            )
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opencensus_protocol_violations_get_clear_statuses() {
    let sink = Sink::start(Script::default()).await;
    let receivers = "[receivers.opencensus]\ngrpc = \"127.0.0.1:0\"\nmax_request_bytes = \"64KiB\"";
    let ferry = Ferry::start("opencensus-violations", &capture_config(receivers, &sink));
    let got = oc_send(&ferry, "violations", "bad-streams");
    assert_eq!(got["no_node_first"][0], "INVALID_ARGUMENT", "{got}");
    assert!(
        got["no_node_first"][1]
            .as_str()
            .unwrap()
            .contains("first message of an Export stream must carry a node"),
        "{got}"
    );
    // A span with a short trace id is dropped and counted; the rest of the message is kept.
    assert_eq!(got["short_trace_id"][0], "OK", "{got}");
    assert_eq!(got["config"][0], "UNIMPLEMENTED", "{got}");
    assert_eq!(got["too_large"][0], "RESOURCE_EXHAUSTED", "{got}");
    assert!(
        got["too_large"][1]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 65536 bytes"),
        "{got}"
    );
    eventually("the good span arrives", async || {
        crate::harness::span_names(&sink).contains(&"bad-streams".to_string())
    })
    .await;
    let metric = |name: &'static str, extra: &'static str| {
        let ferry = &ferry;
        async move {
            ferry
                .metric(
                    name,
                    &["receiver=\"opencensus\"", "signal=\"traces\"", extra],
                )
                .await
        }
    };
    assert_eq!(
        metric(
            "ferry_receiver_refused_requests_total",
            "reason=\"invalid\""
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            "ferry_receiver_refused_requests_total",
            "reason=\"too_large\""
        )
        .await,
        1
    );
    assert_eq!(metric("ferry_receiver_rejected_items_total", "").await, 1);
    assert_eq!(metric("ferry_receiver_accepted_items_total", "").await, 1);
    assert!(ferry.logs().contains("trace_id must be 16"));
}
