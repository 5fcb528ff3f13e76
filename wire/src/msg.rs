//! A request kept as its protobuf bytes and edited in place, for processors (the host's
//! built-ins, and Rust Wasm processors through the SDK).
//!
//! Decoding a request into structs costs an allocation per string and attribute, and
//! encoding it again costs about as much: far more than what the processors themselves do
//! (BENCHMARKS.md). A [`Msg`] keeps the bytes; a message is split into its fields only when
//! a processor opens it, an edit replaces, removes or appends single fields, and encoding
//! copies every message nobody changed as it came.
//!
//! The host's built-ins read only requests that passed the schema check (`inspect` at the
//! receiver, `schema::validate` for a batch from the queue), so their reads never meet
//! malformed bytes. Reads of malformed bytes do not fail either: they see the
//! fields that split and nothing of the rest, and a message that does not split is written
//! as it came.

use std::cell::Cell;

use bytes::Bytes;

use crate::{self as wire, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};

/// A protobuf message: its bytes, split into fields once opened.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    raw: Bytes,
    fields: Option<Vec<Field>>,
    /// A field of this message itself was edited.
    edited: bool,
    /// Its bytes did not split into fields: it is written as it came, whatever was edited.
    broken: bool,
    /// Set by [`Msg::measure`]: the encoded length, and whether `raw` still holds it.
    len: Cell<usize>,
    same: Cell<bool>,
}

#[derive(Debug, Clone)]
struct Field {
    num: u32,
    val: Val,
}

#[derive(Debug, Clone)]
enum Val {
    Varint(u64),
    I64(u64),
    I32(u32),
    /// Length-delimited: `raw[start..end]` of the enclosing message.
    Raw(u32, u32),
    /// Length-delimited, set by an edit (boxed: fields stay small, and most are not new).
    New(Box<Bytes>),
    /// A nested message, opened.
    Msg(Box<Msg>),
}

/// A field's value, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A varint or fixed-width number.
    Int(u64),
    /// A length-delimited field: a string, bytes or an unopened message.
    Bytes(&'a [u8]),
    /// An opened message.
    Msg(&'a Msg),
}

/// What [`Msg::edit`] does to one field.
pub enum Edit {
    /// Leave it.
    Keep,
    /// Remove it.
    Remove,
    /// Replace its length-delimited content.
    Replace(Bytes),
}

impl<'a> Value<'a> {
    /// Calls `f` with each field of this message, in order.
    pub fn each(self, mut f: impl FnMut(u32, Value<'a>)) {
        match self {
            Value::Int(_) => {}
            Value::Bytes(b) => {
                // Validated before any processor ran: the walk cannot fail here.
                let _ = wire::fields(b, 0, |fl| {
                    let v = if fl.wire_type == WIRE_LEN {
                        Value::Bytes(fl.bytes)
                    } else {
                        Value::Int(fl.value)
                    };
                    f(fl.number as u32, v);
                    Ok(())
                });
            }
            Value::Msg(m) => m.each(f),
        }
    }

    /// The last value of field `num` (protobuf's rule for a repeated scalar).
    #[inline]
    pub fn get(self, num: u32) -> Option<Value<'a>> {
        if let Value::Msg(m) = self
            && let Some(fields) = &m.fields
        {
            let f = fields.iter().rev().find(|f| f.num == num)?;
            return Some(m.value(&f.val));
        }
        let mut last = None;
        self.each(|n, v| {
            if n == num {
                last = Some(v)
            }
        });
        last
    }

    /// Field `num` as a number (0 when absent).
    #[inline]
    pub fn uint(self, num: u32) -> u64 {
        match self.get(num) {
            Some(Value::Int(v)) => v,
            _ => 0,
        }
    }

    /// Field `num` as bytes (empty when absent or an opened message).
    #[inline]
    pub fn raw(self, num: u32) -> &'a [u8] {
        match self.get(num) {
            Some(Value::Bytes(b)) => b,
            _ => &[],
        }
    }

    /// Field `num` as text ("" when absent).
    #[inline]
    pub fn str(self, num: u32) -> &'a str {
        std::str::from_utf8(self.raw(num)).unwrap_or("")
    }

    /// Calls `f` with each value of repeated field `num`.
    pub fn each_of(self, num: u32, mut f: impl FnMut(Value<'a>)) {
        self.each(|n, v| {
            if n == num {
                f(v)
            }
        })
    }

    /// How many times field `num` occurs.
    pub fn count(self, num: u32) -> usize {
        let mut n = 0;
        self.each_of(num, |_| n += 1);
        n
    }
}

