//! The native hot path between receivers and exporters: batcher → queue → router.
//!
//! Receivers call [`Pipeline::accept`] with validated OTLP request bytes. In memory mode the
//! batcher appends them to the open batch of their signal and seals it into the signal's queue
//! when it holds `batch_max_items` items or its first item has waited `batch_timeout`. In
//! durable mode each request is appended to the signal's log on disk and acknowledged once
//! synced; exporters read the log back in batches of up to `batch_max_items`. The router runs
//! one worker per (exporter, signal), each reading the queue from its own cursor.

pub mod config;
pub mod durable;
pub mod lag;
pub mod queue;
pub mod retry;
pub mod router;
pub mod segment_log;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::signal::Signal;
use crate::telemetry::{Counter, Telemetry};
use config::{PipelineConfig, QueueConfig, QueueMode, WhenFull};
use durable::{AppendError, DurableQueue};
pub use queue::{Batch, Encoding, MemoryQueue, Queue, QueueFull};

/// Why the pipeline refused a request.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No exporter is configured for the signal, so the data would have nowhere to go.
    #[error("no exporter is configured for {0}")]
    NoExporter(Signal),
    /// The signal's queue is at its byte budget: the sender should retry later.
    #[error("{0}")]
    QueueFull(#[from] QueueFull),
    /// The durable queue cannot write or sync: the sender should retry later.
    #[error("{0}")]
    Storage(String),
}

/// The durable queue of a signal could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the durable {signal} queue in {}: {source}", dir.display())]
pub struct OpenError {
    signal: Signal,
    dir: PathBuf,
    source: std::io::Error,
}

#[derive(Default)]
struct Open {
    parts: Vec<Bytes>,
    bytes: usize,
    items: u32,
    started: Option<Instant>,
}

impl Open {
    fn seal(&mut self, signal: Signal) -> Batch {
        let open = std::mem::take(self);
        Batch::new(signal, open.items, queue::concat(open.parts, open.bytes))
    }
}

struct Lane {
    signal: Signal,
    queue: Arc<dyn Queue>,
    /// The same queue, in durable mode.
    durable: Option<Arc<DurableQueue>>,
    open: Mutex<Open>,
    /// Wakes the timer when a batch opens.
    opened: Notify,
    subscribers: AtomicUsize,
    batches_by_size: Counter,
    batches_by_time: Counter,
    /// Items acknowledged and dropped under `when_full = "drop_newest"`.
    dropped: Counter,
}

impl Lane {
    fn seal_into_queue(&self, open: &mut Open, by: &Counter) {
        if open.items == 0 && open.parts.is_empty() {
            return;
        }
        let batch = Arc::new(open.seal(self.signal));
        // The budget was checked under this same lock before the parts were added, and the
        // queue only shrinks concurrently, so this append always fits.
        if let Err(e) = self.queue.append(batch) {
            tracing::error!(signal = %self.signal, "batch lost: {e}");
        }
        by.inc();
    }
}

/// The batcher and queues of all three signals.
pub struct Pipeline {
    lanes: [Lane; 3],
    config: PipelineConfig,
    when_full: WhenFull,
}

impl Pipeline {
    /// Builds the queues (memory, or durable: opened and recovered from disk) and batchers of
    /// every signal. Needs a Tokio runtime.
    pub fn new(
        config: &PipelineConfig,
        queue: &QueueConfig,
        telemetry: &Telemetry,
    ) -> Result<Arc<Self>, OpenError> {
        let mut lanes = Vec::with_capacity(3);
        for signal in Signal::ALL {
            let l = [("signal", signal.as_str())];
            let batches = |trigger: &str| {
                telemetry.counter(
                    "ferry_batches_total",
                    "Batches sealed by the batcher, by trigger (size or timeout).",
                    &[l[0], ("trigger", trigger)],
                )
            };
            let dropped = telemetry.counter(
                "ferry_queue_dropped_items_total",
                "Items acknowledged and dropped because the queue was full (when_full = \"drop_newest\").",
                &l,
            );
            let durable = match (queue.mode, &queue.dir) {
                (QueueMode::Durable, Some(dir)) => {
                    Some(open_durable(dir, signal, queue, config, telemetry)?)
                }
                _ => None,
            };
            let store: Arc<dyn Queue> = match &durable {
                Some(d) => d.clone(),
                None => Arc::new(MemoryQueue::new(config.queue_max_bytes)),
            };
            lanes.push(Lane {
                signal,
                queue: store,
                durable,
                open: Mutex::new(Open::default()),
                opened: Notify::new(),
                subscribers: AtomicUsize::new(0),
                batches_by_size: batches("size"),
                batches_by_time: batches("timeout"),
                dropped,
            });
        }
        Ok(Arc::new(Pipeline {
            lanes: lanes
                .try_into()
                .unwrap_or_else(|_| unreachable!("three signals")),
            config: config.clone(),
            when_full: queue.when_full,
        }))
    }

