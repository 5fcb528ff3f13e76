//! A small blocking HTTP client over `wasi:http`.
//!
//! Every request leaves through the host, which checks it against the exporter's
//! `allowed_hosts`, adds configured secret headers and applies timeouts. A request the policy
//! refuses fails with [`HttpError::Denied`].

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::{Batch, ExportError};

/// Request body compression, as a plugin's config names it (`"none"` or `"gzip"`).
#[derive(Debug, serde::Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Send the body as it is.
    #[default]
    None,
    /// gzip, fastest level: telemetry compresses well even so, and the CPU is the daemon's.
    Gzip,
}

impl Compression {
    /// The batch as a request body: passed through as it is (written by the host, never
    /// copied into the plugin), or compressed.
    pub fn body(self, batch: Batch<'_>) -> Result<Body<'_>, ExportError> {
        match self {
            Compression::None => Ok(Body::Batch {
                prefix: Vec::new(),
                batch,
            }),
            Compression::Gzip => self.apply(batch.to_vec()).map(Body::Bytes),
        }
    }

    /// Compresses `body`.
    pub fn apply(self, body: Vec<u8>) -> Result<Vec<u8>, ExportError> {
        use std::io::Write;
        match self {
            Compression::None => Ok(body),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body)
                    .and_then(|_| enc.finish())
                    .map_err(|e| ExportError::Permanent(format!("gzip: {e}")))
            }
        }
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body<'a> {
    /// Bytes the plugin made.
    Bytes(Vec<u8>),
    /// `prefix` (e.g. a gRPC frame header), then the batch being exported, which the host
    /// writes from its own memory.
    Batch {
        /// Written first.
        prefix: Vec<u8>,
        /// The batch.
        batch: Batch<'a>,
    },
}

impl Body<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Batch { prefix, batch } => prefix.len() + batch.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Body<'_> {
    fn from(b: Vec<u8>) -> Self {
        Body::Bytes(b)
    }
}

impl<'a> From<Batch<'a>> for Body<'a> {
    fn from(batch: Batch<'a>) -> Self {
        Body::Batch {
            prefix: Vec::new(),
            batch,
        }
    }
}

/// An outgoing request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Body<'a>,
}

