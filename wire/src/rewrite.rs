//! A request rewritten item by item in one walk: each resource is edited first, then each
//! item under it is edited or removed and written out at once, and groups left without items
//! are left out. Nothing is held but the item at hand, its resource and its scope, so a run
//! of processors touches each item's bytes once, while they are in cache.

use bytes::Bytes;

use super::msg::flat::Scan;
use super::msg::{Msg, put_field, put_varint};
use crate::{WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};

/// Request → resource groups → scope groups → items: each level's field numbers (the same
/// for every signal).
const GROUPS: u32 = 1;
const RESOURCE: u32 = 1;
const SCOPES: u32 = 2;
const SCOPE: u32 = 1;
const ITEMS: u32 = 2;

/// What a rewrite does at each level.
pub trait Rewrite {
    /// Edits the resource of a resource group (an empty one if it has none; written only
    /// if edited then).
    fn resource(&mut self, resource: &mut Msg);
    /// Edits an item (span, log record or metric) under `resource` and `scope`; says
    /// whether it stays.
    fn item(&mut self, resource: &Msg, scope: &Msg, item: &mut Msg) -> bool;
}

/// What a walk carries from one item to the next.
#[derive(Default)]
struct Scratch {
    item: Msg,
    /// A walk met bytes that do not split into fields.
    broken: bool,
}

/// `req` (a checked export request) rewritten by `r`. Groups and scope groups left without
/// items are left out, as are those that came without any. `None` if `req` turns out not to
/// be well formed (checked requests always are): what was written is then incomplete.
pub fn rewrite(req: &Bytes, r: &mut impl Rewrite) -> Option<Vec<u8>> {
    // A little room for what processors add (a tracestate, an attribute).
    let mut out = Vec::with_capacity(req.len() + req.len() / 8 + 64);
    let mut scratch = Scratch::default();
    let walked = each(req, |num, field| match field {
        Field::Len(g) if num == GROUPS => {
            let open = Open::field(&mut out, GROUPS, g.len());
            let any = group(&req.slice_ref(g), r, &mut scratch, &mut out);
            open.close(&mut out, any);
        }
        other => other.put(num, &mut out),
    });
    (walked && !scratch.broken).then_some(out)
}

/// A length-delimited field being written straight into its message: its length is known
/// only at the end, so room is left for it as long as the field was when it came (the
/// usual case), and the content moved if it turns out to need more or less.
struct Open {
    /// Where the field's tag starts, and its content.
    at: usize,
    content: usize,
    /// Bytes left for the length.
    room: usize,
}

impl Open {
    fn field(out: &mut Vec<u8>, num: u32, len_was: usize) -> Open {
        let at = out.len();
        put_varint(out, u64::from(num) << 3 | u64::from(WIRE_LEN));
        let room = varint_len(len_was);
        out.resize(out.len() + room, 0);
        Open {
            at,
            content: out.len(),
            room,
        }
    }

    /// Writes the length, or takes the field out again unless `keep`.
    fn close(self, out: &mut Vec<u8>, keep: bool) {
        if !keep {
            out.truncate(self.at);
            return;
        }
        let len = out.len() - self.content;
        let need = varint_len(len);
        let mut content = self.content;
        if need != self.room {
            // Rare: the content moves by a byte or two.
            let to = content - self.room + need;
            if to > content {
                out.resize(out.len() + (to - content), 0);
            }
            out.copy_within(content..content + len, to);
            out.truncate(to + len);
            content = to;
        }
        let mut prefix = &mut out[content - need..content];
        let mut v = len;
        while v >= 0x80 {
            prefix[0] = v as u8 | 0x80;
            prefix = &mut prefix[1..];
            v >>= 7;
        }
        prefix[0] = v as u8;
    }
}

