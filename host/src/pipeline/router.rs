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
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::watch;
use tokio::time::Instant;

use super::queue::{Batch, Encoding, Queue};
use super::retry::Backoff;
use super::retry::RetryConfig;
use crate::signal::Signal;
use crate::telemetry::tap::{Point, Tapped};
use crate::telemetry::{Counter, Gauge, Note, Telemetry};

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

/// Boxed future returned by [`Process::process`].
pub type ProcessFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Batch>, String>> + Send + 'a>>;

/// Reshapes batches before one exporter sees them (its processors).
pub trait Process: Send + Sync {
    /// What to export instead of `batch`: `None` for `batch` as it is, a batch of no items
    /// for nothing at all; or why it cannot be processed now (retried like a failed attempt).
    fn process<'a>(&'a self, batch: &'a Batch) -> ProcessFuture<'a>;

    /// Whether it answers a batch only once later batches have come (a tail sampler): the
    /// worker then reads up to [`HELD_BATCHES`] ahead, still exporting `concurrency` at once.
    fn holds(&self) -> bool {
        false
    }

    /// The exporter is draining: answer every batch as soon as possible.
    fn drain(&self) {}
}

/// Batches a worker whose processors hold batches reads ahead of its cursor.
pub const HELD_BATCHES: usize = 4096;

/// Why a batch is not ready to export.
enum Unready {
    /// The exporter's processors failed on it: retried.
    Processor(String),
    /// It cannot take the exporter's encoding: dropped.
    Encoding(String),
}

struct WorkerMetrics {
    sent_items: Counter,
    sent_batches: Counter,
    retries: Counter,
    failed: [Counter; 4],
    dropped_permanent: Counter,
    dropped_rejected: Counter,
    dropped_exhausted: Counter,
    /// Batches waiting to be tried again.
    retrying: Gauge,
    /// When the next of them is tried (Unix ms; 0 when none waits).
    next_attempt: Gauge,
    last_error: Note,
    /// What the exporter is handed (`exporter:NAME`), and what it gives up on (`dropped:NAME`).
    taps: [Point; 2],
}

