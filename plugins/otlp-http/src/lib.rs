//! `otlp-http`: forwards batches as OTLP/HTTP protobuf.
//!
//! Status mapping follows the OTLP/HTTP spec: 2xx is success (a partial-success body is
//! reported as `partial`); 429 and 503 are throttled when they carry `Retry-After`; 408, 429
//! and 5xx are retryable; 400 and other 4xx are permanent.

use std::collections::BTreeMap;

use ferry_sdk::http::{self, Compression, Request};
use ferry_sdk::otlp::partial_success;
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

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

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let body = self.compression.body(batch)?;
        let req = Request {
            method: "POST".into(),
            url: self.urls[signal_index(meta.signal)].clone(),
            headers: self.headers.clone(),
            body,
        };
        let resp = http::send(&req).map_err(|e| e.into_export_error(&req.url))?;
        resp.check_status()?;
        match partial_success(meta.signal, &resp.body) {
            Some(p) => Err(ExportError::Partial(p)),
            None => Ok(()),
        }
    }
}

ferry_sdk::export!(OtlpHttp);
