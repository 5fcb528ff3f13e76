//! Processors: reshape telemetry between the receivers and the queue (the ingest chain,
//! `[pipeline] processors`) or between the queue and one exporter (an exporter chain,
//! `[exporters.NAME] processors`).
//!
//! A chain with nothing for a signal costs nothing for it: the request is never decoded. A
//! run of native processors walks a request once, item after item ([`pass`]): each item
//! goes through every processor of the run and is written out, as it came unless one of
//! them changed it, and nothing is written at all if none did. Each built-in kind is one
//! module here plus one entry in [`KINDS`]; `kind = "wasm"` runs a plugin of the
//! `processor-plugin` world ([`wasm`]).

pub mod attributes;
mod chain;
pub mod condition;
pub mod filter;
pub mod limit;
pub mod otlp;
pub mod pass;
pub mod redact;
pub mod sample;
pub mod tail;
pub mod wasm;

pub use crate::wire::{items, msg, rewrite, schema};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signal::Signal;
use crate::telemetry::{Counter, Telemetry};
pub use chain::{Chain, IngestChain, Output, QueueView};
use msg::Msg;
pub use otlp::Decoded;
pub use wasm::{WasmConfig, WasmEnv};

/// A native processor: edits the items of a signal it handles, one at a time, in their wire
/// form. The walk over a request is [`pass`]'s; a kind says what it does to one resource or
/// one item.
pub trait Native: Send + Sync {
    /// Whether it acts on `signal`; other signals pass it untouched (and unread).
    fn handles(&self, signal: Signal) -> bool;
    /// Whether it edits resources (with [`Native::resource`]) rather than items.
    fn on_resources(&self) -> bool {
        false
    }
    /// Edits a resource group's resource; says whether it changed it (which changes every
    /// item under it).
    fn resource(&self, _signal: Signal, _resource: &mut Msg) -> bool {
        false
    }
    /// Edits one item of a validated request: a span, a log record or a metric. Says what
    /// it did in items of the signal (a metric's data points): a span or log record it
    /// drops is removed, as is a metric left without points.
    fn item(&self, _signal: Signal, _at: &At<'_>, _item: &mut Msg, _notes: &mut Notes) -> Tally {
        Tally::default()
    }
    /// Called once a whole request has been walked, with what [`Native::item`] noted.
    fn finish(&self, _notes: &mut Notes) {}
}

/// Where an item sits.
#[derive(Clone, Copy)]
pub struct At<'a> {
    /// Its resource.
    pub resource: &'a Msg,
    /// Its instrumentation scope.
    pub scope: &'a Msg,
}

impl<'a> At<'a> {
    /// `item` where it sits, for conditions.
    pub fn view<'i>(&self, item: condition::Item<'i>) -> condition::ItemView<'i>
    where
        'a: 'i,
    {
        condition::ItemView {
            resource: self.resource,
            scope: self.scope,
            item,
        }
    }
}

/// Span ids a processor noted while walking one request, for checks that need all of it
/// (a filter's orphans).
#[derive(Debug, Default)]
pub struct Notes {
    /// Ids of spans it dropped.
    pub dropped: Vec<u64>,
    /// Parent ids of spans it kept.
    pub parents: Vec<u64>,
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
        settings_at(&self.path, self.settings)
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

/// `settings` (the section at `path`) as a kind's config type, or the error with its key path.
fn settings_at<T: serde::de::DeserializeOwned>(
    path: &str,
    settings: &toml::Table,
) -> Result<T, Vec<String>> {
    crate::units::at_path(path, &toml::Value::Table(settings.clone())).map_err(|e| vec![e])
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

/// The kind that samples whole traces ([`tail`]); exporter chains only.
pub const TAIL: &str = "tail_sample";

impl ProcessorConfig {
    /// The settings of a `kind = "wasm"` processor, checked; `None` for a built-in kind.
    pub fn wasm(&self, name: &str) -> Option<Result<WasmConfig, Vec<String>>> {
        (self.kind == WASM).then(|| {
            let path = format!("processors.{name}");
            let c: WasmConfig = settings_at(&path, &self.settings)?;
            let mut errors = Vec::new();
            c.check(&path, &mut errors);
            if errors.is_empty() {
                Ok(c)
            } else {
                Err(errors)
            }
        })
    }

    /// A `kind = "tail_sample"` processor, built; `None` for any other kind.
    pub fn tail(
        &self,
        name: &str,
        telemetry: &Telemetry,
        queue: Option<&QueueView<'_>>,
    ) -> Option<Result<tail::TailSampler, Vec<String>>> {
        (self.kind == TAIL).then(|| {
            let path = format!("processors.{name}");
            let c: tail::TailConfig = settings_at(&path, &self.settings)?;
            tail::TailSampler::new(&path, name, &c, telemetry, queue)
        })
    }

    fn build(&self, name: &str, telemetry: &Telemetry) -> Result<Box<dyn Native>, Vec<String>> {
        let path = format!("processors.{name}");
        let kind = KINDS.iter().find(|k| k.name == self.kind).ok_or_else(|| {
            let names: Vec<_> = KINDS.iter().map(|k| k.name).chain([WASM, TAIL]).collect();
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
        let checked = match (p.wasm(name), p.tail(name, &scratch, None)) {
            (Some(wasm), _) => wasm.map(drop),
            (_, Some(tail)) => tail.map(drop),
            (None, None) => p.build(name, &scratch).map(drop),
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

/// Adds to `errors` each name in the chain at `path` that `processors` does not define, and
/// (for the ingest chain, `ingest`) each that runs only in an exporter's chain.
pub fn check_chain(
    path: &str,
    chain: &[String],
    processors: &Processors,
    ingest: bool,
    errors: &mut Vec<String>,
) {
    for (i, name) in chain.iter().enumerate() {
        match processors.get(name) {
            None => errors.push(format!(
                "{path}[{i}]: no processor named {name:?} is defined (add a [processors.{name}] section)"
            )),
            Some(p) if ingest && p.kind == TAIL => errors.push(format!(
                "{path}[{i}]: {name:?} is a {TAIL}, which runs only in an exporter's chain \
                 (it holds batches until their traces are decided)"
            )),
            Some(_) => {}
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

#[cfg(test)]
mod tests;
mod tests_walk;
