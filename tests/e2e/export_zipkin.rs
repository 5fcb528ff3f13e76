//! The `zipkin` exporter: OpenTelemetry SDK → Ferry A (zipkin plugin, Zipkin v2 JSON) →
//! Ferry B's Zipkin receiver → capture, compared field by field with what the SDK created;
//! plus a Zipkin endpoint that is down at first and one that refuses for good.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::{
    Ferry, PREAMBLE, QUICK_RETRY, Script, Sink, eventually, hex, otel_send, reserve_port,
};
use crate::otel_sdk::{arrived_once, received_spans, value};

/// Ferry B: a Zipkin receiver on `port`, forwarding `signals` to `sink`.
fn zipkin_backend(port: u16, signals: &str, sink: &Sink) -> Ferry {
    Ferry::start(
        "zipkin-backend",
        &format!(
            r#"
            {PREAMBLE}
            [receivers.zipkin]
            http = "127.0.0.1:{port}"
            [exporters.capture]
            plugin = "otlp-http"
            signals = {signals}
            config = {{ endpoint = "{}" }}
            "#,
            sink.url()
        ),
    )
}

fn sender(port: u16) -> Ferry {
    Ferry::start(
        "zipkin-sender",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.zipkin]
            plugin = "zipkin"
            {QUICK_RETRY}
            config = {{ endpoint = "http://127.0.0.1:{port}/api/v2/spans", compression = "gzip" }}
            "#
        ),
    )
}

/// What a span attribute looks like after Zipkin: every tag is a string, lists are JSON.
fn as_tag(v: &Value) -> Value {
    match v {
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

/// Checks every span the SDK reported against what came back through Zipkin.
fn check_round_trip(sent: &Value, sink: &Sink, run: &str) {
    let got = received_spans(sink);
    for s in sent["spans"].as_array().unwrap() {
        let (span, res, scope) = arrived_once(&got, s);
        let name = s["name"].as_str().unwrap();
        assert_eq!(span.name, name);
        assert_eq!(
            res["service.name"], sent["service"],
            "localEndpoint.serviceName"
        );
        assert_eq!(scope, "ferry.e2e", "otel.library.name of {name}");
        assert_eq!(
            hex(&span.trace_id),
            s["trace_id"].as_str().unwrap(),
            "128-bit trace id"
        );
        assert_eq!(
            hex(&span.parent_span_id),
            s["parent_span_id"].as_str().unwrap()
        );
        // INTERNAL has no Zipkin kind: it travels as the `span.kind=internal` tag.
        assert_eq!(
            i64::from(span.kind),
            s["kind"].as_i64().unwrap(),
            "kind of {name}"
        );
        // Zipkin keeps microseconds.
        let start = s["start"].as_u64().unwrap();
        let end = s["end"].as_u64().unwrap();
        assert_eq!(
            span.start_time_unix_nano,
            start / 1000 * 1000,
            "start of {name}"
        );
        assert_eq!(
            span.end_time_unix_nano,
            (start / 1000 + (end - start) / 1000) * 1000,
            "end of {name}"
        );
        let status = span.status.clone().unwrap_or_default();
        assert_eq!(
            i64::from(status.code),
            s["status_code"].as_i64().unwrap(),
            "status of {name}"
        );
        assert_eq!(status.message, s["status_message"].as_str().unwrap());
        let attrs: BTreeMap<String, Value> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), value(&kv.value)))
            .collect();
        for (k, v) in s["attributes"].as_object().unwrap() {
            assert_eq!(attrs.get(k), Some(&as_tag(v)), "tag {k} of {name}");
        }
        // Resource attributes the receiver does not know as resource keys stay tags.
        assert_eq!(attrs.get("e2e.run"), Some(&json!(run)));
        let events: Vec<Value> = span
            .events
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "attributes": e.attributes.iter().map(|kv| (kv.key.clone(), value(&kv.value))).collect::<BTreeMap<_, _>>(),
                })
            })
            .collect();
        assert_eq!(Value::Array(events), s["events"], "annotations of {name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_spans_round_trip_through_zipkin_json_intact() {
    let sink = Sink::start(Script::default()).await;
    let reserved = reserve_port();
    let port = reserved.port();
    let _b = zipkin_backend(port, r#"["traces"]"#, &sink);
    let a = sender(port);
    let sent = otel_send("grpc", &format!("http://{}", a.grpc.unwrap()), "zipkin-rt");
    let n = sent["spans"].as_array().unwrap().len();
    eventually("every span comes back through Zipkin", async || {
        received_spans(&sink).values().map(Vec::len).sum::<usize>() >= n
    })
    .await;
    check_round_trip(&sent, &sink, "zipkin-rt");
    assert_eq!(
        a.metric("ferry_exporter_sent_items_total", &["exporter=\"zipkin\""])
            .await,
        n as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zipkin_endpoint_that_is_down_at_first_gets_every_span_once_it_is_up() {
    let sink = Sink::start(Script::default()).await;
    let reserved = reserve_port();
    let port = reserved.port();
    let a = sender(port);
    let sent = otel_send("http", &a.http_url(), "zipkin-down");
    eventually(
        "the exporter retries the unreachable endpoint",
        async || {
            a.metric("ferry_exporter_retries_total", &["exporter=\"zipkin\""])
                .await
                >= 2
        },
    )
    .await;
    let _b = zipkin_backend(port, r#"["traces"]"#, &sink);
    let n = sent["spans"].as_array().unwrap().len();
    eventually("every span arrives after the outage", async || {
        received_spans(&sink).values().map(Vec::len).sum::<usize>() >= n
    })
    .await;
    check_round_trip(&sent, &sink, "zipkin-down");
    assert_eq!(a.metric("ferry_exporter_dropped_items_total", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_from_zipkin_is_dropped_and_counted() {
    // Ferry B routes no traces anywhere, so its Zipkin receiver answers 404: not retryable.
    let sink = Sink::start(Script::default()).await;
    let reserved = reserve_port();
    let port = reserved.port();
    let _b = zipkin_backend(port, r#"["logs"]"#, &sink);
    let a = sender(port);
    let sent = otel_send(
        "grpc",
        &format!("http://{}", a.grpc.unwrap()),
        "zipkin-perm",
    );
    let n = sent["spans"].as_array().unwrap().len() as u64;
    eventually("the spans are dropped as permanent", async || {
        a.metric(
            "ferry_exporter_dropped_items_total",
            &["exporter=\"zipkin\"", "reason=\"permanent\""],
        )
        .await
            == n
    })
    .await;
    assert!(
        a.logs().contains("HTTP 404"),
        "the backend's answer is logged"
    );
    assert_eq!(
        a.metric("ferry_exporter_retries_total", &["exporter=\"zipkin\""])
            .await,
        0
    );
    assert!(received_spans(&sink).is_empty());
}
