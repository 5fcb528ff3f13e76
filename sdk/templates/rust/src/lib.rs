//! {{name}}: a Ferry exporter plugin.
//!
//! It forwards every batch as OTLP/HTTP protobuf to `<endpoint>/v1/<signal>`. Change `export`
//! to send what your backend wants; `ferry_sdk::otlp` decodes a batch (`batch.to_vec()`).

use ferry_sdk::http::{Request, send};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};

struct Plugin {
    endpoint: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    endpoint: String,
}

impl Exporter for Plugin {
    fn manifest() -> Manifest {
        Manifest::new(
            "{{name}}",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| e.to_string())?;
        if !config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://") {
            return Err("endpoint: the backend's base URL (http:// or https://) is required".into());
        }
        Ok(Plugin {
            endpoint: config.endpoint.trim_end_matches('/').to_string(),
        })
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let signal = match meta.signal {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        };
        let url = format!("{}/v1/{signal}", self.endpoint);
        // The batch goes into the request body host-side: it is never copied into the plugin.
        let request = Request::post(&url, batch).header("content-type", "application/x-protobuf");
        let response = send(&request).map_err(|e| e.into_export_error(&url))?;
        response.check_status()
    }
}

ferry_sdk::export!(Plugin);
