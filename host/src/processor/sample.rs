//! `sample`: probabilistic sampling, consistent by trace id, following the OpenTelemetry
//! consistent probability sampling spec: the randomness is the trace id's low 56 bits (or an
//! explicit `rv` in `tracestate`), an item is kept when that is at least the rejection
//! threshold `T = (1 - p) · 2^56`, and `T` is recorded as `ot=th:…` in the span's
//! `tracestate`, so backends can compute adjusted counts and every sampler along the way (an
//! agent, then a gateway) agrees on each trace.
//!
//! Log records are sampled by their trace id when they have one (and carry the threshold in a
//! `sampling.threshold` attribute, as logs have no `tracestate`), else at random. Metrics pass.

use serde::Deserialize;

use super::items::{self, kv, log, span, string_any};
use super::msg::{Edit, Msg};
use super::{At, Native, Notes, Setup, Tally};
use crate::signal::Signal;

/// `kind = "sample"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleConfig {
    /// Share of traces kept, in percent (0 to 100).
    percentage: f64,
    /// Hex digits of the threshold kept (1 to 14): fewer make `tracestate` shorter and the
    /// probability coarser.
    #[serde(default = "default_precision")]
    precision: u32,
}

fn default_precision() -> u32 {
    4
}

const MAX: u64 = 1 << 56;

/// The rejection threshold for probability `p`, rounded to `precision` hex digits (never
/// to 2^56 unless `p` is 0, which keeps nothing).
pub fn threshold(p: f64, precision: u32) -> u64 {
    if p <= 0.0 {
        return MAX;
    }
    let exact = ((1.0 - p) * MAX as f64).round() as u64;
    let unit = 1u64 << (4 * (14 - precision.clamp(1, 14)));
    ((exact + unit / 2) / unit * unit).min(MAX - unit)
}

/// `T` as `tracestate` writes it: 14 hex digits with trailing zeros removed (`0` for `T = 0`).
pub fn encode_threshold(t: u64) -> String {
    if t == 0 {
        return "0".into();
    }
    let s = format!("{t:014x}");
    s.trim_end_matches('0').to_string()
}

fn decode_threshold(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 14 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0<14}");
    u64::from_str_radix(&padded, 16).ok()
}

/// The 56 bits of randomness of a trace id (its last 7 bytes).
pub fn randomness(trace_id: &[u8]) -> Option<u64> {
    let id: &[u8; 16] = trace_id.try_into().ok()?;
    if id.iter().all(|b| *b == 0) {
        return None;
    }
    Some(id[9..].iter().fold(0u64, |r, b| (r << 8) | u64::from(*b)))
}

/// The `ot` member of a `tracestate`, parsed: its `key:value` fields.
fn ot_fields(tracestate: &str) -> Vec<(&str, &str)> {
    tracestate
        .split(',')
        .map(str::trim)
        .find_map(|m| m.strip_prefix("ot="))
        .map(|ot| ot.split(';').filter_map(|f| f.split_once(':')).collect())
        .unwrap_or_default()
}

/// `tracestate` with the `ot` member's `th` set to `th` (other `ot` fields and members kept;
/// the edited member moves to the front, as W3C trace context asks).
pub fn with_threshold(tracestate: &str, th: &str) -> String {
    let mut ot = vec![format!("th:{th}")];
    ot.extend(
        ot_fields(tracestate)
            .into_iter()
            .filter(|(k, _)| *k != "th")
            .map(|(k, v)| format!("{k}:{v}")),
    );
    let mut members = vec![format!("ot={}", ot.join(";"))];
    members.extend(
        tracestate
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && !m.starts_with("ot="))
            .map(String::from),
    );
    members.join(",")
}

struct Sample {
    threshold: u64,
    th: String,
    /// The `tracestate` of a span that had none: most of them.
    fresh: bytes::Bytes,
}

