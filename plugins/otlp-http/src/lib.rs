//! `otlp-http`: forwards batches as OTLP/HTTP protobuf.
//!
//! Status mapping follows the OTLP/HTTP spec: 2xx is success (a partial-success body is
//! reported as `partial`); 429 and 503 are throttled, honouring `Retry-After`; 502, 504 and
//! other 5xx are retryable; 400 and other 4xx are permanent; 408 is retryable.

use std::collections::BTreeMap;
use std::io::Write;

use ferry_sdk::http::{self, HttpError, Request, Response};
use ferry_sdk::proto::logs_service::ExportLogsServiceResponse;
use ferry_sdk::proto::metrics_service::ExportMetricsServiceResponse;
use ferry_sdk::proto::prost::Message;
use ferry_sdk::proto::trace_service::ExportTraceServiceResponse;
use ferry_sdk::{BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Compression {
    #[default]
    None,
    Gzip,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Base URL; `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended.
    endpoint: Option<String>,
    /// Full URLs per signal, overriding `endpoint`.
    traces_endpoint: Option<String>,
    metrics_endpoint: Option<String>,
    logs_endpoint: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    compression: Compression,
}

struct OtlpHttp {
    urls: [String; 3],
    headers: Vec<(String, String)>,
    compression: Compression,
}

fn signal_index(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "{key}: expected an http:// or https:// URL, got {url:?}"
        ))
    }
}

/// `Retry-After` in seconds; the HTTP-date form is treated as absent (we then back off).
fn retry_after_ms(resp: &Response) -> Option<u64> {
    resp.header("retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

/// Reads an OTLP partial-success answer: `(rejected, message)` when items were rejected.
fn partial_success(signal: Signal, body: &[u8]) -> Option<(u32, String)> {
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

fn body_text(resp: &Response) -> String {
    let text = String::from_utf8_lossy(&resp.body);
    text.chars().take(256).collect()
}

impl Exporter for OtlpHttp {
    fn manifest() -> Manifest {
        Manifest::new(
            "otlp-http",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = ferry_sdk::parse_config(config)?;
        let base = c.endpoint.as_deref().map(|e| e.trim_end_matches('/'));
        let mut urls = Vec::with_capacity(3);
        for (key, explicit, path) in [
            ("traces_endpoint", &c.traces_endpoint, "/v1/traces"),
            ("metrics_endpoint", &c.metrics_endpoint, "/v1/metrics"),
            ("logs_endpoint", &c.logs_endpoint, "/v1/logs"),
        ] {
            let url = match (explicit, base) {
                (Some(u), _) => u.clone(),
                (None, Some(b)) => format!("{b}{path}"),
                (None, None) => {
                    return Err(format!("`endpoint` or `{key}` is required"));
                }
            };
            check_url(key, &url)?;
            urls.push(url);
        }
        if let Some(b) = base {
            check_url("endpoint", b)?;
        }
        let mut headers: Vec<(String, String)> = c.headers.into_iter().collect();
        headers.push(("content-type".into(), "application/x-protobuf".into()));
        if c.compression == Compression::Gzip {
            headers.push(("content-encoding".into(), "gzip".into()));
        }
        Ok(OtlpHttp {
            urls: urls.try_into().expect("three urls"),
            headers,
            compression: c.compression,
        })
    }

    fn export(&mut self, meta: BatchMeta, payload: Vec<u8>) -> Result<(), ExportError> {
        let body = match self.compression {
            Compression::None => payload,
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&payload)
                    .and_then(|_| enc.finish())
                    .map_err(|e| ExportError::Permanent(format!("gzip: {e}")))?
            }
        };
        let req = Request {
            method: "POST".into(),
            url: self.urls[signal_index(meta.signal)].clone(),
            headers: self.headers.clone(),
            body,
        };
        let resp = match http::send(&req) {
            Ok(r) => r,
            Err(HttpError::Denied) => {
                return Err(ExportError::Permanent(format!(
                    "{} is not in this exporter's allowed_hosts",
                    req.url
                )));
            }
            Err(HttpError::InvalidUrl(u)) => {
                return Err(ExportError::Permanent(format!("invalid URL {u}")));
            }
            Err(HttpError::Transport(e)) => return Err(ExportError::Retryable(e)),
        };
        match resp.status {
            200..=299 => match partial_success(meta.signal, &resp.body) {
                Some(p) => Err(ExportError::Partial(p)),
                None => Ok(()),
            },
            429 | 503 => match retry_after_ms(&resp) {
                Some(ms) => Err(ExportError::Throttled(ms)),
                None => Err(ExportError::Retryable(format!(
                    "HTTP {}: {}",
                    resp.status,
                    body_text(&resp)
                ))),
            },
            408 | 500..=599 => Err(ExportError::Retryable(format!(
                "HTTP {}: {}",
                resp.status,
                body_text(&resp)
            ))),
            status => Err(ExportError::Permanent(format!(
                "HTTP {status}: {}",
                body_text(&resp)
            ))),
        }
    }
}

ferry_sdk::export!(OtlpHttp);