    /// Whether the queues are on disk.
    pub fn is_durable(&self) -> bool {
        self.lanes.iter().any(|l| l.durable.is_some())
    }

    fn lane(&self, signal: Signal) -> &Lane {
        &self.lanes[signal.index()]
    }

    /// The queue of `signal`, for the router.
    pub fn queue(&self, signal: Signal) -> Arc<dyn Queue> {
        self.lane(signal).queue.clone()
    }

    /// Records that one more exporter reads `signal`.
    pub fn subscribe(&self, signal: Signal) {
        self.lane(signal).subscribers.fetch_add(1, Ordering::SeqCst);
    }

    /// Records that one exporter fewer reads `signal`.
    pub fn unsubscribe(&self, signal: Signal) {
        self.lane(signal).subscribers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether any exporter reads `signal`.
    pub fn has_exporter(&self, signal: Signal) -> bool {
        self.lane(signal).subscribers.load(Ordering::SeqCst) > 0
    }

    /// Takes one validated OTLP request of `items` items. Once this returns `Ok`, the data is
    /// the pipeline's responsibility: in durable mode, it is on disk.
    pub async fn accept(&self, signal: Signal, payload: Bytes, items: u32) -> Result<(), Refusal> {
        let lane = self.lane(signal);
        if !self.has_exporter(signal) {
            return Err(Refusal::NoExporter(signal));
        }
        if items == 0 {
            return Ok(());
        }
        let full = match &lane.durable {
            Some(d) => match d.append(&payload, items) {
                Ok(seq) => {
                    return d
                        .synced(seq)
                        .await
                        .map_err(|e| Refusal::Storage(e.to_string()));
                }
                Err(AppendError::Full(full)) => full,
                Err(AppendError::Storage(why)) => return Err(Refusal::Storage(why)),
            },
            None => match self.batch(lane, payload, items) {
                Ok(()) => return Ok(()),
                Err(full) => full,
            },
        };
        match self.when_full {
            WhenFull::Backpressure => Err(full.into()),
            WhenFull::DropNewest => {
                lane.dropped.add(items.into());
                Ok(())
            }
        }
    }

    /// Adds a request to the signal's open batch (memory mode).
    fn batch(&self, lane: &Lane, payload: Bytes, items: u32) -> Result<(), QueueFull> {
        let mut open = lane.open.lock().expect("lane lock");
        let used = lane.queue.used_bytes() + open.bytes;
        let capacity = lane.queue.capacity();
        if used + payload.len() > capacity {
            return Err(QueueFull {
                used,
                capacity,
                wanted: payload.len(),
            });
        }
        if open.started.is_none() {
            open.started = Some(Instant::now());
            lane.opened.notify_one();
        }
        open.bytes += payload.len();
        open.items = open.items.saturating_add(items);
        open.parts.push(payload);
        if open.items >= self.config.batch_max_items {
            lane.seal_into_queue(&mut open, &lane.batches_by_size);
        }
        Ok(())
    }

    /// Seals every open batch now (used on shutdown).
    pub fn flush(&self) {
        for lane in &self.lanes {
            let mut open = lane.open.lock().expect("lane lock");
            lane.seal_into_queue(&mut open, &lane.batches_by_time);
        }
    }

    /// Saves the durable queues' cursors (used on shutdown, after the workers stopped).
    pub fn persist(&self) {
        for lane in &self.lanes {
            if let Some(d) = &lane.durable
                && let Err(e) = d.persist_cursors()
            {
                tracing::error!(signal = %lane.signal, "cannot save cursors: {e}");
            }
        }
    }

    /// Drops the durable cursors of exporters that no longer read a signal (removed from the
    /// config, or no longer taking it); what only they held is freed. `readers` names the
    /// exporters of each signal.
    pub fn forget_cursors_except(&self, readers: impl Fn(Signal) -> Vec<String>) {
        for lane in &self.lanes {
            if let Some(d) = &lane.durable {
                let keep = readers(lane.signal);
                let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
                for name in d.retain_cursors(&keep) {
                    tracing::warn!(
                        signal = %lane.signal,
                        exporter = name,
                        "exporter no longer reads this signal: its durable cursor is dropped"
                    );
                }
            }
        }
    }

    /// Bytes queued or waiting in an open batch, per signal.
    pub fn buffered_bytes(&self, signal: Signal) -> usize {
        let lane = self.lane(signal);
        let open = lane.open.lock().expect("lane lock").bytes;
        lane.queue.used_bytes() + open
    }

    /// Runs the batch timers until the process ends.
    pub fn spawn_timers(self: &Arc<Self>) {
        for signal in Signal::ALL {
            let this = self.clone();
            tokio::spawn(async move { this.timer(signal).await });
        }
    }

    async fn timer(&self, signal: Signal) {
        let lane = self.lane(signal);
        let timeout: Duration = self.config.batch_timeout;
        loop {
            let started = lane.open.lock().expect("lane lock").started;
            match started {
                None => lane.opened.notified().await,
                Some(t) => {
                    tokio::time::sleep_until(t + timeout).await;
                    let mut open = lane.open.lock().expect("lane lock");
                    if open.started.is_some_and(|s| s + timeout <= Instant::now()) {
                        lane.seal_into_queue(&mut open, &lane.batches_by_time);
                    }
                }
            }
        }
    }
}

fn open_durable(
    root: &std::path::Path,
    signal: Signal,
    queue: &QueueConfig,
    config: &PipelineConfig,
    telemetry: &Telemetry,
) -> Result<Arc<DurableQueue>, OpenError> {
    let dir = root.join(signal.as_str());
    let lost = telemetry.counter(
        "ferry_queue_lost_records_total",
        "Durable queue records found damaged on disk and skipped (each is one received request).",
        &[("signal", signal.as_str())],
    );
    let (q, opened) = DurableQueue::open(
        &dir,
        signal,
        queue.max_bytes,
        queue.segment_bytes,
        config.batch_max_items,
        lost,
    )
    .map_err(|source| OpenError {
        signal,
        dir: dir.clone(),
        source,
    })?;
    let r = &opened.recovery;
    for problem in &r.problems {
        tracing::error!(%signal, "durable queue damaged: {problem}");
    }
    if r.lost_records > 0 || r.lost_bytes > 0 {
        tracing::error!(
            %signal,
            lost_records = r.lost_records,
            lost_bytes = r.lost_bytes,
            "durable queue: damaged data skipped, the loss is counted in ferry_queue_lost_records_total"
        );
    }
    telemetry
        .counter(
            "ferry_queue_replayed_records_total",
            "Durable queue records found on start that some exporter had not exported yet.",
            &[("signal", signal.as_str())],
        )
        .add(opened.backlog_records);
    if opened.backlog_records > 0 {
        tracing::info!(
            %signal,
            records = opened.backlog_records,
            bytes = opened.bytes,
            cursors = ?opened.cursors,
            "durable queue: replaying what was not exported"
        );
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(max_items: u32, timeout_ms: u64, bytes: usize) -> Arc<Pipeline> {
        let config = PipelineConfig {
            batch_max_items: max_items,
            batch_timeout: Duration::from_millis(timeout_ms),
            queue_max_bytes: bytes,
            ..Default::default()
        };
        Pipeline::new(&config, &QueueConfig::default(), &Telemetry::default()).unwrap()
    }

    #[tokio::test]
    async fn drop_newest_acknowledges_and_counts_what_does_not_fit() {
        let t = Telemetry::default();
        let config = PipelineConfig {
            batch_max_items: 1,
            queue_max_bytes: 10,
            ..Default::default()
        };
        let queue = QueueConfig {
            when_full: WhenFull::DropNewest,
            ..Default::default()
        };
        let p = Pipeline::new(&config, &queue, &t).unwrap();
        p.subscribe(Signal::Logs);
        p.queue(Signal::Logs).open_cursor("slow");
        p.accept(Signal::Logs, Bytes::from(vec![0; 8]), 3)
            .await
            .unwrap();
        p.accept(Signal::Logs, Bytes::from(vec![0; 8]), 5)
            .await
            .expect("acknowledged although dropped");
        assert_eq!(
            p.queue(Signal::Logs).used_bytes(),
            8,
            "only the first is kept"
        );
        assert!(
            t.render()
                .contains("ferry_queue_dropped_items_total{signal=\"logs\"} 5"),
            "{}",
            t.render()
        );
    }

    #[tokio::test]
    async fn durable_mode_acknowledges_what_is_on_disk_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let queue = QueueConfig {
            mode: QueueMode::Durable,
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let t = Telemetry::default();
        let p = Pipeline::new(&PipelineConfig::default(), &queue, &t).unwrap();
        assert!(p.is_durable());
        p.subscribe(Signal::Traces);
        let q = p.queue(Signal::Traces);
        q.open_cursor("e");
        p.accept(Signal::Traces, Bytes::from_static(b"ab"), 2)
            .await
            .unwrap();
        p.accept(Signal::Traces, Bytes::from_static(b"cd"), 1)
            .await
            .unwrap();
        let (b, next) = q.read(0).expect("synced, so visible");
        assert_eq!((b.items, &b.payload[..], next), (3, &b"abcd"[..], 2));
        assert!(dir.path().join("traces").join("cursors.json").exists());
    }

    #[tokio::test]
    async fn cuts_by_size_by_concatenation() {
        let p = pipeline(3, 60_000, 1 << 20);
        p.subscribe(Signal::Traces);
        let q = p.queue(Signal::Traces);
        q.open_cursor("x");
        p.accept(Signal::Traces, Bytes::from_static(b"ab"), 2)
            .await
            .unwrap();
        assert!(q.get(0).is_none());
        p.accept(Signal::Traces, Bytes::from_static(b"cd"), 1)
            .await
            .unwrap();
        let b = q.get(0).expect("sealed at 3 items");
        assert_eq!((b.items, &b.payload[..]), (3, &b"abcd"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_by_time() {
        let p = pipeline(100, 200, 1 << 20);
        p.spawn_timers();
        p.subscribe(Signal::Logs);
        let q = p.queue(Signal::Logs);
        q.open_cursor("x");
        p.accept(Signal::Logs, Bytes::from_static(b"x"), 1)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(q.get(0).is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(q.get(0).expect("sealed by timer").items, 1);
    }

    #[tokio::test]
    async fn pushes_back_when_full_and_refuses_unrouted_signals() {
        let p = pipeline(1, 60_000, 10);
        assert!(matches!(
            p.accept(Signal::Metrics, Bytes::from_static(b"x"), 1).await,
            Err(Refusal::NoExporter(Signal::Metrics))
        ));
        p.subscribe(Signal::Metrics);
        p.queue(Signal::Metrics).open_cursor("slow");
        p.accept(Signal::Metrics, Bytes::from(vec![0; 8]), 1)
            .await
            .unwrap();
        assert!(matches!(
            p.accept(Signal::Metrics, Bytes::from(vec![0; 8]), 1).await,
            Err(Refusal::QueueFull(_))
        ));
        p.queue(Signal::Metrics).commit("slow", 1);
        p.accept(Signal::Metrics, Bytes::from(vec![0; 8]), 1)
            .await
            .unwrap();
    }
}
