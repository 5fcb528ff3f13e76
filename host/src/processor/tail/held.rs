//! The traces a `tail_sample` holds: each trace's spans until it is due (the decision wait
//! after its first span, or the idle time after its root span when that comes first) or
//! pushed out early by the bounds, and the decisions made since,
//! remembered (least recently used out first) so that late spans follow their trace.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::policy::Decision;

/// A trace id.
pub type TraceId = [u8; 16];

/// A trace's decision once made, shared by every batch that holds some of its spans.
pub type Verdict = Arc<OnceLock<Decision>>;

/// One span held, with its resource and scope (slices of the batch it came in, which stays in
/// memory as long as one of its spans is held).
#[derive(Debug, Clone)]
pub struct HeldSpan {
    /// Its resource's encoding.
    pub resource: Bytes,
    /// Its scope's encoding.
    pub scope: Bytes,
    /// The span's encoding.
    pub span: Bytes,
}

/// What bounds a holder.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a trace is held after its first span.
    pub wait: Duration,
    /// Most traces held; past it the oldest is decided early.
    pub max_traces: usize,
    /// Most bytes of batches waiting for traces held; past it the traces of the oldest
    /// batches are decided early.
    pub max_bytes: usize,
    /// Most batches waiting, likewise (the exporter reads only so far ahead).
    pub max_batches: usize,
    /// Decisions remembered for late spans.
    pub remembered: usize,
    /// When set, a trace is due this long after its root span, if that is sooner.
    pub idle: Option<Duration>,
}

/// Where a span went.
#[derive(Debug)]
pub enum Admitted {
    /// Its trace was decided already (a late span): it follows the decision.
    Late(Decision),
    /// Held with its trace, decided at `due` at the latest; `true` when the trace was decided
    /// before and that decision is forgotten (a late span with no decision to follow: the
    /// trace is decided again, on what comes now).
    Held(Verdict, Instant, bool),
}

struct Trace {
    spans: Vec<HeldSpan>,
    /// The decision wait after its first span: its place in `order`.
    deadline: Instant,
    due: Instant,
    /// Whether its due time was brought forward by its root span.
    rooted: bool,
    /// Whether it was decided before, and the decision forgotten.
    forgotten: bool,
    verdict: Verdict,
}

/// A trace taken out to be decided.
pub struct Due {
    /// Its id.
    pub id: TraceId,
    /// Its spans, in the order they came.
    pub spans: Vec<HeldSpan>,
    /// Decided before its time, to stay within the bounds.
    pub early: bool,
}

/// The traces held and the decisions remembered.
pub struct Held {
    limits: Limits,
    traces: HashMap<TraceId, Trace>,
    /// Ids by first span, with when each is due: the order of both.
    order: VecDeque<(TraceId, Instant)>,
    /// Traces due sooner, after their root span: by when.
    rooted: BTreeSet<(Instant, TraceId)>,
    /// Batches waiting for traces held, oldest first.
    batches: VecDeque<Batch>,
    next_batch: u64,
    /// Their bytes.
    bytes: usize,
    decided: Decided,
}

impl Held {
    /// An empty holder.
    pub fn new(limits: Limits) -> Held {
        Held {
            decided: Decided::new(limits.remembered),
            limits,
            traces: HashMap::new(),
            order: VecDeque::new(),
            rooted: BTreeSet::new(),
            batches: VecDeque::new(),
            next_batch: 0,
            bytes: 0,
        }
    }

