//! What the status page draws that the metrics do not say: the pipeline as configured (the
//! ingest chain, the exporters and their chains, the queue's mode) and the reloads so far. The
//! daemon builds it from its config and updates it on every reload; the admin endpoint reads
//! it through a `watch` channel.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::Serialize;

/// Reloads remembered.
const RELOADS: usize = 20;

/// The pipeline as configured, and the reload history.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// Whether the daemon is started: its plugins loaded, its receivers listening.
    pub ready: bool,
    /// The config file, if the daemon runs on one.
    pub config_file: Option<String>,
    /// When the daemon started (Unix ms).
    pub started_unix_ms: i64,
    /// `memory` or `durable`.
    pub queue_mode: String,
    /// The ingest chain's processors, in order.
    pub ingest: Vec<ProcessorLayout>,
    /// The exporters.
    pub exporters: Vec<ExporterLayout>,
    /// The last reloads, oldest first.
    pub reloads: VecDeque<Reload>,
}

/// A processor in a chain.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessorLayout {
    /// Its name (`[processors.NAME]`).
    pub name: String,
    /// Its kind.
    pub kind: String,
}

/// An exporter.
#[derive(Debug, Clone, Serialize)]
pub struct ExporterLayout {
    /// Its name (`[exporters.NAME]`).
    pub name: String,
    /// The plugin it runs.
    pub plugin: String,
    /// The signals it takes.
    pub signals: Vec<String>,
    /// Its chain's processors, in order.
    pub processors: Vec<ProcessorLayout>,
    /// What its plugin is and may use.
    pub component: Option<PluginLayout>,
}

/// A running plugin: what it is, where it came from, and its caps.
#[derive(Debug, Clone, Serialize)]
pub struct PluginLayout {
    /// Its manifest's name and version.
    pub name: String,
    /// Its manifest's version.
    pub version: String,
    /// The contract version it implements.
    pub contract: String,
    /// `exporter` or `processor`.
    pub world: String,
    /// `built-in`, `bundled`, or the file it was loaded from.
    pub origin: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// Cap of an instance's linear memory.
    pub memory_cap_bytes: u64,
    /// Cap of the host memory an instance may hold.
    pub host_memory_cap_bytes: u64,
}

/// One reload.
#[derive(Debug, Clone, Serialize)]
pub struct Reload {
    /// When (Unix ms).
    pub at_unix_ms: i64,
    /// `applied`, or why not (`invalid`, `load_failed`).
    pub result: String,
    /// What changed (`added exporter x`, ...), or the error.
    pub detail: String,
}

/// Milliseconds since the Unix epoch of `t`.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Layout {
    /// Records a reload, forgetting the oldest past the last 20.
    pub fn reloaded(&mut self, result: &str, detail: String) {
        if self.reloads.len() == RELOADS {
            self.reloads.pop_front();
        }
        self.reloads.push_back(Reload {
            at_unix_ms: unix_ms(SystemTime::now()),
            result: result.to_string(),
            detail,
        });
    }
}
