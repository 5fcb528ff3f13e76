//! The three Zipkin body formats (JSON v1, JSON v2, protobuf v2), decoded into one span model.

use std::collections::BTreeMap;

use ferry_proto::zipkin as zpb;
use prost::Message;
use serde::Deserialize;

use crate::receiver::ingest::IngestError;
use crate::signal::Signal;

/// Zipkin's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ZEndpoint {
    pub(super) service_name: String,
    pub(super) ip: Option<String>,
    pub(super) port: Option<u16>,
}

/// One Zipkin span, whatever the wire format it came in.
#[derive(Debug, Clone, Default)]
pub(super) struct ZSpan {
    pub(super) trace_id: [u8; 16],
    pub(super) id: [u8; 8],
    pub(super) parent_id: Option<[u8; 8]>,
    pub(super) name: String,
    pub(super) kind: Option<Kind>,
    pub(super) timestamp_us: Option<u64>,
    pub(super) duration_us: u64,
    pub(super) local: Option<ZEndpoint>,
    pub(super) remote: Option<ZEndpoint>,
    pub(super) annotations: Vec<(u64, String)>,
    pub(super) tags: BTreeMap<String, String>,
}

pub(super) fn bad(message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        signal: Signal::Traces,
        message: message.into(),
    }
}

/// Lower-hex id of up to `N` bytes, left-padded with zeros (64-bit trace ids become 128-bit).
pub(super) fn hex_id<const N: usize>(field: &str, s: &str) -> Result<[u8; N], IngestError> {
    // Checked first: padding counts characters, slicing below counts bytes.
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("{field} {s:?} is not hex")));
    }
    if s.is_empty() || s.len() > 2 * N {
        return Err(bad(format!(
            "{field} {s:?} must be 1 to {} hex characters",
            2 * N
        )));
    }
    let padded = format!("{s:0>width$}", width = 2 * N);
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16)
            .map_err(|_| bad(format!("{field} {s:?} is not hex")))?;
    }
    Ok(out)
}

pub(super) fn bytes_id<const N: usize>(field: &str, b: &[u8]) -> Result<[u8; N], IngestError> {
    if b.is_empty() || b.len() > N {
        return Err(bad(format!(
            "{field} must be 1 to {N} bytes, got {}",
            b.len()
        )));
    }
    let mut out = [0u8; N];
    out[N - b.len()..].copy_from_slice(b);
    Ok(out)
}

pub(super) fn kind_of(s: &str) -> Option<Kind> {
    match s.to_ascii_uppercase().as_str() {
        "CLIENT" => Some(Kind::Client),
        "SERVER" => Some(Kind::Server),
        "PRODUCER" => Some(Kind::Producer),
        "CONSUMER" => Some(Kind::Consumer),
        _ => None,
    }
}

// ---- JSON v2 ----

/// A number that may arrive as a float (some clients send microseconds with a fraction).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Micros {
    Int(u64),
    Float(f64),
}

