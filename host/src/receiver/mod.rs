//! Receivers: decode each wire protocol at the edge and hand validated OTLP to the pipeline.

pub mod decoders;
#[cfg(feature = "jaeger")]
pub mod jaeger;
#[cfg(feature = "opencensus")]
pub mod opencensus;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod wire;
#[cfg(feature = "zipkin")]
pub mod zipkin;

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::config::Receivers;
use crate::pipeline::{Pipeline, Refusal};
use crate::signal::Signal;
use crate::telemetry::{Counter, Telemetry};

/// Every receiver Ferry has, by the name of its `[receivers.NAME]` table.
pub const ALL: &[&str] = &["otlp", "zipkin", "jaeger", "opencensus"];

/// The receivers this build carries: OTLP always, the others when their cargo feature is on.
pub const BUILT: &[&str] = &[
    "otlp",
    #[cfg(feature = "zipkin")]
    "zipkin",
    #[cfg(feature = "jaeger")]
    "jaeger",
    #[cfg(feature = "opencensus")]
    "opencensus",
];

static CARRIED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Limits this process to the receivers `names` (a bundle made with `--receivers`), so a config
/// enabling another is refused rather than started. Once per process.
pub fn restrict(names: Vec<String>) {
    let _ = CARRIED.set(names);
}

/// The receivers a config may enable in this process.
pub fn carried() -> Vec<&'static str> {
    BUILT
        .iter()
        .copied()
        .filter(|n| CARRIED.get().is_none_or(|c| c.iter().any(|c| c == n)))
        .collect()
}

/// Whether receiver `name` can run in this process, and if not, why.
pub fn check_available(name: &str) -> Result<(), String> {
    if !BUILT.contains(&name) {
        return Err(format!(
            "this ferry was built without the {name} receiver (cargo feature `{name}`)"
        ));
    }
    if !carried().contains(&name) {
        return Err(format!(
            "this bundle carries only the {} receiver(s) (`ferry bundle --receivers`)",
            carried().join(", ")
        ));
    }
    Ok(())
}

/// Starts every receiver `config` enables. A new receiver is one module and one line here.
pub async fn start_all(config: &Receivers, launch: &mut Launch<'_>) -> anyhow::Result<()> {
    if let Some(c) = &config.otlp {
        otlp_grpc::start(c, launch).await?;
        otlp_http::start(c, launch).await?;
    }
    #[cfg(feature = "zipkin")]
    if let Some(c) = &config.zipkin {
        zipkin::start(c, launch).await?;
    }
    #[cfg(feature = "jaeger")]
    if let Some(c) = &config.jaeger {
        jaeger::start(c, launch).await?;
    }
    #[cfg(feature = "opencensus")]
    if let Some(c) = &config.opencensus {
        opencensus::start(c, launch).await?;
    }
    Ok(())
}

/// What a receiver needs to start: the pipeline it feeds and where its server tasks run.
pub struct Launch<'a> {
    /// The pipeline every receiver feeds.
    pub pipeline: &'a Arc<Pipeline>,
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
            IngestError::Refused(Refusal::Storage(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Adds `Retry-After` to a 429 or 503 answer, so HTTP senders back off and retry.
pub fn add_retry_after(resp: &mut axum::response::Response) {
    use http::StatusCode;
    if matches!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(RETRY_AFTER_SECS),
        );
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
    refused: [Counter; 5],
}

/// The entry point shared by all receivers of one kind.
pub struct Ingest {
    pipeline: Arc<Pipeline>,
    counters: [SignalCounters; 3],
    /// Largest request body, after decompression.
    pub max_request_bytes: usize,
}

/// How long a sender refused for a full queue is asked to wait (gRPC `RetryInfo`, HTTP
/// `Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

const REASONS: [&str; 5] = [
    "invalid",
    "too_large",
    "queue_full",
    "no_exporter",
    "storage",
];

impl Ingest {
    /// An entry point for receiver `receiver` (a metric label, e.g. `otlp_grpc`).
    pub fn new(
        receiver: &str,
        pipeline: Arc<Pipeline>,
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
            counters,
            max_request_bytes,
        })
    }

    /// Counts a refusal that happened before [`Ingest::otlp`] (e.g. an unreadable body).
    pub fn count_refused(&self, signal: Signal, err: &IngestError) {
        let i = REASONS.iter().position(|r| *r == err.reason()).unwrap_or(0);
        self.counters[signal.index()].refused[i].inc();
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
        let (body, items) = if summary.invalid == 0 {
            (body, summary.items)
        } else {
            (drop_invalid_spans(&body)?, summary.items - summary.invalid)
        };
        self.pipeline.accept(signal, body, items).await?;
        Ok(Accepted {
            items,
            rejected: summary.invalid,
            message: summary.invalid_reason.unwrap_or_default(),
        })
    }
}

