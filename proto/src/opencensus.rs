//! OpenCensus agent protobuf messages (`opencensus-proto`: `agent/common/v1`, `resource/v1`,
//! `trace/v1`, `metrics/v1`, and the agent's trace and metrics services), as the OpenCensus
//! exporters stream them to an agent. Written out with `prost` derives: no `protoc` needed.
//! Fields the agent does not translate (stack traces, library config) are left out; prost
//! skips them on the wire.

use std::collections::BTreeMap;

use crate::wkt::{BoolValue, DoubleValue, Int64Value, Timestamp, UInt32Value};

/// gRPC path of `opencensus.proto.agent.trace.v1.TraceService/Export`.
pub const TRACE_EXPORT_PATH: &str = "/opencensus.proto.agent.trace.v1.TraceService/Export";
/// gRPC path of `opencensus.proto.agent.metrics.v1.MetricsService/Export`.
pub const METRICS_EXPORT_PATH: &str = "/opencensus.proto.agent.metrics.v1.MetricsService/Export";

/// `agent.common.v1.Node`: who is sending; sent once per stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    /// The process.
    #[prost(message, optional, tag = "1")]
    pub identifier: Option<ProcessIdentifier>,
    /// The instrumentation library.
    #[prost(message, optional, tag = "2")]
    pub library_info: Option<LibraryInfo>,
    /// The service.
    #[prost(message, optional, tag = "3")]
    pub service_info: Option<ServiceInfo>,
    /// Free-form attributes.
    #[prost(btree_map = "string, string", tag = "4")]
    pub attributes: BTreeMap<String, String>,
}

/// `agent.common.v1.ProcessIdentifier`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessIdentifier {
    /// Host name.
    #[prost(string, tag = "1")]
    pub host_name: String,
    /// Process id.
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    /// When the process started.
    #[prost(message, optional, tag = "3")]
    pub start_timestamp: Option<Timestamp>,
}

/// `agent.common.v1.LibraryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LibraryInfo {
    /// `LibraryInfo.Language`: 1 CPP, 2 C_SHARP, 3 ERLANG, 4 GO_LANG, 5 JAVA, 6 NODE_JS,
    /// 7 PHP, 8 PYTHON, 9 RUBY, 10 WEB_JS.
    #[prost(int32, tag = "1")]
    pub language: i32,
    /// Version of the exporter.
    #[prost(string, tag = "2")]
    pub exporter_version: String,
    /// Version of the OpenCensus library.
    #[prost(string, tag = "3")]
    pub core_library_version: String,
}

/// `agent.common.v1.ServiceInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceInfo {
    /// Service name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Resource type, e.g. `k8s_container`.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
}

/// `agent.trace.v1.ExportTraceServiceRequest`: one message of the `Export` stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    /// Required in the first message of a stream; later messages inherit it.
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    /// Spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    /// Resource of spans without their own.
    #[prost(message, optional, tag = "3")]
    pub resource: Option<Resource>,
}

/// `agent.metrics.v1.ExportMetricsServiceRequest`: one message of the `Export` stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportMetricsServiceRequest {
    /// Required in the first message of a stream; later messages inherit it.
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    /// Metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Resource of metrics without their own.
    #[prost(message, optional, tag = "3")]
    pub resource: Option<Resource>,
}

/// `trace.v1.TruncatableString`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TruncatableString {
    /// The (possibly shortened) string.
    #[prost(string, tag = "1")]
    pub value: String,
    /// Bytes cut off.
    #[prost(int32, tag = "2")]
    pub truncated_byte_count: i32,
}

/// `trace.v1.Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// W3C trace state.
    #[prost(message, optional, tag = "15")]
    pub tracestate: Option<Tracestate>,
    /// Empty for a root span.
    #[prost(bytes = "vec", tag = "3")]
    pub parent_span_id: Vec<u8>,
    /// Name.
    #[prost(message, optional, tag = "4")]
    pub name: Option<TruncatableString>,
    /// 0 unspecified, 1 SERVER, 2 CLIENT.
    #[prost(int32, tag = "14")]
    pub kind: i32,
    /// Start.
    #[prost(message, optional, tag = "5")]
    pub start_time: Option<Timestamp>,
    /// End.
    #[prost(message, optional, tag = "6")]
    pub end_time: Option<Timestamp>,
    /// Attributes.
    #[prost(message, optional, tag = "7")]
    pub attributes: Option<Attributes>,
    /// Annotations and message events.
    #[prost(message, optional, tag = "9")]
    pub time_events: Option<TimeEvents>,
    /// Links.
    #[prost(message, optional, tag = "10")]
    pub links: Option<Links>,
    /// Status.
    #[prost(message, optional, tag = "11")]
    pub status: Option<Status>,
    /// Overrides the request's resource for this span.
    #[prost(message, optional, tag = "16")]
    pub resource: Option<Resource>,
    /// Whether the parent ran in the same process.
    #[prost(message, optional, tag = "12")]
    pub same_process_as_parent_span: Option<BoolValue>,
    /// Number of children.
    #[prost(message, optional, tag = "13")]
    pub child_span_count: Option<UInt32Value>,
}

