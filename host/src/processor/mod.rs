//! Processors: reshape telemetry between the receivers and the queue (the ingest chain,
//! `[pipeline] processors`) or between the queue and one exporter (an exporter chain,
//! `[exporters.NAME] processors`).
//!
//! A chain with nothing for a signal costs nothing for it: the request is never decoded. A
//! run of native processors decodes a request once, lets each edit it in place, and encodes
//! it once, only if one of them changed something. Each built-in kind is one module here plus
//! one entry in [`KINDS`]; `kind = "wasm"` runs a plugin of the `processor-plugin` world
//! ([`wasm`]).

pub mod attributes;
pub mod condition;
pub mod filter;
pub mod limit;
pub mod otlp;
pub mod redact;
pub mod sample;
pub mod wasm;

pub use crate::wire::{items, msg, schema};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::signal::Signal;
use crate::telemetry::{Counter, Histogram, Telemetry};
use msg::Msg;
pub use otlp::Decoded;
pub use wasm::{WasmConfig, WasmEnv};
use wasm::{WasmOutput, WasmProcessor};

/// A native processor: edits a request of a signal it handles, in its wire form.
pub trait Native: Send + Sync {
    /// Whether it acts on `signal`; other signals pass it untouched (and unread).
    fn handles(&self, signal: Signal) -> bool;
    /// Edits `req`, a validated export request of `signal`; says how many items it dropped
    /// and how many of the rest it changed.
    fn process(&self, signal: Signal, req: &mut Msg) -> Tally;
}

/// What one processor did to one request, in items of its signal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Items removed.
    pub dropped: u64,
    /// Items kept but changed.
    pub modified: u64,
}

/// What a processor kind is built from.
pub struct Setup<'a> {
    /// Key path of its section (`processors.NAME`), for errors.
    pub path: String,
    /// The processor's name, a metric label.
    pub name: &'a str,
    /// Its settings: the section without `kind` and `on_error`.
    pub settings: &'a toml::Table,
    /// Where it registers its own counters.
    pub telemetry: &'a Telemetry,
}

impl Setup<'_> {
    /// The settings as the kind's config type, or every error with its key path.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Vec<String>> {
        crate::units::at_path(&self.path, &toml::Value::Table(self.settings.clone()))
            .map_err(|e| vec![e])
    }

    /// A counter labelled with this processor's name and `labels`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        let mut l = vec![("processor", self.name)];
        l.extend_from_slice(labels);
        self.telemetry.counter(name, help, &l)
    }
}

/// Builds a processor of one kind, or says everything wrong with its settings.
pub type Build = fn(&Setup<'_>) -> Result<Box<dyn Native>, Vec<String>>;

/// A built-in processor kind.
pub struct Kind {
    /// Its `kind = "..."` name.
    pub name: &'static str,
    /// How it is built.
    pub build: Build,
}

/// Every built-in kind.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "attributes",
        build: attributes::build_attributes,
    },
    Kind {
        name: "resource",
        build: attributes::build_resource,
    },
    Kind {
        name: "filter",
        build: filter::build,
    },
    Kind {
        name: "sample",
        build: sample::build,
    },
    Kind {
        name: "redact",
        build: redact::build,
    },
    Kind {
        name: "limit",
        build: limit::build,
    },
];

/// What happens to data a processor fails on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse it: an ingest chain answers the sender with a retryable error (nothing is
    /// accepted); an exporter chain counts a failed attempt and retries under the exporter's
    /// retry policy.
    #[default]
    Refuse,
    /// Forward it as it was before this processor (counted).
    Pass,
    /// Drop it (counted).
    Drop,
}

/// `[processors.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ProcessorConfig {
    /// Which built-in kind.
    pub kind: String,
    /// What happens to data the processor fails on.
    #[serde(default)]
    pub on_error: OnError,
    /// The kind's own settings.
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `[processors]`: every processor defined, by name.
pub type Processors = BTreeMap<String, ProcessorConfig>;

/// The kind that runs a Wasm plugin.
pub const WASM: &str = "wasm";

