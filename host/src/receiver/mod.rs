//! Receivers: decode each wire protocol at the edge and hand validated OTLP to the pipeline.
//!
//! Each receiver is one folder that owns its config type, its validation, its decoders and its
//! servers, registered by one entry in [`KINDS`]. Shared plumbing lives beside them: `ingest`
//! (the counted entry point), `grpc` (the raw-method gRPC service), `http` (bodies),
//! `otlp_build` (OTLP builders for translators), `wire` (the OTLP wire walk).

pub mod decoders;
pub mod grpc;
pub mod http;
pub mod ingest;
#[cfg(feature = "jaeger")]
pub mod jaeger;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "opencensus")]
pub mod opencensus;
pub mod otlp;
#[cfg(any(feature = "zipkin", feature = "jaeger", feature = "opencensus"))]
pub(crate) mod otlp_build;
#[cfg(feature = "zipkin")]
pub mod zipkin;

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use http::{add_retry_after, read_http_body};
pub use ingest::{Accepted, Ingest, IngestError, Launch, RETRY_AFTER_SECS};

/// `Some(Built)` for a receiver whose cargo feature is on, `None` without it.
macro_rules! optional {
    ($feature:literal, $config:ty, $decoders:path) => {{
        #[cfg(feature = $feature)]
        const BUILT: Option<Built> = Some(Built::of::<$config>($decoders));
        #[cfg(not(feature = $feature))]
        const BUILT: Option<Built> = None;
        BUILT
    }};
}

/// Every receiver Ferry has, in the order they start. A new receiver is one folder and one
/// entry here.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "otlp",
        feature: None,
        built: Some(Built::of::<otlp::OtlpReceiverConfig>(otlp::decoders)),
    },
    Kind {
        name: "zipkin",
        feature: Some("zipkin"),
        built: optional!("zipkin", zipkin::ZipkinReceiverConfig, zipkin::decoders),
    },
    Kind {
        name: "jaeger",
        feature: Some("jaeger"),
        built: optional!("jaeger", jaeger::JaegerReceiverConfig, jaeger::decoders),
    },
    Kind {
        name: "opencensus",
        feature: Some("opencensus"),
        built: optional!(
            "opencensus",
            opencensus::OpenCensusReceiverConfig,
            opencensus::decoders
        ),
    },
    Kind {
        name: "nats",
        feature: Some("nats"),
        built: optional!("nats", nats::NatsReceiverConfig, nats::decoders),
    },
];

/// One kind of receiver, as registered in [`KINDS`].
pub struct Kind {
    /// The name of its `[receivers.NAME]` table (and of `ferry bundle --receivers`).
    pub name: &'static str,
    /// The cargo feature it is built with; `None`: always built.
    pub feature: Option<&'static str>,
    /// Its code, when this build has it.
    pub built: Option<Built>,
}

/// Reads a receiver's `[receivers.NAME]` table found at a key path.
pub type ParseConfig =
    fn(key: &str, value: &toml::Value) -> Result<Arc<dyn ReceiverConfig>, String>;

/// A receiver's code: how its config is read, and its wire decoders.
#[derive(Clone, Copy)]
pub struct Built {
    /// Deserialises `[receivers.NAME]` found at `key`, naming the key path of any error.
    pub parse: ParseConfig,
    /// Its wire decoders by name, for the fuzz targets and the corpus replay.
    pub decoders: fn() -> Vec<(&'static str, decoders::Decoder)>,
}

impl Built {
    /// The entry of a receiver whose config type is `T`.
    pub const fn of<T: Receiver>(
        decoders: fn() -> Vec<(&'static str, decoders::Decoder)>,
    ) -> Built {
        Built {
            parse: parse_as::<T>,
            decoders,
        }
    }
}

fn parse_as<T: Receiver>(
    key: &str,
    value: &toml::Value,
) -> Result<Arc<dyn ReceiverConfig>, String> {
    crate::units::at_path::<T>(key, value).map(|c| Arc::new(c) as Arc<dyn ReceiverConfig>)
}

/// What a receiver's config type provides: its own checks and how it starts.
pub trait Receiver: DeserializeOwned + Serialize + Debug + Send + Sync + 'static {
    /// Largest request accepted, after decompression (checked against the queue budget).
    fn max_request_bytes(&self) -> usize;
    /// Adds what is wrong with these settings to `errors`, each prefixed by `key`.
    fn check(&self, _key: &str, _errors: &mut Vec<String>) {}
    /// Starts the receiver's servers.
    fn start(&self, launch: &mut Launch<'_>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A boxed future, as a trait object method returns it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A receiver's config behind the table: any [`Receiver`].
pub trait ReceiverConfig: Debug + Send + Sync {
    /// See [`Receiver::max_request_bytes`].
    fn max_request_bytes(&self) -> usize;
    /// See [`Receiver::check`].
    fn check(&self, key: &str, errors: &mut Vec<String>);
    /// See [`Receiver::start`].
    fn start<'a>(&'a self, launch: &'a mut Launch<'_>) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The settings as data: two configs are the same when these are equal.
    fn canonical(&self) -> serde_json::Value;
    /// For reading a receiver's own type back.
    fn as_any(&self) -> &dyn Any;
}

impl<T: Receiver> ReceiverConfig for T {
    fn max_request_bytes(&self) -> usize {
        Receiver::max_request_bytes(self)
    }
    fn check(&self, key: &str, errors: &mut Vec<String>) {
        Receiver::check(self, key, errors)
    }
    fn start<'a>(&'a self, launch: &'a mut Launch<'_>) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Receiver::start(self, launch))
    }
    fn canonical(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Names of every receiver Ferry has.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// Names of the receivers this build has.
pub fn built() -> Vec<&'static str> {
    KINDS
        .iter()
        .filter(|k| k.built.is_some())
        .map(|k| k.name)
        .collect()
}

