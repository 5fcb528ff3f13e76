//! One plugin instance and the contract versions it may speak: `PluginPre` picks the version a
//! component was built for, `Instance` makes its calls, each under a deadline.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::{Component, Resource};

use super::bindings::{v0_1, v0_2};
use super::ctx::PluginCtx;
use super::engine::{EPOCH_TICK, PluginEngine};
use super::exporter::LoadError;
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
}

/// Conversions between host types and one contract version's types, identical in each.
macro_rules! contract_types {
    ($v:ident, $meta:ident, $version:literal) => {
        impl From<$v::types::Manifest> for Manifest {
            fn from(m: $v::types::Manifest) -> Self {
                use $v::types::Encoding as E;
                Manifest {
                    name: m.name,
                    version: m.version,
                    signals: m.signals.into_iter().map(Signal::from).collect(),
                    encoding: match m.encoding {
                        E::OtlpProtobuf => Encoding::OtlpProtobuf,
                        E::OtlpJson => Encoding::OtlpJson,
                    },
                    contract: $version,
                }
            }
        }

        impl From<$v::types::Signal> for Signal {
            fn from(s: $v::types::Signal) -> Self {
                use $v::types::Signal as S;
                match s {
                    S::Traces => Signal::Traces,
                    S::Metrics => Signal::Metrics,
                    S::Logs => Signal::Logs,
                }
            }
        }

        impl From<Signal> for $v::types::Signal {
            fn from(s: Signal) -> Self {
                match s {
                    Signal::Traces => Self::Traces,
                    Signal::Metrics => Self::Metrics,
                    Signal::Logs => Self::Logs,
                }
            }
        }

        impl From<$v::types::ExportError> for Outcome {
            fn from(e: $v::types::ExportError) -> Self {
                use $v::types::ExportError as E;
                match e {
                    E::Retryable(m) => Outcome::Retryable(m),
                    E::Throttled(ms) => Outcome::Throttled(Duration::from_millis(ms)),
                    E::Partial((n, m)) => Outcome::Partial(n, m),
                    E::Permanent(m) => Outcome::Permanent(m),
                }
            }
        }

        fn $meta(signal: Signal, items: u32, attempt: u32) -> $v::types::BatchMeta {
            $v::types::BatchMeta {
                signal: signal.into(),
                items,
                attempt,
            }
        }
    };
}

contract_types!(v0_1, meta_v0_1, "0.1.0");
contract_types!(v0_2, meta_v0_2, "0.2.0");

/// A plugin pre-instantiated against the contract version it was built for.
pub(super) enum PluginPre {
    V0_2(v0_2::ExporterPluginPre<PluginCtx>),
    V0_1(v0_1::ExporterPluginPre<PluginCtx>),
}

impl PluginPre {
    /// Picks the contract version from what the component exports.
    pub(super) fn new(
        engine: &PluginEngine,
        component: &Component,
    ) -> Result<PluginPre, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        let pre = engine
            .linker()
            .instantiate_pre(component)
            .map_err(LoadError::Contract)?;
        let has = |name: &str| exports.iter().any(|e| e == name);
        if has("ferry:plugin/exporter@0.2.0") {
            v0_2::ExporterPluginPre::new(pre)
                .map(PluginPre::V0_2)
                .map_err(LoadError::Contract)
        } else if has("ferry:plugin/exporter@0.1.0") {
            v0_1::ExporterPluginPre::new(pre)
                .map(PluginPre::V0_1)
                .map_err(LoadError::Contract)
        } else if let Some(other) = exports
            .iter()
            .find_map(|e| e.strip_prefix("ferry:plugin/exporter@"))
        {
            Err(LoadError::Contract(wasmtime::Error::msg(format!(
                "it implements ferry:plugin@{other}, a contract version this host does not \
                 speak (it speaks {})",
                CONTRACTS.join(", ")
            ))))
        } else {
            Err(LoadError::Contract(wasmtime::Error::msg(format!(
                "it exports [{}], not ferry:plugin/exporter",
                exports.join(", ")
            ))))
        }
    }

    pub(super) fn engine(&self) -> &wasmtime::Engine {
        match self {
            PluginPre::V0_2(p) => p.engine(),
            PluginPre::V0_1(p) => p.engine(),
        }
    }

    pub(super) async fn instantiate(
        &self,
        store: &mut Store<PluginCtx>,
    ) -> wasmtime::Result<Plugin> {
        Ok(match self {
            PluginPre::V0_2(p) => Plugin::V0_2(p.instantiate_async(store).await?),
            PluginPre::V0_1(p) => Plugin::V0_1(p.instantiate_async(store).await?),
        })
    }
}

