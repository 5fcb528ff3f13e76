//! `ferry-wire`: OTLP export requests in their protobuf wire form, walked, checked, read and
//! edited without decoding them into structs. The Ferry daemon and Rust processor plugins
//! (through `ferry-processor-sdk`) run the same code, so it needs no OS and builds for
//! `wasm32-wasip2`.
//!
//! - here: the field walk (`fields`, `varint`).
//! - [`schema`]: [`inspect`], the receivers' check of a request, as deep as decoding it
//!   (every known field's wire type, every string UTF-8), which also counts its items (spans,
//!   metric data points, log records), so that the request bytes themselves become the batch
//!   (protobuf concatenation of two requests is their merge). Spans whose ids have the wrong
//!   length are reported so the receiver can reject them with an OTLP partial success.
//! - [`msg`]: a request kept as its bytes and edited in place.
//! - [`items`]: field numbers and the walks over items, resources and attributes.

pub use bytes;

pub mod items;
pub mod msg;
pub mod rewrite;
pub mod schema;
pub mod signal;

pub use schema::inspect;
pub use signal::Signal;

/// Why a request is not a well-formed OTLP export request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends inside a field.
    #[error("truncated message: {what} at byte {at}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset in the request.
        at: usize,
    },
    /// A varint longer than 10 bytes.
    #[error("malformed varint at byte {at}")]
    BadVarint {
        /// Offset in the request.
        at: usize,
    },
    /// Field number 0, or a group / unknown wire type.
    #[error("invalid field tag (field {field}, wire type {wire_type}) at byte {at}")]
    BadTag {
        /// Field number.
        field: u64,
        /// Wire type.
        wire_type: u8,
        /// Offset in the request.
        at: usize,
    },
    /// A known field with the wrong wire type.
    #[error("{message}.{field} has wire type {wire_type}, expected {expected}")]
    WrongType {
        /// Enclosing message.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Wire type found.
        wire_type: u8,
        /// What the field's type allows.
        expected: &'static str,
    },
    /// Nesting deeper than any valid OTLP request.
    #[error("message nesting too deep")]
    TooDeep,
    /// A string field that is not UTF-8.
    #[error("{message}.{field} is not valid UTF-8 (at byte {at})")]
    NotUtf8 {
        /// Enclosing message.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Offset in the request.
        at: usize,
    },
}

/// What the walk found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Items in the request, valid or not.
    pub items: u32,
    /// Items that must be rejected (bad trace or span id length).
    pub invalid: u32,
    /// First reason for an invalid item.
    pub invalid_reason: Option<String>,
}

/// Wire type of varints.
pub const WIRE_VARINT: u8 = 0;
/// Wire type of 8-byte fixed-width fields.
pub const WIRE_I64: u8 = 1;
/// Wire type of length-delimited fields.
pub const WIRE_LEN: u8 = 2;
/// Wire type of 4-byte fixed-width fields.
pub const WIRE_I32: u8 = 5;

/// Reads the varint at `pos` (`base` = offset of `buf` in the request, for errors). Tags and
/// most lengths are one byte: that case is inlined, the rest takes the loop.
#[inline(always)]
pub fn varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, WireError> {
    if let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(u64::from(b));
    }
    varint_long(buf, pos, base)
}

#[inline(never)]
fn varint_long(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, WireError> {
    let start = *pos;
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError::Truncated {
                what: "varint",
                at: base + start,
            });
        };
        *pos += 1;
        // The tenth byte holds the 64th bit only: more would overflow, which decoding refuses.
        if i == 9 && b > 1 {
            break;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError::BadVarint { at: base + start })
}

/// One field of a message.
pub struct Field<'a> {
    /// Field number.
    pub number: u64,
    /// Wire type.
    pub wire_type: u8,
    /// The payload of a length-delimited field.
    pub bytes: &'a [u8],
    /// Offset of `bytes` in the request.
    pub offset: usize,
    /// The value of a varint or fixed-width field.
    pub value: u64,
}