impl ProcessorConfig {
    /// The settings of a `kind = "wasm"` processor, checked; `None` for a built-in kind.
    pub fn wasm(&self, name: &str) -> Option<Result<WasmConfig, Vec<String>>> {
        (self.kind == WASM).then(|| {
            let path = format!("processors.{name}");
            let c: WasmConfig =
                crate::units::at_path(&path, &toml::Value::Table(self.settings.clone()))
                    .map_err(|e| vec![e])?;
            let mut errors = Vec::new();
            c.check(&path, &mut errors);
            if errors.is_empty() {
                Ok(c)
            } else {
                Err(errors)
            }
        })
    }

    fn build(&self, name: &str, telemetry: &Telemetry) -> Result<Box<dyn Native>, Vec<String>> {
        let path = format!("processors.{name}");
        let kind = KINDS.iter().find(|k| k.name == self.kind).ok_or_else(|| {
            let names: Vec<_> = KINDS.iter().map(|k| k.name).chain([WASM]).collect();
            vec![format!(
                "{path}.kind: unknown processor kind {:?} (expected one of {})",
                self.kind,
                names.join(", ")
            )]
        })?;
        (kind.build)(&Setup {
            path,
            name,
            settings: &self.settings,
            telemetry,
        })
    }
}

/// Adds what is wrong with `[processors]` to `errors`.
pub fn check(processors: &Processors, errors: &mut Vec<String>) {
    let scratch = Telemetry::default();
    for (name, p) in processors {
        let checked = match p.wasm(name) {
            Some(wasm) => wasm.map(drop),
            None => p.build(name, &scratch).map(drop),
        };
        if let Err(e) = checked {
            errors.extend(e);
        }
    }
}

/// The plugins the Wasm processors of a chain run, in order.
pub fn wasm_plugins<'a>(names: &[String], processors: &'a Processors) -> Vec<&'a str> {
    names
        .iter()
        .filter_map(|n| processors.get(n))
        .filter(|p| p.kind == WASM)
        .filter_map(|p| p.settings.get("plugin")?.as_str())
        .collect()
}

/// Adds to `errors` each name in the chain at `path` that `processors` does not define.
pub fn check_chain(
    path: &str,
    chain: &[String],
    processors: &Processors,
    errors: &mut Vec<String>,
) {
    for (i, name) in chain.iter().enumerate() {
        if !processors.contains_key(name) {
            errors.push(format!(
                "{path}[{i}]: no processor named {name:?} is defined (add a [processors.{name}] section)"
            ));
        }
    }
}

/// A processor failed on a request and its policy is to refuse it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("processor {processor:?} failed: {message}")]
pub struct Fault {
    /// The processor's name.
    pub processor: String,
    /// What went wrong.
    pub message: String,
}

/// Whether a request a chain runs on has passed [`crate::wire::inspect`] already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// A request the receiver just checked: the chain reads it as it is.
    Yes,
    /// A batch read from the queue (perhaps written by an older Ferry, whose check was
    /// shallower): checked again before a built-in reads it.
    No,
}

/// What a chain made of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Nothing changed: forward the original bytes.
    Unchanged,
    /// Forward these bytes, holding this many items (none: nothing to forward).
    Replaced {
        /// The new request.
        payload: Bytes,
        /// Its items.
        items: u32,
    },
}

struct Counts {
    kept: Counter,
    dropped: Counter,
    modified: Counter,
    faults: Counter,
}

enum Stage {
    Native(Box<dyn Native>),
    Wasm(Box<WasmProcessor>),
}

struct Link {
    name: String,
    on_error: OnError,
    stage: Stage,
    counts: [Counts; 3],
    duration: Histogram,
}

impl Link {
    fn handles(&self, signal: Signal) -> bool {
        match &self.stage {
            Stage::Native(n) => n.handles(signal),
            Stage::Wasm(w) => w.handles(signal),
        }
    }

