//! A bounded Thrift decoder for the compact and binary protocols, into a generic value tree.
//!
//! Jaeger agents speak one-way `Agent.emitBatch` messages; decoding into a tree first keeps
//! the wire format apart from the Jaeger model, and bounds (depth, collection sizes checked
//! against the bytes left) make hostile datagrams cheap to refuse.

/// A decoded Thrift value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// bool
    Bool(bool),
    /// byte / i8
    I8(i8),
    /// i16
    I16(i16),
    /// i32 (and enums)
    I32(i32),
    /// i64
    I64(i64),
    /// double
    Double(f64),
    /// string / binary
    Binary(Vec<u8>),
    /// struct: (field id, value) in wire order
    Struct(Vec<(i16, Value)>),
    /// list or set
    List(Vec<Value>),
    /// map
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// Field `id` of a struct.
    pub fn field(&self, id: i16) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(f, _)| *f == id).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a message does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThriftError {
    /// Ran out of bytes.
    #[error("truncated thrift at byte {0}")]
    Truncated(usize),
    /// A type id no protocol defines.
    #[error("unknown thrift type {ty} at byte {at}")]
    BadType {
        /// The type id.
        ty: u8,
        /// Offset.
        at: usize,
    },
    /// A size that cannot fit in what is left.
    #[error("thrift {what} of {size} elements at byte {at} exceeds the message")]
    BadSize {
        /// String, list or map.
        what: &'static str,
        /// Claimed size.
        size: u64,
        /// Offset.
        at: usize,
    },
    /// Deeper than any Jaeger message.
    #[error("thrift nesting too deep")]
    TooDeep,
    /// Malformed message header.
    #[error("bad thrift message header: {0}")]
    Header(String),
}