fn varint_len(n: usize) -> usize {
    (usize::BITS as usize - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Rewrites resource group `g` into `out`; says whether any item is left in it.
fn group(g: &Bytes, r: &mut impl Rewrite, s: &mut Scratch, out: &mut Vec<u8>) -> bool {
    let last = last_of(g, RESOURCE);
    let mut resource = Msg::new(last.map(|b| g.slice_ref(b)).unwrap_or_default());
    r.resource(&mut resource);
    let mut any = false;
    let mut broken = false;
    let walked = each(g, |num, field| match field {
        Field::Len(b) if num == RESOURCE && last.is_some_and(|l| same(l, b)) => {
            resource.put_as(RESOURCE, out)
        }
        Field::Len(sg) if num == SCOPES => {
            let sg = g.slice_ref(sg);
            let scope = Msg::new(
                last_of(&sg, SCOPE)
                    .map(|b| sg.slice_ref(b))
                    .unwrap_or_default(),
            );
            let open = Open::field(out, SCOPES, sg.len());
            let mut kept = false;
            broken |= !each(&sg, |num, field| match field {
                Field::Len(item) if num == ITEMS => {
                    s.item.reuse(sg.slice_ref(item));
                    if r.item(&resource, &scope, &mut s.item) {
                        s.item.put_as(ITEMS, out);
                        kept = true;
                    }
                }
                other => other.put(num, out),
            });
            open.close(out, kept);
            any |= kept;
        }
        other => other.put(num, out),
    });
    s.broken |= broken || !walked;
    if last.is_none() && resource.changed() {
        resource.put_as(RESOURCE, out);
    }
    any
}

/// Whether two slices are the same bytes of one buffer.
fn same(a: &[u8], b: &[u8]) -> bool {
    std::ptr::eq(a, b)
}

/// The last length-delimited field `num` of `msg` (the one protobuf's rule reads).
fn last_of(msg: &[u8], num: u32) -> Option<&[u8]> {
    let mut last = None;
    each(msg, |n, f| {
        if let (true, Field::Len(b)) = (n == num, f) {
            last = Some(b);
        }
    });
    last
}

/// A field's value, borrowed.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    I64(u64),
    I32(u64),
    Len(&'a [u8]),
}

impl Field<'_> {
    /// Appends the field as it came.
    fn put(self, num: u32, out: &mut Vec<u8>) {
        let (wire_type, bytes): (u8, &[u8]) = match self {
            Field::Varint(v) => {
                put_varint(out, u64::from(num) << 3 | u64::from(WIRE_VARINT));
                put_varint(out, v);
                return;
            }
            Field::I64(v) => (WIRE_I64, &v.to_le_bytes()),
            Field::I32(v) => (WIRE_I32, &v.to_le_bytes()[..4]),
            Field::Len(b) => return put_field(out, num, b),
        };
        put_varint(out, u64::from(num) << 3 | u64::from(wire_type));
        out.extend_from_slice(bytes);
    }
}

/// Calls `f` with each field of the message in `msg`; says whether all of it split into
/// fields (a walk that fails stops where it failed).
fn each<'a>(msg: &'a [u8], mut f: impl FnMut(u32, Field<'a>)) -> bool {
    let mut scan = Scan::new(msg);
    for fl in scan.by_ref() {
        let field = match fl.wire_type {
            WIRE_VARINT => Field::Varint(fl.value),
            WIRE_I64 => Field::I64(fl.value),
            WIRE_I32 => Field::I32(fl.value),
            _ => Field::Len(&msg[fl.start..fl.end]),
        };
        f(fl.num as u32, field);
    }
    !scan.broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_written_in_place_ends_as_if_written_whole_whatever_its_length_became() {
        for (was, now) in [
            (10, 5),
            (10, 200),
            (300, 5),
            (300, 200),
            (100_000, 3),
            (3, 20_000),
        ] {
            let content: Vec<u8> = (0..now).map(|i| i as u8).collect();
            let mut out = vec![0xaa];
            let open = Open::field(&mut out, SCOPES, was);
            out.extend_from_slice(&content);
            open.close(&mut out, true);
            let mut want = vec![0xaa];
            put_field(&mut want, SCOPES, &content);
            assert_eq!(out, want, "{was} bytes, then {now}");
            let open = Open::field(&mut out, SCOPES, was);
            out.extend_from_slice(&content);
            open.close(&mut out, false);
            assert_eq!(out, want, "a field not kept leaves nothing");
        }
    }
}
