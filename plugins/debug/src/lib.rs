//! `debug`: logs one line per batch (signal, items, bytes) and, at `verbosity = "detailed"`,
//! one line per span, data point or log record.

use ferry_sdk::otlp::hex;
use ferry_sdk::proto::common::{AnyValue, KeyValue, any_value};
use ferry_sdk::proto::metrics::metric;
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal, otlp};
use serde::Deserialize;

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Verbosity {
    #[default]
    Basic,
    Detailed,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    verbosity: Verbosity,
}

struct Debug {
    config: Config,
}

fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => "null".into(),
    }
}

fn attrs(kvs: &[KeyValue]) -> String {
    let parts: Vec<String> = kvs
        .iter()
        .map(|kv| format!("{}={}", kv.key, value(&kv.value)))
        .collect();
    parts.join(" ")
}

impl Debug {
    fn detail(&self, meta: &BatchMeta, payload: &[u8]) -> Result<(), ExportError> {
        let bad = |e: otlp::DecodeError| ExportError::Permanent(format!("undecodable batch: {e}"));
        match meta.signal {
            Signal::Traces => {
                for rs in otlp::decode_traces(payload).map_err(bad)?.resource_spans {
                    let res = rs
                        .resource
                        .map(|r| attrs(&r.attributes))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            ferry_sdk::log::info(&format!(
                                "span trace_id={} span_id={} parent={} name={:?} {} [{}]",
                                hex(&s.trace_id),
                                hex(&s.span_id),
                                hex(&s.parent_span_id),
                                s.name,
                                attrs(&s.attributes),
                                res
                            ));
                        }
                    }
                }
            }
            Signal::Metrics => {
                for rm in otlp::decode_metrics(payload).map_err(bad)?.resource_metrics {
                    for sm in rm.scope_metrics {
                        for m in sm.metrics {
                            let points = match &m.data {
                                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                                Some(metric::Data::Sum(s)) => s.data_points.len(),
                                Some(metric::Data::Histogram(h)) => h.data_points.len(),
                                Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                                Some(metric::Data::Summary(s)) => s.data_points.len(),
                                None => 0,
                            };
                            ferry_sdk::log::info(&format!(
                                "metric name={:?} unit={:?} points={points}",
                                m.name, m.unit
                            ));
                        }
                    }
                }
            }
            Signal::Logs => {
                for rl in otlp::decode_logs(payload).map_err(bad)?.resource_logs {
                    for sl in rl.scope_logs {
                        for l in sl.log_records {
                            ferry_sdk::log::info(&format!(
                                "log severity={:?} body={} {}",
                                l.severity_text,
                                value(&l.body),
                                attrs(&l.attributes)
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Exporter for Debug {
    fn manifest() -> Manifest {
        Manifest::new(
            "debug",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        Ok(Debug {
            config: ferry_sdk::parse_config(config)?,
        })
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let signal = match meta.signal {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        };
        ferry_sdk::log::info(&format!(
            "batch signal={signal} items={} bytes={}",
            meta.items,
            batch.len()
        ));
        if self.config.verbosity == Verbosity::Detailed {
            self.detail(&meta, &batch.to_vec())?;
        }
        Ok(())
    }
}

ferry_sdk::export!(Debug);
