//! OTLP protobuf messages used across Ferry.
//!
//! OTLP is Ferry's one internal model. The generated OTLP types come from the
//! `opentelemetry-proto` crate (generated from the upstream `.proto` files and published with
//! the code already generated), so no `protoc` is needed at build time. Foreign formats
//! (Zipkin, Jaeger, OpenCensus) are translated to these types at the edge.

pub use opentelemetry_proto::tonic::collector::logs::v1 as logs_service;
pub use opentelemetry_proto::tonic::collector::metrics::v1 as metrics_service;
pub use opentelemetry_proto::tonic::collector::trace::v1 as trace_service;
pub use opentelemetry_proto::tonic::common::v1 as common;
pub use opentelemetry_proto::tonic::logs::v1 as logs;
pub use opentelemetry_proto::tonic::metrics::v1 as metrics;
pub use opentelemetry_proto::tonic::resource::v1 as resource;
pub use opentelemetry_proto::tonic::trace::v1 as trace;
pub use prost;

pub mod jaeger;
pub mod opencensus;
pub mod percent;
pub mod wkt;
pub mod zipkin;

/// gRPC method paths of the three OTLP export services.
pub mod grpc_path {
    /// `TraceService/Export`.
    pub const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    /// `MetricsService/Export`.
    pub const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    /// `LogsService/Export`.
    pub const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
}
