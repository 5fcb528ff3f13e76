//! The OTLP message types, as the fields the check knows (those of the `opentelemetry-proto`
//! version Ferry builds with; fields it does not know are skipped, as decoding skips them).

use crate::{self as wire, WIRE_LEN};

/// What a known field holds.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Bytes,
    Msg(Type),
    Varint,
    I64,
    I32,
    /// `repeated fixed64` / `double`: packed, or one value per field.
    PackedI64,
    /// `repeated uint64`: packed, or one value per field.
    PackedVarint,
}

impl Kind {
    /// The wire types it may come with, as bits.
    const fn wire_types(self) -> u8 {
        match self {
            Kind::Str | Kind::Bytes | Kind::Msg(_) => 1 << WIRE_LEN,
            Kind::Varint => 1 << wire::WIRE_VARINT,
            Kind::I64 => 1 << wire::WIRE_I64,
            Kind::I32 => 1 << wire::WIRE_I32,
            Kind::PackedI64 => 1 << WIRE_LEN | 1 << wire::WIRE_I64,
            Kind::PackedVarint => 1 << WIRE_LEN | 1 << wire::WIRE_VARINT,
        }
    }

    /// Whether its length-delimited form needs a look inside.
    const fn deep(self) -> bool {
        matches!(
            self,
            Kind::Str | Kind::Msg(_) | Kind::PackedI64 | Kind::PackedVarint
        )
    }

    pub(super) fn expected(self) -> &'static str {
        match self {
            Kind::Str | Kind::Bytes | Kind::Msg(_) => "length-delimited",
            Kind::Varint => "a varint",
            Kind::I64 => "64-bit fixed-width",
            Kind::I32 => "32-bit fixed-width",
            Kind::PackedI64 => "packed or 64-bit fixed-width",
            Kind::PackedVarint => "packed or a varint",
        }
    }
}

/// Whether a message is an item, and which.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Item {
    No,
    Yes,
    /// A span: an item whose ids must have their lengths.
    Span,
}

type Fields = &'static [(u32, &'static str, Kind)];

/// A message type: its fields, and bit sets over their numbers (all below 32 in OTLP) so
/// that the walk decides most fields with one bit test.
pub(super) struct Schema {
    pub(super) name: &'static str,
    pub(super) fields: Fields,
    pub(super) known: u32,
    /// Indexed by wire type: the fields that may come with it.
    pub(super) by_wire_type: [u32; 6],
    /// Length-delimited fields to look inside.
    pub(super) deep: u32,
    /// By field number: its index in `fields`.
    pub(super) slot: [u8; 32],
    pub(super) item: Item,
}

const fn schema(name: &'static str, fields: Fields, item: Item) -> Schema {
    let mut s = Schema {
        name,
        fields,
        known: 0,
        by_wire_type: [0; 6],
        deep: 0,
        slot: [0; 32],
        item,
    };
    let mut i = 0;
    while i < fields.len() {
        let (n, _, kind) = fields[i];
        assert!(n > 0 && n < 32, "OTLP field numbers are below 32");
        let bit = 1 << n;
        s.known |= bit;
        s.slot[n as usize] = i as u8;
        let mut w = 0;
        while w < 6 {
            if kind.wire_types() & 1 << w != 0 {
                s.by_wire_type[w] |= bit;
            }
            w += 1;
        }
        if kind.deep() {
            s.deep |= bit;
        }
        i += 1;
    }
    s
}

/// The message types.
#[derive(Clone, Copy)]
pub(super) enum Type {
    Any,
    Array,
    KvList,
    Kv,
    Resource,
    EntityRef,
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
    Buckets,
    SummaryPoint,
    Quantile,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    Metric,
    ScopeMetrics,
    ResourceMetrics,
    Metrics,
}

use Item::{No, Span as SpanItem, Yes};
use Kind::{
    Bytes as B, I32, I64, Msg as M, PackedI64 as PI64, PackedVarint as PV, Str as S, Varint as V,
};
use Type as T;

