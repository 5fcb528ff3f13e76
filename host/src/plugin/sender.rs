//! The host's HTTP sender for plugin requests: one pooled client (HTTP/1.1, and h2 over TLS)
//! shared by every plugin, with bounded timeouts, instead of wasmtime's default of one new
//! connection per request.
//!
//! wasi:http has no way for a guest to ask for a protocol version, yet gRPC needs HTTP/2 even
//! in plain text (prior knowledge). So a request whose `content-type` is `application/grpc...`
//! goes through a second, HTTP/2-only pool; everything else negotiates as usual.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Limits applied to every plugin request (a plugin may ask for shorter timeouts).
#[derive(Debug, Clone, Copy)]
pub struct SenderLimits {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From the request being sent until the response head arrives.
    pub first_byte: Duration,
    /// From the request being sent until the last byte of the response body.
    pub total: Duration,
    /// Largest response body a plugin may receive.
    pub max_response_bytes: usize,
}

impl Default for SenderLimits {
    fn default() -> Self {
        SenderLimits {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(30),
            total: Duration::from_secs(60),
            max_response_bytes: 16 << 20,
        }
    }
}

/// A response body cut off at a size cap and a deadline.
struct BoundedBody {
    inner: hyper::body::Incoming,
    remaining: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    cap: usize,
}

impl Body for BoundedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            if data.len() > self.remaining {
                let cap = self.cap as u64;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(cap)))));
            }
            self.remaining -= data.len();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// A pooled HTTP client.
#[derive(Clone)]
pub struct HostSender {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>,
    /// HTTP/2 only, for gRPC.
    h2: Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>,
    limits: SenderLimits,
}

fn is_grpc(request: &http::Request<WasiBody>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl HostSender {
    /// A sender with `limits`.
    pub fn new(limits: SenderLimits) -> Self {
        let http = || {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(limits.connect));
            http.set_nodelay(true);
            http
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        let h2_only = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http2()
            .wrap_connector(http());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(h2_only);
        HostSender { client, h2, limits }
    }

    /// Sends `request`, bounded by the host's limits and the plugin's (shorter) options.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .map_or(self.limits.first_byte, |t| t.min(self.limits.first_byte));
        let deadline = tokio::time::Instant::now() + self.limits.total;
        let client = if is_grpc(&request) {
            &self.h2
        } else {
            &self.client
        };
        let response = tokio::time::timeout(first_byte, client.request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(|e| {
                if e.is_connect() {
                    Error::ConnectionRefused
                } else {
                    Error::HttpProtocolError
                }
            })?;
        let cap = self.limits.max_response_bytes;
        if response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|len| len > cap as u64)
        {
            return Err(Error::HttpResponseBodySize(Some(cap as u64)));
        }
        Ok(response.map(|inner| {
            BoundedBody {
                inner,
                remaining: cap,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                cap,
            }
            .boxed_unsync()
        }))
    }
}
