//! OpenCensus agent receiver (default `127.0.0.1:55678`): the bidirectional
//! `opencensus.proto.agent.trace.v1.TraceService/Export` and
//! `opencensus.proto.agent.metrics.v1.MetricsService/Export` streams.
//!
//! A stream's first message must carry the `Node`; later messages may leave it (and the
//! resource) out and inherit the last one sent. Translation to OTLP follows the OpenTelemetry
//! Collector's `pkg/translator/opencensus` rules. Like the Collector, the agent answers with no
//! messages: it ends the stream with OK once the client half-closes, or with an error status
//! (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...) at the first message it cannot accept.

mod service;
mod translate_metrics;
mod translate_traces;

use std::collections::BTreeMap;

use ferry_proto::common::{KeyValue, any_value};
use ferry_proto::opencensus as oc;
use ferry_proto::resource;
use ferry_proto::wkt::Timestamp;
use serde::{Deserialize, Serialize};

use crate::receiver::otlp_build::kv;

pub use service::*;
pub use translate_metrics::metrics_to_otlp;
pub use translate_traces::traces_to_otlp;

/// Why part of a request could not be translated.
#[derive(Debug, Default, PartialEq)]
pub struct Dropped {
    /// Items (spans or data points) left out.
    pub items: u32,
    /// The first reason.
    pub reason: Option<String>,
}

impl Dropped {
    pub(super) fn add(&mut self, items: usize, reason: impl FnOnce() -> String) {
        self.items = self
            .items
            .saturating_add(items.try_into().unwrap_or(u32::MAX));
        if self.reason.is_none() {
            self.reason = Some(reason());
        }
    }
}

/// What a stream remembers between messages.
#[derive(Debug, Default)]
pub struct StreamState {
    pub(super) node: Option<oc::Node>,
    pub(super) resource: Option<oc::Resource>,
}

impl StreamState {
    /// Takes in one message's node and resource; the first message must have a node.
    pub(super) fn update(
        &mut self,
        node: Option<oc::Node>,
        resource: Option<oc::Resource>,
    ) -> Result<(), String> {
        match (node, &self.node) {
            (Some(n), _) => self.node = Some(n),
            (None, Some(_)) => {}
            (None, None) => {
                return Err(
                    "protocol violation: the first message of an Export stream must carry a node"
                        .into(),
                );
            }
        }
        if resource.is_some() {
            self.resource = resource;
        }
        Ok(())
    }
}

pub(super) fn string(s: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

/// Nanoseconds since the epoch; absent or unrepresentable (before 1970, past 2554) is 0.
pub(super) fn nanos(ts: Option<&Timestamp>) -> u64 {
    let Some(ts) = ts else { return 0 };
    let (Ok(secs), Ok(frac)) = (u64::try_from(ts.seconds), u64::try_from(ts.nanos)) else {
        return 0;
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac.min(999_999_999)))
        .unwrap_or(0)
}

