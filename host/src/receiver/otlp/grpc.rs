//! OTLP/gRPC receiver (default `127.0.0.1:4317`): the three unary `Export` methods.
//!
//! Requests go through a raw-bytes codec: the message bytes are validated by the wire walk and
//! become the batch as they are; nothing is decoded into structs.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::{logs_service, metrics_service, trace_service};
use prost::Message;
use tonic::Status;

use super::OtlpReceiverConfig;
use crate::receiver::grpc::{RawService, RawUnary, incoming, status};
use crate::receiver::ingest::{Accepted, Ingest, Launch};
use crate::signal::Signal;

/// The `Export*ServiceResponse` for an accepted request, with a partial success if items
/// were rejected.
pub fn response(signal: Signal, a: &Accepted) -> Bytes {
    let rejected = i64::from(a.rejected);
    let msg = a.message.clone();
    let bytes = match signal {
        Signal::Traces => trace_service::ExportTraceServiceResponse {
            partial_success: (rejected > 0).then_some(trace_service::ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: msg,
            }),
        }
        .encode_to_vec(),
        Signal::Metrics => metrics_service::ExportMetricsServiceResponse {
            partial_success: (rejected > 0).then_some(
                metrics_service::ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: msg,
                },
            ),
        }
        .encode_to_vec(),
        Signal::Logs => logs_service::ExportLogsServiceResponse {
            partial_success: (rejected > 0).then_some(logs_service::ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: msg,
            }),
        }
        .encode_to_vec(),
    };
    bytes.into()
}

/// Names an OTLP gRPC service.
pub trait OtlpService: Clone + Send + Sync + 'static {
    /// Fully qualified service name.
    const NAME: &'static str;
    /// Its signal.
    const SIGNAL: Signal;
}

/// `TraceService`.
#[derive(Debug, Clone)]
pub enum Traces {}
/// `MetricsService`.
#[derive(Debug, Clone)]
pub enum Metrics {}
/// `LogsService`.
#[derive(Debug, Clone)]
pub enum Logs {}

impl OtlpService for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}
impl OtlpService for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}
impl OtlpService for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}

/// One OTLP export service.
#[derive(Clone)]
pub struct ExportService<S> {
    ingest: Arc<Ingest>,
    _signal: PhantomData<fn() -> S>,
}

impl<S: OtlpService> RawUnary for ExportService<S> {
    const SERVICE: &'static str = S::NAME;
    const METHOD: &'static str = "/Export";
    const SIGNAL: Signal = S::SIGNAL;

    fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    async fn handle(self, message: Bytes) -> Result<Bytes, Status> {
        match self.ingest.otlp(S::SIGNAL, message).await {
            Ok(a) => Ok(response(S::SIGNAL, &a)),
            Err(e) => Err(status(&e)),
        }
    }
}

fn service<S: OtlpService>(ingest: &Arc<Ingest>) -> RawService<ExportService<S>> {
    RawService(ExportService {
        ingest: ingest.clone(),
        _signal: PhantomData,
    })
}

/// Serves OTLP/gRPC on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tonic::transport::Server::builder()
        .add_service(service::<Traces>(&ingest))
        .add_service(service::<Metrics>(&ingest))
        .add_service(service::<Logs>(&ingest))
        .serve_with_incoming(incoming(listener))
        .await
        .map_err(|e| anyhow::anyhow!("OTLP/gRPC server on {addr} failed: {e}"))
}

/// Starts the OTLP/gRPC server if `config` gives it an address.
pub async fn start(config: &OtlpReceiverConfig, launch: &mut Launch<'_>) -> anyhow::Result<()> {
    let Some(addr) = config.grpc else {
        return Ok(());
    };
    launch
        .serve("otlp_grpc", addr, config.max_request_bytes, serve)
        .await
}
