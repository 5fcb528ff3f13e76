//! `tail_sample`: decides on whole traces in an exporter's chain. Each batch's spans join
//! their traces in a holder ([`held`]); a trace is decided by the policies ([`policy`]) once
//! it is due (`decision_wait` after its first span) or pushed out by the bounds, and a batch
//! is answered only once every trace it holds spans of is decided: with its spans of the kept
//! traces. So the exporter's cursor, which moves past a batch only once the batch is
//! exported, never moves past a span whose trace is undecided, and a restart replays and
//! decides again whatever was not yet exported. With a durable queue, the decisions are kept
//! on disk too ([`journal`]), so that a replayed batch's spans of a trace decided before the
//! crash follow that decision.

pub mod held;
pub mod journal;
pub mod policy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::held::{Admitted, Held, HeldSpan, Limits, TraceId, Verdict};
use self::journal::Journal;
use self::policy::{Decision, Policies, PolicyConfig, SpanView};
use super::At;
use super::Output;
use super::QueueView;
use super::items::{self, span};
use super::msg::Msg;
use crate::telemetry::{Counter, Gauge, Telemetry};
use crate::units::{de_duration, de_opt_bytes, de_opt_duration};

/// `[processors.NAME] kind = "tail_sample"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// How long a trace is held after its first span before it is decided.
    #[serde(default = "default_wait", deserialize_with = "de_duration")]
    pub decision_wait: Duration,
    /// When set, a trace is decided this long after its root span arrived, if that is before
    /// its `decision_wait` is over.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub idle: Option<Duration>,
    /// Most traces held at once; past it the oldest are decided early.
    #[serde(default = "default_max_traces")]
    pub max_traces: usize,
    /// Most bytes of batches held at once (waiting for their traces); past it the traces of
    /// the oldest are decided early.
    /// (Default: half the exporter's queue budget.)
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub max_bytes: Option<usize>,
    /// Decisions remembered, so that spans arriving after their trace's decision follow it.
    #[serde(default = "default_decided")]
    pub decided_traces: usize,
    /// What a trace no policy holds for gets.
    #[serde(default = "default_decision")]
    pub default: Decision,
    /// The policies, in order: the first that holds decides.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

fn default_wait() -> Duration {
    Duration::from_secs(10)
}
fn default_max_traces() -> usize {
    50_000
}
fn default_decided() -> usize {
    100_000
}
fn default_decision() -> Decision {
    Decision::Drop
}

/// A tail sampler: the traces held and the policies that decide them.
pub struct TailSampler {
    policies: Policies,
    held: Mutex<Held>,
    /// Woken whenever traces were decided.
    decided: Notify,
    /// Set once the exporter drains: everything is decided at once from then on.
    draining: AtomicBool,
    /// Where decisions are kept across restarts (exporters with a durable queue).
    journal: Option<Arc<Journal>>,
    /// Set once the journal's decisions were read back (on the first batch, so that a
    /// sampler being replaced by a reload has stopped writing).
    restored: AtomicBool,
    remembered: usize,
    counts: Counts,
}

/// What a tail sampler counts, labelled with its processor's name.
struct Counts {
    /// Traces decided, by the policy that decided (in [`Policies::names`] order) and how.
    decided: Vec<[Counter; 2]>,
    early: Counter,
    /// Late spans, by their trace's decision.
    late: [Counter; 2],
    /// Late spans whose trace's decision was forgotten.
    late_undecided: Counter,
    traces: Gauge,
    bytes: Gauge,
    journal_errors: Counter,
}

impl Counts {
    fn new(t: &Telemetry, processor: &str, policies: &Policies) -> Counts {
        let by_decision = |name: &'static str, help: &'static str, extra: &[(&str, &str)]| {
            [("decision", "keep"), ("decision", "drop")].map(|d| {
                let mut labels = vec![("processor", processor), d];
                labels.extend_from_slice(extra);
                t.counter(name, help, &labels)
            })
        };
        let p = [("processor", processor)];
        Counts {
            decided: policies
                .names()
                .map(|policy| {
                    by_decision(
                        "ferry_tail_traces_decided_total",
                        "Traces a tail sampler decided, by the policy that decided (or default).",
                        &[("policy", policy)],
                    )
                })
                .collect(),
            early: t.counter(
                "ferry_tail_early_decisions_total",
                "Traces a tail sampler decided before their wait was over, to stay within max_traces and max_bytes.",
                &p,
            ),
            late: by_decision(
                "ferry_tail_late_spans_total",
                "Spans that arrived after their trace was decided: following the decision, or (none) after it was forgotten.",
                &[],
            ),
            late_undecided: t.counter(
                "ferry_tail_late_spans_total",
                "Spans that arrived after their trace was decided: following the decision, or (none) after it was forgotten.",
                &[("processor", processor), ("decision", "none")],
            ),
            traces: t.gauge("ferry_tail_traces_held", "Traces a tail sampler holds undecided.", &p),
            bytes: t.gauge(
                "ferry_tail_bytes_held",
                "Bytes of the batches a tail sampler holds, waiting for their traces' decisions.",
                &p,
            ),
            journal_errors: t.counter(
                "ferry_tail_journal_errors_total",
                "Failed reads and writes of a tail sampler's decisions file (decisions then live in memory only).",
                &p,
            ),
        }
    }
}

