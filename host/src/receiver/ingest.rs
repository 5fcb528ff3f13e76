//! The counted entry point every receiver hands its requests to, and what a receiver is
//! given to start.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::pipeline::{Pipeline, Refusal};
use crate::processor::{Checked, IngestChain, Output};
use crate::signal::Signal;
use crate::telemetry::tap::{Point, Tapped};
use crate::telemetry::{Counter, Telemetry};
use crate::wire;

/// What a receiver needs to start: the pipeline it feeds and where its server tasks run.
pub struct Launch<'a> {
    /// The pipeline every receiver feeds.
    pub pipeline: &'a Arc<Pipeline>,
    /// The processors every accepted request goes through first.
    pub chain: &'a Arc<IngestChain>,
    /// Where receivers register their counters.
    pub telemetry: &'a Telemetry,
    /// The daemon's server tasks; one ending is fatal to the daemon.
    pub servers: &'a mut tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Launch<'_> {
    /// Binds `addr` for `receiver` (a metric label, e.g. `zipkin`) and runs `serve` on it with
    /// the receiver's counted entry point.
    pub async fn serve<F, Fut>(
        &mut self,
        receiver: &str,
        addr: std::net::SocketAddr,
        max_request_bytes: usize,
        serve: F,
    ) -> anyhow::Result<()>
    where
        F: FnOnce(tokio::net::TcpListener, Arc<Ingest>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        use anyhow::Context;
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("{receiver}: cannot listen on {addr}"))?;
        tracing::info!(receiver, addr = %l.local_addr()?, "listening");
        let ingest = self.ingest(receiver, max_request_bytes);
        self.spawn(serve(l, ingest));
        Ok(())
    }

    /// The counted entry point for `receiver`.
    pub fn ingest(&self, receiver: &str, max_request_bytes: usize) -> Arc<Ingest> {
        Ingest::new(
            receiver,
            self.pipeline.clone(),
            self.chain.clone(),
            self.telemetry,
            max_request_bytes,
        )
    }

    /// Runs a server task for as long as the daemon.
    pub fn spawn(
        &mut self,
        server: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.servers.spawn(server);
    }
}

