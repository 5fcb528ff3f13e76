//! Where the items of an OTLP request sit in its protobuf bytes, and the walks the native
//! processors share over a [`Msg`]: items with their resource and scope, data points, and
//! attribute lists read and edited in place.

use std::borrow::Cow;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::msg::{Edit, Msg, Value, put_field, put_varint};
use crate::Signal;

/// Request → resource groups → scope groups → items: each level's field numbers.
const GROUPS: u32 = 1;
const RESOURCE: u32 = 1;
const SCOPES: u32 = 2;
const SCOPE: u32 = 1;
const ITEMS: u32 = 2;
/// Attributes of a `Resource`.
pub const RESOURCE_ATTRS: u32 = 1;
/// Attributes of an `InstrumentationScope`.
pub const SCOPE_ATTRS: u32 = 3;

/// Fields of a `Span`.
pub mod span {
    /// trace_id
    pub const TRACE_ID: u32 = 1;
    /// span_id
    pub const SPAN_ID: u32 = 2;
    /// trace_state
    pub const TRACE_STATE: u32 = 3;
    /// parent_span_id
    pub const PARENT: u32 = 4;
    /// name
    pub const NAME: u32 = 5;
    /// kind
    pub const KIND: u32 = 6;
    /// start_time_unix_nano
    pub const START: u32 = 7;
    /// end_time_unix_nano
    pub const END: u32 = 8;
    /// attributes
    pub const ATTRS: u32 = 9;
    /// dropped_attributes_count
    pub const DROPPED_ATTRS: u32 = 10;
    /// events
    pub const EVENTS: u32 = 11;
    /// dropped_events_count
    pub const DROPPED_EVENTS: u32 = 12;
    /// links
    pub const LINKS: u32 = 13;
    /// dropped_links_count
    pub const DROPPED_LINKS: u32 = 14;
    /// status
    pub const STATUS: u32 = 15;
    /// Status.code
    pub const STATUS_CODE: u32 = 3;
    /// Event.name
    pub const EVENT_NAME: u32 = 2;
    /// Event.attributes
    pub const EVENT_ATTRS: u32 = 3;
    /// Event.dropped_attributes_count
    pub const EVENT_DROPPED_ATTRS: u32 = 4;
    /// Link.attributes
    pub const LINK_ATTRS: u32 = 4;
    /// Link.dropped_attributes_count
    pub const LINK_DROPPED_ATTRS: u32 = 5;
}

/// Fields of a `LogRecord`.
pub mod log {
    /// severity_number
    pub const SEVERITY: u32 = 2;
    /// body
    pub const BODY: u32 = 5;
    /// attributes
    pub const ATTRS: u32 = 6;
    /// dropped_attributes_count
    pub const DROPPED_ATTRS: u32 = 7;
    /// trace_id
    pub const TRACE_ID: u32 = 9;
}

/// `Metric.name`.
pub const METRIC_NAME: u32 = 1;

/// The data fields of a `Metric` (gauge, sum, histogram, exponential histogram, summary) with
/// the attributes field of their data points; points are field 1 of each.
const METRIC_DATA: [(u32, u32); 5] = [(5, 7), (7, 7), (9, 9), (10, 1), (11, 7)];
const POINTS: u32 = 1;

/// Calls `f` with each item (span, log record or metric) and its resource and scope.
pub fn each_item(req: &mut Msg, mut f: impl FnMut(&Msg, &Msg, &mut Msg)) {
    req.with_children(0, GROUPS, |_, group| {
        group.with_children(RESOURCE, SCOPES, |resource, sg| {
            sg.with_children(SCOPE, ITEMS, |scope, item| f(resource, scope, item))
        })
    })
}

/// Keeps the items for which `keep` is true; says how many it removed.
pub fn retain_items(req: &mut Msg, mut keep: impl FnMut(&Msg, &Msg, &mut Msg) -> bool) -> u64 {
    let mut removed = 0;
    req.with_children(0, GROUPS, |_, group| {
        group.with_children(RESOURCE, SCOPES, |resource, sg| {
            removed +=
                sg.retain_children(SCOPE, ITEMS, |scope, item| keep(resource, scope, item)) as u64
        })
    });
    removed
}

