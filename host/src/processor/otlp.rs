//! An OTLP request decoded into structs, where a processor needs it whole: a Wasm
//! processor's replacement is checked this way, its JSON form converted, and `ferry plugin
//! test` compares a batch before and after. (Native processors read and edit the wire form
//! instead, `msg`.)

use bytes::Bytes;
use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{Metric, metric};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

use crate::signal::Signal;
pub use crate::wire::items::hex;

/// One OTLP export request, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
}

impl Decoded {
    /// Decodes `bytes` as an export request of `signal`.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match signal {
            Signal::Traces => Decoded::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Metrics => Decoded::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Logs => Decoded::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    /// The request as protobuf bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Decoded::Traces(r) => r.encode_to_vec(),
            Decoded::Metrics(r) => r.encode_to_vec(),
            Decoded::Logs(r) => r.encode_to_vec(),
        }
        .into()
    }

    /// Parses an OTLP/JSON export request of `signal`.
    pub fn from_json(signal: Signal, json: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match signal {
            Signal::Traces => Decoded::Traces(serde_json::from_slice(json)?),
            Signal::Metrics => Decoded::Metrics(serde_json::from_slice(json)?),
            Signal::Logs => Decoded::Logs(serde_json::from_slice(json)?),
        })
    }

    /// The request in the OTLP/JSON mapping.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Decoded::Traces(r) => serde_json::to_vec(r),
            Decoded::Metrics(r) => serde_json::to_vec(r),
            Decoded::Logs(r) => serde_json::to_vec(r),
        }
        .expect("OTLP messages serialise")
    }

    /// Its signal.
    pub fn signal(&self) -> Signal {
        match self {
            Decoded::Traces(_) => Signal::Traces,
            Decoded::Metrics(_) => Signal::Metrics,
            Decoded::Logs(_) => Signal::Logs,
        }
    }

    /// Spans, data points or log records in it.
    pub fn items(&self) -> u64 {
        let n: usize = match self {
            Decoded::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Decoded::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(point_count)
                .sum(),
            Decoded::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
        };
        n as u64
    }
}

/// Data points of a metric, whatever its type.
fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Calls `f` with the metric (without its data) and the attributes of each of its data points.
pub fn each_point_attrs(m: &mut Metric, mut f: impl FnMut(&Metric, &mut Vec<KeyValue>)) {
    let Some(mut data) = m.data.take() else {
        return;
    };
    let view = &*m;
    match &mut data {
        metric::Data::Gauge(g) => g
            .data_points
            .iter_mut()
            .for_each(|p| f(view, &mut p.attributes)),
        metric::Data::Sum(s) => s
            .data_points
            .iter_mut()
            .for_each(|p| f(view, &mut p.attributes)),
        metric::Data::Histogram(h) => h
            .data_points
            .iter_mut()
            .for_each(|p| f(view, &mut p.attributes)),
        metric::Data::ExponentialHistogram(h) => h
            .data_points
            .iter_mut()
            .for_each(|p| f(view, &mut p.attributes)),
        metric::Data::Summary(s) => s
            .data_points
            .iter_mut()
            .for_each(|p| f(view, &mut p.attributes)),
    }
    m.data = Some(data);
}

/// An attribute value as text, the form that regexes, hashes and masks act on: strings as
/// they are, numbers and booleans as they print, anything else as its protobuf bytes in hex.
pub fn text(v: &any_value::Value) -> std::borrow::Cow<'_, str> {
    use any_value::Value as V;
    match v {
        V::StringValue(s) => s.as_str().into(),
        V::IntValue(i) => i.to_string().into(),
        V::DoubleValue(d) => d.to_string().into(),
        V::BoolValue(b) => b.to_string().into(),
        V::BytesValue(b) => hex(b).into(),
        other => hex(&AnyValue {
            value: Some(other.clone()),
        }
        .encode_to_vec())
        .into(),
    }
}

fn attrs_of<T>(r: &Option<T>, f: impl Fn(&T) -> &[KeyValue]) -> &[KeyValue] {
    r.as_ref().map(f).unwrap_or(&[])
}

/// Calls `f` with each span and the attributes of its resource and scope.
pub fn each_span(
    req: &mut ExportTraceServiceRequest,
    mut f: impl FnMut(&[KeyValue], &[KeyValue], &mut ferry_proto::trace::Span),
) {
    for rs in &mut req.resource_spans {
        let res = attrs_of(&rs.resource, |r| &r.attributes);
        for ss in &mut rs.scope_spans {
            let scope = attrs_of(&ss.scope, |s| &s.attributes);
            ss.spans.iter_mut().for_each(|s| f(res, scope, s));
        }
    }
}

/// Calls `f` with each log record and the attributes of its resource and scope.
pub fn each_log(
    req: &mut ExportLogsServiceRequest,
    mut f: impl FnMut(&[KeyValue], &[KeyValue], &mut ferry_proto::logs::LogRecord),
) {
    for rl in &mut req.resource_logs {
        let res = attrs_of(&rl.resource, |r| &r.attributes);
        for sl in &mut rl.scope_logs {
            let scope = attrs_of(&sl.scope, |s| &s.attributes);
            sl.log_records.iter_mut().for_each(|l| f(res, scope, l));
        }
    }
}

/// Calls `f` with each metric and the attributes of its resource and scope.
pub fn each_metric(
    req: &mut ExportMetricsServiceRequest,
    mut f: impl FnMut(&[KeyValue], &[KeyValue], &mut Metric),
) {
    for rm in &mut req.resource_metrics {
        let res = attrs_of(&rm.resource, |r| &r.attributes);
        for sm in &mut rm.scope_metrics {
            let scope = attrs_of(&sm.scope, |s| &s.attributes);
            sm.metrics.iter_mut().for_each(|m| f(res, scope, m));
        }
    }
}

/// The value of attribute `key`, if present.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// A string attribute value.
pub fn string(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

/// An attribute.
pub fn kv(key: impl Into<String>, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        ..Default::default()
    }
}
