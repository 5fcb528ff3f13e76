//! The router: one worker per (exporter, signal), each reading its signal's queue from its own
//! cursor, so a slow backend only holds back its own cursor.
//!
//! The worker owns retries (exponential backoff with jitter, bounded elapsed time, `throttled`
//! delays honoured); a batch leaves the worker's hands only when it was exported, rejected for
//! good, or retried past `max_elapsed`, and every one of those ends is counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::queue::{Batch, Encoding, Queue};
use super::retry::Backoff;
use crate::config::RetryConfig;
use crate::signal::Signal;
use crate::telemetry::{Counter, Telemetry};

/// How one export attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Ok,
    /// Transient failure; retry with backoff.
    Retryable(String),
    /// Retry no sooner than this.
    Throttled(Duration),
    /// This many items were rejected for good; the rest were delivered.
    Partial(u32, String),
    /// Never retry.
    Permanent(String),
    /// The plugin instance trapped, timed out or broke its contract. The instance was
    /// discarded; the batch is retried like a transient failure.
    Fault(String),
}

/// What a worker is told to do, through its stop channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep exporting.
    Run,
    /// Export everything queued, then end (shutdown).
    Drain,
    /// End after the attempt in hand, leaving the batch to whoever opens the cursor next
    /// (reload, or a shutdown past its deadline).
    Now,
}

/// Boxed future returned by [`Export::export`].
pub type ExportFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// Something a batch can be exported to.
pub trait Export: Send + Sync {
    /// The exporter's configured name.
    fn name(&self) -> &str;
    /// The encoding it wants.
    fn encoding(&self) -> Encoding;
    /// One attempt at exporting a batch.
    fn export(&self, signal: Signal, items: u32, attempt: u32, payload: Bytes) -> ExportFuture<'_>;
}

struct WorkerMetrics {
    sent_items: Counter,
    sent_batches: Counter,
    retries: Counter,
    failed: [Counter; 3],
    dropped_permanent: Counter,
    dropped_rejected: Counter,
    dropped_exhausted: Counter,
}

impl WorkerMetrics {
    fn new(t: &Telemetry, exporter: &str, signal: Signal) -> Self {
        let l = [("exporter", exporter), ("signal", signal.as_str())];
        let failed = |kind: &str| {
            t.counter(
                "ferry_exporter_failed_attempts_total",
                "Export attempts that failed, by kind (retryable, throttled, fault).",
                &[l[0], l[1], ("kind", kind)],
            )
        };
        let dropped = |reason: &str| {
            t.counter(
                "ferry_exporter_dropped_items_total",
                "Items given up on, by reason (permanent, rejected, retries_exhausted).",
                &[l[0], l[1], ("reason", reason)],
            )
        };
        WorkerMetrics {
            sent_items: t.counter("ferry_exporter_sent_items_total", "Items exported.", &l),
            sent_batches: t.counter("ferry_exporter_sent_batches_total", "Batches exported.", &l),
            retries: t.counter("ferry_exporter_retries_total", "Export retries.", &l),
            failed: [failed("retryable"), failed("throttled"), failed("fault")],
            dropped_permanent: dropped("permanent"),
            dropped_rejected: dropped("rejected"),
            dropped_exhausted: dropped("retries_exhausted"),
        }
    }
}

/// Reads one signal's queue for one exporter.
pub struct Worker {
    exporter: Arc<dyn Export>,
    queue: Arc<dyn Queue>,
    signal: Signal,
    policy: RetryConfig,
    metrics: WorkerMetrics,
    /// Where the cursor stood when the worker was made.
    next: u64,
}

impl Worker {
    /// A worker for `exporter` on `signal`'s `queue`. Its cursor (named after the exporter) is
    /// opened here, not when it first runs, so nothing appended in between is missed.
    pub fn new(
        exporter: Arc<dyn Export>,
        queue: Arc<dyn Queue>,
        signal: Signal,
        policy: RetryConfig,
        telemetry: &Telemetry,
    ) -> Self {
        let metrics = WorkerMetrics::new(telemetry, exporter.name(), signal);
        let next = queue.open_cursor(exporter.name());
        Worker {
            next,
            exporter,
            queue,
            signal,
            policy,
            metrics,
        }
    }

    /// Exports batches from the cursor named after the exporter until `stop` says so.
    pub async fn run(self, mut stop: watch::Receiver<Stop>) {
        let cursor = self.exporter.name().to_string();
        let mut next = self.next;
        let mut head = self.queue.head();
        loop {
            head.borrow_and_update();
            if *stop.borrow() == Stop::Now {
                return;
            }
            if let Some((batch, after)) = self.queue.read(next) {
                if (batch.items > 0 || !batch.payload.is_empty())
                    && !self.deliver(&batch, &mut stop).await
                {
                    // Interrupted: the batch stays for the next reader of this cursor.
                    return;
                }
                next = after;
                self.queue.commit(&cursor, next);
                continue;
            }
            if *stop.borrow() != Stop::Run {
                return;
            }
            tokio::select! {
                r = head.changed() => if r.is_err() { return },
                r = stop.changed() => if r.is_err() { return },
            }
        }
    }

