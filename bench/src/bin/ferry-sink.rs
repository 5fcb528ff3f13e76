//! `ferry-sink`: an OTLP backend that accepts OTLP/HTTP protobuf and OTLP/gRPC (h2c) on one
//! port, counts the items it received, and tells the count on `GET /count` as JSON.
//!
//! `ferry-sink --listen 127.0.0.1:4400` prints `listening 127.0.0.1:4400` once ready.

use std::convert::Infallible;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use clap::Parser;
use ferry_bench::{Signal, count_items};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4400")]
    listen: String,
}

#[derive(Default)]
struct Counts {
    items: [AtomicU64; 3],
    requests: AtomicU64,
    errors: AtomicU64,
}

fn index(s: Signal) -> usize {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

/// A body of one data frame, then optional trailers (what a gRPC answer needs).
struct Answer {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn answer(status: StatusCode, data: Bytes, trailers: Option<HeaderMap>) -> Response<Answer> {
    let mut r = Response::new(Answer {
        data: Some(data),
        trailers,
    });
    *r.status_mut() = status;
    r
}

fn gunzip(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).ok()?;
    Some(out)
}

async fn handle(
    counts: Arc<Counts>,
    req: Request<Incoming>,
) -> Result<Response<Answer>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/count" {
        let c = &counts;
        let json = serde_json::json!({
            "traces": c.items[0].load(Ordering::Relaxed),
            "metrics": c.items[1].load(Ordering::Relaxed),
            "logs": c.items[2].load(Ordering::Relaxed),
            "requests": c.requests.load(Ordering::Relaxed),
            "errors": c.errors.load(Ordering::Relaxed),
        });
        return Ok(answer(StatusCode::OK, Bytes::from(json.to_string()), None));
    }
    let grpc = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let gzip = req
        .headers()
        .get(if grpc {
            "grpc-encoding"
        } else {
            "content-encoding"
        })
        .is_some_and(|v| v == "gzip");
    let signal = [Signal::Traces, Signal::Metrics, Signal::Logs]
        .into_iter()
        .find(|s| path == s.http_path() || path == s.grpc_path());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            return Ok(answer(StatusCode::BAD_REQUEST, Bytes::new(), None));
        }
    };
    let message: Option<Vec<u8>> = if grpc {
        // One length-prefixed message; flag 1 means compressed with grpc-encoding.
        body.get(5..).and_then(|m| {
            if body[0] == 1 {
                gunzip(m)
            } else {
                Some(m.to_vec())
            }
        })
    } else if gzip {
        gunzip(&body)
    } else {
        Some(body.to_vec())
    };
    let n = signal
        .zip(message)
        .and_then(|(s, m)| Some((s, count_items(s, &m)?)));
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let Some((signal, n)) = n else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return Ok(if grpc {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", "3".parse().unwrap());
            answer(StatusCode::OK, Bytes::new(), Some(t))
        } else {
            answer(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"unreadable OTLP"),
                None,
            )
        });
    };
    counts.items[index(signal)].fetch_add(n, Ordering::Relaxed);
    Ok(if grpc {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let mut r = answer(
            StatusCode::OK,
            Bytes::from_static(&[0, 0, 0, 0, 0]),
            Some(t),
        );
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        r
    } else {
        let mut r = answer(StatusCode::OK, Bytes::new(), None);
        r.headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        r
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening {}", listener.local_addr()?);
    let counts = Arc::new(Counts::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(counts.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