impl Micros {
    fn get(&self) -> u64 {
        match *self {
            Micros::Int(v) => v,
            Micros::Float(v) if v > 0.0 => v as u64,
            Micros::Float(_) => 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JsonEndpoint {
    pub(super) service_name: Option<String>,
    pub(super) ipv4: Option<String>,
    pub(super) ipv6: Option<String>,
    pub(super) port: Option<u16>,
}

impl From<JsonEndpoint> for ZEndpoint {
    fn from(e: JsonEndpoint) -> Self {
        ZEndpoint {
            service_name: e.service_name.unwrap_or_default(),
            ip: e.ipv4.or(e.ipv6).filter(|s| !s.is_empty()),
            port: e.port.filter(|p| *p > 0),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct JsonAnnotation {
    pub(super) timestamp: Micros,
    pub(super) value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JsonSpanV2 {
    pub(super) trace_id: String,
    pub(super) id: String,
    pub(super) parent_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) timestamp: Option<Micros>,
    pub(super) duration: Option<Micros>,
    pub(super) local_endpoint: Option<JsonEndpoint>,
    pub(super) remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    pub(super) annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    pub(super) tags: BTreeMap<String, serde_json::Value>,
}

/// Tag values should be strings; numbers and booleans are accepted as their text.
pub(super) fn tag_text(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

pub(super) fn parent(field: &str, p: Option<String>) -> Result<Option<[u8; 8]>, IngestError> {
    match p.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => hex_id::<8>(field, s).map(Some),
    }
}

pub(super) fn from_json_v2(body: &[u8]) -> Result<Vec<ZSpan>, IngestError> {
    let spans: Vec<JsonSpanV2> =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid Zipkin v2 JSON: {e}")))?;
    spans
        .into_iter()
        .map(|s| {
            Ok(ZSpan {
                trace_id: hex_id("traceId", &s.trace_id)?,
                id: hex_id("id", &s.id)?,
                parent_id: parent("parentId", s.parent_id)?,
                name: s.name.unwrap_or_default(),
                kind: s.kind.as_deref().and_then(kind_of),
                timestamp_us: s.timestamp.map(|t| t.get()).filter(|t| *t > 0),
                duration_us: s.duration.map_or(0, |d| d.get()),
                local: s.local_endpoint.map(Into::into),
                remote: s.remote_endpoint.map(Into::into),
                annotations: s
                    .annotations
                    .into_iter()
                    .map(|a| (a.timestamp.get(), a.value))
                    .collect(),
                tags: s.tags.into_iter().map(|(k, v)| (k, tag_text(v))).collect(),
            })
        })
        .collect()
}

// ---- protobuf v2 ----

pub(super) fn ip_text(v4: &[u8], v6: &[u8]) -> Option<String> {
    if let Ok(b) = <[u8; 4]>::try_from(v4) {
        return Some(std::net::Ipv4Addr::from(b).to_string());
    }
    if let Ok(b) = <[u8; 16]>::try_from(v6) {
        return Some(std::net::Ipv6Addr::from(b).to_string());
    }
    None
}

pub(super) fn from_pb_endpoint(e: zpb::Endpoint) -> ZEndpoint {
    ZEndpoint {
        ip: ip_text(&e.ipv4, &e.ipv6),
        port: u16::try_from(e.port).ok().filter(|p| *p > 0),
        service_name: e.service_name,
    }
}

pub(super) fn from_proto(body: &[u8]) -> Result<Vec<ZSpan>, IngestError> {
    let list = zpb::ListOfSpans::decode(body)
        .map_err(|e| bad(format!("invalid Zipkin protobuf ListOfSpans: {e}")))?;
    list.spans
        .into_iter()
        .map(|s| {
            let kind = match zpb::Kind::try_from(s.kind).unwrap_or(zpb::Kind::SpanKindUnspecified) {
                zpb::Kind::Client => Some(Kind::Client),
                zpb::Kind::Server => Some(Kind::Server),
                zpb::Kind::Producer => Some(Kind::Producer),
                zpb::Kind::Consumer => Some(Kind::Consumer),
                zpb::Kind::SpanKindUnspecified => None,
            };
            Ok(ZSpan {
                trace_id: bytes_id("trace_id", &s.trace_id)?,
                id: bytes_id("id", &s.id)?,
                parent_id: if s.parent_id.is_empty() {
                    None
                } else {
                    Some(bytes_id("parent_id", &s.parent_id)?)
                },
                name: s.name,
                kind,
                timestamp_us: (s.timestamp > 0).then_some(s.timestamp),
                duration_us: s.duration,
                local: s.local_endpoint.map(from_pb_endpoint),
                remote: s.remote_endpoint.map(from_pb_endpoint),
                annotations: s
                    .annotations
                    .into_iter()
                    .map(|a| (a.timestamp, a.value))
                    .collect(),
                tags: s.tags.into_iter().collect(),
            })
        })
        .collect()
}

// ---- JSON v1 ----

#[derive(Deserialize)]
pub(super) struct V1Annotation {
    pub(super) timestamp: Micros,
    pub(super) value: String,
    pub(super) endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
pub(super) struct V1BinaryAnnotation {
    pub(super) key: String,
    pub(super) value: serde_json::Value,
    pub(super) endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JsonSpanV1 {
    pub(super) trace_id: String,
    pub(super) id: String,
    pub(super) parent_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) timestamp: Option<Micros>,
    pub(super) duration: Option<Micros>,
    #[serde(default)]
    pub(super) annotations: Vec<V1Annotation>,
    #[serde(default)]
    pub(super) binary_annotations: Vec<V1BinaryAnnotation>,
}

/// v1 spans carry kind and endpoints in "core" annotations (`cs`, `sr`, ...) and addresses in
/// `sa` / `ca` binary annotations; this turns one into the v2 shape.
pub(super) fn from_json_v1(body: &[u8]) -> Result<Vec<ZSpan>, IngestError> {
    let spans: Vec<JsonSpanV1> =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid Zipkin v1 JSON: {e}")))?;
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let mut z = ZSpan {
            trace_id: hex_id("traceId", &s.trace_id)?,
            id: hex_id("id", &s.id)?,
            parent_id: parent("parentId", s.parent_id)?,
            name: s.name.unwrap_or_default(),
            timestamp_us: s.timestamp.map(|t| t.get()).filter(|t| *t > 0),
            duration_us: s.duration.map_or(0, |d| d.get()),
            ..Default::default()
        };
        let mut core: BTreeMap<&str, u64> = BTreeMap::new();
        for a in s.annotations {
            let (kind, begins) = match a.value.as_str() {
                "cs" => (Some(Kind::Client), true),
                "cr" => (Some(Kind::Client), false),
                "sr" => (Some(Kind::Server), true),
                "ss" => (Some(Kind::Server), false),
                "ms" => (Some(Kind::Producer), true),
                "mr" => (Some(Kind::Consumer), true),
                _ => (None, false),
            };
            match kind {
                Some(k) => {
                    z.kind.get_or_insert(k);
                    if z.local.is_none() {
                        z.local = a.endpoint.map(Into::into);
                    }
                    let key = if begins { "begin" } else { "end" };
                    core.entry(key).or_insert(a.timestamp.get());
                }
                None => {
                    if z.local.is_none() {
                        z.local = a.endpoint.map(Into::into);
                    }
                    z.annotations.push((a.timestamp.get(), a.value));
                }
            }
        }
        for b in s.binary_annotations {
            match b.key.as_str() {
                "sa" | "ca" | "ma" => z.remote = b.endpoint.map(Into::into),
                _ => {
                    if z.local.is_none() {
                        z.local = b.endpoint.map(Into::into);
                    }
                    z.tags.insert(b.key, tag_text(b.value));
                }
            }
        }
        if z.timestamp_us.is_none() {
            z.timestamp_us = core.get("begin").copied();
        }
        if z.duration_us == 0
            && let (Some(b), Some(e)) = (core.get("begin"), core.get("end"))
        {
            z.duration_us = e.saturating_sub(*b);
        }
        out.push(z);
    }
    Ok(out)
}
