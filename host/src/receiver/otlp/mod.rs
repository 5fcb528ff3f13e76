//! The OTLP receiver: gRPC (`grpc`, usually 4317) and HTTP (`http`, usually 4318), each on if
//! it has an address. OTLP is Ferry's own model, so requests are only validated, never
//! translated.

pub mod grpc;
pub mod http;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::decoders::Decoder;
use super::ingest::Launch;
use crate::signal::Signal;
use crate::units::de_bytes;

/// `[receivers.otlp]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// gRPC listen address (OTLP/gRPC); absent = off.
    pub grpc: Option<SocketAddr>,
    /// HTTP listen address (OTLP/HTTP); absent = off.
    pub http: Option<SocketAddr>,
    /// Largest request accepted, after decompression.
    #[serde(default = "super::default_max_request", deserialize_with = "de_bytes")]
    pub max_request_bytes: usize,
}

impl super::Receiver for OtlpReceiverConfig {
    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    fn check(&self, key: &str, errors: &mut Vec<String>) {
        if self.grpc.is_none() && self.http.is_none() {
            errors.push(format!("{key}: set `grpc`, `http` or both"));
        }
        if self.grpc.is_some_and(|a| a.port() != 0) && self.grpc == self.http {
            errors.push(format!("{key}: `grpc` and `http` cannot share an address"));
        }
    }

    async fn start(&self, launch: &mut Launch<'_>) -> anyhow::Result<()> {
        grpc::start(self, launch).await?;
        http::start(self, launch).await
    }
}

/// The OTLP wire walks, one per signal.
pub fn decoders() -> Vec<(&'static str, Decoder)> {
    vec![
        ("otlp_traces", |b| {
            let _ = crate::wire::inspect(Signal::Traces, b);
        }),
        ("otlp_metrics", |b| {
            let _ = crate::wire::inspect(Signal::Metrics, b);
        }),
        ("otlp_logs", |b| {
            let _ = crate::wire::inspect(Signal::Logs, b);
        }),
    ]
}
