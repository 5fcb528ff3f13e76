//! Typed OTLP decoding of a batch payload (for plugins that asked for `otlp-protobuf`).

use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

pub use prost::DecodeError;

/// Decodes a traces batch.
pub fn decode_traces(payload: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    ExportTraceServiceRequest::decode(payload)
}

/// Decodes a metrics batch.
pub fn decode_metrics(payload: &[u8]) -> Result<ExportMetricsServiceRequest, DecodeError> {
    ExportMetricsServiceRequest::decode(payload)
}

/// Decodes a logs batch.
pub fn decode_logs(payload: &[u8]) -> Result<ExportLogsServiceRequest, DecodeError> {
    ExportLogsServiceRequest::decode(payload)
}
