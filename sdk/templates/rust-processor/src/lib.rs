//! {{name}}: a Ferry processor plugin.
//!
//! It sets the attribute `attribute` (default `processed.by`) to `value` (default
//! "{{name}}") on every span, log record and data point that lacks it. Change `process` to
//! reshape batches as you need: `Request` decodes them, `Outcome` says what to forward.

use ferry_processor_sdk::proto::common::KeyValue;
use ferry_processor_sdk::{
    Batch, Encoding, Manifest, Outcome, ProcessMeta, Processor, Request, Signal, parse_config,
    set_attribute, spans_mut,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_attribute")]
    attribute: String,
    #[serde(default = "default_value")]
    value: String,
}

fn default_attribute() -> String {
    "processed.by".into()
}

fn default_value() -> String {
    "{{name}}".into()
}

struct Plugin {
    config: Config,
}

impl Plugin {
    fn mark(&self, attrs: &mut Vec<KeyValue>) -> bool {
        !attrs.iter().any(|a| a.key == self.config.attribute)
            && set_attribute(attrs, &self.config.attribute, &self.config.value)
    }
}

impl Processor for Plugin {
    fn manifest() -> Manifest {
        Manifest::new(
            "{{name}}",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        Ok(Plugin {
            config: parse_config(config)?,
        })
    }

    fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String> {
        Request::edit(meta.signal, batch, |req| {
            let mut changed = false;
            match req {
                Request::Traces(t) => {
                    for span in spans_mut(t) {
                        changed |= self.mark(&mut span.attributes);
                    }
                }
                Request::Logs(l) => {
                    for rl in &mut l.resource_logs {
                        for sl in &mut rl.scope_logs {
                            for record in &mut sl.log_records {
                                changed |= self.mark(&mut record.attributes);
                            }
                        }
                    }
                }
                // Data point attributes identify a series: leave them as they are here.
                Request::Metrics(_) => {}
            }
            changed
        })
    }
}

ferry_processor_sdk::export!(Plugin);