    /// Counts a failure on a request of `items` items, logs it, and says what the policy
    /// makes of it: `Err` to refuse, `Ok(true)` to drop it, `Ok(false)` to pass it on as it
    /// was.
    fn failed(&self, signal: Signal, items: u64, message: String) -> Result<bool, Fault> {
        self.counts[signal.index()].faults.inc();
        tracing::warn!(processor = self.name.as_str(), on_error = ?self.on_error, %signal, "{message}");
        match self.on_error {
            OnError::Refuse => Err(Fault {
                processor: self.name.clone(),
                message,
            }),
            OnError::Pass => Ok(false),
            OnError::Drop => {
                self.count(
                    signal,
                    items,
                    Tally {
                        dropped: items,
                        modified: 0,
                    },
                );
                Ok(true)
            }
        }
    }

    fn count(&self, signal: Signal, items: u64, t: Tally) {
        let c = &self.counts[signal.index()];
        c.dropped.add(t.dropped);
        c.modified.add(t.modified);
        c.kept.add(items.saturating_sub(t.dropped + t.modified));
    }
}

/// Processors applied in order.
#[derive(Default)]
pub struct Chain {
    links: Vec<Link>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.links.iter().map(|l| &l.name))
            .finish()
    }
}

impl Chain {
    /// The chain of the processors named `names`, all defined in `processors` (the config
    /// was checked). Wasm processors are loaded with `wasm`; without it, a chain naming one
    /// fails.
    pub async fn build(
        names: &[String],
        processors: &Processors,
        telemetry: &Telemetry,
        wasm: Option<&WasmEnv<'_>>,
    ) -> Result<Chain, Vec<String>> {
        let mut links = Vec::new();
        let mut errors = Vec::new();
        for name in names {
            let Some(p) = processors.get(name) else {
                errors.push(format!("no processor named {name:?} is defined"));
                continue;
            };
            let stage = match (p.wasm(name), wasm) {
                (None, _) => p.build(name, telemetry).map(Stage::Native),
                (Some(Err(e)), _) => Err(e),
                (Some(Ok(_)), None) => Err(vec![format!(
                    "processors.{name}: Wasm processors need the plugin engine"
                )]),
                (Some(Ok(c)), Some(env)) => WasmProcessor::load(name, &c, env, telemetry)
                    .await
                    .map(|w| Stage::Wasm(Box::new(w)))
                    .map_err(|e| vec![e]),
            };
            match stage {
                Ok(stage) => links.push(Link {
                    name: name.clone(),
                    on_error: p.on_error,
                    stage,
                    counts: Signal::ALL.map(|s| {
                        let l = [("processor", name.as_str()), ("signal", s.as_str())];
                        let items = |outcome| {
                            telemetry.counter(
                                "ferry_processor_items_total",
                                "Items seen by a processor, by outcome (kept unchanged, modified, dropped).",
                                &[l[0], l[1], ("outcome", outcome)],
                            )
                        };
                        Counts {
                            kept: items("kept"),
                            dropped: items("dropped"),
                            modified: items("modified"),
                            faults: telemetry.counter(
                                "ferry_processor_faults_total",
                                "Requests or batches a processor failed on (then handled per its on_error).",
                                &l,
                            ),
                        }
                    }),
                    duration: telemetry.histogram(
                        "ferry_processor_duration_seconds",
                        "Time a processor spent on one request or batch.",
                        &[("processor", name.as_str())],
                    ),
                }),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Chain { links })
        } else {
            Err(errors)
        }
    }

    /// Whether the chain has no processor at all.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether any processor of the chain acts on `signal`.
    pub fn handles(&self, signal: Signal) -> bool {
        self.links.iter().any(|l| l.handles(signal))
    }