impl Msg {
    /// The message in `raw`.
    pub fn new(raw: Bytes) -> Msg {
        Msg {
            raw,
            ..Msg::default()
        }
    }

    /// The message, for reading.
    #[inline]
    pub fn view(&self) -> Value<'_> {
        Value::Msg(self)
    }

    fn value<'s>(&'s self, v: &'s Val) -> Value<'s> {
        match v {
            Val::Varint(x) | Val::I64(x) => Value::Int(*x),
            Val::I32(x) => Value::Int(u64::from(*x)),
            Val::Raw(s, e) => Value::Bytes(&self.raw[*s as usize..*e as usize]),
            Val::New(b) => Value::Bytes(b),
            Val::Msg(m) => Value::Msg(m),
        }
    }

    fn each<'s>(&'s self, mut f: impl FnMut(u32, Value<'s>)) {
        match &self.fields {
            None => Value::Bytes(&self.raw).each(f),
            Some(fields) => fields.iter().for_each(|fl| f(fl.num, self.value(&fl.val))),
        }
    }

    /// Splits the message into fields (once), for editing.
    fn open(&mut self) -> &mut Vec<Field> {
        open(&self.raw, &mut self.fields, &mut self.broken)
    }

    /// Calls `f` with the message in field `head` (an empty one if absent) and each message
    /// in field `num` (0 for no head).
    pub fn with_children(&mut self, head: u32, num: u32, mut f: impl FnMut(&Msg, &mut Msg)) {
        let fields = open(&self.raw, &mut self.fields, &mut self.broken);
        let raw = &self.raw;
        let mut first: Option<&Msg> = None;
        let mut rest = Vec::new();
        for fl in fields.iter_mut() {
            if fl.num != head && fl.num != num {
                continue;
            }
            let n = fl.num;
            let child = opened(&mut fl.val, raw);
            if n == head {
                first = Some(child);
            } else {
                rest.push(child);
            }
        }
        let empty = Msg::default();
        let first = first.unwrap_or(&empty);
        for m in rest {
            f(first, m);
        }
    }

    /// Keeps the messages of field `num` for which `keep` (given the message in field
    /// `head`) is true; says how many it removed.
    pub fn retain_children(
        &mut self,
        head: u32,
        num: u32,
        mut keep: impl FnMut(&Msg, &mut Msg) -> bool,
    ) -> usize {
        let mut verdicts = Vec::new();
        self.with_children(head, num, |h, m| verdicts.push(keep(h, m)));
        let removed = verdicts.iter().filter(|k| !**k).count();
        if removed > 0 {
            let mut verdict = verdicts.into_iter();
            self.open()
                .retain(|f| f.num != num || verdict.next().unwrap_or(true));
            self.edited = true;
        }
        removed
    }

    /// The (last) message in field `num`, added empty if absent.
    pub fn child(&mut self, num: u32) -> &mut Msg {
        if self.view().count(num) == 0 {
            self.open().push(Field {
                num,
                val: Val::Msg(Box::default()),
            });
            self.edited = true;
        }
        let field = open(&self.raw, &mut self.fields, &mut self.broken)
            .iter_mut()
            .rev()
            .find(|f| f.num == num)
            .expect("field added above");
        opened(&mut field.val, &self.raw)
    }

    /// Applies `f` to each length-delimited field `num` (given its bytes); says whether
    /// anything changed.
    pub fn edit(&mut self, num: u32, mut f: impl FnMut(&[u8]) -> Edit) -> bool {
        let raw = &self.raw;
        let mut changed = false;
        open(raw, &mut self.fields, &mut self.broken).retain_mut(|fl| {
            if fl.num != num {
                return true;
            }
            let edit = match &fl.val {
                Val::Raw(s, e) => f(&raw[*s as usize..*e as usize]),
                Val::New(b) => f(b),
                Val::Msg(m) => f(&m.encode()),
                _ => Edit::Keep,
            };
            match edit {
                Edit::Keep => true,
                Edit::Remove => {
                    changed = true;
                    false
                }
                Edit::Replace(b) => {
                    fl.val = Val::New(Box::new(b));
                    changed = true;
                    true
                }
            }
        });
        self.edited |= changed;
        changed
    }

    /// Appends a length-delimited field.
    pub fn push(&mut self, num: u32, bytes: Bytes) {
        self.open().push(Field {
            num,
            val: Val::New(Box::new(bytes)),
        });
        self.edited = true;
    }

    /// Sets length-delimited field `num` to `bytes`, replacing what it held.
    pub fn set_bytes(&mut self, num: u32, bytes: Bytes) {
        self.edit(num, |_| Edit::Remove);
        self.push(num, bytes);
    }

    /// Sets varint field `num` to `v`, replacing what it held.
    pub fn set_uint(&mut self, num: u32, v: u64) {
        let fields = self.open();
        fields.retain(|f| f.num != num);
        fields.push(Field {
            num,
            val: Val::Varint(v),
        });
        self.edited = true;
    }

    /// Computes (and keeps) the encoded length of this message and every opened one in it.
    fn measure(&self) -> usize {
        let Some(fields) = self.fields.as_ref().filter(|_| !self.broken) else {
            self.same.set(true);
            self.len.set(self.raw.len());
            return self.raw.len();
        };
        let mut changed = self.edited;
        let mut len = 0;
        for f in fields {
            len += varint_len(u64::from(f.num) << 3)
                + match &f.val {
                    Val::Varint(v) => varint_len(*v),
                    Val::I64(_) => 8,
                    Val::I32(_) => 4,
                    Val::Raw(s, e) => with_len((e - s) as usize),
                    Val::New(b) => with_len(b.len()),
                    Val::Msg(m) => {
                        let n = m.measure();
                        changed |= !m.same.get();
                        with_len(n)
                    }
                };
        }
        let len = if changed { len } else { self.raw.len() };
        self.same.set(!changed);
        self.len.set(len);
        len
    }

    fn write(&self, out: &mut Vec<u8>) {
        let Some(fields) = self.fields.as_ref().filter(|_| !self.same.get()) else {
            out.extend_from_slice(&self.raw);
            return;
        };
        for f in fields {
            let wire_type = match f.val {
                Val::Varint(_) => WIRE_VARINT,
                Val::I64(_) => WIRE_I64,
                Val::I32(_) => WIRE_I32,
                _ => WIRE_LEN,
            };
            put_varint(out, u64::from(f.num) << 3 | u64::from(wire_type));
            match &f.val {
                Val::Varint(v) => put_varint(out, *v),
                Val::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
                Val::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
                Val::Raw(s, e) => put_bytes(out, &self.raw[*s as usize..*e as usize]),
                Val::New(b) => put_bytes(out, b),
                Val::Msg(m) => {
                    put_varint(out, m.len.get() as u64);
                    m.write(out);
                }
            }
        }
    }

    /// The message as protobuf bytes: the original ones if nothing in it changed.
    pub fn encode(&self) -> Bytes {
        let len = self.measure();
        if self.same.get() {
            return self.raw.clone();
        }
        let mut out = Vec::with_capacity(len);
        self.write(&mut out);
        out.into()
    }
}

