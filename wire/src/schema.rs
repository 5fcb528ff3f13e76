//! The shape of an OTLP export request, and the one walk that checks a request against it:
//! every known field has its wire type, every string is UTF-8, packed numbers are whole and
//! nesting is bounded, as decoding it into structs would check. The same walk counts the
//! items (spans, metric data points, log records) and flags spans whose ids have the wrong
//! length, so that a receiver checks a request once and processors read it in place without
//! checking it again.

#[cfg(test)]
mod decodes;
mod shape;

use crate::{self as wire, Signal, Summary, WIRE_LEN, WireError};
use shape::{Item, Kind, Schema, Type};

/// Deeper than OTLP nests, bar attribute values nested in each other (prost's own limit is
/// 100).
const MAX_DEPTH: u32 = 64;

/// Checks that `buf` is an export request of `signal`, as decoding it into structs would,
/// and counts its items; spans with ids of the wrong length are counted as invalid (the
/// receiver rejects those alone, with an OTLP partial success).
pub fn inspect(signal: Signal, buf: &[u8]) -> Result<Summary, WireError> {
    let root = match signal {
        Signal::Traces => Type::Traces,
        Signal::Metrics => Type::Metrics,
        Signal::Logs => Type::Logs,
    };
    let mut out = Summary::default();
    walk(root, buf, 0, 0, &mut out)?;
    Ok(out)
}

/// Checks that `bytes` is an export request of `signal` down to every string (UTF-8) and
/// attribute value: what decoding it into structs would check.
pub fn validate(signal: Signal, bytes: &[u8]) -> Result<(), WireError> {
    inspect(signal, bytes).map(drop)
}

/// The span ids and their lengths.
const SPAN_IDS: [(&str, usize); 2] = [("trace_id", 16), ("span_id", 8)];

fn walk(ty: Type, buf: &[u8], base: usize, depth: u32, out: &mut Summary) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    let s = ty.schema();
    // Most attributes are a key and a string or number: check that layout without the
    // general walk.
    if let Type::Kv = ty
        && let Some((key, any)) = wire::items::kv_layout(buf)
        && let Some(string) = wire::items::simple_layout(any)
    {
        let field = match (utf8(key), string.is_none_or(utf8)) {
            (true, true) => return Ok(()),
            (false, _) => "key",
            (true, false) => "value",
        };
        return Err(WireError::NotUtf8 {
            message: s.name,
            field,
            at: base,
        });
    }
    // Bit i: the i-th span id was present.
    let mut ids_seen = 0u8;
    let mut bad_id: Option<String> = None;
    wire::fields(buf, base, |fl| {
        if fl.number >= 32 || s.known & 1 << fl.number == 0 {
            return Ok(());
        }
        let bit = 1u32 << fl.number;
        if s.by_wire_type[usize::from(fl.wire_type)] & bit == 0 {
            let (name, kind) = s.field(fl.number);
            return Err(WireError::WrongType {
                message: s.name,
                field: name,
                wire_type: fl.wire_type,
                expected: kind.expected(),
            });
        }
        if s.item == Item::Span && fl.number <= 2 {
            let (name, len) = SPAN_IDS[fl.number as usize - 1];
            ids_seen |= 1 << (fl.number - 1);
            if fl.bytes.len() != len {
                bad_id.get_or_insert_with(|| {
                    format!("Span.{name} must be {len} bytes, got {}", fl.bytes.len())
                });
            }
        }
        if fl.wire_type != WIRE_LEN || s.deep & bit == 0 {
            return Ok(());
        }
        let (name, kind) = s.field(fl.number);
        match kind {
            Kind::Str if utf8(fl.bytes) => Ok(()),
            Kind::Str => Err(WireError::NotUtf8 {
                message: s.name,
                field: name,
                at: fl.offset,
            }),
            Kind::Msg(t) => walk(t, fl.bytes, fl.offset, depth + 1, out),
            Kind::PackedI64 if fl.bytes.len() % 8 == 0 => Ok(()),
            Kind::PackedI64 => Err(WireError::Truncated {
                what: "packed 64-bit values",
                at: fl.offset + fl.bytes.len() / 8 * 8,
            }),
            Kind::PackedVarint => {
                let mut pos = 0;
                while pos < fl.bytes.len() {
                    wire::varint(fl.bytes, &mut pos, fl.offset)?;
                }
                Ok(())
            }
            Kind::Bytes | Kind::Varint | Kind::I64 | Kind::I32 => Ok(()),
        }
    })?;
    if s.item != Item::No {
        out.items = out.items.saturating_add(1);
    }
    if s.item == Item::Span {
        // A span with no id at all is as invalid as one with a short id.
        if let Some((name, len)) = (0..SPAN_IDS.len())
            .find(|i| ids_seen & 1 << i == 0)
            .map(|i| SPAN_IDS[i])
        {
            bad_id.get_or_insert_with(|| format!("Span.{name} is missing (must be {len} bytes)"));
        }
        if let Some(reason) = bad_id {
            out.invalid += 1;
            out.invalid_reason.get_or_insert(reason);
        }
    }
    Ok(())
}