/// Milliseconds since the Unix epoch, `d` from now.
pub fn unix_ms_in(d: std::time::Duration) -> i64 {
    (std::time::SystemTime::now() + d)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

impl WorkerMetrics {
    fn new(t: &Telemetry, exporter: &str, signal: Signal) -> Self {
        let l = [("exporter", exporter), ("signal", signal.as_str())];
        let failed = |kind: &str| {
            t.counter(
                "ferry_exporter_failed_attempts_total",
                "Export attempts that failed, by kind (retryable, throttled, fault, processor).",
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
            failed: [
                failed("retryable"),
                failed("throttled"),
                failed("fault"),
                failed("processor"),
            ],
            dropped_permanent: dropped("permanent"),
            dropped_rejected: dropped("rejected"),
            dropped_exhausted: dropped("retries_exhausted"),
            retrying: t.gauge(
                "ferry_exporter_retrying_batches",
                "Batches waiting to be tried again after a failed attempt.",
                &l,
            ),
            next_attempt: t.gauge(
                "ferry_exporter_next_attempt_unix_ms",
                "When the next batch waiting is tried again (Unix milliseconds; 0 when none waits).",
                &l,
            ),
            last_error: t.note("exporter_last_error", &l),
            taps: [
                t.taps().point(&format!("exporter:{exporter}")),
                t.taps().point(&format!("dropped:{exporter}")),
            ],
        }
    }
}

/// Reads one signal's queue for one exporter.
pub struct Worker {
    exporter: Arc<dyn Export>,
    queue: Arc<dyn Queue>,
    signal: Signal,
    policy: RetryConfig,
    /// Most batches exported at once.
    concurrency: usize,
    /// Most batches read and not yet handled: `concurrency`, or [`HELD_BATCHES`] when the
    /// processors hold batches.
    reading: usize,
    /// Export attempts under way, at most `concurrency`.
    exporting: tokio::sync::Semaphore,
    metrics: WorkerMetrics,
    /// Where the cursor stood when the worker was made.
    next: u64,
    /// The exporter's processors, if it has any.
    processors: Option<Arc<dyn Process>>,
}

impl Worker {
    /// A worker for `exporter` on `signal`'s `queue`, with up to `concurrency` batches in
    /// flight. Its cursor (named after the exporter) is opened here, not when it first runs, so
    /// nothing appended in between is missed.
    pub fn new(
        exporter: Arc<dyn Export>,
        queue: Arc<dyn Queue>,
        signal: Signal,
        policy: RetryConfig,
        concurrency: usize,
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
            concurrency: concurrency.max(1),
            reading: concurrency.max(1),
            exporting: tokio::sync::Semaphore::new(concurrency.max(1)),
            metrics,
            processors: None,
        }
    }

    /// Runs `processors` over every batch before it is exported.
    pub fn with_processors(mut self, processors: Arc<dyn Process>) -> Self {
        if processors.holds() {
            self.reading = HELD_BATCHES.max(self.concurrency);
        }
        self.processors = Some(processors);
        self
    }

    /// The batch as the exporter takes it (after its processors, in its encoding) and its
    /// items; `None` when the processors left nothing to export.
    async fn prepare(&self, batch: &Batch) -> Result<Option<(Bytes, u32)>, Unready> {
        let processed = match &self.processors {
            Some(p) => p.process(batch).await.map_err(Unready::Processor)?,
            None => None,
        };
        let batch = processed.as_ref().unwrap_or(batch);
        if batch.items == 0 {
            return Ok(None);
        }
        let payload = batch
            .encoded(self.exporter.encoding())
            .map_err(Unready::Encoding)?;
        Ok(Some((payload, batch.items)))
    }

    /// Exports batches from the cursor named after the exporter until `stop` says so, with up
    /// to `concurrency` of them in flight. The cursor only ever moves past a batch once it and
    /// every batch before it have been handled, so a reader that reopens the cursor (after a
    /// reload, or a restart in durable mode) starts at the oldest batch not yet handled.
    pub async fn run(self, mut stop: watch::Receiver<Stop>) {
        let cursor = self.exporter.name().to_string();
        // Where the next read starts: ahead of the committed cursor by what is in flight.
        let mut next = self.next;
        let mut head = self.queue.head();
        let mut in_flight = FuturesOrdered::new();
        // Set once a batch was left undelivered (`Stop::Now`): nothing after it is committed,
        // nothing new is started, and the worker ends when the attempts in hand are over.
        let mut interrupted = false;
        let this = &self;
        let mut drained = false;
        loop {
            head.borrow_and_update();
            interrupted |= *stop.borrow() == Stop::Now;
            if !drained
                && *stop.borrow() != Stop::Run
                && let Some(p) = &self.processors
            {
                p.drain();
                drained = true;
            }
            while !interrupted && in_flight.len() < self.reading {
                let Some((batch, after)) = self.queue.read(next) else {
                    break;
                };
                next = after;
                let mut stop = stop.clone();
                in_flight.push_back(async move {
                    let handled = (batch.items == 0 && batch.payload.is_empty())
                        || this.deliver(&batch, &mut stop).await;
                    (handled, after)
                });
            }
            if in_flight.is_empty() {
                if interrupted || *stop.borrow() != Stop::Run {
                    return;
                }
                tokio::select! {
                    r = head.changed() => if r.is_err() { return },
                    r = stop.changed() => if r.is_err() { return },
                }
                continue;
            }
            let room = in_flight.len() < self.reading && !interrupted;
            tokio::select! {
                Some((handled, after)) = in_flight.next() => {
                    if handled && !interrupted {
                        self.queue.commit(&cursor, after);
                    } else {
                        // Interrupted: this batch stays for the next reader of the cursor.
                        interrupted = true;
                    }
                }
                r = head.changed(), if room => if r.is_err() { return },
                r = stop.changed() => if r.is_err() { return },
            }
        }
    }

    /// Exports `batch` until it is delivered or given up on (true), or `stop` says
    /// [`Stop::Now`] while it waits to retry (false).
    async fn deliver(&self, batch: &Batch, stop: &mut watch::Receiver<Stop>) -> bool {
        let name = self.exporter.name();
        let m = &self.metrics;
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.policy);
        let mut attempt = 0u32;
        // Processed once, then the same bytes on every attempt.
        let mut ready: Option<(Bytes, u32)> = None;
        loop {
            let prepared = match ready.clone() {
                Some(r) => Ok(Some(r)),
                None => tokio::select! {
                    r = self.prepare(batch) => r,
                    () = stopped_now(stop) => return false,
                },
            };
            let items = ready.as_ref().map_or(batch.items, |r| r.1);
            let (delay, why) = match prepared {
                Ok(None) => return true,
                Err(Unready::Encoding(e)) => {
                    tracing::error!(exporter = name, signal = %self.signal, items, "dropping batch: {e}");
                    m.dropped_permanent.add(items.into());
                    self.tap(DROPPED, &batch.payload, items, || Some(e));
                    return true;
                }
                Err(Unready::Processor(why)) => {
                    m.failed[3].inc();
                    (backoff.next_delay(), why)
                }
                Ok(Some((payload, items))) => {
                    if ready.is_none() {
                        self.tap(HANDED, &payload, items, || None);
                    }
                    ready = Some((payload.clone(), items));
                    let _slot = self.exporting.acquire().await;
                    let outcome = self
                        .exporter
                        .export(self.signal, items, attempt, payload)
                        .await;
                    match outcome {
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
                            self.tap(DROPPED, &payload_of(&ready, batch), items, || {
                                Some(format!("rejected: {rejected} of {items} items: {msg}"))
                            });
                            return true;
                        }
                        Outcome::Permanent(msg) => {
                            m.dropped_permanent.add(items.into());
                            m.last_error.set(&msg);
                            tracing::error!(exporter = name, signal = %self.signal, items, "dropping batch after a permanent error: {msg}");
                            self.tap(DROPPED, &payload_of(&ready, batch), items, || {
                                Some(format!("permanent: {msg}"))
                            });
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
                    }
                }
            };
            if started.elapsed() + delay > self.policy.max_elapsed {
                m.dropped_exhausted.add(items.into());
                m.last_error.set(&why);
                self.tap(DROPPED, &payload_of(&ready, batch), items, || {
                    Some(format!("retries_exhausted: {why}"))
                });
                tracing::error!(
                    exporter = name, signal = %self.signal, items, attempts = attempt + 1,
                    "dropping batch: retries exhausted after {:?} (last error: {why})",
                    started.elapsed()
                );
                return true;
            }
            tracing::warn!(exporter = name, signal = %self.signal, attempt, "export failed, retrying in {delay:?}: {why}");
            m.retries.inc();
            m.last_error.set(&why);
            attempt += 1;
            m.retrying.add(1);
            m.next_attempt.set(unix_ms_in(delay));
            let stopped = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = stopped_now(stop) => true,
            };
            // The figure is of the last batch to wait; once none waits it is cleared.
            m.retrying.add(-1);
            if m.retrying.get() == 0 {
                m.next_attempt.set(0);
            }
            if stopped {
                return false;
            }
        }
    }
}

