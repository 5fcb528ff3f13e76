//! A processor that misbehaves on purpose, by `mode`: the sandbox tests load it to check that
//! each failure is refused or counted per `on_error` and harms nothing else.
//!
//! Modes: `keep`, `drop`, `tag` (sets `hostile.seen` on every span: the well-behaved case),
//! `error` (returns an error), `trap` (panics), `loop` (spins forever), `memory` (allocates
//! without end), `malformed` (answers bytes that are not protobuf), `other-signal` (answers a
//! metrics request for a traces batch), `grow` (answers a request 100 times the batch).

use ferry_processor_sdk::proto::metrics::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
};
use ferry_processor_sdk::proto::metrics_service::ExportMetricsServiceRequest;
use ferry_processor_sdk::{
    Batch, Encoding, Manifest, Outcome, ProcessMeta, Processor, Request, Signal, parse_config,
    set_attribute, spans_mut,
};
use prost::Message;
use serde::Deserialize;

#[derive(Deserialize)]
struct Config {
    mode: String,
}

struct Hostile {
    mode: String,
}

impl Processor for Hostile {
    fn manifest() -> Manifest {
        Manifest::new(
            "hostile-processor",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        Ok(Hostile { mode: c.mode })
    }

    fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String> {
        match self.mode.as_str() {
            "keep" => Ok(Outcome::Keep),
            "drop" => Ok(Outcome::Drop),
            "tag" => Request::edit(meta.signal, batch, |req| match req {
                Request::Traces(t) => spans_mut(t).fold(false, |c, s| {
                    set_attribute(&mut s.attributes, "hostile.seen", "yes") | c
                }),
                _ => false,
            }),
            "error" => Err("this batch offends me".into()),
            "trap" => panic!("hostile processor traps on purpose"),
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(3));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "malformed" => Ok(Outcome::Replace(vec![0xff; 64])),
            "other-signal" => {
                let m = ExportMetricsServiceRequest {
                    resource_metrics: vec![ResourceMetrics {
                        scope_metrics: vec![ScopeMetrics {
                            metrics: vec![Metric {
                                name: "not.a.span".into(),
                                data: Some(metric::Data::Gauge(Gauge {
                                    data_points: vec![NumberDataPoint {
                                        start_time_unix_nano: 1,
                                        time_unix_nano: 2,
                                        ..Default::default()
                                    }],
                                })),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                };
                Ok(Outcome::Replace(m.encode_to_vec()))
            }
            "grow" => {
                let mut req = Request::decode(meta.signal, &batch.to_vec())?;
                if let Request::Traces(t) = &mut req {
                    let first = t.resource_spans.first().cloned();
                    for _ in 0..100 {
                        t.resource_spans.extend(first.clone());
                    }
                }
                Ok(Outcome::Replace(req.encode()))
            }
            other => Err(format!("unknown mode {other}")),
        }
    }
}

ferry_processor_sdk::export!(Hostile);
