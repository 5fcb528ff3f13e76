//! Jaeger `api_v2` protobuf messages (`model.proto`, `collector.proto`), as sent to the
//! collector's gRPC `PostSpans`. Written out with `prost` derives: no `protoc` needed.

pub use crate::wkt::{Duration, Timestamp};

/// `jaeger.api_v2.ValueType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ValueType {
    /// `v_str`.
    String = 0,
    /// `v_bool`.
    Bool = 1,
    /// `v_int64`.
    Int64 = 2,
    /// `v_float64`.
    Float64 = 3,
    /// `v_binary`.
    Binary = 4,
}

/// `jaeger.api_v2.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Which value field is meaningful.
    #[prost(enumeration = "ValueType", tag = "2")]
    pub v_type: i32,
    /// String value.
    #[prost(string, tag = "3")]
    pub v_str: String,
    /// Bool value.
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    /// Integer value.
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    /// Float value.
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    /// Bytes value.
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

/// `jaeger.api_v2.Log`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Log {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// Fields.
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

/// `jaeger.api_v2.SpanRefType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanRefType {
    /// Parent.
    ChildOf = 0,
    /// Causal, not parent.
    FollowsFrom = 1,
}

/// `jaeger.api_v2.SpanRef`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanRef {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// Kind of reference.
    #[prost(enumeration = "SpanRefType", tag = "3")]
    pub ref_type: i32,
}

/// `jaeger.api_v2.Process`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Process {
    /// Service.
    #[prost(string, tag = "1")]
    pub service_name: String,
    /// Process tags.
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

/// `jaeger.api_v2.Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// Name.
    #[prost(string, tag = "3")]
    pub operation_name: String,
    /// Parent and other references.
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<SpanRef>,
    /// Sampling flags.
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    /// Start.
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    /// Duration.
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    /// Tags.
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    /// Logs.
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<Log>,
    /// Per-span process (overrides the batch's).
    #[prost(message, optional, tag = "10")]
    pub process: Option<Process>,
    /// Process id within the batch.
    #[prost(string, tag = "11")]
    pub process_id: String,
    /// Warnings.
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

/// `jaeger.api_v2.Batch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    /// Spans.
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
    /// Default process of the spans.
    #[prost(message, optional, tag = "2")]
    pub process: Option<Process>,
}

/// `jaeger.api_v2.PostSpansRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    /// The batch.
    #[prost(message, optional, tag = "1")]
    pub batch: Option<Batch>,
}

/// gRPC path of `CollectorService/PostSpans`.
pub const POST_SPANS_PATH: &str = "/jaeger.api_v2.CollectorService/PostSpans";
