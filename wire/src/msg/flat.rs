//! A message that was never split into fields: a lean walk over its bytes, an index of where
//! its low-numbered fields are (so reads cost no walk), and edits that write its bytes anew
//! once, keeping the index true. Most edits touch one field or one list of a span, for which
//! this costs a copy of the span and nothing more.

use std::cell::OnceCell;

use super::{Edit, Msg, put_field};
use crate::{self as wire, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};

/// One field met by [`Scan`].
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    pub num: u64,
    pub wire_type: u8,
    /// Where the field starts (its tag) and ends, in the message.
    pub at: usize,
    pub end: usize,
    /// A length-delimited field's payload starts here (it ends at `end`).
    pub start: usize,
    /// A number's value.
    pub value: u64,
}

/// The fields of a message, one after another: a lean walk, which stops (setting `broken`)
/// where `wire::fields` would fail (that one says why).
pub(crate) struct Scan<'a> {
    raw: &'a [u8],
    pos: usize,
    pub broken: bool,
}

impl<'a> Scan<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Scan {
            raw,
            pos: 0,
            broken: false,
        }
    }

    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        match self.raw.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Some(u64::from(b))
            }
            _ => wire::varint(self.raw, &mut self.pos, 0).ok(),
        }
    }

    #[inline(always)]
    fn field(&mut self) -> Option<Raw> {
        let at = self.pos;
        let tag = self.varint()?;
        let wire_type = (tag & 7) as u8;
        let (start, value) = match wire_type {
            WIRE_VARINT => (0, self.varint()?),
            WIRE_LEN => {
                let len = usize::try_from(self.varint()?).ok()?;
                let start = self.pos;
                self.pos = start.checked_add(len)?;
                (start, 0)
            }
            WIRE_I64 | WIRE_I32 => {
                let n = if wire_type == WIRE_I64 { 8 } else { 4 };
                let b = self.raw.get(self.pos..self.pos + n)?;
                let mut le = [0u8; 8];
                le[..n].copy_from_slice(b);
                self.pos += n;
                (0, u64::from_le_bytes(le))
            }
            _ => return None,
        };
        let num = tag >> 3;
        // As `wire::fields` refuses them: a walk that stops here stops where that one fails.
        if num == 0 || num > 536_870_911 {
            return None;
        }
        (self.pos <= self.raw.len()).then_some(Raw {
            num,
            wire_type,
            at,
            end: self.pos,
            start,
            value,
        })
    }
}

impl Iterator for Scan<'_> {
    type Item = Raw;

    #[inline(always)]
    fn next(&mut self) -> Option<Raw> {
        if self.pos >= self.raw.len() || self.broken {
            return None;
        }
        let f = self.field();
        self.broken = f.is_none();
        f
    }
}

/// Field numbers below this are indexed: all that processors read one at a time in OTLP's
/// messages (a span has fifteen).
const INDEXED: usize = 16;

/// The last occurrence of a field, in an index.
#[derive(Debug, Clone, Copy, Default)]
pub(super) enum Slot {
    #[default]
    Absent,
    Int(u64),
    /// The field is `raw[at..end]`, its payload `raw[start..end]`.
    Raw(u32, u32, u32),
}

impl Slot {
    /// The slot of field `f`, which starts at `at`.
    fn of(f: &Raw, at: usize) -> Slot {
        match f.wire_type {
            WIRE_LEN => {
                let at = at as u32;
                Slot::Raw(at, at + (f.start - f.at) as u32, at + (f.end - f.at) as u32)
            }
            _ => Slot::Int(f.value),
        }
    }
}

/// No occurrence, in an index.
const NONE: u32 = u32::MAX;

/// Where each low-numbered field of a message starts (its last occurrence), and which occur
/// more than once. Small, so that building and moving it costs next to nothing.
#[derive(Debug, Clone)]
pub(super) struct Index {
    at: [u32; INDEXED],
    repeated: u16,
    /// The whole message split into fields (always, once checked).
    complete: bool,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            at: [NONE; INDEXED],
            repeated: 0,
            complete: true,
        }
    }
}

impl Index {
    /// The index of the message in `raw`.
    pub fn of(raw: &[u8]) -> Index {
        let mut index = Index::default();
        let mut scan = Scan::new(raw);
        for f in scan.by_ref() {
            index.note(f.num, f.at);
        }
        index.complete = !scan.broken;
        index
    }