/// Builds a `sample` processor.
pub fn build(s: &Setup<'_>) -> Result<Box<dyn Native>, Vec<String>> {
    let c: SampleConfig = s.parse()?;
    let mut errors = Vec::new();
    if !(0.0..=100.0).contains(&c.percentage) {
        errors.push(format!(
            "{}.percentage: must be between 0 and 100, not {}",
            s.path, c.percentage
        ));
    }
    if !(1..=14).contains(&c.precision) {
        errors.push(format!(
            "{}.precision: must be between 1 and 14, not {}",
            s.path, c.precision
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let threshold = threshold(c.percentage / 100.0, c.precision);
    let th = encode_threshold(threshold);
    Ok(Box::new(Sample {
        threshold,
        fresh: with_threshold("", &th).into(),
        th,
    }))
}

impl Sample {
    /// Whether to keep an item with randomness `r` that was already sampled at threshold
    /// `seen` (if at all).
    fn decide(&self, r: u64, seen: Option<u64>) -> bool {
        // Sampled before at a probability no higher than ours: it passes ours as it is.
        seen.is_some_and(|t| t >= self.threshold) || r >= self.threshold
    }
}

impl Native for Sample {
    fn handles(&self, signal: Signal) -> bool {
        signal != Signal::Metrics
    }

    fn item(&self, signal: Signal, _: &At<'_>, item: &mut Msg, _: &mut Notes) -> Tally {
        let dropped = Tally {
            dropped: 1,
            modified: 0,
        };
        let modified = Tally {
            dropped: 0,
            modified: 1,
        };
        match signal {
            Signal::Traces => {
                let state = item.view().str(span::TRACE_STATE);
                let fields = ot_fields(state);
                let field = |name| fields.iter().find(|(k, _)| *k == name).map(|f| f.1);
                let rv = field("rv").and_then(|v| {
                    (v.len() == 14)
                        .then(|| u64::from_str_radix(v, 16).ok())
                        .flatten()
                });
                let seen = field("th").and_then(decode_threshold);
                let r = rv
                    .or_else(|| randomness(item.view().raw(span::TRACE_ID)))
                    .unwrap_or(0);
                if !self.decide(r, seen) {
                    return dropped;
                }
                if seen.is_none_or(|s| s < self.threshold) {
                    let state = match state {
                        "" => self.fresh.clone(),
                        _ => with_threshold(state, &self.th).into(),
                    };
                    item.set_bytes(span::TRACE_STATE, state);
                    return modified;
                }
                Tally::default()
            }
            Signal::Logs => {
                let id = randomness(item.view().raw(log::TRACE_ID));
                if id.unwrap_or_else(|| rand::random::<u64>() >> 8) < self.threshold {
                    return dropped;
                }
                if id.is_none() {
                    return Tally::default();
                }
                items::edit_attrs(item, log::ATTRS, |k, _| {
                    if k.is("sampling.threshold") {
                        Edit::Remove
                    } else {
                        Edit::Keep
                    }
                });
                item.push(log::ATTRS, kv("sampling.threshold", &string_any(&self.th)));
                modified
            }
            Signal::Metrics => Tally::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_spec_examples() {
        // The spec's examples: 100% → th:0, 50% → th:8, 25% → th:c, 10% (4 digits) → th:e666.
        assert_eq!(encode_threshold(threshold(1.0, 4)), "0");
        assert_eq!(encode_threshold(threshold(0.5, 4)), "8");
        assert_eq!(encode_threshold(threshold(0.25, 4)), "c");
        assert_eq!(encode_threshold(threshold(0.1, 4)), "e666");
        assert_eq!(encode_threshold(threshold(1.0 / 3.0, 4)), "aaab");
        assert_eq!(decode_threshold("8"), Some(1 << 55));
        assert_eq!(threshold(0.0, 4), MAX, "0% rejects every randomness value");
    }

    #[test]
    fn randomness_is_the_low_56_bits_and_tracestate_keeps_other_members() {
        let id = hex_id("0102030405060708090a0b0c0d0e0f10");
        assert_eq!(randomness(&id), Some(0x0a0b0c0d0e0f10));
        assert_eq!(randomness(&[0; 16]), None);
        assert_eq!(with_threshold("", "8"), "ot=th:8");
        assert_eq!(
            with_threshold("vendor=x,ot=th:c;rv:abcdef01234567", "8"),
            "ot=th:8;rv:abcdef01234567,vendor=x"
        );
    }

    #[test]
    fn the_kept_fraction_matches_the_probability_and_resampling_agrees() {
        let sampler = |p: f64| {
            let t = threshold(p, 4);
            Sample {
                threshold: t,
                th: encode_threshold(t),
                fresh: bytes::Bytes::new(),
            }
        };
        let (half, tenth) = (sampler(0.5), sampler(0.1));
        let mut kept = [0u32; 2];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..100_000 {
            // splitmix64: trace ids spread like random ones.
            x = x.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            let r = (z ^ (z >> 31)) >> 8;
            let a = half.decide(r, None);
            kept[0] += u32::from(a);
            let b = tenth.decide(r, None);
            kept[1] += u32::from(b);
            // A second sampler at the same probability keeps what the first kept.
            if a {
                assert!(half.decide(r, Some(half.threshold)));
            }
            // Everything 10% keeps, 50% keeps as well.
            if b {
                assert!(a);
            }
        }
        // Binomial(100k, p): 5 standard deviations are ~790 (p = .5) and ~470 (p = .1).
        assert!((kept[0] as i64 - 50_000).abs() < 790, "{kept:?}");
        assert!((kept[1] as i64 - 10_000).abs() < 470, "{kept:?}");
    }

    fn hex_id(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
