//! A request rewritten item by item in one walk: each resource is edited first, then each
//! item under it is edited or removed and written out at once, and groups left without items
//! are left out. Nothing is held but the item at hand, its resource and its scope, so a run
//! of processors touches each item's bytes once, while they are in cache.

use bytes::Bytes;

use super::msg::flat::Scan;
use super::msg::{Msg, put_field, put_varint};
use crate::{WIRE_I32, WIRE_I64, WIRE_VARINT};

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

/// Buffers reused from one group to the next.
#[derive(Default)]
struct Scratch {
    group: Vec<u8>,
    scopes: Vec<u8>,
    item: Msg,
    /// A walk met bytes that do not split into fields.
    broken: bool,
}

/// `req` (a checked export request) rewritten by `r`. Groups and scope groups left without
/// items are left out, as are those that came without any. `None` if `req` turns out not to
/// be well formed (checked requests always are): what was written is then incomplete.
pub fn rewrite(req: &Bytes, r: &mut impl Rewrite) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(req.len());
    let mut scratch = Scratch::default();
    let walked = each(req, |num, field| match field {
        Field::Len(g) if num == GROUPS => {
            if group(&req.slice_ref(g), r, &mut scratch) {
                put_field(&mut out, GROUPS, &scratch.group);
            }
        }
        other => other.put(num, &mut out),
    });
    (walked && !scratch.broken).then_some(out)
}

/// Rewrites resource group `g` into `s.group`; says whether any item is left in it.
fn group(g: &Bytes, r: &mut impl Rewrite, s: &mut Scratch) -> bool {
    let last = last_of(g, RESOURCE);
    let mut resource = Msg::new(last.map(|b| g.slice_ref(b)).unwrap_or_default());
    r.resource(&mut resource);
    s.group.clear();
    // Room for the group as it came: no growing (and copying) on the way.
    s.group.reserve(g.len());
    let mut any = false;
    let mut broken = false;
    let walked = each(g, |num, field| match field {
        Field::Len(b) if num == RESOURCE && last.is_some_and(|l| same(l, b)) => {
            resource.put_as(RESOURCE, &mut s.group)
        }
        Field::Len(sg) if num == SCOPES => {
            let sg = g.slice_ref(sg);
            let scope = Msg::new(
                last_of(&sg, SCOPE)
                    .map(|b| sg.slice_ref(b))
                    .unwrap_or_default(),
            );
            s.scopes.clear();
            s.scopes.reserve(sg.len());
            let mut kept = false;
            broken |= !each(&sg, |num, field| match field {
                Field::Len(item) if num == ITEMS => {
                    s.item.reuse(sg.slice_ref(item));
                    if r.item(&resource, &scope, &mut s.item) {
                        s.item.put_as(ITEMS, &mut s.scopes);
                        kept = true;
                    }
                }
                other => other.put(num, &mut s.scopes),
            });
            if kept {
                put_field(&mut s.group, SCOPES, &s.scopes);
                any = true;
            }
        }
        other => other.put(num, &mut s.group),
    });
    s.broken |= broken || !walked;
    if last.is_none() && resource.changed() {
        resource.put_as(RESOURCE, &mut s.group);
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
