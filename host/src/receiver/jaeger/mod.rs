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
use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::trace::{Span, Status, span, status};
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
    Some(super::kv(key, value))
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

fn trace_id(low: i64, high: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// A Jaeger process: the resource of its spans.
#[derive(Debug, Default)]
struct JProcess {
    service: Option<String>,
    tags: Vec<KeyValue>,
}

/// A Jaeger span, from thrift or protobuf; tags are already typed attributes.
#[derive(Debug, Default)]
struct JSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// Thrift's `parentSpanId` (protobuf carries the parent only as a reference).
    parent: Option<[u8; 8]>,
    name: String,
    /// (CHILD_OF?, trace id, span id)
    refs: Vec<(bool, [u8; 16], [u8; 8])>,
    start_ns: u64,
    duration_ns: u64,
    tags: Vec<KeyValue>,
    /// (time in ns, fields)
    logs: Vec<(u64, Vec<KeyValue>)>,
}

fn thrift_process(process: &Value) -> JProcess {
    JProcess {
        service: str_of(process.field(1)),
        tags: list_of(process.field(2)).iter().filter_map(tag).collect(),
    }
}

fn thrift_span(s: &Value) -> JSpan {
    let micros = |v: Option<&Value>| (i64_of(v).max(0) as u64).saturating_mul(1000);
    JSpan {
        trace_id: trace_id(i64_of(s.field(1)), i64_of(s.field(2))),
        span_id: i64_of(s.field(3)).to_be_bytes(),
        parent: Some(i64_of(s.field(4)))
            .filter(|p| *p != 0)
            .map(i64::to_be_bytes),
        name: str_of(s.field(5)).unwrap_or_default(),
        refs: list_of(s.field(6))
            .iter()
            .map(|r| {
                (
                    i64_of(r.field(1)) == 0,
                    trace_id(i64_of(r.field(2)), i64_of(r.field(3))),
                    i64_of(r.field(4)).to_be_bytes(),
                )
            })
            .collect(),
        start_ns: micros(s.field(8)),
        duration_ns: micros(s.field(9)),
        tags: list_of(s.field(10)).iter().filter_map(tag).collect(),
        logs: list_of(s.field(11))
            .iter()
            .map(|log| {
                (
                    micros(log.field(1)),
                    list_of(log.field(2)).iter().filter_map(tag).collect(),
                )
            })
            .collect(),
    }
}

/// Applies the Collector's Jaeger rules to one span.
fn to_span(j: JSpan) -> (Span, (String, String)) {
    let mut attributes = j.tags;
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
    let mut parent = j.parent;
    let mut links = Vec::new();
    for (child_of, ref_trace, ref_span) in j.refs {
        if parent.is_none() && child_of && ref_trace == j.trace_id {
            parent = Some(ref_span);
        } else if !(child_of && Some(ref_span) == parent && ref_trace == j.trace_id) {
            links.push(span::Link {
                trace_id: ref_trace.to_vec(),
                span_id: ref_span.to_vec(),
                ..Default::default()
            });
        }
    }
    let events = j
        .logs
        .into_iter()
        .map(|(time_unix_nano, mut attrs)| span::Event {
            time_unix_nano,
            name: take_text(&mut attrs, "event").unwrap_or_default(),
            attributes: attrs,
            ..Default::default()
        })
        .collect();
    let span = Span {
        trace_id: j.trace_id.to_vec(),
        span_id: j.span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: j.name,
        kind: kind as i32,
        start_time_unix_nano: j.start_ns,
        end_time_unix_nano: j.start_ns.saturating_add(j.duration_ns),
        attributes,
        events,
        links,
        status: Some(st),
        ..Default::default()
    };
    (span, scope)
}