/// The tap points of a worker: what its exporter is handed, what it gives up on.
const HANDED: usize = 0;
const DROPPED: usize = 1;

/// The bytes an exporter was handed, else the batch's own.
fn payload_of(ready: &Option<(Bytes, u32)>, batch: &Batch) -> Bytes {
    ready
        .as_ref()
        .map_or_else(|| batch.payload.clone(), |(p, _)| p.clone())
}

impl Worker {
    /// Offers a batch at tap point `i` ([`HANDED`] or [`DROPPED`], with why).
    fn tap(&self, i: usize, payload: &Bytes, items: u32, reason: impl FnOnce() -> Option<String>) {
        self.metrics.taps[i].offer(|| Tapped {
            signal: self.signal,
            items,
            payload: payload.clone(),
            reason: reason(),
            at: std::time::SystemTime::now(),
        });
    }
}

/// Resolves once `stop` says [`Stop::Now`] (perhaps said before this was called).
async fn stopped_now(stop: &mut watch::Receiver<Stop>) {
    while *stop.borrow_and_update() != Stop::Now {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await
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
        let w = Worker::new(e.clone(), q.clone(), Signal::Traces, policy, 1, &t);
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

    /// Holds each export until its payload is released; payloads in `failing` always fail.
    #[derive(Default)]
    struct Gated {
        released: Mutex<Vec<Bytes>>,
        failing: Mutex<Vec<Bytes>>,
        wake: tokio::sync::Notify,
        running: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
        started: Mutex<Vec<Bytes>>,
    }

    impl Gated {
        fn release(&self, payload: &'static [u8]) {
            self.released
                .lock()
                .unwrap()
                .push(Bytes::from_static(payload));
            self.wake.notify_waiters();
        }
        fn started(&self) -> Vec<Bytes> {
            self.started.lock().unwrap().clone()
        }
    }

    impl Export for Gated {
        fn name(&self) -> &str {
            "gated"
        }
        fn encoding(&self) -> Encoding {
            Encoding::OtlpProtobuf
        }
        fn export(&self, _: Signal, _: u32, _: u32, payload: Bytes) -> ExportFuture<'_> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                self.started.lock().unwrap().push(payload.clone());
                let now = self.running.fetch_add(1, SeqCst) + 1;
                self.peak.fetch_max(now, SeqCst);
                loop {
                    let woken = self.wake.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    if self.released.lock().unwrap().contains(&payload) {
                        break;
                    }
                    woken.await;
                }
                self.running.fetch_sub(1, SeqCst);
                if self.failing.lock().unwrap().contains(&payload) {
                    Outcome::Retryable("down".into())
                } else {
                    Outcome::Ok
                }
            })
        }
    }

    /// Lets the worker run until `done` holds.
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the worker never got there");
    }

    fn gated_worker(concurrency: usize) -> (Arc<Gated>, Arc<dyn Queue>, Telemetry, Worker) {
        let t = Telemetry::default();
        let q: Arc<dyn Queue> = Arc::new(MemoryQueue::new(1 << 20));
        let e = Arc::new(Gated::default());
        let w = Worker::new(
            e.clone(),
            q.clone(),
            Signal::Traces,
            RetryConfig::default(),
            concurrency,
            &t,
        );
        for p in [b"a", b"b", b"c", b"d", b"e"] {
            q.append(Arc::new(Batch::new(
                Signal::Traces,
                1,
                Bytes::from_static(p),
            )))
            .unwrap();
        }
        (e, q, t, w)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_overlap_up_to_the_concurrency_and_the_cursor_moves_in_order() {
        let (e, q, t, w) = gated_worker(3);
        let (tx, rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(w.run(rx));
        settle(|| e.started().len() == 3).await;
        assert_eq!(e.started(), vec!["a", "b", "c"]);
        // `b` finishes first: it is done, but `a` is not, so the cursor stays before `a` and
        // no fourth batch starts (the window is held by `a`).
        e.release(b"b");
        settle(|| e.running.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
        assert_eq!(q.cursor("gated"), Some(0));
        assert_eq!(e.started().len(), 3);
        // `a` finishes: the cursor moves past `a` and `b`, and `d`, `e` start.
        e.release(b"a");
        settle(|| e.started().len() == 5).await;
        assert_eq!(q.cursor("gated"), Some(2));
        for p in [b"c", b"d", b"e"] {
            e.release(p);
        }
        tx.send(Stop::Drain).unwrap();
        task.await.unwrap();
        assert_eq!(q.cursor("gated"), Some(5));
        assert_eq!(q.used_bytes(), 0);
        assert_eq!(e.peak.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(count(&t, "ferry_exporter_sent_items_total{"), 5);
    }

    /// Processors that answer a batch only once `need` batches have come, or once drained.
    struct Holding {
        need: usize,
        entered: std::sync::atomic::AtomicUsize,
        drained: std::sync::atomic::AtomicBool,
        wake: tokio::sync::Notify,
    }

    impl Process for Holding {
        fn process<'a>(&'a self, _: &'a Batch) -> ProcessFuture<'a> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                self.entered.fetch_add(1, SeqCst);
                self.wake.notify_waiters();
                loop {
                    let woken = self.wake.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    if self.entered.load(SeqCst) >= self.need || self.drained.load(SeqCst) {
                        return Ok(None);
                    }
                    woken.await;
                }
            })
        }
        fn holds(&self) -> bool {
            true
        }
        fn drain(&self) {
            self.drained
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.wake.notify_waiters();
        }
    }

    fn holding(need: usize) -> Arc<Holding> {
        Arc::new(Holding {
            need,
            entered: Default::default(),
            drained: Default::default(),
            wake: Default::default(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn holding_processors_read_ahead_while_exports_stay_within_the_concurrency() {
        let (e, q, _, w) = gated_worker(2);
        let p = holding(5);
        let (tx, rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(w.with_processors(p.clone()).run(rx));
        // All five are read although only two may be exported at once.
        settle(|| e.started().len() == 2).await;
        assert_eq!(p.entered.load(std::sync::atomic::Ordering::SeqCst), 5);
        for b in [b"a", b"b", b"c", b"d", b"e"] {
            e.release(b);
        }
        tx.send(Stop::Drain).unwrap();
        task.await.unwrap();
        assert_eq!(q.cursor("gated"), Some(5));
        assert_eq!(e.peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_makes_holding_processors_answer_at_once() {
        let (e, q, _, w) = gated_worker(2);
        let p = holding(100);
        for b in [b"a", b"b", b"c", b"d", b"e"] {
            e.release(b);
        }
        let (tx, rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(w.with_processors(p.clone()).run(rx));
        settle(|| p.entered.load(std::sync::atomic::Ordering::SeqCst) == 5).await;
        assert!(e.started().is_empty(), "held");
        tx.send(Stop::Drain).unwrap();
        task.await.unwrap();
        assert_eq!(q.cursor("gated"), Some(5));
        assert_eq!(e.started().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn one_at_a_time_when_the_concurrency_is_one() {
        let (e, q, _, w) = gated_worker(1);
        let (tx, rx) = watch::channel(Stop::Drain);
        let task = tokio::spawn(w.run(rx));
        for p in [b"a", b"b", b"c", b"d", b"e"] {
            settle(|| e.started().last().map(|s| &s[..]) == Some(&p[..])).await;
            e.release(p);
        }
        task.await.unwrap();
        drop(tx);
        assert_eq!(e.peak.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(q.cursor("gated"), Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_now_leaves_the_undelivered_batch_and_everything_after_it() {
        let (e, q, _, w) = gated_worker(2);
        e.failing.lock().unwrap().push(Bytes::from_static(b"a"));
        let (tx, rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(w.run(rx));
        settle(|| e.started().len() == 2).await;
        // `a` fails and waits to be retried; `b` is delivered but must not be committed past
        // `a`, which the next reader of the cursor has to find.
        e.release(b"a");
        e.release(b"b");
        settle(|| e.running.load(std::sync::atomic::Ordering::SeqCst) == 0).await;
        tx.send(Stop::Now).unwrap();
        task.await.unwrap();
        assert_eq!(q.cursor("gated"), Some(0));
        assert_eq!(
            e.started(),
            vec!["a", "b"],
            "nothing new starts after the stop"
        );
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
