//! Sample batches for `ferry plugin test`: OTLP export requests shaped like what instrumented
//! services send (two services, nested spans with events, links and errors, counters, gauges and
//! histograms, logs with and without trace context), deterministic so two runs send the same.

use bytes::Bytes;
use ferry_proto::common::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

use crate::signal::Signal;

/// The two batch sizes every signal is tested with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Size {
    /// A handful of items: the first batch after a quiet spell.
    Small,
    /// As many items as the daemon puts in one batch by default (`pipeline.batch_max_items`).
    Large,
}

impl Size {
    /// Items in a batch of this size.
    pub fn items(self) -> u32 {
        match self {
            Size::Small => 10,
            Size::Large => 8192,
        }
    }

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// Services the samples come from; items are spread over them.
const SERVICES: [&str; 2] = ["checkout", "payments"];
/// Start of every sample's timeline (2023-11-14T22:13:20Z).
const EPOCH_NS: u64 = 1_700_000_000_000_000_000;
/// Spans per trace: a server span and its children.
const TRACE_LEN: u64 = 5;

/// An OTLP protobuf export request for `signal` with `size.items()` items.
pub fn batch(signal: Signal, size: Size) -> Bytes {
    let items = u64::from(size.items());
    Bytes::from(match signal {
        Signal::Traces => traces(items).encode_to_vec(),
        Signal::Metrics => metrics(items).encode_to_vec(),
        Signal::Logs => logs(items).encode_to_vec(),
    })
}

fn string(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv(
                "service.name",
                any_value::Value::StringValue(service.into()),
            ),
            kv(
                "service.version",
                any_value::Value::StringValue("1.4.2".into()),
            ),
            kv(
                "deployment.environment",
                any_value::Value::StringValue("staging".into()),
            ),
            kv(
                "host.name",
                any_value::Value::StringValue(format!("{service}-7f9c")),
            ),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "ferry.plugin-test".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

/// Splits `items` between the services: the first gets the odd one out.
fn share(items: u64, service: usize) -> std::ops::Range<u64> {
    let half = items.div_ceil(2);
    if service == 0 { 0..half } else { half..items }
}

fn trace_id(trace: u64) -> Vec<u8> {
    [0x5eu64.to_be_bytes(), trace.to_be_bytes()].concat()
}

fn span_id(i: u64) -> Vec<u8> {
    (0xf000_0000_0000_0000u64 | i).to_be_bytes().to_vec()
}

fn sample_span(i: u64) -> Span {
    let trace = i / TRACE_LEN;
    let pos = i % TRACE_LEN;
    let start = EPOCH_NS + trace * 50_000_000 + pos * 1_000_000;
    let duration = if pos == 0 {
        40_000_000
    } else {
        (8 - pos) * 1_000_000
    };
    let (name, kind) = match pos {
        0 => ("POST /api/orders", span::SpanKind::Server),
        1 => ("SELECT orders", span::SpanKind::Client),
        2 => ("charge card", span::SpanKind::Client),
        3 => ("render receipt", span::SpanKind::Internal),
        _ => ("publish order.created", span::SpanKind::Producer),
    };
    let failed = i % 7 == 3;
    let mut attributes = vec![
        kv(
            "http.request.method",
            any_value::Value::StringValue("POST".into()),
        ),
        kv(
            "http.response.status_code",
            any_value::Value::IntValue(if failed { 503 } else { 200 }),
        ),
        kv(
            "order.items",
            any_value::Value::IntValue((i % 5 + 1) as i64),
        ),
        kv(
            "order.total",
            any_value::Value::DoubleValue(19.5 + i as f64),
        ),
        kv(
            "cache.hit",
            any_value::Value::BoolValue(i.is_multiple_of(2)),
        ),
    ];
    if pos == 0 {
        attributes.push(kv(
            "order.tags",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![string("gift").unwrap(), string("express").unwrap()],
            }),
        ));
    }
    Span {
        trace_id: trace_id(trace),
        span_id: span_id(i),
        parent_span_id: if pos == 0 {
            Vec::new()
        } else {
            span_id(i - pos)
        },
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes,
        events: if pos == 2 {
            vec![span::Event {
                time_unix_nano: start + 500_000,
                name: "card.authorized".into(),
                attributes: vec![kv(
                    "card.network",
                    any_value::Value::StringValue("visa".into()),
                )],
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        links: if pos == 4 && trace > 0 {
            vec![span::Link {
                trace_id: trace_id(trace - 1),
                span_id: span_id((trace - 1) * TRACE_LEN),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        status: Some(if failed {
            Status {
                code: status::StatusCode::Error as i32,
                message: "upstream unavailable".into(),
            }
        } else {
            Status::default()
        }),
        ..Default::default()
    }
}

fn traces(items: u64) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: SERVICES
            .iter()
            .enumerate()
            .map(|(s, service)| ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: share(items, s).map(sample_span).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Data points of one series kind: every third point of a service goes to each metric.
fn metrics(items: u64) -> ExportMetricsServiceRequest {
    let route = |i: u64| {
        kv(
            "http.route",
            any_value::Value::StringValue(format!("/api/route/{}", i % 16)),
        )
    };
    let time = |i: u64| EPOCH_NS + (i / 16) * 10_000_000_000;
    ExportMetricsServiceRequest {
        resource_metrics: SERVICES
            .iter()
            .enumerate()
            .map(|(s, service)| {
                let range = share(items, s);
                let of = |k: u64| range.clone().filter(move |i| i % 3 == k);
                let counter = Metric {
                    name: "http.server.requests".into(),
                    description: "Requests served.".into(),
                    unit: "{request}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: of(0)
                            .map(|i| NumberDataPoint {
                                attributes: vec![route(i)],
                                start_time_unix_nano: EPOCH_NS,
                                time_unix_nano: time(i),
                                value: Some(number_data_point::Value::AsInt((i * 3 + 1) as i64)),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                };
                let gauge = Metric {
                    name: "process.memory.usage".into(),
                    unit: "By".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: of(1)
                            .map(|i| NumberDataPoint {
                                attributes: vec![route(i)],
                                time_unix_nano: time(i),
                                value: Some(number_data_point::Value::AsDouble(
                                    52_428_800.0 + (i % 100) as f64 * 4096.0,
                                )),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                };
                let histogram = Metric {
                    name: "http.server.request.duration".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: of(2)
                            .map(|i| {
                                let counts = vec![i % 4, 3, 2, 1, 0];
                                HistogramDataPoint {
                                    attributes: vec![route(i)],
                                    start_time_unix_nano: EPOCH_NS,
                                    time_unix_nano: time(i),
                                    count: counts.iter().sum(),
                                    sum: Some(0.4 + (i % 10) as f64 / 10.0),
                                    bucket_counts: counts,
                                    explicit_bounds: vec![0.005, 0.05, 0.5, 5.0],
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                };
                ResourceMetrics {
                    resource: resource(service),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(),
                        metrics: vec![counter, gauge, histogram],
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect(),
    }
}

fn logs(items: u64) -> ExportLogsServiceRequest {
    const LEVELS: [(i32, &str); 4] = [(5, "DEBUG"), (9, "INFO"), (13, "WARN"), (17, "ERROR")];
    ExportLogsServiceRequest {
        resource_logs: SERVICES
            .iter()
            .enumerate()
            .map(|(s, service)| ResourceLogs {
                resource: resource(service),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: share(items, s)
                        .map(|i| {
                            let (number, text) = LEVELS[(i % 4) as usize];
                            let in_trace = i % 3 == 0;
                            LogRecord {
                                time_unix_nano: EPOCH_NS + i * 1_000_000,
                                observed_time_unix_nano: EPOCH_NS + i * 1_000_000 + 250_000,
                                severity_number: number,
                                severity_text: text.into(),
                                body: string(format!("order {i} moved to state {}", i % 6)),
                                attributes: vec![
                                    kv("order.id", any_value::Value::IntValue(i as i64)),
                                    kv(
                                        "code.function",
                                        any_value::Value::StringValue("update_order".into()),
                                    ),
                                ],
                                trace_id: if in_trace {
                                    trace_id(i / TRACE_LEN)
                                } else {
                                    Vec::new()
                                },
                                span_id: if in_trace { span_id(i) } else { Vec::new() },
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_and_size_holds_the_promised_number_of_items() {
        for size in [Size::Small, Size::Large] {
            let n = size.items() as usize;
            let t = ExportTraceServiceRequest::decode(batch(Signal::Traces, size)).unwrap();
            let spans: usize = t
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            assert_eq!(spans, n);
            let m = ExportMetricsServiceRequest::decode(batch(Signal::Metrics, size)).unwrap();
            let points: usize = m
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match m.data.as_ref().unwrap() {
                    metric::Data::Sum(s) => s.data_points.len(),
                    metric::Data::Gauge(g) => g.data_points.len(),
                    metric::Data::Histogram(h) => h.data_points.len(),
                    _ => unreachable!(),
                })
                .sum();
            assert_eq!(points, n);
            let l = ExportLogsServiceRequest::decode(batch(Signal::Logs, size)).unwrap();
            let records: usize = l
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            assert_eq!(records, n);
        }
    }

    #[test]
    fn children_point_at_their_trace_root_and_some_spans_fail() {
        let t = traces(20);
        let spans: Vec<&Span> = t
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let child = spans[6];
        assert_eq!(child.parent_span_id, spans[5].span_id);
        assert_eq!(child.trace_id, spans[5].trace_id);
        assert!(spans.iter().any(|s| s.status.as_ref().unwrap().code == 2));
    }
}
