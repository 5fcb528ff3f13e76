//! OpenCensus spans to OTLP.

use ferry_proto::common::any_value;
use ferry_proto::opencensus as oc;
use ferry_proto::{resource, trace, trace_service};

use crate::receiver::otlp_build::kv;

use super::*;

/// OTLP span kind: OpenCensus knows only SERVER and CLIENT; other kinds travel in a
/// `span.kind` attribute, which is consumed.
pub(super) fn span_kind(kind: i32, attrs: &mut Option<oc::Attributes>) -> trace::span::SpanKind {
    use trace::span::SpanKind as K;
    match kind {
        1 => K::Server,
        2 => K::Client,
        0 => {
            let Some(a) = attrs.as_mut() else {
                return K::Unspecified;
            };
            let named = match a
                .attribute_map
                .get("span.kind")
                .and_then(|v| v.value.as_ref())
            {
                Some(oc::attribute_value::Value::StringValue(s)) => match s.value.as_str() {
                    "consumer" => K::Consumer,
                    "producer" => K::Producer,
                    "internal" => K::Internal,
                    _ => return K::Unspecified,
                },
                _ => return K::Unspecified,
            };
            a.attribute_map.remove("span.kind");
            named
        }
        _ => K::Unspecified,
    }
}

/// OTLP status: OpenCensus code 0 is OK (unset), any other an error; an integer
/// `otel.status_code` attribute (set by the reverse translation) wins and is consumed.
pub(super) fn span_status(
    status: Option<oc::Status>,
    attrs: &mut Option<oc::Attributes>,
) -> Option<trace::Status> {
    let s = status?;
    let mut code = if s.code == 0 {
        trace::status::StatusCode::Unset as i32
    } else {
        trace::status::StatusCode::Error as i32
    };
    if let Some(a) = attrs.as_mut()
        && let Some(v) = a.attribute_map.remove("otel.status_code")
    {
        code = match v.value {
            Some(oc::attribute_value::Value::IntValue(i)) => i32::try_from(i).unwrap_or(0),
            _ => 0,
        };
    }
    Some(trace::Status {
        code,
        message: s.message,
    })
}

pub(super) fn events(time_events: Option<oc::TimeEvents>) -> (Vec<trace::span::Event>, u32) {
    let Some(te) = time_events else {
        return (Vec::new(), 0);
    };
    let dropped = te
        .dropped_annotations_count
        .max(0)
        .saturating_add(te.dropped_message_events_count.max(0)) as u32;
    let events = te
        .time_event
        .into_iter()
        .map(|e| {
            let time_unix_nano = nanos(e.time.as_ref());
            match e.value {
                Some(oc::time_event::Value::Annotation(a)) => {
                    let (attributes, dropped_attributes_count) = attributes(a.attributes);
                    trace::span::Event {
                        time_unix_nano,
                        name: a.description.map(|d| d.value).unwrap_or_default(),
                        attributes,
                        dropped_attributes_count,
                    }
                }
                Some(oc::time_event::Value::MessageEvent(m)) => {
                    let kind = match m.r#type {
                        1 => "SENT",
                        2 => "RECEIVED",
                        _ => "TYPE_UNSPECIFIED",
                    };
                    let int = |n: u64| any_value::Value::IntValue(n as i64);
                    trace::span::Event {
                        time_unix_nano,
                        name: "message".into(),
                        attributes: vec![
                            kv("message.type", string(kind)),
                            kv("messaging.message_id", int(m.id)),
                            kv(
                                "messaging.message_payload_size_bytes",
                                int(m.uncompressed_size),
                            ),
                            kv(
                                "messaging.message_payload_compressed_size_bytes",
                                int(m.compressed_size),
                            ),
                        ],
                        dropped_attributes_count: 0,
                    }
                }
                None => trace::span::Event {
                    time_unix_nano,
                    name: "An unknown OpenCensus TimeEvent type was detected when translating"
                        .into(),
                    ..Default::default()
                },
            }
        })
        .collect();
    (events, dropped)
}

