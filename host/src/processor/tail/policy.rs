//! `tail_sample`'s policies: tests on a whole trace, evaluated in order once the trace is due;
//! the first that holds decides, and a trace no policy holds for gets the default.
//!
//! Every test but the rate limit depends only on the trace's spans, so the same spans always
//! get the same decision (a replay decides as the first run did).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::processor::At;
use crate::processor::condition::{Item, Match, MatchConfig, Target};
use crate::processor::items::{self, span};
use crate::processor::msg::Msg;
use crate::processor::sample;

/// What a trace gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Exported, every span of it.
    #[default]
    Keep,
    /// Dropped, every span of it, and counted.
    Drop,
}

/// One entry of `policies`, or (without `name` and `decision`) one test inside `any` / `all`.
/// The tests it sets must all hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Its name in metrics (top-level policies only, and required there).
    pub name: Option<String>,
    /// What a trace it holds for gets (top level only; default `keep`).
    pub decision: Option<Decision>,
    /// Some span of the trace meets these conditions (those of `filter`).
    pub spans: Option<MatchConfig>,
    /// The trace has at least this many spans.
    pub min_spans: Option<usize>,
    /// The trace lasts at least this long: its root span's duration when the root is there,
    /// else from its first span's start to its last span's end.
    pub duration_at_least: Option<String>,
    /// Holds with this probability in percent, by trace id as the `sample` processor decides
    /// (the same 56 bits of randomness), so the two agree on which traces are in.
    pub percentage: Option<f64>,
    /// At most this many spans a second decided by this policy, per service (the root span's,
    /// else the first span's); a trace over it falls through to the next policy. Top level
    /// only; the only test whose answer depends on time.
    pub spans_per_second: Option<f64>,
    /// Holds when any of these holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<PolicyConfig>,
    /// Holds when all of these hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<PolicyConfig>,
}

/// One span of a trace, where it sits.
pub struct SpanView<'a> {
    /// Its resource and scope.
    pub at: At<'a>,
    /// The span.
    pub span: &'a Msg,
}

/// The checked policies of one processor.
pub struct Policies {
    policies: Vec<Policy>,
    default: Decision,
}

struct Policy {
    name: String,
    decision: Decision,
    test: Test,
    rate: Option<RateLimit>,
}

#[derive(Default)]
struct Test {
    spans: Option<Match>,
    min_spans: Option<usize>,
    duration_at_least: Option<u64>,
    threshold: Option<u64>,
    any: Vec<Test>,
    all: Vec<Test>,
}

/// A token bucket per service: `rate` spans a second, as many in a burst.
struct RateLimit {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Services a rate limit keeps a bucket for; past it the oldest buckets are forgotten (a
/// forgotten service starts again with a full bucket).
const MAX_BUCKETS: usize = 10_000;

impl RateLimit {
    fn take(&self, service: &str, spans: usize, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(service) {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                buckets.remove(&k);
            }
        }
        let (tokens, at) = buckets
            .entry(service.to_string())
            .or_insert((self.rate, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *at = now;
        let need = spans as f64;
        if *tokens >= need {
            *tokens -= need;
            true
        } else {
            false
        }
    }
}

impl PolicyConfig {
    fn compile(&self, path: &str, top: bool, errors: &mut Vec<String>) -> Test {
        if !top {
            for (key, set) in [
                ("name", self.name.is_some()),
                ("decision", self.decision.is_some()),
                ("spans_per_second", self.spans_per_second.is_some()),
            ] {
                if set {
                    errors.push(format!("{path}.{key}: only a top-level policy has one"));
                }
            }
        }
        let duration_at_least = self.duration_at_least.as_deref().and_then(|d| {
            crate::units::parse_duration(d)
                .map_err(|e| errors.push(format!("{path}.duration_at_least: {e}")))
                .ok()
                .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        });
        let threshold = self.percentage.and_then(|p| {
            if (0.0..=100.0).contains(&p) {
                Some(sample::threshold(p / 100.0, 14))
            } else {
                errors.push(format!(
                    "{path}.percentage: must be between 0 and 100, not {p}"
                ));
                None
            }
        });
        let nested = |list: &[PolicyConfig], key: &str, errors: &mut Vec<String>| {
            list.iter()
                .enumerate()
                .map(|(i, p)| p.compile(&format!("{path}.{key}[{i}]"), false, errors))
                .collect()
        };
        Test {
            spans: self
                .spans
                .as_ref()
                .and_then(|m| m.compile(&format!("{path}.spans"), Target::Span, errors)),
            min_spans: self.min_spans,
            duration_at_least,
            threshold,
            any: nested(&self.any, "any", errors),
            all: nested(&self.all, "all", errors),
        }
    }
}

impl Policies {
    /// Checks `policies` (at `path`, e.g. `processors.tail.policies`), naming every problem.
    pub fn compile(
        path: &str,
        policies: &[PolicyConfig],
        default: Decision,
        errors: &mut Vec<String>,
    ) -> Policies {
        let mut names = HashMap::new();
        let policies = policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("{path}[{i}]");
                let name = match &p.name {
                    Some(n) if !n.is_empty() => n.clone(),
                    _ => {
                        errors.push(format!("{at}.name: every policy needs a name"));
                        String::new()
                    }
                };
                if let Some(first) = names.insert(name.clone(), i)
                    && !name.is_empty()
                {
                    errors.push(format!("{at}.name: {name:?} is taken by {path}[{first}]"));
                }
                if name == DEFAULT {
                    errors.push(format!("{at}.name: {DEFAULT:?} names the default"));
                }
                let rate = p.spans_per_second.and_then(|r| {
                    if r.is_finite() && r > 0.0 {
                        Some(RateLimit {
                            rate: r,
                            buckets: Mutex::default(),
                        })
                    } else {
                        errors.push(format!("{at}.spans_per_second: must be above 0, not {r}"));
                        None
                    }
                });
                Policy {
                    name,
                    decision: p.decision.unwrap_or_default(),
                    test: p.compile(&at, true, errors),
                    rate,
                }
            })
            .collect();
        Policies { policies, default }
    }

    /// The policies' names, in order, then [`DEFAULT`]: the labels [`Policies::decide`]
    /// answers with.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies
            .iter()
            .map(|p| p.name.as_str())
            .chain([DEFAULT])
    }

