//! Jaeger batches (thrift, and the collector's protobuf) to OTLP.

use std::collections::BTreeMap;

use super::thrift::{self, Protocol, Value};
use bytes::Bytes;
use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::trace::{Span, Status, span, status};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

pub(super) fn i64_of(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::I64(i)) => *i,
        Some(Value::I32(i)) => i64::from(*i),
        Some(Value::I16(i)) => i64::from(*i),
        Some(Value::I8(i)) => i64::from(*i),
        _ => 0,
    }
}

pub(super) fn str_of(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Binary(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

pub(super) fn list_of(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::List(items)) => items,
        _ => &[],
    }
}

/// A Jaeger `Tag` as an OTLP attribute, decoded by its `vType` (clients may fill every
/// value field).
pub(super) fn tag(t: &Value) -> Option<KeyValue> {
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
    Some(crate::receiver::otlp_build::kv(key, value))
}

pub(super) fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<any_value::Value> {
    let i = attrs.iter().position(|kv| kv.key == key)?;
    attrs.remove(i).value?.value
}

pub(super) fn take_text(attrs: &mut Vec<KeyValue>, key: &str) -> Option<String> {
    match take(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn trace_id(low: i64, high: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// A Jaeger process: the resource of its spans.
#[derive(Debug, Default)]
pub(super) struct JProcess {
    pub(super) service: Option<String>,
    pub(super) tags: Vec<KeyValue>,
}

/// A Jaeger span, from thrift or protobuf; tags are already typed attributes.
#[derive(Debug, Default)]
pub(super) struct JSpan {
    pub(super) trace_id: [u8; 16],
    pub(super) span_id: [u8; 8],
    /// Thrift's `parentSpanId` (protobuf carries the parent only as a reference).
    pub(super) parent: Option<[u8; 8]>,
    pub(super) name: String,
    /// (CHILD_OF?, trace id, span id)
    pub(super) refs: Vec<(bool, [u8; 16], [u8; 8])>,
    pub(super) start_ns: u64,
    pub(super) duration_ns: u64,
    pub(super) tags: Vec<KeyValue>,
    /// (time in ns, fields)
    pub(super) logs: Vec<(u64, Vec<KeyValue>)>,
}

pub(super) fn thrift_process(process: &Value) -> JProcess {
    JProcess {
        service: str_of(process.field(1)),
        tags: list_of(process.field(2)).iter().filter_map(tag).collect(),
    }
}

pub(super) fn thrift_span(s: &Value) -> JSpan {
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
pub(super) fn to_span(j: JSpan) -> (Span, (String, String)) {
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
pub(super) fn to_otlp(groups: Vec<(JProcess, Vec<JSpan>)>) -> ExportTraceServiceRequest {
    let resource_spans = groups
        .into_iter()
        .map(|(process, spans)| {
            let mut resource = process.tags;
            resource.retain(|kv| kv.key != "service.name");
            if let Some(service) = process.service {
                resource.push(crate::receiver::otlp_build::kv(
                    "service.name",
                    any_value::Value::StringValue(service),
                ));
            }
            let mut scopes: BTreeMap<(String, String), Vec<Span>> = BTreeMap::new();
            for j in spans {
                let (span, scope) = to_span(j);
                scopes.entry(scope).or_default().push(span);
            }
            crate::receiver::otlp_build::resource_spans(resource, scopes)
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

pub(super) fn proto_kv(kv: ferry_proto::jaeger::KeyValue) -> KeyValue {
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

pub(super) fn proto_id<const N: usize>(field: &str, b: &[u8]) -> Result<[u8; N], String> {
    if b.len() > N || b.is_empty() {
        return Err(format!("{field} must be 1 to {N} bytes, got {}", b.len()));
    }
    let mut out = [0u8; N];
    out[N - b.len()..].copy_from_slice(b);
    Ok(out)
}

pub(super) fn proto_process(p: ferry_proto::jaeger::Process) -> JProcess {
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
    Ok(to_otlp(crate::receiver::otlp_build::group_by_own_resource(
        spans, shared,
    )))
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

/// Decodes a `PostSpansRequest` into OTLP protobuf.
pub fn decode_post_spans(message: &[u8]) -> Result<Bytes, String> {
    let req = ferry_proto::jaeger::PostSpansRequest::decode(message)
        .map_err(|e| format!("invalid PostSpansRequest: {e}"))?;
    let batch = req.batch.ok_or("PostSpansRequest without a batch")?;
    Ok(proto_batch_to_otlp(batch)?.encode_to_vec().into())
}
