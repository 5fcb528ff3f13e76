//! What the check accepts, decoding accepts: rich requests of every signal, damaged byte by
//! byte, are either refused by [`inspect`] or decode with prost into as many items as it
//! counted.

use ferry_proto::common::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

use super::inspect;
use crate::Signal;

fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: any(value),
        ..Default::default()
    }
}

/// Attributes of every value type, nested ones included.
fn attributes() -> Vec<KeyValue> {
    use any_value::Value as V;
    vec![
        kv("s", V::StringValue("caf\u{e9}".into())),
        kv("b", V::BoolValue(true)),
        kv("i", V::IntValue(-300)),
        kv("d", V::DoubleValue(2.5)),
        kv("raw", V::BytesValue(vec![0xff, 0x00, 0xc3])),
        kv(
            "a",
            V::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(V::StringValue("x".into())),
                }],
            }),
        ),
        kv(
            "m",
            V::KvlistValue(KeyValueList {
                values: vec![kv("inner", V::IntValue(1))],
            }),
        ),
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: attributes(),
        dropped_attributes_count: 2,
        entity_refs: vec![EntityRef {
            schema_url: "u".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["d".into()],
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1".into(),
        attributes: attributes(),
        dropped_attributes_count: 1,
    })
}

fn traces() -> Vec<u8> {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        trace_state: "ot=th:8".into(),
        parent_span_id: vec![3; 8],
        flags: 0x301,
        name: "GET /".into(),
        kind: span::SpanKind::Server.into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: attributes(),
        dropped_attributes_count: 3,
        events: vec![span::Event {
            time_unix_nano: 5,
            name: "e".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 4,
        links: vec![span::Link {
            trace_id: vec![4; 16],
            span_id: vec![5; 8],
            trace_state: "k=v".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status {
            message: "bad".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![span.clone(), span],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
    .encode_to_vec()
}

fn metrics() -> Vec<u8> {
    let exemplars = vec![Exemplar {
        filtered_attributes: attributes(),
        time_unix_nano: 1,
        span_id: vec![2; 8],
        trace_id: vec![1; 16],
        value: Some(exemplar::Value::AsInt(7)),
    }];
    let number = NumberDataPoint {
        attributes: attributes(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: exemplars.clone(),
        flags: 1,
        value: Some(number_data_point::Value::AsDouble(1.5)),
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "s".into(),
        metadata: attributes(),
        data: Some(data),
    };
    let metrics = vec![
        metric(
            "g",
            metric::Data::Gauge(Gauge {
                data_points: vec![number.clone()],
            }),
        ),
        metric(
            "s",
            metric::Data::Sum(Sum {
                data_points: vec![number.clone(), number],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "h",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attributes(),
                    count: 3,
                    sum: Some(4.0),
                    bucket_counts: vec![1, 2, 0],
                    explicit_bounds: vec![1.0, 10.0],
                    exemplars: exemplars.clone(),
                    min: Some(0.5),
                    max: Some(20.0),
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "e",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: attributes(),
                    count: 6,
                    scale: -2,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset: -1,
                        bucket_counts: vec![300, 1, 0],
                    }),
                    negative: Some(Buckets {
                        offset: 2,
                        bucket_counts: vec![5],
                    }),
                    exemplars,
                    zero_threshold: 0.1,
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
        ),
        metric(
            "q",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: attributes(),
                    count: 2,
                    sum: 3.0,
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.5,
                        value: 1.0,
                    }],
                    ..Default::default()
                }],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics,
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
    .encode_to_vec()
}

fn logs() -> Vec<u8> {
    let record = LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: 2,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: any(any_value::Value::KvlistValue(KeyValueList {
            values: attributes(),
        })),
        attributes: attributes(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        event_name: "ev".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![record.clone(), record.clone(), record],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
    .encode_to_vec()
}

/// Items in `buf` as prost decodes it, or why it does not decode.
fn decoded_items(signal: Signal, buf: &[u8]) -> Result<u32, prost::DecodeError> {
    let n = |v: usize| v as u32;
    Ok(match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(buf)?
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| n(s.spans.len()))
            .sum(),
        Signal::Logs => ExportLogsServiceRequest::decode(buf)?
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| n(s.log_records.len()))
            .sum(),
        Signal::Metrics => ExportMetricsServiceRequest::decode(buf)?
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(metric::Data::Gauge(g)) => n(g.data_points.len()),
                Some(metric::Data::Sum(s)) => n(s.data_points.len()),
                Some(metric::Data::Histogram(h)) => n(h.data_points.len()),
                Some(metric::Data::ExponentialHistogram(e)) => n(e.data_points.len()),
                Some(metric::Data::Summary(s)) => n(s.data_points.len()),
                None => 0,
            })
            .sum(),
    })
}

#[test]
fn what_the_check_accepts_decodes_into_as_many_items() {
    // xorshift: the same damage on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (signal, good, items) in [
        (Signal::Traces, traces(), 2),
        (Signal::Metrics, metrics(), 6),
        (Signal::Logs, logs(), 3),
    ] {
        assert_eq!(inspect(signal, &good).map(|s| s.items), Ok(items));
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..30_000 {
            let mut buf = good.clone();
            for _ in 0..=next() % 3 {
                let at = (next() % buf.len() as u64) as usize;
                buf[at] = next() as u8;
            }
            if next() % 8 == 0 {
                buf.truncate((next() % buf.len() as u64) as usize);
            }
            match inspect(signal, &buf) {
                Ok(summary) => {
                    accepted += 1;
                    match decoded_items(signal, &buf) {
                        Ok(n) => assert_eq!(n, summary.items, "{signal}: items counted"),
                        Err(e) => panic!("{signal}: accepted what prost refuses: {e}"),
                    }
                }
                Err(_) => refused += 1,
            }
        }
        // The damage both passes and fails the check often enough to test both sides.
        assert!(
            accepted > 1000 && refused > 1000,
            "{signal}: {accepted} accepted, {refused} refused"
        );
    }
}
