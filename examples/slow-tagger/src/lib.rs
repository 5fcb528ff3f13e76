//! A Ferry processor: marks every span that took longer than `threshold_ms` with the boolean
//! attribute `attribute` (default `span.slow`), so backends and later filters can pick slow
//! spans out without computing durations. Spans already marked, and fast spans, are left as
//! they are; a batch with no slow span is forwarded untouched (`keep`).

use ferry_processor_sdk::proto::common::{AnyValue, KeyValue, any_value};
use ferry_processor_sdk::{
    Batch, Encoding, Manifest, Outcome, ProcessMeta, Processor, Request, Signal, parse_config,
    spans_mut,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    threshold_ms: u64,
    #[serde(default = "default_attribute")]
    attribute: String,
}

fn default_attribute() -> String {
    "span.slow".into()
}

struct SlowTagger {
    threshold_ns: u64,
    attribute: String,
}

impl Processor for SlowTagger {
    fn manifest() -> Manifest {
        Manifest::new(
            "slow-tagger",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = parse_config(config)?;
        if c.attribute.is_empty() {
            return Err("invalid config: attribute must not be empty".into());
        }
        Ok(SlowTagger {
            threshold_ns: c.threshold_ms.saturating_mul(1_000_000),
            attribute: c.attribute,
        })
    }

    fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String> {
        Request::edit(meta.signal, batch, |req| {
            let Request::Traces(traces) = req else {
                return false;
            };
            let mut changed = false;
            for span in spans_mut(traces) {
                let took = span
                    .end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano);
                if took > self.threshold_ns
                    && !span.attributes.iter().any(|a| a.key == self.attribute)
                {
                    span.attributes.push(KeyValue {
                        key: self.attribute.clone(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::BoolValue(true)),
                        }),
                        ..Default::default()
                    });
                    changed = true;
                }
            }
            changed
        })
    }
}

ferry_processor_sdk::export!(SlowTagger);