const MAX_DEPTH: u8 = 16;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, ThriftError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ThriftError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ThriftError> {
        if self.buf.len() - self.pos < n {
            return Err(ThriftError::Truncated(self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Refuses a collection of `size` elements that could not fit in the bytes left
    /// (every element takes at least `min_bytes`).
    fn check_size(
        &self,
        what: &'static str,
        size: u64,
        min_bytes: usize,
    ) -> Result<usize, ThriftError> {
        if size > (self.left() / min_bytes.max(1)) as u64 {
            return Err(ThriftError::BadSize {
                what,
                size,
                at: self.pos,
            });
        }
        Ok(size as usize)
    }

    fn varint(&mut self) -> Result<u64, ThriftError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(ThriftError::Header(format!(
            "varint too long at byte {}",
            self.pos
        )))
    }

    fn zigzag(&mut self) -> Result<i64, ThriftError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn be_i16(&mut self) -> Result<i16, ThriftError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn be_i32(&mut self) -> Result<i32, ThriftError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn be_i64(&mut self) -> Result<i64, ThriftError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

// ---- compact protocol ----

mod ct {
    pub const STOP: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
}

fn compact_value(r: &mut Reader, ty: u8, depth: u8) -> Result<Value, ThriftError> {
    if depth > MAX_DEPTH {
        return Err(ThriftError::TooDeep);
    }
    Ok(match ty {
        ct::TRUE => Value::Bool(true),
        ct::FALSE => Value::Bool(false),
        ct::BYTE => Value::I8(r.byte()? as i8),
        ct::I16 => Value::I16(r.zigzag()? as i16),
        ct::I32 => Value::I32(r.zigzag()? as i32),
        ct::I64 => Value::I64(r.zigzag()?),
        ct::DOUBLE => Value::Double(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
        ct::BINARY => {
            let n = r.varint()?;
            let n = r.check_size("string", n, 1)?;
            Value::Binary(r.take(n)?.to_vec())
        }
        ct::LIST | ct::SET => {
            let head = r.byte()?;
            let elem = head & 0x0f;
            let size = match head >> 4 {
                15 => r.varint()?,
                n => u64::from(n),
            };
            let size = r.check_size("list", size, 1)?;
            let mut items = Vec::with_capacity(size);
            for _ in 0..size {
                // Booleans inside a list take one byte each.
                let v = if elem == ct::TRUE || elem == ct::FALSE {
                    Value::Bool(r.byte()? == ct::TRUE)
                } else {
                    compact_value(r, elem, depth + 1)?
                };
                items.push(v);
            }
            Value::List(items)
        }
        ct::MAP => {
            let size = r.varint()?;
            let size = r.check_size("map", size, 2)?;
            let mut entries = Vec::with_capacity(size);
            if size > 0 {
                let kinds = r.byte()?;
                for _ in 0..size {
                    let k = compact_value(r, kinds >> 4, depth + 1)?;
                    let v = compact_value(r, kinds & 0x0f, depth + 1)?;
                    entries.push((k, v));
                }
            }
            Value::Map(entries)
        }
        ct::STRUCT => compact_struct(r, depth + 1)?,
        other => {
            return Err(ThriftError::BadType {
                ty: other,
                at: r.pos,
            });
        }
    })
}

fn compact_struct(r: &mut Reader, depth: u8) -> Result<Value, ThriftError> {
    if depth > MAX_DEPTH {
        return Err(ThriftError::TooDeep);
    }
    let mut fields = Vec::new();
    let mut last_id: i16 = 0;
    loop {
        let head = r.byte()?;
        if head == ct::STOP {
            return Ok(Value::Struct(fields));
        }
        let ty = head & 0x0f;
        let id = match head >> 4 {
            0 => r.zigzag()? as i16,
            delta => last_id.wrapping_add(i16::from(delta)),
        };
        last_id = id;
        fields.push((id, compact_value(r, ty, depth)?));
    }
}

// ---- binary protocol ----

mod bt {
    pub const STOP: u8 = 0;
    pub const BOOL: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const DOUBLE: u8 = 4;
    pub const I16: u8 = 6;
    pub const I32: u8 = 8;
    pub const I64: u8 = 10;
    pub const STRING: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const MAP: u8 = 13;
    pub const SET: u8 = 14;
    pub const LIST: u8 = 15;
}

fn binary_len(r: &mut Reader, what: &'static str, min: usize) -> Result<usize, ThriftError> {
    let n = r.be_i32()?;
    if n < 0 {
        return Err(ThriftError::BadSize {
            what,
            size: n as u64,
            at: r.pos,
        });
    }
    r.check_size(what, n as u64, min)
}

fn binary_value(r: &mut Reader, ty: u8, depth: u8) -> Result<Value, ThriftError> {
    if depth > MAX_DEPTH {
        return Err(ThriftError::TooDeep);
    }
    Ok(match ty {
        bt::BOOL => Value::Bool(r.byte()? != 0),
        bt::BYTE => Value::I8(r.byte()? as i8),
        bt::I16 => Value::I16(r.be_i16()?),
        bt::I32 => Value::I32(r.be_i32()?),
        bt::I64 => Value::I64(r.be_i64()?),
        bt::DOUBLE => Value::Double(f64::from_bits(r.be_i64()? as u64)),
        bt::STRING => {
            let n = binary_len(r, "string", 1)?;
            Value::Binary(r.take(n)?.to_vec())
        }
        bt::LIST | bt::SET => {
            let elem = r.byte()?;
            let n = binary_len(r, "list", 1)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(binary_value(r, elem, depth + 1)?);
            }
            Value::List(items)
        }
        bt::MAP => {
            let k = r.byte()?;
            let v = r.byte()?;
            let n = binary_len(r, "map", 2)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push((
                    binary_value(r, k, depth + 1)?,
                    binary_value(r, v, depth + 1)?,
                ));
            }
            Value::Map(entries)
        }
        bt::STRUCT => binary_struct(r, depth + 1)?,
        other => {
            return Err(ThriftError::BadType {
                ty: other,
                at: r.pos,
            });
        }
    })
}

fn binary_struct(r: &mut Reader, depth: u8) -> Result<Value, ThriftError> {
    if depth > MAX_DEPTH {
        return Err(ThriftError::TooDeep);
    }
    let mut fields = Vec::new();
    loop {
        let ty = r.byte()?;
        if ty == bt::STOP {
            return Ok(Value::Struct(fields));
        }
        let id = r.be_i16()?;
        fields.push((id, binary_value(r, ty, depth)?));
    }
}

/// The thrift protocol of a message or struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCompactProtocol.
    Compact,
    /// TBinaryProtocol.
    Binary,
}

/// A decoded message: the method name and its argument struct.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Method name, e.g. `emitBatch`.
    pub name: String,
    /// The arguments struct.
    pub args: Value,
}

