//! Zipkin receiver (default `127.0.0.1:9411`): `POST /api/v2/spans` in JSON or protobuf
//! (`ListOfSpans`), `POST /api/v1/spans` in JSON; gzip bodies; answers `202 Accepted` as
//! Zipkin does.
//!
//! Spans are translated to OTLP once, here, following the OpenTelemetry Collector's Zipkin
//! rules: `localEndpoint.serviceName` becomes the resource's `service.name`; kinds map one to
//! one (no kind is UNSPECIFIED unless `span.kind=internal`); `otel.status_code` /
//! `otel.status_description` and the `error` tag become the status; other tags become string
//! attributes; endpoints become `net.host.*`, `net.peer.*` and `peer.service`; annotations
//! become events; 64-bit trace ids are left-padded to 128 bits; a missing start time becomes
//! 0 with `otel.zipkin.absentField.startTime = true`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ferry_proto::common::{KeyValue, any_value};
use ferry_proto::trace::{Span, Status, span, status};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use ferry_proto::zipkin as zpb;
use prost::Message;
use serde::Deserialize;

use super::{Ingest, IngestError};
use crate::signal::Signal;

/// Zipkin's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ZEndpoint {
    service_name: String,
    ip: Option<String>,
    port: Option<u16>,
}

/// One Zipkin span, whatever the wire format it came in.
#[derive(Debug, Clone, Default)]
struct ZSpan {
    trace_id: [u8; 16],
    id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    name: String,
    kind: Option<Kind>,
    timestamp_us: Option<u64>,
    duration_us: u64,
    local: Option<ZEndpoint>,
    remote: Option<ZEndpoint>,
    annotations: Vec<(u64, String)>,
    tags: BTreeMap<String, String>,
}

fn bad(message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        signal: Signal::Traces,
        message: message.into(),
    }
}

