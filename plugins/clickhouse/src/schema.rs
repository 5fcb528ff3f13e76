//! The tables, in the spirit of the OpenTelemetry Collector's ClickHouse exporter, adapted to
//! what every ClickHouse since 18.x has: no `Map` and no `DateTime64`, so attributes are
//! `Nested(Key, Value)` string pairs, times are `UInt64` nanoseconds beside a `DateTime` for
//! partitioning and ordering, and events/links are nested arrays with attributes as JSON.

/// Attribute columns.
const ATTRS: &str = "Nested(Key String, Value String)";

/// The columns every metrics table starts with.
fn metric_common() -> String {
    format!(
        "ResourceAttributes {ATTRS}, ServiceName String, ScopeName String, ScopeVersion String, \
         MetricName String, MetricDescription String, MetricUnit String, Attributes {ATTRS}, \
         StartTimeUnixNano UInt64, TimeUnixNano UInt64, Timestamp DateTime, Flags UInt32"
    )
}

/// One table: its name and its `CREATE TABLE` body.
#[derive(Debug, Clone)]
pub struct Table {
    /// Full `db.table` name.
    pub name: String,
    /// Columns and engine.
    ddl: String,
}

impl Table {
    /// `CREATE TABLE IF NOT EXISTS ...`.
    pub fn create(&self) -> String {
        format!("CREATE TABLE IF NOT EXISTS {} {}", self.name, self.ddl)
    }
}

fn merge_tree(columns: &str, order: &str) -> String {
    format!("({columns}) ENGINE = MergeTree() PARTITION BY toDate(Timestamp) ORDER BY ({order})")
}

/// The traces table.
pub fn traces(db: &str, table: &str) -> Table {
    Table {
        name: format!("{db}.{table}"),
        ddl: merge_tree(
            &format!(
                "Timestamp DateTime, TimestampNanos UInt64, TraceId String, SpanId String, \
                 ParentSpanId String, TraceState String, SpanName String, SpanKind String, \
                 ServiceName String, ResourceAttributes {ATTRS}, ScopeName String, \
                 ScopeVersion String, SpanAttributes {ATTRS}, Duration UInt64, \
                 StatusCode String, StatusMessage String, \
                 Events Nested(Timestamp UInt64, Name String, Attributes String), \
                 Links Nested(TraceId String, SpanId String, TraceState String, Attributes String)"
            ),
            "ServiceName, SpanName, Timestamp",
        ),
    }
}

/// The logs table.
pub fn logs(db: &str, table: &str) -> Table {
    Table {
        name: format!("{db}.{table}"),
        ddl: merge_tree(
            &format!(
                "Timestamp DateTime, TimestampNanos UInt64, ObservedTimestampNanos UInt64, \
                 TraceId String, SpanId String, TraceFlags UInt32, SeverityText String, \
                 SeverityNumber Int32, ServiceName String, Body String, \
                 ResourceAttributes {ATTRS}, ScopeName String, ScopeVersion String, \
                 LogAttributes {ATTRS}"
            ),
            "ServiceName, Timestamp",
        ),
    }
}

/// The kinds of metric table, by suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricTable {
    /// `_gauge`.
    Gauge,
    /// `_sum`.
    Sum,
    /// `_histogram`.
    Histogram,
    /// `_exponential_histogram`.
    ExponentialHistogram,
    /// `_summary`.
    Summary,
}

impl MetricTable {
    /// Every kind.
    pub const ALL: [MetricTable; 5] = [
        MetricTable::Gauge,
        MetricTable::Sum,
        MetricTable::Histogram,
        MetricTable::ExponentialHistogram,
        MetricTable::Summary,
    ];

    fn suffix(self) -> &'static str {
        match self {
            MetricTable::Gauge => "gauge",
            MetricTable::Sum => "sum",
            MetricTable::Histogram => "histogram",
            MetricTable::ExponentialHistogram => "exponential_histogram",
            MetricTable::Summary => "summary",
        }
    }

    /// The table of this kind for metrics tables named `prefix_*`.
    pub fn table(self, db: &str, prefix: &str) -> Table {
        let extra = match self {
            MetricTable::Gauge => "Value Float64".to_string(),
            MetricTable::Sum => {
                "Value Float64, AggregationTemporality Int32, IsMonotonic UInt8".to_string()
            }
            MetricTable::Histogram => "Count UInt64, Sum Float64, BucketCounts Array(UInt64), \
                 ExplicitBounds Array(Float64), Min Nullable(Float64), Max Nullable(Float64), \
                 AggregationTemporality Int32"
                .to_string(),
            MetricTable::ExponentialHistogram => "Count UInt64, Sum Float64, Scale Int32, \
                 ZeroCount UInt64, PositiveOffset Int32, PositiveBucketCounts Array(UInt64), \
                 NegativeOffset Int32, NegativeBucketCounts Array(UInt64), \
                 Min Nullable(Float64), Max Nullable(Float64), AggregationTemporality Int32"
                .to_string(),
            MetricTable::Summary => {
                "Count UInt64, Sum Float64, ValueAtQuantiles Nested(Quantile Float64, Value Float64)"
                    .to_string()
            }
        };
        Table {
            name: format!("{db}.{prefix}_{}", self.suffix()),
            ddl: merge_tree(
                &format!("{}, {extra}", metric_common()),
                "ServiceName, MetricName, Timestamp",
            ),
        }
    }
}
