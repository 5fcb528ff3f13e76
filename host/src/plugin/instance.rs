//! One plugin instance, whatever contract version it speaks (`contract/` has one module per
//! version), and the deadline every call runs under.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::Store;

use super::contract::{Exporter, ExporterPre};
use super::ctx::PluginCtx;
use super::engine::EPOCH_TICK;
use crate::pipeline::router::Outcome;
use crate::signal::Signal;

pub use super::contract::{CONTRACTS, Manifest};

/// A plugin pre-instantiated against the contract version it was built for.
pub(super) type PluginPre = Box<dyn ExporterPre>;

/// An instantiated plugin and its store.
pub(super) struct Instance {
    pub(super) store: Store<PluginCtx>,
    pub(super) plugin: Box<dyn Exporter>,
}

impl Instance {
    pub(super) async fn describe(&mut self) -> wasmtime::Result<Manifest> {
        self.plugin.describe(&mut self.store).await
    }

    pub(super) async fn init(&mut self, config: &str) -> wasmtime::Result<Result<(), String>> {
        self.plugin.init(&mut self.store, config).await
    }

    /// One `export` call, as the plugin's contract version makes it.
    pub(super) async fn export(
        &mut self,
        signal: Signal,
        items: u32,
        attempt: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Outcome> {
        (self.plugin)
            .export(&mut self.store, signal, items, attempt, payload)
            .await
    }

    pub(super) async fn shutdown(&mut self) -> wasmtime::Result<()> {
        self.plugin.shutdown(&mut self.store).await
    }
}

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
