//! Bad input gets a clear error, is counted, and never harms the daemon.

use std::io::Write;

use ferry_proto::grpc_path;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
use ferry_proto::trace_service::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;

use crate::harness::{Ferry, grpc_unary, post_traces, request, traces_request};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn start() -> Ferry {
    Ferry::start(
        "errors",
        r#"
        [receivers.otlp]
        grpc = "127.0.0.1:0"
        http = "127.0.0.1:0"
        max_request_bytes = "64KiB"
        [admin]
        listen = "127.0.0.1:0"
        [exporters.debug]
        plugin = "debug"
        signals = ["traces", "logs"]
        "#,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_oversize_and_mistyped_requests_are_refused_and_counted() {
    let mut ferry = start();
    let url = format!("{}/v1/traces", ferry.http_url());
    let pb = ("content-type", "application/x-protobuf");
    let js = ("content-type", "application/json");

    /// (what, headers, body, expected status, text the error must contain)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "truncated protobuf",
            vec![pb],
            vec![0x0a, 0xff, 0x01],
            400,
            "truncated",
        ),
        (
            "wrong wire type",
            vec![pb],
            vec![0x08, 0x01],
            400,
            "wire type",
        ),
        (
            "bad JSON",
            vec![js],
            b"{\"resourceSpans\": [".to_vec(),
            400,
            "invalid OTLP/JSON",
        ),
        (
            "JSON of the wrong shape",
            vec![js],
            b"{\"resourceSpans\": 5}".to_vec(),
            400,
            "invalid OTLP/JSON",
        ),
        (
            "not gzip",
            vec![pb, ("content-encoding", "gzip")],
            b"plainly not gzip".to_vec(),
            400,
            "gzip",
        ),
        (
            "unknown encoding",
            vec![pb, ("content-encoding", "br")],
            traces_request(1, "x", 1),
            400,
            "Content-Encoding",
        ),
        (
            "oversize body",
            vec![pb],
            vec![0u8; 100 << 10],
            413,
            "exceeds the limit",
        ),
        (
            "gzip bomb",
            vec![pb, ("content-encoding", "gzip")],
            gzip(&vec![0u8; 1 << 20]),
            413,
            "exceeds the limit",
        ),
        (
            "wrong content type",
            vec![("content-type", "text/plain")],
            b"hello".to_vec(),
            415,
            "Content-Type",
        ),
        (
            "no content type",
            vec![],
            b"hello".to_vec(),
            415,
            "Content-Type",
        ),
    ];
    let n_cases = cases.len() as u64;
    for (what, headers, body, want, needle) in cases {
        let (status, _, body) = request("POST", &url, &headers, body).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{what}: {text}");
        assert!(
            text.contains(needle),
            "{what}: error should mention {needle:?}: {text}"
        );
    }

    // gRPC: malformed and oversize messages.
    let traces = ferry.grpc.unwrap();
    let (code, msg, _) = grpc_unary(traces, grpc_path::TRACES, &[0x0a, 0xff, 0x01]).await;
    assert_eq!(code, 3, "INVALID_ARGUMENT: {msg}");
    assert!(msg.contains("truncated"), "{msg}");
    // Oversize: refused before decoding, worded and counted like the other receivers' 413.
    let (code, msg, _) = grpc_unary(traces, grpc_path::TRACES, &vec![0u8; 100 << 10]).await;
    assert_eq!(code, 8, "RESOURCE_EXHAUSTED: {msg}");
    assert!(msg.contains("exceeds the limit"), "{msg}");
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["receiver=\"otlp_grpc\"", "reason=\"too_large\""]
            )
            .await,
        1
    );
    // Metrics have no exporter here: refused with a message naming the reason.
    let (code, msg, _) = grpc_unary(traces, grpc_path::METRICS, &[]).await;
    assert_eq!(code, 12, "UNIMPLEMENTED: {msg}");
    assert!(
        msg.contains("no exporter is configured for metrics"),
        "{msg}"
    );
    let (status, _, body) = request(
        "POST",
        &format!("{}/v1/metrics", ferry.http_url()),
        &[pb],
        vec![],
    )
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // The daemon is unharmed and still takes good data.
    assert!(ferry.alive());
    let (status, _, _) = request(
        "GET",
        &format!("http://{}/healthz", ferry.admin.unwrap()),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = post_traces(&ferry, traces_request(3, "good", 1)).await;
    assert_eq!(status, 200);
    let (code, msg, _) = grpc_unary(
        traces,
        grpc_path::TRACES,
        &traces_request(2, "good-grpc", 10),
    )
    .await;
    assert_eq!(code, 0, "{msg}");

    let refused = |reason: &'static str| {
        let ferry = &ferry;
        async move {
            ferry
                .metric(
                    "ferry_receiver_refused_requests_total",
                    &[&format!("reason=\"{reason}\"")],
                )
                .await
        }
    };
    // 8 HTTP cases are invalid (incl. the two media-type ones), 2 too large; gRPC adds 1
    // invalid and 1 oversize.
    assert_eq!(refused("invalid").await, n_cases - 2 + 1);
    assert_eq!(refused("too_large").await, 3);
    assert_eq!(refused("no_exporter").await, 2);
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_accepted_items_total",
                &["signal=\"traces\""]
            )
            .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_with_bad_ids_get_a_partial_success() {
    let ferry = start();
    let span = |trace_len: usize, name: &str| Span {
        trace_id: vec![1; trace_len],
        span_id: vec![2; 8],
        name: name.into(),
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(16, "ok"),
                    span(5, "short trace id"),
                    span(16, "ok too"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, _, body) = post_traces(&ferry, req.encode_to_vec()).await;
    assert_eq!(status, 200);
    let resp = ExportTraceServiceResponse::decode(body).unwrap();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id must be 16 bytes"),
        "{}",
        partial.error_message
    );

    let (code, msg, body) = grpc_unary(
        ferry.grpc.unwrap(),
        ferry_proto::grpc_path::TRACES,
        &req.encode_to_vec(),
    )
    .await;
    assert_eq!(code, 0, "{msg}");
    assert_eq!(
        ExportTraceServiceResponse::decode(body)
            .unwrap()
            .partial_success
            .unwrap()
            .rejected_spans,
        1
    );
    assert_eq!(
        ferry
            .metric("ferry_receiver_rejected_items_total", &[])
            .await,
        2
    );
    assert_eq!(
        ferry
            .metric("ferry_receiver_accepted_items_total", &[])
            .await,
        4
    );
}