/// Why a request was refused; each maps onto a gRPC status and an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Malformed or undecodable input (INVALID_ARGUMENT / 400).
    #[error("invalid {signal} request: {message}")]
    Invalid {
        /// Signal of the endpoint.
        signal: Signal,
        /// What is wrong.
        message: String,
    },
    /// Larger than the configured limit (RESOURCE_EXHAUSTED / 413).
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes seen (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The pipeline refused it (queue full: RESOURCE_EXHAUSTED / 429; no exporter).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A processor of the ingest chain failed on it and refuses it (UNAVAILABLE / 503: the
    /// sender retries, nothing was accepted).
    #[error("{0}; retry later")]
    Processor(#[from] crate::processor::Fault),
}

impl IngestError {
    /// Label for the refused-requests counter.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Invalid { .. } => "invalid",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::Refused(Refusal::QueueFull(_)) => "queue_full",
            IngestError::Refused(Refusal::NoExporter(_)) => "no_exporter",
            IngestError::Refused(Refusal::Storage(_)) => "storage",
            IngestError::Processor(_) => "processor",
        }
    }

    /// The HTTP status of the refusal (429 for a full queue, 503 when the disk fails).
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            IngestError::Invalid { .. } => StatusCode::BAD_REQUEST,
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Refused(Refusal::QueueFull(_)) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Refused(Refusal::NoExporter(_)) => StatusCode::NOT_FOUND,
            IngestError::Refused(Refusal::Storage(_)) | IngestError::Processor(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// What was accepted from one request.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// Items now owned by the pipeline.
    pub items: u32,
    /// Items rejected (reported to the sender as an OTLP partial success).
    pub rejected: u32,
    /// Why they were rejected.
    pub message: String,
}

/// Counters of one receiver, per signal.
struct SignalCounters {
    accepted: Counter,
    rejected: Counter,
    refused: [Counter; 6],
}

/// The entry point shared by all receivers of one kind.
pub struct Ingest {
    pipeline: Arc<Pipeline>,
    chain: Arc<IngestChain>,
    counters: [SignalCounters; 3],
    /// The last refusal's reason, for the status page.
    last_error: crate::telemetry::Note,
    /// What it accepts (`receiver:NAME`), and what the ingest chain passes on (`processors`).
    taps: [Point; 2],
    /// Largest request body, after decompression.
    pub max_request_bytes: usize,
}

/// How long a sender refused for a full queue is asked to wait (gRPC `RetryInfo`, HTTP
/// `Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

const REASONS: [&str; 6] = [
    "invalid",
    "too_large",
    "queue_full",
    "no_exporter",
    "storage",
    "processor",
];

impl Ingest {
    /// An entry point for receiver `receiver` (a metric label, e.g. `otlp_grpc`).
    pub fn new(
        receiver: &str,
        pipeline: Arc<Pipeline>,
        chain: Arc<IngestChain>,
        telemetry: &Telemetry,
        max_request_bytes: usize,
    ) -> Arc<Self> {
        let counters = Signal::ALL.map(|signal| {
            let l = [("receiver", receiver), ("signal", signal.as_str())];
            SignalCounters {
                accepted: telemetry.counter(
                    "ferry_receiver_accepted_items_total",
                    "Items accepted into the pipeline.",
                    &l,
                ),
                rejected: telemetry.counter(
                    "ferry_receiver_rejected_items_total",
                    "Items rejected from otherwise valid requests (OTLP partial success, or no OTLP form).",
                    &l,
                ),
                refused: REASONS.map(|reason| {
                    telemetry.counter(
                        "ferry_receiver_refused_requests_total",
                        "Requests refused, by reason.",
                        &[l[0], l[1], ("reason", reason)],
                    )
                }),
            }
        });
        Arc::new(Ingest {
            pipeline,
            chain,
            counters,
            last_error: telemetry.note("receiver_last_error", &[("receiver", receiver)]),
            taps: [
                telemetry.taps().point(&format!("receiver:{receiver}")),
                telemetry.taps().point("processors"),
            ],
            max_request_bytes,
        })
    }

    /// Counts a refusal that happened before [`Ingest::otlp`] (e.g. an unreadable body).
    pub fn count_refused(&self, signal: Signal, err: &IngestError) {
        let i = REASONS.iter().position(|r| *r == err.reason()).unwrap_or(0);
        self.counters[signal.index()].refused[i].inc();
        self.last_error.set(&format!("{signal}: {err}"));
    }

    /// Hands a foreign request, already translated to OTLP protobuf (or not, with why), to the
    /// pipeline, counting either outcome.
    pub async fn translated(
        &self,
        signal: Signal,
        otlp: Result<Bytes, IngestError>,
    ) -> Result<Accepted, IngestError> {
        match otlp {
            // `Ingest::otlp` counts its own outcomes.
            Ok(otlp) => self.otlp(signal, otlp).await,
            Err(e) => {
                self.count_refused(signal, &e);
                Err(e)
            }
        }
    }

    /// Counts items a translator could not carry over from an otherwise accepted request.
    pub fn count_rejected(&self, signal: Signal, items: u32) {
        self.counters[signal.index()].rejected.add(items.into());
    }

    /// Validates an OTLP protobuf export request and hands it to the pipeline; returns once
    /// the pipeline owns it (in durable mode: once it is on disk).
    pub async fn otlp(&self, signal: Signal, body: Bytes) -> Result<Accepted, IngestError> {
        let result = self.otlp_inner(signal, body).await;
        let c = &self.counters[signal.index()];
        match &result {
            Ok(a) => {
                c.accepted.add(a.items.into());
                c.rejected.add(a.rejected.into());
            }
            Err(e) => self.count_refused(signal, e),
        }
        result
    }

    async fn otlp_inner(&self, signal: Signal, body: Bytes) -> Result<Accepted, IngestError> {
        if body.len() > self.max_request_bytes {
            return Err(IngestError::TooLarge {
                size: body.len(),
                limit: self.max_request_bytes,
            });
        }
        let summary = wire::inspect(signal, &body).map_err(|e| IngestError::Invalid {
            signal,
            message: e.to_string(),
        })?;
        let (mut body, mut items) = if summary.invalid == 0 {
            (body, summary.items)
        } else {
            (drop_invalid_spans(&body)?, summary.items - summary.invalid)
        };
        self.taps[0].offer(|| tapped(signal, items, &body));
        // One chain for the whole request, even if a reload swaps it meanwhile.
        let chain = self.chain.current();
        if !chain.is_empty() {
            // The sender hears about what it sent being accepted, not about what the
            // processors kept of it (they count that themselves).
            let sent = items;
            if let Output::Replaced {
                payload,
                items: kept,
            } = chain.run(signal, &body, items, Checked::Yes).await?
            {
                (body, items) = (payload, kept);
            }
            self.taps[1].offer(|| tapped(signal, items, &body));
            self.pipeline.accept(signal, body, items).await?;
            return Ok(Accepted {
                items: sent,
                rejected: summary.invalid,
                message: summary.invalid_reason.unwrap_or_default(),
            });
        }
        self.pipeline.accept(signal, body, items).await?;
        Ok(Accepted {
            items,
            rejected: summary.invalid,
            message: summary.invalid_reason.unwrap_or_default(),
        })
    }
}

fn tapped(signal: Signal, items: u32, body: &Bytes) -> Tapped {
    Tapped {
        signal,
        items,
        payload: body.clone(),
        reason: None,
        at: std::time::SystemTime::now(),
    }
}

/// Removes spans whose ids have the wrong length (rare: only then is the request decoded).
fn drop_invalid_spans(body: &[u8]) -> Result<Bytes, IngestError> {
    use ferry_proto::trace_service::ExportTraceServiceRequest;
    let mut req = ExportTraceServiceRequest::decode(body).map_err(|e| IngestError::Invalid {
        signal: Signal::Traces,
        message: e.to_string(),
    })?;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans
                .retain(|s| s.trace_id.len() == 16 && s.span_id.len() == 8);
        }
    }
    Ok(req.encode_to_vec().into())
}