/// An instantiated plugin, by contract version.
pub(super) enum Plugin {
    V0_2(v0_2::ExporterPlugin),
    V0_1(v0_1::ExporterPlugin),
}

/// An instantiated plugin and its store.
pub(super) struct Instance {
    pub(super) store: Store<PluginCtx>,
    pub(super) plugin: Plugin,
}

impl Instance {
    pub(super) async fn describe(&mut self) -> wasmtime::Result<Manifest> {
        let store = &mut self.store;
        Ok(match &self.plugin {
            Plugin::V0_2(p) => p
                .ferry_plugin0_2_0_exporter()
                .call_describe(store)
                .await?
                .into(),
            Plugin::V0_1(p) => p
                .ferry_plugin0_1_0_exporter()
                .call_describe(store)
                .await?
                .into(),
        })
    }

    pub(super) async fn init(&mut self, config: &str) -> wasmtime::Result<Result<(), String>> {
        let store = &mut self.store;
        match &self.plugin {
            Plugin::V0_2(p) => {
                p.ferry_plugin0_2_0_exporter()
                    .call_init(store, config)
                    .await
            }
            Plugin::V0_1(p) => {
                p.ferry_plugin0_1_0_exporter()
                    .call_init(store, config)
                    .await
            }
        }
    }

    /// One `export` call: a 0.2.0 plugin is lent the batch, a 0.1.0 plugin gets a copy.
    pub(super) async fn export(
        &mut self,
        signal: Signal,
        items: u32,
        attempt: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Outcome> {
        let store = &mut self.store;
        let result = match &self.plugin {
            Plugin::V0_2(p) => {
                let batch = store.data_mut().lend_batch(payload)?;
                let meta = meta_v0_2(signal, items, attempt);
                let handle = Resource::new_borrow(batch.rep());
                let r = p
                    .ferry_plugin0_2_0_exporter()
                    .call_export(&mut *store, meta, handle)
                    .await;
                store.data_mut().take_batch(batch);
                r?.map_err(Outcome::from)
            }
            Plugin::V0_1(p) => {
                let meta = meta_v0_1(signal, items, attempt);
                p.ferry_plugin0_1_0_exporter()
                    .call_export(store, meta, &payload)
                    .await?
                    .map_err(Outcome::from)
            }
        };
        Ok(result.err().unwrap_or(Outcome::Ok))
    }

    pub(super) async fn shutdown(&mut self) -> wasmtime::Result<()> {
        let store = &mut self.store;
        match &self.plugin {
            Plugin::V0_2(p) => p.ferry_plugin0_2_0_exporter().call_shutdown(store).await,
            Plugin::V0_1(p) => p.ferry_plugin0_1_0_exporter().call_shutdown(store).await,
        }
    }
}

/// Contract versions this host speaks, newest first: a plugin exports
/// `ferry:plugin/exporter@VERSION` for one of them.
pub const CONTRACTS: [&str; 2] = ["0.2.0", "0.1.0"];

/// How a bounded call failed.
pub(super) enum CallError {
    /// The guest trapped (or a host call it made failed as a trap).
    Trap(wasmtime::Error),
    /// The call did not finish in time (spinning, or blocked in a host call).
    Timeout,
}

/// Epoch ticks in `d`.
pub(super) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Runs one guest call on `$inst` under `$limit`: a CPU deadline (epoch interruption) for a
/// spinning guest and a wall-clock timeout that also covers time blocked in host calls. The
/// call starts with a clean stderr and host-memory peak. Evaluates to `Result<T, CallError>`;
/// an instance that failed either way must not be entered again.
macro_rules! bounded {
    ($limit:expr, $inst:ident . $call:ident ( $($arg:expr),* )) => {{
        let limit: std::time::Duration = $limit;
        $inst.store.set_epoch_deadline($crate::plugin::instance::ticks(limit));
        $inst.store.data_mut().begin_call();
        match tokio::time::timeout(limit, $inst.$call($($arg),*)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err($crate::plugin::instance::CallError::Trap(e)),
            Err(_) => Err($crate::plugin::instance::CallError::Timeout),
        }
    }};
}
pub(super) use bounded;
