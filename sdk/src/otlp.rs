//! OTLP helpers for plugins: typed decoding of a batch payload (for plugins that asked for
//! `otlp-protobuf`), partial-success answers, and attribute values as text or JSON.

use ferry_proto::logs_service::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use ferry_proto::metrics_service::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use ferry_proto::trace_service::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;

use crate::Signal;
use base64::Engine as _;
use ferry_proto::common::{AnyValue, KeyValue, any_value};
use serde_json::Value;

pub use prost::DecodeError;

/// Decodes a traces batch.
pub fn decode_traces(payload: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    ExportTraceServiceRequest::decode(payload)
}

/// Decodes a metrics batch.
pub fn decode_metrics(payload: &[u8]) -> Result<ExportMetricsServiceRequest, DecodeError> {
    ExportMetricsServiceRequest::decode(payload)
}

/// Decodes a logs batch.
pub fn decode_logs(payload: &[u8]) -> Result<ExportLogsServiceRequest, DecodeError> {
    ExportLogsServiceRequest::decode(payload)
}

/// Lower-case hex of an id (trace, span), as OTLP/JSON and most backends write it.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Reads an OTLP export answer (`Export*ServiceResponse`) for `signal`: `(rejected, message)`
/// when the backend reported rejected items in its partial-success field.
pub fn partial_success(signal: Signal, body: &[u8]) -> Option<(u32, String)> {
    let (rejected, msg) = match signal {
        Signal::Traces => {
            let p = ExportTraceServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_spans, p.error_message)
        }
        Signal::Metrics => {
            let p = ExportMetricsServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_data_points, p.error_message)
        }
        Signal::Logs => {
            let p = ExportLogsServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_log_records, p.error_message)
        }
    };
    (rejected > 0).then(|| (u32::try_from(rejected).unwrap_or(u32::MAX), msg))
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`, which the Collector uses for doubles.
pub fn float_text(d: f64) -> String {
    if d.is_infinite() {
        if d > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{d}")
    }
}

/// An attribute value as JSON (bytes as base64, non-finite doubles as text).
pub fn json_value(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(float_text(*d))),
        Some(V::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(json_value).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(json_map(&kv.values)),
        // Only meaningful with a profiles dictionary, which no exported signal carries.
        Some(V::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// Attributes as a JSON object.
pub fn json_map(kvs: &[KeyValue]) -> serde_json::Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, json_value),
            )
        })
        .collect()
}

/// An attribute value as a string, as the Collector's `AsString` writes it: strings as they
/// are, numbers and booleans in their usual text, bytes as base64, arrays and maps as JSON.
pub fn value_text(v: &Option<AnyValue>) -> String {
    use any_value::Value as V;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(V::StringValue(s)) => s.clone(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => float_text(*d),
        Some(V::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(other) => json_value(&AnyValue {
            value: Some(other.clone()),
        })
        .to_string(),
    }
}