pub(super) fn links(links: Option<oc::Links>) -> (Vec<trace::span::Link>, u32) {
    let Some(l) = links else {
        return (Vec::new(), 0);
    };
    let links = l
        .link
        .into_iter()
        .map(|l| {
            let (attributes, dropped_attributes_count) = attributes(l.attributes);
            trace::span::Link {
                trace_id: l.trace_id,
                span_id: l.span_id,
                trace_state: tracestate(l.tracestate),
                attributes,
                dropped_attributes_count,
                ..Default::default()
            }
        })
        .collect();
    (links, l.dropped_links_count.max(0) as u32)
}

/// Why a span's ids make it untranslatable, if they do.
pub(super) fn bad_ids(s: &oc::Span) -> Option<String> {
    if s.trace_id.len() != 16 || s.trace_id.iter().all(|b| *b == 0) {
        return Some(format!(
            "trace_id must be 16 non-zero bytes, got {}",
            s.trace_id.len()
        ));
    }
    if s.span_id.len() != 8 || s.span_id.iter().all(|b| *b == 0) {
        return Some(format!(
            "span_id must be 8 non-zero bytes, got {}",
            s.span_id.len()
        ));
    }
    if !s.parent_span_id.is_empty() && s.parent_span_id.len() != 8 {
        return Some(format!(
            "parent_span_id must be empty or 8 bytes, got {}",
            s.parent_span_id.len()
        ));
    }
    None
}

pub(super) fn span(mut s: oc::Span) -> trace::Span {
    let kind = span_kind(s.kind, &mut s.attributes) as i32;
    let status = span_status(s.status.take(), &mut s.attributes);
    let (mut attributes, dropped_attributes_count) = attributes(s.attributes.take());
    if let Some(same) = s.same_process_as_parent_span {
        attributes.push(kv(
            "opencensus.same_process_as_parent_span",
            any_value::Value::BoolValue(same.value),
        ));
    }
    let (events, dropped_events_count) = events(s.time_events.take());
    let (links, dropped_links_count) = links(s.links.take());
    trace::Span {
        trace_id: s.trace_id,
        span_id: s.span_id,
        trace_state: tracestate(s.tracestate),
        parent_span_id: s.parent_span_id,
        name: s.name.map(|n| n.value).unwrap_or_default(),
        kind,
        start_time_unix_nano: nanos(s.start_time.as_ref()),
        end_time_unix_nano: nanos(s.end_time.as_ref()),
        attributes,
        dropped_attributes_count,
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status,
        ..Default::default()
    }
}

pub(super) fn resource_spans(
    resource: resource::Resource,
    spans: Vec<trace::Span>,
) -> trace::ResourceSpans {
    trace::ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![trace::ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Translates items and groups them by resource (see [`crate::receiver::otlp_build::group_by_own_resource`]); the
/// shared group takes the stream's resource.
pub(super) fn by_resource<T, O, G>(
    state: &StreamState,
    items: Vec<T>,
    own_resource: impl Fn(&T) -> Option<oc::Resource>,
    mut translate: impl FnMut(T) -> Option<O>,
    group: impl Fn(resource::Resource, Vec<O>) -> G,
) -> Vec<G> {
    let node = state.node.as_ref();
    let translated = items.into_iter().filter_map(|item| {
        let own = own_resource(&item);
        translate(item).map(|out| (out, own.map(Some)))
    });
    crate::receiver::otlp_build::group_by_own_resource(translated, state.resource.clone())
        .into_iter()
        .map(|(res, out)| group(otlp_resource(node, res.as_ref()), out))
        .collect()
}

/// Translates the spans of one message, sent by `state`'s node.
pub fn traces_to_otlp(
    state: &StreamState,
    spans: Vec<oc::Span>,
    dropped: &mut Dropped,
) -> trace_service::ExportTraceServiceRequest {
    let translate = |s: oc::Span| match bad_ids(&s) {
        Some(why) => {
            dropped.add(1, || why);
            None
        }
        None => Some(span(s)),
    };
    trace_service::ExportTraceServiceRequest {
        resource_spans: by_resource(
            state,
            spans,
            |s| s.resource.clone(),
            translate,
            resource_spans,
        ),
    }
}