/// RFC 3339 with as many fractional digits as needed, like Go's `time.RFC3339Nano`.
pub(super) fn rfc3339(ts: &Timestamp) -> String {
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let frac = ts.nanos.clamp(0, 999_999_999);
    if frac > 0 {
        let digits = format!(".{frac:09}");
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// `telemetry.sdk.language` for `LibraryInfo.Language`.
pub(super) fn language(code: i32) -> Option<&'static str> {
    const NAMES: [&str; 10] = [
        "cpp", "dotnet", "erlang", "go", "java", "nodejs", "php", "python", "ruby", "webjs",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|c| c.checked_sub(1))
        .and_then(|i| NAMES.get(i).copied())
}

/// OTLP resource attributes from a node and a resource: labels and node attributes first, then
/// the node's own fields, which win.
pub(super) fn resource_attributes(
    node: Option<&oc::Node>,
    res: Option<&oc::Resource>,
) -> Vec<KeyValue> {
    let mut attrs: BTreeMap<String, any_value::Value> = BTreeMap::new();
    if let Some(r) = res {
        for (k, v) in &r.labels {
            let k = if k == "cloud.zone" {
                "cloud.availability_zone"
            } else {
                k
            };
            attrs.insert(k.into(), string(v));
        }
    }
    if let Some(n) = node {
        for (k, v) in &n.attributes {
            attrs.insert(k.clone(), string(v));
        }
        if let Some(s) = n.service_info.as_ref().filter(|s| !s.name.is_empty()) {
            attrs.insert("service.name".into(), string(&s.name));
        }
        if let Some(id) = &n.identifier {
            if let Some(ts) = &id.start_timestamp {
                attrs.insert("opencensus.starttime".into(), string(rfc3339(ts)));
            }
            if !id.host_name.is_empty() {
                attrs.insert("host.name".into(), string(&id.host_name));
            }
            if id.pid != 0 {
                attrs.insert(
                    "process.pid".into(),
                    any_value::Value::IntValue(id.pid.into()),
                );
            }
        }
        if let Some(lib) = &n.library_info {
            if !lib.core_library_version.is_empty() {
                attrs.insert(
                    "telemetry.sdk.version".into(),
                    string(&lib.core_library_version),
                );
            }
            if !lib.exporter_version.is_empty() {
                attrs.insert(
                    "opencensus.exporterversion".into(),
                    string(&lib.exporter_version),
                );
            }
            if let Some(lang) = language(lib.language) {
                attrs.insert("telemetry.sdk.language".into(), string(lang));
            }
        }
    }
    if let Some(r) = res.filter(|r| !r.r#type.is_empty()) {
        attrs.insert("opencensus.resourcetype".into(), string(&r.r#type));
    }
    attrs.into_iter().map(|(k, v)| kv(k, v)).collect()
}

pub(super) fn otlp_resource(
    node: Option<&oc::Node>,
    res: Option<&oc::Resource>,
) -> resource::Resource {
    resource::Resource {
        attributes: resource_attributes(node, res),
        ..Default::default()
    }
}

pub(super) fn attributes(attrs: Option<oc::Attributes>) -> (Vec<KeyValue>, u32) {
    let Some(a) = attrs else {
        return (Vec::new(), 0);
    };
    let kvs = a
        .attribute_map
        .into_iter()
        .map(|(k, v)| {
            use oc::attribute_value::Value as V;
            let value = match v.value {
                Some(V::StringValue(s)) => string(s.value),
                Some(V::IntValue(i)) => any_value::Value::IntValue(i),
                Some(V::BoolValue(b)) => any_value::Value::BoolValue(b),
                Some(V::DoubleValue(d)) => any_value::Value::DoubleValue(d),
                None => string("<Unknown OpenCensus attribute value type>"),
            };
            kv(k, value)
        })
        .collect();
    (kvs, a.dropped_attributes_count.max(0) as u32)
}

pub(super) fn tracestate(ts: Option<oc::Tracestate>) -> String {
    ts.map(|t| {
        t.entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect::<Vec<_>>()
            .join(",")
    })
    .unwrap_or_default()
}

/// `[receivers.opencensus]`: the OpenCensus agent's gRPC export streams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCensusReceiverConfig {
    /// Listen address; the agent's usual `127.0.0.1:55678` unless set.
    #[serde(default = "default_addr")]
    pub grpc: std::net::SocketAddr,
    /// Largest stream message accepted.
    #[serde(
        default = "crate::receiver::default_max_request",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub max_request_bytes: usize,
}

fn default_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 55678))
}

impl crate::receiver::Receiver for OpenCensusReceiverConfig {
    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    async fn start(&self, launch: &mut crate::receiver::Launch<'_>) -> anyhow::Result<()> {
        launch
            .serve("opencensus", self.grpc, self.max_request_bytes, serve)
            .await
    }
}

