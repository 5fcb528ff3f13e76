//! An exporter: a plugin component, pre-instantiated, with a small pool of initialised
//! instances, called under the sandbox's limits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::{Component, Resource};

use super::bindings::{v0_1, v0_2};
use super::breaker::Breaker;
use super::ctx::{Egress, PluginCtx};
use super::engine::{EPOCH_TICK, EngineError, PluginEngine};
use super::policy::{AllowedHosts, SecretHeaders};
use super::registry::PluginSource;
use super::sender::HostSender;
use crate::config::ExporterConfig;
use crate::pipeline::Encoding;
use crate::pipeline::router::{Export, ExportFuture, Outcome};
use crate::signal::Signal;
use crate::telemetry::{Counter, Histogram, Telemetry};

/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY: usize = 64 << 20;

/// Why an exporter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Compilation or engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The component does not implement a `ferry:plugin/exporter-plugin` world the host
    /// supports, or imports something the host does not provide.
    #[error("plugin does not fit the ferry:plugin exporter-plugin world (0.2.0 or 0.1.0): {0:#}")]
    Contract(wasmtime::Error),
    /// `describe` or `init` trapped.
    #[error("plugin trapped during {during}: {}{stderr}", trap_reason("-", error))]
    Trap {
        /// Which call.
        during: &'static str,
        /// The trap.
        error: wasmtime::Error,
        /// What the guest printed to stderr, if anything.
        stderr: String,
    },
    /// A call did not finish within the exporter's timeout.
    #[error("plugin did not finish {during} within {limit:?}")]
    Timeout {
        /// Which call.
        during: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// `init` refused the configuration.
    #[error("plugin rejected its config: {0}")]
    Config(String),
    /// The egress policy could not be built.
    #[error("allowed_hosts: {0}")]
    Policy(String),
    /// The config asks for signals the plugin does not support.
    #[error("plugin {plugin} does not support {signal} (it supports: {supported})")]
    Signal {
        /// Plugin name.
        plugin: String,
        /// Unsupported signal.
        signal: Signal,
        /// What it supports.
        supported: String,
    },
    /// The config table could not become JSON.
    #[error("config cannot be passed as JSON: {0}")]
    Json(String),
}

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
enum PluginPre {
    V0_2(v0_2::ExporterPluginPre<PluginCtx>),
    V0_1(v0_1::ExporterPluginPre<PluginCtx>),
}