/// Lower-hex id of up to `N` bytes, left-padded with zeros (64-bit trace ids become 128-bit).
fn hex_id<const N: usize>(field: &str, s: &str) -> Result<[u8; N], IngestError> {
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

fn bytes_id<const N: usize>(field: &str, b: &[u8]) -> Result<[u8; N], IngestError> {
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

fn kind_of(s: &str) -> Option<Kind> {
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
enum Micros {
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
struct JsonEndpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
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
struct JsonAnnotation {
    timestamp: Micros,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpanV2 {
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<Micros>,
    duration: Option<Micros>,
    local_endpoint: Option<JsonEndpoint>,
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
}

/// Tag values should be strings; numbers and booleans are accepted as their text.
fn tag_text(v: serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn parent(field: &str, p: Option<String>) -> Result<Option<[u8; 8]>, IngestError> {
    match p.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => hex_id::<8>(field, s).map(Some),
    }
}

fn from_json_v2(body: &[u8]) -> Result<Vec<ZSpan>, IngestError> {
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

fn ip_text(v4: &[u8], v6: &[u8]) -> Option<String> {
    if let Ok(b) = <[u8; 4]>::try_from(v4) {
        return Some(std::net::Ipv4Addr::from(b).to_string());
    }
    if let Ok(b) = <[u8; 16]>::try_from(v6) {
        return Some(std::net::Ipv6Addr::from(b).to_string());
    }
    None
}

fn from_pb_endpoint(e: zpb::Endpoint) -> ZEndpoint {
    ZEndpoint {
        ip: ip_text(&e.ipv4, &e.ipv6),
        port: u16::try_from(e.port).ok().filter(|p| *p > 0),
        service_name: e.service_name,
    }
}

fn from_proto(body: &[u8]) -> Result<Vec<ZSpan>, IngestError> {
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
struct V1Annotation {
    timestamp: Micros,
    value: String,
    endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
struct V1BinaryAnnotation {
    key: String,
    value: serde_json::Value,
    endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpanV1 {
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    name: Option<String>,
    timestamp: Option<Micros>,
    duration: Option<Micros>,
    #[serde(default)]
    annotations: Vec<V1Annotation>,
    #[serde(default)]
    binary_annotations: Vec<V1BinaryAnnotation>,
}

/// v1 spans carry kind and endpoints in "core" annotations (`cs`, `sr`, ...) and addresses in
/// `sa` / `ca` binary annotations; this turns one into the v2 shape.
fn from_json_v1(body: &[u8]) -> Result<Vec<ZSpan>, IngestError> {
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

// ---- to OTLP ----

use super::kv;

fn text(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn json_attrs(map: serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => text(&k, s),
            serde_json::Value::Bool(b) => kv(&k, any_value::Value::BoolValue(b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => kv(&k, any_value::Value::IntValue(i)),
                None => kv(&k, any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0))),
            },
            other => text(&k, other.to_string()),
        })
        .collect()
}

/// An annotation becomes an event. Two structured forms are understood: the Collector's
/// `name|{json attributes}|dropped`, and OpenTelemetry exporters' `{"name": {attributes}}`.
fn event(ts_us: u64, value: String) -> span::Event {
    let mut ev = span::Event {
        time_unix_nano: ts_us.saturating_mul(1000),
        ..Default::default()
    };
    if value.starts_with('{')
        && let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(&value)
        && obj.len() == 1
        && let Some((name, serde_json::Value::Object(attrs))) = obj.into_iter().next()
    {
        ev.name = name;
        ev.attributes = json_attrs(attrs);
        return ev;
    }
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() >= 3
        && let Ok(serde_json::Value::Object(attrs)) =
            serde_json::from_str(&parts[1..parts.len() - 1].join("|"))
    {
        ev.name = parts[0].to_string();
        ev.attributes = json_attrs(attrs);
        ev.dropped_attributes_count = parts[parts.len() - 1].parse().unwrap_or(0);
        return ev;
    }
    ev.name = value;
    ev
}

/// Links, from the `otlp.link.0`, `otlp.link.1`, ... tags (`traceId|spanId|traceState|
/// {attributes}|droppedAttributes`), read as the Collector reads them. A tag that does not parse
/// stays an attribute rather than being lost.
fn take_links(tags: &mut BTreeMap<String, String>) -> Vec<span::Link> {
    let mut links = Vec::new();
    for i in 0..128 {
        let key = format!("otlp.link.{i}");
        let Some(value) = tags.get(&key) else { break };
        if let Some(link) = parse_link(value) {
            links.push(link);
            tags.remove(&key);
        }
    }
    links
}

fn parse_link(value: &str) -> Option<span::Link> {
    let parts: Vec<&str> = value.split('|').collect();
    let n = parts.len();
    if n < 5 {
        return None;
    }
    let unquote = |s: &str| s.trim_matches('"').to_string();
    let trace_id = hex_id::<16>("link trace id", &unquote(parts[0])).ok()?;
    let span_id = hex_id::<8>("link span id", &unquote(parts[1])).ok()?;
    let serde_json::Value::Object(attrs) = serde_json::from_str(&parts[3..n - 1].join("|")).ok()?
    else {
        return None;
    };
    Some(span::Link {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: parts[2].to_string(),
        attributes: json_attrs(attrs),
        dropped_attributes_count: parts[n - 1].parse().ok()?,
        ..Default::default()
    })
}

/// Tags that describe the process, not the span: the Collector moves them to the resource
/// (OpenTelemetry's Zipkin exporters copy resource attributes into every span's tags).
const RESOURCE_TAGS: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
    "telemetry.sdk.name",
    "telemetry.sdk.language",
    "telemetry.sdk.version",
    "telemetry.auto.version",
    "host.name",
    "host.id",
    "host.type",
    "host.arch",
    "os.type",
    "os.description",
    "process.pid",
    "process.executable.name",
    "process.command_line",
    "process.runtime.name",
    "process.runtime.version",
    "container.id",
    "deployment.environment",
    "cloud.provider",
    "cloud.region",
    "k8s.namespace.name",
    "k8s.pod.name",
];

const SCOPE_NAME_TAGS: [&str; 2] = ["otel.scope.name", "otel.library.name"];
const SCOPE_VERSION_TAGS: [&str; 2] = ["otel.scope.version", "otel.library.version"];

fn take_first(tags: &mut BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    let mut found = None;
    for k in keys {
        if let Some(v) = tags.remove(*k) {
            found.get_or_insert(v);
        }
    }
    found
}

fn to_span(mut z: ZSpan) -> Span {
    let mut status = Status::default();
    if let Some(code) = z.tags.remove("otel.status_code") {
        status.code = match code.to_ascii_uppercase().trim_start_matches("STATUS_CODE_") {
            "OK" => status::StatusCode::Ok,
            "ERROR" => status::StatusCode::Error,
            _ => status::StatusCode::Unset,
        } as i32;
        if let Some(msg) = z.tags.remove("otel.status_description") {
            status.message = msg;
        }
    }
    if let Some(err) = z.tags.remove("error") {
        status.code = status::StatusCode::Error as i32;
        if status.message.is_empty() && !err.is_empty() && err != "true" {
            status.message = err;
        }
    }
    let kind = match z.kind {
        Some(Kind::Client) => span::SpanKind::Client,
        Some(Kind::Server) => span::SpanKind::Server,
        Some(Kind::Producer) => span::SpanKind::Producer,
        Some(Kind::Consumer) => span::SpanKind::Consumer,
        None => match z.tags.remove("span.kind").as_deref() {
            Some("internal") => span::SpanKind::Internal,
            _ => span::SpanKind::Unspecified,
        },
    };
    let trace_state = z.tags.remove("w3c.tracestate").unwrap_or_default();
    let links = take_links(&mut z.tags);
    let mut attributes: Vec<KeyValue> = z.tags.into_iter().map(|(k, v)| text(&k, v)).collect();
    if let Some(l) = &z.local {
        if let Some(ip) = &l.ip {
            attributes.push(text("net.host.ip", ip.clone()));
        }
        if let Some(p) = l.port {
            attributes.push(kv("net.host.port", any_value::Value::IntValue(p.into())));
        }
    }
    if let Some(r) = &z.remote {
        if !r.service_name.is_empty() {
            attributes.push(text("peer.service", r.service_name.clone()));
        }
        if let Some(ip) = &r.ip {
            attributes.push(text("net.peer.ip", ip.clone()));
        }
        if let Some(p) = r.port {
            attributes.push(kv("net.peer.port", any_value::Value::IntValue(p.into())));
        }
    }
    let start_us = match z.timestamp_us {
        Some(t) => t,
        None => {
            attributes.push(kv(
                "otel.zipkin.absentField.startTime",
                any_value::Value::BoolValue(true),
            ));
            0
        }
    };
    Span {
        trace_id: z.trace_id.to_vec(),
        span_id: z.id.to_vec(),
        parent_span_id: z
            .parent_id
            .filter(|p| *p != z.id)
            .map(|p| p.to_vec())
            .unwrap_or_default(),
        trace_state,
        name: z.name,
        kind: kind as i32,
        start_time_unix_nano: start_us.saturating_mul(1000),
        end_time_unix_nano: start_us.saturating_add(z.duration_us).saturating_mul(1000),
        attributes,
        events: z
            .annotations
            .into_iter()
            .map(|(t, v)| event(t, v))
            .collect(),
        status: Some(status),
        links,
        ..Default::default()
    }
}

/// Groups spans by local service (the resource) and instrumentation scope.
fn to_otlp(spans: Vec<ZSpan>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<String, BTreeMap<(String, String), Vec<Span>>> = BTreeMap::new();
    let mut resource_tags: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for mut z in spans {
        let service = z
            .local
            .as_ref()
            .map(|l| l.service_name.clone())
            .unwrap_or_default();
        let res = resource_tags.entry(service.clone()).or_default();
        for key in RESOURCE_TAGS {
            if let Some(v) = z.tags.remove(*key)
                && *key != "service.name"
            {
                res.entry(key.to_string()).or_insert(v);
            }
        }
        let scope = (
            take_first(&mut z.tags, &SCOPE_NAME_TAGS).unwrap_or_default(),
            take_first(&mut z.tags, &SCOPE_VERSION_TAGS).unwrap_or_default(),
        );
        by_service
            .entry(service)
            .or_default()
            .entry(scope)
            .or_default()
            .push(to_span(z));
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, scopes)| {
            let attributes = resource_tags
                .remove(&service)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| text(&k, v))
                .chain((!service.is_empty()).then(|| text("service.name", service)))
                .collect();
            super::resource_spans(attributes, scopes)
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

// ---- HTTP ----

/// A Zipkin body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `/api/v1/spans`, JSON.
    V1Json,
    /// `/api/v2/spans`, JSON.
    V2Json,
    /// `/api/v2/spans`, protobuf `ListOfSpans`.
    V2Proto,
}

/// Translates one (decompressed) Zipkin body into an OTLP traces request.
pub fn decode(format: Format, body: &[u8]) -> Result<ExportTraceServiceRequest, IngestError> {
    let spans = match format {
        Format::V1Json => from_json_v1(body)?,
        Format::V2Json => from_json_v2(body)?,
        Format::V2Proto => from_proto(body)?,
    };
    Ok(to_otlp(spans))
}

#[derive(Clone, Copy)]
enum Version {
    V1,
    V2,
}

fn error_response(err: &IngestError) -> Response {
    let mut resp = (err.http_status(), err.to_string()).into_response();
    super::add_retry_after(&mut resp);
    resp
}

/// Reads and translates one request into OTLP protobuf.
async fn translate(ingest: &Ingest, version: Version, req: Request) -> Result<Bytes, IngestError> {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".into());
    let protobuf = match (version, mime.as_str()) {
        (_, "application/json") => false,
        (Version::V2, "application/x-protobuf" | "application/protobuf") => true,
        (_, other) => {
            return Err(bad(format!(
                "unsupported Content-Type {other:?} for this endpoint (use application/json{})",
                if matches!(version, Version::V2) {
                    " or application/x-protobuf"
                } else {
                    ""
                }
            )));
        }
    };
    let body = super::read_http_body(ingest.max_request_bytes, Signal::Traces, req).await?;
    let format = match (version, protobuf) {
        (Version::V2, true) => Format::V2Proto,
        (Version::V2, false) => Format::V2Json,
        (Version::V1, _) => Format::V1Json,
    };
    Ok(decode(format, &body)?.encode_to_vec().into())
}

async fn handle(ingest: Arc<Ingest>, version: Version, req: Request) -> Response {
    let otlp = translate(&ingest, version, req).await;
    match ingest.translated(Signal::Traces, otlp).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => error_response(&e),
    }
}

/// The Zipkin routes.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route(
            "/api/v2/spans",
            post(|State(i): State<Arc<Ingest>>, req: Request| handle(i, Version::V2, req)),
        )
        .route(
            "/api/v1/spans",
            post(|State(i): State<Arc<Ingest>>, req: Request| handle(i, Version::V1, req)),
        )
        .with_state(ingest)
}

/// Serves Zipkin on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ingest: Arc<Ingest>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    axum::serve(listener, router(ingest))
        .await
        .map_err(|e| anyhow::anyhow!("Zipkin server on {addr} failed: {e}"))
}

/// Starts the Zipkin server.
pub async fn start(
    config: &crate::config::ZipkinReceiverConfig,
    launch: &mut super::Launch<'_>,
) -> anyhow::Result<()> {
    launch
        .serve("zipkin", config.http, config.max_request_bytes, serve)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn only_span(req: &ExportTraceServiceRequest) -> &Span {
        &req.resource_spans[0].scope_spans[0].spans[0]
    }

    #[test]
    fn v2_json_follows_the_collector_rules() {
        let body = br#"[{
            "traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "parentId": "6b221d5bc9e6496c",
            "name": "get /api", "kind": "SERVER", "timestamp": 1556604172355737, "duration": 1431,
            "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
            "remoteEndpoint": {"serviceName": "frontend", "ipv4": "172.19.0.3", "port": 58648},
            "annotations": [
                {"timestamp": 1556604172355800, "value": "wr"},
                {"timestamp": 1556604172355900, "value": "{\"cache miss\": {\"key\": \"a\", \"size\": 3}}"}
            ],
            "tags": {"http.method": "GET", "error": "boom", "otel.library.name": "lib", "otel.library.version": "1.2"}
        }]"#;
        let req = to_otlp(from_json_v2(body).unwrap());
        let rs = &req.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(res[0].key, "service.name");
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("lib", "1.2")
        );
        let s = only_span(&req);
        assert_eq!(
            s.trace_id[..8],
            [0u8; 8],
            "64-bit trace ids are left-padded"
        );
        assert_eq!(
            s.trace_id[8..],
            [0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f]
        );
        assert_eq!(
            s.parent_span_id,
            vec![0x6b, 0x22, 0x1d, 0x5b, 0xc9, 0xe6, 0x49, 0x6c]
        );
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_431_000);
        let st = s.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (status::StatusCode::Error as i32, "boom")
        );
        assert_eq!(
            attr(s, "http.method"),
            Some(&any_value::Value::StringValue("GET".into()))
        );
        assert!(attr(s, "error").is_none() && attr(s, "otel.library.name").is_none());
        assert_eq!(
            attr(s, "net.host.port"),
            Some(&any_value::Value::IntValue(3306))
        );
        assert_eq!(
            attr(s, "peer.service"),
            Some(&any_value::Value::StringValue("frontend".into()))
        );
        assert_eq!(
            attr(s, "net.peer.ip"),
            Some(&any_value::Value::StringValue("172.19.0.3".into()))
        );
        assert_eq!(s.events[0].name, "wr");
        assert_eq!(s.events[1].name, "cache miss");
        assert_eq!(s.events[1].attributes.len(), 2);
        assert_eq!(s.events[1].time_unix_nano, 1_556_604_172_355_900_000);
    }

    #[test]
    fn link_tags_become_links_and_a_shared_span_has_no_parent_of_itself() {
        let body = br#"[{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "id": "b7ad6b7169203331",
            "parentId": "b7ad6b7169203331", "name": "shared", "kind": "SERVER", "shared": true,
            "tags": {
                "otlp.link.0": "0af7651916cd43dd8448eb211c80319d|00f067aa0ba902b7|k=v|{\"a|b\":1,\"ok\":true}|2",
                "otlp.link.1": "not|a|link",
                "otlp.link.3": "skipped: the numbering stops at the first gap"
            }
        }]"#;
        let s = to_otlp(from_json_v2(body).unwrap())
            .resource_spans
            .remove(0)
            .scope_spans
            .remove(0)
            .spans
            .remove(0);
        assert!(
            s.parent_span_id.is_empty(),
            "a parent equal to the span is none"
        );
        assert_eq!(s.links.len(), 1);
        let l = &s.links[0];
        assert_eq!(l.trace_id[15], 0x9d);
        assert_eq!(l.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(l.trace_state, "k=v");
        assert_eq!(l.dropped_attributes_count, 2);
        assert_eq!(l.attributes.len(), 2, "{:?}", l.attributes);
        assert!(attr(&s, "otlp.link.0").is_none());
        assert_eq!(
            attr(&s, "otlp.link.1"),
            Some(&any_value::Value::StringValue("not|a|link".into())),
            "an unreadable link is kept as an attribute"
        );
        assert!(attr(&s, "otlp.link.3").is_some());
    }

    #[test]
    fn status_tags_kindless_spans_and_missing_timestamps() {
        let body = br#"[
          {"traceId": "1", "id": "2", "name": "a", "tags": {"otel.status_code": "ERROR", "otel.status_description": "bad", "span.kind": "internal"}},
          {"traceId": "1", "id": "3", "name": "b", "timestamp": 10, "localEndpoint": {"serviceName": "s"}}
        ]"#;
        let req = to_otlp(from_json_v2(body).unwrap());
        assert_eq!(
            req.resource_spans.len(),
            2,
            "one resource per local service"
        );
        let a = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(a.kind, span::SpanKind::Internal as i32);
        let st = a.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (status::StatusCode::Error as i32, "bad")
        );
        assert_eq!(
            attr(a, "otel.zipkin.absentField.startTime"),
            Some(&any_value::Value::BoolValue(true))
        );
        let b = &req.resource_spans[1].scope_spans[0].spans[0];
        assert_eq!(b.kind, span::SpanKind::Unspecified as i32);
        assert_eq!(b.start_time_unix_nano, 10_000);
    }

    #[test]
    fn protobuf_list_of_spans() {
        let list = zpb::ListOfSpans {
            spans: vec![zpb::Span {
                trace_id: vec![0xab; 16],
                id: vec![1; 8],
                parent_id: vec![2; 8],
                kind: zpb::Kind::Client as i32,
                name: "call".into(),
                timestamp: 5,
                duration: 7,
                local_endpoint: Some(zpb::Endpoint {
                    service_name: "svc".into(),
                    ipv4: vec![10, 0, 0, 1],
                    ..Default::default()
                }),
                annotations: vec![zpb::Annotation {
                    timestamp: 6,
                    value: "x|{\"k\":1}|2".into(),
                }],
                tags: [("t".to_string(), "v".to_string())].into(),
                ..Default::default()
            }],
        };
        let req = to_otlp(from_proto(&list.encode_to_vec()).unwrap());
        let s = only_span(&req);
        assert_eq!(s.trace_id, vec![0xab; 16]);
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (5_000, 12_000)
        );
        assert_eq!(
            attr(s, "net.host.ip"),
            Some(&any_value::Value::StringValue("10.0.0.1".into()))
        );
        assert_eq!(
            (
                s.events[0].name.as_str(),
                s.events[0].dropped_attributes_count
            ),
            ("x", 2)
        );
        assert_eq!(s.events[0].attributes[0].key, "k");
    }

    #[test]
    fn v1_core_annotations_give_kind_endpoints_and_times() {
        let body = br#"[{
            "traceId": "0000000000000abc", "id": "0000000000000def", "name": "rpc",
            "annotations": [
                {"timestamp": 100, "value": "cs", "endpoint": {"serviceName": "client-svc", "ipv4": "127.0.0.1"}},
                {"timestamp": 150, "value": "retrying", "endpoint": {"serviceName": "client-svc"}},
                {"timestamp": 300, "value": "cr", "endpoint": {"serviceName": "client-svc"}}
            ],
            "binaryAnnotations": [
                {"key": "http.path", "value": "/x", "endpoint": {"serviceName": "client-svc"}},
                {"key": "sa", "value": true, "endpoint": {"serviceName": "server-svc", "port": 8080}}
            ]
        }]"#;
        let req = to_otlp(from_json_v1(body).unwrap());
        let s = only_span(&req);
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (100_000, 300_000)
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "retrying");
        assert_eq!(
            attr(s, "http.path"),
            Some(&any_value::Value::StringValue("/x".into()))
        );
        assert_eq!(
            attr(s, "peer.service"),
            Some(&any_value::Value::StringValue("server-svc".into()))
        );
        assert_eq!(
            attr(s, "net.peer.port"),
            Some(&any_value::Value::IntValue(8080))
        );
        let res = &req.resource_spans[0].resource.as_ref().unwrap().attributes[0];
        assert_eq!(
            res.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("client-svc".into()))
        );
    }

    #[test]
    fn malformed_input_is_refused_with_a_message() {
        let msg = |r: Result<Vec<ZSpan>, IngestError>| r.unwrap_err().to_string();
        assert!(
            msg(from_json_v2(b"[{\"traceId\": \"zz\", \"id\": \"1\"}]"))
                .contains("traceId \"zz\" is not hex")
        );
        assert!(
            msg(from_json_v2(
                b"[{\"traceId\": \"1\", \"id\": \"11111111111111111\"}]"
            ))
            .contains("must be 1 to 16 hex")
        );
        assert!(msg(from_json_v2(b"[{\"id\": \"1\"}]")).contains("invalid Zipkin v2 JSON"));
        // Found by fuzzing: multi-byte characters in an id once panicked while padding.
        assert!(
            msg(from_json_v2(
                "[{\"traceId\": \"é\", \"id\": \"1\"}]".as_bytes()
            ))
            .contains("is not hex")
        );
        assert!(
            msg(from_json_v1(
                "[{\"traceId\": \"1\", \"id\": \"ééé\"}]".as_bytes()
            ))
            .contains("is not hex")
        );
        assert!(msg(from_json_v2(b"{\"not\": \"a list\"}")).contains("invalid Zipkin v2 JSON"));
        assert!(msg(from_json_v1(b"[{\"traceId\": \"1\"")).contains("invalid Zipkin v1 JSON"));
        assert!(msg(from_proto(&[0x0a, 0xff, 0x01])).contains("invalid Zipkin protobuf"));
        let empty_id = zpb::ListOfSpans {
            spans: vec![zpb::Span {
                trace_id: vec![1; 16],
                ..Default::default()
            }],
        };
        assert!(msg(from_proto(&empty_id.encode_to_vec())).contains("id must be 1 to 8 bytes"));
    }
}
