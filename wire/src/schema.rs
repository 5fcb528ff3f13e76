//! What a request must be before native processors read it in place: an export request of
//! its signal down to every string (UTF-8) and attribute value, as decoding it into structs
//! would check.

use crate::{self as wire, Signal, WIRE_LEN, WireError};

/// What a validated field holds.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Msg(Type),
}

/// The message types validation descends into.
#[derive(Clone, Copy)]
enum Type {
    Any,
    Array,
    KvList,
    Kv,
    Resource,
    Scope,
    Status,
    Event,
    Link,
    Span,
    ScopeSpans,
    ResourceSpans,
    Traces,
    Log,
    ScopeLogs,
    ResourceLogs,
    Logs,
    Exemplar,
    NumberPoint,
    HistogramPoint,
    ExpPoint,
    SummaryPoint,
    Gauge,
    Histogram,
    ExpHistogram,
    Summary,
    Metric,
    ScopeMetrics,
    ResourceMetrics,
    Metrics,
}

type Fields = &'static [(u32, &'static str, Kind)];

impl Type {
    /// Its name and its string and message fields (others are not checked).
    fn schema(self) -> (&'static str, Fields) {
        use Kind::{Msg as M, Str as S};
        use Type as T;
        match self {
            T::Any => (
                "AnyValue",
                &[
                    (1, "string_value", S),
                    (5, "array_value", M(T::Array)),
                    (6, "kvlist_value", M(T::KvList)),
                ],
            ),
            T::Array => ("ArrayValue", &[(1, "values", M(T::Any))]),
            T::KvList => ("KeyValueList", &[(1, "values", M(T::Kv))]),
            T::Kv => ("KeyValue", &[(1, "key", S), (2, "value", M(T::Any))]),
            T::Resource => ("Resource", &[(1, "attributes", M(T::Kv))]),
            T::Scope => (
                "InstrumentationScope",
                &[
                    (1, "name", S),
                    (2, "version", S),
                    (3, "attributes", M(T::Kv)),
                ],
            ),
            T::Status => ("Status", &[(2, "message", S)]),
            T::Event => ("Span.Event", &[(2, "name", S), (3, "attributes", M(T::Kv))]),
            T::Link => (
                "Span.Link",
                &[(3, "trace_state", S), (4, "attributes", M(T::Kv))],
            ),
            T::Span => (
                "Span",
                &[
                    (3, "trace_state", S),
                    (5, "name", S),
                    (9, "attributes", M(T::Kv)),
                    (11, "events", M(T::Event)),
                    (13, "links", M(T::Link)),
                    (15, "status", M(T::Status)),
                ],
            ),
            T::ScopeSpans => (
                "ScopeSpans",
                &[
                    (1, "scope", M(T::Scope)),
                    (2, "spans", M(T::Span)),
                    (3, "schema_url", S),
                ],
            ),
            T::ResourceSpans => (
                "ResourceSpans",
                &[
                    (1, "resource", M(T::Resource)),
                    (2, "scope_spans", M(T::ScopeSpans)),
                    (3, "schema_url", S),
                ],
            ),
            T::Traces => (
                "ExportTraceServiceRequest",
                &[(1, "resource_spans", M(T::ResourceSpans))],
            ),
            T::Log => (
                "LogRecord",
                &[
                    (3, "severity_text", S),
                    (5, "body", M(T::Any)),
                    (6, "attributes", M(T::Kv)),
                    (12, "event_name", S),
                ],
            ),
            T::ScopeLogs => (
                "ScopeLogs",
                &[
                    (1, "scope", M(T::Scope)),
                    (2, "log_records", M(T::Log)),
                    (3, "schema_url", S),
                ],
            ),
            T::ResourceLogs => (
                "ResourceLogs",
                &[
                    (1, "resource", M(T::Resource)),
                    (2, "scope_logs", M(T::ScopeLogs)),
                    (3, "schema_url", S),
                ],
            ),
            T::Logs => (
                "ExportLogsServiceRequest",
                &[(1, "resource_logs", M(T::ResourceLogs))],
            ),
            T::Exemplar => ("Exemplar", &[(7, "filtered_attributes", M(T::Kv))]),
            T::NumberPoint => (
                "NumberDataPoint",
                &[
                    (7, "attributes", M(T::Kv)),
                    (5, "exemplars", M(T::Exemplar)),
                ],
            ),
            T::HistogramPoint => (
                "HistogramDataPoint",
                &[
                    (9, "attributes", M(T::Kv)),
                    (8, "exemplars", M(T::Exemplar)),
                ],
            ),
            T::ExpPoint => (
                "ExponentialHistogramDataPoint",
                &[
                    (1, "attributes", M(T::Kv)),
                    (11, "exemplars", M(T::Exemplar)),
                ],
            ),
            T::SummaryPoint => ("SummaryDataPoint", &[(7, "attributes", M(T::Kv))]),
            T::Gauge => ("Gauge", &[(1, "data_points", M(T::NumberPoint))]),
            T::Histogram => ("Histogram", &[(1, "data_points", M(T::HistogramPoint))]),
            T::ExpHistogram => (
                "ExponentialHistogram",
                &[(1, "data_points", M(T::ExpPoint))],
            ),
            T::Summary => ("Summary", &[(1, "data_points", M(T::SummaryPoint))]),
            T::Metric => (
                "Metric",
                &[
                    (1, "name", S),
                    (2, "description", S),
                    (3, "unit", S),
                    (5, "gauge", M(T::Gauge)),
                    (7, "sum", M(T::Gauge)),
                    (9, "histogram", M(T::Histogram)),
                    (10, "exponential_histogram", M(T::ExpHistogram)),
                    (11, "summary", M(T::Summary)),
                    (12, "metadata", M(T::Kv)),
                ],
            ),
            T::ScopeMetrics => (
                "ScopeMetrics",
                &[
                    (1, "scope", M(T::Scope)),
                    (2, "metrics", M(T::Metric)),
                    (3, "schema_url", S),
                ],
            ),
            T::ResourceMetrics => (
                "ResourceMetrics",
                &[
                    (1, "resource", M(T::Resource)),
                    (2, "scope_metrics", M(T::ScopeMetrics)),
                    (3, "schema_url", S),
                ],
            ),
            T::Metrics => (
                "ExportMetricsServiceRequest",
                &[(1, "resource_metrics", M(T::ResourceMetrics))],
            ),
        }
    }
}