    /// The decision on a trace of these spans (in the order they arrived), and the index in
    /// [`Policies::names`] of what made it.
    pub fn decide(
        &self,
        trace_id: &[u8],
        spans: &[SpanView<'_>],
        now: Instant,
    ) -> (usize, Decision) {
        let facts = Facts::of(trace_id, spans);
        for (i, p) in self.policies.iter().enumerate() {
            if !p.test.holds(&facts, spans) {
                continue;
            }
            if let Some(rate) = &p.rate
                && !rate.take(facts.service, spans.len(), now)
            {
                continue;
            }
            return (i, p.decision);
        }
        (self.policies.len(), self.default)
    }
}

/// The label of a decision no policy made.
pub const DEFAULT: &str = "default";

/// What every test reads of a trace, worked out once.
struct Facts<'a> {
    randomness: Option<u64>,
    duration: u64,
    service: &'a str,
}

impl<'a> Facts<'a> {
    fn of(trace_id: &[u8], spans: &'a [SpanView<'a>]) -> Facts<'a> {
        let root = spans
            .iter()
            .find(|s| s.span.view().raw(span::PARENT).is_empty());
        let duration = match root {
            Some(r) => span_duration(r.span),
            None => {
                let start = spans.iter().map(|s| s.span.view().uint(span::START)).min();
                let end = spans.iter().map(|s| s.span.view().uint(span::END)).max();
                end.unwrap_or(0).saturating_sub(start.unwrap_or(0))
            }
        };
        let service = root
            .or(spans.first())
            .map_or("", |s| items::service(s.at.resource));
        Facts {
            randomness: sample::randomness(trace_id),
            duration,
            service,
        }
    }
}

fn span_duration(s: &Msg) -> u64 {
    let v = s.view();
    v.uint(span::END).saturating_sub(v.uint(span::START))
}

impl Test {
    fn holds(&self, facts: &Facts<'_>, spans: &[SpanView<'_>]) -> bool {
        self.spans.as_ref().is_none_or(|m| {
            spans
                .iter()
                .any(|s| m.holds(&s.at.view(Item::Span(s.span))))
        }) && self.min_spans.is_none_or(|n| spans.len() >= n)
            && self.duration_at_least.is_none_or(|d| facts.duration >= d)
            // A trace without a usable id is kept by no probability.
            && self
                .threshold
                .is_none_or(|t| facts.randomness.is_some_and(|r| r >= t))
            && (self.any.is_empty() || self.any.iter().any(|t| t.holds(facts, spans)))
            && self.all.iter().all(|t| t.holds(facts, spans))
    }
}

#[cfg(test)]
mod tests;
