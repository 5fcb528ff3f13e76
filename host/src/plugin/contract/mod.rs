//! The contract versions this host speaks, one module each (as Spin keeps one file per old WASI
//! version). A version module generates its bindings, implements the host side of its imports
//! and wraps its exports behind [`GuestPre`] and [`Guest`]; adding a version is one new module
//! and one entry in [`VERSIONS`].

pub mod v0_1;
pub mod v0_2;
pub mod v0_3;

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

use super::ctx::PluginCtx;
use super::engine::PluginEngine;
use super::load::LoadError;
use crate::pipeline::Encoding;
use crate::pipeline::router::Outcome;
use crate::signal::Signal;

/// A plugin's self-description, in host types.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Plugin's name.
    pub name: String,
    /// Plugin's version.
    pub version: String,
    /// Signals it exports.
    pub signals: Vec<Signal>,
    /// What it wants batches encoded as.
    pub encoding: Encoding,
    /// The `ferry:plugin` version it was built against.
    pub contract: &'static str,
    /// Which world it implements.
    pub world: World,
}

/// The two kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `exporter-plugin`: sends batches somewhere.
    Exporter,
    /// `processor-plugin`: reshapes batches on their way (contract 0.3.0 on).
    Processor,
}

impl World {
    /// Its name in the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Exporter => "exporter-plugin",
            World::Processor => "processor-plugin",
        }
    }
}

/// What a processor plugin made of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Forward the batch as it is.
    Keep,
    /// Forward these bytes instead (not yet checked).
    Replace(Vec<u8>),
    /// Forward nothing.
    Drop,
}

/// One contract version.
pub struct Version {
    /// Its number, e.g. `0.2.0`.
    pub number: &'static str,
    /// Adds the host side of its imports to the linker.
    pub add_to_linker: fn(&mut Linker<PluginCtx>) -> wasmtime::Result<()>,
    /// Pre-instantiates a component that exports `ferry:plugin/exporter@NUMBER`.
    pub pre: PreFn,
    /// Pre-instantiates a component that exports `ferry:plugin/processor@NUMBER`, for the
    /// versions that have processors.
    pub processor: Option<PreFn>,
}

/// Pre-instantiates a component against one world of one version.
pub type PreFn = fn(InstancePre<PluginCtx>) -> wasmtime::Result<Box<dyn GuestPre>>;

/// Every version this host speaks, newest first.
pub const VERSIONS: &[Version] = &[v0_3::VERSION, v0_2::VERSION, v0_1::VERSION];

/// Contract versions this host speaks, newest first: a plugin exports
/// `ferry:plugin/exporter@VERSION` for one of them.
pub const CONTRACTS: [&str; VERSIONS.len()] = {
    let mut out = [""; VERSIONS.len()];
    let mut i = 0;
    while i < VERSIONS.len() {
        out[i] = VERSIONS[i].number;
        i += 1;
    }
    out
};

/// Adds every version's imports to `linker`; a plugin links against the one it was built for.
pub fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    VERSIONS.iter().try_for_each(|v| (v.add_to_linker)(linker))
}

