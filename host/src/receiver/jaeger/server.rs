//! The Jaeger endpoints: agent UDP datagrams, the collector's HTTP `POST /api/traces` and gRPC `PostSpans`.

use std::net::SocketAddr;
use std::sync::Arc;

use super::thrift::{self, Protocol};
use bytes::Bytes;
use prost::Message;

use crate::receiver::ingest::{Ingest, IngestError};
use crate::signal::Signal;

use super::translate::*;

/// The collector's HTTP endpoint: `POST /api/traces` with a thrift-binary `Batch` (chunked
/// bodies included), answered with `202 Accepted`.
pub fn http_router(ingest: Arc<Ingest>) -> axum::Router {
    axum::Router::new()
        .route("/api/traces", axum::routing::post(http_traces))
        .with_state(ingest)
}

/// Like [`IngestError::http_status`], but a full queue is 503: the Jaeger collector's answer
/// when its queue is full, which Jaeger clients know.
pub(super) fn http_status(e: &IngestError) -> axum::http::StatusCode {
    match e {
        IngestError::Refused(crate::pipeline::Refusal::QueueFull(_)) => {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        }
        other => other.http_status(),
    }
}

/// Reads and translates one `POST /api/traces` into OTLP protobuf.
async fn http_translate(
    ingest: &Ingest,
    req: axum::extract::Request,
) -> Result<Bytes, IngestError> {
    let invalid = |message: String| IngestError::Invalid {
        signal: Signal::Traces,
        message,
    };
    let mime = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if mime != "application/x-thrift" && mime != "application/vnd.apache.thrift.binary" {
        return Err(invalid(format!(
            "unsupported Content-Type {mime:?} (use application/x-thrift)"
        )));
    }
    let body =
        crate::receiver::read_http_body(ingest.max_request_bytes, Signal::Traces, req).await?;
    let batch = thrift::decode_struct(Protocol::Binary, &body)
        .map_err(|e| e.to_string())
        .and_then(|b| batch_to_otlp(&b))
        .map_err(|m| invalid(format!("invalid Jaeger thrift Batch: {m}")))?;
    Ok(batch.encode_to_vec().into())
}

async fn http_traces(
    axum::extract::State(ingest): axum::extract::State<Arc<Ingest>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let otlp = http_translate(&ingest, req).await;
    match ingest.translated(Signal::Traces, otlp).await {
        Ok(_) => axum::http::StatusCode::ACCEPTED.into_response(),
        Err(e) => {
            let mut resp = (http_status(&e), e.to_string()).into_response();
            crate::receiver::add_retry_after(&mut resp);
            resp
        }
    }
}

/// Largest UDP datagram.
pub(super) const MAX_DATAGRAM: usize = 65_536;
/// Datagrams being handed to the pipeline at once, per socket.
pub(super) const UDP_IN_FLIGHT: usize = 256;

/// Receives agent datagrams on `socket` until the task is dropped.
pub async fn serve_udp(
    socket: tokio::net::UdpSocket,
    protocol: Protocol,
    ingest: Arc<Ingest>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = socket.local_addr()?;
    // Bursts of 64 KiB datagrams must not overflow the kernel's default buffer.
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20) {
        tracing::warn!(%addr, "cannot enlarge the UDP receive buffer: {e}");
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // UDP senders wait for no answer, so a datagram need not hold up the next one while the
    // durable queue syncs it; a bound on those in flight keeps the excess in the kernel buffer.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(UDP_IN_FLIGHT));
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        match decode_datagram(protocol, &buf[..n]) {
            Ok(otlp) => {
                let permit = in_flight.clone().acquire_owned().await?;
                let ingest = ingest.clone();
                tokio::spawn(async move {
                    if let Err(e) = ingest.otlp(Signal::Traces, otlp).await {
                        tracing::warn!(%peer, "Jaeger datagram refused: {e}");
                    }
                    drop(permit);
                });
            }
            Err(message) => {
                let err = IngestError::Invalid {
                    signal: Signal::Traces,
                    message,
                };
                ingest.count_refused(Signal::Traces, &err);
                tracing::warn!(%peer, bytes = n, "skipping malformed Jaeger datagram: {err}");
            }
        }
    }
}

/// The collector's gRPC `jaeger.api_v2.CollectorService/PostSpans` (usually port 14250).
#[derive(Clone)]
pub struct PostSpans {
    ingest: Arc<Ingest>,
}

impl crate::receiver::grpc::RawUnary for PostSpans {
    const SERVICE: &'static str = "jaeger.api_v2.CollectorService";
    const METHOD: &'static str = "/PostSpans";
    const SIGNAL: Signal = Signal::Traces;

    fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    async fn handle(self, message: Bytes) -> Result<Bytes, tonic::Status> {
        let translated = decode_post_spans(&message).map_err(|message| IngestError::Invalid {
            signal: Signal::Traces,
            message,
        });
        // An empty `PostSpansResponse`.
        self.ingest
            .translated(Signal::Traces, translated)
            .await
            .map(|_| Bytes::new())
            .map_err(|e| crate::receiver::grpc::status(&e))
    }
}

/// Serves the collector's gRPC endpoint on `listener` until the task is dropped.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tonic::transport::Server::builder()
        .add_service(crate::receiver::grpc::RawService(PostSpans { ingest }))
        .serve_with_incoming(crate::receiver::grpc::incoming(listener))
        .await
        .map_err(|e| anyhow::anyhow!("Jaeger gRPC server on {addr} failed: {e}"))
}
