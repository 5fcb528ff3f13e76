//! The host's HTTP sender for plugin requests: one pooled client (HTTP/1.1, and h2 over TLS)
//! shared by every plugin, with bounded timeouts, instead of wasmtime's default of one new
//! connection per request.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Timeouts applied to every plugin request (a plugin may ask for shorter ones).
#[derive(Debug, Clone, Copy)]
pub struct SenderLimits {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From the request being sent until the response head arrives.
    pub first_byte: Duration,
}

impl Default for SenderLimits {
    fn default() -> Self {
        SenderLimits {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(30),
        }
    }
}

/// A pooled HTTP client.
#[derive(Clone)]
pub struct HostSender {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>,
    limits: SenderLimits,
}

impl HostSender {
    /// A sender with `limits`.
    pub fn new(limits: SenderLimits) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(limits.connect));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        HostSender { client, limits }
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
        let response = tokio::time::timeout(first_byte, self.client.request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(|e| {
                if e.is_connect() {
                    Error::ConnectionRefused
                } else {
                    Error::HttpProtocolError
                }
            })?;
        Ok(response.map(|b| b.map_err(Error::from).boxed_unsync()))
    }
}