const ANY: Schema = schema(
    "AnyValue",
    &[
        (1, "string_value", S),
        (2, "bool_value", V),
        (3, "int_value", V),
        (4, "double_value", I64),
        (5, "array_value", M(T::Array)),
        (6, "kvlist_value", M(T::KvList)),
        (7, "bytes_value", B),
        (8, "string_value_strindex", V),
    ],
    No,
);
const ARRAY: Schema = schema("ArrayValue", &[(1, "values", M(T::Any))], No);
const KV_LIST: Schema = schema("KeyValueList", &[(1, "values", M(T::Kv))], No);
const KV: Schema = schema(
    "KeyValue",
    &[
        (1, "key", S),
        (2, "value", M(T::Any)),
        (3, "key_strindex", V),
    ],
    No,
);
const RESOURCE: Schema = schema(
    "Resource",
    &[
        (1, "attributes", M(T::Kv)),
        (2, "dropped_attributes_count", V),
        (3, "entity_refs", M(T::EntityRef)),
    ],
    No,
);
const ENTITY_REF: Schema = schema(
    "EntityRef",
    &[
        (1, "schema_url", S),
        (2, "type", S),
        (3, "id_keys", S),
        (4, "description_keys", S),
    ],
    No,
);
const SCOPE: Schema = schema(
    "InstrumentationScope",
    &[
        (1, "name", S),
        (2, "version", S),
        (3, "attributes", M(T::Kv)),
        (4, "dropped_attributes_count", V),
    ],
    No,
);
const STATUS: Schema = schema("Status", &[(2, "message", S), (3, "code", V)], No);
const EVENT: Schema = schema(
    "Span.Event",
    &[
        (1, "time_unix_nano", I64),
        (2, "name", S),
        (3, "attributes", M(T::Kv)),
        (4, "dropped_attributes_count", V),
    ],
    No,
);
const LINK: Schema = schema(
    "Span.Link",
    &[
        (1, "trace_id", B),
        (2, "span_id", B),
        (3, "trace_state", S),
        (4, "attributes", M(T::Kv)),
        (5, "dropped_attributes_count", V),
        (6, "flags", I32),
    ],
    No,
);
const SPAN: Schema = schema(
    "Span",
    &[
        (1, "trace_id", B),
        (2, "span_id", B),
        (3, "trace_state", S),
        (4, "parent_span_id", B),
        (5, "name", S),
        (6, "kind", V),
        (7, "start_time_unix_nano", I64),
        (8, "end_time_unix_nano", I64),
        (9, "attributes", M(T::Kv)),
        (10, "dropped_attributes_count", V),
        (11, "events", M(T::Event)),
        (12, "dropped_events_count", V),
        (13, "links", M(T::Link)),
        (14, "dropped_links_count", V),
        (15, "status", M(T::Status)),
        (16, "flags", I32),
    ],
    SpanItem,
);
const SCOPE_SPANS: Schema = schema(
    "ScopeSpans",
    &[
        (1, "scope", M(T::Scope)),
        (2, "spans", M(T::Span)),
        (3, "schema_url", S),
    ],
    No,
);
const RESOURCE_SPANS: Schema = schema(
    "ResourceSpans",
    &[
        (1, "resource", M(T::Resource)),
        (2, "scope_spans", M(T::ScopeSpans)),
        (3, "schema_url", S),
    ],
    No,
);
const TRACES: Schema = schema(
    "ExportTraceServiceRequest",
    &[(1, "resource_spans", M(T::ResourceSpans))],
    No,
);
const LOG: Schema = schema(
    "LogRecord",
    &[
        (1, "time_unix_nano", I64),
        (2, "severity_number", V),
        (3, "severity_text", S),
        (5, "body", M(T::Any)),
        (6, "attributes", M(T::Kv)),
        (7, "dropped_attributes_count", V),
        (8, "flags", I32),
        (9, "trace_id", B),
        (10, "span_id", B),
        (11, "observed_time_unix_nano", I64),
        (12, "event_name", S),
    ],
    Yes,
);
const SCOPE_LOGS: Schema = schema(
    "ScopeLogs",
    &[
        (1, "scope", M(T::Scope)),
        (2, "log_records", M(T::Log)),
        (3, "schema_url", S),
    ],
    No,
);
const RESOURCE_LOGS: Schema = schema(
    "ResourceLogs",
    &[
        (1, "resource", M(T::Resource)),
        (2, "scope_logs", M(T::ScopeLogs)),
        (3, "schema_url", S),
    ],
    No,
);
const LOGS: Schema = schema(
    "ExportLogsServiceRequest",
    &[(1, "resource_logs", M(T::ResourceLogs))],
    No,
);
const EXEMPLAR: Schema = schema(
    "Exemplar",
    &[
        (2, "time_unix_nano", I64),
        (3, "as_double", I64),
        (4, "span_id", B),
        (5, "trace_id", B),
        (6, "as_int", I64),
        (7, "filtered_attributes", M(T::Kv)),
    ],
    No,
);
const NUMBER_POINT: Schema = schema(
    "NumberDataPoint",
    &[
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "as_double", I64),
        (5, "exemplars", M(T::Exemplar)),
        (6, "as_int", I64),
        (7, "attributes", M(T::Kv)),
        (8, "flags", V),
    ],
    Yes,
);
const HISTOGRAM_POINT: Schema = schema(
    "HistogramDataPoint",
    &[
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "count", I64),
        (5, "sum", I64),
        (6, "bucket_counts", PI64),
        (7, "explicit_bounds", PI64),
        (8, "exemplars", M(T::Exemplar)),
        (9, "attributes", M(T::Kv)),
        (10, "flags", V),
        (11, "min", I64),
        (12, "max", I64),
    ],
    Yes,
);
const EXP_POINT: Schema = schema(
    "ExponentialHistogramDataPoint",
    &[
        (1, "attributes", M(T::Kv)),
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "count", I64),
        (5, "sum", I64),
        (6, "scale", V),
        (7, "zero_count", I64),
        (8, "positive", M(T::Buckets)),
        (9, "negative", M(T::Buckets)),
        (10, "flags", V),
        (11, "exemplars", M(T::Exemplar)),
        (12, "min", I64),
        (13, "max", I64),
        (14, "zero_threshold", I64),
    ],
    Yes,
);
const BUCKETS: Schema = schema(
    "ExponentialHistogramDataPoint.Buckets",
    &[(1, "offset", V), (2, "bucket_counts", PV)],
    No,
);
const SUMMARY_POINT: Schema = schema(
    "SummaryDataPoint",
    &[
        (2, "start_time_unix_nano", I64),
        (3, "time_unix_nano", I64),
        (4, "count", I64),
        (5, "sum", I64),
        (6, "quantile_values", M(T::Quantile)),
        (7, "attributes", M(T::Kv)),
        (8, "flags", V),
    ],
    Yes,
);
const QUANTILE: Schema = schema(
    "SummaryDataPoint.ValueAtQuantile",
    &[(1, "quantile", I64), (2, "value", I64)],
    No,
);
const GAUGE: Schema = schema("Gauge", &[(1, "data_points", M(T::NumberPoint))], No);
const SUM: Schema = schema(
    "Sum",
    &[
        (1, "data_points", M(T::NumberPoint)),
        (2, "aggregation_temporality", V),
        (3, "is_monotonic", V),
    ],
    No,
);
const HISTOGRAM: Schema = schema(
    "Histogram",
    &[
        (1, "data_points", M(T::HistogramPoint)),
        (2, "aggregation_temporality", V),
    ],
    No,
);
const EXP_HISTOGRAM: Schema = schema(
    "ExponentialHistogram",
    &[
        (1, "data_points", M(T::ExpPoint)),
        (2, "aggregation_temporality", V),
    ],
    No,
);
const SUMMARY: Schema = schema("Summary", &[(1, "data_points", M(T::SummaryPoint))], No);
const METRIC: Schema = schema(
    "Metric",
    &[
        (1, "name", S),
        (2, "description", S),
        (3, "unit", S),
        (5, "gauge", M(T::Gauge)),
        (7, "sum", M(T::Sum)),
        (9, "histogram", M(T::Histogram)),
        (10, "exponential_histogram", M(T::ExpHistogram)),
        (11, "summary", M(T::Summary)),
        (12, "metadata", M(T::Kv)),
    ],
    No,
);
const SCOPE_METRICS: Schema = schema(
    "ScopeMetrics",
    &[
        (1, "scope", M(T::Scope)),
        (2, "metrics", M(T::Metric)),
        (3, "schema_url", S),
    ],
    No,
);
const RESOURCE_METRICS: Schema = schema(
    "ResourceMetrics",
    &[
        (1, "resource", M(T::Resource)),
        (2, "scope_metrics", M(T::ScopeMetrics)),
        (3, "schema_url", S),
    ],
    No,
);
const METRICS: Schema = schema(
    "ExportMetricsServiceRequest",
    &[(1, "resource_metrics", M(T::ResourceMetrics))],
    No,
);