/// `bytes` as field `number` of a message (length-delimited).
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![number << 3 | 2];
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A trace request of one span made of these field bytes.
fn one_span(span: &[u8]) -> Vec<u8> {
    field(1, &field(2, &field(2, span)))
}

/// `request` with the first `from` bytes replaced by `to`.
fn replace(request: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = request
        .windows(from.len())
        .position(|w| w == from)
        .expect("the bytes to replace");
    [&request[..at], to, &request[at + from.len()..]].concat()
}

/// A request that the receiver's walk once let through but that does not decode into OTLP
/// structs (a string that is not UTF-8, a number with the wrong wire type) is refused at the
/// door. Accepted, it would have been merged into a batch with good requests, and an exporter
/// that decodes its batches (here `debug`) would have dropped them all.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_would_not_decode_are_refused_and_spare_the_good_ones() {
    let ferry = start();
    let ids = [field(1, &[7; 16]), field(2, &[1; 8])].concat();
    let cases = [
        (
            replace(
                traces_request(1, "caf\u{e9}", 1),
                &[0xc3, 0xa9],
                &[0xc3, 0x28],
            ),
            "Span.name is not valid UTF-8",
        ),
        (
            one_span(
                &[
                    &ids[..],
                    &field(
                        9,
                        &replace(
                            ferry_proto::common::KeyValue {
                                key: "user".into(),
                                value: Some(ferry_proto::common::AnyValue {
                                    value: Some(
                                        ferry_proto::common::any_value::Value::StringValue(
                                            "jos\u{e9}".into(),
                                        ),
                                    ),
                                }),
                                ..Default::default()
                            }
                            .encode_to_vec(),
                            &[0xc3, 0xa9],
                            &[0xc3, 0xff],
                        ),
                    ),
                ]
                .concat(),
            ),
            "KeyValue.value is not valid UTF-8",
        ),
        (
            // start_time_unix_nano (fixed64) sent as a varint.
            one_span(&[&ids[..], &[7 << 3, 0xe8, 0x07]].concat()),
            "Span.start_time_unix_nano has wire type 0",
        ),
    ];
    for (body, needle) in &cases {
        let (status, _, answer) = post_traces(&ferry, body.clone()).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, 400, "{needle}: {text}");
        assert!(text.contains(needle), "{needle}: {text}");
        let (code, msg, _) = grpc_unary(ferry.grpc.unwrap(), grpc_path::TRACES, body).await;
        assert_eq!(code, 3, "INVALID_ARGUMENT: {msg}");
        assert!(msg.contains(needle), "{msg}");
    }
    let (status, _, _) = post_traces(&ferry, traces_request(4, "good", 1)).await;
    assert_eq!(status, 200);
    crate::harness::eventually("the good spans are exported", async || {
        ferry
            .metric("ferry_exporter_sent_items_total", &["signal=\"traces\""])
            .await
            == 4
    })
    .await;
    assert_eq!(
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["reason=\"invalid\""]
            )
            .await,
        2 * cases.len() as u64
    );
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}
