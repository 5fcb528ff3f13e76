//! The capture server `ferry plugin test` points a plugin at: it stands in for any backend
//! (HTTP/1.1, or h2c for gRPC), keeps every request and answers each with one chosen status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request the plugin sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Captured {
    /// `POST`, `PUT`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header, in order (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body size as sent (before any decompression).
    pub bytes: usize,
}

impl Captured {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running capture server; stops when dropped.
pub struct Capture {
    addr: SocketAddr,
    status: StatusCode,
    seen: Arc<Mutex<Vec<Captured>>>,
    task: JoinHandle<()>,
}

impl Capture {
    /// Listens on a free loopback port and answers every request with `status`.
    pub async fn start(status: StatusCode) -> std::io::Result<Capture> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(listener, status, seen.clone()));
        Ok(Capture {
            addr,
            status,
            seen,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The status every request gets.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The requests received since the last call.
    pub fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.seen.lock().expect("capture lock"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, status: StatusCode, seen: Arc<Mutex<Vec<Captured>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, status, seen.clone()));
            // Connection errors (a plugin hanging up mid-request) end that connection only.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;
type Answer = Response<Either<Full<Bytes>, StreamBody<Frames>>>;

async fn answer(
    req: Request<Incoming>,
    status: StatusCode,
    seen: Arc<Mutex<Vec<Captured>>>,
) -> Result<Answer, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    seen.lock().expect("capture lock").push(Captured {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        headers,
        bytes: body.len(),
    });
    Ok(if grpc {
        grpc_answer(status)
    } else {
        let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
        *res.status_mut() = status;
        if matches!(status.as_u16(), 429 | 503) {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    })
}

/// A gRPC unary answer: HTTP 200, an empty response message, and the status in the trailers.
fn grpc_answer(status: StatusCode) -> Answer {
    let code = match status.as_u16() {
        200..=299 => "0",
        400 => "3",
        401 => "16",
        403 => "7",
        404 => "12",
        429 => "8",
        502..=504 => "14",
        _ => "2",
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(code));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut res = Response::new(Either::Right(StreamBody::new(futures::stream::iter(
        frames,
    ))));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    res
}
