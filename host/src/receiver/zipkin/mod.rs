//! Zipkin receiver (default `127.0.0.1:9411`): `POST /api/v2/spans` in JSON or protobuf
//! (`ListOfSpans`), `POST /api/v1/spans` in JSON; gzip bodies; answers `202 Accepted` as
//! Zipkin does.
//!
//! Spans are translated to OTLP once, here, following the OpenTelemetry Collector's Zipkin
//! rules: `localEndpoint.serviceName` becomes the resource's `service.name`; kinds map one to
//! one (no kind is UNSPECIFIED unless `span.kind=internal`); `otel.status_code` /
//! `otel.status_description` and the `error` tag become the status; other tags become string
//! attributes; endpoints become `net.host.*`, `net.peer.*` and `peer.service`; annotations
//! become events; 64-bit trace ids are left-padded to 128 bits; a missing start time becomes
//! 0 with `otel.zipkin.absentField.startTime = true`.

mod decode;
mod translate;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::receiver::ingest::{Ingest, IngestError, Launch};
use crate::signal::Signal;

use decode::*;
use translate::*;

/// `[receivers.zipkin]`: Zipkin v1/v2 over HTTP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZipkinReceiverConfig {
    /// Listen address; Zipkin's usual `127.0.0.1:9411` unless set.
    #[serde(default = "default_addr")]
    pub http: SocketAddr,
    /// Largest request accepted, after decompression.
    #[serde(
        default = "crate::receiver::default_max_request",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub max_request_bytes: usize,
}

fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9411))
}

impl crate::receiver::Receiver for ZipkinReceiverConfig {
    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    async fn start(&self, launch: &mut Launch<'_>) -> anyhow::Result<()> {
        start(self, launch).await
    }
}

/// The three body decoders, with their translation.
pub fn decoders() -> Vec<(&'static str, crate::receiver::decoders::Decoder)> {
    vec![
        ("zipkin_v1_json", |b| {
            let _ = decode(Format::V1Json, b);
        }),
        ("zipkin_v2_json", |b| {
            let _ = decode(Format::V2Json, b);
        }),
        ("zipkin_v2_proto", |b| {
            let _ = decode(Format::V2Proto, b);
        }),
    ]
}

/// A Zipkin body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `/api/v1/spans`, JSON.
    V1Json,
    /// `/api/v2/spans`, JSON.
    V2Json,
    /// `/api/v2/spans`, protobuf `ListOfSpans`.
    V2Proto,
}

/// Translates one (decompressed) Zipkin body into an OTLP traces request.
pub fn decode(format: Format, body: &[u8]) -> Result<ExportTraceServiceRequest, IngestError> {
    let spans = match format {
        Format::V1Json => from_json_v1(body)?,
        Format::V2Json => from_json_v2(body)?,
        Format::V2Proto => from_proto(body)?,
    };
    Ok(to_otlp(spans))
}

#[derive(Clone, Copy)]
enum Version {
    V1,
    V2,
}

fn error_response(err: &IngestError) -> Response {
    let mut resp = (err.http_status(), err.to_string()).into_response();
    crate::receiver::add_retry_after(&mut resp);
    resp
}

/// Reads and translates one request into OTLP protobuf.
async fn translate(ingest: &Ingest, version: Version, req: Request) -> Result<Bytes, IngestError> {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".into());
    let protobuf = match (version, mime.as_str()) {
        (_, "application/json") => false,
        (Version::V2, "application/x-protobuf" | "application/protobuf") => true,
        (_, other) => {
            return Err(bad(format!(
                "unsupported Content-Type {other:?} for this endpoint (use application/json{})",
                if matches!(version, Version::V2) {
                    " or application/x-protobuf"
                } else {
                    ""
                }
            )));
        }
    };
    let body =
        crate::receiver::read_http_body(ingest.max_request_bytes, Signal::Traces, req).await?;
    let format = match (version, protobuf) {
        (Version::V2, true) => Format::V2Proto,
        (Version::V2, false) => Format::V2Json,
        (Version::V1, _) => Format::V1Json,
    };
    Ok(decode(format, &body)?.encode_to_vec().into())
}

async fn handle(ingest: Arc<Ingest>, version: Version, req: Request) -> Response {
    let otlp = translate(&ingest, version, req).await;
    match ingest.translated(Signal::Traces, otlp).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => error_response(&e),
    }
}

/// The Zipkin routes.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route(
            "/api/v2/spans",
            post(|State(i): State<Arc<Ingest>>, req: Request| handle(i, Version::V2, req)),
        )
        .route(
            "/api/v1/spans",
            post(|State(i): State<Arc<Ingest>>, req: Request| handle(i, Version::V1, req)),
        )
        .with_state(ingest)
}

/// Serves Zipkin on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    axum::serve(listener, router(ingest))
        .await
        .map_err(|e| anyhow::anyhow!("Zipkin server on {addr} failed: {e}"))
}

