//! An exporter: a plugin component, pre-instantiated, with a small pool of initialised
//! instances, called under the sandbox's limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::breaker::Breaker;
use super::contract::{Processed, World};
use super::ctx::Egress;
use super::engine::PluginEngine;
use super::instance::{CallError, Instance, Shared, stderr_suffix, trap_reason};
use super::policy::AllowedHosts;
use super::registry::PluginSource;
use super::resources::{HostUsage, IDLE_ALLOWANCE};
use super::role::{EXPORTER, Role};
use super::secrets::{SecretHeaders, SocketSecrets};
use super::sender::HostSender;
use super::text::{LogGate, LogPolicy, escape};
use crate::pipeline::Encoding;
use crate::pipeline::router::{Export, ExportFuture, Outcome};
use crate::signal::Signal;
use crate::telemetry::{Counter, Gauge, Histogram, Telemetry};

pub use super::ctx::{DEFAULT_MEMORY, InstanceLimits};
pub use super::instance::{CONTRACTS, Manifest};
pub use super::load::{ExporterSpec, LoadError};

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
    let name: Arc<str> = source.name.as_str().into();
    let egress = Egress {
        exporter: name.clone(),
        allowed: Arc::new(AllowedHosts::default()),
        secrets: Arc::new(SecretHeaders::default()),
        socket_secrets: Arc::default(),
        sender: HostSender::new(Default::default()),
        denied: Counter::default(),
        log: Arc::new(LogGate::new(name, LogPolicy::default(), Counter::default())),
    };
    let limits = InstanceLimits::default();
    let shared = Shared::new(
        &EXPORTER,
        engine,
        &source.name,
        source,
        egress,
        limits,
        "{}".into(),
    )?;
    let mut inst = shared.instantiate().await?;
    let manifest = shared.describe(&mut inst).await?;
    Ok((manifest, inst.store.data().limits.peak()))
}

/// How much longer than its calls' own limit a shutdown may take as a whole.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Why an instance was discarded: the `reason` of `ferry_exporter_faults_total`.
#[derive(Clone, Copy)]
enum Fault {
    Trap,
    Timeout,
    Memory,
    HostResources,
}

const FAULTS: [(Fault, &str); 4] = [
    (Fault::Trap, "trap"),
    (Fault::Timeout, "timeout"),
    (Fault::Memory, "memory"),
    (Fault::HostResources, "host_resources"),
];

/// Host memory seen across calls, for `/metrics` and `ferry plugin test`.
#[derive(Default)]
struct HostSeen {
    /// The most any instance held during a call.
    peak: Gauge,
    /// What the last call left held, and the most it held.
    last: Mutex<(HostUsage, HostUsage)>,
}

/// One configured exporter backed by a plugin.
pub struct PluginExporter {
    shared: Shared,
    manifest: Manifest,
    signals: Vec<Signal>,
    pool: Mutex<Vec<Instance>>,
    latency: Histogram,
    faults: [Counter; 4],
    instances: Counter,
    breaker: Breaker,
    memory_peak: AtomicUsize,
    /// The same, as a gauge.
    memory_gauge: Gauge,
    in_flight: Gauge,
    host: HostSeen,
}