impl Type {
    pub(super) fn schema(self) -> &'static Schema {
        match self {
            T::Any => &ANY,
            T::Array => &ARRAY,
            T::KvList => &KV_LIST,
            T::Kv => &KV,
            T::Resource => &RESOURCE,
            T::EntityRef => &ENTITY_REF,
            T::Scope => &SCOPE,
            T::Status => &STATUS,
            T::Event => &EVENT,
            T::Link => &LINK,
            T::Span => &SPAN,
            T::ScopeSpans => &SCOPE_SPANS,
            T::ResourceSpans => &RESOURCE_SPANS,
            T::Traces => &TRACES,
            T::Log => &LOG,
            T::ScopeLogs => &SCOPE_LOGS,
            T::ResourceLogs => &RESOURCE_LOGS,
            T::Logs => &LOGS,
            T::Exemplar => &EXEMPLAR,
            T::NumberPoint => &NUMBER_POINT,
            T::HistogramPoint => &HISTOGRAM_POINT,
            T::ExpPoint => &EXP_POINT,
            T::Buckets => &BUCKETS,
            T::SummaryPoint => &SUMMARY_POINT,
            T::Quantile => &QUANTILE,
            T::Gauge => &GAUGE,
            T::Sum => &SUM,
            T::Histogram => &HISTOGRAM,
            T::ExpHistogram => &EXP_HISTOGRAM,
            T::Summary => &SUMMARY,
            T::Metric => &METRIC,
            T::ScopeMetrics => &SCOPE_METRICS,
            T::ResourceMetrics => &RESOURCE_METRICS,
            T::Metrics => &METRICS,
        }
    }
}