impl Schema {
    /// The name and kind of field `number`, which the schema knows.
    #[inline]
    fn field(&self, number: u64) -> (&'static str, Kind) {
        let (_, name, kind) = self.fields[usize::from(self.slot[number as usize])];
        (name, kind)
    }
}

fn utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{kv, string_any};
    use crate::msg::put_field;

    /// A trace request of one span with these attribute bytes.
    fn with_attr(attr: &[u8]) -> Vec<u8> {
        let mut span = Vec::new();
        put_field(&mut span, 9, attr);
        let mut scope = Vec::new();
        put_field(&mut scope, 2, &span);
        let mut rs = Vec::new();
        put_field(&mut rs, 2, &scope);
        let mut req = Vec::new();
        put_field(&mut req, 1, &rs);
        req
    }

    #[test]
    fn what_decoding_would_refuse_is_refused_with_its_place() {
        assert_eq!(
            validate(Signal::Traces, &with_attr(&kv("k", &string_any("v")))),
            Ok(())
        );
        let bad_key = with_attr(
            &kv("k\u{0}", &string_any("v"))
                .iter()
                .map(|b| if *b == 0 { 0xff } else { *b })
                .collect::<Vec<_>>(),
        );
        assert!(matches!(
            validate(Signal::Traces, &bad_key),
            Err(WireError::NotUtf8 {
                message: "KeyValue",
                field: "key",
                ..
            })
        ));
        let mut bad_value = Vec::new();
        put_field(&mut bad_value, 1, &[0xc3, 0x28]);
        let e = validate(Signal::Traces, &with_attr(&kv("k", &bad_value))).unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
        // A number where an attribute belongs.
        let mut wrong = Vec::new();
        put_field(&mut wrong, 1, &[]);
        let mut span = vec![9 << 3];
        span.push(1);
        let mut scope = Vec::new();
        put_field(&mut scope, 2, &span);
        let mut rs = Vec::new();
        put_field(&mut rs, 2, &scope);
        let mut req = Vec::new();
        put_field(&mut req, 1, &rs);
        assert!(matches!(
            validate(Signal::Traces, &req),
            Err(WireError::WrongType {
                message: "Span",
                field: "attributes",
                ..
            })
        ));
        // Arrays in arrays, deeper than any real attribute.
        let mut any = string_any("x").to_vec();
        for _ in 0..40 {
            let mut array = Vec::new();
            put_field(&mut array, 1, &any);
            any.clear();
            put_field(&mut any, 5, &array);
        }
        assert_eq!(
            validate(Signal::Traces, &with_attr(&kv("k", &any))),
            Err(WireError::TooDeep)
        );
        let truncated = &with_attr(&kv("k", &string_any("v")))[..10];
        assert!(matches!(
            validate(Signal::Traces, truncated),
            Err(WireError::Truncated { .. })
        ));
    }
}
