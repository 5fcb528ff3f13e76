//! The real jaeger-client (Python, UDP thrift compact) → Ferry's Jaeger receiver → otlp-http
//! → capture, checked field by field; malformed datagrams are counted and skipped.

use std::process::Command;

use prost::Message;
use serde_json::{Value, json};

use crate::harness::{
    Ferry, Script, Sink, assert_attributes_and_events, capture_config, client_json, client_script,
    eventually, hex, json_attrs, python_with, spans_by_id,
};

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_client_python_over_udp_compact_arrives_as_otlp() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("jaeger", &config(&sink));
    let port = ferry
        .receiver_addr("jaeger_compact")
        .expect("compact port")
        .port();
    let py = python_with(&["jaeger-client==4.8.0", "six"], "import jaeger_client");
    let sent = client_json(Command::new(py).arg(client_script("jaeger_send.py")).args([
        "--port",
        &port.to_string(),
        "--run",
        "jaeger-run",
    ]));
    let want = sent["spans"].as_array().unwrap();
    eventually("jaeger spans arrive", async || {
        spans_by_id(&sink).values().map(Vec::len).sum::<usize>() >= want.len()
    })
    .await;
    check(&sink, &sent, "jaeger-py");

    // A malformed datagram on either port is counted and skipped; the receiver lives on.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for receiver in ["jaeger_compact", "jaeger_binary"] {
        udp.send_to(
            b"\x82\x81\x00\x09emitBatch\x1c\xff",
            ferry.receiver_addr(receiver).unwrap(),
        )
        .unwrap();
    }
    eventually("malformed datagrams are counted", async || {
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["reason=\"invalid\"", "receiver=\"jaeger_"],
            )
            .await
            == 2
    })
    .await;
    eventually("the skipped datagram is logged", async || {
        ferry.logs().contains("skipping malformed Jaeger datagram")
    })
    .await;
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_accepted_items_total",
                &["receiver=\"jaeger_compact\""]
            )
            .await,
        2
    );
}

/// Every span the client reported arrived once, with its fields intact.
fn check(sink: &Sink, sent: &Value, service: &str) {
    let want = sent["spans"].as_array().unwrap();
    let got = spans_by_id(sink);
    for w in want {
        let id = w["span_id"].as_str().unwrap();
        let copies = got.get(id).unwrap_or_else(|| panic!("span {id} missing"));
        assert_eq!(copies.len(), 1);
        let (s, resource) = &copies[0];
        let resource = json_attrs(resource);
        assert_eq!(resource["service.name"], json!(service), "{resource:?}");
        assert!(resource.contains_key("jaeger.version"), "{resource:?}");
        assert_eq!(hex(&s.trace_id), sent["trace_id"].as_str().unwrap());
        assert_eq!(hex(&s.parent_span_id), w["parent"].as_str().unwrap());
        assert_eq!(s.name, w["name"].as_str().unwrap());
        assert_eq!(i64::from(s.kind), w["kind"].as_i64().unwrap());
        let is_error = s.status.as_ref().is_some_and(|st| st.code == 2);
        assert_eq!(
            is_error,
            w["error"].as_bool().unwrap(),
            "status of {}",
            s.name
        );
        assert!(s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano);
        assert_attributes_and_events(s, &w["tags"], &w["events"]);
    }
}

fn config(sink: &Sink) -> String {
    let receivers = r#"
        [receivers.jaeger]
        thrift_compact = "127.0.0.1:0"
        thrift_binary = "127.0.0.1:0"
        thrift_http = "127.0.0.1:0"
        grpc = "127.0.0.1:0"
    "#;
    capture_config(receivers, sink)
}