impl<'a> Request<'a> {
    /// A `POST` of `body` to `url`.
    pub fn post(url: &str, body: impl Into<Body<'a>>) -> Self {
        Request {
            method: "POST".into(),
            url: url.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A response, body fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// Trailer names (lower case) and values, when the server sent trailers (gRPC does).
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Retry-After` in milliseconds; the HTTP-date form counts as absent (the host then backs
    /// off on its own schedule).
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.header("retry-after")?
            .trim()
            .parse::<u64>()
            .ok()
            .map(|s| s.saturating_mul(1000))
    }

    /// The start of the body as text, for error messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(256)
            .collect()
    }

    /// The usual reading of an HTTP answer for an exporter: 2xx is success; 429 and 503 with a
    /// `Retry-After` are throttled; 408, 429 and 5xx are retryable; any other status (400,
    /// 401, 403, 404, ...) is permanent. The error carries the status and the start of the body.
    pub fn check_status(&self) -> Result<(), ExportError> {
        let what = || format!("HTTP {}: {}", self.status, self.body_text());
        match (self.status, self.retry_after_ms()) {
            (200..=299, _) => Ok(()),
            (429 | 503, Some(ms)) => Err(ExportError::Throttled(ms)),
            (408 | 429 | 500..=599, _) => Err(ExportError::Retryable(what())),
            (_, _) => Err(ExportError::Permanent(what())),
        }
    }

    /// The first value of `name` among the trailers, then the headers (gRPC sends its status
    /// in the headers when there is no body).
    pub fn trailer_or_header(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .or_else(|| self.header(name))
    }
}

/// Why a request failed before a response arrived.
#[derive(Debug, Clone)]
pub enum HttpError {
    /// The URL could not be parsed.
    InvalidUrl(String),
    /// The host's egress policy refused the destination.
    Denied,
    /// Connection, timeout or protocol failure (worth retrying).
    Transport(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidUrl(u) => write!(f, "invalid URL: {u}"),
            HttpError::Denied => write!(f, "request denied by the host's egress policy"),
            HttpError::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// What an exporter reports for this failure of a request to `url`: a refused destination
    /// or a bad URL will not get better by retrying; a transport failure may.
    pub fn into_export_error(self, url: &str) -> ExportError {
        match self {
            HttpError::Denied => {
                ExportError::Permanent(format!("{url} is not in this exporter's allowed_hosts"))
            }
            HttpError::InvalidUrl(u) => ExportError::Permanent(format!("invalid URL {u}")),
            HttpError::Transport(e) => ExportError::Retryable(format!("{url}: {e}")),
        }
    }
}

fn transport(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied,
        other => HttpError::Transport(format!("{other:?}")),
    }
}

struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_and_query: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, HttpError> {
    let bad = || HttpError::InvalidUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let (authority, path_and_query) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(_) => return Err(bad()),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad());
    }
    Ok(Url {
        scheme,
        authority,
        path_and_query,
    })
}

fn method(m: &str) -> Method {
    match m.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

/// Sends `req` and waits for the whole response.
pub fn send(req: &Request) -> Result<Response, HttpError> {
    let url = parse_url(&req.url)?;
    let entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|e| HttpError::Transport(format!("invalid header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} in {}", req.url));
    outgoing
        .set_method(&method(&req.method))
        .map_err(|_| invalid("method"))?;
    outgoing
        .set_scheme(Some(&url.scheme))
        .map_err(|_| invalid("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|_| invalid("authority"))?;
    outgoing
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|_| invalid("path"))?;
    let body = outgoing
        .body()
        .map_err(|_| HttpError::Transport("request body already taken".into()))?;
    let pending = outgoing_handler::handle(outgoing, None).map_err(transport)?;
    match write_body(&body, &req.body) {
        Ok(()) => OutgoingBody::finish(body, None).map_err(transport)?,
        Err(write_error) => {
            // A host that refuses the request (e.g. egress policy) closes the body stream;
            // the response future holds the actual reason, which matters more than ours.
            drop(body);
            return Err(match wait(&pending) {
                Err(reason) => reason,
                Ok(_) => write_error,
            });
        }
    }
    let response = wait(&pending)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|_| HttpError::Transport("response body already taken".into()))?;
    let mut data = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|_| HttpError::Transport("response body stream unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Transport(format!(
                        "reading response body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    let trailers = read_trailers(IncomingBody::finish(incoming))?;
    Ok(Response {
        status,
        headers,
        body: data,
        trailers,
    })
}

fn read_trailers(
    future: wasip2::http::types::FutureTrailers,
) -> Result<Vec<(String, String)>, HttpError> {
    let result = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let fields = result
        .map_err(|_| HttpError::Transport("trailers already taken".into()))?
        .map_err(transport)?;
    Ok(fields
        .map(|f| {
            f.entries()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        })
        .unwrap_or_default())
}

fn write_body(body: &OutgoingBody, data: &Body<'_>) -> Result<(), HttpError> {
    let stream = body
        .write()
        .map_err(|_| HttpError::Transport("request body stream unavailable".into()))?;
    let failed = |e: StreamError| HttpError::Transport(format!("writing request body: {e:?}"));
    match data {
        Body::Bytes(bytes) => write_all(&stream, bytes).map_err(failed)?,
        Body::Batch { prefix, batch } => {
            write_all(&stream, prefix).map_err(failed)?;
            batch
                .write_to(&stream)
                .map_err(|e| HttpError::Transport(format!("writing request body: {e}")))?;
        }
    }
    stream.blocking_flush().map_err(failed)
}

fn write_all(stream: &wasip2::io::streams::OutputStream, data: &[u8]) -> Result<(), StreamError> {
    // Write as much as the stream accepts at once (the host takes up to 1 MiB per write):
    // `blocking-write-and-flush` is capped at 4096 bytes, and a host call plus a flush per
    // 4 KiB made a batch's upload several times slower.
    let mut rest = data;
    while !rest.is_empty() {
        let permit = stream.check_write()?;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = rest
            .len()
            .min(usize::try_from(permit).unwrap_or(usize::MAX));
        stream.write(&rest[..n])?;
        rest = &rest[n..];
    }
    Ok(())
}

fn wait(
    pending: &wasip2::http::types::FutureIncomingResponse,
) -> Result<wasip2::http::types::IncomingResponse, HttpError> {
    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    response
        .map_err(|_| HttpError::Transport("response already taken".into()))?
        .map_err(transport)
}