/// Decodes one message (`Agent.emitBatch` as a UDP datagram).
pub fn decode_message(protocol: Protocol, buf: &[u8]) -> Result<Message, ThriftError> {
    let mut r = Reader { buf, pos: 0 };
    let name = match protocol {
        Protocol::Compact => {
            if r.byte()? != 0x82 {
                return Err(ThriftError::Header("not a compact-protocol message".into()));
            }
            let _version_and_type = r.byte()?;
            let _seq = r.varint()?;
            let n = r.varint()?;
            let n = r.check_size("string", n, 1)?;
            String::from_utf8_lossy(r.take(n)?).into_owned()
        }
        Protocol::Binary => {
            let version = r.be_i32()? as u32;
            if version & 0xffff_0000 != 0x8001_0000 {
                return Err(ThriftError::Header(
                    "not a strict binary-protocol message".into(),
                ));
            }
            let n = binary_len(&mut r, "string", 1)?;
            let name = String::from_utf8_lossy(r.take(n)?).into_owned();
            let _seq = r.be_i32()?;
            name
        }
    };
    let args = decode_struct_from(protocol, &mut r)?;
    Ok(Message { name, args })
}

fn decode_struct_from(protocol: Protocol, r: &mut Reader) -> Result<Value, ThriftError> {
    match protocol {
        Protocol::Compact => compact_struct(r, 0),
        Protocol::Binary => binary_struct(r, 0),
    }
}

/// Decodes a bare struct (a Jaeger `Batch` posted over HTTP in the binary protocol).
pub fn decode_struct(protocol: Protocol, buf: &[u8]) -> Result<Value, ThriftError> {
    decode_struct_from(protocol, &mut Reader { buf, pos: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_struct_with_deltas_lists_and_negative_ints() {
        // field 1 (i64) = -3 ; field 2 (binary) = "hi" ; field 5 (list<i32>) = [1, -1] ; stop
        let buf = [
            0x16, 0x05, 0x18, 0x02, b'h', b'i', 0x39, 0x25, 0x02, 0x01, 0x00,
        ];
        let v = decode_struct(Protocol::Compact, &buf).unwrap();
        assert_eq!(v.field(1), Some(&Value::I64(-3)));
        assert_eq!(v.field(2), Some(&Value::Binary(b"hi".to_vec())));
        assert_eq!(
            v.field(5),
            Some(&Value::List(vec![Value::I32(1), Value::I32(-1)]))
        );
    }

    #[test]
    fn binary_struct() {
        let mut buf = vec![10, 0, 1];
        buf.extend_from_slice(&(-2i64).to_be_bytes());
        buf.extend_from_slice(&[11, 0, 2, 0, 0, 0, 2, b'o', b'k', 0]);
        let v = decode_struct(Protocol::Binary, &buf).unwrap();
        assert_eq!(v.field(1), Some(&Value::I64(-2)));
        assert_eq!(v.field(2), Some(&Value::Binary(b"ok".to_vec())));
    }

    #[test]
    fn hostile_input_is_refused_cheaply() {
        // A list claiming 2^32 elements in a 10-byte datagram.
        let buf = [0x19, 0xf5, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0];
        assert!(matches!(
            decode_struct(Protocol::Compact, &buf),
            Err(ThriftError::BadSize { .. })
        ));
        // Negative binary-protocol string length.
        let buf = [11, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_struct(Protocol::Binary, &buf),
            Err(ThriftError::BadSize { .. })
        ));
        // Unknown type, truncation, and nesting bombs.
        assert!(matches!(
            decode_struct(Protocol::Compact, &[0x1d]),
            Err(ThriftError::BadType { .. })
        ));
        assert!(matches!(
            decode_struct(Protocol::Compact, &[0x16]),
            Err(ThriftError::Truncated(_))
        ));
        let bomb = vec![0x1c; 64];
        assert!(matches!(
            decode_struct(Protocol::Compact, &bomb),
            Err(ThriftError::TooDeep)
        ));
        assert!(decode_message(Protocol::Compact, &[0x00, 0x01]).is_err());
        assert!(decode_message(Protocol::Binary, &[0, 0, 0, 1]).is_err());
    }
}
