//! The OpenTelemetry Python SDK → ferry A (otlp-http plugin) → ferry B (a real OTLP receiver)
//! → capture, over gRPC and HTTP, asserting every field that matters arrived intact.

use std::collections::BTreeMap;

use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::metric;
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::trace::Span;
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{Value, json};

use crate::harness::{Ferry, PREAMBLE, Script, Sink, eventually, hex, otel_send};

pub(crate) fn value(v: &Option<AnyValue>) -> Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| value(&Some(v.clone()))).collect())
        }
        other => panic!("unexpected attribute value {other:?}"),
    }
}

pub(crate) fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

pub(crate) fn json_attrs(v: &Value) -> BTreeMap<String, Value> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A received span with its resource attributes and scope name.
pub(crate) type Received = (Span, BTreeMap<String, Value>, String);

/// Every span that reached the sink, keyed by span id, with its resource attributes.
pub(crate) fn received_spans(sink: &Sink) -> BTreeMap<String, Vec<Received>> {
    spans_of(
        sink.bodies("/v1/traces")
            .into_iter()
            .map(|b| ExportTraceServiceRequest::decode(b).expect("sink got valid OTLP")),
    )
}

/// The spans of `requests`, keyed by span id, with their resource attributes and scope name.
pub(crate) fn spans_of(
    requests: impl IntoIterator<Item = ExportTraceServiceRequest>,
) -> BTreeMap<String, Vec<Received>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for req in requests {
        for rs in req.resource_spans {
            let res = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    out.entry(hex(&span.span_id)).or_default().push((
                        span,
                        res.clone(),
                        scope.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// The one copy of the SDK-reported span `sent` among `got`: it must have arrived, once.
pub(crate) fn arrived_once<'a>(
    got: &'a BTreeMap<String, Vec<Received>>,
    sent: &Value,
) -> &'a Received {
    let id = sent["span_id"].as_str().unwrap();
    let copies = got
        .get(id)
        .unwrap_or_else(|| panic!("span {id} ({}) never arrived", sent["name"]));
    assert_eq!(copies.len(), 1, "span {id} arrived {} times", copies.len());
    &copies[0]
}

pub(crate) fn check_spans(sent: &Value, got: &BTreeMap<String, Vec<Received>>, run: &str) {
    for s in sent["spans"].as_array().unwrap() {
        let id = s["span_id"].as_str().unwrap();
        let (span, res, scope) = arrived_once(got, s);
        assert_eq!(
            res["service.name"], sent["service"],
            "resource service.name"
        );
        assert_eq!(res["e2e.run"], json!(run), "resource attribute");
        assert_eq!(scope, "ferry.e2e");
        assert_eq!(
            hex(&span.trace_id),
            s["trace_id"].as_str().unwrap(),
            "trace id of {id}"
        );
        assert_eq!(
            hex(&span.parent_span_id),
            s["parent_span_id"].as_str().unwrap(),
            "parent of {id}"
        );
        assert_eq!(span.name, s["name"].as_str().unwrap());
        assert_eq!(
            i64::from(span.kind),
            s["kind"].as_i64().unwrap(),
            "kind of {}",
            span.name
        );
        assert_eq!(span.start_time_unix_nano, s["start"].as_u64().unwrap());
        assert_eq!(span.end_time_unix_nano, s["end"].as_u64().unwrap());
        let status = span.status.clone().unwrap_or_default();
        assert_eq!(i64::from(status.code), s["status_code"].as_i64().unwrap());
        assert_eq!(status.message, s["status_message"].as_str().unwrap());
        assert_eq!(
            attrs(&span.attributes),
            json_attrs(&s["attributes"]),
            "attributes of {}",
            span.name
        );
        let events: Vec<Value> = span
            .events
            .iter()
            .map(|e| json!({"name": e.name, "attributes": attrs(&e.attributes)}))
            .collect();
        assert_eq!(Value::Array(events), s["events"], "events of {}", span.name);
    }
}

fn check_metrics(sink: &Sink, service: &str) {
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    let mut hist = None;
    let mut inflight = None;
    for body in sink.bodies("/v1/metrics") {
        let req = ExportMetricsServiceRequest::decode(body).unwrap();
        for rm in req.resource_metrics {
            let res = attrs(&rm.resource.map(|r| r.attributes).unwrap_or_default());
            if res["service.name"] != json!(service) {
                continue;
            }
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    match (m.name.as_str(), m.data) {
                        ("e2e.requests", Some(metric::Data::Sum(s))) => {
                            assert!(s.is_monotonic);
                            for dp in s.data_points {
                                let route =
                                    attrs(&dp.attributes)["route"].as_str().unwrap().to_string();
                                let v = match dp.value {
                                    Some(
                                        ferry_proto::metrics::number_data_point::Value::AsInt(i),
                                    ) => i,
                                    other => panic!("counter value {other:?}"),
                                };
                                assert!(sums.insert(route, v).is_none(), "duplicate data point");
                            }
                        }
                        ("e2e.latency", Some(metric::Data::Histogram(h))) => {
                            assert_eq!(m.unit, "s");
                            let dp = &h.data_points[0];
                            hist = Some((dp.count, dp.sum.unwrap()));
                        }
                        ("e2e.inflight", Some(metric::Data::Sum(s))) => {
                            assert!(!s.is_monotonic);
                            inflight = Some(s.data_points[0].value);
                        }
                        (name, data) => panic!("unexpected metric {name}: {data:?}"),
                    }
                }
            }
        }
    }
    assert_eq!(
        sums,
        BTreeMap::from([("/a".to_string(), 6), ("/b".to_string(), 7)]),
        "{service} counter"
    );
    let (count, sum) = hist.expect("histogram arrived");
    assert_eq!(count, 2);
    assert!((sum - 0.4).abs() < 1e-9, "histogram sum {sum}");
    assert_eq!(
        inflight,
        Some(Some(ferry_proto::metrics::number_data_point::Value::AsInt(
            3
        )))
    );
}