/// Deeper than OTLP nests, bar attribute values nested in each other (prost's own limit is
/// 100).
const MAX_DEPTH: u32 = 64;

/// Checks that `bytes` is an export request of `signal` down to every string (UTF-8) and
/// attribute value: what decoding it into structs would check.
pub fn validate(signal: Signal, bytes: &[u8]) -> Result<(), WireError> {
    let root = match signal {
        Signal::Traces => Type::Traces,
        Signal::Metrics => Type::Metrics,
        Signal::Logs => Type::Logs,
    };
    check(root, bytes, 0, 0)
}

fn check(ty: Type, buf: &[u8], base: usize, depth: u32) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    let (message, fields) = ty.schema();
    // Most attributes are a key and a string or number: check that layout without the
    // general walk.
    if let Type::Kv = ty
        && let Some((key, any)) = super::items::kv_layout(buf)
        && let Some(string) = super::items::simple_layout(any)
    {
        let field = match (utf8(key), string.is_none_or(utf8)) {
            (true, true) => return Ok(()),
            (false, _) => "key",
            (true, false) => "value",
        };
        return Err(WireError::NotUtf8 {
            message,
            field,
            at: base,
        });
    }
    // Field numbers checked here are all below 32: one bit test skips the rest.
    let checked = fields.iter().fold(0u32, |m, (n, _, _)| m | 1 << n);
    wire::fields(buf, base, |fl| {
        if fl.number >= 32 || checked & (1 << fl.number) == 0 {
            return Ok(());
        }
        let Some((_, name, kind)) = fields.iter().find(|(n, _, _)| u64::from(*n) == fl.number)
        else {
            return Ok(());
        };
        if fl.wire_type != WIRE_LEN {
            return Err(WireError::WrongType {
                message,
                field: name,
                wire_type: fl.wire_type,
            });
        }
        match kind {
            Kind::Str if utf8(fl.bytes) => Ok(()),
            Kind::Str => Err(WireError::NotUtf8 {
                message,
                field: name,
                at: fl.offset,
            }),
            Kind::Msg(t) => check(*t, fl.bytes, fl.offset, depth + 1),
        }
    })
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