    /// Traces held.
    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    /// Bytes of the batches waiting for traces held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records a batch of `bytes` waiting for `traces` (held); returns its number, for
    /// [`Held::release_batch`] once it is answered or given up.
    pub fn hold_batch(&mut self, bytes: usize, traces: Vec<TraceId>) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.bytes += bytes;
        self.batches.push_back(Batch { id, bytes, traces });
        id
    }

    /// Forgets batch `id`.
    pub fn release_batch(&mut self, id: u64) {
        // Batches are answered about in the order they came: the search is short.
        if let Some(i) = self.batches.iter().position(|b| b.id == id)
            && let Some(b) = self.batches.remove(i)
        {
            self.bytes -= b.bytes;
        }
    }

    /// Takes a span of trace `id` (its `root`, without a parent), seen at `now`.
    pub fn admit(&mut self, id: TraceId, span: HeldSpan, root: bool, now: Instant) -> Admitted {
        if let Some(d) = self.decided.get(&id) {
            return Admitted::Late(d);
        }
        let due = now + self.limits.wait;
        let decided = &self.decided;
        let trace = self.traces.entry(id).or_insert_with(|| {
            self.order.push_back((id, due));
            Trace {
                spans: Vec::new(),
                deadline: due,
                due,
                rooted: false,
                forgotten: decided.forgotten.contains(&id),
                verdict: Verdict::default(),
            }
        });
        if let Some(idle) = self.limits.idle
            && root
            && !trace.rooted
            && now + idle < trace.due
        {
            trace.due = now + idle;
            trace.rooted = true;
            self.rooted.insert((trace.due, id));
        }
        trace.spans.push(span);
        Admitted::Held(trace.verdict.clone(), trace.due, trace.forgotten)
    }

    /// Takes out every trace due at `now` (every trace, with `all`), then the oldest while
    /// there are more than `max_traces`, then those the oldest batches wait for while they
    /// are over `max_bytes` or `max_batches`. Each must be settled with [`Held::settle`] before anything
    /// else is admitted.
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<(Due, Verdict)> {
        let mut out = Vec::new();
        while let Some(&(due, id)) = self.rooted.first() {
            if due > now && !all {
                break;
            }
            self.rooted.pop_first();
            // Gone when decided early, through `order`.
            if let Some(t) = self.traces.remove(&id) {
                out.push(self.taken(id, t, false));
            }
        }
        while let Some(&(id, due)) = self.order.front() {
            let over = self.traces.len() > self.limits.max_traces;
            if due > now && !over && !all {
                break;
            }
            self.order.pop_front();
            // Not there, or a later trace of the same id (decided after its root, forgotten,
            // and come again), which has an entry of its own.
            if self.traces.get(&id).is_none_or(|t| t.deadline != due) {
                continue;
            }
            let Some(t) = self.traces.remove(&id) else {
                continue;
            };
            out.push(self.taken(id, t, due > now));
        }
        // Deciding a batch's traces answers it (soon) and frees its bytes.
        let (mut bytes, mut count) = (self.bytes, self.batches.len());
        let mut oldest = 0;
        while (bytes > self.limits.max_bytes || count > self.limits.max_batches)
            && oldest < self.batches.len()
        {
            let b = &self.batches[oldest];
            bytes -= b.bytes;
            count -= 1;
            oldest += 1;
            for id in b.traces.clone() {
                if let Some(t) = self.traces.remove(&id) {
                    out.push(self.taken(id, t, true));
                }
            }
        }
        out
    }

    fn taken(&mut self, id: TraceId, t: Trace, early: bool) -> (Due, Verdict) {
        if t.rooted {
            self.rooted.remove(&(t.due, id));
        }
        let due = Due {
            id,
            spans: t.spans,
            early,
        };
        (due, t.verdict)
    }

    /// Records the decision on a trace taken out, for its batches and for late spans.
    pub fn settle(&mut self, id: TraceId, verdict: &Verdict, decision: Decision) {
        let _ = verdict.set(decision);
        self.decided.insert(id, decision);
    }

    /// Remembers a decision made before (read back from the decisions file).
    pub fn remember(&mut self, id: TraceId, decision: Decision) {
        self.decided.insert(id, decision);
    }

    /// The decisions remembered, least recently used first.
    pub fn remembered(&self) -> impl Iterator<Item = (&TraceId, Decision)> {
        self.decided.iter()
    }

    /// When the next trace held is due.
    pub fn next_due(&self) -> Option<Instant> {
        let rooted = self.rooted.first().map(|(d, _)| *d);
        let first = self.order.front().map(|(_, d)| *d);
        rooted.into_iter().chain(first).min()
    }
}

/// A batch waiting for traces held.
struct Batch {
    id: u64,
    bytes: usize,
    traces: Vec<TraceId>,
}

/// Decisions by trace id, the least recently used forgotten first.
struct Decided {
    capacity: usize,
    map: HashMap<TraceId, (Decision, u64)>,
    /// Ids by use; an entry whose stamp is not the map's is stale.
    order: VecDeque<(TraceId, u64)>,
    stamp: u64,
    forgotten: Forgotten,
}

/// Fingerprints of the last ids whose decisions were forgotten (as many as are remembered, at
/// 8 bytes each rather than an id and a decision), so that a span of such a trace can be told
/// from a new trace's and counted. Two ids may share a fingerprint: rarely, a new trace's spans
/// are counted as such late spans.
struct Forgotten {
    capacity: usize,
    ring: VecDeque<u64>,
    count: HashMap<u64, u32>,
}

fn fingerprint(id: &TraceId) -> u64 {
    let (hi, lo) = id.split_at(8);
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    word(lo).wrapping_add(word(hi).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Forgotten {
    fn push(&mut self, id: &TraceId) {
        let f = fingerprint(id);
        self.ring.push_back(f);
        *self.count.entry(f).or_default() += 1;
        if self.ring.len() > self.capacity
            && let Some(old) = self.ring.pop_front()
            && let Some(n) = self.count.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&old);
            }
        }
    }

    fn contains(&self, id: &TraceId) -> bool {
        self.count.contains_key(&fingerprint(id))
    }
}

impl Decided {
    fn new(capacity: usize) -> Decided {
        Decided {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
            forgotten: Forgotten {
                capacity,
                ring: VecDeque::new(),
                count: HashMap::new(),
            },
        }
    }

    fn touch(&mut self, id: TraceId) -> u64 {
        self.stamp += 1;
        self.order.push_back((id, self.stamp));
        // Stale entries are dropped once they are as many as the live ones.
        if self.order.len() > 2 * self.capacity.max(1) {
            let map = &self.map;
            self.order.retain(|(id, s)| {
                map.get(id).is_some_and(|(_, live)| live == s) || *s == self.stamp
            });
        }
        self.stamp
    }

    fn iter(&self) -> impl Iterator<Item = (&TraceId, Decision)> {
        self.order.iter().filter_map(|(id, s)| {
            let (d, live) = self.map.get(id)?;
            (live == s).then_some((id, *d))
        })
    }

    fn get(&mut self, id: &TraceId) -> Option<Decision> {
        let d = self.map.get(id)?.0;
        let stamp = self.touch(*id);
        self.map.insert(*id, (d, stamp));
        Some(d)
    }

    fn insert(&mut self, id: TraceId, d: Decision) {
        if self.capacity == 0 {
            return;
        }
        let stamp = self.touch(id);
        self.map.insert(id, (d, stamp));
        while self.map.len() > self.capacity {
            let Some((old, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, live)| *live == s) {
                self.map.remove(&old);
                self.forgotten.push(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests;
