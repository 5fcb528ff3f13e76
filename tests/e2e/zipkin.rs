//! The real py_zipkin client (v1 JSON, v2 JSON, v2 protobuf) → Ferry's Zipkin receiver →
//! otlp-http → capture, checked field by field.

use std::collections::BTreeMap;
use std::process::Command;

use ferry_proto::common::any_value;
use ferry_proto::trace::Span;
use serde_json::Value;

use crate::harness::{
    Ferry, Script, Sink, base64_decode, capture_config, client_json, client_script, eventually,
    hex, json_attrs, python_with, request, spans_by_id,
};

fn text_attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => Some(v.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// Spans at the sink by span id, with their resource's service.name.
fn received(sink: &Sink) -> BTreeMap<String, Vec<(Span, String)>> {
    spans_by_id(sink)
        .into_iter()
        .map(|(id, copies)| {
            let copies = copies
                .into_iter()
                .map(|(s, resource)| {
                    let service = json_attrs(&resource)
                        .get("service.name")
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    (s, service)
                })
                .collect();
            (id, copies)
        })
        .collect()
}

fn zipkin_send(url: &str, encoding: &str, run: &str) -> Value {
    let py = python_with(
        &["py_zipkin==1.2.8", "protobuf"],
        "import py_zipkin, google.protobuf",
    );
    client_json(Command::new(py).arg(client_script("zipkin_send.py")).args([
        "--url",
        url,
        "--encoding",
        encoding,
        "--run",
        run,
    ]))
}

/// The Zipkin receiver on a free port, exporting everything to `sink` over OTLP/HTTP.
fn config(sink: &Sink) -> String {
    capture_config("[receivers.zipkin]\nhttp = \"127.0.0.1:0\"", sink)
}

#[tokio::test(flavor = "multi_thread")]
async fn py_zipkin_v1_v2_json_and_proto_arrive_as_otlp() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("zipkin", &config(&sink));
    let zipkin_addr = ferry
        .receiver_addr("zipkin")
        .expect("zipkin receiver address");
    let url = format!("http://{zipkin_addr}");
    let mut sent = Vec::new();
    for encoding in ["v1-json", "v2-json", "v2-proto"] {
        sent.push(zipkin_send(&url, encoding, &format!("run-{encoding}")));
    }
    let total: usize = sent
        .iter()
        .map(|s| s["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 6);
    eventually("every Zipkin span reaches the OTLP backend", async || {
        received(&sink).values().map(Vec::len).sum::<usize>() >= total
    })
    .await;
    let got = received(&sink);
    for run in &sent {
        for want in run["spans"].as_array().unwrap() {
            let id = want["span_id"].as_str().unwrap();
            let copies = got.get(id).unwrap_or_else(|| panic!("span {id} missing"));
            assert_eq!(copies.len(), 1, "span {id} arrived {} times", copies.len());
            let (s, service) = &copies[0];
            assert_eq!(service, run["service"].as_str().unwrap());
            let trace = want["trace_id"].as_str().unwrap();
            assert_eq!(
                hex(&s.trace_id),
                format!("{trace:0>32}"),
                "trace id of {id}"
            );
            match want["parent_span_id"].as_str() {
                Some(p) => assert_eq!(hex(&s.parent_span_id), p),
                None => assert!(s.parent_span_id.is_empty()),
            }
            assert_eq!(s.name, want["name"].as_str().unwrap());
            assert_eq!(
                i64::from(s.kind),
                want["kind"].as_i64().unwrap(),
                "kind of {}",
                s.name
            );
            assert!(
                s.start_time_unix_nano > 1_600_000_000_000_000_000,
                "start time of {}",
                s.name
            );
            assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
            for (k, v) in want["tags"].as_object().unwrap() {
                assert_eq!(
                    text_attr(s, k).as_deref(),
                    v.as_str(),
                    "tag {k} of {}",
                    s.name
                );
            }
            let events: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
            let want_events: Vec<&str> = want["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            assert_eq!(events, want_events, "events of {}", s.name);
            if let Some(peer) = want.get("peer_service") {
                assert_eq!(text_attr(s, "peer.service").as_deref(), peer.as_str());
                assert_eq!(text_attr(s, "net.peer.port").as_deref(), Some("5432"));
            }
        }
    }
    // v2 JSON carries exact microsecond times: they must survive as nanoseconds.
    let v2 = &sent[1];
    let payload = base64_decode(v2["payloads"][0].as_str().unwrap());
    let zspans: Vec<Value> = serde_json::from_slice(&payload).unwrap();
    for z in zspans {
        let (s, _) = &got[z["id"].as_str().unwrap()][0];
        let ts = z["timestamp"].as_u64().unwrap();
        assert_eq!(s.start_time_unix_nano, ts * 1000);
        assert_eq!(
            s.end_time_unix_nano,
            (ts + z["duration"].as_u64().unwrap()) * 1000
        );
    }
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_accepted_items_total",
                &["receiver=\"zipkin\""]
            )
            .await,
        6
    );

    // Malformed input: a clear 400, counted, and the receiver keeps working.
    let (status, _, body) = request(
        "POST",
        &format!("{url}/api/v2/spans"),
        &[("content-type", "application/json")],
        b"[{\"traceId\": \"xyz\", \"id\": \"1\"}]".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not hex"));
    let (status, _, _) = request(
        "POST",
        &format!("{url}/api/v1/spans"),
        &[("content-type", "application/x-thrift")],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["receiver=\"zipkin\"", "reason=\"invalid\""]
            )
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opentelemetry_zipkin_json_exporter_arrives_as_otlp() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("otel-zipkin", &config(&sink));
    let url = format!(
        "http://{}/api/v2/spans",
        ferry.receiver_addr("zipkin").unwrap()
    );
    let py = python_with(
        &["opentelemetry-exporter-zipkin-json==1.45.1"],
        "import opentelemetry.exporter.zipkin.json",
    );
    let sent = client_json(
        Command::new(py)
            .arg(client_script("otel_zipkin_send.py"))
            .args(["--url", &url, "--run", "otel-zipkin-run"]),
    );
    let want = sent["spans"].as_array().unwrap();
    assert_eq!(want.len(), 3);
    eventually("the exporter's spans arrive", async || {
        received(&sink).values().map(Vec::len).sum::<usize>() >= 3
    })
    .await;
    let got = received(&sink);
    for w in want {
        let id = w["span_id"].as_str().unwrap();
        let (s, service) = &got[id][0];
        assert_eq!(got[id].len(), 1);
        assert_eq!(service, "otel-zipkin");
        assert_eq!(hex(&s.trace_id), w["trace_id"].as_str().unwrap());
        assert_eq!(
            hex(&s.parent_span_id),
            w["parent_span_id"].as_str().unwrap()
        );
        assert_eq!(s.name, w["name"].as_str().unwrap());
        assert_eq!(
            i64::from(s.kind),
            w["kind"].as_i64().unwrap(),
            "kind of {}",
            s.name
        );
        assert_eq!(
            s.start_time_unix_nano,
            w["start_us"].as_u64().unwrap() * 1000
        );
        assert_eq!(s.end_time_unix_nano, w["end_us"].as_u64().unwrap() * 1000);
        let st = s.status.clone().unwrap_or_default();
        match w["error"].as_str() {
            Some(msg) => assert_eq!((st.code, st.message.as_str()), (2, msg)),
            None => assert_ne!(st.code, 2),
        }
        // Resource attributes the exporter copied into tags went back to the resource.
        assert!(
            text_attr(s, "service.name").is_none()
                && text_attr(s, "telemetry.sdk.language").is_none()
        );
        for e in w["events"].as_array().unwrap() {
            let ev = s
                .events
                .iter()
                .find(|x| x.name == e["name"].as_str().unwrap())
                .expect("event");
            let attrs: BTreeMap<String, Value> = ev
                .attributes
                .iter()
                .map(|kv| {
                    let v = match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
                        any_value::Value::StringValue(v) => Value::from(v.clone()),
                        any_value::Value::IntValue(i) => Value::from(*i),
                        other => panic!("{other:?}"),
                    };
                    (kv.key.clone(), v)
                })
                .collect();
            let want_attrs: BTreeMap<String, Value> = e["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(attrs, want_attrs, "attributes of event {}", ev.name);
        }
    }
    let root = got
        .values()
        .map(|v| &v[0].0)
        .find(|s| s.name == "checkout")
        .unwrap();
    assert_eq!(
        text_attr(root, "e2e.run").as_deref(),
        Some("otel-zipkin-run")
    );
    assert_eq!(text_attr(root, "retry.count").as_deref(), Some("3"));
    assert_eq!(text_attr(root, "user.premium").as_deref(), Some("true"));
    assert_eq!(
        text_attr(root, "items").as_deref(),
        Some("[\"apple\",\"pear\"]")
    );
}
