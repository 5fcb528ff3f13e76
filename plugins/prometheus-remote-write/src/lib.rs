//! `prometheus-remote-write`: OTLP metrics → Prometheus remote-write 1.0 (protobuf, snappy).
//! Conversion rules are in [`convert`], names in [`naming`].

pub mod convert;
pub mod naming;
pub mod proto;

use std::collections::BTreeMap;

use ferry_sdk::http::{self, Request};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use prost::Message;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The remote-write URL, e.g. `http://prometheus:9090/api/v1/write`.
    endpoint: String,
    /// Prefix for every metric name.
    #[serde(default)]
    namespace: String,
    /// Copy every resource attribute onto every series (instead of only `target_info`).
    #[serde(default)]
    resource_to_telemetry_conversion: bool,
    /// Emit a `target_info` series per resource.
    #[serde(default = "yes")]
    target_info: bool,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

struct RemoteWrite {
    endpoint: String,
    options: convert::Options,
    headers: Vec<(String, String)>,
}

impl Exporter for RemoteWrite {
    fn manifest() -> Manifest {
        Manifest::new(
            "prometheus-remote-write",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Metrics],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = ferry_sdk::parse_config(config)?;
        let mut errors = Vec::new();
        if !(c.endpoint.starts_with("http://") || c.endpoint.starts_with("https://")) {
            errors.push(format!(
                "endpoint: expected an http:// or https:// URL such as http://prometheus:9090/api/v1/write, got {:?}",
                c.endpoint
            ));
        }
        if c.namespace.starts_with(|ch: char| ch.is_ascii_digit()) {
            errors.push(format!(
                "namespace: {:?} must not start with a digit",
                c.namespace
            ));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for (k, v) in c.headers {
            let lower = k.to_ascii_lowercase();
            if matches!(lower.as_str(), "content-type" | "content-encoding")
                || lower.starts_with("x-prometheus-remote-write")
            {
                errors.push(format!("headers.{k}: set by the remote-write protocol"));
            }
            headers.push((k, v));
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        headers.extend([
            ("content-type".into(), "application/x-protobuf".into()),
            ("content-encoding".into(), "snappy".into()),
            ("x-prometheus-remote-write-version".into(), "0.1.0".into()),
            (
                "user-agent".into(),
                concat!("ferry-prometheus-remote-write/", env!("CARGO_PKG_VERSION")).into(),
            ),
        ]);
        Ok(RemoteWrite {
            endpoint: c.endpoint,
            options: convert::Options {
                namespace: c.namespace,
                resource_to_telemetry_conversion: c.resource_to_telemetry_conversion,
                target_info: c.target_info,
            },
            headers,
        })
    }

    fn export(&mut self, _meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let payload = batch.to_vec();
        let request = ferry_sdk::otlp::decode_metrics(&payload)
            .map_err(|e| ExportError::Permanent(format!("undecodable metrics batch: {e}")))?;
        let out = convert::convert(&request, &self.options);
        if !out.request.timeseries.is_empty() {
            let body = snap::raw::Encoder::new()
                .compress_vec(&out.request.encode_to_vec())
                .map_err(|e| ExportError::Permanent(format!("snappy: {e}")))?;
            let req = Request {
                method: "POST".into(),
                url: self.endpoint.clone(),
                headers: self.headers.clone(),
                body: body.into(),
            };
            let resp = http::send(&req).map_err(|e| e.into_export_error(&req.url))?;
            // Prometheus answers 400 for samples it will never take (out of order, too old,
            // duplicate): the remote-write spec says not to retry them.
            resp.check_status()?;
        }
        if out.refused > 0 {
            return Err(ExportError::Partial((
                out.refused,
                format!(
                    "not expressible in remote write 1.0: {}",
                    out.reasons.join(", ")
                ),
            )));
        }
        Ok(())
    }
}

ferry_sdk::export!(RemoteWrite);
