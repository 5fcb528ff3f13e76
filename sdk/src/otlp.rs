//! Typed OTLP decoding of a batch payload (for plugins that asked for `otlp-protobuf`).

use ferry_proto::logs_service::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use ferry_proto::metrics_service::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use ferry_proto::trace_service::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;

use crate::Signal;

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

/// Reads an OTLP export answer (`Export*ServiceResponse`) for `signal`: `(rejected, message)`
/// when the backend reported rejected items in its partial-success field.
pub fn partial_success(signal: Signal, body: &[u8]) -> Option<(u32, String)> {
    let (rejected, msg) = match signal {
        Signal::Traces => {
            let p = ExportTraceServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_spans, p.error_message)
        }
        Signal::Metrics => {
            let p = ExportMetricsServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_data_points, p.error_message)
        }
        Signal::Logs => {
            let p = ExportLogsServiceResponse::decode(body)
                .ok()?
                .partial_success?;
            (p.rejected_log_records, p.error_message)
        }
    };
    (rejected > 0).then(|| (u32::try_from(rejected).unwrap_or(u32::MAX), msg))
}