/// Counts a call in flight while it lives (a call cut short by a stop is dropped, not ended).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn start(g: &'a Gauge) -> InFlight<'a> {
        g.add(1);
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl PluginExporter {
    /// Compiles and pre-instantiates the plugin, reads its manifest and initialises one
    /// instance with the exporter's config (so config errors surface at load time).
    pub async fn load(
        engine: &PluginEngine,
        name: &str,
        source: &PluginSource,
        spec: &ExporterSpec<'_>,
        sender: HostSender,
        log: LogPolicy,
        telemetry: &Telemetry,
    ) -> Result<PluginExporter, LoadError> {
        Self::load_as(
            &EXPORTER, engine, name, source, spec, sender, log, telemetry,
        )
        .await
    }

    /// [`PluginExporter::load`] in `role`: the world the plugin must implement and the names
    /// of its self-metrics ([`super::role::PROCESSOR`] for a Wasm processor).
    #[allow(clippy::too_many_arguments)]
    pub async fn load_as(
        role: &'static Role,
        engine: &PluginEngine,
        name: &str,
        source: &PluginSource,
        spec: &ExporterSpec<'_>,
        sender: HostSender,
        log: LogPolicy,
        telemetry: &Telemetry,
    ) -> Result<PluginExporter, LoadError> {
        let labels = [(role.label, name)];
        let allowed = AllowedHosts::from_config(spec.allowed_hosts, spec.settings)
            .map_err(LoadError::Policy)?;
        let secrets = SecretHeaders::resolve(spec.secret_headers).map_err(LoadError::Policy)?;
        let socket_secrets = SocketSecrets::resolve(spec.secrets).map_err(LoadError::Policy)?;
        let log_dropped = telemetry.counter(
            role.log_dropped,
            "Plugin log messages dropped by the per-plugin rate limit.",
            &labels,
        );
        let egress = Egress {
            exporter: name.into(),
            allowed: Arc::new(allowed),
            secrets: Arc::new(secrets),
            socket_secrets: Arc::new(socket_secrets),
            sender,
            denied: telemetry.counter(
                role.egress_denied,
                "Plugin HTTP requests, connections, datagrams and name lookups refused by its allowed_hosts.",
                &labels,
            ),
            log: Arc::new(LogGate::new(name.into(), log, log_dropped)),
        };
        let config_json =
            serde_json::to_string(spec.settings).map_err(|e| LoadError::Json(e.to_string()))?;
        let limits = spec.limits.clone();
        let shared = Shared::new(role, engine, name, source, egress, limits, config_json)?;
        let mut first = shared.instantiate().await?;
        let manifest = shared.describe(&mut first).await?;
        if manifest.world != role.world {
            return Err(LoadError::World {
                wanted: role.world,
                found: manifest.world,
            });
        }
        let signals = match spec.signals {
            None => manifest.signals.clone(),
            Some(wanted) => {
                if let Some(s) = wanted.iter().find(|s| !manifest.signals.contains(s)) {
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
                wanted.to_vec()
            }
        };
        let instances = telemetry.counter(
            role.instances,
            "Plugin instances created (a fault replaces its instance).",
            &labels,
        );
        let faults = FAULTS.map(|(_, reason)| {
            telemetry.counter(
                role.faults,
                "Plugin instances discarded, by reason (trap, timeout, memory: its memory cap, \
                 host_resources: its host memory or resource limit, or host memory left held \
                 after a call).",
                &[(role.label, name), ("reason", reason)],
            )
        });
        let breaker = Breaker::for_role(role, name, spec.breaker, telemetry);
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
                let kind = match fault {
                    LoadError::Timeout { .. } => Fault::Timeout,
                    _ => Fault::Trap,
                };
                faults[kind as usize].inc();
                breaker.fault();
                tracing::error!(
                    exporter = name,
                    "{fault}; the exporter starts without an instance and retries later"
                );
            }
        }
        let host = HostSeen {
            peak: telemetry.gauge(
                role.host_peak,
                "The most host memory (header fields, request and response buffers) one \
                 plugin instance held during a call.",
                &labels,
            ),
            last: Mutex::default(),
        };
        Ok(PluginExporter {
            shared,
            manifest,
            signals,
            pool: Mutex::new(pool),
            latency: telemetry.histogram(
                role.call_duration,
                "Duration of plugin export (or process) calls.",
                &labels,
            ),
            faults,
            instances,
            breaker,
            memory_peak: AtomicUsize::new(0),
            memory_gauge: telemetry.gauge(
                role.memory_peak,
                "The most linear memory one plugin instance held at the end of a call.",
                &labels,
            ),
            in_flight: telemetry.gauge(role.in_flight, "Plugin calls running now.", &labels),
            host,
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

    /// Host memory of the last call: what the instance still held after it, and the most it
    /// held during it.
    pub fn last_host_usage(&self) -> (HostUsage, HostUsage) {
        *self.host.last.lock().expect("host usage lock")
    }

    async fn checkout(&self) -> Result<Instance, LoadError> {
        if let Some(inst) = self.pool.lock().expect("pool lock").pop() {
            return Ok(inst);
        }
        let mut inst = self.shared.instantiate().await?;
        self.shared.init(&mut inst).await?;
        self.instances.inc();
        Ok(inst)
    }

    /// Calls `shutdown` on every idle instance, all at once, and drops them: each gets the
    /// exporter's `timeout`, at most `within`, and the whole at most [`SHUTDOWN_GRACE`] more;
    /// an instance that overruns is dropped and logged.
    pub async fn shutdown(&self, within: Duration) {
        let idle: Vec<Instance> = std::mem::take(&mut *self.pool.lock().expect("pool lock"));
        if idle.is_empty() {
            return;
        }
        let limit = self.shared.limits.timeout.min(within);
        let count = idle.len();
        let shared = &self.shared;
        let all = futures::future::join_all(idle.into_iter().map(|i| shared.shutdown(i, limit)));
        // Each call is bounded by `limit` and logs its own overrun; this bounds the whole when
        // a spinning guest holds the thread past its turn, a moment later so it never races
        // the calls' own timeouts.
        let whole = limit + SHUTDOWN_GRACE;
        if tokio::time::timeout(whole, all).await.is_err() {
            tracing::warn!(
                exporter = self.shared.name,
                "{count} plugin instances did not all shut down within {whole:?}; dropped"
            );
        }
    }

    async fn call(&self, signal: Signal, items: u32, attempt: u32, payload: Bytes) -> Outcome {
        self.breaker.ready().await;
        let outcome = self.attempt(signal, items, attempt, payload).await;
        match &outcome {
            Outcome::Fault(_) => self.breaker.fault(),
            _ => self.breaker.success(),
        }
        outcome
    }

    /// Records host memory after a call; false when the instance keeps too much of it to go
    /// back to the pool.
    fn note_host(&self, inst: &mut Instance) -> bool {
        let (held, peak) = inst.store.data_mut().end_call();
        *self.host.last.lock().expect("host usage lock") = (held, peak);
        if peak.bytes as i64 > self.host.peak.get() {
            self.host.peak.set(peak.bytes as i64);
        }
        held.bytes <= IDLE_ALLOWANCE
    }

    async fn attempt(&self, signal: Signal, items: u32, attempt: u32, payload: Bytes) -> Outcome {
        match self
            .run(async |inst| inst.export(signal, items, attempt, payload).await)
            .await
        {
            Ok(outcome) => self.bounded_text(outcome),
            Err(msg) => Outcome::Fault(msg),
        }
    }

    /// One `process` call on a processor plugin: what it made of the batch, or why it failed
    /// (its own error, escaped, or a fault: the instance was discarded). An open circuit fails
    /// at once rather than wait: the caller's policy decides what happens to the batch.
    pub async fn process(
        &self,
        signal: Signal,
        items: u32,
        payload: Bytes,
    ) -> Result<Processed, String> {
        if !self.breaker.admits() {
            return Err("its circuit breaker is open after repeated faults".into());
        }
        let max = self.shared.egress.log.policy().max_message_bytes;
        match self
            .run(async |inst| inst.process(signal, items, payload).await)
            .await
        {
            Ok(result) => {
                self.breaker.success();
                result.map_err(|e| format!("it returned an error: {}", escape(&e, max)))
            }
            Err(fault) => {
                self.breaker.fault();
                Err(fault)
            }
        }
    }

    /// Runs `call` on a pooled (or fresh) instance under the plugin's limits. A fault (trap,
    /// timeout, limit) discards the instance, is counted and logged, and comes back as `Err`.
    async fn run<T>(
        &self,
        call: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<T>,
    ) -> Result<T, String> {
        let name = &self.shared.name;
        let timeout = self.shared.limits.timeout;
        let _in_flight = InFlight::start(&self.in_flight);
        let mut inst = match self.checkout().await {
            Ok(i) => i,
            Err(e) => {
                let msg = format!("cannot create a plugin instance: {e}");
                self.log_error(&msg);
                let kind = match e {
                    LoadError::Timeout { .. } => Fault::Timeout,
                    _ => Fault::Trap,
                };
                self.faults[kind as usize].inc();
                return Err(msg);
            }
        };
        let started = Instant::now();
        inst.store
            .set_epoch_deadline(super::instance::ticks(timeout));
        inst.store.data_mut().begin_call();
        let result = match tokio::time::timeout(timeout, call(&mut inst)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Trap(e)),
            Err(_) => Err(CallError::Timeout),
        };
        self.latency.observe(started.elapsed());
        let peak = self
            .memory_peak
            .fetch_max(inst.store.data().limits.peak(), Ordering::Relaxed)
            .max(inst.store.data().limits.peak());
        self.memory_gauge
            .set(i64::try_from(peak).unwrap_or(i64::MAX));
        let reusable = self.note_host(&mut inst);
        let (fault, msg) = match result {
            Ok(value) => {
                if reusable {
                    self.pool.lock().expect("pool lock").push(inst);
                } else {
                    // The call is done; the instance holding host memory is not reused.
                    let (held, _) = self.last_host_usage();
                    self.faults[Fault::HostResources as usize].inc();
                    self.log_error(&format!(
                        "plugin instance still held {} host bytes in {} resources after the \
                         call (more than {IDLE_ALLOWANCE}); instance discarded",
                        held.bytes, held.resources
                    ));
                }
                return Ok(value);
            }
            Err(CallError::Timeout) => (
                Fault::Timeout,
                format!("call exceeded its {timeout:?} timeout"),
            ),
            Err(CallError::Trap(trap)) => match inst.store.data_mut().host_fault() {
                Some(held) => {
                    let limits = self.shared.limits.host;
                    (
                        Fault::HostResources,
                        format!(
                            "plugin exceeded its host resource limit: {} bytes in {} resources \
                             (host_memory {}, max_resources {})",
                            held.bytes, held.resources, limits.bytes, limits.resources
                        ),
                    )
                }
                None => {
                    let reason = trap_reason(name, &trap);
                    // An epoch interrupt is the CPU side of the call's deadline.
                    let kind = if trap.downcast_ref() == Some(&wasmtime::Trap::Interrupt) {
                        Fault::Timeout
                    } else if reason.contains("growing memory") {
                        Fault::Memory
                    } else {
                        Fault::Trap
                    };
                    let stderr = stderr_suffix(&inst.store.data().stderr_tail());
                    (kind, format!("plugin trapped: {reason}{stderr}"))
                }
            },
        };
        // A failed instance must never be entered again: drop it, the next call builds a
        // fresh one from the InstancePre.
        self.faults[fault as usize].inc();
        self.log_error(&format!("{msg}; instance discarded"));
        Err(msg)
    }

    /// Logs `msg` tagged with the plugin's name under its role's label.
    fn log_error(&self, msg: &str) {
        let name = self.shared.name.as_str();
        match self.shared.role.world {
            World::Exporter => tracing::error!(exporter = name, "{msg}"),
            World::Processor => tracing::error!(processor = name, "{msg}"),
        }
    }

    /// The plugin's message in `outcome`, escaped and cut for the log.
    fn bounded_text(&self, outcome: Outcome) -> Outcome {
        let max = self.shared.egress.log.policy().max_message_bytes;
        match outcome {
            Outcome::Retryable(m) => Outcome::Retryable(escape(&m, max)),
            Outcome::Partial(n, m) => Outcome::Partial(n, escape(&m, max)),
            Outcome::Permanent(m) => Outcome::Permanent(escape(&m, max)),
            other => other,
        }
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
