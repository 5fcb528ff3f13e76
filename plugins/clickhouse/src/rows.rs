//! OTLP → `JSONEachRow` rows for the tables in [`crate::schema`].

use std::collections::BTreeMap;

use ferry_sdk::otlp::{hex, json_map, value_text};
use ferry_sdk::proto::common::{InstrumentationScope, KeyValue};
use ferry_sdk::proto::logs_service::ExportLogsServiceRequest;
use ferry_sdk::proto::metrics::{metric, number_data_point};
use ferry_sdk::proto::metrics_service::ExportMetricsServiceRequest;
use ferry_sdk::proto::trace::{span, status};
use ferry_sdk::proto::trace_service::ExportTraceServiceRequest;
use serde_json::{Map, Value, json};

use crate::schema::MetricTable;

/// Adds `NAME.Key` / `NAME.Value` arrays for a Nested attribute column.
fn put_attrs(row: &mut Map<String, Value>, name: &str, kvs: &[KeyValue]) {
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    let values: Vec<String> = kvs.iter().map(|kv| value_text(&kv.value)).collect();
    row.insert(format!("{name}.Key"), json!(keys));
    row.insert(format!("{name}.Value"), json!(values));
}

fn service_name(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| value_text(&kv.value))
        .unwrap_or_default()
}

fn scope_fields(row: &mut Map<String, Value>, scope: Option<&InstrumentationScope>) {
    row.insert("ScopeName".into(), json!(scope.map_or("", |s| &s.name)));
    row.insert(
        "ScopeVersion".into(),
        json!(scope.map_or("", |s| &s.version)),
    );
}

/// `DateTime` columns take seconds.
fn seconds(nanos: u64) -> u64 {
    nanos / 1_000_000_000
}

fn kind_name(k: i32) -> &'static str {
    match span::SpanKind::try_from(k).unwrap_or(span::SpanKind::Unspecified) {
        span::SpanKind::Unspecified => "Unspecified",
        span::SpanKind::Internal => "Internal",
        span::SpanKind::Server => "Server",
        span::SpanKind::Client => "Client",
        span::SpanKind::Producer => "Producer",
        span::SpanKind::Consumer => "Consumer",
    }
}

fn status_name(code: i32) -> &'static str {
    match status::StatusCode::try_from(code).unwrap_or(status::StatusCode::Unset) {
        status::StatusCode::Unset => "Unset",
        status::StatusCode::Ok => "Ok",
        status::StatusCode::Error => "Error",
    }
}

/// One row per span.
pub fn spans(req: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut rows = Vec::new();
    for rs in &req.resource_spans {
        let res = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let service = service_name(res);
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let mut row = Map::new();
                row.insert("Timestamp".into(), json!(seconds(s.start_time_unix_nano)));
                row.insert("TimestampNanos".into(), json!(s.start_time_unix_nano));
                row.insert("TraceId".into(), json!(hex(&s.trace_id)));
                row.insert("SpanId".into(), json!(hex(&s.span_id)));
                row.insert("ParentSpanId".into(), json!(hex(&s.parent_span_id)));
                row.insert("TraceState".into(), json!(s.trace_state));
                row.insert("SpanName".into(), json!(s.name));
                row.insert("SpanKind".into(), json!(kind_name(s.kind)));
                row.insert("ServiceName".into(), json!(service));
                put_attrs(&mut row, "ResourceAttributes", res);
                scope_fields(&mut row, ss.scope.as_ref());
                put_attrs(&mut row, "SpanAttributes", &s.attributes);
                row.insert(
                    "Duration".into(),
                    json!(s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)),
                );
                let st = s.status.clone().unwrap_or_default();
                row.insert("StatusCode".into(), json!(status_name(st.code)));
                row.insert("StatusMessage".into(), json!(st.message));
                let ev = &s.events;
                row.insert(
                    "Events.Timestamp".into(),
                    json!(ev.iter().map(|e| e.time_unix_nano).collect::<Vec<_>>()),
                );
                row.insert(
                    "Events.Name".into(),
                    json!(ev.iter().map(|e| &e.name).collect::<Vec<_>>()),
                );
                row.insert(
                    "Events.Attributes".into(),
                    json!(
                        ev.iter()
                            .map(|e| Value::Object(json_map(&e.attributes)).to_string())
                            .collect::<Vec<_>>()
                    ),
                );
                let ln = &s.links;
                row.insert(
                    "Links.TraceId".into(),
                    json!(ln.iter().map(|l| hex(&l.trace_id)).collect::<Vec<_>>()),
                );
                row.insert(
                    "Links.SpanId".into(),
                    json!(ln.iter().map(|l| hex(&l.span_id)).collect::<Vec<_>>()),
                );
                row.insert(
                    "Links.TraceState".into(),
                    json!(ln.iter().map(|l| &l.trace_state).collect::<Vec<_>>()),
                );
                row.insert(
                    "Links.Attributes".into(),
                    json!(
                        ln.iter()
                            .map(|l| Value::Object(json_map(&l.attributes)).to_string())
                            .collect::<Vec<_>>()
                    ),
                );
                rows.push(Value::Object(row));
            }
        }
    }
    rows
}

