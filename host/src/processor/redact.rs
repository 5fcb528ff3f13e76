//! `redact`: keeps only allowed attribute keys and masks values that look like secrets
//! (credit card numbers, e-mail addresses, user-given regexes), on spans, span events, log
//! records (and their string bodies) and data points. What it removed and masked is counted,
//! in metrics and, per item, in `redaction.removed.count` / `redaction.masked.count`
//! attributes: never the values themselves.

use std::collections::HashSet;

use regex::Regex;
use serde::Deserialize;

use super::attributes::{ApplyTo, every_target};
use super::condition::regex;
use super::items::{self, Any, edit_attrs, int_any, kv, log, span, string_any};
use super::msg::{Edit, Msg};
use super::{At, Native, Notes, Setup, Tally};
use crate::signal::Signal;
use crate::telemetry::Counter;

/// Built-in value patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Builtin {
    /// 13 to 19 digits (spaces or dashes between) that pass the Luhn check.
    CreditCard,
    /// `local@domain.tld`.
    Email,
}

/// `kind = "redact"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactConfig {
    /// Attribute keys kept; every other attribute is removed. Unset: every key is kept.
    allowed_keys: Option<Vec<String>>,
    /// Keys never removed or masked.
    #[serde(default)]
    ignored_keys: Vec<String>,
    /// Built-in value patterns to mask.
    #[serde(default)]
    mask: Vec<Builtin>,
    /// Regexes whose matches in string values are masked.
    #[serde(default)]
    blocked_values: Vec<String>,
    /// Add `redaction.removed.count` / `redaction.masked.count` to items that lost something.
    #[serde(default = "yes")]
    summary: bool,
    /// Which items' attributes it acts on.
    #[serde(default = "every_target")]
    apply_to: Vec<ApplyTo>,
}

fn yes() -> bool {
    true
}

/// What replaces a masked match.
pub const MASK: &str = "****";

const CARD: &str = r"\b\d(?:[ -]?\d){12,18}\b";
const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}";

struct Pattern {
    regex: Regex,
    luhn: bool,
}

struct Redact {
    allowed: Option<HashSet<String>>,
    ignored: HashSet<String>,
    patterns: Vec<Pattern>,
    summary: bool,
    apply_to: Vec<ApplyTo>,
    removed: [Counter; 3],
    masked: [Counter; 3],
}

/// Builds a `redact` processor.
pub fn build(s: &Setup<'_>) -> Result<Box<dyn Native>, Vec<String>> {
    let c: RedactConfig = s.parse()?;
    let mut errors = Vec::new();
    let mut patterns: Vec<Pattern> = c
        .mask
        .iter()
        .map(|b| Pattern {
            regex: Regex::new(match b {
                Builtin::CreditCard => CARD,
                Builtin::Email => EMAIL,
            })
            .expect("built-in patterns compile"),
            luhn: *b == Builtin::CreditCard,
        })
        .collect();
    for (i, p) in c.blocked_values.iter().enumerate() {
        if let Some(regex) = regex(&format!("{}.blocked_values[{i}]", s.path), p, &mut errors) {
            patterns.push(Pattern { regex, luhn: false });
        }
    }
    if c.allowed_keys.is_none() && patterns.is_empty() {
        errors.push(format!(
            "{}: set allowed_keys, mask or blocked_values (as it is, it would change nothing)",
            s.path
        ));
    }
    if c.apply_to.is_empty() {
        errors.push(format!(
            "{}.apply_to: list at least one of spans, span_events, log_records, data_points",
            s.path
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let count = |action: &str| {
        Signal::ALL.map(|sig| {
            s.counter(
                "ferry_processor_redacted_total",
                "Attributes a redact processor removed, and values it masked.",
                &[("signal", sig.as_str()), ("action", action)],
            )
        })
    };
    Ok(Box::new(Redact {
        allowed: c.allowed_keys.map(|k| k.into_iter().collect()),
        ignored: c.ignored_keys.into_iter().collect(),
        patterns,
        summary: c.summary,
        apply_to: c.apply_to,
        removed: count("removed"),
        masked: count("masked"),
    }))
}

fn luhn(digits: &str) -> bool {
    let d: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                if x * 2 > 9 { x * 2 - 9 } else { x * 2 }
            } else {
                x
            }
        })
        .sum();
    (13..=19).contains(&d.len()) && sum.is_multiple_of(10)
}