/// The two export streams, each message tried first and after a first one.
pub fn decoders() -> Vec<(&'static str, crate::receiver::decoders::Decoder)> {
    // An input is tried as the first message of a stream and, to reach the translation of
    // the node-less messages that follow, after a first message with an (empty) node.
    const FIRST: &[u8] = b"\x0a\x00";
    vec![
        ("opencensus_traces", |b| {
            let _ = decode_stream::<TraceStream>(&[b]);
            let _ = decode_stream::<TraceStream>(&[FIRST, b]);
        }),
        ("opencensus_metrics", |b| {
            let _ = decode_stream::<MetricStream>(&[b]);
            let _ = decode_stream::<MetricStream>(&[FIRST, b]);
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::translate_traces::*;
    use super::*;
    use ferry_proto::wkt::{BoolValue, DoubleValue, Int64Value};
    use ferry_proto::{metrics, trace, trace_service};
    use prost::Message;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn node() -> oc::Node {
        oc::Node {
            identifier: Some(oc::ProcessIdentifier {
                host_name: "box-1".into(),
                pid: 4242,
                start_timestamp: ts(1_700_000_000, 120_000_000),
            }),
            library_info: Some(oc::LibraryInfo {
                language: 8,
                exporter_version: "0.0.1".into(),
                core_library_version: "0.11.4".into(),
            }),
            service_info: Some(oc::ServiceInfo {
                name: "checkout".into(),
            }),
            attributes: [("team".to_string(), "payments".to_string())].into(),
        }
    }

    fn attr_value(v: oc::attribute_value::Value) -> oc::AttributeValue {
        oc::AttributeValue { value: Some(v) }
    }

    fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn s(v: &str) -> any_value::Value {
        string(v)
    }

    #[test]
    fn timestamps_format_like_go_rfc3339nano() {
        assert_eq!(
            rfc3339(&Timestamp {
                seconds: 1_700_000_000,
                nanos: 120_000_000
            }),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339(&Timestamp {
                seconds: 0,
                nanos: 0
            }),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(&Timestamp {
                seconds: 951_782_400,
                nanos: 5
            }),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(nanos(ts(-1, 0).as_ref()), 0);
        assert_eq!(nanos(ts(i64::MAX, 0).as_ref()), 0);
        assert_eq!(nanos(ts(2, 7).as_ref()), 2_000_000_007);
    }

    #[test]
    fn spans_translate_like_the_collector() {
        use oc::attribute_value::Value as V;
        let span = oc::Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            parent_span_id: vec![9; 8],
            tracestate: Some(oc::Tracestate {
                entries: vec![
                    oc::TracestateEntry {
                        key: "a".into(),
                        value: "1".into(),
                    },
                    oc::TracestateEntry {
                        key: "b".into(),
                        value: "2".into(),
                    },
                ],
            }),
            name: Some(oc::TruncatableString {
                value: "GET /cart".into(),
                truncated_byte_count: 0,
            }),
            kind: 0,
            start_time: ts(10, 5),
            end_time: ts(11, 0),
            attributes: Some(oc::Attributes {
                attribute_map: [
                    (
                        "span.kind".to_string(),
                        attr_value(V::StringValue(oc::TruncatableString {
                            value: "producer".into(),
                            truncated_byte_count: 0,
                        })),
                    ),
                    ("http.status_code".to_string(), attr_value(V::IntValue(503))),
                    ("cache.hit".to_string(), attr_value(V::BoolValue(false))),
                    ("ratio".to_string(), attr_value(V::DoubleValue(0.5))),
                    ("odd".to_string(), oc::AttributeValue { value: None }),
                ]
                .into(),
                dropped_attributes_count: 3,
            }),
            time_events: Some(oc::TimeEvents {
                time_event: vec![
                    oc::TimeEvent {
                        time: ts(10, 500),
                        value: Some(oc::time_event::Value::Annotation(oc::Annotation {
                            description: Some(oc::TruncatableString {
                                value: "cache miss".into(),
                                truncated_byte_count: 0,
                            }),
                            attributes: Some(oc::Attributes {
                                attribute_map: [("key".to_string(), attr_value(V::IntValue(7)))]
                                    .into(),
                                dropped_attributes_count: 1,
                            }),
                        })),
                    },
                    oc::TimeEvent {
                        time: ts(10, 600),
                        value: Some(oc::time_event::Value::MessageEvent(oc::MessageEvent {
                            r#type: 2,
                            id: 5,
                            uncompressed_size: 100,
                            compressed_size: 40,
                        })),
                    },
                ],
                dropped_annotations_count: 1,
                dropped_message_events_count: 2,
            }),
            links: Some(oc::Links {
                link: vec![oc::Link {
                    trace_id: vec![7; 16],
                    span_id: vec![8; 8],
                    r#type: 1,
                    attributes: None,
                    tracestate: None,
                }],
                dropped_links_count: 4,
            }),
            status: Some(oc::Status {
                code: 14,
                message: "unavailable".into(),
            }),
            resource: None,
            same_process_as_parent_span: Some(BoolValue { value: true }),
            child_span_count: None,
        };
        let mut own = span.clone();
        own.span_id = vec![2; 8];
        own.resource = Some(oc::Resource {
            r#type: "k8s".into(),
            labels: [("cloud.zone".to_string(), "eu-1a".to_string())].into(),
        });
        let mut bad = span.clone();
        bad.trace_id = vec![1; 8];

        let mut state = StreamState::default();
        state
            .update(
                Some(node()),
                Some(oc::Resource {
                    r#type: "host".into(),
                    labels: [("service.name".to_string(), "overridden".to_string())].into(),
                }),
            )
            .unwrap();
        let mut dropped = Dropped::default();
        let out = traces_to_otlp(&state, vec![span, own, bad], &mut dropped);
        assert_eq!(dropped.items, 1);
        assert!(dropped.reason.unwrap().contains("trace_id must be 16"));
        assert_eq!(out.resource_spans.len(), 2);

        let r = &out.resource_spans[0].resource.as_ref().unwrap().attributes;
        assert_eq!(find(r, "service.name"), Some(&s("checkout")));
        assert_eq!(find(r, "host.name"), Some(&s("box-1")));
        assert_eq!(
            find(r, "process.pid"),
            Some(&any_value::Value::IntValue(4242))
        );
        assert_eq!(find(r, "telemetry.sdk.language"), Some(&s("python")));
        assert_eq!(find(r, "telemetry.sdk.version"), Some(&s("0.11.4")));
        assert_eq!(find(r, "opencensus.exporterversion"), Some(&s("0.0.1")));
        assert_eq!(
            find(r, "opencensus.starttime"),
            Some(&s("2023-11-14T22:13:20.12Z"))
        );
        assert_eq!(find(r, "opencensus.resourcetype"), Some(&s("host")));
        assert_eq!(find(r, "team"), Some(&s("payments")));

        let o = &out.resource_spans[1].resource.as_ref().unwrap().attributes;
        assert_eq!(find(o, "cloud.availability_zone"), Some(&s("eu-1a")));
        assert_eq!(find(o, "opencensus.resourcetype"), Some(&s("k8s")));
        assert_eq!(find(o, "service.name"), Some(&s("checkout")));
        assert_eq!(
            out.resource_spans[1].scope_spans[0].spans[0].span_id,
            vec![2; 8]
        );

        let t = &out.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(t.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(t.parent_span_id, vec![9; 8]);
        assert_eq!(t.trace_state, "a=1,b=2");
        assert_eq!(t.name, "GET /cart");
        assert_eq!(t.kind, trace::span::SpanKind::Producer as i32);
        assert_eq!(t.start_time_unix_nano, 10_000_000_005);
        assert_eq!(t.end_time_unix_nano, 11_000_000_000);
        assert!(find(&t.attributes, "span.kind").is_none(), "consumed");
        assert_eq!(
            find(&t.attributes, "http.status_code"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(
            find(&t.attributes, "cache.hit"),
            Some(&any_value::Value::BoolValue(false))
        );
        assert_eq!(
            find(&t.attributes, "ratio"),
            Some(&any_value::Value::DoubleValue(0.5))
        );
        assert_eq!(
            find(&t.attributes, "odd"),
            Some(&s("<Unknown OpenCensus attribute value type>"))
        );
        assert_eq!(
            find(&t.attributes, "opencensus.same_process_as_parent_span"),
            Some(&any_value::Value::BoolValue(true))
        );
        assert_eq!(t.dropped_attributes_count, 3);
        let status = t.status.as_ref().unwrap();
        assert_eq!(status.code, trace::status::StatusCode::Error as i32);
        assert_eq!(status.message, "unavailable");
        assert_eq!(t.dropped_events_count, 3);
        assert_eq!(t.events[0].name, "cache miss");
        assert_eq!(t.events[0].time_unix_nano, 10_000_000_500);
        assert_eq!(t.events[0].dropped_attributes_count, 1);
        assert_eq!(
            find(&t.events[0].attributes, "key"),
            Some(&any_value::Value::IntValue(7))
        );
        assert_eq!(t.events[1].name, "message");
        assert_eq!(
            find(&t.events[1].attributes, "message.type"),
            Some(&s("RECEIVED"))
        );
        assert_eq!(
            find(
                &t.events[1].attributes,
                "messaging.message_payload_size_bytes"
            ),
            Some(&any_value::Value::IntValue(100))
        );
        assert_eq!(t.links[0].trace_id, vec![7; 16]);
        assert_eq!(t.dropped_links_count, 4);
    }

    #[test]
    fn status_ok_is_unset_and_otel_status_code_wins() {
        let mut attrs = Some(oc::Attributes {
            attribute_map: [(
                "otel.status_code".to_string(),
                attr_value(oc::attribute_value::Value::IntValue(1)),
            )]
            .into(),
            dropped_attributes_count: 0,
        });
        let ok = Some(oc::Status {
            code: 0,
            message: String::new(),
        });
        assert_eq!(span_status(ok.clone(), &mut None).unwrap().code, 0);
        assert_eq!(span_status(ok, &mut attrs).unwrap().code, 1);
        assert!(attrs.unwrap().attribute_map.is_empty());
        assert!(span_status(None, &mut None).is_none());
        assert_eq!(span_kind(1, &mut None), trace::span::SpanKind::Server);
        assert_eq!(span_kind(2, &mut None), trace::span::SpanKind::Client);
        assert_eq!(span_kind(9, &mut None), trace::span::SpanKind::Unspecified);
    }

    #[test]
    fn the_node_comes_once_per_stream() {
        let first = oc::ExportTraceServiceRequest {
            node: Some(node()),
            spans: vec![],
            resource: Some(oc::Resource {
                r#type: "global".into(),
                labels: Default::default(),
            }),
        }
        .encode_to_vec();
        let span = oc::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let later = oc::ExportTraceServiceRequest {
            node: None,
            spans: vec![span],
            resource: None,
        }
        .encode_to_vec();
        let out = decode_stream::<TraceStream>(&[&first, &later]).unwrap();
        let req = trace_service::ExportTraceServiceRequest::decode(&out[1][..]).unwrap();
        let r = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
        assert_eq!(find(r, "service.name"), Some(&s("checkout")));
        assert_eq!(find(r, "opencensus.resourcetype"), Some(&s("global")));

        let err = decode_stream::<TraceStream>(&[&later]).unwrap_err();
        assert!(err.contains("first message"), "{err}");
        let err = decode_stream::<MetricStream>(&[b"\x0a\x05abc"]).unwrap_err();
        assert!(err.contains("ExportMetricsServiceRequest"), "{err}");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let traces = std::fs::read(fuzz.join("opencensus_traces/seed-python-export")).unwrap();
        let metrics = std::fs::read(fuzz.join("opencensus_metrics/seed-python-export")).unwrap();
        assert!(decode_stream::<TraceStream>(&[&traces]).is_ok());
        assert!(decode_stream::<MetricStream>(&[&metrics]).is_ok());
        let cases: [(&str, Vec<u8>); 4] = [
            ("truncated", traces[..traces.len() / 2].to_vec()),
            // Field 2 (spans) as a varint instead of a message.
            ("wrong wire type", vec![0x0a, 0x00, 0x10, 0x01]),
            // A node claiming 2^32 bytes.
            ("absurd length", vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x10]),
            // The service name is not UTF-8.
            ("bad utf-8", vec![0x0a, 0x05, 0x1a, 0x03, 0x0a, 0x01, 0xff]),
        ];
        for (what, bytes) in cases {
            let err = decode_stream::<TraceStream>(&[&bytes]).unwrap_err();
            assert!(err.contains("invalid OpenCensus"), "{what}: {err}");
        }
        let cut = &metrics[..metrics.len() - 3];
        let err = decode_stream::<MetricStream>(&[cut]).unwrap_err();
        assert!(err.contains("ExportMetricsServiceRequest"), "{err}");
    }

    fn series(labels: &[Option<&str>], points: Vec<oc::Point>) -> oc::TimeSeries {
        oc::TimeSeries {
            start_timestamp: ts(100, 0),
            label_values: labels
                .iter()
                .map(|l| oc::LabelValue {
                    value: l.unwrap_or_default().into(),
                    has_value: l.is_some(),
                })
                .collect(),
            points,
        }
    }

    fn point(value: oc::point::Value) -> oc::Point {
        oc::Point {
            timestamp: ts(160, 0),
            value: Some(value),
        }
    }

    fn descriptor(name: &str, t: oc::MetricType) -> Option<oc::MetricDescriptor> {
        Some(oc::MetricDescriptor {
            name: name.into(),
            description: format!("{name} help"),
            unit: "ms".into(),
            r#type: t as i32,
            label_keys: ["method", "code"]
                .iter()
                .map(|k| oc::LabelKey {
                    key: (*k).into(),
                    description: String::new(),
                })
                .collect(),
        })
    }

    #[test]
    fn metrics_translate_like_the_collector_and_count_what_cannot() {
        use metrics::metric::Data;
        use oc::MetricType as T;
        use oc::point::Value as P;
        let metric = |name: &str, t, points| oc::Metric {
            metric_descriptor: descriptor(name, t),
            timeseries: vec![series(&[Some("GET"), None], points)],
            resource: None,
        };
        let dist = oc::DistributionValue {
            count: 3,
            sum: 12.5,
            sum_of_squared_deviation: 0.0,
            bucket_options: Some(oc::BucketOptions {
                explicit: Some(oc::ExplicitBounds {
                    bounds: vec![1.0, 10.0],
                }),
            }),
            buckets: vec![
                oc::Bucket {
                    count: 1,
                    exemplar: None,
                },
                oc::Bucket {
                    count: 1,
                    exemplar: Some(oc::Exemplar {
                        value: 4.0,
                        timestamp: ts(150, 0),
                        attachments: [("SpanContext".to_string(), "x".to_string())].into(),
                    }),
                },
                oc::Bucket {
                    count: 1,
                    exemplar: None,
                },
            ],
        };
        let mut uneven = dist.clone();
        uneven.buckets.pop();
        let list = vec![
            metric("g_int", T::GaugeInt64, vec![point(P::Int64Value(-4))]),
            metric("g_dbl", T::GaugeDouble, vec![point(P::DoubleValue(1.5))]),
            metric(
                "c_int",
                T::CumulativeInt64,
                vec![point(P::Int64Value(9)), point(P::DoubleValue(1.0))],
            ),
            metric(
                "c_dbl",
                T::CumulativeDouble,
                vec![point(P::DoubleValue(2.5))],
            ),
            metric(
                "hist",
                T::CumulativeDistribution,
                vec![
                    point(P::DistributionValue(dist)),
                    point(P::DistributionValue(uneven)),
                ],
            ),
            metric(
                "summ",
                T::Summary,
                vec![point(P::SummaryValue(oc::SummaryValue {
                    count: Some(Int64Value { value: 10 }),
                    sum: Some(DoubleValue { value: 55.0 }),
                    snapshot: Some(oc::Snapshot {
                        count: None,
                        sum: None,
                        percentile_values: vec![oc::ValueAtPercentile {
                            percentile: 99.0,
                            value: 9.0,
                        }],
                    }),
                }))],
            ),
            metric(
                "g_dist",
                T::GaugeDistribution,
                vec![point(P::Int64Value(1)), point(P::Int64Value(2))],
            ),
            oc::Metric {
                metric_descriptor: None,
                timeseries: vec![series(&[], vec![point(P::Int64Value(1))])],
                resource: Some(oc::Resource::default()),
            },
        ];
        let mut state = StreamState::default();
        state.update(Some(node()), None).unwrap();
        let mut dropped = Dropped::default();
        let out = metrics_to_otlp(&state, list, &mut dropped);
        // One mistyped point, one uneven histogram, two GAUGE_DISTRIBUTION points, one point
        // of a metric without a descriptor.
        assert_eq!(dropped.items, 5);
        assert_eq!(out.resource_metrics.len(), 1);
        let rm = &out.resource_metrics[0];
        assert_eq!(
            find(&rm.resource.as_ref().unwrap().attributes, "service.name"),
            Some(&s("checkout"))
        );
        let ms = &rm.scope_metrics[0].metrics;
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["g_int", "g_dbl", "c_int", "c_dbl", "hist", "summ"]);
        assert_eq!(ms[0].unit, "ms");
        assert_eq!(ms[0].description, "g_int help");
        let Some(Data::Gauge(g)) = &ms[0].data else {
            panic!("gauge")
        };
        let p = &g.data_points[0];
        assert_eq!(p.value, Some(metrics::number_data_point::Value::AsInt(-4)));
        assert_eq!(p.start_time_unix_nano, 100_000_000_000);
        assert_eq!(p.time_unix_nano, 160_000_000_000);
        assert_eq!(p.attributes.len(), 1, "labels without a value are left out");
        assert_eq!(find(&p.attributes, "method"), Some(&s("GET")));
        let Some(Data::Sum(sum)) = &ms[2].data else {
            panic!("sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 2);
        assert_eq!(sum.data_points.len(), 1);
        let Some(Data::Sum(sum)) = &ms[3].data else {
            panic!("sum")
        };
        assert_eq!(
            sum.data_points[0].value,
            Some(metrics::number_data_point::Value::AsDouble(2.5))
        );
        let Some(Data::Histogram(h)) = &ms[4].data else {
            panic!("histogram")
        };
        assert_eq!(h.aggregation_temporality, 2);
        assert_eq!(h.data_points.len(), 1);
        let hp = &h.data_points[0];
        assert_eq!((hp.count, hp.sum), (3, Some(12.5)));
        assert_eq!(hp.bucket_counts, [1, 1, 1]);
        assert_eq!(hp.explicit_bounds, [1.0, 10.0]);
        assert_eq!(hp.exemplars.len(), 1);
        assert_eq!(
            hp.exemplars[0].value,
            Some(metrics::exemplar::Value::AsDouble(4.0))
        );
        let Some(Data::Summary(sm)) = &ms[5].data else {
            panic!("summary")
        };
        let sp = &sm.data_points[0];
        assert_eq!((sp.count, sp.sum), (10, 55.0));
        assert_eq!(sp.quantile_values[0].quantile, 0.99);
        assert_eq!(sp.quantile_values[0].value, 9.0);
    }
}
