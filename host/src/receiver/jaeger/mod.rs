//! Jaeger receivers: the agent's UDP ports, `6831` (thrift compact) and `6832` (thrift
//! binary), each datagram one `Agent.emitBatch`. A malformed datagram is counted and skipped.
//!
//! Translation to OTLP follows the OpenTelemetry Collector's Jaeger rules: the process's
//! `serviceName` and tags become the resource; tags become typed attributes (by `vType`);
//! `span.kind`, `error`, `otel.status_code` / `otel.status_description` and
//! `otel.scope.*` / `otel.library.*` tags become kind, status and scope; logs become events
//! (named by their `event` field); the first CHILD_OF reference is the parent when
//! `parentSpanId` is 0, every other reference a link.

pub mod thrift;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;
use thrift::{Protocol, Value};

use super::{Ingest, IngestError};
use crate::signal::Signal;

fn i64_of(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::I64(i)) => *i,
        Some(Value::I32(i)) => i64::from(*i),
        Some(Value::I16(i)) => i64::from(*i),
        Some(Value::I8(i)) => i64::from(*i),
        _ => 0,
    }
}

fn str_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Binary(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn list_of(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::List(items)) => items,
        _ => &[],
    }
}

/// A Jaeger `Tag` as an OTLP attribute, decoded by its `vType` (clients may fill every
/// value field).
fn tag(t: &Value) -> Option<KeyValue> {
    let key = str_of(t.field(1))?;
    let value = match i64_of(t.field(2)) {
        0 => any_value::Value::StringValue(str_of(t.field(3)).unwrap_or_default()),
        1 => match t.field(4) {
            Some(Value::Double(d)) => any_value::Value::DoubleValue(*d),
            _ => any_value::Value::DoubleValue(0.0),
        },
        2 => any_value::Value::BoolValue(matches!(t.field(5), Some(Value::Bool(true)))),
        3 => any_value::Value::IntValue(i64_of(t.field(6))),
        4 => match t.field(7) {
            Some(Value::Binary(b)) => any_value::Value::BytesValue(b.clone()),
            _ => any_value::Value::BytesValue(Vec::new()),
        },
        _ => return None,
    };
    Some(KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    })
}

fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<any_value::Value> {
    let i = attrs.iter().position(|kv| kv.key == key)?;
    attrs.remove(i).value?.value
}