impl PluginPre {
    /// Picks the contract version from what the component exports.
    fn new(engine: &PluginEngine, component: &Component) -> Result<PluginPre, LoadError> {
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

    fn engine(&self) -> &wasmtime::Engine {
        match self {
            PluginPre::V0_2(p) => p.engine(),
            PluginPre::V0_1(p) => p.engine(),
        }
    }

    async fn instantiate(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<Plugin> {
        Ok(match self {
            PluginPre::V0_2(p) => Plugin::V0_2(p.instantiate_async(store).await?),
            PluginPre::V0_1(p) => Plugin::V0_1(p.instantiate_async(store).await?),
        })
    }
}

/// An instantiated plugin, by contract version.
enum Plugin {
    V0_2(v0_2::ExporterPlugin),
    V0_1(v0_1::ExporterPlugin),
}

struct Instance {
    store: Store<PluginCtx>,
    plugin: Plugin,
}

impl Instance {
    async fn describe(&mut self) -> wasmtime::Result<Manifest> {
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

    async fn init(&mut self, config: &str) -> wasmtime::Result<Result<(), String>> {
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
    async fn export(
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

    async fn shutdown(&mut self) -> wasmtime::Result<()> {
        let store = &mut self.store;
        match &self.plugin {
            Plugin::V0_2(p) => p.ferry_plugin0_2_0_exporter().call_shutdown(store).await,
            Plugin::V0_1(p) => p.ferry_plugin0_1_0_exporter().call_shutdown(store).await,
        }
    }
}

/// What every instance of one exporter is confined to.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    /// Memory cap.
    pub memory: usize,
    /// CPU deadline and wall-clock timeout of one call.
    pub timeout: Duration,
    /// The only directory the plugin may open, if any.
    pub granted_dir: Option<PathBuf>,
}

impl Default for InstanceLimits {
    fn default() -> Self {
        InstanceLimits {
            memory: DEFAULT_MEMORY,
            timeout: Duration::from_secs(10),
            granted_dir: None,
        }
    }
}

/// Shared by every instance of one exporter.
struct Shared {
    name: String,
    pre: PluginPre,
    egress: Egress,
    limits: InstanceLimits,
    config_json: String,
}

impl Shared {
    fn new(
        engine: &PluginEngine,
        name: &str,
        source: &PluginSource,
        egress: Egress,
        limits: InstanceLimits,
        config_json: String,
    ) -> Result<Shared, LoadError> {
        let component = engine.compile_source(source)?;
        let pre = PluginPre::new(engine, &component)?;
        Ok(Shared {
            name: name.to_string(),
            pre,
            egress,
            limits,
            config_json,
        })
    }

    async fn describe(&self, inst: &mut Instance) -> Result<Manifest, LoadError> {
        match inst.describe().await {
            Ok(m) => Ok(m),
            Err(error) => Err(LoadError::Trap {
                during: "describe",
                error,
                stderr: stderr_suffix(&inst.store),
            }),
        }
    }

    /// A fresh, uninitialised instance.
    async fn instantiate(&self) -> Result<Instance, LoadError> {
        let ctx = PluginCtx::new(
            self.egress.clone(),
            self.limits.memory,
            self.limits.granted_dir.as_deref(),
        )
        .map_err(|e| LoadError::Policy(format!("granted_dir: {e:#}")))?;
        let mut store = Store::new(self.pre.engine(), ctx);
        store.limiter(|c| &mut c.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(self.limits.timeout));
        let plugin = self
            .pre
            .instantiate(&mut store)
            .await
            .map_err(|e| LoadError::Trap {
                during: "instantiation",
                error: e,
                stderr: String::new(),
            })?;
        Ok(Instance { store, plugin })
    }

    async fn init(&self, inst: &mut Instance) -> Result<(), LoadError> {
        inst.store.set_epoch_deadline(ticks(self.limits.timeout));
        let r = tokio::time::timeout(self.limits.timeout, inst.init(&self.config_json)).await;
        match r {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(msg))) => Err(LoadError::Config(msg)),
            Ok(Err(error)) => Err(LoadError::Trap {
                during: "init",
                error,
                stderr: stderr_suffix(&inst.store),
            }),
            Err(_) => Err(LoadError::Timeout {
                during: "init",
                limit: self.limits.timeout,
            }),
        }
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// What the guest printed to stderr, folded onto one line and bounded, for a log message.
fn stderr_suffix(store: &Store<PluginCtx>) -> String {
    let text = store.data().stderr_text();
    if text.is_empty() {
        return String::new();
    }
    let folded: String = text.lines().collect::<Vec<_>>().join(" | ");
    let bounded: String = folded.chars().take(1024).collect();
    format!(" (plugin stderr: {bounded})")
}

/// A trap's reason on one line (the trap code, or the root cause such as a memory limit);
/// the full chain with the wasm backtrace goes to the debug log.
fn trap_reason(exporter: &str, e: &wasmtime::Error) -> String {
    tracing::debug!(exporter, "plugin trap in full: {e:?}");
    match e.downcast_ref::<wasmtime::Trap>() {
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
    }
    .lines()
    .next()
    .unwrap_or_default()
    .to_string()
}

/// Contract versions this host speaks, newest first: a plugin exports
/// `ferry:plugin/exporter@VERSION` for one of them.
pub const CONTRACTS: [&str; 2] = ["0.2.0", "0.1.0"];

/// Reads a plugin's manifest without initialising it (its egress is denied).
pub async fn describe(engine: &PluginEngine, source: &PluginSource) -> Result<Manifest, LoadError> {
    probe(engine, source).await.map(|(m, _)| m)
}

/// Instantiates a plugin under the default limits and reads its manifest; also returns the
/// linear memory the instance holds by then (what it costs before it does any work).
pub async fn probe(
    engine: &PluginEngine,
    source: &PluginSource,
) -> Result<(Manifest, usize), LoadError> {
    let egress = Egress {
        exporter: source.name.as_str().into(),
        allowed: Arc::new(AllowedHosts::default()),
        secrets: Arc::new(SecretHeaders::default()),
        sender: HostSender::new(Default::default()),
        denied: Counter::default(),
    };
    let limits = InstanceLimits::default();
    let shared = Shared::new(engine, &source.name, source, egress, limits, "{}".into())?;
    let mut inst = shared.instantiate().await?;
    let manifest = shared.describe(&mut inst).await?;
    Ok((manifest, inst.store.data().limits.peak()))
}

/// One configured exporter backed by a plugin.
pub struct PluginExporter {
    shared: Shared,
    manifest: Manifest,
    signals: Vec<Signal>,
    pool: Mutex<Vec<Instance>>,
    latency: Histogram,
    faults: Counter,
    instances: Counter,
    breaker: Breaker,
    memory_peak: AtomicUsize,
}

impl PluginExporter {
    /// Compiles and pre-instantiates the plugin, reads its manifest and initialises one
    /// instance with the exporter's config (so config errors surface at load time).
    pub async fn load(
        engine: &PluginEngine,
        name: &str,
        source: &PluginSource,
        config: &ExporterConfig,
        sender: HostSender,
        telemetry: &Telemetry,
    ) -> Result<PluginExporter, LoadError> {
        let allowed = AllowedHosts::from_config(config.allowed_hosts.as_deref(), &config.config)
            .map_err(LoadError::Policy)?;
        let secrets = SecretHeaders::resolve(&config.secret_headers).map_err(LoadError::Policy)?;
        let egress = Egress {
            exporter: name.into(),
            allowed: Arc::new(allowed),
            secrets: Arc::new(secrets),
            sender,
            denied: telemetry.counter(
                "ferry_exporter_egress_denied_total",
                "Plugin HTTP requests refused by the exporter's allowed_hosts.",
                &[("exporter", name)],
            ),
        };
        let config_json =
            serde_json::to_string(&config.config).map_err(|e| LoadError::Json(e.to_string()))?;
        let limits = InstanceLimits {
            memory: config.memory,
            timeout: config.timeout,
            granted_dir: config.granted_dir.clone(),
        };
        let shared = Shared::new(engine, name, source, egress, limits, config_json)?;
        let mut first = shared.instantiate().await?;
        let manifest = shared.describe(&mut first).await?;
        let labels = [("exporter", name)];
        let signals = match &config.signals {
            None => manifest.signals.clone(),
            Some(wanted) => {
                for s in wanted {
                    if !manifest.signals.contains(s) {
                        return Err(LoadError::Signal {
                            plugin: manifest.name.clone(),
                            signal: *s,
                            supported: manifest
                                .signals
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
                wanted.clone()
            }
        };
        let instances = telemetry.counter(
            "ferry_exporter_instances_created_total",
            "Plugin instances created (a fault replaces its instance).",
            &labels,
        );
        let faults = telemetry.counter(
            "ferry_exporter_faults_total",
            "Plugin instances discarded after a trap, timeout or limit.",
            &labels,
        );
        let breaker = Breaker::new(name, &config.circuit_breaker, telemetry);
        let mut pool = Vec::new();
        match shared.init(&mut first).await {
            Ok(()) => {
                instances.inc();
                pool.push(first);
            }
            // The plugin refused its config: that is the user's to fix before starting.
            Err(e @ LoadError::Config(_)) => return Err(e),
            // A plugin that traps or hangs in `init` is faulty, not misconfigured: the daemon
            // and every other exporter run; this one retries under its circuit breaker.
            Err(fault) => {
                faults.inc();
                breaker.fault();
                tracing::error!(
                    exporter = name,
                    "{fault}; the exporter starts without an instance and retries later"
                );
            }
        }
        Ok(PluginExporter {
            shared,
            manifest,
            signals,
            pool: Mutex::new(pool),
            latency: telemetry.histogram(
                "ferry_exporter_call_duration_seconds",
                "Duration of plugin export calls.",
                &labels,
            ),
            faults,
            instances,
            breaker,
            memory_peak: AtomicUsize::new(0),
        })
    }

    /// The plugin's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signals routed to this exporter.
    pub fn signals(&self) -> &[Signal] {
        &self.signals
    }

    /// Initialised instances waiting for a call.
    pub fn idle_instances(&self) -> usize {
        self.pool.lock().expect("pool lock").len()
    }

    /// The most linear memory any instance has held at the end of a call (counting instances
    /// discarded after a fault).
    pub fn memory_peak(&self) -> usize {
        self.memory_peak.load(Ordering::Relaxed)
    }

    fn note_memory(&self, inst: &Instance) {
        self.memory_peak
            .fetch_max(inst.store.data().limits.peak(), Ordering::Relaxed);
    }

    async fn checkout(&self) -> Result<Instance, String> {
        if let Some(inst) = self.pool.lock().expect("pool lock").pop() {
            return Ok(inst);
        }
        let mut inst = self.shared.instantiate().await.map_err(|e| e.to_string())?;
        self.shared
            .init(&mut inst)
            .await
            .map_err(|e| e.to_string())?;
        self.instances.inc();
        Ok(inst)
    }

    /// Calls `shutdown` on every idle instance and drops them.
    pub async fn shutdown(&self) {
        let idle: Vec<Instance> = std::mem::take(&mut *self.pool.lock().expect("pool lock"));
        for mut inst in idle {
            inst.store.set_epoch_deadline(ticks(Duration::from_secs(5)));
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), inst.shutdown()).await
            {
                tracing::warn!(
                    exporter = self.shared.name,
                    "plugin trapped in shutdown: {e:#}"
                );
            }
        }
    }

    async fn call(&self, signal: Signal, items: u32, attempt: u32, payload: Bytes) -> Outcome {
        self.breaker.ready().await;
        let outcome = self.attempt(signal, items, attempt, payload).await;
        match &outcome {
            Outcome::Fault(_) => {
                self.faults.inc();
                self.breaker.fault();
            }
            _ => self.breaker.success(),
        }
        outcome
    }

    async fn attempt(&self, signal: Signal, items: u32, attempt: u32, payload: Bytes) -> Outcome {
        let name = &self.shared.name;
        let timeout = self.shared.limits.timeout;
        let mut inst = match self.checkout().await {
            Ok(i) => i,
            Err(e) => {
                let msg = format!("cannot create a plugin instance: {e}");
                tracing::error!(exporter = name, "{msg}");
                return Outcome::Fault(msg);
            }
        };
        inst.store.set_epoch_deadline(ticks(timeout));
        let started = Instant::now();
        let result =
            tokio::time::timeout(timeout, inst.export(signal, items, attempt, payload)).await;
        self.latency.observe(started.elapsed());
        self.note_memory(&inst);
        let result = match result {
            Ok(Ok(r)) => r,
            Ok(Err(trap)) => {
                // A trapped instance must never be entered again: drop it, the next call
                // builds a fresh one from the InstancePre.
                let msg = format!(
                    "plugin trapped: {}{}",
                    trap_reason(name, &trap),
                    stderr_suffix(&inst.store)
                );
                tracing::error!(exporter = name, "{msg}; instance discarded");
                return Outcome::Fault(msg);
            }
            Err(_) => {
                let msg = format!("export call exceeded its {timeout:?} timeout");
                tracing::error!(exporter = name, "{msg}; instance discarded");
                return Outcome::Fault(msg);
            }
        };
        self.pool.lock().expect("pool lock").push(inst);
        result
    }
}

impl Export for PluginExporter {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn encoding(&self) -> Encoding {
        self.manifest.encoding
    }

    fn export(&self, signal: Signal, items: u32, attempt: u32, payload: Bytes) -> ExportFuture<'_> {
        Box::pin(self.call(signal, items, attempt, payload))
    }
}