    /// Runs the chain over one request of `signal` holding `items` items.
    pub async fn run(
        &self,
        signal: Signal,
        payload: &Bytes,
        items: u32,
        checked: Checked,
    ) -> Result<Output, Fault> {
        // The request as the next processor sees it: bytes (the original, or a Wasm
        // processor's replacement, which is always checked) and, across a run of native
        // processors, one checked wire form of them, `dirty` once edited.
        let mut bytes: Option<Bytes> = None;
        let mut wire: Option<Msg> = None;
        let mut dirty = false;
        let mut items = u64::from(items);
        for link in self.links.iter().filter(|l| l.handles(signal)) {
            let started = Instant::now();
            match &link.stage {
                Stage::Native(native) => {
                    let req = match &mut wire {
                        Some(m) => m,
                        None => {
                            let input = bytes.clone().unwrap_or_else(|| payload.clone());
                            let check = match (&bytes, checked) {
                                (None, Checked::No) => schema::validate(signal, &input),
                                _ => Ok(()),
                            };
                            match check {
                                Ok(()) => wire.insert(Msg::new(input)),
                                Err(e) => {
                                    let why = format!("the {signal} request does not decode: {e}");
                                    if link.failed(signal, items, why)? {
                                        return Ok(Output::nothing());
                                    }
                                    continue;
                                }
                            }
                        }
                    };
                    let tally = native.process(signal, req);
                    link.count(signal, items, tally);
                    items = items.saturating_sub(tally.dropped);
                    dirty |= tally.dropped > 0 || tally.modified > 0;
                }
                Stage::Wasm(wasm) => {
                    if let Some(mut m) = wire.take()
                        && dirty
                    {
                        items::prune(signal, &mut m);
                        bytes = Some(m.encode());
                        dirty = false;
                    }
                    if items == 0 {
                        return Ok(Output::nothing());
                    }
                    let input = bytes.as_ref().unwrap_or(payload);
                    let n = u32::try_from(items).unwrap_or(u32::MAX);
                    match wasm.process(signal, input, n).await {
                        Ok(WasmOutput::Keep) => link.count(signal, items, Tally::default()),
                        Ok(WasmOutput::Replace(new, kept)) => {
                            let kept = u64::from(kept);
                            let t = Tally {
                                dropped: items.saturating_sub(kept),
                                modified: kept.min(items),
                            };
                            link.count(signal, items, t);
                            (bytes, items) = (Some(new), kept);
                        }
                        Ok(WasmOutput::Drop) => {
                            link.count(
                                signal,
                                items,
                                Tally {
                                    dropped: items,
                                    modified: 0,
                                },
                            );
                            return Ok(Output::nothing());
                        }
                        Err(why) => {
                            if link.failed(signal, items, why)? {
                                return Ok(Output::nothing());
                            }
                        }
                    }
                }
            }
            link.duration.observe(started.elapsed());
        }
        let items = u32::try_from(items).unwrap_or(u32::MAX);
        Ok(match (wire, bytes) {
            (Some(mut m), _) if dirty => {
                items::prune(signal, &mut m);
                Output::Replaced {
                    payload: m.encode(),
                    items,
                }
            }
            (_, Some(payload)) => Output::Replaced { payload, items },
            _ => Output::Unchanged,
        })
    }
}

impl Output {
    fn nothing() -> Output {
        Output::Replaced {
            payload: Bytes::new(),
            items: 0,
        }
    }
}

/// The ingest chain, swapped whole on reload: each request runs wholly on the chain it
/// found when it started.
#[derive(Debug, Default)]
pub struct IngestChain(RwLock<Arc<Chain>>);

impl IngestChain {
    /// Starts with `chain`.
    pub fn new(chain: Chain) -> Arc<Self> {
        Arc::new(IngestChain(RwLock::new(Arc::new(chain))))
    }

    /// The chain now in force.
    pub fn current(&self) -> Arc<Chain> {
        self.0.read().expect("ingest chain lock").clone()
    }

    /// Puts `chain` in force for every request that starts from now on.
    pub fn swap(&self, chain: Chain) {
        *self.0.write().expect("ingest chain lock") = Arc::new(chain);
    }
}

/// An exporter chain runs on each batch read for its exporter.
impl crate::pipeline::router::Process for Chain {
    fn process<'a>(
        &'a self,
        batch: &'a crate::pipeline::Batch,
    ) -> crate::pipeline::router::ProcessFuture<'a> {
        Box::pin(async move {
            let run = self.run(batch.signal, &batch.payload, batch.items, Checked::No);
            match run.await {
                Ok(Output::Unchanged) => Ok(None),
                Ok(Output::Replaced { payload, items }) => Ok(Some(crate::pipeline::Batch::new(
                    batch.signal,
                    items,
                    payload,
                ))),
                Err(fault) => Err(fault.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests;
