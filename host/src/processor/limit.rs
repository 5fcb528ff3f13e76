//! `limit`: truncates long string values and caps attributes, events and links per item,
//! recording what was cut in the OTLP `dropped_*_count` fields. Data point attributes are
//! never removed (they identify the series); their string values are truncated like others.

use bytes::Bytes;
use ferry_proto::common::{AnyValue, any_value};
use prost::Message;
use serde::Deserialize;

use super::items::{self, Any, edit_attrs, kv, log, span, string_any};
use super::msg::{Edit, Msg};
use super::{At, Native, Notes, Setup, Tally};
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
                s.truncate(cut(s, self.value).len());
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

    /// The `AnyValue` bytes `any` truncated, if it needs it.
    fn truncated(&self, any: &[u8]) -> Option<Bytes> {
        match Any::of(any)? {
            Any::Str(s) if s.len() > self.value => Some(string_any(cut(s, self.value))),
            // Arrays are rare in attributes: they take the decoded path.
            Any::Other(_) => {
                let mut v = AnyValue::decode(any).ok().map(Some)?;
                self.truncate(&mut v)
                    .then(|| v.unwrap_or_default().encode_to_vec().into())
            }
            _ => None,
        }
    }

    /// Caps and truncates attributes field `num` of `item`, adding what it removed to its
    /// field `dropped` (if it has one; data points do not).
    fn attrs(&self, item: &mut Msg, num: u32, dropped: Option<u32>) -> bool {
        let mut changed = false;
        if let Some(dropped) = dropped {
            changed |= cap(item, num, self.attributes, dropped);
        }
        if self.value != usize::MAX {
            changed |= edit_attrs(item, num, |k, v| match self.truncated(v) {
                Some(t) => Edit::Replace(kv(k.0, &t)),
                None => Edit::Keep,
            });
        }
        changed
    }
}

/// The longest start of `s` of at most `max` bytes that ends at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Keeps the first `max` of repeated field `num`, adding how many it removed to field
/// `dropped`.
fn cap(item: &mut Msg, num: u32, max: usize, dropped: u32) -> bool {
    let n = item.view().count(num);
    if n <= max {
        return false;
    }
    let mut seen = 0;
    item.edit(num, |_| {
        seen += 1;
        if seen > max { Edit::Remove } else { Edit::Keep }
    });
    let before = item.view().uint(dropped);
    item.set_uint(dropped, before + (n - max) as u64);
    true
}

impl Native for Limit {
    fn handles(&self, signal: Signal) -> bool {
        // Data points only have strings to truncate.
        signal != Signal::Metrics || self.value != usize::MAX
    }

    fn item(&self, signal: Signal, _: &At<'_>, item: &mut Msg, _: &mut Notes) -> Tally {
        let mut modified = 0;
        match signal {
            Signal::Traces => {
                let mut changed = self.attrs(item, span::ATTRS, Some(span::DROPPED_ATTRS));
                changed |= cap(item, span::EVENTS, self.events, span::DROPPED_EVENTS);
                changed |= cap(item, span::LINKS, self.links, span::DROPPED_LINKS);
                for (list, attrs, dropped) in [
                    (span::EVENTS, span::EVENT_ATTRS, span::EVENT_DROPPED_ATTRS),
                    (span::LINKS, span::LINK_ATTRS, span::LINK_DROPPED_ATTRS),
                ] {
                    if item.view().count(list) > 0 {
                        item.with_children(0, list, |_, e| {
                            changed |= self.attrs(e, attrs, Some(dropped));
                        });
                    }
                }
                modified += u64::from(changed);
            }
            Signal::Logs => {
                let mut changed = self.attrs(item, log::ATTRS, Some(log::DROPPED_ATTRS));
                if self.value != usize::MAX
                    && let Some(t) = self.truncated(item.view().raw(log::BODY))
                {
                    item.set_bytes(log::BODY, t);
                    changed = true;
                }
                modified += u64::from(changed);
            }
            Signal::Metrics => {
                items::points(item, |_, p, num| {
                    modified += u64::from(self.attrs(p, num, None));
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
