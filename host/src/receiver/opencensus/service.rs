//! The agent's two bidirectional `Export` streams, served raw.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::opencensus as oc;
use prost::Message;
use tonic::Status;
use tonic::server::Grpc;

use crate::receiver::ingest::{Ingest, IngestError};
use crate::signal::Signal;

use super::*;
use crate::receiver::grpc::{BoxFuture, RawCodec, RawMethod};

/// One of the two OpenCensus agent export services.
/// One of the two OpenCensus agent export services.
pub trait OcService: Clone + Send + Sync + 'static {
    /// Fully qualified service name.
    const NAME: &'static str;
    /// Its signal.
    const SIGNAL: Signal;
    /// Decodes one stream message, updates `state`, and translates it to OTLP protobuf.
    fn translate(
        state: &mut StreamState,
        message: &[u8],
        dropped: &mut Dropped,
    ) -> Result<Bytes, String>;
}

/// `TraceService`.
#[derive(Debug, Clone)]
pub enum TraceStream {}
/// `MetricsService`.
#[derive(Debug, Clone)]
pub enum MetricStream {}

impl OcService for TraceStream {
    const NAME: &'static str = "opencensus.proto.agent.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;

    fn translate(
        state: &mut StreamState,
        message: &[u8],
        dropped: &mut Dropped,
    ) -> Result<Bytes, String> {
        let req = oc::ExportTraceServiceRequest::decode(message)
            .map_err(|e| format!("invalid OpenCensus ExportTraceServiceRequest: {e}"))?;
        state.update(req.node, req.resource)?;
        Ok(traces_to_otlp(state, req.spans, dropped)
            .encode_to_vec()
            .into())
    }
}

impl OcService for MetricStream {
    const NAME: &'static str = "opencensus.proto.agent.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;

    fn translate(
        state: &mut StreamState,
        message: &[u8],
        dropped: &mut Dropped,
    ) -> Result<Bytes, String> {
        let req = oc::ExportMetricsServiceRequest::decode(message)
            .map_err(|e| format!("invalid OpenCensus ExportMetricsServiceRequest: {e}"))?;
        state.update(req.node, req.resource)?;
        Ok(metrics_to_otlp(state, req.metrics, dropped)
            .encode_to_vec()
            .into())
    }
}

/// Translates a stream of messages, as the receiver does, for the fuzz targets and tests.
pub fn decode_stream<S: OcService>(messages: &[&[u8]]) -> Result<Vec<Bytes>, String> {
    let mut state = StreamState::default();
    let mut dropped = Dropped::default();
    messages
        .iter()
        .map(|m| S::translate(&mut state, m, &mut dropped))
        .collect()
}

/// The `Export` method of one OpenCensus service.
#[derive(Clone)]
pub struct Export<S> {
    ingest: Arc<Ingest>,
    _service: PhantomData<fn() -> S>,
}

impl<S: OcService> Export<S> {
    /// Takes one message of a stream; an error ends the stream with that status.
    async fn accept(&self, state: &mut StreamState, message: &[u8]) -> Result<(), Status> {
        let mut dropped = Dropped::default();
        let otlp =
            S::translate(state, message, &mut dropped).map_err(|message| IngestError::Invalid {
                signal: S::SIGNAL,
                message,
            });
        self.ingest
            .translated(S::SIGNAL, otlp)
            .await
            .map_err(|e| crate::receiver::grpc::status(&e))?;
        if dropped.items > 0 {
            self.ingest.count_rejected(S::SIGNAL, dropped.items);
            tracing::warn!(
                receiver = "opencensus",
                items = dropped.items,
                "OpenCensus items dropped: {}",
                dropped.reason.unwrap_or_default()
            );
        }
        Ok(())
    }
}

pub(super) type ResponseStream = futures::stream::BoxStream<'static, Result<Bytes, Status>>;

pub(super) struct StreamMethod<S>(Export<S>);

impl<S: OcService> tonic::server::StreamingService<Bytes> for StreamMethod<S> {
    type Response = Bytes;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Result<tonic::Response<ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let export = self.0.clone();
        let inbound = request.into_inner();
        let responses = futures::stream::unfold(
            Some((inbound, export, StreamState::default())),
            |open| async move {
                let (mut inbound, export, mut state) = open?;
                loop {
                    match inbound.message().await {
                        Ok(Some(message)) => {
                            if let Err(status) = export.accept(&mut state, &message).await {
                                return Some((Err(status), None));
                            }
                        }
                        // The client half-closed: end the stream with OK.
                        Ok(None) => return None,
                        // tonic's refusal of an oversize message (see `RawService`).
                        Err(status) if status.code() == tonic::Code::OutOfRange => {
                            let refusal =
                                crate::receiver::grpc::too_large(&export.ingest, S::SIGNAL);
                            return Some((Err(refusal), None));
                        }
                        Err(status) => return Some((Err(status), None)),
                    }
                }
            },
        );
        Box::pin(async move {
            let responses: ResponseStream = Box::pin(responses);
            Ok(tonic::Response::new(responses))
        })
    }
}

impl<S: OcService> RawMethod for Export<S> {
    const SERVICE: &'static str = S::NAME;
    const METHOD: &'static str = "/Export";
    const SIGNAL: Signal = S::SIGNAL;

    fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    fn call<B>(
        self,
        mut grpc: Grpc<RawCodec>,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        Box::pin(async move { grpc.streaming(StreamMethod(self), req).await })
    }
}

pub(super) fn service<S: OcService>(
    ingest: &Arc<Ingest>,
) -> crate::receiver::grpc::RawService<Export<S>> {
    crate::receiver::grpc::RawService(Export {
        ingest: ingest.clone(),
        _service: PhantomData,
    })
}

/// Serves the agent's trace and metrics services on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tonic::transport::Server::builder()
        .add_service(service::<TraceStream>(&ingest))
        .add_service(service::<MetricStream>(&ingest))
        .serve_with_incoming(crate::receiver::grpc::incoming(listener))
        .await
        .map_err(|e| anyhow::anyhow!("OpenCensus gRPC server on {addr} failed: {e}"))
}
