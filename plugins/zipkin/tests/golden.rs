//! The translation, field by field, against a golden file written from the Collector's rules.

use ferry_plugin_zipkin::translate::to_zipkin;
use ferry_sdk::proto::common::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value as V,
};
use ferry_sdk::proto::resource::Resource;
use ferry_sdk::proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use ferry_sdk::proto::trace_service::ExportTraceServiceRequest;

fn kv(key: &str, v: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

fn id<const N: usize>(hex: &str) -> Vec<u8> {
    let v: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(v.len(), N);
    v
}

const S: u64 = 1_700_000_000_123_456_789;

fn request() -> ExportTraceServiceRequest {
    let trace = id::<16>("0af7651916cd43dd8448eb211c80319c");
    let a = Span {
        trace_id: trace.clone(),
        span_id: id::<8>("b7ad6b7169203331"),
        name: "GET /cart".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: S,
        end_time_unix_nano: S + 2_500_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.status_code", V::IntValue(200)),
            kv("ratio", V::DoubleValue(0.25)),
            kv("cached", V::BoolValue(false)),
            kv("error", V::BoolValue(false)),
            kv("net.host.ip", s("10.0.0.1")),
            kv("net.host.port", V::IntValue(8080)),
        ],
        events: vec![
            span::Event {
                time_unix_nano: S + 1000,
                name: "cache miss".into(),
                attributes: vec![kv("key", s("cart:1")), kv("size", V::IntValue(3))],
                ..Default::default()
            },
            span::Event {
                time_unix_nano: S + 2_000_000,
                name: "flushed".into(),
                ..Default::default()
            },
        ],
        status: Some(Status {
            code: status::StatusCode::Ok as i32,
            message: "fine".into(),
        }),
        ..Default::default()
    };
    let b = Span {
        trace_id: trace.clone(),
        span_id: id::<8>("00f067aa0ba902b7"),
        parent_span_id: id::<8>("b7ad6b7169203331"),
        trace_state: "k=v".into(),
        name: "db.query".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: S + 100_000,
        end_time_unix_nano: S + 600_000,
        attributes: vec![
            kv("peer.service", s("postgres")),
            kv("net.peer.ip", s("::1")),
            kv("net.peer.port", V::IntValue(5432)),
            kv("db.system", s("postgresql")),
        ],
        links: vec![span::Link {
            trace_id: id::<16>("0af7651916cd43dd8448eb211c80319d"),
            span_id: id::<8>("00f067aa0ba902b8"),
            attributes: vec![kv("a", V::IntValue(1))],
            dropped_attributes_count: 2,
            ..Default::default()
        }],
        status: Some(Status {
            code: status::StatusCode::Error as i32,
            message: "timeout".into(),
        }),
        ..Default::default()
    };
    let c = Span {
        trace_id: trace,
        span_id: id::<8>("00f067aa0ba902b7"),
        parent_span_id: id::<8>("b7ad6b7169203331"),
        name: "db.serve".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: S + 150_000,
        end_time_unix_nano: S + 150_500,
        ..Default::default()
    };
    let short = id::<16>("00000000000000001234567890abcdef");
    let d = Span {
        trace_id: short.clone(),
        span_id: id::<8>("0000000000000abc"),
        name: "internal work".into(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: 0,
        end_time_unix_nano: 5000,
        attributes: vec![
            kv(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(s("b")),
                        },
                    ],
                }),
            ),
            kv("raw", V::BytesValue(vec![1, 2, 3])),
            kv(
                "nested",
                V::KvlistValue(KeyValueList {
                    values: vec![kv("x", V::DoubleValue(1.5))],
                }),
            ),
            kv("big", V::DoubleValue(f64::INFINITY)),
        ],
        ..Default::default()
    };
    let invalid = Span {
        trace_id: vec![0; 16],
        span_id: id::<8>("0000000000000abf"),
        name: "no trace id".into(),
        ..Default::default()
    };
    let f = Span {
        trace_id: short,
        span_id: id::<8>("0000000000000abd"),
        name: "unspecified".into(),
        start_time_unix_nano: 1_000_000,
        end_time_unix_nano: 1_000_000,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("checkout")),
                        kv("host.name", s("h1")),
                        kv(
                            "e2e.list",
                            V::ArrayValue(ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(V::IntValue(1)),
                                    },
                                    AnyValue {
                                        value: Some(s("a")),
                                    },
                                ],
                            }),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    spans: vec![a, b, c],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("deployment.environment", s("test"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![d, invalid, f],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

#[test]
fn spans_match_the_golden_file_field_by_field() {
    let out = to_zipkin(&request(), "fallback-svc");
    assert_eq!(out.invalid, 1, "the span without a trace id is left out");
    let got = serde_json::to_value(&out.spans).unwrap();
    let want: serde_json::Value = serde_json::from_str(include_str!("golden/spans.json")).unwrap();
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "span count");
    for (g, w) in got.iter().zip(want) {
        for key in w
            .as_object()
            .unwrap()
            .keys()
            .chain(g.as_object().unwrap().keys())
        {
            assert_eq!(g.get(key), w.get(key), "span {} field {key}", w["name"]);
        }
    }
}

#[test]
fn a_resource_without_service_name_uses_the_faas_name() {
    let mut req = request();
    req.resource_spans[1]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("faas.name", s("lambda-x")));
    let out = to_zipkin(&req, "fallback-svc");
    let d = serde_json::to_value(&out.spans[3]).unwrap();
    assert_eq!(d["localEndpoint"]["serviceName"], "lambda-x");
    assert!(d["tags"].get("faas.name").is_none());
}
