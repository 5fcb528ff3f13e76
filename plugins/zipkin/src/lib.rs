//! `zipkin`: OTLP traces → Zipkin v2 JSON, `POST` to a Zipkin collector's `/api/v2/spans`.
//!
//! The translation is in [`translate`]; see the README for its rules.

pub mod translate;

use std::collections::BTreeMap;

use ferry_sdk::http::{self, Compression, Request};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Full URL of the spans endpoint, e.g. `http://zipkin:9411/api/v2/spans`.
    endpoint: String,
    /// `localEndpoint.serviceName` of spans whose resource names no service.
    #[serde(default = "default_service_name")]
    default_service_name: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    compression: Compression,
}

fn default_service_name() -> String {
    translate::NO_SERVICE_NAME.to_string()
}

struct Zipkin {
    endpoint: String,
    default_service_name: String,
    headers: Vec<(String, String)>,
    compression: Compression,
}

impl Exporter for Zipkin {
    fn manifest() -> Manifest {
        Manifest::new(
            "zipkin",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = ferry_sdk::parse_config(config)?;
        if !(c.endpoint.starts_with("http://") || c.endpoint.starts_with("https://")) {
            return Err(format!(
                "endpoint: expected an http:// or https:// URL such as http://zipkin:9411/api/v2/spans, got {:?}",
                c.endpoint
            ));
        }
        if c.default_service_name.is_empty() {
            return Err("default_service_name: must not be empty".into());
        }
        let mut headers: Vec<(String, String)> = c.headers.into_iter().collect();
        headers.push(("content-type".into(), "application/json".into()));
        if c.compression == Compression::Gzip {
            headers.push(("content-encoding".into(), "gzip".into()));
        }
        Ok(Zipkin {
            endpoint: c.endpoint,
            default_service_name: c.default_service_name,
            headers,
            compression: c.compression,
        })
    }

    fn export(&mut self, _meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let payload = batch.to_vec();
        let request = ferry_sdk::otlp::decode_traces(&payload)
            .map_err(|e| ExportError::Permanent(format!("undecodable traces batch: {e}")))?;
        let out = translate::to_zipkin(&request, &self.default_service_name);
        let invalid = out.invalid;
        if !out.spans.is_empty() {
            let body = serde_json::to_vec(&out.spans)
                .map_err(|e| ExportError::Permanent(format!("encoding Zipkin JSON: {e}")))?;
            let req = Request {
                method: "POST".into(),
                url: self.endpoint.clone(),
                headers: self.headers.clone(),
                body: self.compression.apply(body)?.into(),
            };
            let resp = http::send(&req).map_err(|e| e.into_export_error(&req.url))?;
            resp.check_status()?;
        }
        if invalid > 0 {
            return Err(ExportError::Partial((
                invalid,
                "spans without a valid trace id or span id cannot be sent to Zipkin".into(),
            )));
        }
        Ok(())
    }
}

ferry_sdk::export!(Zipkin);
