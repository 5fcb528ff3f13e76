//! One plugin instance, whatever contract version it speaks (`contract/` has one module per
//! version), and the deadline every call runs under.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::Store;

use super::contract::{Guest, GuestPre, Processed};
use super::ctx::{Egress, InstanceLimits, PluginCtx};
use super::engine::{EPOCH_TICK, PluginEngine};
use super::load::LoadError;
use super::registry::PluginSource;
use super::role::Role;
use super::text::escape;
use crate::pipeline::router::Outcome;
use crate::signal::Signal;

pub use super::contract::{CONTRACTS, Manifest};

/// A plugin pre-instantiated against the contract version it was built for.
pub(super) type PluginPre = Box<dyn GuestPre>;

/// An instantiated plugin and its store.
pub(super) struct Instance {
    pub(super) store: Store<PluginCtx>,
    pub(super) plugin: Box<dyn Guest>,
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

    /// One `process` call (processors only).
    pub(super) async fn process(
        &mut self,
        signal: Signal,
        items: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Result<Processed, String>> {
        (self.plugin)
            .process(&mut self.store, signal, items, payload)
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

/// Shared by every instance of one exporter (or processor).
pub(super) struct Shared {
    pub(super) role: &'static Role,
    pub(super) name: String,
    pub(super) pre: PluginPre,
    pub(super) egress: Egress,
    pub(super) limits: InstanceLimits,
    pub(super) config_json: String,
}

impl Shared {
    pub(super) fn new(
        role: &'static Role,
        engine: &PluginEngine,
        name: &str,
        source: &PluginSource,
        egress: Egress,
        limits: InstanceLimits,
        config_json: String,
    ) -> Result<Shared, LoadError> {
        let component = engine.compile_source(source)?;
        let pre = super::contract::pre(engine, &component)?;
        Ok(Shared {
            role,
            name: name.to_string(),
            pre,
            egress,
            limits,
            config_json,
        })
    }

    fn load_error(
        during: &'static str,
        limit: Duration,
        inst: &Instance,
        e: CallError,
    ) -> LoadError {
        match e {
            CallError::Trap(error) => LoadError::Trap {
                during,
                error,
                stderr: inst.store.data().stderr_tail(),
            },
            CallError::Timeout => LoadError::Timeout { during, limit },
        }
    }

    /// The plugin's manifest, its text fields escaped and cut like anything else it says.
    pub(super) async fn describe(&self, inst: &mut Instance) -> Result<Manifest, LoadError> {
        let limit = self.limits.timeout;
        let mut m = bounded!(limit, inst.describe())
            .map_err(|e| Self::load_error("describe", limit, inst, e))?;
        let max = self.egress.log.policy().max_message_bytes.min(256);
        m.name = escape(&m.name, max);
        m.version = escape(&m.version, max);
        Ok(m)
    }

    /// A fresh, uninitialised instance.
    pub(super) async fn instantiate(&self) -> Result<Instance, LoadError> {
        let ctx = PluginCtx::new(self.egress.clone(), &self.limits)
            .map_err(|e| LoadError::Policy(format!("granted_dir: {e:#}")))?;
        let mut store = Store::new(self.pre.engine(), ctx);
        store.limiter(|c| &mut c.limits);
        store.epoch_deadline_trap();
        let limit = self.limits.timeout;
        store.set_epoch_deadline(super::instance::ticks(limit));
        let plugin = match tokio::time::timeout(limit, self.pre.instantiate(&mut store)).await {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => {
                return Err(LoadError::Trap {
                    during: "instantiation",
                    error,
                    stderr: String::new(),
                });
            }
            Err(_) => {
                return Err(LoadError::Timeout {
                    during: "instantiation",
                    limit,
                });
            }
        };
        Ok(Instance { store, plugin })
    }

    pub(super) async fn init(&self, inst: &mut Instance) -> Result<(), LoadError> {
        let limit = self.limits.timeout;
        let json = &self.config_json;
        match bounded!(limit, inst.init(json)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(LoadError::Config(escape(
                &msg,
                self.egress.log.policy().max_message_bytes,
            ))),
            Err(e) => Err(Self::load_error("init", limit, inst, e)),
        }
    }

    /// Shuts `inst` down within `limit`; says how it went for the log.
    pub(super) async fn shutdown(&self, mut inst: Instance, limit: Duration) {
        let name = &self.name;
        match bounded!(limit, inst.shutdown()) {
            Ok(()) => {}
            Err(CallError::Timeout) => tracing::warn!(
                exporter = name,
                "plugin did not finish shutdown within {limit:?}; instance dropped"
            ),
            Err(CallError::Trap(e)) => tracing::warn!(
                exporter = name,
                "plugin trapped in shutdown: {}{}; instance dropped",
                trap_reason(name, &e),
                stderr_suffix(&inst.store.data().stderr_tail())
            ),
        }
    }
}

/// What the guest printed to stderr (already escaped), for a log message.
pub(super) fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (plugin stderr: {tail})")
    }
}

/// A trap's reason on one line (the trap code, or the root cause such as a memory limit);
/// the full chain with the wasm backtrace goes to the debug log.
pub(super) fn trap_reason(exporter: &str, e: &wasmtime::Error) -> String {
    tracing::debug!(
        exporter,
        "plugin trap in full: {}",
        escape(&format!("{e:?}"), 64 << 10)
    );
    let reason = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => {
            let root = e.root_cause().to_string();
            let trap = trap.to_string();
            if root == trap {
                trap
            } else {
                format!("{trap}: {root}")
            }
        }
        None => e.root_cause().to_string(),
    };
    // A host error may carry plugin text (a header name, a URI).
    escape(reason.lines().next().unwrap_or_default(), 1024)
}
