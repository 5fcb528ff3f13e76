//! `otlp-grpc`: forwards batches as OTLP over gRPC (unary `Export`), e.g. from an agent Ferry
//! to a gateway Ferry.
//!
//! The request leaves through the host's sender, which speaks HTTP/2 for `application/grpc`
//! (prior knowledge on `http://`, ALPN on `https://`). Status mapping follows the OTLP spec:
//! `OK` is success (rejected items in the answer are `partial`); `CANCELLED`,
//! `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE` and `DATA_LOSS` are
//! retryable; `RESOURCE_EXHAUSTED` is throttled when the server sent a `RetryInfo`, else
//! permanent; every other code is permanent.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine as _;
use ferry_sdk::http::{self, Body, Compression, Request, Response};
use ferry_sdk::otlp::partial_success;
use ferry_sdk::proto::grpc_path;
use ferry_sdk::proto::prost::Message;
use ferry_sdk::proto::wkt::{RetryInfo, RpcStatus};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `http://host:port` (plain-text HTTP/2) or `https://host:port`.
    endpoint: String,
    /// Extra request metadata (gRPC headers).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    compression: Compression,
}

struct OtlpGrpc {
    base: String,
    headers: Vec<(String, String)>,
    compression: Compression,
}

/// gRPC status codes that the OTLP spec says to retry.
const RETRYABLE: &[u32] = &[1, 4, 10, 11, 14, 15];
const RESOURCE_EXHAUSTED: u32 = 8;

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The delay of a `google.rpc.RetryInfo` in `grpc-status-details-bin`, in milliseconds.
fn retry_info_ms(resp: &Response) -> Option<u64> {
    let raw = resp.trailer_or_header("grpc-status-details-bin")?;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(raw.trim_end_matches('='))
        .ok()?;
    let status = RpcStatus::decode(&bytes[..]).ok()?;
    let info = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(&info.value[..]).ok()?.retry_delay?;
    let ms = delay.seconds.max(0) as u64 * 1000 + (delay.nanos.max(0) as u64) / 1_000_000;
    Some(ms)
}

/// The message inside a length-prefixed gRPC frame.
fn unframe(body: &[u8]) -> Result<Vec<u8>, String> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    if body.len() < 5 {
        return Err("truncated gRPC frame".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = body
        .get(5..5 + len)
        .ok_or_else(|| "truncated gRPC message".to_string())?;
    if body[0] == 1 {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(msg)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        Ok(out)
    } else {
        Ok(msg.to_vec())
    }
}

fn path(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => grpc_path::TRACES,
        Signal::Metrics => grpc_path::METRICS,
        Signal::Logs => grpc_path::LOGS,
    }
}

/// Reads a gRPC answer: the HTTP status first, then `grpc-status`.
fn outcome(signal: Signal, resp: &Response) -> Result<(), ExportError> {
    if resp.status != 200 {
        // Not a gRPC answer (a proxy, or not a gRPC server): read it as HTTP.
        resp.check_status()?;
        return Err(ExportError::Permanent(format!(
            "HTTP {} without a gRPC status",
            resp.status
        )));
    }
    let Some(code) = resp.trailer_or_header("grpc-status") else {
        return Err(ExportError::Retryable(
            "the server closed the call without a grpc-status".into(),
        ));
    };
    let code: u32 = code
        .trim()
        .parse()
        .map_err(|_| ExportError::Retryable(format!("unreadable grpc-status {code:?}")))?;
    if code == 0 {
        let msg = unframe(&resp.body).map_err(ExportError::Retryable)?;
        return match partial_success(signal, &msg) {
            Some(p) => Err(ExportError::Partial(p)),
            None => Ok(()),
        };
    }
    let what = format!(
        "{}: {}",
        code_name(code),
        ferry_sdk::proto::percent::decode(resp.trailer_or_header("grpc-message").unwrap_or(""))
    );
    match (code, retry_info_ms(resp)) {
        (RESOURCE_EXHAUSTED, Some(ms)) => Err(ExportError::Throttled(ms)),
        (c, Some(ms)) if RETRYABLE.contains(&c) => Err(ExportError::Throttled(ms)),
        (c, None) if RETRYABLE.contains(&c) => Err(ExportError::Retryable(what)),
        _ => Err(ExportError::Permanent(what)),
    }
}

