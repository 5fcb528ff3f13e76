//! `limit`: truncates long string values and caps attributes, events and links per item,
//! recording what was cut in the OTLP `dropped_*_count` fields. Data point attributes are
//! never removed (they identify the series); their string values are truncated like others.

use ferry_proto::common::{AnyValue, KeyValue, any_value};
use serde::Deserialize;

use super::{Decoded, Native, Setup, Tally, otlp};
use crate::signal::Signal;

/// `kind = "limit"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    /// Longest string value kept, in bytes (cut at a character boundary).
    #[serde(default, deserialize_with = "crate::units::de_opt_bytes")]
    max_value_bytes: Option<usize>,
    /// Most attributes per span, span event, link or log record.
    max_attributes: Option<usize>,
    /// Most events per span.
    max_events: Option<usize>,
    /// Most links per span.
    max_links: Option<usize>,
}

struct Limit {
    value: usize,
    attributes: usize,
    events: usize,
    links: usize,
}

/// Builds a `limit` processor.
pub fn build(s: &Setup<'_>) -> Result<Box<dyn Native>, Vec<String>> {
    let c: LimitConfig = s.parse()?;
    if c.max_value_bytes.is_none()
        && c.max_attributes.is_none()
        && c.max_events.is_none()
        && c.max_links.is_none()
    {
        return Err(vec![format!(
            "{}: set at least one of max_value_bytes, max_attributes, max_events, max_links",
            s.path
        )]);
    }
    Ok(Box::new(Limit {
        value: c.max_value_bytes.unwrap_or(usize::MAX),
        attributes: c.max_attributes.unwrap_or(usize::MAX),
        events: c.max_events.unwrap_or(usize::MAX),
        links: c.max_links.unwrap_or(usize::MAX),
    }))
}

impl Limit {
    fn truncate(&self, v: &mut Option<AnyValue>) -> bool {
        match v.as_mut().and_then(|v| v.value.as_mut()) {
            Some(any_value::Value::StringValue(s)) if s.len() > self.value => {
                let mut end = self.value;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                true
            }
            Some(any_value::Value::ArrayValue(a)) => a.values.iter_mut().fold(false, |c, v| {
                let mut o = Some(std::mem::take(v));
                let t = self.truncate(&mut o);
                *v = o.unwrap_or_default();
                c | t
            }),
            _ => false,
        }
    }

    /// Caps and truncates one attribute list, adding what it removed to `dropped`.
    fn attrs(&self, attrs: &mut Vec<KeyValue>, dropped: Option<&mut u32>) -> bool {
        let mut changed = false;
        if let Some(dropped) = dropped
            && attrs.len() > self.attributes
        {
            *dropped += (attrs.len() - self.attributes) as u32;
            attrs.truncate(self.attributes);
            changed = true;
        }
        if self.value != usize::MAX {
            for kv in attrs.iter_mut() {
                changed |= self.truncate(&mut kv.value);
            }
        }
        changed
    }
}

fn cap<T>(list: &mut Vec<T>, max: usize, dropped: &mut u32) -> bool {
    if list.len() <= max {
        return false;
    }
    *dropped += (list.len() - max) as u32;
    list.truncate(max);
    true
}

impl Native for Limit {
    fn handles(&self, signal: Signal) -> bool {
        // Data points only have strings to truncate.
        signal != Signal::Metrics || self.value != usize::MAX
    }

    fn process(&self, data: &mut Decoded) -> Tally {
        let mut modified = 0;
        match data {
            Decoded::Traces(r) => otlp::each_span(r, |_, _, s| {
                let mut changed =
                    self.attrs(&mut s.attributes, Some(&mut s.dropped_attributes_count));
                changed |= cap(&mut s.events, self.events, &mut s.dropped_events_count);
                changed |= cap(&mut s.links, self.links, &mut s.dropped_links_count);
                for e in &mut s.events {
                    changed |= self.attrs(&mut e.attributes, Some(&mut e.dropped_attributes_count));
                }
                for l in &mut s.links {
                    changed |= self.attrs(&mut l.attributes, Some(&mut l.dropped_attributes_count));
                }
                modified += u64::from(changed);
            }),
            Decoded::Logs(r) => otlp::each_log(r, |_, _, l| {
                let changed = self.attrs(&mut l.attributes, Some(&mut l.dropped_attributes_count))
                    | (self.value != usize::MAX && self.truncate(&mut l.body));
                modified += u64::from(changed);
            }),
            Decoded::Metrics(r) => otlp::each_metric(r, |_, _, m| {
                otlp::each_point_attrs(m, |_, attrs| {
                    modified += u64::from(self.attrs(attrs, None))
                });
            }),
        }
        Tally {
            dropped: 0,
            modified,
        }
    }
}