    fn note(&mut self, num: u64, at: usize) {
        if let Some(s) = self.at.get_mut(num as usize) {
            if *s != NONE {
                self.repeated |= 1 << num;
            }
            *s = at as u32;
        }
    }

    /// Field `num`'s last occurrence in `raw`, the message indexed; `None` if `num` is not
    /// indexed.
    pub fn get(&self, raw: &[u8], num: u32) -> Option<Slot> {
        let at = *self.at.get(num as usize)?;
        if at == NONE {
            return Some(Slot::Absent);
        }
        let f = Scan::new(&raw[at as usize..]).next()?;
        Some(Slot::of(&f, at as usize))
    }
}

impl Msg {
    /// Edits an unopened message by writing its bytes anew, once, and only if something
    /// changes: applies `f` to each length-delimited field `num`, then appends `push` as
    /// field `num`. Cheaper than splitting it into fields when an edit touches one list
    /// (most do). Says whether anything changed.
    pub(super) fn rewrite(
        &mut self,
        num: u32,
        mut f: impl FnMut(&[u8]) -> Edit,
        push: Option<&[u8]>,
    ) -> bool {
        let raw = &self.raw;
        let mut out: Option<Vec<u8>> = None;
        // Kept fields are copied in runs, when an edit (or the end) closes one: `raw` up to
        // `copied` is in `out` already.
        let mut copied = 0;
        let mut index = Index::default();
        let mut scan = Scan::new(raw);
        for fl in scan.by_ref() {
            let edit = if fl.num == u64::from(num) && fl.wire_type == WIRE_LEN {
                f(&raw[fl.start..fl.end])
            } else {
                Edit::Keep
            };
            match (edit, &mut out) {
                (Edit::Keep, None) => index.note(fl.num, fl.at),
                (Edit::Keep, Some(out)) => index.note(fl.num, out.len() + fl.at - copied),
                (edit, out) => {
                    let out = out.get_or_insert_with(|| {
                        Vec::with_capacity(raw.len() + push.map_or(0, <[u8]>::len) + 8)
                    });
                    out.extend_from_slice(&raw[copied..fl.at]);
                    copied = fl.end;
                    if let Edit::Replace(b) = edit {
                        appended(out, num, &b, &mut index);
                    }
                }
            }
        }
        // Malformed bytes (unreachable once checked) are left as they came.
        if scan.broken || (out.is_none() && push.is_none()) {
            return false;
        }
        let mut out =
            out.unwrap_or_else(|| Vec::with_capacity(raw.len() + push.map_or(0, <[u8]>::len) + 8));
        out.extend_from_slice(&raw[copied..]);
        if let Some(push) = push {
            appended(&mut out, num, push, &mut index);
        }
        self.renew(out, index);
        true
    }

    /// Sets field `num` (read before, so indexed) to `bytes` by cutting out its one
    /// occurrence, if any, and appending the new one: two copies, no walk. `false` if the
    /// index cannot tell (the field repeats, or is not indexed): then nothing was done.
    pub(super) fn splice(&mut self, num: u32, bytes: &[u8]) -> bool {
        let Some(mut index) = self.index.get().filter(|i| i.complete).cloned() else {
            return false;
        };
        if index.repeated & (1 << num.min(15)) != 0 {
            return false;
        }
        let raw = &self.raw;
        let mut out = Vec::with_capacity(raw.len() + bytes.len() + 8);
        match index.get(raw, num) {
            Some(Slot::Absent) => out.extend_from_slice(raw),
            Some(Slot::Raw(at, _, end)) => {
                let gone = end - at;
                out.extend_from_slice(&raw[..at as usize]);
                out.extend_from_slice(&raw[end as usize..]);
                index.at[num as usize] = NONE;
                for a in &mut index.at {
                    if *a != NONE && *a >= end {
                        *a -= gone;
                    }
                }
            }
            _ => return false,
        }
        appended(&mut out, num, bytes, &mut index);
        self.renew(out, index);
        true
    }

    /// Makes `raw` the message's bytes, with their index.
    fn renew(&mut self, raw: Vec<u8>, index: Index) {
        self.raw = raw.into();
        self.rewritten = true;
        self.index = OnceCell::from(index);
    }
}

/// Appends length-delimited field `num` holding `b` to `out`, noting it in `index`.
fn appended(out: &mut Vec<u8>, num: u32, b: &[u8], index: &mut Index) {
    index.note(u64::from(num), out.len());
    put_field(out, num, b);
}