    /// Exports `batch` until it is delivered or given up on (true), or `stop` says
    /// [`Stop::Now`] while it waits to retry (false).
    async fn deliver(&self, batch: &Batch, stop: &mut watch::Receiver<Stop>) -> bool {
        let name = self.exporter.name();
        let m = &self.metrics;
        let items = batch.items;
        let payload = match batch.encoded(self.exporter.encoding()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(exporter = name, signal = %self.signal, items, "dropping batch: {e}");
                m.dropped_permanent.add(items.into());
                return true;
            }
        };
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.policy);
        let mut attempt = 0u32;
        loop {
            let outcome = self
                .exporter
                .export(self.signal, items, attempt, payload.clone())
                .await;
            let (delay, why) = match outcome {
                Outcome::Ok => {
                    m.sent_items.add(items.into());
                    m.sent_batches.inc();
                    return true;
                }
                Outcome::Partial(rejected, msg) => {
                    let rejected = rejected.min(items);
                    m.sent_items.add((items - rejected).into());
                    m.sent_batches.inc();
                    m.dropped_rejected.add(rejected.into());
                    tracing::warn!(exporter = name, signal = %self.signal, rejected, items, "backend rejected items: {msg}");
                    return true;
                }
                Outcome::Permanent(msg) => {
                    m.dropped_permanent.add(items.into());
                    tracing::error!(exporter = name, signal = %self.signal, items, "dropping batch after a permanent error: {msg}");
                    return true;
                }
                Outcome::Retryable(msg) => {
                    m.failed[0].inc();
                    (backoff.next_delay(), msg)
                }
                Outcome::Throttled(d) => {
                    m.failed[1].inc();
                    (d, format!("throttled for {d:?}"))
                }
                Outcome::Fault(msg) => {
                    m.failed[2].inc();
                    (backoff.next_delay(), msg)
                }
            };
            if started.elapsed() + delay > self.policy.max_elapsed {
                m.dropped_exhausted.add(items.into());
                tracing::error!(
                    exporter = name, signal = %self.signal, items, attempts = attempt + 1,
                    "dropping batch: retries exhausted after {:?} (last error: {why})",
                    started.elapsed()
                );
                return true;
            }
            tracing::warn!(exporter = name, signal = %self.signal, attempt, "export failed, retrying in {delay:?}: {why}");
            m.retries.inc();
            attempt += 1;
            let interrupted = async {
                while stop.changed().await.is_ok() {
                    if *stop.borrow() == Stop::Now {
                        return;
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = interrupted => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MemoryQueue;
    use std::sync::Mutex;

    /// Replays a script of outcomes and records every attempt.
    struct Scripted {
        script: Mutex<Vec<Outcome>>,
        attempts: Mutex<Vec<u32>>,
    }

    impl Export for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn encoding(&self) -> Encoding {
            Encoding::OtlpProtobuf
        }
        fn export(&self, _: Signal, _: u32, attempt: u32, _: Bytes) -> ExportFuture<'_> {
            self.attempts.lock().unwrap().push(attempt);
            let next = self.script.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    async fn run(script: Vec<Outcome>, max_elapsed: Duration) -> (Telemetry, Vec<u32>) {
        let t = Telemetry::default();
        let q: Arc<dyn Queue> = Arc::new(MemoryQueue::new(1 << 20));
        let e = Arc::new(Scripted {
            script: Mutex::new(script),
            attempts: Mutex::new(vec![]),
        });
        let policy = RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            max_elapsed,
        };
        let w = Worker::new(e.clone(), q.clone(), Signal::Traces, policy, &t);
        let (tx, rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(w.run(rx));
        tokio::task::yield_now().await;
        q.append(Arc::new(Batch::new(
            Signal::Traces,
            10,
            Bytes::from_static(b"x"),
        )))
        .unwrap();
        tx.send(Stop::Drain).unwrap();
        task.await.unwrap();
        assert_eq!(q.used_bytes(), 0, "batch freed once handled");
        let attempts = e.attempts.lock().unwrap().clone();
        (t, attempts)
    }

    fn count(t: &Telemetry, needle: &str) -> u64 {
        let text = t.render();
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse().unwrap())
            .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let (t, attempts) = run(
            vec![
                Outcome::Retryable("503".into()),
                Outcome::Throttled(Duration::from_millis(300)),
                Outcome::Fault("trap".into()),
                Outcome::Ok,
            ],
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(attempts, vec![0, 1, 2, 3]);
        assert_eq!(count(&t, "ferry_exporter_sent_items_total{"), 10);
        assert_eq!(count(&t, "ferry_exporter_retries_total{"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_is_dropped_once() {
        let (t, attempts) = run(
            vec![Outcome::Permanent("400".into())],
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(attempts, vec![0]);
        let text = t.render();
        assert!(text.contains("reason=\"permanent\"} 10"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_elapsed() {
        let script = vec![Outcome::Retryable("down".into()); 50];
        let (t, attempts) = run(script, Duration::from_secs(2)).await;
        assert!(attempts.len() > 2 && attempts.len() < 50, "{attempts:?}");
        assert!(t.render().contains("reason=\"retries_exhausted\"} 10"));
    }

    #[tokio::test(start_paused = true)]
    async fn partial_counts_both_sides() {
        let (t, _) = run(
            vec![Outcome::Partial(4, "bad".into())],
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(count(&t, "ferry_exporter_sent_items_total{"), 6);
        assert!(t.render().contains("reason=\"rejected\"} 4"));
    }
}
