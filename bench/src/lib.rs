//! Shared pieces of Ferry's benchmark tools: OTLP request generation and a cheap item count
//! that walks the protobuf wire format without decoding it (so the sink costs little CPU on
//! the machine it shares with the daemon under test).

use ferry_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, span};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points (gauges).
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    /// OTLP/HTTP path.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// OTLP gRPC method path.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => ferry_proto::grpc_path::TRACES,
            Signal::Metrics => ferry_proto::grpc_path::METRICS,
            Signal::Logs => ferry_proto::grpc_path::LOGS,
        }
    }
}

/// splitmix64's finaliser: spreads consecutive numbers over all 64 bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn attrs(n: usize, seed: u64) -> Vec<KeyValue> {
    (0..n)
        .map(|i| {
            let value = match i % 4 {
                0 => any_value::Value::StringValue(format!("value-{seed}-{i}")),
                1 => any_value::Value::IntValue((seed as i64) * 31 + i as i64),
                2 => any_value::Value::DoubleValue(seed as f64 / 7.0 + i as f64),
                _ => any_value::Value::BoolValue(seed.is_multiple_of(2)),
            };
            KeyValue {
                key: format!("bench.attr.{i}"),
                value: Some(AnyValue { value: Some(value) }),
                ..Default::default()
            }
        })
        .collect()
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("ferry-bench".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "ferry-bench".into(),
        version: "1".into(),
        ..Default::default()
    })
}

/// One encoded export request of `items` items with `attributes` attributes each; `seed`
/// makes ids and values differ between requests.
pub fn request(signal: Signal, items: usize, attributes: usize, seed: u64) -> Vec<u8> {
    let now = 1_700_000_000_000_000_000u64 + seed * 1_000_000;
    match signal {
        Signal::Traces => {
            let spans = (0..items as u64)
                .map(|i| {
                    let id = seed * 1_000_003 + i + 1;
                    // Trace ids as random as an SDK's (a sampler reads their low 56 bits).
                    let trace = mix(seed.wrapping_mul(0x9e37_79b9) ^ (i / 10));
                    Span {
                        trace_id: [seed.to_be_bytes(), trace.to_be_bytes()].concat(),
                        span_id: id.to_be_bytes().to_vec(),
                        parent_span_id: if i % 10 == 0 {
                            Vec::new()
                        } else {
                            (id - 1).to_be_bytes().to_vec()
                        },
                        name: format!("bench-op-{}", i % 16),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: now + i * 1000,
                        end_time_unix_nano: now + i * 1000 + 500_000,
                        attributes: attrs(attributes, id),
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource(),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        Signal::Metrics => {
            let data_points = (0..items as u64)
                .map(|i| NumberDataPoint {
                    attributes: attrs(attributes, seed * 1_000_003 + i),
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsDouble(i as f64)),
                    ..Default::default()
                })
                .collect();
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: resource(),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(),
                        metrics: vec![Metric {
                            name: "bench.gauge".into(),
                            data: Some(metric::Data::Gauge(Gauge { data_points })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        Signal::Logs => {
            let log_records = (0..items as u64)
                .map(|i| LogRecord {
                    time_unix_nano: now + i,
                    severity_text: "INFO".into(),
                    severity_number: 9,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "bench log line {seed}/{i}"
                        ))),
                    }),
                    attributes: attrs(attributes, seed * 1_000_003 + i),
                    ..Default::default()
                })
                .collect();
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: resource(),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
    }
}

/// Reads a varint at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, bytes)` for every length-delimited field of `buf`; `None` if malformed.
fn fields<'a>(buf: &'a [u8], mut f: impl FnMut(u64, &'a [u8]) -> Option<()>) -> Option<()> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let body = buf.get(pos..pos.checked_add(len)?)?;
                pos += len;
                f(key >> 3, body)?;
            }
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(())
}

/// Counts the items (spans, data points, log records) of an encoded export request.
pub fn count_items(signal: Signal, buf: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    fields(buf, |f, resource| {
        if f != 1 {
            return Some(());
        }
        fields(resource, |f, scope| {
            if f != 2 {
                return Some(());
            }
            fields(scope, |f, item| {
                if f != 2 {
                    return Some(());
                }
                match signal {
                    Signal::Traces | Signal::Logs => n += 1,
                    // Metric → its data (gauge 5, sum 7, histogram 9, exponential 10,
                    // summary 11) → data points (field 1).
                    Signal::Metrics => fields(item, |f, data| {
                        if matches!(f, 5 | 7 | 9 | 10 | 11) {
                            fields(data, |f, _| {
                                if f == 1 {
                                    n += 1;
                                }
                                Some(())
                            })?;
                        }
                        Some(())
                    })?,
                }
                Some(())
            })
        })
    })?;
    Some(n)
}

/// Where, in a traces request made by [`request`] with `seed`, each span's trace id has its
/// first 8 bytes (the seed): overwriting them there makes every trace in it new.
pub fn trace_id_prefixes(body: &[u8], seed: u64) -> Vec<usize> {
    let mut needle = vec![0x0a, 0x10];
    needle.extend_from_slice(&seed.to_be_bytes());
    body.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_slice())
        .map(|(at, _)| at + 2)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_prefixes_find_every_span_and_only_trace_ids() {
        let mut req = request(Signal::Traces, 37, 10, 5);
        let at = trace_id_prefixes(&req, 5);
        assert_eq!(at.len(), 37);
        for &a in &at {
            req[a..a + 8].copy_from_slice(&99u64.to_be_bytes());
        }
        let decoded = ExportTraceServiceRequest::decode(req.as_slice()).unwrap();
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        assert!(spans.iter().all(|s| s.trace_id[..8] == 99u64.to_be_bytes()));
        assert!(spans.iter().all(|s| s.span_id[..] != s.trace_id[..8]));
    }

    #[test]
    fn counts_match_what_was_generated() {
        for signal in [Signal::Traces, Signal::Metrics, Signal::Logs] {
            let req = request(signal, 37, 10, 5);
            assert_eq!(count_items(signal, &req), Some(37), "{signal:?}");
        }
        assert_eq!(count_items(Signal::Traces, &[0x0a, 0x05, 1]), None);
    }

    #[test]
    fn a_span_with_ten_attributes_is_about_the_usual_size() {
        let req = request(Signal::Traces, 100, 10, 1);
        // Comparable to what SDKs send: ~0.5 KB per span with 10 attributes.
        assert!((30_000..80_000).contains(&req.len()), "{}", req.len());
    }
}
