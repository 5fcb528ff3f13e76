//! `filter`: drops spans, span events, log records, whole metrics or data points that meet
//! conditions. Each drop is counted by the condition that caused it, and spans left without
//! their parent in the same request are counted as orphaned, so a dropped parent never goes
//! unnoticed.

use serde::Deserialize;

use super::condition::{Item, ItemView, Match, MatchConfig, Target};
use super::items::{self, span};
use super::msg::Msg;
use super::{At, Native, Notes, Setup, Tally};
use crate::signal::Signal;
use crate::telemetry::Counter;

/// `kind = "filter"`: what to drop, per kind of item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    spans: Option<MatchConfig>,
    span_events: Option<MatchConfig>,
    log_records: Option<MatchConfig>,
    metrics: Option<MatchConfig>,
    data_points: Option<MatchConfig>,
}

/// A condition set and a counter per condition that can decide.
struct Rule {
    matcher: Match,
    counters: Vec<Counter>,
}

impl Rule {
    /// Whether the item goes; counted by the condition that sent it.
    fn drops(&self, view: &ItemView<'_>) -> bool {
        match self.matcher.first(view) {
            Some(i) => {
                self.counters[i.min(self.counters.len() - 1)].inc();
                true
            }
            None => false,
        }
    }
}

struct Filter {
    spans: Option<Rule>,
    span_events: Option<Rule>,
    log_records: Option<Rule>,
    metrics: Option<Rule>,
    data_points: Option<Rule>,
    orphans: Counter,
}

/// Builds a `filter` processor.
pub fn build(s: &Setup<'_>) -> Result<Box<dyn Native>, Vec<String>> {
    let c: FilterConfig = s.parse()?;
    let mut errors = Vec::new();
    let mut rule = |key: &str, m: &Option<MatchConfig>, target: Target, signal: Signal| {
        let m = m.as_ref()?;
        let matcher = m.compile(&format!("{}.{key}", s.path), target, &mut errors)?;
        let n = if m.all.is_empty() { m.any.len() } else { 1 };
        let counters = (0..n)
            .map(|i| {
                s.counter(
                    "ferry_processor_filtered_total",
                    "Items a filter dropped (span events and metrics count as one each), by the condition that matched.",
                    &[("signal", signal.as_str()), ("rule", &format!("{key}.{}", matcher.label(i)))],
                )
            })
            .collect();
        Some(Rule { matcher, counters })
    };
    let f = Filter {
        spans: rule("spans", &c.spans, Target::Span, Signal::Traces),
        span_events: rule(
            "span_events",
            &c.span_events,
            Target::SpanEvent,
            Signal::Traces,
        ),
        log_records: rule(
            "log_records",
            &c.log_records,
            Target::LogRecord,
            Signal::Logs,
        ),
        metrics: rule("metrics", &c.metrics, Target::Metric, Signal::Metrics),
        data_points: rule(
            "data_points",
            &c.data_points,
            Target::DataPoint,
            Signal::Metrics,
        ),
        orphans: s.counter(
            "ferry_processor_orphaned_spans_total",
            "Spans a filter kept whose parent it dropped from the same request.",
            &[],
        ),
    };
    if [
        &c.spans,
        &c.span_events,
        &c.log_records,
        &c.metrics,
        &c.data_points,
    ]
    .iter()
    .all(|m| m.is_none())
    {
        errors.push(format!(
            "{}: set at least one of spans, span_events, log_records, metrics, data_points",
            s.path
        ));
    }
    if errors.is_empty() {
        Ok(Box::new(f))
    } else {
        Err(errors)
    }
}

impl Native for Filter {
    fn handles(&self, signal: Signal) -> bool {
        match signal {
            Signal::Traces => self.spans.is_some() || self.span_events.is_some(),
            Signal::Logs => self.log_records.is_some(),
            Signal::Metrics => self.metrics.is_some() || self.data_points.is_some(),
        }
    }

    fn item(&self, signal: Signal, at: &At<'_>, item: &mut Msg, notes: &mut Notes) -> Tally {
        let mut t = Tally::default();
        match signal {
            Signal::Traces => {
                // Span first, so a dropped span's events are not also counted as edited.
                if let Some(rule) = &self.spans {
                    // Span ids as numbers, sorted in `finish`: hashing each parent id costs
                    // more than the rest of the orphan check (ids of another length were
                    // refused at the receiver and cannot be a parent).
                    if rule.drops(&at.view(Item::Span(item))) {
                        notes
                            .dropped
                            .extend(span_id(item.view().raw(span::SPAN_ID)));
                        t.dropped = 1;
                        return t;
                    }
                    notes.parents.extend(span_id(item.view().raw(span::PARENT)));
                }
                if let Some(rule) = &self.span_events
                    && item.view().count(span::EVENTS) > 0
                {
                    let removed = item.retain_children(0, span::EVENTS, |_, e| {
                        !rule.drops(&at.view(Item::SpanEvent(e)))
                    });
                    t.modified = u64::from(removed > 0);
                }
            }
            Signal::Logs => {
                if let Some(rule) = &self.log_records {
                    t.dropped = u64::from(rule.drops(&at.view(Item::LogRecord(item))));
                }
            }
            Signal::Metrics => {
                if let Some(rule) = &self.metrics
                    && rule.drops(&at.view(Item::Metric(item)))
                {
                    // The whole metric: every point in it.
                    t.dropped = items::point_count(item.view()) as u64;
                    return t;
                }
                if let Some(rule) = &self.data_points {
                    t.dropped = items::points(item, |name, p, num| {
                        !rule.drops(&at.view(Item::DataPoint(name, p, num)))
                    }) as u64;
                }
            }
        }
        t
    }

    fn finish(&self, notes: &mut Notes) {
        if notes.dropped.is_empty() {
            return;
        }
        notes.dropped.sort_unstable();
        let orphans = notes
            .parents
            .iter()
            .filter(|p| notes.dropped.binary_search(p).is_ok())
            .count();
        self.orphans.add(orphans as u64);
    }
}

fn span_id(id: &[u8]) -> Option<u64> {
    id.try_into().ok().map(u64::from_ne_bytes)
}