/// `node` with jaeger-client installed in target/e2e-node (from npm) on first use.
fn node_client() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-node");
    if !dir.join("node_modules/jaeger-client").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        if !dir.join("package.json").exists() {
            std::fs::write(dir.join("package.json"), "{\"private\":true}").unwrap();
        }
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "jaeger-client@3.19.0"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "npm install jaeger-client failed");
    }
    dir.join("node_modules")
}

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_client_node_over_udp_binary_and_http_arrives_as_otlp() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("jaeger-node", &config(&sink));
    let modules = node_client();
    let targets = [
        (
            "udp",
            ferry
                .receiver_addr("jaeger_binary")
                .unwrap()
                .port()
                .to_string(),
        ),
        (
            "http",
            format!(
                "http://{}/api/traces",
                ferry.receiver_addr("jaeger_http").unwrap()
            ),
        ),
    ];
    for (mode, target) in targets {
        let sent = client_json(
            Command::new("node")
                .env("NODE_PATH", &modules)
                .arg(client_script("jaeger_send.js"))
                .args([mode, &target, &format!("node-{mode}")]),
        );
        let n = sent["spans"].as_array().unwrap().len();
        eventually(&format!("node {mode} spans arrive"), async || {
            let got = spans_by_id(&sink);
            sent["spans"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| got.contains_key(w["span_id"].as_str().unwrap()))
                .count()
                == n
        })
        .await;
        check(&sink, &sent, &format!("jaeger-node-{mode}"));
    }
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_accepted_items_total",
                &["receiver=\"jaeger_binary\""]
            )
            .await,
        2
    );
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_accepted_items_total",
                &["receiver=\"jaeger_http\""]
            )
            .await,
        2
    );

    // A bad HTTP body is a clear 400, counted.
    let (status, _, body) = crate::harness::request(
        "POST",
        &format!(
            "http://{}/api/traces",
            ferry.receiver_addr("jaeger_http").unwrap()
        ),
        &[("content-type", "application/x-thrift")],
        vec![12, 0, 1, 11],
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("invalid Jaeger thrift Batch"));
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_grpc_post_spans_arrives_as_otlp() {
    use ferry_proto::jaeger as j;
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("jaeger-grpc", &config(&sink));
    let kv = |key: &str, v_type: j::ValueType| j::KeyValue {
        key: key.into(),
        v_type: v_type as i32,
        ..Default::default()
    };
    let ts = |seconds, nanos| Some(j::Timestamp { seconds, nanos });
    let span = |id: u8, process: Option<j::Process>| j::Span {
        trace_id: vec![9; 16],
        span_id: vec![id; 8],
        operation_name: format!("op{id}"),
        references: vec![
            j::SpanRef {
                trace_id: vec![9; 16],
                span_id: vec![1; 8],
                ref_type: j::SpanRefType::ChildOf as i32,
            },
            j::SpanRef {
                trace_id: vec![8; 16],
                span_id: vec![7; 8],
                ref_type: j::SpanRefType::FollowsFrom as i32,
            },
        ],
        start_time: ts(1_700_000_000, 123),
        duration: Some(j::Duration {
            seconds: 1,
            nanos: 5,
        }),
        tags: vec![
            j::KeyValue {
                v_int64: 42,
                ..kv("retries", j::ValueType::Int64)
            },
            j::KeyValue {
                v_str: "server".into(),
                ..kv("span.kind", j::ValueType::String)
            },
            j::KeyValue {
                v_bool: true,
                ..kv("error", j::ValueType::Bool)
            },
        ],
        logs: vec![j::Log {
            timestamp: ts(1_700_000_000, 500),
            fields: vec![j::KeyValue {
                v_str: "retry".into(),
                ..kv("event", j::ValueType::String)
            }],
        }],
        process,
        ..Default::default()
    };
    let req = j::PostSpansRequest {
        batch: Some(j::Batch {
            spans: vec![
                span(2, None),
                span(
                    3,
                    Some(j::Process {
                        service_name: "other".into(),
                        tags: vec![],
                    }),
                ),
            ],
            process: Some(j::Process {
                service_name: "grpc-svc".into(),
                tags: vec![j::KeyValue {
                    v_str: "h1".into(),
                    ..kv("hostname", j::ValueType::String)
                }],
            }),
        }),
    };
    let addr = ferry
        .receiver_addr("jaeger_grpc")
        .expect("jaeger grpc address");
    let (code, msg, _) =
        crate::harness::grpc_unary(addr, j::POST_SPANS_PATH, &req.encode_to_vec()).await;
    assert_eq!(code, 0, "{msg}");
    eventually("PostSpans spans arrive", async || {
        spans_by_id(&sink).len() == 2
    })
    .await;
    let got = spans_by_id(&sink);
    let (s, resource) = &got[&hex(&[2; 8])][0];
    let resource = json_attrs(resource);
    assert_eq!(resource["service.name"], json!("grpc-svc"), "{resource:?}");
    assert_eq!(resource["hostname"], json!("h1"), "{resource:?}");
    assert_eq!(
        s.parent_span_id,
        vec![1; 8],
        "CHILD_OF reference is the parent"
    );
    assert_eq!(s.links.len(), 1, "FOLLOWS_FROM is a link");
    assert_eq!(
        s.start_time_unix_nano, 1_700_000_000_000_000_123,
        "nanoseconds survive"
    );
    assert_eq!(s.end_time_unix_nano, 1_700_000_001_000_000_128);
    assert_eq!(s.kind, 2);
    assert_eq!(s.status.as_ref().unwrap().code, 2);
    assert_eq!(json_attrs(&s.attributes)["retries"], json!(42));
    assert_eq!(s.events[0].name, "retry");
    let (_, other) = &got[&hex(&[3; 8])][0];
    assert_eq!(
        json_attrs(other)["service.name"],
        json!("other"),
        "a span's own process is its resource"
    );

    let (code, msg, _) =
        crate::harness::grpc_unary(addr, j::POST_SPANS_PATH, &[0x0a, 0xff, 0x01]).await;
    assert_eq!(code, 3, "INVALID_ARGUMENT: {msg}");
    assert!(msg.contains("invalid PostSpansRequest"), "{msg}");
}