/// `Span.Tracestate`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tracestate {
    /// Entries, in order.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<TracestateEntry>,
}

/// `Span.Tracestate.Entry`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TracestateEntry {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `Span.Attributes`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Attributes {
    /// Attributes by key.
    #[prost(btree_map = "string, message", tag = "1")]
    pub attribute_map: BTreeMap<String, AttributeValue>,
    /// Attributes the client dropped.
    #[prost(int32, tag = "2")]
    pub dropped_attributes_count: i32,
}

/// `trace.v1.AttributeValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeValue {
    /// The value.
    #[prost(oneof = "attribute_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<attribute_value::Value>,
}

/// Nested types of [`AttributeValue`].
pub mod attribute_value {
    /// `AttributeValue.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A string.
        #[prost(message, tag = "1")]
        StringValue(super::TruncatableString),
        /// An integer.
        #[prost(int64, tag = "2")]
        IntValue(i64),
        /// A boolean.
        #[prost(bool, tag = "3")]
        BoolValue(bool),
        /// A double.
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }
}

/// `Span.TimeEvents`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeEvents {
    /// Events.
    #[prost(message, repeated, tag = "1")]
    pub time_event: Vec<TimeEvent>,
    /// Annotations the client dropped.
    #[prost(int32, tag = "2")]
    pub dropped_annotations_count: i32,
    /// Message events the client dropped.
    #[prost(int32, tag = "3")]
    pub dropped_message_events_count: i32,
}

/// `Span.TimeEvent`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeEvent {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub time: Option<Timestamp>,
    /// What.
    #[prost(oneof = "time_event::Value", tags = "2, 3")]
    pub value: Option<time_event::Value>,
}

/// Nested types of [`TimeEvent`].
pub mod time_event {
    /// `TimeEvent.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A log line with attributes.
        #[prost(message, tag = "2")]
        Annotation(super::Annotation),
        /// A message sent or received.
        #[prost(message, tag = "3")]
        MessageEvent(super::MessageEvent),
    }
}

/// `Span.TimeEvent.Annotation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Annotation {
    /// Description.
    #[prost(message, optional, tag = "1")]
    pub description: Option<TruncatableString>,
    /// Attributes.
    #[prost(message, optional, tag = "2")]
    pub attributes: Option<Attributes>,
}

/// `Span.TimeEvent.MessageEvent`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageEvent {
    /// 0 TYPE_UNSPECIFIED, 1 SENT, 2 RECEIVED.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Message id.
    #[prost(uint64, tag = "2")]
    pub id: u64,
    /// Size before compression.
    #[prost(uint64, tag = "3")]
    pub uncompressed_size: u64,
    /// Size after compression.
    #[prost(uint64, tag = "4")]
    pub compressed_size: u64,
}

/// `Span.Links`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Links {
    /// Links.
    #[prost(message, repeated, tag = "1")]
    pub link: Vec<Link>,
    /// Links the client dropped.
    #[prost(int32, tag = "2")]
    pub dropped_links_count: i32,
}

/// `Span.Link`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Link {
    /// Linked trace.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// Linked span.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// 0 TYPE_UNSPECIFIED, 1 CHILD_LINKED_SPAN, 2 PARENT_LINKED_SPAN.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    /// Attributes.
    #[prost(message, optional, tag = "4")]
    pub attributes: Option<Attributes>,
    /// Trace state of the linked span.
    #[prost(message, optional, tag = "5")]
    pub tracestate: Option<Tracestate>,
}

/// `trace.v1.Status`: a `google.rpc.Code`-style code; 0 is OK.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// Code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `metrics.v1.Metric`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Descriptor.
    #[prost(message, optional, tag = "1")]
    pub metric_descriptor: Option<MetricDescriptor>,
    /// Time series.
    #[prost(message, repeated, tag = "2")]
    pub timeseries: Vec<TimeSeries>,
    /// Overrides the request's resource for this metric.
    #[prost(message, optional, tag = "3")]
    pub resource: Option<Resource>,
}

/// `metrics.v1.MetricDescriptor.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// Not to be used.
    Unspecified = 0,
    /// Integer gauge.
    GaugeInt64 = 1,
    /// Floating point gauge.
    GaugeDouble = 2,
    /// Distribution gauge.
    GaugeDistribution = 3,
    /// Integer counter.
    CumulativeInt64 = 4,
    /// Floating point counter.
    CumulativeDouble = 5,
    /// Cumulative histogram.
    CumulativeDistribution = 6,
    /// Summary with percentiles.
    Summary = 7,
}

