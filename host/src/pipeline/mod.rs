//! The native hot path between receivers and exporters: batcher → queue → router.
//!
//! Receivers call [`Pipeline::accept`] with validated OTLP request bytes. The batcher appends
//! them to the open batch of their signal and seals it into the signal's queue when it holds
//! `batch_max_items` items or its first item has waited `batch_timeout`. The router runs one
//! worker per (exporter, signal), each reading the queue from its own cursor.

pub mod queue;
pub mod retry;
pub mod router;
pub mod segment_log;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::PipelineConfig;
use crate::signal::Signal;
use crate::telemetry::{Counter, Telemetry};
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
        let payload = if self.parts.len() == 1 {
            self.parts.pop().expect("one part")
        } else {
            let mut buf = BytesMut::with_capacity(self.bytes);
            for p in self.parts.drain(..) {
                buf.extend_from_slice(&p);
            }
            buf.freeze()
        };
        let batch = Batch::new(signal, self.items, payload);
        *self = Open::default();
        batch
    }
}

struct Lane {
    signal: Signal,
    queue: Arc<dyn Queue>,
    open: Mutex<Open>,
    /// Wakes the timer when a batch opens.
    opened: Notify,
    subscribers: AtomicUsize,
    batches_by_size: Counter,
    batches_by_time: Counter,
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
}

impl Pipeline {
    /// Builds in-memory queues and batchers for every signal.
    pub fn new(config: &PipelineConfig, telemetry: &Telemetry) -> Arc<Self> {
        let lane = |signal: Signal| {
            let batches = |trigger: &str| {
                telemetry.counter(
                    "ferry_batches_total",
                    "Batches sealed by the batcher, by trigger (size or timeout).",
                    &[("signal", signal.as_str()), ("trigger", trigger)],
                )
            };
            Lane {
                signal,
                queue: Arc::new(MemoryQueue::new(config.queue_max_bytes)),
                open: Mutex::new(Open::default()),
                opened: Notify::new(),
                subscribers: AtomicUsize::new(0),
                batches_by_size: batches("size"),
                batches_by_time: batches("timeout"),
            }
        };
        Arc::new(Pipeline {
            lanes: Signal::ALL.map(lane),
            config: config.clone(),
        })
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

    /// Whether any exporter reads `signal`.
    pub fn has_exporter(&self, signal: Signal) -> bool {
        self.lane(signal).subscribers.load(Ordering::SeqCst) > 0
    }

    /// Takes one validated OTLP request of `items` items. Once this returns `Ok`, the data is
    /// the pipeline's responsibility.
    pub fn accept(&self, signal: Signal, payload: Bytes, items: u32) -> Result<(), Refusal> {
        let lane = self.lane(signal);
        if !self.has_exporter(signal) {
            return Err(Refusal::NoExporter(signal));
        }
        if items == 0 {
            return Ok(());
        }
        let mut open = lane.open.lock().expect("lane lock");
        let used = lane.queue.used_bytes() + open.bytes;
        let capacity = lane.queue.capacity();
        if used + payload.len() > capacity {
            return Err(QueueFull {
                used,
                capacity,
                wanted: payload.len(),
            }
            .into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(max_items: u32, timeout_ms: u64, bytes: usize) -> Arc<Pipeline> {
        let config = PipelineConfig {
            batch_max_items: max_items,
            batch_timeout: Duration::from_millis(timeout_ms),
            queue_max_bytes: bytes,
        };
        Pipeline::new(&config, &Telemetry::default())
    }

    #[tokio::test]
    async fn cuts_by_size_by_concatenation() {
        let p = pipeline(3, 60_000, 1 << 20);
        p.subscribe(Signal::Traces);
        let q = p.queue(Signal::Traces);
        q.open_cursor("x");
        p.accept(Signal::Traces, Bytes::from_static(b"ab"), 2)
            .unwrap();
        assert!(q.get(0).is_none());
        p.accept(Signal::Traces, Bytes::from_static(b"cd"), 1)
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
        p.accept(Signal::Logs, Bytes::from_static(b"x"), 1).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(q.get(0).is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(q.get(0).expect("sealed by timer").items, 1);
    }

    #[tokio::test]
    async fn pushes_back_when_full_and_refuses_unrouted_signals() {
        let p = pipeline(1, 60_000, 10);
        assert!(matches!(
            p.accept(Signal::Metrics, Bytes::from_static(b"x"), 1),
            Err(Refusal::NoExporter(Signal::Metrics))
        ));
        p.subscribe(Signal::Metrics);
        p.queue(Signal::Metrics).open_cursor("slow");
        p.accept(Signal::Metrics, Bytes::from(vec![0; 8]), 1)
            .unwrap();
        assert!(matches!(
            p.accept(Signal::Metrics, Bytes::from(vec![0; 8]), 1),
            Err(Refusal::QueueFull(_))
        ));
        p.queue(Signal::Metrics).commit("slow", 1);
        p.accept(Signal::Metrics, Bytes::from(vec![0; 8]), 1)
            .unwrap();
    }
}