/// A plugin pre-instantiated against the contract version it was built for.
#[async_trait::async_trait]
pub trait GuestPre: Send + Sync {
    /// The engine it belongs to.
    fn engine(&self) -> &wasmtime::Engine;
    /// A new instance in `store`.
    async fn instantiate(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<Box<dyn Guest>>;
}

/// An instantiated plugin: its interface's calls, in host types. An exporter has no
/// `process` and a processor no `export`; the host checks the world before calling either.
#[async_trait::async_trait]
pub trait Guest: Send + Sync {
    /// `describe`.
    async fn describe(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<Manifest>;
    /// `init`, with the plugin's settings as JSON.
    async fn init(
        &self,
        store: &mut Store<PluginCtx>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
    /// One `export` call.
    async fn export(
        &self,
        store: &mut Store<PluginCtx>,
        signal: Signal,
        items: u32,
        attempt: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Outcome>;
    /// `shutdown`.
    async fn shutdown(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<()>;
    /// One `process` call (processors only).
    async fn process(
        &self,
        store: &mut Store<PluginCtx>,
        signal: Signal,
        items: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Result<Processed, String>> {
        let _ = (store, signal, items, payload);
        Err(wasmtime::Error::msg("an exporter plugin cannot process"))
    }
}

/// Lends `payload` to the plugin as a batch handle for the length of `call` (0.2.0 on): the
/// bytes stay in the host's memory, and the loan ends with the call.
pub(crate) async fn with_batch<T>(
    store: &mut Store<PluginCtx>,
    payload: Bytes,
    call: impl AsyncFnOnce(
        &mut Store<PluginCtx>,
        wasmtime::component::Resource<super::ctx::HostBatch>,
    ) -> wasmtime::Result<T>,
) -> wasmtime::Result<T> {
    let batch = store.data_mut().lend_batch(payload)?;
    let handle = wasmtime::component::Resource::new_borrow(batch.rep());
    let result = call(&mut *store, handle).await;
    store.data_mut().take_batch(batch);
    result
}

/// Picks the contract version from what `component` exports and pre-instantiates it.
pub fn pre(engine: &PluginEngine, component: &Component) -> Result<Box<dyn GuestPre>, LoadError> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    let pre = engine
        .linker()
        .instantiate_pre(component)
        .map_err(LoadError::Contract)?;
    let spoken = exports
        .iter()
        .filter_map(|e| e.strip_prefix("ferry:plugin/exporter@"))
        .find_map(|n| VERSIONS.iter().find(|v| v.number == n));
    if let Some(version) = spoken {
        return (version.pre)(pre).map_err(LoadError::Contract);
    }
    let processor = exports
        .iter()
        .filter_map(|e| e.strip_prefix("ferry:plugin/processor@"))
        .find_map(|n| VERSIONS.iter().find(|v| v.number == n)?.processor);
    if let Some(processor) = processor {
        return processor(pre).map_err(LoadError::Contract);
    }
    let message = match exports.iter().find_map(|e| {
        e.strip_prefix("ferry:plugin/exporter@")
            .or_else(|| e.strip_prefix("ferry:plugin/processor@"))
    }) {
        Some(other) => format!(
            "it implements ferry:plugin@{other}, a contract version this host does not speak \
             (it speaks {})",
            CONTRACTS.join(", ")
        ),
        None => format!(
            "it exports [{}], not ferry:plugin/exporter or ferry:plugin/processor",
            exports.join(", ")
        ),
    };
    Err(LoadError::Contract(wasmtime::Error::msg(message)))
}

/// What is the same in every version but made of its own generated types: the host side of
/// the `types` and `host` interfaces, the conversions to host types, and the wrappers behind
/// [`GuestPre`] and [`Guest`] for its exporter world (`$exporter` names the generated accessor of the exporter
/// interface), and the version's `VERSION` entry. A version module adds its `add_to_linker`
/// and its `export` call: `async fn export(plugin, store, meta, payload)`.
macro_rules! common {
    ($version:literal, $exporter:ident) => {
        $crate::plugin::contract::common!($version, $exporter, None);
    };
    ($version:literal, $exporter:ident, $processor:expr) => {
        use std::time::Duration;

        use crate::pipeline::Encoding;
        use crate::pipeline::router::Outcome;
        use crate::plugin::contract::{Manifest, World};
        use crate::plugin::ctx::{LogLevel, PluginCtx};
        use crate::signal::Signal;

        impl types::Host for PluginCtx {}

        impl host::Host for PluginCtx {
            fn log(&mut self, level: types::LogLevel, message: String) {
                use types::LogLevel as L;
                let level = match level {
                    L::Trace => LogLevel::Trace,
                    L::Debug => LogLevel::Debug,
                    L::Info => LogLevel::Info,
                    L::Warn => LogLevel::Warn,
                    L::Error => LogLevel::Error,
                };
                PluginCtx::log(self, level, &message);
            }
        }

        impl From<types::Manifest> for Manifest {
            fn from(m: types::Manifest) -> Self {
                use types::Encoding as E;
                Manifest {
                    name: m.name,
                    version: m.version,
                    signals: m.signals.into_iter().map(Signal::from).collect(),
                    encoding: match m.encoding {
                        E::OtlpProtobuf => Encoding::OtlpProtobuf,
                        E::OtlpJson => Encoding::OtlpJson,
                    },
                    contract: $version,
                    world: World::Exporter,
                }
            }
        }

        impl From<types::Signal> for Signal {
            fn from(s: types::Signal) -> Self {
                use types::Signal as S;
                match s {
                    S::Traces => Signal::Traces,
                    S::Metrics => Signal::Metrics,
                    S::Logs => Signal::Logs,
                }
            }
        }

        impl From<Signal> for types::Signal {
            fn from(s: Signal) -> Self {
                match s {
                    Signal::Traces => Self::Traces,
                    Signal::Metrics => Self::Metrics,
                    Signal::Logs => Self::Logs,
                }
            }
        }

        impl From<types::ExportError> for Outcome {
            fn from(e: types::ExportError) -> Self {
                use types::ExportError as E;
                match e {
                    E::Retryable(m) => Outcome::Retryable(m),
                    E::Throttled(ms) => Outcome::Throttled(Duration::from_millis(ms)),
                    E::Partial((n, m)) => Outcome::Partial(n, m),
                    E::Permanent(m) => Outcome::Permanent(m),
                }
            }
        }

        /// This version, for the host's table of versions.
        pub const VERSION: $crate::plugin::contract::Version = $crate::plugin::contract::Version {
            number: $version,
            add_to_linker,
            pre,
            processor: $processor,
        };

        fn pre(
            pre: wasmtime::component::InstancePre<PluginCtx>,
        ) -> wasmtime::Result<Box<dyn $crate::plugin::contract::GuestPre>> {
            Ok(Box::new(Pre(bindings::ExporterPluginPre::new(pre)?)))
        }

        struct Pre(bindings::ExporterPluginPre<PluginCtx>);

        #[async_trait::async_trait]
        impl $crate::plugin::contract::GuestPre for Pre {
            fn engine(&self) -> &wasmtime::Engine {
                self.0.engine()
            }

            async fn instantiate(
                &self,
                store: &mut wasmtime::Store<PluginCtx>,
            ) -> wasmtime::Result<Box<dyn $crate::plugin::contract::Guest>> {
                Ok(Box::new(Plugin(self.0.instantiate_async(store).await?)))
            }
        }

        struct Plugin(bindings::ExporterPlugin);

        #[async_trait::async_trait]
        impl $crate::plugin::contract::Guest for Plugin {
            async fn describe(
                &self,
                store: &mut wasmtime::Store<PluginCtx>,
            ) -> wasmtime::Result<Manifest> {
                Ok(self.0.$exporter().call_describe(store).await?.into())
            }

            async fn init(
                &self,
                store: &mut wasmtime::Store<PluginCtx>,
                config: &str,
            ) -> wasmtime::Result<Result<(), String>> {
                self.0.$exporter().call_init(store, config).await
            }

            async fn export(
                &self,
                store: &mut wasmtime::Store<PluginCtx>,
                signal: Signal,
                items: u32,
                attempt: u32,
                payload: bytes::Bytes,
            ) -> wasmtime::Result<Outcome> {
                let meta = types::BatchMeta {
                    signal: signal.into(),
                    items,
                    attempt,
                };
                let result = export(&self.0, store, meta, payload).await?;
                Ok(result.err().map(Outcome::from).unwrap_or(Outcome::Ok))
            }

            async fn shutdown(
                &self,
                store: &mut wasmtime::Store<PluginCtx>,
            ) -> wasmtime::Result<()> {
                self.0.$exporter().call_shutdown(store).await
            }
        }
    };
}
pub(crate) use common;