/// Calls `f` with each resource group's resource (added if absent) and how many items are
/// under it.
pub fn each_resource(signal: Signal, req: &mut Msg, mut f: impl FnMut(&mut Msg, u64)) {
    req.with_children(0, GROUPS, |_, group| {
        let mut items = 0;
        group.view().each_of(SCOPES, |sg| match signal {
            Signal::Metrics => sg.each_of(ITEMS, |m| items += point_count(m) as u64),
            _ => items += sg.count(ITEMS) as u64,
        });
        f(group.child(RESOURCE), items)
    })
}

/// Data points of a metric, whatever its type.
pub fn point_count(metric: Value<'_>) -> usize {
    let mut n = 0;
    metric.each(|num, data| {
        if METRIC_DATA.iter().any(|(d, _)| *d == num) {
            n += data.count(POINTS);
        }
    });
    n
}

/// Calls `f` with each data point of `metric`, its metric's name and the number of the
/// point's attributes field; removes the points for which `f` is false and says how many.
pub fn points(metric: &mut Msg, mut f: impl FnMut(&str, &mut Msg, u32) -> bool) -> usize {
    let name = metric.view().str(METRIC_NAME).to_string();
    let mut removed = 0;
    for (data, attrs) in METRIC_DATA {
        if metric.view().count(data) == 0 {
            continue;
        }
        metric.with_children(0, data, |_, d| {
            removed += d.retain_children(0, POINTS, |_, p| f(&name, p, attrs))
        });
    }
    removed
}

/// Removes resource and scope groups left without items (and, for metrics, metrics left
/// without points), so that what is forwarded has no empty shells.
pub fn prune(signal: Signal, req: &mut Msg) {
    req.with_children(0, GROUPS, |_, group| {
        if signal == Signal::Metrics {
            group.with_children(0, SCOPES, |_, sg| {
                sg.retain_children(0, ITEMS, |_, m| point_count(m.view()) > 0);
            })
        }
        group.retain_children(0, SCOPES, |_, sg| sg.view().count(ITEMS) > 0);
    });
    req.retain_children(0, GROUPS, |_, g| g.view().count(SCOPES) > 0);
}

