//! `ferry-wire`: OTLP export requests in their protobuf wire form, walked, checked, read and
//! edited without decoding them into structs. The Ferry daemon and Rust processor plugins
//! (through `ferry-processor-sdk`) run the same code, so it needs no OS and builds for
//! `wasm32-wasip2`.
//!
//! - here: the field walk (`fields`, `varint`) and `inspect`, the receivers' check: the
//!   structure down to the items (spans, metric data points, log records), counted, without
//!   decoding, so that the request bytes themselves become the batch (protobuf concatenation of
//!   two requests is their merge). Items whose ids have the wrong length are reported so the
//!   receiver can reject them with an OTLP partial success.
//! - [`schema`]: the deep check before processors read a request (every string UTF-8).
//! - [`msg`]: a request kept as its bytes and edited in place.
//! - [`items`]: field numbers and the walks over items, resources and attributes.

pub use bytes;

pub mod items;
pub mod msg;
pub mod schema;
pub mod signal;

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
    #[error("{message}.{field} has wire type {wire_type}, expected a length-delimited message")]
    WrongType {
        /// Enclosing message.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Wire type found.
        wire_type: u8,
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

/// A level of the OTLP request tree: which fields hold nested messages we descend into.
struct Level {
    name: &'static str,
    children: &'static [(u64, &'static str, &'static Level)],
    /// This level is an item; `ids` lists (field, name, required length) to check.
    item: Option<&'static [(u64, &'static str, usize)]>,
}

const LEAF: Level = Level {
    name: "message",
    children: &[],
    item: None,
};

const SPAN: Level = Level {
    name: "Span",
    children: &[],
    item: Some(&[(1, "trace_id", 16), (2, "span_id", 8)]),
};
const SCOPE_SPANS: Level = Level {
    name: "ScopeSpans",
    children: &[(1, "scope", &LEAF), (2, "spans", &SPAN)],
    item: None,
};
const RESOURCE_SPANS: Level = Level {
    name: "ResourceSpans",
    children: &[(1, "resource", &LEAF), (2, "scope_spans", &SCOPE_SPANS)],
    item: None,
};
const TRACES: Level = Level {
    name: "ExportTraceServiceRequest",
    children: &[(1, "resource_spans", &RESOURCE_SPANS)],
    item: None,
};

const DATA_POINT: Level = Level {
    name: "DataPoint",
    children: &[],
    item: Some(&[]),
};
const POINTS: Level = Level {
    name: "MetricData",
    children: &[(1, "data_points", &DATA_POINT)],
    item: None,
};
const METRIC: Level = Level {
    name: "Metric",
    children: &[
        (5, "gauge", &POINTS),
        (7, "sum", &POINTS),
        (9, "histogram", &POINTS),
        (10, "exponential_histogram", &POINTS),
        (11, "summary", &POINTS),
    ],
    item: None,
};
const SCOPE_METRICS: Level = Level {
    name: "ScopeMetrics",
    children: &[(1, "scope", &LEAF), (2, "metrics", &METRIC)],
    item: None,
};
const RESOURCE_METRICS: Level = Level {
    name: "ResourceMetrics",
    children: &[(1, "resource", &LEAF), (2, "scope_metrics", &SCOPE_METRICS)],
    item: None,
};
const METRICS: Level = Level {
    name: "ExportMetricsServiceRequest",
    children: &[(1, "resource_metrics", &RESOURCE_METRICS)],
    item: None,
};

const LOG_RECORD: Level = Level {
    name: "LogRecord",
    children: &[],
    item: Some(&[]),
};
const SCOPE_LOGS: Level = Level {
    name: "ScopeLogs",
    children: &[(1, "scope", &LEAF), (2, "log_records", &LOG_RECORD)],
    item: None,
};
const RESOURCE_LOGS: Level = Level {
    name: "ResourceLogs",
    children: &[(1, "resource", &LEAF), (2, "scope_logs", &SCOPE_LOGS)],
    item: None,
};
const LOGS: Level = Level {
    name: "ExportLogsServiceRequest",
    children: &[(1, "resource_logs", &RESOURCE_LOGS)],
    item: None,
};

fn walk(
    buf: &[u8],
    base: usize,
    level: &Level,
    depth: u8,
    out: &mut Summary,
) -> Result<(), WireError> {
    if depth > 8 {
        return Err(WireError::TooDeep);
    }
    let mut bad_id: Option<String> = None;
    // Bit i set = the i-th id field of an item was present.
    let mut seen_ids = 0u8;
    fields(buf, base, |f| {
        if let Some(ids) = level.item {
            for (i, &(number, name, len)) in ids.iter().enumerate() {
                if f.number != number {
                    continue;
                }
                seen_ids |= 1 << i;
                if f.wire_type == WIRE_LEN && f.bytes.len() != len {
                    bad_id.get_or_insert_with(|| {
                        format!(
                            "{}.{name} must be {len} bytes, got {}",
                            level.name,
                            f.bytes.len()
                        )
                    });
                }
            }
            return Ok(());
        }
        let Some(&(_, name, child)) = level.children.iter().find(|c| c.0 == f.number) else {
            return Ok(());
        };
        if f.wire_type != WIRE_LEN {
            return Err(WireError::WrongType {
                message: level.name,
                field: name,
                wire_type: f.wire_type,
            });
        }
        walk(f.bytes, f.offset, child, depth + 1, out)
    })?;
    if let Some(ids) = level.item {
        out.items = out.items.saturating_add(1);
        // An item with no id at all is as invalid as one with a short id.
        if let Some((_, &(_, name, len))) = ids
            .iter()
            .enumerate()
            .find(|(i, _)| seen_ids & (1 << i) == 0)
        {
            bad_id.get_or_insert_with(|| {
                format!("{}.{name} is missing (must be {len} bytes)", level.name)
            });
        }
        if let Some(reason) = bad_id {
            out.invalid += 1;
            out.invalid_reason.get_or_insert(reason);
        }
    }
    Ok(())
}

/// Validates an OTLP export request of `signal` and counts its items.
pub fn inspect(signal: Signal, buf: &[u8]) -> Result<Summary, WireError> {
    let root = match signal {
        Signal::Traces => &TRACES,
        Signal::Metrics => &METRICS,
        Signal::Logs => &LOGS,
    };
    let mut out = Summary::default();
    walk(buf, 0, root, 0, &mut out)?;
    Ok(out)
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
        assert_eq!(inspect(Signal::Traces, &[]).unwrap().items, 0);
    }
}
