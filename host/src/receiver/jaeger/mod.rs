//! Jaeger receivers: the agent's UDP ports, `6831` (thrift compact) and `6832` (thrift
//! binary), each datagram one `Agent.emitBatch`. A malformed datagram is counted and skipped.
//!
//! Translation to OTLP follows the OpenTelemetry Collector's Jaeger rules: the process's
//! `serviceName` and tags become the resource; tags become typed attributes (by `vType`);
//! `span.kind`, `error`, `otel.status_code` / `otel.status_description` and
//! `otel.scope.*` / `otel.library.*` tags become kind, status and scope; logs become events
//! (named by their `event` field); the first CHILD_OF reference is the parent when
//! `parentSpanId` is 0, every other reference a link.

mod server;
pub mod thrift;
mod translate;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use thrift::Protocol;

use crate::receiver::ingest::Launch;
pub use server::{PostSpans, http_router, serve_grpc, serve_udp};
pub use translate::{batch_to_otlp, decode_datagram, decode_post_spans, proto_batch_to_otlp};

/// `[receivers.jaeger]`: the Jaeger agent's UDP ports and the collector's endpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JaegerReceiverConfig {
    /// UDP address for thrift compact `emitBatch` (Jaeger's usual port is 6831).
    pub thrift_compact: Option<SocketAddr>,
    /// UDP address for thrift binary `emitBatch` (usually 6832).
    pub thrift_binary: Option<SocketAddr>,
    /// HTTP address for the collector's `POST /api/traces` (thrift binary; usually 14268).
    pub thrift_http: Option<SocketAddr>,
    /// gRPC address for the collector's `PostSpans` (usually 14250).
    pub grpc: Option<SocketAddr>,
    /// Largest HTTP or gRPC request accepted, after decompression.
    #[serde(
        default = "crate::receiver::default_max_request",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub max_request_bytes: usize,
}

impl crate::receiver::Receiver for JaegerReceiverConfig {
    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    fn check(&self, key: &str, errors: &mut Vec<String>) {
        if self.thrift_compact.is_none()
            && self.thrift_binary.is_none()
            && self.thrift_http.is_none()
            && self.grpc.is_none()
        {
            errors.push(format!(
                "{key}: set at least one of `thrift_compact`, `thrift_binary`, `thrift_http`, `grpc`"
            ));
        }
    }

    async fn start(&self, launch: &mut Launch<'_>) -> anyhow::Result<()> {
        start(self, launch).await
    }
}

/// The agent's two datagram protocols, the collector's gRPC and HTTP bodies.
pub fn decoders() -> Vec<(&'static str, crate::receiver::decoders::Decoder)> {
    vec![
        ("jaeger_compact", |b| {
            let _ = decode_datagram(thrift::Protocol::Compact, b);
        }),
        ("jaeger_binary", |b| {
            let _ = decode_datagram(thrift::Protocol::Binary, b);
        }),
        ("jaeger_grpc", |b| {
            let _ = decode_post_spans(b);
        }),
        ("jaeger_http", |b| {
            if let Ok(batch) = thrift::decode_struct(thrift::Protocol::Binary, b) {
                let _ = batch_to_otlp(&batch);
            }
        }),
    ]
}

