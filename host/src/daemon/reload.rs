//! Hot reload: SIGHUP, or a change to the config file or the plugin directory, re-reads the
//! config and swaps the exporters that changed ([`ExporterSet`]). A config that fails
//! validation or a plugin that fails to load leaves everything running as it was; the reason
//! is logged and the outcome counted in `ferry_config_reloads_total{result}`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::exporters::ExporterSet;
use crate::admin::layout::Layout;
use crate::config::Config;
use crate::processor::{Chain, IngestChain};
use crate::telemetry::{Counter, Gauge, Telemetry};

/// How often the config file and plugin directory are checked for changes.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Re-reads the config file and applies it.
pub struct Reloader {
    path: PathBuf,
    /// The receivers a reloaded config may enable (this executable's).
    carried: Vec<String>,
    current: Config,
    /// The ingest chain the receivers run.
    chain: Arc<IngestChain>,
    telemetry: Arc<Telemetry>,
    plugin_dir: Arc<Mutex<Option<PathBuf>>>,
    ok: Counter,
    invalid: Counter,
    load_failed: Counter,
    last_ok: Gauge,
    /// The layout the status page draws, with the reload history.
    layout: tokio::sync::watch::Sender<Layout>,
}

impl Reloader {
    /// A reloader for the config at `path`, which is running as `current` in an executable
    /// that may start the receivers `carried`.
    pub fn new(
        path: PathBuf,
        current: Config,
        carried: Vec<String>,
        chain: Arc<IngestChain>,
        telemetry: &Arc<Telemetry>,
        layout: tokio::sync::watch::Sender<Layout>,
    ) -> Self {
        let result = |r: &str| {
            telemetry.counter(
                "ferry_config_reloads_total",
                "Config reloads, by result (ok, invalid: the config failed validation, \
                 load_failed: a plugin failed to load; both keep the running config).",
                &[("result", r)],
            )
        };
        let last_ok = telemetry.gauge(
            "ferry_config_last_reload_successful",
            "1 if the last reload was applied (or none was tried), 0 if it was rejected.",
            &[],
        );
        last_ok.set(1);
        Reloader {
            path,
            carried,
            plugin_dir: Arc::new(Mutex::new(current.plugins.dir.clone())),
            current,
            chain,
            telemetry: telemetry.clone(),
            ok: result("ok"),
            invalid: result("invalid"),
            load_failed: result("load_failed"),
            last_ok,
            layout,
        }
    }

    /// Reloads because of `why` (a signal, a file change).
    pub async fn reload(&mut self, set: &mut ExporterSet, why: &str) {
        tracing::info!(path = %self.path.display(), "reloading the config ({why})");
        let config = match Config::load_for(&self.path, &self.carried) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload rejected, the running config stays: {e}");
                self.invalid.inc();
                self.last_ok.set(0);
                self.history("invalid", e.to_string());
                return;
            }
        };
        if config.fixed_sections() != self.current.fixed_sections() {
            tracing::warn!(
                "reload: changes to [receivers], [pipeline] (but its processors), [queue], \
                 [admin] and [runtime] take effect on restart; applying the exporter and \
                 processor changes only"
            );
        }
        let plan = match set.prepare(&config).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reload rejected, the running exporters stay: {e}");
                self.load_failed.inc();
                self.last_ok.set(0);
                self.history("load_failed", e.to_string());
                return;
            }
        };
        // The chain is rebuilt when its list or one of its processors' definitions changed,
        // or when it runs a Wasm processor (whose plugin may have changed).
        let (old, new) = (&self.current, &config);
        let changed = new.pipeline.processors != old.pipeline.processors
            || new
                .pipeline
                .processors
                .iter()
                .any(|n| new.processors.get(n) != old.processors.get(n))
            || !crate::processor::wasm_plugins(&new.pipeline.processors, &new.processors)
                .is_empty();
        let new_chain = if changed {
            let env = super::exporters::wasm_env(new, set.engine());
            match Chain::build(
                &new.pipeline.processors,
                &new.processors,
                &self.telemetry,
                Some(&env),
                None,
            )
            .await
            {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(
                        "reload rejected, the running config stays: {}",
                        e.join("; ")
                    );
                    self.load_failed.inc();
                    self.last_ok.set(0);
                    self.history("load_failed", e.join("; "));
                    return;
                }
            }
        } else {
            None
        };
        *self.plugin_dir.lock().expect("plugin dir lock") = config.plugins.dir.clone();
        self.current.exporters = config.exporters;
        self.current.plugins = config.plugins;
        self.current.processors = config.processors;
        self.ok.inc();
        self.last_ok.set(1);
        if let Some(chain) = new_chain {
            tracing::info!(processors = ?config.pipeline.processors, "reload: the ingest chain is swapped");
            self.current.pipeline.processors = config.pipeline.processors;
            self.chain.swap(chain);
        }
        if plan.is_empty() {
            tracing::info!("reload: no exporter changed");
            self.relayout(set, "no exporter changed".into());
            return;
        }
        let changes = set.apply(plan);
        tracing::info!(
            added = ?changes.added,
            changed = ?changes.changed,
            removed = ?changes.removed,
            unchanged = ?changes.unchanged,
            "reload applied"
        );
        let mut detail = Vec::new();
        for (what, names) in [
            ("added", &changes.added),
            ("changed", &changes.changed),
            ("removed", &changes.removed),
        ] {
            if !names.is_empty() {
                detail.push(format!("{what} {}", names.join(", ")));
            }
        }
        self.relayout(set, format!("exporters {}", detail.join("; ")));
    }

    /// Records a rejected reload for the status page.
    fn history(&self, result: &str, detail: String) {
        self.layout.send_modify(|l| l.reloaded(result, detail));
    }

    /// Lays the pipeline out anew after an applied reload, and records it.
    fn relayout(&self, set: &ExporterSet, detail: String) {
        self.layout.send_modify(|l| {
            let started = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(l.started_unix_ms).unwrap_or(0));
            let reloads = std::mem::take(&mut l.reloads);
            *l = super::layout::layout(&self.current, set, Some(&self.path), started);
            l.reloads = reloads;
            l.ready = true;
            l.reloaded("applied", detail);
        });
    }

    /// Watches the config file and the plugin directory, sending on `tx` when either changes.
    pub fn watch(&self, tx: mpsc::Sender<&'static str>) {
        let path = self.path.clone();
        let dir = self.plugin_dir.clone();
        tokio::spawn(async move {
            let snapshot = |dir: &Option<PathBuf>| (stamp(&path), dir.as_deref().map(listing));
            let mut last = snapshot(&dir.lock().expect("plugin dir lock").clone());
            loop {
                tokio::time::sleep(POLL_EVERY).await;
                let now = snapshot(&dir.lock().expect("plugin dir lock").clone());
                if now.0 != last.0 {
                    if tx.send("the config file changed").await.is_err() {
                        return;
                    }
                } else if now.1 != last.1 && tx.send("the plugin directory changed").await.is_err()
                {
                    return;
                }
                last = now;
            }
        });
    }
}

type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The `.wasm` files of a directory with their size and modification time.
fn listing(dir: &Path) -> Vec<(PathBuf, Stamp)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .map(|p| {
            let s = stamp(&p);
            (p, s)
        })
        .collect();
    files.sort();
    files
}