/// An attribute value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Any<'a> {
    /// string_value
    Str(&'a str),
    /// bool_value
    Bool(bool),
    /// int_value
    Int(i64),
    /// double_value
    Double(f64),
    /// bytes_value
    Bytes(&'a [u8]),
    /// An array or key-value list: the whole `AnyValue`'s bytes.
    Other(&'a [u8]),
}

impl<'a> Any<'a> {
    /// The value in `AnyValue` bytes; `None` if it holds none.
    pub fn of(any: &'a [u8]) -> Option<Any<'a>> {
        let v = Value::Bytes(any);
        let mut out = None;
        v.each(|num, val| {
            out = match (num, val) {
                (1, Value::Bytes(b)) => Some(Any::Str(std::str::from_utf8(b).unwrap_or(""))),
                (2, Value::Int(x)) => Some(Any::Bool(x != 0)),
                (3, Value::Int(x)) => Some(Any::Int(x as i64)),
                (4, Value::Int(x)) => Some(Any::Double(f64::from_bits(x))),
                (7, Value::Bytes(b)) => Some(Any::Bytes(b)),
                (5 | 6, _) => Some(Any::Other(any)),
                _ => out,
            }
        });
        out
    }

    /// The value as text, the form that regexes, hashes and masks act on: strings as they
    /// are, numbers and booleans as they print, anything else as its protobuf bytes in hex.
    pub fn text(self) -> Cow<'a, str> {
        match self {
            Any::Str(s) => s.into(),
            Any::Int(i) => i.to_string().into(),
            Any::Double(d) => d.to_string().into(),
            Any::Bool(b) => b.to_string().into(),
            Any::Bytes(b) | Any::Other(b) => hex(b).into(),
        }
    }
}

/// The `AnyValue` bytes of a string.
pub fn string_any(s: &str) -> Bytes {
    let mut out = Vec::with_capacity(s.len() + 4);
    put_field(&mut out, 1, s.as_bytes());
    out.into()
}

/// The `AnyValue` bytes of an integer.
pub fn int_any(i: i64) -> Bytes {
    let mut out = vec![3 << 3];
    put_varint(&mut out, i as u64);
    out.into()
}

/// The bytes of a `KeyValue`.
pub fn kv(key: impl AsRef<[u8]>, any: &[u8]) -> Bytes {
    let key = key.as_ref();
    let mut out = Vec::with_capacity(key.len() + any.len() + 6);
    put_field(&mut out, 1, key);
    put_field(&mut out, 2, any);
    out.into()
}

/// Length-delimited field `tag` at the start of `b`: its bytes, and what follows.
#[inline(always)]
fn len_field(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let [t, l, rest @ ..] = b else { return None };
    if *t != tag {
        return None;
    }
    let (len, rest) = if *l < 0x80 {
        (usize::from(*l), rest)
    } else {
        let mut pos = 1;
        let len = crate::varint(b, &mut pos, 0).ok()?;
        (usize::try_from(len).ok()?, &b[pos..])
    };
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// A `KeyValue` written as its key, then its value (the layout encoders write): their bytes.
#[inline]
pub fn kv_layout(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let (key, rest) = len_field(kv, 0x0a)?;
    let (value, rest) = len_field(rest, 0x12)?;
    rest.is_empty().then_some((key, value))
}

/// An `AnyValue` holding only a string (`Some` of its bytes) or only a boolean, integer or
/// double (`Some(None)`): the values that need no walk to check.
#[inline]
pub fn simple_layout(any: &[u8]) -> Option<Option<&[u8]>> {
    match any.first()? {
        0x0a => len_field(any, 0x0a).and_then(|(s, rest)| rest.is_empty().then_some(Some(s))),
        // bool_value, int_value: one varint filling the rest.
        0x10 | 0x18 => {
            let mut pos = 1;
            crate::varint(any, &mut pos, 0).ok()?;
            (pos == any.len()).then_some(None)
        }
        // double_value: eight bytes.
        0x21 => (any.len() == 9).then_some(None),
        _ => None,
    }
}

/// A `KeyValue`'s key and `AnyValue` bytes.
#[inline]
pub fn kv_parts(kv: &[u8]) -> (Key<'_>, &[u8]) {
    let (k, v) = kv_layout(kv).unwrap_or_else(|| {
        let v = Value::Bytes(kv);
        (v.raw(1), v.raw(2))
    });
    (Key(k), v)
}

/// An attribute's key, as it is in the request: compared as bytes, read as text only when a
/// processor needs text (a regex, a set of names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a>(pub &'a [u8]);

impl<'a> Key<'a> {
    /// Whether the key is `s`.
    #[inline]
    pub fn is(self, s: &str) -> bool {
        // Keys often share a prefix (`http.method`, `http.route`): the last byte tells most
        // apart without a call to compare them whole.
        let s = s.as_bytes();
        self.0.len() == s.len() && self.0.last() == s.last() && self.0 == s
    }

    /// The key as text (validated UTF-8).
    pub fn text(self) -> &'a str {
        std::str::from_utf8(self.0).unwrap_or("")
    }
}

/// The `AnyValue` bytes of attribute `key` in attributes field `num` of `item`.
pub fn attr<'a>(item: Value<'a>, num: u32, key: &str) -> Option<&'a [u8]> {
    let mut found = None;
    item.each_of(num, |v| {
        if let (None, Value::Bytes(b)) = (found, v) {
            let (k, any) = kv_parts(b);
            if k.is(key) {
                found = Some(any);
            }
        }
    });
    found
}

