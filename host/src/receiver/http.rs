//! HTTP plumbing shared by every HTTP receiver: bounded (and gunzipped) bodies, and
//! `Retry-After` on refusals a sender should retry.

use bytes::Bytes;

use super::ingest::{IngestError, RETRY_AFTER_SECS};
use crate::signal::Signal;

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