impl Exporter for OtlpGrpc {
    fn manifest() -> Manifest {
        Manifest::new(
            "otlp-grpc",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = ferry_sdk::parse_config(config)?;
        let base = c.endpoint.trim_end_matches('/').to_string();
        let Some((scheme, rest)) = base.split_once("://") else {
            return Err(format!(
                "endpoint: expected http://host:port or https://host:port, got {:?}",
                c.endpoint
            ));
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "endpoint: expected http://host:port or https://host:port (no path), got {:?}",
                c.endpoint
            ));
        }
        let mut headers: Vec<(String, String)> = c
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if let Some((k, _)) = headers
            .iter()
            .find(|(k, _)| k.starts_with("grpc-") || k == "content-type" || k == "te")
        {
            return Err(format!("headers.{k}: reserved by gRPC"));
        }
        headers.push(("content-type".into(), "application/grpc".into()));
        headers.push(("te".into(), "trailers".into()));
        if c.compression == Compression::Gzip {
            headers.push(("grpc-encoding".into(), "gzip".into()));
        }
        Ok(OtlpGrpc {
            base,
            headers,
            compression: c.compression,
        })
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        // One length-prefixed gRPC message: the 5-byte frame header, then the batch (written
        // by the host when it goes uncompressed).
        let flag = u8::from(self.compression == Compression::Gzip);
        let message = self.compression.body(batch)?;
        let len = u32::try_from(message.len())
            .map_err(|_| ExportError::Permanent("batch larger than 4 GiB".into()))?;
        let mut prefix = Vec::with_capacity(5);
        prefix.push(flag);
        prefix.extend_from_slice(&len.to_be_bytes());
        let body = match message {
            Body::Bytes(message) => {
                prefix.extend_from_slice(&message);
                Body::Bytes(prefix)
            }
            Body::Batch { batch, .. } => Body::Batch { prefix, batch },
        };
        let req = Request {
            method: "POST".into(),
            url: format!("{}{}", self.base, path(meta.signal)),
            headers: self.headers.clone(),
            body,
        };
        let resp = http::send(&req).map_err(|e| e.into_export_error(&req.url))?;
        outcome(meta.signal, &resp)
    }
}

ferry_sdk::export!(OtlpGrpc);

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(code: &str, extra: &[(&str, &str)]) -> Response {
        let mut trailers = vec![("grpc-status".to_string(), code.to_string())];
        trailers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Response {
            status: 200,
            headers: vec![],
            body: vec![],
            trailers,
        }
    }

    #[test]
    fn status_codes_map_as_the_otlp_spec_says() {
        assert!(outcome(Signal::Traces, &grpc("0", &[])).is_ok());
        assert!(matches!(
            outcome(Signal::Traces, &grpc("14", &[("grpc-message", "down%20for%20a%20bit")])),
            Err(ExportError::Retryable(m)) if m == "UNAVAILABLE: down for a bit"
        ));
        assert!(matches!(
            outcome(Signal::Logs, &grpc("12", &[])),
            Err(ExportError::Permanent(m)) if m.starts_with("UNIMPLEMENTED")
        ));
        assert!(matches!(
            outcome(Signal::Logs, &grpc("8", &[])),
            Err(ExportError::Permanent(_))
        ));
        // RESOURCE_EXHAUSTED with RetryInfo{retry_delay: 2.5 s}.
        let info = RetryInfo {
            retry_delay: Some(ferry_sdk::proto::wkt::Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let status = RpcStatus {
            code: 8,
            message: "full".into(),
            details: vec![ferry_sdk::proto::wkt::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
        assert!(matches!(
            outcome(
                Signal::Metrics,
                &grpc("8", &[("grpc-status-details-bin", &b64)])
            ),
            Err(ExportError::Throttled(2500))
        ));
        let missing = Response {
            trailers: vec![],
            ..grpc("0", &[])
        };
        assert!(matches!(
            outcome(Signal::Traces, &missing),
            Err(ExportError::Retryable(_))
        ));
        let http = Response {
            status: 503,
            ..missing
        };
        assert!(matches!(
            outcome(Signal::Traces, &http),
            Err(ExportError::Retryable(m)) if m.starts_with("HTTP 503")
        ));
    }

    #[test]
    fn a_partial_success_answer_is_partial() {
        use ferry_sdk::proto::trace_service::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        };
        let msg = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let mut body = vec![0u8];
        body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        body.extend_from_slice(&msg);
        let resp = Response {
            body,
            ..grpc("0", &[])
        };
        assert!(matches!(
            outcome(Signal::Traces, &resp),
            Err(ExportError::Partial((3, m))) if m == "too old"
        ));
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |c: &str| OtlpGrpc::init(c).err().unwrap();
        assert!(err("{}").contains("endpoint"));
        assert!(err(r#"{"endpoint":"grpc://x:1"}"#).contains("endpoint"));
        assert!(err(r#"{"endpoint":"http://x:1/v1"}"#).contains("no path"));
        assert!(
            err(r#"{"endpoint":"http://x:1","headers":{"grpc-timeout":"1S"}}"#)
                .contains("headers.grpc-timeout")
        );
        assert!(OtlpGrpc::init(r#"{"endpoint":"http://127.0.0.1:4317/"}"#).is_ok());
    }
}