/// Starts each Jaeger endpoint `config` gives an address.
async fn start(config: &JaegerReceiverConfig, launch: &mut Launch<'_>) -> anyhow::Result<()> {
    use anyhow::Context;
    let ports = [
        ("jaeger_compact", config.thrift_compact, Protocol::Compact),
        ("jaeger_binary", config.thrift_binary, Protocol::Binary),
    ];
    for (name, addr, protocol) in ports {
        let Some(addr) = addr else { continue };
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("{name}: cannot listen on udp {addr}"))?;
        tracing::info!(receiver = name, addr = %socket.local_addr()?, "listening");
        // A datagram is at most 64 KiB; its OTLP form can be somewhat larger.
        let ingest = launch.ingest(name, 1 << 20);
        launch.spawn(serve_udp(socket, protocol, ingest));
    }
    if let Some(addr) = config.thrift_http {
        let serve = |l, ingest| async move {
            axum::serve(l, http_router(ingest)).await?;
            Ok(())
        };
        launch
            .serve("jaeger_http", addr, config.max_request_bytes, serve)
            .await?;
    }
    if let Some(addr) = config.grpc {
        launch
            .serve("jaeger_grpc", addr, config.max_request_bytes, serve_grpc)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::thrift::Value as V;
    use super::*;
    use ferry_proto::common::any_value;
    use ferry_proto::trace::{Span, span, status};
    use ferry_proto::trace_service::ExportTraceServiceRequest;
    use prost::Message;

    /// Encodes a value tree in the compact protocol (enough for tests).
    fn enc(v: &V, out: &mut Vec<u8>) {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
        fn zz(n: i64) -> u64 {
            ((n << 1) ^ (n >> 63)) as u64
        }
        fn ty(v: &V) -> u8 {
            match v {
                V::Bool(true) => 1,
                V::Bool(false) => 2,
                V::I8(_) => 3,
                V::I16(_) => 4,
                V::I32(_) => 5,
                V::I64(_) => 6,
                V::Double(_) => 7,
                V::Binary(_) => 8,
                V::List(_) => 9,
                V::Map(_) => 11,
                V::Struct(_) => 12,
            }
        }
        match v {
            V::Bool(_) => {}
            V::I8(b) => out.push(*b as u8),
            V::I16(i) => varint(zz(i64::from(*i)), out),
            V::I32(i) => varint(zz(i64::from(*i)), out),
            V::I64(i) => varint(zz(*i), out),
            V::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
            V::Binary(b) => {
                varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            V::List(items) => {
                let et = items.first().map_or(12, ty);
                out.push(((items.len().min(15) as u8) << 4) | et);
                assert!(items.len() < 15);
                for i in items {
                    enc(i, out);
                }
            }
            V::Map(_) => unreachable!("not needed"),
            V::Struct(fields) => {
                let mut last = 0i16;
                for (id, f) in fields {
                    out.push((((id - last) as u8) << 4) | ty(f));
                    last = *id;
                    enc(f, out);
                }
                out.push(0);
            }
        }
    }

    fn s(text: &str) -> V {
        V::Binary(text.as_bytes().to_vec())
    }

    fn tag_str(k: &str, v: &str) -> V {
        V::Struct(vec![(1, s(k)), (2, V::I32(0)), (3, s(v))])
    }

    fn datagram() -> Vec<u8> {
        let span = V::Struct(vec![
            (1, V::I64(0x0102)),
            (2, V::I64(0)),
            (3, V::I64(7)),
            (4, V::I64(0)),
            (5, s("get")),
            (
                6,
                V::List(vec![
                    V::Struct(vec![
                        (1, V::I32(0)),
                        (2, V::I64(0x0102)),
                        (3, V::I64(0)),
                        (4, V::I64(5)),
                    ]),
                    V::Struct(vec![
                        (1, V::I32(1)),
                        (2, V::I64(9)),
                        (3, V::I64(0)),
                        (4, V::I64(6)),
                    ]),
                ]),
            ),
            (7, V::I32(1)),
            (8, V::I64(1_000)),
            (9, V::I64(250)),
            (
                10,
                V::List(vec![
                    tag_str("span.kind", "client"),
                    V::Struct(vec![(1, s("error")), (2, V::I32(2)), (5, V::Bool(true))]),
                    V::Struct(vec![
                        (1, s("http.status_code")),
                        (2, V::I32(3)),
                        (6, V::I64(503)),
                    ]),
                    V::Struct(vec![
                        (1, s("ratio")),
                        (2, V::I32(1)),
                        (3, s("")),
                        (4, V::Double(0.5)),
                    ]),
                ]),
            ),
            (
                11,
                V::List(vec![V::Struct(vec![
                    (1, V::I64(1_100)),
                    (
                        2,
                        V::List(vec![tag_str("event", "retry"), tag_str("attempt", "2")]),
                    ),
                ])]),
            ),
        ]);
        let batch = V::Struct(vec![
            (
                1,
                V::Struct(vec![
                    (1, s("checkout")),
                    (2, V::List(vec![tag_str("hostname", "h1")])),
                ]),
            ),
            (2, V::List(vec![span])),
        ]);
        let mut out = vec![0x82, 0x81, 0x00];
        out.push(9);
        out.extend_from_slice(b"emitBatch");
        enc(&V::Struct(vec![(1, batch)]), &mut out);
        out
    }

    fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == k)?
            .value
            .as_ref()?
            .value
            .as_ref()
    }

    #[test]
    fn emit_batch_translates_like_the_collector() {
        let otlp = decode_datagram(Protocol::Compact, &datagram()).unwrap();
        let req = ExportTraceServiceRequest::decode(otlp).unwrap();
        let rs = &req.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        assert!(res.iter().any(|kv| kv.key == "service.name"));
        assert!(res.iter().any(|kv| kv.key == "hostname"));
        let sp = &rs.scope_spans[0].spans[0];
        assert_eq!(
            sp.trace_id,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(sp.span_id, 7i64.to_be_bytes());
        assert_eq!(
            sp.parent_span_id,
            5i64.to_be_bytes(),
            "parent from the CHILD_OF reference"
        );
        assert_eq!(sp.links.len(), 1, "FOLLOWS_FROM becomes a link");
        assert_eq!(sp.kind, span::SpanKind::Client as i32);
        assert_eq!(
            sp.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(
            (sp.start_time_unix_nano, sp.end_time_unix_nano),
            (1_000_000, 1_250_000)
        );
        assert_eq!(
            attr(sp, "http.status_code"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(
            attr(sp, "ratio"),
            Some(&any_value::Value::DoubleValue(0.5)),
            "decoded by vType"
        );
        assert!(attr(sp, "span.kind").is_none() && attr(sp, "error").is_none());
        assert_eq!(sp.events[0].name, "retry");
        assert_eq!(sp.events[0].time_unix_nano, 1_100_000);
        assert_eq!(sp.events[0].attributes.len(), 1);
    }

    #[test]
    fn malformed_datagrams_are_refused_not_fatal() {
        let good = datagram();
        for cut in [1, 5, good.len() / 2, good.len() - 1] {
            assert!(
                decode_datagram(Protocol::Compact, &good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(
            decode_datagram(Protocol::Binary, &good).is_err(),
            "wrong protocol"
        );
        let mut other = good.clone();
        other[4..13].copy_from_slice(b"emitBatcX");
        assert!(
            decode_datagram(Protocol::Compact, &other)
                .unwrap_err()
                .contains("unsupported agent method")
        );
    }
}
