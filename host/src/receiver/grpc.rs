//! gRPC plumbing shared by every gRPC receiver: a raw-bytes codec (messages reach the
//! receiver undecoded), a service for one raw method, the status each refusal maps onto, and
//! the accept loop tonic serves on.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::ingest::{Ingest, IngestError, RETRY_AFTER_SECS};
use crate::pipeline::Refusal;
use crate::signal::Signal;

/// Passes message bytes through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Decoder half of [`RawCodec`].
#[derive(Debug)]
pub struct RawDecoder;

/// Encoder half of [`RawCodec`].
#[derive(Debug)]
pub struct RawEncoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// Maps a refusal onto the gRPC status OTLP clients understand.
pub fn status(err: &IngestError) -> Status {
    match err {
        IngestError::Invalid { .. } => Status::invalid_argument(err.to_string()),
        IngestError::TooLarge { .. } => Status::resource_exhausted(err.to_string()),
        IngestError::Refused(Refusal::QueueFull(_)) => retry_later(format!("{err}; retry later")),
        IngestError::Refused(Refusal::NoExporter(_)) => Status::unimplemented(err.to_string()),
        // UNAVAILABLE is retryable for every OTLP client.
        IngestError::Refused(Refusal::Storage(_)) | IngestError::Processor(_) => {
            Status::unavailable(err.to_string())
        }
    }
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo`, which tells OTLP clients the refusal is
/// temporary and when to retry: in the status details (as the OTLP spec asks) and in the
/// `google.rpc.retryinfo-bin` trailer (which the Python SDK reads).
fn retry_later(message: String) -> Status {
    use ferry_proto::wkt::{Any, Duration, RetryInfo, RpcStatus};
    let info = RetryInfo {
        retry_delay: Some(Duration {
            seconds: RETRY_AFTER_SECS as i64,
            nanos: 0,
        }),
    }
    .encode_to_vec();
    let details = RpcStatus {
        code: tonic::Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.clone(),
        }],
    }
    .encode_to_vec();
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert_bin(
        "google.rpc.retryinfo-bin",
        tonic::metadata::MetadataValue::from_bytes(&info),
    );
    Status::with_details_and_metadata(
        tonic::Code::ResourceExhausted,
        message,
        details.into(),
        metadata,
    )
}

/// Counts a message over the size limit that tonic refused, and words the refusal as Ferry does
/// (RESOURCE_EXHAUSTED without RetryInfo: not worth retrying as it is).
pub fn too_large(ingest: &Ingest, signal: Signal) -> Status {
    let limit = ingest.max_request_bytes;
    let err = IngestError::TooLarge {
        size: limit + 1,
        limit,
    };
    ingest.count_refused(signal, &err);
    status(&err)
}

/// A gRPC method whose messages stay bytes, served by [`RawService`].
pub trait RawMethod: Clone + Send + Sync + 'static {
    /// Fully qualified service name.
    const SERVICE: &'static str;
    /// Method path suffix, e.g. `/Export`.
    const METHOD: &'static str;
    /// Signal of its messages.
    const SIGNAL: Signal;
    /// The counted entry point (and its message size limit).
    fn ingest(&self) -> &Ingest;
    /// Serves one call with `grpc` (already configured: limits, compression).
    fn call<B>(
        self,
        grpc: Grpc<RawCodec>,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send;
}

/// A unary gRPC method whose request and response stay bytes: the handler decodes (or just
/// validates) the message itself.
pub trait RawUnary: Clone + Send + Sync + 'static {
    /// Fully qualified service name.
    const SERVICE: &'static str;
    /// Method path suffix, e.g. `/Export`.
    const METHOD: &'static str;
    /// Signal of its messages.
    const SIGNAL: Signal;
    /// The counted entry point (and its message size limit).
    fn ingest(&self) -> &Ingest;
    /// Handles one request message.
    fn handle(self, message: Bytes) -> impl Future<Output = Result<Bytes, Status>> + Send;
}

/// A tower service serving one [`RawMethod`] over HTTP/2.
#[derive(Clone)]
pub struct RawService<H>(pub H);

impl<H: RawMethod> NamedService for RawService<H> {
    const NAME: &'static str = H::SERVICE;
}

impl<H: RawUnary> RawMethod for H {
    const SERVICE: &'static str = H::SERVICE;
    const METHOD: &'static str = H::METHOD;
    const SIGNAL: Signal = H::SIGNAL;

    fn ingest(&self) -> &Ingest {
        RawUnary::ingest(self)
    }

    fn call<B>(
        self,
        mut grpc: Grpc<RawCodec>,
        req: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        Box::pin(async move { grpc.unary(Method(self), req).await })
    }
}

struct Method<H>(H);

impl<H: RawUnary> UnaryService<Bytes> for Method<H> {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            handler
                .handle(request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<H: RawMethod, B> tower::Service<http::Request<B>> for RawService<H>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !req.uri().path().ends_with(H::METHOD) {
            return Box::pin(async {
                Ok(Status::unimplemented(format!("only {} exists", H::METHOD)).into_http())
            });
        }
        let grpc = Grpc::new(RawCodec)
            .max_decoding_message_size(self.0.ingest().max_request_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        let method = self.0.clone();
        let call = self.0.clone().call(grpc, req);
        Box::pin(async move {
            let resp = call.await;
            // tonic refuses an oversize message before the handler runs, as OUT_OF_RANGE (which
            // clients retry); no handler of ours answers OUT_OF_RANGE.
            if resp.headers().get("grpc-status").is_some_and(|s| s == "11") {
                return Ok(too_large(method.ingest(), H::SIGNAL).into_http());
            }
            Ok(resp)
        })
    }
}

/// A stream of accepted connections, as tonic's `serve_with_incoming` wants.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}