/// [`built`], owned: what a plain executable may start.
pub fn built_names() -> Vec<String> {
    built().into_iter().map(str::to_string).collect()
}

/// `[receivers]`: the receivers a config enables, in [`KINDS`] order.
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    enabled: Vec<(&'static Kind, Option<Arc<dyn ReceiverConfig>>)>,
}

impl Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Receivers {
    /// Reads `[receivers]`, adding every problem to `errors`. A receiver this build lacks is
    /// kept by name, so validation can say so.
    pub fn from_toml(value: Option<&toml::Value>, errors: &mut Vec<String>) -> Receivers {
        let mut out = Receivers::default();
        let Some(value) = value else {
            return out;
        };
        let Some(table) = value.as_table() else {
            errors.push("receivers: expected a table of receivers".into());
            return out;
        };
        for name in table.keys() {
            if !KINDS.iter().any(|k| k.name == name) {
                errors.push(format!(
                    "receivers.{name}: unknown receiver (expected one of {})",
                    names().join(", ")
                ));
            }
        }
        for kind in KINDS {
            let Some(value) = table.get(kind.name) else {
                continue;
            };
            let config = match &kind.built {
                None => None,
                Some(built) => match (built.parse)(&format!("receivers.{}", kind.name), value) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            out.enabled.push((kind, config));
        }
        out
    }

    /// The names of the receivers this config enables.
    pub fn enabled(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|(k, _)| k.name).collect()
    }

    /// The config of receiver `name`, as its own type.
    pub fn get<T: 'static>(&self, name: &str) -> Option<&T> {
        self.enabled
            .iter()
            .find(|(k, _)| k.name == name)
            .and_then(|(_, c)| c.as_ref()?.as_any().downcast_ref())
    }

    /// Adds what is wrong to `errors`: receivers this executable cannot start (not built,
    /// or not among the `carried` ones of a bundle), each receiver's own checks, and request
    /// limits no queue of `budget` bytes could ever hold.
    pub fn check(&self, budget: usize, carried: &[String], errors: &mut Vec<String>) {
        let carried: Vec<&str> = built()
            .into_iter()
            .filter(|n| carried.iter().any(|c| c == n))
            .collect();
        for (kind, config) in &self.enabled {
            let key = format!("receivers.{}", kind.name);
            let Some(config) = config else {
                errors.push(format!(
                    "{key}: this ferry was built without the {} receiver (cargo feature `{}`)",
                    kind.name,
                    kind.feature.unwrap_or(kind.name)
                ));
                continue;
            };
            if !carried.contains(&kind.name) {
                errors.push(format!(
                    "{key}: this bundle carries only the {} receiver(s) (`ferry bundle --receivers`)",
                    carried.join(", ")
                ));
            }
            config.check(&key, errors);
            let limit = config.max_request_bytes();
            if limit > budget {
                errors.push(format!(
                    "{key}.max_request_bytes: {limit} exceeds the queue budget ({budget}); such \
                     a request could never be queued"
                ));
            }
        }
    }

    /// Starts every receiver this config enables.
    pub async fn start_all(&self, launch: &mut Launch<'_>) -> anyhow::Result<()> {
        for (_, config) in &self.enabled {
            if let Some(config) = config {
                config.start(launch).await?;
            }
        }
        Ok(())
    }

    /// The settings as data, by receiver name: equal when, and only when, the configs are.
    pub fn canonical(&self) -> serde_json::Value {
        self.enabled
            .iter()
            .map(|(k, c)| {
                let v = c.as_ref().map(|c| c.canonical()).unwrap_or_default();
                (k.name.to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Default largest request of every receiver.
pub(crate) fn default_max_request() -> usize {
    16 << 20
}