/// One resource per process, one scope per instrumentation scope.
fn to_otlp(groups: Vec<(JProcess, Vec<JSpan>)>) -> ExportTraceServiceRequest {
    let resource_spans = groups
        .into_iter()
        .map(|(process, spans)| {
            let mut resource = process.tags;
            resource.retain(|kv| kv.key != "service.name");
            if let Some(service) = process.service {
                resource.push(super::kv(
                    "service.name",
                    any_value::Value::StringValue(service),
                ));
            }
            let mut scopes: BTreeMap<(String, String), Vec<Span>> = BTreeMap::new();
            for j in spans {
                let (span, scope) = to_span(j);
                scopes.entry(scope).or_default().push(span);
            }
            super::resource_spans(resource, scopes)
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// A thrift Jaeger `Batch` struct as an OTLP request (one resource: the batch's process).
pub fn batch_to_otlp(batch: &Value) -> Result<ExportTraceServiceRequest, String> {
    let process = batch.field(1).ok_or("Batch.process is missing")?;
    let spans = match batch.field(2) {
        Some(Value::List(s)) => s,
        _ => return Err("Batch.spans is missing".into()),
    };
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        if !matches!(s, Value::Struct(_)) {
            return Err("Batch.spans holds something other than Span structs".into());
        }
        out.push(thrift_span(s));
    }
    Ok(to_otlp(vec![(thrift_process(process), out)]))
}

fn proto_kv(kv: ferry_proto::jaeger::KeyValue) -> KeyValue {
    use ferry_proto::jaeger::ValueType;
    let value = match ValueType::try_from(kv.v_type).unwrap_or(ValueType::String) {
        ValueType::String => any_value::Value::StringValue(kv.v_str),
        ValueType::Bool => any_value::Value::BoolValue(kv.v_bool),
        ValueType::Int64 => any_value::Value::IntValue(kv.v_int64),
        ValueType::Float64 => any_value::Value::DoubleValue(kv.v_float64),
        ValueType::Binary => any_value::Value::BytesValue(kv.v_binary),
    };
    KeyValue {
        key: kv.key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn proto_id<const N: usize>(field: &str, b: &[u8]) -> Result<[u8; N], String> {
    if b.len() > N || b.is_empty() {
        return Err(format!("{field} must be 1 to {N} bytes, got {}", b.len()));
    }
    let mut out = [0u8; N];
    out[N - b.len()..].copy_from_slice(b);
    Ok(out)
}

fn proto_process(p: ferry_proto::jaeger::Process) -> JProcess {
    JProcess {
        service: Some(p.service_name).filter(|s| !s.is_empty()),
        tags: p.tags.into_iter().map(proto_kv).collect(),
    }
}

/// A protobuf `jaeger.api_v2.Batch` as an OTLP request; spans with their own process get a
/// resource of their own.
pub fn proto_batch_to_otlp(
    batch: ferry_proto::jaeger::Batch,
) -> Result<ExportTraceServiceRequest, String> {
    let nanos = |s: i64, n: i32| {
        (s.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(n.max(0) as u64)
    };
    let mut spans = Vec::with_capacity(batch.spans.len());
    for s in batch.spans {
        let j = JSpan {
            trace_id: proto_id("trace_id", &s.trace_id)?,
            span_id: proto_id("span_id", &s.span_id)?,
            parent: None,
            name: s.operation_name,
            refs: s
                .references
                .iter()
                .map(|r| {
                    Ok((
                        r.ref_type == ferry_proto::jaeger::SpanRefType::ChildOf as i32,
                        proto_id("references.trace_id", &r.trace_id)?,
                        proto_id("references.span_id", &r.span_id)?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            start_ns: s.start_time.map_or(0, |t| nanos(t.seconds, t.nanos)),
            duration_ns: s.duration.map_or(0, |d| nanos(d.seconds, d.nanos)),
            tags: s.tags.into_iter().map(proto_kv).collect(),
            logs: s
                .logs
                .into_iter()
                .map(|l| {
                    (
                        l.timestamp.map_or(0, |t| nanos(t.seconds, t.nanos)),
                        l.fields.into_iter().map(proto_kv).collect(),
                    )
                })
                .collect(),
        };
        spans.push((j, s.process.map(proto_process)));
    }
    let shared = batch.process.map(proto_process).unwrap_or_default();
    Ok(to_otlp(super::group_by_own_resource(spans, shared)))
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

/// Like [`IngestError::http_status`], but a full queue is 503: the Jaeger collector's answer
/// when its queue is full, which Jaeger clients know.
fn http_status(e: &IngestError) -> axum::http::StatusCode {
    match e {
        IngestError::Refused(crate::pipeline::Refusal::QueueFull(_)) => {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        }
        other => other.http_status(),
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
    let otlp = http_translate(&ingest, req).await;
    match ingest.translated(Signal::Traces, otlp).await {
        Ok(_) => axum::http::StatusCode::ACCEPTED.into_response(),
        Err(e) => {
            let mut resp = (http_status(&e), e.to_string()).into_response();
            super::add_retry_after(&mut resp);
            resp
        }
    }
}

/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams being handed to the pipeline at once, per socket.
const UDP_IN_FLIGHT: usize = 256;

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
    // UDP senders wait for no answer, so a datagram need not hold up the next one while the
    // durable queue syncs it; a bound on those in flight keeps the excess in the kernel buffer.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(UDP_IN_FLIGHT));
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        match decode_datagram(protocol, &buf[..n]) {
            Ok(otlp) => {
                let permit = in_flight.clone().acquire_owned().await?;
                let ingest = ingest.clone();
                tokio::spawn(async move {
                    if let Err(e) = ingest.otlp(Signal::Traces, otlp).await {
                        tracing::warn!(%peer, "Jaeger datagram refused: {e}");
                    }
                    drop(permit);
                });
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

/// Starts each Jaeger endpoint `config` gives an address.
pub async fn start(
    config: &crate::config::JaegerReceiverConfig,
    launch: &mut super::Launch<'_>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let ports = [
        ("jaeger_compact", config.thrift_compact, Protocol::Compact),
        ("jaeger_binary", config.thrift_binary, Protocol::Binary),
    ];
    for (name, addr, protocol) in ports {
        let Some(addr) = addr else { continue };
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("{name}: cannot listen on udp {addr}"))?;
        tracing::info!(receiver = name, addr = %socket.local_addr()?, "listening");
        // A datagram is at most 64 KiB; its OTLP form can be somewhat larger.
        let ingest = launch.ingest(name, 1 << 20);
        launch.spawn(serve_udp(socket, protocol, ingest));
    }
    if let Some(addr) = config.thrift_http {
        let serve = |l, ingest| async move {
            axum::serve(l, http_router(ingest)).await?;
            Ok(())
        };
        launch
            .serve("jaeger_http", addr, config.max_request_bytes, serve)
            .await?;
    }
    if let Some(addr) = config.grpc {
        launch
            .serve("jaeger_grpc", addr, config.max_request_bytes, serve_grpc)
            .await?;
    }
    Ok(())
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

/// The collector's gRPC `jaeger.api_v2.CollectorService/PostSpans` (usually port 14250).
#[derive(Clone)]
pub struct PostSpans {
    ingest: Arc<Ingest>,
}

impl super::otlp_grpc::RawUnary for PostSpans {
    const SERVICE: &'static str = "jaeger.api_v2.CollectorService";
    const METHOD: &'static str = "/PostSpans";
    const SIGNAL: Signal = Signal::Traces;

    fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    async fn handle(self, message: Bytes) -> Result<Bytes, tonic::Status> {
        let translated = decode_post_spans(&message).map_err(|message| IngestError::Invalid {
            signal: Signal::Traces,
            message,
        });
        // An empty `PostSpansResponse`.
        self.ingest
            .translated(Signal::Traces, translated)
            .await
            .map(|_| Bytes::new())
            .map_err(|e| super::otlp_grpc::status(&e))
    }
}

/// Decodes a `PostSpansRequest` into OTLP protobuf.
pub fn decode_post_spans(message: &[u8]) -> Result<Bytes, String> {
    let req = ferry_proto::jaeger::PostSpansRequest::decode(message)
        .map_err(|e| format!("invalid PostSpansRequest: {e}"))?;
    let batch = req.batch.ok_or("PostSpansRequest without a batch")?;
    Ok(proto_batch_to_otlp(batch)?.encode_to_vec().into())
}

/// Serves the collector's gRPC endpoint on `listener` until the task is dropped.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tonic::transport::Server::builder()
        .add_service(super::otlp_grpc::RawService(PostSpans { ingest }))
        .serve_with_incoming(super::otlp_grpc::incoming(listener))
        .await
        .map_err(|e| anyhow::anyhow!("Jaeger gRPC server on {addr} failed: {e}"))
}