fn take_text(attrs: &mut Vec<KeyValue>, key: &str) -> Option<String> {
    match take(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn trace_id(low: i64, high: i64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&high.to_be_bytes());
    id.extend_from_slice(&low.to_be_bytes());
    id
}

fn to_span(s: &Value) -> (Span, (String, String)) {
    let tid = trace_id(i64_of(s.field(1)), i64_of(s.field(2)));
    let mut attributes: Vec<KeyValue> = list_of(s.field(10)).iter().filter_map(tag).collect();
    let kind = match take_text(&mut attributes, "span.kind").as_deref() {
        Some("client") => span::SpanKind::Client,
        Some("server") => span::SpanKind::Server,
        Some("producer") => span::SpanKind::Producer,
        Some("consumer") => span::SpanKind::Consumer,
        Some("internal") => span::SpanKind::Internal,
        _ => span::SpanKind::Unspecified,
    };
    let mut st = Status::default();
    if let Some(code) = take_text(&mut attributes, "otel.status_code") {
        st.code = match code.to_ascii_uppercase().trim_start_matches("STATUS_CODE_") {
            "OK" => status::StatusCode::Ok,
            "ERROR" => status::StatusCode::Error,
            _ => status::StatusCode::Unset,
        } as i32;
    }
    if let Some(msg) = take_text(&mut attributes, "otel.status_description") {
        st.message = msg;
    }
    if take_text(&mut attributes, "error").as_deref() == Some("true") {
        st.code = status::StatusCode::Error as i32;
    }
    let scope = (
        take_text(&mut attributes, "otel.scope.name")
            .or_else(|| take_text(&mut attributes, "otel.library.name"))
            .unwrap_or_default(),
        take_text(&mut attributes, "otel.scope.version")
            .or_else(|| take_text(&mut attributes, "otel.library.version"))
            .unwrap_or_default(),
    );
    let mut parent = i64_of(s.field(4));
    let mut links = Vec::new();
    for r in list_of(s.field(6)) {
        let ref_trace = trace_id(i64_of(r.field(2)), i64_of(r.field(3)));
        let ref_span = i64_of(r.field(4));
        let child_of = i64_of(r.field(1)) == 0;
        if parent == 0 && child_of && ref_trace == tid {
            parent = ref_span;
        } else if !(child_of && ref_span == parent && ref_trace == tid) {
            links.push(span::Link {
                trace_id: ref_trace,
                span_id: ref_span.to_be_bytes().to_vec(),
                ..Default::default()
            });
        }
    }
    let events = list_of(s.field(11))
        .iter()
        .map(|log| {
            let mut attrs: Vec<KeyValue> = list_of(log.field(2)).iter().filter_map(tag).collect();
            let name = take_text(&mut attrs, "event").unwrap_or_default();
            span::Event {
                time_unix_nano: (i64_of(log.field(1)).max(0) as u64).saturating_mul(1000),
                name,
                attributes: attrs,
                ..Default::default()
            }
        })
        .collect();
    let start_us = i64_of(s.field(8)).max(0) as u64;
    let duration_us = i64_of(s.field(9)).max(0) as u64;
    let span = Span {
        trace_id: tid,
        span_id: i64_of(s.field(3)).to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: str_of(s.field(5)).unwrap_or_default(),
        kind: kind as i32,
        start_time_unix_nano: start_us.saturating_mul(1000),
        end_time_unix_nano: start_us.saturating_add(duration_us).saturating_mul(1000),
        attributes,
        events,
        links,
        status: Some(st),
        ..Default::default()
    };
    (span, scope)
}

/// A Jaeger `Batch` struct as an OTLP request (one resource: the batch's process).
pub fn batch_to_otlp(batch: &Value) -> Result<ExportTraceServiceRequest, String> {
    let process = batch.field(1).ok_or("Batch.process is missing")?;
    let spans = match batch.field(2) {
        Some(Value::List(s)) => s,
        _ => return Err("Batch.spans is missing".into()),
    };
    let mut resource: Vec<KeyValue> = list_of(process.field(2)).iter().filter_map(tag).collect();
    resource.retain(|kv| kv.key != "service.name");
    if let Some(service) = str_of(process.field(1)) {
        resource.push(KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service)),
            }),
            ..Default::default()
        });
    }
    let mut scopes: BTreeMap<(String, String), Vec<Span>> = BTreeMap::new();
    for s in spans {
        if !matches!(s, Value::Struct(_)) {
            return Err("Batch.spans holds something other than Span structs".into());
        }
        let (span, scope) = to_span(s);
        scopes.entry(scope).or_default().push(span);
    }
    Ok(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: scopes
                .into_iter()
                .map(|((name, version), spans)| ScopeSpans {
                    scope: (!name.is_empty()).then(|| InstrumentationScope {
                        name,
                        version,
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
    })
}

/// Decodes one agent datagram (`Agent.emitBatch`) into OTLP protobuf.
pub fn decode_datagram(protocol: Protocol, datagram: &[u8]) -> Result<Bytes, String> {
    let msg = thrift::decode_message(protocol, datagram).map_err(|e| e.to_string())?;
    if msg.name != "emitBatch" {
        return Err(format!(
            "unsupported agent method {:?} (only emitBatch)",
            msg.name
        ));
    }
    let batch = msg.args.field(1).ok_or("emitBatch without a batch")?;
    Ok(batch_to_otlp(batch)?.encode_to_vec().into())
}

/// The collector's HTTP endpoint: `POST /api/traces` with a thrift-binary `Batch` (chunked
/// bodies included), answered with `202 Accepted`.
pub fn http_router(ingest: Arc<Ingest>) -> axum::Router {
    axum::Router::new()
        .route("/api/traces", axum::routing::post(http_traces))
        .with_state(ingest)
}

fn http_status(e: &IngestError) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match e {
        IngestError::Invalid { .. } => StatusCode::BAD_REQUEST,
        IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::Refused(crate::pipeline::Refusal::QueueFull(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        IngestError::Refused(crate::pipeline::Refusal::NoExporter(_)) => StatusCode::NOT_FOUND,
    }
}

/// Reads and translates one `POST /api/traces` into OTLP protobuf.
async fn http_translate(
    ingest: &Ingest,
    req: axum::extract::Request,
) -> Result<Bytes, IngestError> {
    let invalid = |message: String| IngestError::Invalid {
        signal: Signal::Traces,
        message,
    };
    let mime = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if mime != "application/x-thrift" && mime != "application/vnd.apache.thrift.binary" {
        return Err(invalid(format!(
            "unsupported Content-Type {mime:?} (use application/x-thrift)"
        )));
    }
    let body = super::read_http_body(ingest.max_request_bytes, Signal::Traces, req).await?;
    let batch = thrift::decode_struct(Protocol::Binary, &body)
        .map_err(|e| e.to_string())
        .and_then(|b| batch_to_otlp(&b))
        .map_err(|m| invalid(format!("invalid Jaeger thrift Batch: {m}")))?;
    Ok(batch.encode_to_vec().into())
}

async fn http_traces(
    axum::extract::State(ingest): axum::extract::State<Arc<Ingest>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let result = match http_translate(&ingest, req).await {
        // `Ingest::otlp` counts its own outcomes.
        Ok(otlp) => ingest.otlp(Signal::Traces, otlp).map(|_| ()),
        Err(e) => {
            ingest.count_refused(Signal::Traces, &e);
            Err(e)
        }
    };
    match result {
        Ok(()) => axum::http::StatusCode::ACCEPTED.into_response(),
        Err(e) => (http_status(&e), e.to_string()).into_response(),
    }
}

/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_536;

/// Receives agent datagrams on `socket` until the task is dropped.
pub async fn serve_udp(
    socket: tokio::net::UdpSocket,
    protocol: Protocol,
    ingest: Arc<Ingest>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = socket.local_addr()?;
    // Bursts of 64 KiB datagrams must not overflow the kernel's default buffer.
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20) {
        tracing::warn!(%addr, "cannot enlarge the UDP receive buffer: {e}");
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        match decode_datagram(protocol, &buf[..n]) {
            Ok(otlp) => {
                if let Err(e) = ingest.otlp(Signal::Traces, otlp) {
                    tracing::warn!(%peer, "Jaeger datagram refused: {e}");
                }
            }
            Err(message) => {
                let err = IngestError::Invalid {
                    signal: Signal::Traces,
                    message,
                };
                ingest.count_refused(Signal::Traces, &err);
                tracing::warn!(%peer, bytes = n, "skipping malformed Jaeger datagram: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::thrift::Value as V;
    use super::*;

    /// Encodes a value tree in the compact protocol (enough for tests).
    fn enc(v: &V, out: &mut Vec<u8>) {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
        fn zz(n: i64) -> u64 {
            ((n << 1) ^ (n >> 63)) as u64
        }
        fn ty(v: &V) -> u8 {
            match v {
                V::Bool(true) => 1,
                V::Bool(false) => 2,
                V::I8(_) => 3,
                V::I16(_) => 4,
                V::I32(_) => 5,
                V::I64(_) => 6,
                V::Double(_) => 7,
                V::Binary(_) => 8,
                V::List(_) => 9,
                V::Map(_) => 11,
                V::Struct(_) => 12,
            }
        }
        match v {
            V::Bool(_) => {}
            V::I8(b) => out.push(*b as u8),
            V::I16(i) => varint(zz(i64::from(*i)), out),
            V::I32(i) => varint(zz(i64::from(*i)), out),
            V::I64(i) => varint(zz(*i), out),
            V::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
            V::Binary(b) => {
                varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            V::List(items) => {
                let et = items.first().map_or(12, ty);
                out.push(((items.len().min(15) as u8) << 4) | et);
                assert!(items.len() < 15);
                for i in items {
                    enc(i, out);
                }
            }
            V::Map(_) => unreachable!("not needed"),
            V::Struct(fields) => {
                let mut last = 0i16;
                for (id, f) in fields {
                    out.push((((id - last) as u8) << 4) | ty(f));
                    last = *id;
                    enc(f, out);
                }
                out.push(0);
            }
        }
    }

    fn s(text: &str) -> V {
        V::Binary(text.as_bytes().to_vec())
    }

    fn tag_str(k: &str, v: &str) -> V {
        V::Struct(vec![(1, s(k)), (2, V::I32(0)), (3, s(v))])
    }

    fn datagram() -> Vec<u8> {
        let span = V::Struct(vec![
            (1, V::I64(0x0102)),
            (2, V::I64(0)),
            (3, V::I64(7)),
            (4, V::I64(0)),
            (5, s("get")),
            (
                6,
                V::List(vec![
                    V::Struct(vec![
                        (1, V::I32(0)),
                        (2, V::I64(0x0102)),
                        (3, V::I64(0)),
                        (4, V::I64(5)),
                    ]),
                    V::Struct(vec![
                        (1, V::I32(1)),
                        (2, V::I64(9)),
                        (3, V::I64(0)),
                        (4, V::I64(6)),
                    ]),
                ]),
            ),
            (7, V::I32(1)),
            (8, V::I64(1_000)),
            (9, V::I64(250)),
            (
                10,
                V::List(vec![
                    tag_str("span.kind", "client"),
                    V::Struct(vec![(1, s("error")), (2, V::I32(2)), (5, V::Bool(true))]),
                    V::Struct(vec![
                        (1, s("http.status_code")),
                        (2, V::I32(3)),
                        (6, V::I64(503)),
                    ]),
                    V::Struct(vec![
                        (1, s("ratio")),
                        (2, V::I32(1)),
                        (3, s("")),
                        (4, V::Double(0.5)),
                    ]),
                ]),
            ),
            (
                11,
                V::List(vec![V::Struct(vec![
                    (1, V::I64(1_100)),
                    (
                        2,
                        V::List(vec![tag_str("event", "retry"), tag_str("attempt", "2")]),
                    ),
                ])]),
            ),
        ]);
        let batch = V::Struct(vec![
            (
                1,
                V::Struct(vec![
                    (1, s("checkout")),
                    (2, V::List(vec![tag_str("hostname", "h1")])),
                ]),
            ),
            (2, V::List(vec![span])),
        ]);
        let mut out = vec![0x82, 0x81, 0x00];
        out.push(9);
        out.extend_from_slice(b"emitBatch");
        enc(&V::Struct(vec![(1, batch)]), &mut out);
        out
    }

    fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == k)?
            .value
            .as_ref()?
            .value
            .as_ref()
    }

    #[test]
    fn emit_batch_translates_like_the_collector() {
        let otlp = decode_datagram(Protocol::Compact, &datagram()).unwrap();
        let req = ExportTraceServiceRequest::decode(otlp).unwrap();
        let rs = &req.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        assert!(res.iter().any(|kv| kv.key == "service.name"));
        assert!(res.iter().any(|kv| kv.key == "hostname"));
        let sp = &rs.scope_spans[0].spans[0];
        assert_eq!(
            sp.trace_id,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(sp.span_id, 7i64.to_be_bytes());
        assert_eq!(
            sp.parent_span_id,
            5i64.to_be_bytes(),
            "parent from the CHILD_OF reference"
        );
        assert_eq!(sp.links.len(), 1, "FOLLOWS_FROM becomes a link");
        assert_eq!(sp.kind, span::SpanKind::Client as i32);
        assert_eq!(
            sp.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(
            (sp.start_time_unix_nano, sp.end_time_unix_nano),
            (1_000_000, 1_250_000)
        );
        assert_eq!(
            attr(sp, "http.status_code"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(
            attr(sp, "ratio"),
            Some(&any_value::Value::DoubleValue(0.5)),
            "decoded by vType"
        );
        assert!(attr(sp, "span.kind").is_none() && attr(sp, "error").is_none());
        assert_eq!(sp.events[0].name, "retry");
        assert_eq!(sp.events[0].time_unix_nano, 1_100_000);
        assert_eq!(sp.events[0].attributes.len(), 1);
    }

    #[test]
    fn malformed_datagrams_are_refused_not_fatal() {
        let good = datagram();
        for cut in [1, 5, good.len() / 2, good.len() - 1] {
            assert!(
                decode_datagram(Protocol::Compact, &good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(
            decode_datagram(Protocol::Binary, &good).is_err(),
            "wrong protocol"
        );
        let mut other = good.clone();
        other[4..13].copy_from_slice(b"emitBatcX");
        assert!(
            decode_datagram(Protocol::Compact, &other)
                .unwrap_err()
                .contains("unsupported agent method")
        );
    }
}
