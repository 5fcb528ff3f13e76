//! The running exporters: started from the config, swapped in place on reload, drained on
//! shutdown.
//!
//! A reload is two steps so that a bad config or plugin changes nothing: [`ExporterSet::prepare`]
//! loads every new or changed exporter while the old ones keep running, and only if all load
//! does [`ExporterSet::apply`] swap them, without waiting on any plugin: the old exporters
//! finish their attempts in hand and shut down in the background. An exporter keeps its cursor
//! (named after it) across a swap, so a changed exporter resumes where the old one stopped
//! (its workers start once the old ones have); a removed one's cursor is dropped (unless it is
//! added back before its old self has stopped, when it resumes from it); a new one starts at
//! the head of its queues.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigErrors, ExporterConfig};
use crate::pipeline::Pipeline;
use crate::pipeline::router::{Stop, Worker};
use crate::plugin::registry::{self, PluginSource};
use crate::plugin::sender::{HostSender, SenderLimits};
use crate::plugin::{PluginEngine, PluginExporter};
use crate::processor::{Chain, QueueView, WasmEnv};
use crate::signal::Signal;
use crate::telemetry::Telemetry;

/// One exporter loaded and ready to start.
pub struct Loaded {
    exporter: Arc<PluginExporter>,
    fingerprint: u64,
    /// Its settings (retry policy, concurrency).
    config: ExporterConfig,
    /// Its processors, if it has any.
    chain: Option<Arc<Chain>>,
    /// Where its plugin came from, and its digest (hex).
    origin: (String, String),
}

impl Loaded {
    /// The exporter.
    pub fn exporter(&self) -> &Arc<PluginExporter> {
        &self.exporter
    }
}

struct Running {
    loaded: Loaded,
    stop: watch::Sender<Stop>,
    workers: Vec<JoinHandle<()>>,
}

/// An exporter stopping in the background.
struct Retiring {
    name: String,
    /// Turns true once its workers have stopped and its cursors are settled.
    done: watch::Receiver<bool>,
    /// Signals whose cursor it closes once its workers have stopped; a successor of the same
    /// name that reads a signal takes it off, and resumes from that cursor.
    close: Arc<Mutex<Vec<Signal>>>,
    task: JoinHandle<()>,
}

/// What [`ExporterSet::prepare`] loaded, to hand to [`ExporterSet::apply`].
pub struct Plan {
    start: BTreeMap<String, Loaded>,
    remove: Vec<String>,
    unchanged: Vec<String>,
}

impl Plan {
    /// Whether applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.remove.is_empty()
    }
}

/// What [`ExporterSet::apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Exporters started for the first time.
    pub added: Vec<String>,
    /// Exporters replaced by a new version (config or plugin).
    pub changed: Vec<String>,
    /// Exporters stopped for good.
    pub removed: Vec<String>,
    /// Exporters left running as they were.
    pub unchanged: Vec<String>,
}

/// The exporters running against one pipeline.
pub struct ExporterSet {
    engine: Arc<PluginEngine>,
    telemetry: Arc<Telemetry>,
    pipeline: Arc<Pipeline>,
    running: BTreeMap<String, Running>,
    /// Exporters stopping in the background (replaced or removed by a reload).
    retiring: Vec<Retiring>,
}

/// Identifies what an exporter was built from: its config, the definitions of its
/// processors, the shared HTTP limits and the plugin's bytes. A change in any of them means a
/// new instance.
fn fingerprint(
    config: &Config,
    ec: &ExporterConfig,
    source: &PluginSource,
    engine: &PluginEngine,
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let processors: Vec<_> = ec
        .processors
        .iter()
        .map(|n| config.processors.get(n))
        .collect();
    // A Wasm processor's new build replaces the exporter like its own plugin's would.
    for plugin in crate::processor::wasm_plugins(&ec.processors, &config.processors) {
        if let Ok(p) = registry::find(engine.catalog(), plugin, config.plugins.dir.as_deref()) {
            p.digest.hash(&mut h);
        }
    }
    // Serialised data, not `Debug` text: equal configs always hash alike, whatever their
    // types print.
    serde_json::to_vec(&(ec, &config.plugins.http, processors))
        .expect("configs serialise")
        .hash(&mut h);
    source.digest.hash(&mut h);
    h.finish()
}

