//! Zipkin v2 protobuf messages (`zipkin.proto3`, `ListOfSpans`).
//!
//! Written out with `prost` derives instead of generated: the schema is small and stable, and
//! generating it would need `protoc` on every build machine.

/// `zipkin.proto3.ListOfSpans`: the body of `POST /api/v2/spans` in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListOfSpans {
    /// The spans.
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
}

/// `zipkin.proto3.Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// 8 or 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// See [`Kind`].
    #[prost(enumeration = "Kind", tag = "4")]
    pub kind: i32,
    /// Operation name.
    #[prost(string, tag = "5")]
    pub name: String,
    /// Start, in microseconds since the epoch.
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    /// Duration in microseconds.
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    /// The service that recorded the span.
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<Endpoint>,
    /// The other side of an RPC or message.
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<Endpoint>,
    /// Timestamped events.
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<Annotation>,
    /// String tags.
    #[prost(map = "string, string", tag = "11")]
    pub tags: std::collections::HashMap<String, String>,
    /// Debug flag.
    #[prost(bool, tag = "12")]
    pub debug: bool,
    /// Whether a server span shares its id with the client span.
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

/// `zipkin.proto3.Span.Kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    /// Not set.
    SpanKindUnspecified = 0,
    /// Client side of an RPC.
    Client = 1,
    /// Server side of an RPC.
    Server = 2,
    /// Message producer.
    Producer = 3,
    /// Message consumer.
    Consumer = 4,
}

/// `zipkin.proto3.Endpoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Endpoint {
    /// Service name.
    #[prost(string, tag = "1")]
    pub service_name: String,
    /// 4 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    /// Port.
    #[prost(int32, tag = "4")]
    pub port: i32,
}

/// `zipkin.proto3.Annotation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Annotation {
    /// Microseconds since the epoch.
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    /// Event text.
    #[prost(string, tag = "2")]
    pub value: String,
}