/// Waits until every span, metric and log of the `otel_send.py` runs (report, run id) reached
/// `sink` over OTLP/HTTP, then checks them field by field.
pub(crate) async fn assert_sdk_runs_arrived(sink: &Sink, runs: &[(&Value, &str)]) {
    let total_spans: usize = runs
        .iter()
        .map(|(r, _)| r["spans"].as_array().unwrap().len())
        .sum();
    let total_logs: usize = runs
        .iter()
        .map(|(r, _)| r["logs"].as_array().unwrap().len())
        .sum();
    eventually("every span reaches the capture backend", async || {
        received_spans(sink).values().map(Vec::len).sum::<usize>() >= total_spans
            && sink.bodies("/v1/metrics").len() >= runs.len()
    })
    .await;
    // Logs and metrics may still be in flight in separate batches: wait for all records.
    eventually("every log record arrives", async || {
        let n: usize = sink
            .bodies("/v1/logs")
            .into_iter()
            .map(|b| {
                ExportLogsServiceRequest::decode(b)
                    .unwrap()
                    .resource_logs
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .map(|s| s.log_records.len())
                    .sum::<usize>()
            })
            .sum();
        n >= total_logs
    })
    .await;
    let got = received_spans(sink);
    for (sent, run) in runs {
        check_spans(sent, &got, run);
        check_metrics(sink, sent["service"].as_str().unwrap());
        check_logs(sink, sent);
    }
}

pub(crate) fn check_logs(sink: &Sink, sent: &Value) {
    let service = &sent["service"];
    let mut got = Vec::new();
    for body in sink.bodies("/v1/logs") {
        let req = ExportLogsServiceRequest::decode(body).unwrap();
        for rl in req.resource_logs {
            let res = attrs(&rl.resource.map(|r| r.attributes).unwrap_or_default());
            if &res["service.name"] != service {
                continue;
            }
            for sl in rl.scope_logs {
                got.extend(sl.log_records);
            }
        }
    }
    let want = sent["logs"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "log records for {service}");
    for w in want {
        let body = json!(w["body"]);
        let rec = got
            .iter()
            .find(|r| value(&r.body) == body)
            .unwrap_or_else(|| panic!("log {body} missing"));
        assert_eq!(rec.severity_text, w["severity"].as_str().unwrap());
        assert_eq!(hex(&rec.trace_id), w["trace_id"].as_str().unwrap());
        assert_eq!(hex(&rec.span_id), w["span_id"].as_str().unwrap());
        let have = attrs(&rec.attributes);
        for (k, v) in json_attrs(&w["attributes"]) {
            assert_eq!(have.get(&k), Some(&v), "log attribute {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_over_grpc_and_http_through_two_ferries_arrives_intact() {
    let sink = Sink::start(Script::default()).await;
    let ferry_b = Ferry::start(
        "B",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.capture]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            "#,
            sink.url()
        ),
    );
    let ferry_a = Ferry::start(
        "A",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.upstream]
            plugin = "otlp-http"
            signals = ["traces", "metrics", "logs"]
            config = {{ endpoint = "{}", compression = "gzip" }}
            [exporters.debug]
            plugin = "debug"
            "#,
            ferry_b.http_url()
        ),
    );
    let grpc = otel_send(
        "grpc",
        &format!("http://{}", ferry_a.grpc.unwrap()),
        "run-grpc",
    );
    let http = otel_send("http", &ferry_a.http_url(), "run-http");
    assert_sdk_runs_arrived(&sink, &[(&grpc, "run-grpc"), (&http, "run-http")]).await;

    for (receiver, n) in [("otlp_grpc", 6), ("otlp_http", 6)] {
        let r = format!("receiver=\"{receiver}\"");
        assert_eq!(
            ferry_a
                .metric(
                    "ferry_receiver_accepted_items_total",
                    &[&r, "signal=\"traces\""]
                )
                .await,
            n
        );
    }
    assert_eq!(
        ferry_a
            .metric(
                "ferry_exporter_sent_items_total",
                &["exporter=\"upstream\"", "signal=\"traces\""]
            )
            .await,
        12
    );
    assert_eq!(
        ferry_a
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
    assert_eq!(
        ferry_b
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
    // The debug exporter on the same pipeline saw the same batches.
    assert!(ferry_a.logs().contains("batch signal=traces"));
}

#[tokio::test(flavor = "multi_thread")]
async fn default_config_prints_debug_lines_for_sdk_traffic() {
    // The README's run command: `ferry run` on the embedded config (fixed default ports).
    let ferry = Ferry::start_default();
    assert_eq!(ferry.grpc.map(|a| a.port()), Some(4317));
    assert_eq!(ferry.http.map(|a| a.port()), Some(4318));
    otel_send("grpc", "http://127.0.0.1:4317", "default-grpc");
    otel_send("http", "http://127.0.0.1:4318", "default-http");
    let items = |signal: &str| {
        let needle = format!("batch signal={signal} items=");
        ferry
            .logs()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(&needle)? + needle.len()..];
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum::<u64>()
    };
    eventually("debug lines for both SDK runs", async || {
        items("traces") == 12 && items("metrics") == 8 && items("logs") == 6
    })
    .await;
}