/// What Wasm processors of `config` are loaded with.
pub fn wasm_env<'a>(config: &Config, engine: &'a PluginEngine) -> WasmEnv<'a> {
    WasmEnv {
        engine,
        dir: config.plugins.dir.clone(),
        sender: sender(config),
        log: config.plugins.log.policy(),
    }
}

fn sender(config: &Config) -> HostSender {
    let http = &config.plugins.http;
    HostSender::new(SenderLimits {
        connect: http.connect_timeout,
        first_byte: http.first_byte_timeout,
        total: http.total_timeout,
        max_response_bytes: http.max_response_bytes,
    })
}

/// Loads the exporters of `config`, except those whose fingerprint `keep` already has (they
/// are returned as unchanged), reporting all failures at once.
async fn load(
    config: &Config,
    engine: &PluginEngine,
    telemetry: &Telemetry,
    keep: &BTreeMap<String, u64>,
    skip_faulty: bool,
) -> Result<(BTreeMap<String, Loaded>, Vec<String>), ConfigErrors> {
    let sender = sender(config);
    let mut loaded = BTreeMap::new();
    let mut unchanged = Vec::new();
    let mut errors = Vec::new();
    for (name, ec) in &config.exporters {
        let source =
            match registry::find(engine.catalog(), &ec.plugin, config.plugins.dir.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("exporters.{name}.plugin: {e}"));
                    continue;
                }
            };
        let fingerprint = fingerprint(config, ec, &source, engine);
        if keep.get(name) == Some(&fingerprint) {
            unchanged.push(name.clone());
            continue;
        }
        let env = wasm_env(config, engine);
        let state = config.queue.exporter_state(name);
        let queue = QueueView {
            state: state.as_deref(),
            budget: config.queue.budget(&config.pipeline),
        };
        let built = Chain::build(
            &ec.processors,
            &config.processors,
            telemetry,
            Some(&env),
            Some(&queue),
        );
        let chain = match built.await {
            Ok(c) if c.is_empty() => None,
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                errors.extend(
                    e.into_iter()
                        .map(|e| format!("exporters.{name}.processors: {e}")),
                );
                continue;
            }
        };
        let log = config.plugins.log.policy();
        match PluginExporter::load(
            engine,
            name,
            &source,
            &ec.spec(),
            sender.clone(),
            log,
            telemetry,
        )
        .await
        {
            Ok(e) => {
                loaded.insert(
                    name.clone(),
                    Loaded {
                        exporter: Arc::new(e),
                        fingerprint,
                        config: ec.clone(),
                        chain,
                        origin: (
                            source.origin.to_string(),
                            source.digest.iter().map(|b| format!("{b:02x}")).collect(),
                        ),
                    },
                );
            }
            // A plugin that traps or hangs before it can even say what it is cannot run;
            // at start, the daemon runs without it rather than not at all.
            Err(e) if skip_faulty && e.is_fault_before_init() => tracing::error!(
                exporter = name.as_str(),
                "plugin {} from {}: {e}; the daemon starts without this exporter (fix the \
                 plugin and reload)",
                source.name,
                source.origin
            ),
            Err(e) => errors.push(format!(
                "exporters.{name} (plugin {} from {}): {e}",
                source.name, source.origin
            )),
        }
    }
    if errors.is_empty() {
        Ok((loaded, unchanged))
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Loads every exporter in `config`, reporting all failures at once (for `ferry validate`).
pub async fn load_all(
    config: &Config,
    engine: &PluginEngine,
    telemetry: &Telemetry,
) -> Result<BTreeMap<String, Loaded>, ConfigErrors> {
    load(config, engine, telemetry, &BTreeMap::new(), false)
        .await
        .map(|(l, _)| l)
}

impl ExporterSet {
    /// An empty set feeding from `pipeline`.
    pub fn new(
        engine: Arc<PluginEngine>,
        telemetry: Arc<Telemetry>,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        ExporterSet {
            engine,
            telemetry,
            pipeline,
            running: BTreeMap::new(),
            retiring: Vec::new(),
        }
    }

    /// The plugin engine exporters and Wasm processors are loaded with.
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Names of the running exporters.
    pub fn names(&self) -> Vec<&str> {
        self.running.keys().map(String::as_str).collect()
    }

    /// What the plugin of exporter `name` is, for the status page.
    pub fn plugin_layout(&self, name: &str) -> Option<crate::admin::layout::PluginLayout> {
        let r = self.running.get(name)?;
        let m = r.loaded.exporter.manifest();
        Some(crate::admin::layout::PluginLayout {
            name: m.name.clone(),
            version: m.version.clone(),
            contract: m.contract.to_string(),
            world: m.world.as_str().to_string(),
            origin: r.loaded.origin.0.clone(),
            digest: r.loaded.origin.1.clone(),
            memory_cap_bytes: r.loaded.config.memory as u64,
            host_memory_cap_bytes: r.loaded.config.host_memory as u64,
        })
    }

    /// Names of the running exporters that take `signal`.
    pub fn readers(&self, signal: Signal) -> Vec<String> {
        self.running
            .iter()
            .filter(|(_, r)| r.loaded.exporter.signals().contains(&signal))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Loads what `config` adds or changes; nothing running is touched, and any failure
    /// fails the whole plan.
    pub async fn prepare(&self, config: &Config) -> Result<Plan, ConfigErrors> {
        self.prepare_with(config, false).await
    }

    /// [`ExporterSet::prepare`] for the daemon's start: an exporter whose plugin traps or
    /// hangs before `init` is logged and left out instead of failing the start.
    pub async fn prepare_start(&self, config: &Config) -> Result<Plan, ConfigErrors> {
        self.prepare_with(config, true).await
    }

    async fn prepare_with(&self, config: &Config, skip_faulty: bool) -> Result<Plan, ConfigErrors> {
        let keep: BTreeMap<String, u64> = self
            .running
            .iter()
            .map(|(n, r)| (n.clone(), r.loaded.fingerprint))
            .collect();
        let (start, unchanged) =
            load(config, &self.engine, &self.telemetry, &keep, skip_faulty).await?;
        let remove = self
            .running
            .keys()
            .filter(|n| !config.exporters.contains_key(*n))
            .cloned()
            .collect();
        Ok(Plan {
            start,
            remove,
            unchanged,
        })
    }

    /// Swaps in what `plan` loaded, without waiting on any plugin: a replaced exporter
    /// finishes the attempt in hand in the background and its successor resumes from the same
    /// cursor once it has (a batch cut short is exported again), so nothing is skipped; removed
    /// and replaced plugins shut down in the background.
    pub fn apply(&mut self, plan: Plan) -> Changes {
        let mut changes = Changes {
            unchanged: plan.unchanged,
            ..Default::default()
        };
        for (name, loaded) in plan.start {
            // Subscribe the successor before the predecessor lets go, so its signals are never
            // without an exporter (which would refuse data meanwhile).
            for &s in loaded.exporter.signals() {
                self.pipeline.subscribe(s);
            }
            let after = match self.running.remove(&name) {
                Some(old) => {
                    let gone: Vec<Signal> = old
                        .loaded
                        .exporter
                        .signals()
                        .iter()
                        .copied()
                        .filter(|s| !loaded.exporter.signals().contains(s))
                        .collect();
                    changes.changed.push(name.clone());
                    Some(self.retire(&name, old, &gone))
                }
                None => {
                    changes.added.push(name.clone());
                    // Removed a moment ago and back already: it resumes where its old self
                    // stops, like a changed exporter, once the old workers are done.
                    self.retiring
                        .iter()
                        .rev()
                        .find(|r| r.name == name)
                        .map(|r| {
                            let signals = loaded.exporter.signals();
                            r.close
                                .lock()
                                .expect("close lock")
                                .retain(|s| !signals.contains(s));
                            r.done.clone()
                        })
                }
            };
            self.start(name, loaded, after);
        }
        for name in plan.remove {
            if let Some(old) = self.running.remove(&name) {
                let signals = old.loaded.exporter.signals().to_vec();
                self.retire(&name, old, &signals);
                changes.removed.push(name);
            }
        }
        changes
    }

    /// Starts one worker per signal of an exporter that is not running yet; with `after`, the
    /// workers open their cursors only once it says the predecessor's workers have stopped.
    fn start(&mut self, name: String, loaded: Loaded, after: Option<watch::Receiver<bool>>) {
        let (stop, rx) = watch::channel(Stop::Run);
        let workers = loaded
            .exporter
            .signals()
            .iter()
            .map(|&signal| {
                let exporter = loaded.exporter.clone();
                let queue = self.pipeline.queue(signal);
                let retry = loaded.config.retry.clone();
                let concurrency = loaded.config.concurrency_for(signal);
                let telemetry = self.telemetry.clone();
                let chain = loaded.chain.clone();
                let (rx, after) = (rx.clone(), after.clone());
                tokio::spawn(async move {
                    if let Some(mut done) = after {
                        // An error means the predecessor's task is gone: it is done too.
                        let _ = done.wait_for(|d| *d).await;
                    }
                    let mut worker =
                        Worker::new(exporter, queue, signal, retry, concurrency, &telemetry);
                    if let Some(chain) = chain {
                        worker = worker.with_processors(chain);
                    }
                    worker.run(rx).await
                })
            })
            .collect();
        let m = loaded.exporter.manifest();
        tracing::info!(
            exporter = name.as_str(),
            plugin = %m.name,
            version = %m.version,
            contract = m.contract,
            signals = ?loaded.exporter.signals().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "exporter ready"
        );
        self.running.insert(
            name,
            Running {
                loaded,
                stop,
                workers,
            },
        );
    }

    /// Stops an exporter in the background: its workers finish the attempt in hand, then its
    /// cursors on `close` (signals nobody of that name reads any more) are closed and its
    /// plugin shut down. The receiver turns true once the workers have stopped and the cursors
    /// are settled: from then on, a successor of the same name may open them.
    fn retire(&mut self, name: &str, old: Running, close: &[Signal]) -> watch::Receiver<bool> {
        let Running {
            loaded,
            stop,
            workers,
        } = old;
        let _ = stop.send(Stop::Now);
        let (done_tx, done) = watch::channel(false);
        let close = Arc::new(Mutex::new(close.to_vec()));
        let pipeline = self.pipeline.clone();
        let (task_name, task_close) = (name.to_string(), close.clone());
        let task = tokio::spawn(async move {
            // A worker whose stop channel closes ends at once, cutting its attempt short:
            // the sender lives until they have finished.
            for w in workers {
                let _ = w.await;
            }
            drop(stop);
            let exporter = &loaded.exporter;
            for &s in exporter.signals() {
                pipeline.unsubscribe(s);
            }
            for s in task_close.lock().expect("close lock").drain(..) {
                pipeline.queue(s).close_cursor(&task_name);
            }
            let _ = done_tx.send(true);
            exporter.shutdown(loaded.config.timeout).await;
        });
        self.retiring.retain(|r| !r.task.is_finished());
        self.retiring.push(Retiring {
            name: name.to_string(),
            done: done.clone(),
            close,
            task,
        });
        done
    }

    /// Lets every exporter export what is queued, for at most `deadline`; then stops them where
    /// they are and shuts their plugins down in what is left of it (at least
    /// [`SHUTDOWN_FLOOR`]). Returns whether everything was exported.
    pub async fn drain(self, deadline: Duration) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        let mut stops = Vec::new();
        let mut exporters = Vec::new();
        let mut workers: Vec<JoinHandle<()>> = self.retiring.into_iter().map(|r| r.task).collect();
        for (_, r) in self.running {
            let _ = r.stop.send(Stop::Drain);
            stops.push(r.stop);
            exporters.push(r.loaded.exporter);
            workers.extend(r.workers);
        }
        let mut waiting = std::pin::pin!(futures::future::join_all(workers));
        let drained = tokio::time::timeout_at(end, &mut waiting).await.is_ok();
        if !drained {
            for stop in &stops {
                let _ = stop.send(Stop::Now);
            }
            // An attempt in flight gets a moment to finish; then the runtime ends it.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut waiting).await;
        }
        let left = end
            .saturating_duration_since(tokio::time::Instant::now())
            .max(SHUTDOWN_FLOOR);
        futures::future::join_all(exporters.iter().map(|e| e.shutdown(left))).await;
        drained
    }
}

/// The least time plugins get to shut down at exit, even when the drain used up its deadline.
pub const SHUTDOWN_FLOOR: Duration = Duration::from_secs(1);
