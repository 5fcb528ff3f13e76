//! Exporters written in Python and JavaScript: each example is built from source with its own
//! build command, loaded by the real daemon, fed by the OpenTelemetry SDK, and what it sends is
//! checked at a local server.

use std::collections::BTreeMap;

use crate::guests::{js_hec, plugin_dir, python_webhook};
use crate::harness::{Ferry, PREAMBLE, Script, Sink, eventually, otel_send};

/// The JSON documents the sink received at `path`: one per request, or one per line for
/// newline-delimited bodies.
fn json_lines(sink: &Sink, path: &str) -> Vec<serde_json::Value> {
    sink.bodies(path)
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("a JSON document"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The spans the SDK reported sending, by span id.
fn sent_spans(sent: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    sent["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_webhook_built_from_source_posts_a_summary_of_every_sdk_span() {
    let wasm = python_webhook();
    let plugins = plugin_dir(&[("python-webhook", &wasm)]);
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start(
        "python-webhook",
        &format!(
            r#"
            {PREAMBLE}
            [plugins]
            dir = "{}"
            [exporters.webhook]
            plugin = "python-webhook"
            memory = "128MiB"
            config = {{ endpoint = "{}/hook", headers = {{ x-team = "payments" }} }}
            "#,
            plugins.path().display(),
            sink.url()
        ),
    );
    let sent = otel_send(
        "grpc",
        &format!("http://{}", ferry.grpc.unwrap()),
        "py-webhook",
    );
    let want = sent_spans(&sent);
    assert_eq!(want.len(), 6, "the client made 2 traces of 3 spans");

    eventually("every SDK span summarised at the webhook", async || {
        json_lines(&sink, "/hook")
            .iter()
            .flat_map(|d| d["spans"].as_array().cloned().unwrap_or_default())
            .filter(|s| want.contains_key(s["span_id"].as_str().unwrap_or_default()))
            .count()
            >= want.len()
    })
    .await;
    let got: BTreeMap<String, serde_json::Value> = json_lines(&sink, "/hook")
        .iter()
        .flat_map(|d| d["spans"].as_array().cloned().unwrap_or_default())
        .map(|s| (s["span_id"].as_str().unwrap().to_string(), s))
        .collect();
    for (id, s) in &want {
        let g = &got[id];
        assert_eq!(g["name"], s["name"], "{id}");
        assert_eq!(g["trace_id"], s["trace_id"], "{id}");
        assert_eq!(g["service"], sent["service"], "{id}");
        let parent = s["parent_span_id"].as_str().unwrap();
        if parent.is_empty() {
            assert!(g["parent_id"].is_null(), "{id}: {g}");
        } else {
            assert_eq!(g["parent_id"].as_str(), Some(parent), "{id}");
        }
        let expected_ms = (s["end"].as_u64().unwrap() - s["start"].as_u64().unwrap()) as f64 / 1e6;
        let ms = g["duration_ms"].as_f64().unwrap();
        assert!(
            (ms - expected_ms).abs() < 0.001,
            "{id}: {ms} vs {expected_ms}"
        );
        let status = ["unset", "ok", "error"][s["status_code"].as_u64().unwrap() as usize];
        assert_eq!(g["status"], status, "{id}");
        for (k, v) in s["attributes"].as_object().unwrap() {
            assert_eq!(&g["attributes"][k], v, "{id}: attribute {k}");
        }
    }
    let checkout = got.values().find(|s| s["name"] == "checkout-0").unwrap();
    assert_eq!(checkout["kind"], "server");
    let headers = sink.headers();
    assert!(
        headers
            .iter()
            .all(|h| h.get("x-team").is_some_and(|v| v == "payments")),
        "every request carries the configured header"
    );
    assert!(headers.iter().all(|h| {
        h.get("content-type")
            .is_some_and(|v| v == "application/json")
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn js_hec_built_from_source_sends_sdk_spans_and_logs_as_events_with_the_host_added_token() {
    let wasm = js_hec();
    let plugins = plugin_dir(&[("js-hec", &wasm)]);
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start_with_env(
        "js-hec",
        &format!(
            r#"
            {PREAMBLE}
            [plugins]
            dir = "{}"
            [exporters.hec]
            plugin = "js-hec"
            memory = "128MiB"
            config = {{ endpoint = "{}", index = "otel" }}
            secret_headers = {{ authorization = {{ env = "HEC_TOKEN", prefix = "Splunk " }} }}
            "#,
            plugins.path().display(),
            sink.url()
        ),
        &[("HEC_TOKEN", "0123-secret")],
    );
    let sent = otel_send("http", &ferry.http_url(), "js-hec");
    let want = sent_spans(&sent);
    let want_logs = sent["logs"].as_array().unwrap().clone();
    let path = "/services/collector/event";
    eventually("every SDK span and log record as an event", async || {
        let events = json_lines(&sink, path);
        let spans = events
            .iter()
            .filter(|e| e["sourcetype"] == "otel:span")
            .filter(|e| want.contains_key(e["event"]["span_id"].as_str().unwrap_or_default()))
            .count();
        let logs = events
            .iter()
            .filter(|e| e["sourcetype"] == "otel:log")
            .count();
        spans >= want.len() && logs >= want_logs.len()
    })
    .await;
    let events = json_lines(&sink, path);
    for e in &events {
        assert_eq!(e["index"], "otel");
        assert_eq!(e["source"], sent["service"]);
    }
    for (id, s) in &want {
        let e = events
            .iter()
            .find(|e| e["event"]["span_id"] == id.as_str())
            .unwrap();
        assert_eq!(e["event"]["name"], s["name"]);
        assert_eq!(e["event"]["trace_id"], s["trace_id"]);
        let start_s = s["start"].as_u64().unwrap() as f64 / 1e9;
        assert!((e["time"].as_f64().unwrap() - start_s).abs() < 1e-5, "{e}");
        for (k, v) in s["attributes"].as_object().unwrap() {
            assert_eq!(&e["event"]["attributes"][k], v, "{id}: attribute {k}");
        }
    }
    for l in &want_logs {
        let body = l["body"].as_str().unwrap();
        let e = events
            .iter()
            .find(|e| e["sourcetype"] == "otel:log" && e["event"]["body"] == body)
            .unwrap_or_else(|| panic!("log {body:?} not sent"));
        assert_eq!(e["event"]["severity"], l["severity"]);
        if !l["trace_id"].as_str().unwrap().is_empty() {
            assert_eq!(e["event"]["trace_id"], l["trace_id"]);
        }
    }
    assert!(
        sink.headers().iter().all(|h| h
            .get("authorization")
            .is_some_and(|v| v == "Splunk 0123-secret")),
        "the host adds the token to every request"
    );
}