/// Starts the Zipkin server.
async fn start(config: &ZipkinReceiverConfig, launch: &mut Launch<'_>) -> anyhow::Result<()> {
    launch
        .serve("zipkin", config.http, config.max_request_bytes, serve)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::common::any_value;
    use ferry_proto::trace::{Span, span, status};
    use ferry_proto::zipkin as zpb;

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn only_span(req: &ExportTraceServiceRequest) -> &Span {
        &req.resource_spans[0].scope_spans[0].spans[0]
    }

    #[test]
    fn v2_json_follows_the_collector_rules() {
        let body = br#"[{
            "traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "parentId": "6b221d5bc9e6496c",
            "name": "get /api", "kind": "SERVER", "timestamp": 1556604172355737, "duration": 1431,
            "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
            "remoteEndpoint": {"serviceName": "frontend", "ipv4": "172.19.0.3", "port": 58648},
            "annotations": [
                {"timestamp": 1556604172355800, "value": "wr"},
                {"timestamp": 1556604172355900, "value": "{\"cache miss\": {\"key\": \"a\", \"size\": 3}}"}
            ],
            "tags": {"http.method": "GET", "error": "boom", "otel.library.name": "lib", "otel.library.version": "1.2"}
        }]"#;
        let req = to_otlp(from_json_v2(body).unwrap());
        let rs = &req.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(res[0].key, "service.name");
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("lib", "1.2")
        );
        let s = only_span(&req);
        assert_eq!(
            s.trace_id[..8],
            [0u8; 8],
            "64-bit trace ids are left-padded"
        );
        assert_eq!(
            s.trace_id[8..],
            [0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f]
        );
        assert_eq!(
            s.parent_span_id,
            vec![0x6b, 0x22, 0x1d, 0x5b, 0xc9, 0xe6, 0x49, 0x6c]
        );
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_431_000);
        let st = s.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (status::StatusCode::Error as i32, "boom")
        );
        assert_eq!(
            attr(s, "http.method"),
            Some(&any_value::Value::StringValue("GET".into()))
        );
        assert!(attr(s, "error").is_none() && attr(s, "otel.library.name").is_none());
        assert_eq!(
            attr(s, "net.host.port"),
            Some(&any_value::Value::IntValue(3306))
        );
        assert_eq!(
            attr(s, "peer.service"),
            Some(&any_value::Value::StringValue("frontend".into()))
        );
        assert_eq!(
            attr(s, "net.peer.ip"),
            Some(&any_value::Value::StringValue("172.19.0.3".into()))
        );
        assert_eq!(s.events[0].name, "wr");
        assert_eq!(s.events[1].name, "cache miss");
        assert_eq!(s.events[1].attributes.len(), 2);
        assert_eq!(s.events[1].time_unix_nano, 1_556_604_172_355_900_000);
    }

    #[test]
    fn link_tags_become_links_and_a_shared_span_has_no_parent_of_itself() {
        let body = br#"[{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "id": "b7ad6b7169203331",
            "parentId": "b7ad6b7169203331", "name": "shared", "kind": "SERVER", "shared": true,
            "tags": {
                "otlp.link.0": "0af7651916cd43dd8448eb211c80319d|00f067aa0ba902b7|k=v|{\"a|b\":1,\"ok\":true}|2",
                "otlp.link.1": "not|a|link",
                "otlp.link.3": "skipped: the numbering stops at the first gap"
            }
        }]"#;
        let s = to_otlp(from_json_v2(body).unwrap())
            .resource_spans
            .remove(0)
            .scope_spans
            .remove(0)
            .spans
            .remove(0);
        assert!(
            s.parent_span_id.is_empty(),
            "a parent equal to the span is none"
        );
        assert_eq!(s.links.len(), 1);
        let l = &s.links[0];
        assert_eq!(l.trace_id[15], 0x9d);
        assert_eq!(l.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(l.trace_state, "k=v");
        assert_eq!(l.dropped_attributes_count, 2);
        assert_eq!(l.attributes.len(), 2, "{:?}", l.attributes);
        assert!(attr(&s, "otlp.link.0").is_none());
        assert_eq!(
            attr(&s, "otlp.link.1"),
            Some(&any_value::Value::StringValue("not|a|link".into())),
            "an unreadable link is kept as an attribute"
        );
        assert!(attr(&s, "otlp.link.3").is_some());
    }

    #[test]
    fn status_tags_kindless_spans_and_missing_timestamps() {
        let body = br#"[
          {"traceId": "1", "id": "2", "name": "a", "tags": {"otel.status_code": "ERROR", "otel.status_description": "bad", "span.kind": "internal"}},
          {"traceId": "1", "id": "3", "name": "b", "timestamp": 10, "localEndpoint": {"serviceName": "s"}}
        ]"#;
        let req = to_otlp(from_json_v2(body).unwrap());
        assert_eq!(
            req.resource_spans.len(),
            2,
            "one resource per local service"
        );
        let a = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(a.kind, span::SpanKind::Internal as i32);
        let st = a.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (status::StatusCode::Error as i32, "bad")
        );
        assert_eq!(
            attr(a, "otel.zipkin.absentField.startTime"),
            Some(&any_value::Value::BoolValue(true))
        );
        let b = &req.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(b.kind, span::SpanKind::Unspecified as i32);
        assert_eq!(b.start_time_unix_nano, 10_000);
    }

    #[test]
    fn protobuf_list_of_spans() {
        let list = zpb::ListOfSpans {
            spans: vec![zpb::Span {
                trace_id: vec![0xab; 16],
                id: vec![1; 8],
                parent_id: vec![2; 8],
                kind: zpb::Kind::Client as i32,
                name: "call".into(),
                timestamp: 5,
                duration: 7,
                local_endpoint: Some(zpb::Endpoint {
                    service_name: "svc".into(),
                    ipv4: vec![10, 0, 0, 1],
                    ..Default::default()
                }),
                annotations: vec![zpb::Annotation {
                    timestamp: 6,
                    value: "x|{\"k\":1}|2".into(),
                }],
                tags: [("t".to_string(), "v".to_string())].into(),
                ..Default::default()
            }],
        };
        let req = to_otlp(from_proto(&list.encode_to_vec()).unwrap());
        let s = only_span(&req);
        assert_eq!(s.trace_id, vec![0xab; 16]);
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (5_000, 12_000)
        );
        assert_eq!(
            attr(s, "net.host.ip"),
            Some(&any_value::Value::StringValue("10.0.0.1".into()))
        );
        assert_eq!(
            (
                s.events[0].name.as_str(),
                s.events[0].dropped_attributes_count
            ),
            ("x", 2)
        );
        assert_eq!(s.events[0].attributes[0].key, "k");
    }

    #[test]
    fn v1_core_annotations_give_kind_endpoints_and_times() {
        let body = br#"[{
            "traceId": "0000000000000abc", "id": "0000000000000def", "name": "rpc",
            "annotations": [
                {"timestamp": 100, "value": "cs", "endpoint": {"serviceName": "client-svc", "ipv4": "127.0.0.1"}},
                {"timestamp": 150, "value": "retrying", "endpoint": {"serviceName": "client-svc"}},
                {"timestamp": 300, "value": "cr", "endpoint": {"serviceName": "client-svc"}}
            ],
            "binaryAnnotations": [
                {"key": "http.path", "value": "/x", "endpoint": {"serviceName": "client-svc"}},
                {"key": "sa", "value": true, "endpoint": {"serviceName": "server-svc", "port": 8080}}
            ]
        }]"#;
        let req = to_otlp(from_json_v1(body).unwrap());
        let s = only_span(&req);
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (100_000, 300_000)
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "retrying");
        assert_eq!(
            attr(s, "http.path"),
            Some(&any_value::Value::StringValue("/x".into()))
        );
        assert_eq!(
            attr(s, "peer.service"),
            Some(&any_value::Value::StringValue("server-svc".into()))
        );
        assert_eq!(
            attr(s, "net.peer.port"),
            Some(&any_value::Value::IntValue(8080))
        );
        let res = &req.resource_spans[0].resource.as_ref().unwrap().attributes[0];
        assert_eq!(
            res.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("client-svc".into()))
        );
    }

    #[test]
    fn malformed_input_is_refused_with_a_message() {
        let msg = |r: Result<Vec<ZSpan>, IngestError>| r.unwrap_err().to_string();
        assert!(
            msg(from_json_v2(b"[{\"traceId\": \"zz\", \"id\": \"1\"}]"))
                .contains("traceId \"zz\" is not hex")
        );
        assert!(
            msg(from_json_v2(
                b"[{\"traceId\": \"1\", \"id\": \"11111111111111111\"}]"
            ))
            .contains("must be 1 to 16 hex")
        );
        assert!(msg(from_json_v2(b"[{\"id\": \"1\"}]")).contains("invalid Zipkin v2 JSON"));
        // Found by fuzzing: multi-byte characters in an id once panicked while padding.
        assert!(
            msg(from_json_v2(
                "[{\"traceId\": \"é\", \"id\": \"1\"}]".as_bytes()
            ))
            .contains("is not hex")
        );
        assert!(
            msg(from_json_v1(
                "[{\"traceId\": \"1\", \"id\": \"ééé\"}]".as_bytes()
            ))
            .contains("is not hex")
        );
        assert!(msg(from_json_v2(b"{\"not\": \"a list\"}")).contains("invalid Zipkin v2 JSON"));
        assert!(msg(from_json_v1(b"[{\"traceId\": \"1\"")).contains("invalid Zipkin v1 JSON"));
        assert!(msg(from_proto(&[0x0a, 0xff, 0x01])).contains("invalid Zipkin protobuf"));
        let empty_id = zpb::ListOfSpans {
            spans: vec![zpb::Span {
                trace_id: vec![1; 16],
                ..Default::default()
            }],
        };
        assert!(msg(from_proto(&empty_id.encode_to_vec())).contains("id must be 1 to 8 bytes"));
    }
}