#[derive(Default)]
struct Done {
    removed: u64,
    masked: u64,
}

impl Redact {
    /// `s` with every match masked, if any.
    fn mask(&self, s: &str) -> Option<(String, u64)> {
        let mut out: Option<String> = None;
        let mut n = 0;
        for p in &self.patterns {
            let current = out.as_deref().unwrap_or(s);
            let mut hits = 0;
            let next = p.regex.replace_all(current, |c: &regex::Captures<'_>| {
                if p.luhn && !luhn(&c[0]) {
                    c[0].to_string()
                } else {
                    hits += 1;
                    MASK.to_string()
                }
            });
            if hits > 0 {
                n += hits;
                out = Some(next.into_owned());
            }
        }
        out.map(|o| (o, n))
    }

    /// The masked `AnyValue` bytes of a string value that needs masking.
    fn value(&self, any: &[u8], done: &mut Done) -> Option<bytes::Bytes> {
        let Some(Any::Str(s)) = Any::of(any) else {
            return None;
        };
        let (masked, n) = self.mask(s)?;
        done.masked += n;
        Some(string_any(&masked))
    }

    /// Redacts attributes field `num` of `item`; says whether it changed.
    fn attrs(&self, item: &mut Msg, num: u32, signal: Signal, mut done: Done) -> bool {
        if let Some(allowed) = &self.allowed {
            edit_attrs(item, num, |k, _| {
                if allowed.contains(k.text()) || self.ignored.contains(k.text()) {
                    Edit::Keep
                } else {
                    done.removed += 1;
                    Edit::Remove
                }
            });
        }
        if !self.patterns.is_empty() {
            edit_attrs(item, num, |k, v| {
                match (!self.ignored.contains(k.text()))
                    .then(|| self.value(v, &mut done))
                    .flatten()
                {
                    Some(masked) => Edit::Replace(kv(k.0, &masked)),
                    None => Edit::Keep,
                }
            });
        }
        if done.removed + done.masked == 0 {
            return false;
        }
        self.removed[signal.index()].add(done.removed);
        self.masked[signal.index()].add(done.masked);
        if self.summary {
            for (key, n) in [
                ("redaction.removed.count", done.removed),
                ("redaction.masked.count", done.masked),
            ] {
                if n > 0 {
                    edit_attrs(
                        item,
                        num,
                        |k, _| {
                            if k.is(key) { Edit::Remove } else { Edit::Keep }
                        },
                    );
                    item.push(num, kv(key, &int_any(n as i64)));
                }
            }
        }
        true
    }
}

impl Native for Redact {
    fn handles(&self, signal: Signal) -> bool {
        self.apply_to.iter().any(|a| match a {
            ApplyTo::Spans | ApplyTo::SpanEvents => signal == Signal::Traces,
            ApplyTo::LogRecords => signal == Signal::Logs,
            ApplyTo::DataPoints => signal == Signal::Metrics,
        })
    }

    fn item(&self, signal: Signal, _: &At<'_>, item: &mut Msg, _: &mut Notes) -> Tally {
        let on = |a| self.apply_to.contains(&a);
        let mut modified = 0;
        match signal {
            Signal::Traces => {
                let mut changed =
                    on(ApplyTo::Spans) && self.attrs(item, span::ATTRS, signal, Done::default());
                if on(ApplyTo::SpanEvents) && item.view().count(span::EVENTS) > 0 {
                    item.with_children(0, span::EVENTS, |_, e| {
                        changed |= self.attrs(e, span::EVENT_ATTRS, signal, Done::default());
                    });
                }
                modified += u64::from(changed);
            }
            Signal::Logs => {
                let mut body = Done::default();
                if !self.patterns.is_empty()
                    && let Some(masked) = self.value(item.view().raw(log::BODY), &mut body)
                {
                    item.set_bytes(log::BODY, masked);
                }
                modified += u64::from(self.attrs(item, log::ATTRS, signal, body));
            }
            Signal::Metrics => {
                items::points(item, |_, p, num| {
                    modified += u64::from(self.attrs(p, num, signal, Done::default()));
                    true
                });
            }
        }
        Tally {
            dropped: 0,
            modified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::luhn;

    #[test]
    fn the_luhn_check_tells_card_numbers_from_other_digits() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234"));
    }
}
