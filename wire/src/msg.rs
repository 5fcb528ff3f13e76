//! A request kept as its protobuf bytes and edited in place, for processors (the host's
//! built-ins, and Rust Wasm processors through the SDK).
//!
//! Decoding a request into structs costs an allocation per string and attribute, and
//! encoding it again costs about as much: far more than what the processors themselves do
//! (BENCHMARKS.md). A [`Msg`] keeps the bytes. Reads of a message nobody opened go through
//! an index of its fields, and edits of it write its bytes anew once (`msg/flat.rs`); a message is
//! split into its fields only when a processor opens the messages nested in it, edits then
//! replace, remove or append single fields, and encoding copies every message nobody changed
//! as it came.
//!
//! The host's built-ins read only requests that passed the schema check (`inspect` at the
//! receiver, `schema::validate` for a batch from the queue), so their reads never meet
//! malformed bytes. Reads of malformed bytes do not fail either: they see the
//! fields that split and nothing of the rest, and a message that does not split is written
//! as it came.

use std::cell::{Cell, OnceCell};

use bytes::Bytes;

use crate::{WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT};

pub(crate) mod flat;

use flat::{Index, Scan, Slot};

/// A protobuf message: its bytes, split into fields once opened.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    raw: Bytes,
    fields: Option<Vec<Field>>,
    /// A field of this message itself was edited.
    edited: bool,
    /// Edited before it was opened: `raw` holds the new bytes.
    rewritten: bool,
    /// Its bytes did not split into fields: it is written as it came, whatever was edited.
    broken: bool,
    /// Set by [`Msg::measure`]: the encoded length, and whether `raw` still holds it.
    len: Cell<usize>,
    same: Cell<bool>,
    /// Room for fields left by [`Msg::reuse`], taken when the message is opened.
    spare: Vec<Field>,
    /// Where its low-numbered fields are, found on the first read of an unopened message.
    index: OnceCell<Index>,
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
    /// Length-delimited, as it came: the field is `raw[at..end]` of the message, its
    /// payload `raw[start..end]`.
    Raw(u32, u32, u32),
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
                for fl in Scan::new(b) {
                    let v = if fl.wire_type == WIRE_LEN {
                        Value::Bytes(&b[fl.start..fl.end])
                    } else {
                        Value::Int(fl.value)
                    };
                    f(fl.num as u32, v);
                }
            }
            Value::Msg(m) => m.each(f),
        }
    }

    /// The last value of field `num` (protobuf's rule for a repeated scalar).
    #[inline]
    pub fn get(self, num: u32) -> Option<Value<'a>> {
        if let Value::Msg(m) = self {
            if let Some(fields) = &m.fields {
                let f = fields.iter().rev().find(|f| f.num == num)?;
                return Some(m.value(&f.val));
            }
            if let Some(slot) = m.index.get_or_init(|| Index::of(&m.raw)).get(&m.raw, num) {
                return match slot {
                    Slot::Absent => None,
                    Slot::Int(v) => Some(Value::Int(v)),
                    Slot::Raw(_, s, e) => Some(Value::Bytes(&m.raw[s as usize..e as usize])),
                };
            }
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
            Val::Raw(_, s, e) => Value::Bytes(&self.raw[*s as usize..*e as usize]),
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
        open(
            &self.raw,
            &mut self.fields,
            &mut self.spare,
            &mut self.broken,
        )
    }

    /// Calls `f` with the message in field `head` (an empty one if absent) and each message
    /// in field `num` (0 for no head).
    pub fn with_children(&mut self, head: u32, num: u32, mut f: impl FnMut(&Msg, &mut Msg)) {
        let fields = open(
            &self.raw,
            &mut self.fields,
            &mut self.spare,
            &mut self.broken,
        );
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
        let field = open(
            &self.raw,
            &mut self.fields,
            &mut self.spare,
            &mut self.broken,
        )
        .iter_mut()
        .rev()
        .find(|f| f.num == num)
        .expect("field added above");
        opened(&mut field.val, &self.raw)
    }

    /// Applies `f` to each length-delimited field `num` (given its bytes); says whether
    /// anything changed.
    pub fn edit(&mut self, num: u32, mut f: impl FnMut(&[u8]) -> Edit) -> bool {
        if self.fields.is_none() {
            return self.rewrite(num, f, None);
        }
        let raw = &self.raw;
        let mut changed = false;
        open(raw, &mut self.fields, &mut self.spare, &mut self.broken).retain_mut(|fl| {
            if fl.num != num {
                return true;
            }
            let edit = match &fl.val {
                Val::Raw(_, s, e) => f(&raw[*s as usize..*e as usize]),
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
        if self.fields.is_none() {
            self.rewrite(num, |_| Edit::Keep, Some(&bytes));
            return;
        }
        self.open().push(Field {
            num,
            val: Val::New(Box::new(bytes)),
        });
        self.edited = true;
    }

    /// Sets length-delimited field `num` to `bytes`, replacing what it held.
    pub fn set_bytes(&mut self, num: u32, bytes: Bytes) {
        if self.fields.is_none() {
            if !self.splice(num, &bytes) {
                self.rewrite(num, |_| Edit::Remove, Some(&bytes));
            }
            return;
        }
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
                    Val::Raw(at, _, e) => {
                        len += (e - at) as usize;
                        continue;
                    }
                    Val::New(b) => with_len(b.len()),
                    Val::Msg(m) => {
                        let n = m.measure();
                        changed |= !m.same.get() || m.rewritten;
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
        // Fields as they came, one after another in `raw`: copied in one go.
        let mut run = 0..0;
        for f in fields {
            if let Val::Raw(at, _, end) = f.val {
                let (at, end) = (at as usize, end as usize);
                if run.end != at {
                    out.extend_from_slice(&self.raw[run]);
                    run = at..at;
                }
                run.end = end;
                continue;
            }
            out.extend_from_slice(&self.raw[std::mem::replace(&mut run, 0..0)]);
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
                Val::Raw(..) => unreachable!("copied above"),
                Val::New(b) => put_bytes(out, b),
                Val::Msg(m) => {
                    put_varint(out, m.len.get() as u64);
                    m.write(out);
                }
            }
        }
        out.extend_from_slice(&self.raw[run]);
    }

    /// Makes this the message in `raw`, keeping the room its fields took: a walk that
    /// opens one item after another reuses one `Msg`.
    pub fn reuse(&mut self, raw: Bytes) {
        if let Some(mut f) = self.fields.take() {
            f.clear();
            self.spare = f;
        }
        // Field by field: the index is too large to write anew for every item.
        self.raw = raw;
        self.edited = false;
        self.rewritten = false;
        self.broken = false;
        self.len.set(0);
        self.same.set(false);
        self.index.take();
    }

    /// Whether anything in the message changed since it was made.
    pub fn changed(&self) -> bool {
        self.measure();
        !self.same.get() || self.rewritten
    }

    /// Appends the message as length-delimited field `num` of the message `out` holds.
    pub fn put_as(&self, num: u32, out: &mut Vec<u8>) {
        let len = self.measure();
        put_varint(out, u64::from(num) << 3 | u64::from(WIRE_LEN));
        put_varint(out, len as u64);
        if self.same.get() {
            out.extend_from_slice(&self.raw);
        } else {
            self.write(out);
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
    spare: &mut Vec<Field>,
    broken: &mut bool,
) -> &'f mut Vec<Field> {
    fields.get_or_insert_with(|| {
        // Enough for a span of ten attributes, whose fields average ~30 bytes: one
        // allocation, most of the time (none when a reused message has the room).
        let mut out = std::mem::take(spare);
        out.reserve(raw.len() / 24 + 4);
        let mut scan = Scan::new(raw);
        for fl in scan.by_ref() {
            let val = match fl.wire_type {
                WIRE_VARINT => Val::Varint(fl.value),
                WIRE_I64 => Val::I64(fl.value),
                WIRE_I32 => Val::I32(fl.value as u32),
                _ => Val::Raw(fl.at as u32, fl.start as u32, fl.end as u32),
            };
            out.push(Field {
                num: fl.num as u32,
                val,
            });
        }
        // Cannot fail on validated bytes; if it did, the message stays as it came, and
        // edits of it are lost rather than its content.
        if scan.broken {
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
            Val::Raw(_, s, e) => raw.slice(*s as usize..*e as usize),
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