/// The fields of the message in `raw`, split once.
fn open<'f>(
    raw: &Bytes,
    fields: &'f mut Option<Vec<Field>>,
    broken: &mut bool,
) -> &'f mut Vec<Field> {
    fields.get_or_insert_with(|| {
        // Enough for a span of ten attributes, whose fields average ~30 bytes: one
        // allocation, most of the time.
        let mut out = Vec::with_capacity(raw.len() / 24 + 4);
        let parsed = wire::fields(raw, 0, |fl| {
            let val = match fl.wire_type {
                WIRE_VARINT => Val::Varint(fl.value),
                WIRE_I64 => Val::I64(fl.value),
                WIRE_I32 => Val::I32(fl.value as u32),
                _ => Val::Raw(fl.offset as u32, (fl.offset + fl.bytes.len()) as u32),
            };
            out.push(Field {
                num: fl.number as u32,
                val,
            });
            Ok(())
        });
        // Cannot fail on validated bytes; if it did, the message stays as it came, and
        // edits of it are lost rather than its content.
        if parsed.is_err() {
            out.clear();
            *broken = true;
        }
        out
    })
}

/// The nested message a length-delimited value holds, opened in place.
fn opened<'v>(v: &'v mut Val, raw: &Bytes) -> &'v mut Msg {
    if !matches!(v, Val::Msg(_)) {
        let bytes = match v {
            Val::Raw(s, e) => raw.slice(*s as usize..*e as usize),
            Val::New(b) => Bytes::clone(b),
            // A number where a message belongs: validation refuses such a request.
            _ => Bytes::new(),
        };
        *v = Val::Msg(Box::new(Msg::new(bytes)));
    }
    match v {
        Val::Msg(m) => m,
        _ => unreachable!("opened above"),
    }
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn with_len(n: usize) -> usize {
    varint_len(n as u64) + n
}

/// Appends `v` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends length-delimited field `num`.
pub fn put_field(out: &mut Vec<u8>, num: u32, b: &[u8]) {
    put_varint(out, u64::from(num) << 3 | u64::from(WIRE_LEN));
    put_bytes(out, b);
}