/// Calls `f` for every field of the message in `buf` (`base` = offset of `buf` in the request).
pub fn fields<'a>(
    buf: &'a [u8],
    base: usize,
    mut f: impl FnMut(Field<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < buf.len() {
        let tag_at = pos;
        let tag = varint(buf, &mut pos, base)?;
        let number = tag >> 3;
        let wire_type = (tag & 7) as u8;
        if number == 0 || number > 536_870_911 {
            return Err(WireError::BadTag {
                field: number,
                wire_type,
                at: base + tag_at,
            });
        }
        let (bytes, offset, value) = match wire_type {
            WIRE_VARINT => (&buf[..0], 0, varint(buf, &mut pos, base)?),
            WIRE_I64 | WIRE_I32 => {
                let n = if wire_type == WIRE_I64 { 8 } else { 4 };
                if buf.len() - pos < n {
                    return Err(WireError::Truncated {
                        what: "fixed-width field",
                        at: base + pos,
                    });
                }
                let mut le = [0u8; 8];
                le[..n].copy_from_slice(&buf[pos..pos + n]);
                pos += n;
                (&buf[..0], 0, u64::from_le_bytes(le))
            }
            WIRE_LEN => {
                let len = varint(buf, &mut pos, base)?;
                if ((buf.len() - pos) as u64) < len {
                    return Err(WireError::Truncated {
                        what: "length-delimited field",
                        at: base + pos,
                    });
                }
                let start = pos;
                pos += len as usize;
                (&buf[start..pos], base + start, 0)
            }
            _ => {
                return Err(WireError::BadTag {
                    field: number,
                    wire_type,
                    at: base + tag_at,
                });
            }
        };
        f(Field {
            number,
            wire_type,
            bytes,
            offset,
            value,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::common::{AnyValue, KeyValue, any_value};
    use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
    use ferry_proto::logs_service::ExportLogsServiceRequest;
    use ferry_proto::metrics::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    };
    use ferry_proto::metrics_service::ExportMetricsServiceRequest;
    use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
    use ferry_proto::trace_service::ExportTraceServiceRequest;
    use prost::Message;

    fn span(trace_len: usize, span_len: usize) -> Span {
        Span {
            trace_id: vec![1; trace_len],
            span_id: vec![2; span_len],
            name: "op".into(),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn traces(spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_spans_and_flags_bad_ids() {
        let buf = traces(vec![span(16, 8), span(16, 8), span(3, 8), span(16, 0)]);
        let s = inspect(Signal::Traces, &buf).unwrap();
        assert_eq!(s.items, 4);
        assert_eq!(s.invalid, 2);
        assert!(
            s.invalid_reason
                .unwrap()
                .contains("trace_id must be 16 bytes")
        );
    }

    #[test]
    fn counts_metric_points_across_kinds() {
        let dp = NumberDataPoint::default();
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "g".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![dp.clone(), dp.clone()],
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "s".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: vec![dp.clone(), dp.clone(), dp],
                                ..Default::default()
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let s = inspect(Signal::Metrics, &req.encode_to_vec()).unwrap();
        assert_eq!((s.items, s.invalid), (5, 0));
    }

    #[test]
    fn counts_log_records() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 7],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let s = inspect(Signal::Logs, &req.encode_to_vec()).unwrap();
        assert_eq!((s.items, s.invalid), (7, 0));
    }

    #[test]
    fn concatenation_is_merge() {
        let a = traces(vec![span(16, 8)]);
        let b = traces(vec![span(16, 8), span(16, 8)]);
        let joined = [a, b].concat();
        assert_eq!(inspect(Signal::Traces, &joined).unwrap().items, 3);
        let merged = ExportTraceServiceRequest::decode(joined.as_slice()).unwrap();
        assert_eq!(merged.resource_spans.len(), 2);
    }

    #[test]
    fn rejects_malformed_input() {
        let good = traces(vec![span(16, 8)]);
        for cut in 1..good.len() {
            assert!(
                inspect(Signal::Traces, &good[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
        // resource_spans as a varint.
        assert!(matches!(
            inspect(Signal::Traces, &[0x08, 0x01]),
            Err(WireError::WrongType { .. })
        ));
        // Field number 0.
        assert!(matches!(
            inspect(Signal::Traces, &[0x02, 0x00]),
            Err(WireError::BadTag { .. })
        ));
        // Group wire type.
        assert!(matches!(
            inspect(Signal::Logs, &[0x0b]),
            Err(WireError::BadTag { .. })
        ));
        // Absurd length.
        assert!(matches!(
            inspect(Signal::Metrics, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Truncated { .. })
        ));
        // Overlong varint.
        assert!(matches!(
            inspect(Signal::Traces, &[0xff; 11]),
            Err(WireError::BadVarint { .. })
        ));
        // A ten-byte varint past 64 bits, which decoding refuses too.
        let mut overflow = vec![0x0a];
        overflow.extend([0xff; 9]);
        overflow.push(0x02);
        assert!(matches!(
            inspect(Signal::Traces, &overflow),
            Err(WireError::BadVarint { .. })
        ));
        assert_eq!(inspect(Signal::Traces, &[]).unwrap().items, 0);
    }
}