/// Reads an HTTP request body of at most `limit` bytes, gunzipping it (also bounded) when its
/// `Content-Encoding` says so. Shared by every HTTP receiver.
pub async fn read_http_body(
    limit: usize,
    signal: Signal,
    req: axum::extract::Request,
) -> Result<Bytes, IngestError> {
    use std::io::Read;
    let invalid = |message: String| IngestError::Invalid { signal, message };
    let encoding = req
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let raw = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                IngestError::TooLarge {
                    size: limit + 1,
                    limit,
                }
            } else {
                invalid(format!("cannot read body: {e}"))
            }
        })?;
    match encoding.as_deref() {
        None | Some("identity") | Some("") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| invalid(format!("gzip body does not decompress: {e}")))?;
            if out.len() > limit {
                return Err(IngestError::TooLarge {
                    size: out.len(),
                    limit,
                });
            }
            Ok(out.into())
        }
        Some(other) => Err(invalid(format!(
            "unsupported Content-Encoding {other:?} (use gzip or none)"
        ))),
    }
}

/// An OTLP attribute; shared by the receivers that translate foreign formats.
#[cfg(any(feature = "zipkin", feature = "jaeger", feature = "opencensus"))]
pub(crate) fn kv(
    key: impl Into<String>,
    value: ferry_proto::common::any_value::Value,
) -> ferry_proto::common::KeyValue {
    ferry_proto::common::KeyValue {
        key: key.into(),
        value: Some(ferry_proto::common::AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One `ResourceSpans` from resource attributes and spans grouped by instrumentation scope
/// `(name, version)`; shared by the receivers that translate foreign spans.
#[cfg(any(feature = "zipkin", feature = "jaeger"))]
pub(crate) fn resource_spans(
    attributes: Vec<ferry_proto::common::KeyValue>,
    scopes: std::collections::BTreeMap<(String, String), Vec<ferry_proto::trace::Span>>,
) -> ferry_proto::trace::ResourceSpans {
    use ferry_proto::common::InstrumentationScope;
    use ferry_proto::trace::{ResourceSpans, ScopeSpans};
    ResourceSpans {
        resource: Some(ferry_proto::resource::Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: scopes
            .into_iter()
            .map(|((name, version), spans)| ScopeSpans {
                scope: (!name.is_empty()).then(|| InstrumentationScope {
                    name,
                    version,
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Groups items as the Collector does for formats where an item may name its own resource
/// (Jaeger's per-span process, OpenCensus' per-span or per-metric resource): items without one
/// share the first group, under `shared`; each item with one gets a group to itself.
#[cfg(any(feature = "jaeger", feature = "opencensus"))]
pub(crate) fn group_by_own_resource<T, R>(
    items: impl IntoIterator<Item = (T, Option<R>)>,
    shared: R,
) -> Vec<(R, Vec<T>)> {
    let mut common = Vec::new();
    let mut own = Vec::new();
    for (item, resource) in items {
        match resource {
            None => common.push(item),
            Some(r) => own.push((r, vec![item])),
        }
    }
    let mut groups = Vec::with_capacity(own.len() + 1);
    if !common.is_empty() {
        groups.push((shared, common));
    }
    groups.extend(own);
    groups
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
