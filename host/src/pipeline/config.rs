//! The pipeline's own config sections, `[pipeline]` and `[queue]`, with their validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{de_bytes, de_duration};

/// `[pipeline]`: batching and queueing, per signal.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A batch is cut when it holds this many items...
    #[serde(default = "default_batch_items")]
    pub batch_max_items: u32,
    /// ...or when its first item has waited this long.
    #[serde(default = "default_batch_timeout", deserialize_with = "de_duration")]
    pub batch_timeout: Duration,
    /// Memory budget of each signal's queue (memory mode); past it, `queue.when_full` applies.
    #[serde(default = "default_queue_bytes", deserialize_with = "de_bytes")]
    pub queue_max_bytes: usize,
    /// On SIGTERM/SIGINT, how long exporters may keep draining the queues before the daemon
    /// exits (what is left stays on disk in durable mode, and is reported lost in memory mode).
    #[serde(default = "default_drain_timeout", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// The ingest chain: processors (defined under `[processors]`) applied in order to every
    /// accepted request before it is queued. Reloadable.
    #[serde(default)]
    pub processors: Vec<String>,
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_batch_items() -> u32 {
    8192
}
fn default_batch_timeout() -> Duration {
    Duration::from_millis(200)
}
fn default_queue_bytes() -> usize {
    64 << 20
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max_items: default_batch_items(),
            batch_timeout: default_batch_timeout(),
            queue_max_bytes: default_queue_bytes(),
            drain_timeout: default_drain_timeout(),
            processors: Vec::new(),
        }
    }
}

/// Where queued data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// In memory: fast, lost if the process dies.
    #[default]
    Memory,
    /// On disk: receivers acknowledge only what is synced; survives crashes and restarts.
    Durable,
}

/// What happens to a request when its signal's queue is at its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse it so the sender retries later (gRPC RESOURCE_EXHAUSTED with RetryInfo, HTTP 429
    /// with Retry-After).
    #[default]
    Backpressure,
    /// Acknowledge it and drop it, counted in `ferry_queue_dropped_items_total`: for senders
    /// that must never block and can afford to lose data.
    DropNewest,
}

/// `[queue]`: memory or disk, and the policy at the budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// `memory` (default) or `durable`.
    #[serde(default)]
    pub mode: QueueMode,
    /// Directory of the durable queue (one subdirectory per signal); required when durable.
    pub dir: Option<PathBuf>,
    /// Disk budget of each signal's durable queue.
    #[serde(default = "default_disk_bytes", deserialize_with = "de_bytes")]
    pub max_bytes: usize,
    /// Size at which a segment file is closed and a new one started; disk space is freed a
    /// whole segment at a time, once every exporter is past it.
    #[serde(default = "default_segment_bytes", deserialize_with = "de_bytes")]
    pub segment_bytes: usize,
    /// `backpressure` (default) or `drop_newest`.
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_disk_bytes() -> usize {
    1 << 30
}
fn default_segment_bytes() -> usize {
    16 << 20
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            mode: QueueMode::default(),
            dir: None,
            max_bytes: default_disk_bytes(),
            segment_bytes: default_segment_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

impl QueueConfig {
    /// Where the exporter `name`'s processors keep what must outlive a crash along with the
    /// queue: a directory of its own in a durable queue's, none in memory.
    pub fn exporter_state(&self, name: &str) -> Option<PathBuf> {
        match (self.mode, &self.dir) {
            (QueueMode::Durable, Some(dir)) => Some(
                dir.join("exporters")
                    .join(crate::units::file_name(name, "d")),
            ),
            _ => None,
        }
    }

    /// The byte budget of each signal's queue in this mode.
    pub fn budget(&self, pipeline: &PipelineConfig) -> usize {
        match self.mode {
            QueueMode::Memory => pipeline.queue_max_bytes,
            QueueMode::Durable => self.max_bytes,
        }
    }
}

impl PipelineConfig {
    /// Adds what is wrong with `[pipeline]`, and `[queue]` (whose budget depends on it), to
    /// `errors`.
    pub fn check(&self, q: &QueueConfig, errors: &mut Vec<String>) {
        if self.batch_max_items == 0 {
            errors.push("pipeline.batch_max_items: must be at least 1".into());
        }
        if self.batch_timeout.is_zero() {
            errors.push("pipeline.batch_timeout: must be greater than zero".into());
        }
        if self.queue_max_bytes < 64 << 10 {
            errors.push("pipeline.queue_max_bytes: must be at least 64KiB".into());
        }
        if self.drain_timeout.is_zero() {
            errors.push("pipeline.drain_timeout: must be greater than zero".into());
        }
        if q.mode == QueueMode::Durable {
            if q.dir.is_none() {
                errors.push("queue.dir: required when queue.mode = \"durable\"".into());
            }
            if q.segment_bytes < 64 << 10 {
                errors.push("queue.segment_bytes: must be at least 64KiB".into());
            }
            if q.max_bytes < 4 * q.segment_bytes {
                errors.push(format!(
                    "queue.max_bytes: must be at least 4 segments ({} bytes), since disk is \
                     freed a segment at a time",
                    4 * q.segment_bytes
                ));
            }
        }
    }
}