fn slot(d: Decision) -> usize {
    match d {
        Decision::Keep => 0,
        Decision::Drop => 1,
    }
}

/// What one batch's spans are waiting for: their traces' verdicts and when each is due.
type Waiting = HashMap<TraceId, (Verdict, std::time::Instant)>;

impl TailSampler {
    /// Builds the processor `name` from its settings (at `path`) for an exporter with `queue`
    /// (none when only checking the settings), or says everything wrong with them.
    pub fn new(
        path: &str,
        name: &str,
        c: &TailConfig,
        telemetry: &Telemetry,
        queue: Option<&QueueView<'_>>,
    ) -> Result<TailSampler, Vec<String>> {
        let mut errors = Vec::new();
        if c.decision_wait.is_zero() {
            errors.push(format!("{path}.decision_wait: must be above 0"));
        }
        if let Some(idle) = c.idle
            && (idle.is_zero() || idle >= c.decision_wait)
        {
            errors.push(format!(
                "{path}.idle: must be above 0 and below decision_wait ({:?})",
                c.decision_wait
            ));
        }
        for (key, n) in [
            ("max_traces", Some(c.max_traces)),
            ("max_bytes", c.max_bytes),
        ] {
            if n == Some(0) {
                errors.push(format!("{path}.{key}: must be at least 1"));
            }
        }
        let budget = queue.map_or(usize::MAX, |q| q.budget);
        if let Some(n) = c.max_bytes
            && n >= budget
        {
            errors.push(format!(
                "{path}.max_bytes: {n} bytes must be below the exporter's queue budget ({budget} \
                 bytes), which holds the batches the sampler waits on"
            ));
        }
        let journal = match queue.and_then(|q| q.state) {
            Some(dir) if c.decided_traces > 0 => {
                let file = dir.join(crate::units::file_name(name, "decisions"));
                match Journal::open(&file) {
                    Ok(j) => Some(Arc::new(j)),
                    Err(e) => {
                        errors.push(format!(
                            "{path}: cannot open the decisions file {}: {e}",
                            file.display()
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        let policies = Policies::compile(
            &format!("{path}.policies"),
            &c.policies,
            c.default,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let limits = Limits {
            wait: c.decision_wait,
            max_traces: c.max_traces,
            max_bytes: c.max_bytes.unwrap_or(budget / 2),
            // Early enough that the exporter never waits at its read-ahead limit.
            max_batches: crate::pipeline::router::HELD_BATCHES / 2,
            remembered: c.decided_traces,
            idle: c.idle,
        };
        Ok(TailSampler {
            counts: Counts::new(telemetry, name, &policies),
            policies,
            held: Mutex::new(Held::new(limits)),
            decided: Notify::new(),
            draining: AtomicBool::new(false),
            restored: AtomicBool::new(journal.is_none()),
            journal,
            remembered: c.decided_traces,
        })
    }

    /// Reads the journal's decisions back, once, before the first span is admitted.
    fn restore(&self, held: &mut Held) {
        let Some(j) = &self.journal else { return };
        if self.restored.swap(true, Ordering::Relaxed) {
            return;
        }
        match j.read(self.remembered) {
            Ok(decisions) => {
                tracing::info!(
                    decisions = decisions.len(),
                    "tail_sample: decisions restored"
                );
                for (id, d) in decisions {
                    held.remember(id, d);
                }
            }
            Err(e) => self.journal_failed("read", &e),
        }
    }

    fn journal_failed(&self, what: &str, e: &std::io::Error) {
        self.counts.journal_errors.inc();
        tracing::error!(
            "tail_sample: cannot {what} the decisions file ({e}); decisions are kept in memory \
             only, and a crash now may split a trace"
        );
    }

    /// Makes the decisions written so far durable before a batch that follows them is
    /// answered (and then exported, and its cursor moved past it).
    async fn sync_journal(&self) {
        let Some(j) = self.journal.clone() else {
            return;
        };
        let synced = tokio::task::spawn_blocking(move || j.sync()).await;
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.journal_failed("sync", &e),
            Err(e) => self.journal_failed("sync", &std::io::Error::other(e)),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // Nothing panics while holding it; a poisoned lock still holds consistent maps.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A validated traces request's spans of kept traces, once every trace it holds spans of
    /// is decided. A span without a trace id is kept.
    pub async fn process(&self, batch: &Bytes) -> Output {
        // Parsed twice, to admit and to cut out what is dropped, rather than kept parsed
        // through the wait: a parsed span's field table is about twice the span's size.
        let mut req = Msg::new(batch.clone());
        let mut known: HashMap<TraceId, Decision> = HashMap::new();
        let mut waiting = Waiting::new();
        let mut total = 0u64;
        let mut holding = None;
        {
            let now = Instant::now().into_std();
            let mut held = self.held();
            self.restore(&mut held);
            items::each_item(&mut req, |resource, scope, item| {
                total += 1;
                let view = item.view();
                let Ok(id) = TraceId::try_from(view.raw(span::TRACE_ID)) else {
                    return;
                };
                let root = view.raw(span::PARENT).is_empty();
                let span = HeldSpan {
                    resource: resource.encode(),
                    scope: scope.encode(),
                    span: item.encode(),
                };
                match held.admit(id, span, root, now) {
                    Admitted::Late(d) => {
                        self.counts.late[slot(d)].inc();
                        known.insert(id, d);
                    }
                    Admitted::Held(verdict, due, forgotten) => {
                        if forgotten {
                            self.counts.late_undecided.inc();
                        }
                        waiting.insert(id, (verdict, due));
                    }
                }
            });
            if !waiting.is_empty() {
                let id = held.hold_batch(batch.len(), waiting.keys().copied().collect());
                holding = Some(Holding { sampler: self, id });
            }
            self.gauges(&held);
        }
        drop(req);
        loop {
            let woken = self.decided.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.decide_due();
            waiting.retain(|id, (verdict, _)| match verdict.get() {
                Some(d) => {
                    known.insert(*id, *d);
                    false
                }
                None => true,
            });
            let Some(next) = waiting.values().map(|(_, due)| *due).min() else {
                break;
            };
            tokio::select! {
                () = tokio::time::sleep_until(Instant::from_std(next)) => {}
                () = &mut woken => {}
            }
        }
        drop(holding);
        self.sync_journal().await;
        if known.values().all(|d| *d == Decision::Keep) {
            return Output::Unchanged;
        }
        let mut req = Msg::new(batch.clone());
        let removed = items::retain_items(&mut req, |_, _, item| {
            TraceId::try_from(item.view().raw(span::TRACE_ID))
                .map_or(true, |id| known.get(&id) != Some(&Decision::Drop))
        });
        items::prune(crate::signal::Signal::Traces, &mut req);
        Output::Replaced {
            payload: req.encode(),
            items: u32::try_from(total - removed).unwrap_or(u32::MAX),
        }
    }

    /// Decides every trace that is due, or over a bound, and wakes the batches waiting.
    fn decide_due(&self) {
        let now = Instant::now().into_std();
        let mut held = self.held();
        let due = held.take_due(now, self.draining.load(Ordering::Relaxed));
        if due.is_empty() {
            return;
        }
        self.gauges(&held);
        let mut made = Vec::with_capacity(due.len());
        for (trace, verdict) in due {
            let msgs: Vec<(Msg, Msg, Msg)> = trace
                .spans
                .iter()
                .map(|s| {
                    (
                        Msg::new(s.resource.clone()),
                        Msg::new(s.scope.clone()),
                        Msg::new(s.span.clone()),
                    )
                })
                .collect();
            let views: Vec<SpanView<'_>> = msgs
                .iter()
                .map(|(resource, scope, span)| SpanView {
                    at: At { resource, scope },
                    span,
                })
                .collect();
            let (policy, decision) = self.policies.decide(&trace.id, &views, now);
            self.counts.decided[policy][slot(decision)].inc();
            if trace.early {
                self.counts.early.inc();
            }
            made.push((trace.id, verdict, decision));
        }
        // Written before any batch can see them: a batch that follows a decision is answered
        // only after the journal is synced past it.
        self.write_journal(&held, &made);
        for (id, verdict, decision) in made {
            held.settle(id, &verdict, decision);
        }
        drop(held);
        self.decided.notify_waiters();
    }

    fn write_journal(&self, held: &Held, made: &[(TraceId, Verdict, Decision)]) {
        let Some(j) = &self.journal else { return };
        match j.append(made.iter().map(|(id, _, d)| (id, *d))) {
            // Past twice what is remembered, the file is cut down to what is.
            Ok(records) if records > 2 * self.remembered => {
                let live = held
                    .remembered()
                    .chain(made.iter().map(|(id, _, d)| (id, *d)));
                if let Err(e) = j.rewrite(live) {
                    self.journal_failed("rewrite", &e);
                }
            }
            Ok(_) => {}
            Err(e) => self.journal_failed("write", &e),
        }
    }

    /// Decides every trace held now, early, and every trace that comes later as it comes,
    /// so that no batch waits (the exporter is draining before a shutdown).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.decide_due();
    }

    fn gauges(&self, held: &Held) {
        self.counts.traces.set(held.traces() as i64);
        self.counts.bytes.set(held.bytes() as i64);
    }
}

/// A batch the sampler holds, released when it is answered or given up (its future dropped).
struct Holding<'a> {
    sampler: &'a TailSampler,
    id: u64,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut held = self.sampler.held();
        held.release_batch(self.id);
        self.sampler.gauges(&held);
    }
}

#[cfg(test)]
mod tests;
