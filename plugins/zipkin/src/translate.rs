//! OTLP → Zipkin v2, following the OpenTelemetry Collector's translator:
//!
//! - `traceId`: 32 hex digits, or 16 when the high half is zero (a 64-bit id); `id` and
//!   `parentId` 16 hex digits. A span without a valid trace or span id is left out and counted.
//! - `kind`: CLIENT, SERVER, PRODUCER, CONSUMER; INTERNAL has no Zipkin kind and is tagged
//!   `span.kind=internal`; UNSPECIFIED is omitted.
//! - `timestamp` / `duration` in microseconds (omitted when zero; a positive duration under
//!   1 µs is 1).
//! - `localEndpoint.serviceName` from the resource's `service.name` (else `faas.name`,
//!   `k8s.deployment.name`, `process.executable.name`, else the configured default);
//!   `net.host.ip`/`net.host.port` become its address. `remoteEndpoint` from `peer.service`,
//!   `net.peer.ip`, `net.peer.port`. Attributes used for endpoints are not repeated as tags.
//! - `tags`: resource attributes, then scope (`otel.library.name`/`otel.library.version`), then
//!   span attributes, all as strings (arrays and maps as JSON); `w3c.tracestate`; status
//!   `otel.status_code` (`OK`/`ERROR`, none when unset) and `otel.status_description`; `error`
//!   is `"true"` for an error status and removed otherwise; links as
//!   `otlp.link.N = traceId|spanId|traceState|{attributes}|dropped`.
//! - `annotations`: an event without attributes is its name; otherwise
//!   `name|{attributes as JSON}|dropped`.
//! - `shared: true` on a SERVER span whose id is also a CLIENT span's in the same trace (the
//!   Zipkin single-span-per-RPC model, as Ferry's Zipkin receiver produces it).

use std::collections::{BTreeMap, HashSet};

use ferry_sdk::otlp::{hex, json_map, value_text as text};
use ferry_sdk::proto::common::KeyValue;
use ferry_sdk::proto::trace::{Span, span, status};
use ferry_sdk::proto::trace_service::ExportTraceServiceRequest;
use serde::Serialize;
use serde_json::Value;

/// The Collector's stand-in for a resource without a service name.
pub const NO_SERVICE_NAME: &str = "<missing service name>";

/// Resource attributes that name the service, in order of preference after `service.name`.
const SERVICE_NAME_FALLBACKS: [&str; 3] = [
    "faas.name",
    "k8s.deployment.name",
    "process.executable.name",
];

/// A Zipkin v2 endpoint.
#[derive(Debug, Serialize, Default, PartialEq)]
pub struct Endpoint {
    #[serde(rename = "serviceName", skip_serializing_if = "String::is_empty")]
    service_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

/// A Zipkin v2 annotation.
#[derive(Debug, Serialize)]
pub struct Annotation {
    timestamp: u64,
    value: String,
}

/// A Zipkin v2 span, as the JSON API takes it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
    local_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
}

/// The spans of one batch, and how many could not be translated.
pub struct Translated {
    /// Spans to send.
    pub spans: Vec<ZipkinSpan>,
    /// Spans left out (no valid trace or span id).
    pub invalid: u32,
}

fn trace_id(id: &[u8]) -> Option<String> {
    let id: &[u8; 16] = id.try_into().ok()?;
    if id.iter().all(|b| *b == 0) {
        return None;
    }
    Some(if id[..8].iter().all(|b| *b == 0) {
        hex(&id[8..])
    } else {
        hex(id)
    })
}

fn span_id(id: &[u8]) -> Option<String> {
    let id: &[u8; 8] = id.try_into().ok()?;
    (id.iter().any(|b| *b != 0)).then(|| hex(id))
}

fn tags_of(kvs: &[KeyValue], into: &mut BTreeMap<String, String>) {
    for kv in kvs {
        into.insert(kv.key.clone(), text(&kv.value));
    }
}

/// Fills an endpoint from (and removes from `tags`) the service, ip and port keys.
fn endpoint(
    tags: &mut BTreeMap<String, String>,
    service_name: String,
    ip_key: &str,
    port_key: &str,
) -> Option<Endpoint> {
    let mut ep = Endpoint {
        service_name,
        ..Default::default()
    };
    if let Some(ip) = tags.remove(ip_key) {
        if ip.contains(':') {
            ep.ipv6 = Some(ip);
        } else {
            ep.ipv4 = Some(ip);
        }
    }
    if let Some(port) = tags.remove(port_key) {
        ep.port = port.parse().ok().filter(|p| *p != 0);
    }
    (!ep.service_name.is_empty() || ep.ipv4.is_some() || ep.ipv6.is_some()).then_some(ep)
}

fn kind(k: i32) -> Option<&'static str> {
    match span::SpanKind::try_from(k).unwrap_or(span::SpanKind::Unspecified) {
        span::SpanKind::Client => Some("CLIENT"),
        span::SpanKind::Server => Some("SERVER"),
        span::SpanKind::Producer => Some("PRODUCER"),
        span::SpanKind::Consumer => Some("CONSUMER"),
        span::SpanKind::Internal | span::SpanKind::Unspecified => None,
    }
}

