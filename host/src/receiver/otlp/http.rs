//! OTLP/HTTP receiver (default `127.0.0.1:4318`): `POST /v1/traces|metrics|logs` in
//! `application/x-protobuf` or `application/json`, optionally gzip-compressed.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use prost::Message;

use super::OtlpReceiverConfig;
use super::grpc::response as export_response;
use crate::pipeline::Refusal;
use crate::receiver::ingest::{Accepted, Ingest, IngestError, Launch};
use crate::signal::Signal;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the body OTLP/HTTP uses for errors.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error_response(format: Format, err: &IngestError) -> Response {
    // The google.rpc.Code of the body.
    let code = match err {
        IngestError::Invalid { .. } => 3,
        IngestError::TooLarge { .. } | IngestError::Refused(Refusal::QueueFull(_)) => 8,
        IngestError::Refused(Refusal::NoExporter(_)) => 12,
        IngestError::Refused(Refusal::Storage(_)) | IngestError::Processor(_) => 14,
    };
    let mut resp = encode(format, err.http_status(), code, err.to_string());
    crate::receiver::add_retry_after(&mut resp);
    resp
}

fn encode(format: Format, status: StatusCode, code: i32, message: String) -> Response {
    match format {
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "code": code, "message": message }).to_string(),
        )
            .into_response(),
        Format::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            RpcStatus { code, message }.encode_to_vec(),
        )
            .into_response(),
    }
}

fn format_of(headers: &HeaderMap) -> Option<Format> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
        "application/json" => Some(Format::Json),
        _ => None,
    }
}

fn invalid(signal: Signal, message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        signal,
        message: message.into(),
    }
}

/// Reads the body (bounded, gunzipped if asked) and turns JSON into protobuf.
async fn read_body(
    ingest: &Ingest,
    signal: Signal,
    format: Format,
    req: Request,
) -> Result<Bytes, IngestError> {
    let body = crate::receiver::read_http_body(ingest.max_request_bytes, signal, req).await?;
    match format {
        Format::Protobuf => Ok(body),
        Format::Json => json_to_protobuf(signal, &body),
    }
}

fn json_to_protobuf(signal: Signal, body: &[u8]) -> Result<Bytes, IngestError> {
    use ferry_proto::{logs_service, metrics_service, trace_service};
    fn conv<M: Message + serde::de::DeserializeOwned>(
        signal: Signal,
        body: &[u8],
    ) -> Result<Bytes, IngestError> {
        let m: M = serde_json::from_slice(body)
            .map_err(|e| invalid(signal, format!("invalid OTLP/JSON: {e}")))?;
        Ok(m.encode_to_vec().into())
    }
    match signal {
        Signal::Traces => conv::<trace_service::ExportTraceServiceRequest>(signal, body),
        Signal::Metrics => conv::<metrics_service::ExportMetricsServiceRequest>(signal, body),
        Signal::Logs => conv::<logs_service::ExportLogsServiceRequest>(signal, body),
    }
}

fn success(signal: Signal, format: Format, a: &Accepted) -> Response {
    let proto = export_response(signal, a);
    match format {
        Format::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            proto,
        )
            .into_response(),
        Format::Json => {
            let body = if a.rejected == 0 {
                "{}".to_string()
            } else {
                let count_key = match signal {
                    Signal::Traces => "rejectedSpans",
                    Signal::Metrics => "rejectedDataPoints",
                    Signal::Logs => "rejectedLogRecords",
                };
                serde_json::json!({
                    "partialSuccess": { count_key: a.rejected.to_string(), "errorMessage": a.message }
                })
                .to_string()
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
    }
}

async fn export(ingest: Arc<Ingest>, signal: Signal, req: Request) -> Response {
    let Some(format) = format_of(req.headers()) else {
        let got = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_else(|| "none".into());
        let err = invalid(
            signal,
            format!(
                "unsupported Content-Type {got:?} (use application/x-protobuf or application/json)"
            ),
        );
        ingest.count_refused(signal, &err);
        return encode(
            Format::Protobuf,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            err.to_string(),
        );
    };
    let body = match read_body(&ingest, signal, format, req).await {
        Ok(b) => b,
        Err(e) => {
            ingest.count_refused(signal, &e);
            return error_response(format, &e);
        }
    };
    match ingest.otlp(signal, body).await {
        Ok(a) => success(signal, format, &a),
        Err(e) => error_response(format, &e),
    }
}

/// The OTLP/HTTP routes.
pub fn router(ingest: Arc<Ingest>) -> Router {
    let route = |signal: Signal| {
        post(
            move |State(ingest): State<Arc<Ingest>>, req: Request<Body>| {
                export(ingest, signal, req)
            },
        )
    };
    Router::new()
        .route("/v1/traces", route(Signal::Traces))
        .route("/v1/metrics", route(Signal::Metrics))
        .route("/v1/logs", route(Signal::Logs))
        .with_state(ingest)
}

/// Serves OTLP/HTTP on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    axum::serve(listener, router(ingest))
        .await
        .map_err(|e| anyhow::anyhow!("OTLP/HTTP server on {addr} failed: {e}"))
}

/// Starts the OTLP/HTTP server if `config` gives it an address.
pub async fn start(config: &OtlpReceiverConfig, launch: &mut Launch<'_>) -> anyhow::Result<()> {
    let Some(addr) = config.http else {
        return Ok(());
    };
    launch
        .serve("otlp_http", addr, config.max_request_bytes, serve)
        .await
}