/// Edits each attribute of attributes field `num`, given its key and value; says whether
/// anything changed.
pub fn edit_attrs(item: &mut Msg, num: u32, mut f: impl FnMut(Key<'_>, &[u8]) -> Edit) -> bool {
    item.edit(num, |b| {
        let (k, any) = kv_parts(b);
        f(k, any)
    })
}

/// The resource's `service.name`, or "" without one.
pub fn service(resource: &Msg) -> &str {
    match attr(resource.view(), RESOURCE_ATTRS, "service.name").and_then(Any::of) {
        Some(Any::Str(s)) => s,
        _ => "",
    }
}

/// The `AnyValue` bytes of a value's SHA-256 in lower-case hex.
pub fn hashed(any: Any<'_>) -> Bytes {
    string_any(&hex(&Sha256::digest(any.text().as_bytes())))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::common::{AnyValue, KeyValue, any_value};
    use prost::Message;

    fn pkv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn built_values_decode_as_prost_encodes_them() {
        let kv_prost = KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(-7)),
            }),
            ..Default::default()
        };
        assert_eq!(&kv("k", &int_any(-7))[..], &kv_prost.encode_to_vec()[..]);
        let s = AnyValue {
            value: Some(any_value::Value::StringValue("é".into())),
        };
        assert_eq!(&string_any("é")[..], &s.encode_to_vec()[..]);
        assert_eq!(Any::of(&s.encode_to_vec()), Some(Any::Str("é")));
        assert_eq!(Any::of(&[]), None);
    }

    fn span_request() -> ferry_proto::trace_service::ExportTraceServiceRequest {
        use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
        let attr = pkv;
        ferry_proto::trace_service::ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    spans: (1..=3u8)
                        .map(|i| Span {
                            trace_id: vec![i; 16],
                            span_id: vec![i; 8],
                            name: format!("op-{i}"),
                            attributes: vec![attr("a", "1"), attr("b", "2")],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn untouched_messages_keep_their_bytes_and_edits_decode_as_intended() {
        use ferry_proto::trace_service::ExportTraceServiceRequest as Req;
        let original = span_request();
        let bytes = Bytes::from(original.encode_to_vec());
        let mut req = Msg::new(bytes.clone());
        // Opened and read, never changed: the very same bytes come out.
        each_item(&mut req, |_, _, s| {
            assert!(s.view().str(span::NAME).starts_with("op-"))
        });
        assert_eq!(req.encode().as_ptr(), bytes.as_ptr());

        let removed = retain_items(&mut req, |_, _, s| s.view().str(span::NAME) != "op-2");
        assert_eq!(removed, 1);
        each_item(&mut req, |_, _, s| {
            edit_attrs(s, span::ATTRS, |k, _| {
                if k.is("a") { Edit::Remove } else { Edit::Keep }
            });
            s.push(span::ATTRS, kv("c", &int_any(3)));
            s.set_bytes(span::TRACE_STATE, "ot=th:8".into());
            s.set_uint(span::DROPPED_ATTRS, 1);
        });
        each_resource(Signal::Traces, &mut req, |r, items| {
            assert_eq!(items, 2);
            r.push(RESOURCE_ATTRS, kv("service.name", &string_any("api")));
        });
        let out = Req::decode(req.encode()).unwrap();
        let mut want = original;
        let rs = &mut want.resource_spans[0];
        rs.resource = Some(ferry_proto::resource::Resource {
            attributes: vec![pkv("service.name", "api")],
            ..Default::default()
        });
        let spans = &mut rs.scope_spans[0].spans;
        spans.remove(1);
        for s in spans.iter_mut() {
            s.attributes.remove(0);
            s.attributes.push(KeyValue {
                key: "c".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(3)),
                }),
                ..Default::default()
            });
            s.trace_state = "ot=th:8".into();
            s.dropped_attributes_count = 1;
        }
        assert_eq!(out, want);
        each_item(&mut req, |r, _, _| assert_eq!(service(r), "api"));
    }

    #[test]
    fn a_message_that_does_not_split_is_written_as_it_came() {
        // Unreachable after the check; if it ever happened, edits are lost, never content.
        let junk = Bytes::from_static(&[0x0a, 0x05, 1]);
        let mut m = Msg::new(junk.clone());
        m.push(1, Bytes::from_static(b"x"));
        assert_eq!(m.encode(), junk);
    }

    #[test]
    fn attributes_written_in_another_order_read_the_same() {
        // Value first, then key: valid protobuf, off the fast path.
        let mut b = Vec::new();
        put_field(&mut b, 2, &string_any("v"));
        put_field(&mut b, 1, b"k");
        let want = (Key(b"k"), &string_any("v")[..]);
        assert_eq!(kv_parts(&b), want);
        assert_eq!(kv_parts(&kv("k", &string_any("v"))), want);
    }
}
