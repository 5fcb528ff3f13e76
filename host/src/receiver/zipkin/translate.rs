//! Zipkin spans to OTLP, following the OpenTelemetry Collector's rules.

use std::collections::BTreeMap;

use ferry_proto::common::{KeyValue, any_value};
use ferry_proto::trace::{Span, Status, span, status};
use ferry_proto::trace_service::ExportTraceServiceRequest;

use super::decode::*;

use crate::receiver::otlp_build::kv;

pub(super) fn text(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

pub(super) fn json_attrs(map: serde_json::Map<String, serde_json::Value>) -> Vec<KeyValue> {
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
pub(super) fn event(ts_us: u64, value: String) -> span::Event {
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
pub(super) fn take_links(tags: &mut BTreeMap<String, String>) -> Vec<span::Link> {
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

pub(super) fn parse_link(value: &str) -> Option<span::Link> {
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
pub(super) const RESOURCE_TAGS: &[&str] = &[
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

pub(super) const SCOPE_NAME_TAGS: [&str; 2] = ["otel.scope.name", "otel.library.name"];
pub(super) const SCOPE_VERSION_TAGS: [&str; 2] = ["otel.scope.version", "otel.library.version"];

pub(super) fn take_first(tags: &mut BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    let mut found = None;
    for k in keys {
        if let Some(v) = tags.remove(*k) {
            found.get_or_insert(v);
        }
    }
    found
}

pub(super) fn to_span(mut z: ZSpan) -> Span {
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
pub(super) fn to_otlp(spans: Vec<ZSpan>) -> ExportTraceServiceRequest {
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
            crate::receiver::otlp_build::resource_spans(attributes, scopes)
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