/// `metrics.v1.MetricDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricDescriptor {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Description.
    #[prost(string, tag = "2")]
    pub description: String,
    /// Unit (UCUM).
    #[prost(string, tag = "3")]
    pub unit: String,
    /// Kind.
    #[prost(enumeration = "MetricType", tag = "4")]
    pub r#type: i32,
    /// Label keys, in the order of every series' label values.
    #[prost(message, repeated, tag = "5")]
    pub label_keys: Vec<LabelKey>,
}

/// `metrics.v1.LabelKey`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelKey {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Description.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `metrics.v1.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Start of the cumulative interval.
    #[prost(message, optional, tag = "1")]
    pub start_timestamp: Option<Timestamp>,
    /// Values of the descriptor's label keys, in order.
    #[prost(message, repeated, tag = "2")]
    pub label_values: Vec<LabelValue>,
    /// Points.
    #[prost(message, repeated, tag = "3")]
    pub points: Vec<Point>,
}

/// `metrics.v1.LabelValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelValue {
    /// Value.
    #[prost(string, tag = "1")]
    pub value: String,
    /// False: the label is absent (as opposed to empty).
    #[prost(bool, tag = "2")]
    pub has_value: bool,
}

/// `metrics.v1.Point`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Point {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The value.
    #[prost(oneof = "point::Value", tags = "2, 3, 4, 5")]
    pub value: Option<point::Value>,
}

/// Nested types of [`Point`].
pub mod point {
    /// `Point.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// An integer.
        #[prost(int64, tag = "2")]
        Int64Value(i64),
        /// A double.
        #[prost(double, tag = "3")]
        DoubleValue(f64),
        /// A distribution.
        #[prost(message, tag = "4")]
        DistributionValue(super::DistributionValue),
        /// A summary.
        #[prost(message, tag = "5")]
        SummaryValue(super::SummaryValue),
    }
}

/// `metrics.v1.DistributionValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DistributionValue {
    /// Count.
    #[prost(int64, tag = "1")]
    pub count: i64,
    /// Sum.
    #[prost(double, tag = "2")]
    pub sum: f64,
    /// Sum of squared deviations from the mean.
    #[prost(double, tag = "3")]
    pub sum_of_squared_deviation: f64,
    /// Bucket bounds.
    #[prost(message, optional, tag = "4")]
    pub bucket_options: Option<BucketOptions>,
    /// One more bucket than bounds.
    #[prost(message, repeated, tag = "5")]
    pub buckets: Vec<Bucket>,
}

/// `DistributionValue.BucketOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketOptions {
    /// Explicit bounds (the only kind).
    #[prost(message, optional, tag = "1")]
    pub explicit: Option<ExplicitBounds>,
}

/// `DistributionValue.BucketOptions.Explicit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExplicitBounds {
    /// Strictly increasing upper bounds.
    #[prost(double, repeated, tag = "1")]
    pub bounds: Vec<f64>,
}

/// `DistributionValue.Bucket`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    /// Count.
    #[prost(int64, tag = "1")]
    pub count: i64,
    /// An example value.
    #[prost(message, optional, tag = "2")]
    pub exemplar: Option<Exemplar>,
}

/// `DistributionValue.Exemplar`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// When.
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    /// Attachments (e.g. the span it came from).
    #[prost(btree_map = "string, string", tag = "3")]
    pub attachments: BTreeMap<String, String>,
}

/// `metrics.v1.SummaryValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    /// Count since the start time.
    #[prost(message, optional, tag = "1")]
    pub count: Option<Int64Value>,
    /// Sum since the start time.
    #[prost(message, optional, tag = "2")]
    pub sum: Option<DoubleValue>,
    /// Percentiles over a recent window.
    #[prost(message, optional, tag = "3")]
    pub snapshot: Option<Snapshot>,
}

/// `SummaryValue.Snapshot`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    /// Count in the window.
    #[prost(message, optional, tag = "1")]
    pub count: Option<Int64Value>,
    /// Sum in the window.
    #[prost(message, optional, tag = "2")]
    pub sum: Option<DoubleValue>,
    /// Values at percentiles.
    #[prost(message, repeated, tag = "3")]
    pub percentile_values: Vec<ValueAtPercentile>,
}

/// `SummaryValue.Snapshot.ValueAtPercentile`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueAtPercentile {
    /// Percentile in (0, 100].
    #[prost(double, tag = "1")]
    pub percentile: f64,
    /// Value.
    #[prost(double, tag = "2")]
    pub value: f64,
}