/// One row per log record.
pub fn logs(req: &ExportLogsServiceRequest) -> Vec<Value> {
    let mut rows = Vec::new();
    for rl in &req.resource_logs {
        let res = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let service = service_name(res);
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                // A record without a time is placed at the time it was observed.
                let time = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                let mut row = Map::new();
                row.insert("Timestamp".into(), json!(seconds(time)));
                row.insert("TimestampNanos".into(), json!(time));
                row.insert(
                    "ObservedTimestampNanos".into(),
                    json!(r.observed_time_unix_nano),
                );
                row.insert("TraceId".into(), json!(hex(&r.trace_id)));
                row.insert("SpanId".into(), json!(hex(&r.span_id)));
                row.insert("TraceFlags".into(), json!(r.flags));
                row.insert("SeverityText".into(), json!(r.severity_text));
                row.insert("SeverityNumber".into(), json!(r.severity_number));
                row.insert("ServiceName".into(), json!(service));
                row.insert("Body".into(), json!(value_text(&r.body)));
                put_attrs(&mut row, "ResourceAttributes", res);
                scope_fields(&mut row, sl.scope.as_ref());
                put_attrs(&mut row, "LogAttributes", &r.attributes);
                rows.push(Value::Object(row));
            }
        }
    }
    rows
}

fn optional(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite())
        .map_or(Value::Null, |x| json!(x))
}

/// Rows per metrics table.
pub fn metrics(req: &ExportMetricsServiceRequest) -> BTreeMap<MetricTable, Vec<Value>> {
    let mut out: BTreeMap<MetricTable, Vec<Value>> = BTreeMap::new();
    for rm in &req.resource_metrics {
        let res = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let service = service_name(res);
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                // One row: the columns every metrics table has, then the kind's own.
                let mut emit = |table: MetricTable,
                                attrs: &[KeyValue],
                                (start, time, flags): (u64, u64, u32),
                                fields: Vec<(&str, Value)>| {
                    let mut row = Map::new();
                    put_attrs(&mut row, "ResourceAttributes", res);
                    row.insert("ServiceName".into(), json!(service));
                    scope_fields(&mut row, sm.scope.as_ref());
                    row.insert("MetricName".into(), json!(m.name));
                    row.insert("MetricDescription".into(), json!(m.description));
                    row.insert("MetricUnit".into(), json!(m.unit));
                    put_attrs(&mut row, "Attributes", attrs);
                    row.insert("StartTimeUnixNano".into(), json!(start));
                    row.insert("TimeUnixNano".into(), json!(time));
                    row.insert("Timestamp".into(), json!(seconds(time)));
                    row.insert("Flags".into(), json!(flags));
                    for (k, v) in fields {
                        row.insert(k.to_string(), v);
                    }
                    out.entry(table).or_default().push(Value::Object(row));
                };
                let number = |v: &Option<number_data_point::Value>| match v {
                    Some(number_data_point::Value::AsDouble(d)) => json!(d),
                    Some(number_data_point::Value::AsInt(i)) => json!(*i as f64),
                    None => json!(0.0),
                };
                match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        for p in &g.data_points {
                            let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let fields = vec![("Value", number(&p.value))];
                            emit(MetricTable::Gauge, &p.attributes, times, fields);
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        for p in &s.data_points {
                            let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let fields = vec![
                                ("Value", number(&p.value)),
                                ("AggregationTemporality", json!(s.aggregation_temporality)),
                                ("IsMonotonic", json!(u8::from(s.is_monotonic))),
                            ];
                            emit(MetricTable::Sum, &p.attributes, times, fields);
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in &h.data_points {
                            let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let fields = vec![
                                ("Count", json!(p.count)),
                                ("Sum", json!(p.sum.unwrap_or(0.0))),
                                ("BucketCounts", json!(p.bucket_counts)),
                                ("ExplicitBounds", json!(p.explicit_bounds)),
                                ("Min", optional(p.min)),
                                ("Max", optional(p.max)),
                                ("AggregationTemporality", json!(h.aggregation_temporality)),
                            ];
                            emit(MetricTable::Histogram, &p.attributes, times, fields);
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for p in &h.data_points {
                            let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let pos = p.positive.clone().unwrap_or_default();
                            let neg = p.negative.clone().unwrap_or_default();
                            let fields = vec![
                                ("Count", json!(p.count)),
                                ("Sum", json!(p.sum.unwrap_or(0.0))),
                                ("Scale", json!(p.scale)),
                                ("ZeroCount", json!(p.zero_count)),
                                ("PositiveOffset", json!(pos.offset)),
                                ("PositiveBucketCounts", json!(pos.bucket_counts)),
                                ("NegativeOffset", json!(neg.offset)),
                                ("NegativeBucketCounts", json!(neg.bucket_counts)),
                                ("Min", optional(p.min)),
                                ("Max", optional(p.max)),
                                ("AggregationTemporality", json!(h.aggregation_temporality)),
                            ];
                            emit(
                                MetricTable::ExponentialHistogram,
                                &p.attributes,
                                times,
                                fields,
                            );
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        for p in &s.data_points {
                            let times = (p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let q = &p.quantile_values;
                            let fields = vec![
                                ("Count", json!(p.count)),
                                ("Sum", json!(p.sum)),
                                (
                                    "ValueAtQuantiles.Quantile",
                                    json!(q.iter().map(|q| q.quantile).collect::<Vec<_>>()),
                                ),
                                (
                                    "ValueAtQuantiles.Value",
                                    json!(q.iter().map(|q| q.value).collect::<Vec<_>>()),
                                ),
                            ];
                            emit(MetricTable::Summary, &p.attributes, times, fields);
                        }
                    }
                    None => {}
                }
            }
        }
    }
    out
}