fn annotation(e: &span::Event) -> Annotation {
    let value = if e.attributes.is_empty() && e.dropped_attributes_count == 0 {
        e.name.clone()
    } else {
        format!(
            "{}|{}|{}",
            e.name,
            Value::Object(json_map(&e.attributes)),
            e.dropped_attributes_count
        )
    };
    Annotation {
        timestamp: e.time_unix_nano / 1000,
        value,
    }
}

fn link_tag(l: &span::Link) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        hex(&l.trace_id),
        hex(&l.span_id),
        l.trace_state,
        Value::Object(json_map(&l.attributes)),
        l.dropped_attributes_count
    )
}

fn micros_between(start: u64, end: u64) -> u64 {
    let d = end.saturating_sub(start);
    if d > 0 && d < 1000 { 1 } else { d / 1000 }
}

fn convert(
    s: &Span,
    service: &str,
    common_tags: &BTreeMap<String, String>,
    shared: bool,
) -> Option<ZipkinSpan> {
    let trace_id = trace_id(&s.trace_id)?;
    let id = span_id(&s.span_id)?;
    let mut tags = common_tags.clone();
    tags_of(&s.attributes, &mut tags);
    if !s.trace_state.is_empty() {
        tags.insert("w3c.tracestate".into(), s.trace_state.clone());
    }
    if s.kind == span::SpanKind::Internal as i32 {
        tags.insert("span.kind".into(), "internal".into());
    }
    let local = endpoint(
        &mut tags,
        service.to_string(),
        "net.host.ip",
        "net.host.port",
    )
    .unwrap_or_default();
    let peer = tags.remove("peer.service").unwrap_or_default();
    let remote = endpoint(&mut tags, peer, "net.peer.ip", "net.peer.port");
    let st = s.status.clone().unwrap_or_default();
    let code = status::StatusCode::try_from(st.code).unwrap_or(status::StatusCode::Unset);
    if code == status::StatusCode::Error {
        tags.insert("error".into(), "true".into());
    } else {
        tags.remove("error");
    }
    if code != status::StatusCode::Unset {
        let name = if code == status::StatusCode::Error {
            "ERROR"
        } else {
            "OK"
        };
        tags.insert("otel.status_code".into(), name.into());
        if !st.message.is_empty() {
            tags.insert("otel.status_description".into(), st.message.clone());
        }
    }
    for (i, l) in s.links.iter().enumerate() {
        tags.insert(format!("otlp.link.{i}"), link_tag(l));
    }
    Some(ZipkinSpan {
        trace_id,
        id,
        parent_id: span_id(&s.parent_span_id),
        name: s.name.clone(),
        kind: kind(s.kind),
        timestamp: (s.start_time_unix_nano / 1000 > 0).then_some(s.start_time_unix_nano / 1000),
        duration: (s.end_time_unix_nano != 0)
            .then(|| micros_between(s.start_time_unix_nano, s.end_time_unix_nano))
            .filter(|d| *d > 0),
        local_endpoint: local,
        remote_endpoint: remote,
        annotations: s.events.iter().map(annotation).collect(),
        tags,
        shared,
    })
}

/// Translates one batch; `default_service` names spans whose resource names no service.
pub fn to_zipkin(req: &ExportTraceServiceRequest, default_service: &str) -> Translated {
    // A client and a server span with the same id are one Zipkin RPC span: the server half
    // is the shared one.
    let client_ids: HashSet<(&[u8], &[u8])> = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .filter(|s| s.kind == span::SpanKind::Client as i32)
        .map(|s| (&s.trace_id[..], &s.span_id[..]))
        .collect();
    let mut out = Translated {
        spans: Vec::new(),
        invalid: 0,
    };
    for rs in &req.resource_spans {
        let mut resource_tags = BTreeMap::new();
        tags_of(
            rs.resource.as_ref().map_or(&[][..], |r| &r.attributes),
            &mut resource_tags,
        );
        let service = resource_tags
            .remove("service.name")
            .or_else(|| {
                SERVICE_NAME_FALLBACKS
                    .iter()
                    .find_map(|k| resource_tags.remove(*k))
            })
            .unwrap_or_else(|| default_service.to_string());
        for ss in &rs.scope_spans {
            let mut common = resource_tags.clone();
            if let Some(scope) = &ss.scope {
                if !scope.name.is_empty() {
                    common.insert("otel.library.name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    common.insert("otel.library.version".into(), scope.version.clone());
                }
            }
            for s in &ss.spans {
                let shared = s.kind == span::SpanKind::Server as i32
                    && client_ids.contains(&(&s.trace_id[..], &s.span_id[..]));
                match convert(s, &service, &common, shared) {
                    Some(z) => out.spans.push(z),
                    None => out.invalid += 1,
                }
            }
        }
    }
    out
}
