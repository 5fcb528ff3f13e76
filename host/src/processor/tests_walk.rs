#![cfg(test)]
//! A chain of built-ins walks each request once, item after item; the result must be what
//! running its processors one after another over the whole request gives. Checked on random
//! requests of every signal, through random chains of every kind (resources edited before
//! and after items are read), output and counts alike.

use bytes::Bytes;
use ferry_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use super::tests::{chain, metric_value, run_bytes};
use super::{Decoded, Output};
use crate::signal::Signal;

const PROCESSORS: &str = r#"
[env]
kind = "resource"
actions = [{ key = "deployment.environment", action = "upsert", value = "prod" }]
[rename]
kind = "resource"
actions = [{ key = "service.name", action = "update", value = "web" }]
[scrub]
kind = "attributes"
actions = [
  { key = "k1", action = "delete" },
  { key = "user.email", action = "hash" },
  { key = "tier", action = "insert", value = 3 },
]
include = { any = [{ service = "api" }] }
[drop]
kind = "filter"
spans = { any = [{ name = "GET /health" }, { service = "web" }] }
span_events = { any = [{ name = "noise" }] }
log_records = { any = [{ severity_below = "info" }] }
metrics = { any = [{ name_regex = "^debug\\." }] }
data_points = { any = [{ attribute = "route", equals = "/health" }] }
[half]
kind = "sample"
percentage = 50
[pii]
kind = "redact"
allowed_keys = ["http.route", "user.email", "tier", "k2", "route"]
mask = ["email", "credit_card"]
[caps]
kind = "limit"
max_value_bytes = 12
max_attributes = 2
max_events = 1
"#;

const NAMES: [&str; 7] = ["env", "rename", "scrub", "drop", "half", "pii", "caps"];

/// Between `n.start` and `n.end` (exclusive) values made by `f`.
fn many<T>(
    r: &mut StdRng,
    n: std::ops::Range<usize>,
    mut f: impl FnMut(&mut StdRng) -> T,
) -> Vec<T> {
    (0..r.random_range(n)).map(|_| f(r)).collect()
}

fn text(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn attrs(r: &mut StdRng) -> Vec<KeyValue> {
    const KEYS: [&str; 6] = ["http.route", "user.email", "secret", "k1", "k2", "route"];
    const VALUES: [&str; 5] = [
        "/health",
        "/a",
        "someone@example.com",
        "4111 1111 1111 1111",
        "a long value, longer than twelve bytes",
    ];
    many(r, 0..5, |r| KeyValue {
        key: KEYS.choose(r).unwrap().to_string(),
        value: text(VALUES.choose(r).unwrap()),
        ..Default::default()
    })
}

fn resource(r: &mut StdRng) -> Option<Resource> {
    let service = ["api", "web", "db"].choose(r).unwrap();
    r.random_bool(0.8).then(|| Resource {
        attributes: (r.random_bool(0.9))
            .then(|| KeyValue {
                key: "service.name".into(),
                value: text(service),
                ..Default::default()
            })
            .into_iter()
            .chain(attrs(r))
            .collect(),
        ..Default::default()
    })
}

fn scope(r: &mut StdRng) -> Option<InstrumentationScope> {
    r.random_bool(0.7).then(|| InstrumentationScope {
        name: "lib".into(),
        ..Default::default()
    })
}

fn traces(r: &mut StdRng) -> ExportTraceServiceRequest {
    // Few span ids, so that parents are often in the request.
    let id = |r: &mut StdRng| vec![r.random_range(1..12u8); 8];
    ExportTraceServiceRequest {
        resource_spans: many(r, 1..4, |r| ResourceSpans {
            resource: resource(r),
            scope_spans: many(r, 1..3, |r| ScopeSpans {
                scope: scope(r),
                spans: many(r, 0..7, |r| Span {
                    trace_id: (0..16).map(|_| r.random()).collect(),
                    span_id: id(r),
                    parent_span_id: if r.random_bool(0.6) { id(r) } else { vec![] },
                    trace_state: ["", "ot=th:c", "vendor=x"].choose(r).unwrap().to_string(),
                    name: ["GET /health", "GET /a", "op"]
                        .choose(r)
                        .unwrap()
                        .to_string(),
                    kind: span::SpanKind::Server as i32,
                    attributes: attrs(r),
                    events: many(r, 0..3, |r| span::Event {
                        name: ["noise", "exception"].choose(r).unwrap().to_string(),
                        attributes: attrs(r),
                        ..Default::default()
                    }),
                    status: r.random_bool(0.3).then(|| Status {
                        code: 2,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn logs(r: &mut StdRng) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: many(r, 1..4, |r| ResourceLogs {
            resource: resource(r),
            scope_logs: many(r, 1..3, |r| ScopeLogs {
                scope: scope(r),
                log_records: many(r, 0..6, |r| LogRecord {
                    // With a trace id, sampling is decided by it, not at random.
                    trace_id: (0..16).map(|_| r.random()).collect(),
                    severity_number: r.random_range(1..20),
                    body: text(["mail someone@example.com", "ok"].choose(r).unwrap()),
                    attributes: attrs(r),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn metrics(r: &mut StdRng) -> ExportMetricsServiceRequest {
    let points = |r: &mut StdRng| {
        many(r, 0..4, |r| NumberDataPoint {
            attributes: attrs(r),
            ..Default::default()
        })
    };
    ExportMetricsServiceRequest {
        resource_metrics: many(r, 1..3, |r| ResourceMetrics {
            resource: resource(r),
            scope_metrics: many(r, 1..3, |r| ScopeMetrics {
                scope: scope(r),
                metrics: many(r, 0..4, |r| Metric {
                    name: ["http.requests", "debug.x"].choose(r).unwrap().to_string(),
                    data: Some(if r.random_bool(0.5) {
                        metric::Data::Gauge(Gauge {
                            data_points: points(r),
                        })
                    } else {
                        metric::Data::Sum(Sum {
                            data_points: points(r),
                            ..Default::default()
                        })
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What a chain of `names` makes of `req`: its bytes and items, and its counts.
fn through(names: &[&str], req: &Decoded, one_by_one: bool) -> (Bytes, u32, Vec<u64>) {
    let signal = req.signal();
    let mut bytes = req.encode();
    let mut items = req.items() as u32;
    let groups: Vec<Vec<&str>> = if one_by_one {
        names.iter().map(|n| vec![*n]).collect()
    } else {
        vec![names.to_vec()]
    };
    let mut counts = vec![0; names.len() * 3 + 2];
    for group in groups {
        let (c, t) = chain(PROCESSORS, &group);
        match run_bytes(&c, signal, &bytes, items).unwrap() {
            Output::Unchanged => {}
            Output::Replaced { payload, items: n } => (bytes, items) = (payload, n),
        }
        for (i, name) in names.iter().enumerate() {
            for (j, outcome) in ["kept", "modified", "dropped"].iter().enumerate() {
                let labels = [
                    &format!("processor=\"{name}\"")[..],
                    &format!("outcome=\"{outcome}\""),
                ];
                counts[i * 3 + j] += metric_value(&t, "ferry_processor_items_total", &labels);
            }
        }
        let n = counts.len();
        counts[n - 2] += metric_value(&t, "ferry_processor_orphaned_spans_total", &[]);
        counts[n - 1] += metric_value(&t, "ferry_processor_filtered_total", &[]);
    }
    (bytes, items, counts)
}

#[test]
fn one_walk_through_a_chain_gives_what_its_processors_give_one_after_another() {
    let mut r = StdRng::seed_from_u64(20);
    for case in 0..300 {
        let req = match case % 3 {
            0 => Decoded::Traces(traces(&mut r)),
            1 => Decoded::Logs(logs(&mut r)),
            _ => Decoded::Metrics(metrics(&mut r)),
        };
        let mut names = NAMES.to_vec();
        names.shuffle(&mut r);
        names.truncate(r.random_range(1..=NAMES.len()));
        let (fused, fused_items, fused_counts) = through(&names, &req, false);
        let (apart, apart_items, apart_counts) = through(&names, &req, true);
        let decode = |b: &Bytes| Decoded::decode(req.signal(), b).unwrap();
        assert_eq!(
            decode(&fused),
            decode(&apart),
            "case {case}, chain {names:?}, {req:?}"
        );
        assert_eq!(fused_items, apart_items, "case {case}, chain {names:?}");
        assert_eq!(
            decode(&fused).items(),
            u64::from(fused_items),
            "case {case}"
        );
        assert_eq!(fused_counts, apart_counts, "case {case}, chain {names:?}");
    }
}

#[test]
fn a_chain_that_changes_nothing_forwards_the_original_bytes() {
    let mut r = StdRng::seed_from_u64(7);
    let req = Decoded::Traces(traces(&mut r)).encode();
    // Nothing in this chain matches: no span is named so, no key is listed.
    let (c, _) = chain(
        "[f]\nkind = \"filter\"\nspans = { any = [{ name = \"none\" }] }\n[a]\nkind = \"attributes\"\nactions = [{ key = \"absent\", action = \"delete\" }]",
        &["f", "a"],
    );
    assert_eq!(
        run_bytes(&c, Signal::Traces, &req, 1).unwrap(),
        Output::Unchanged
    );
}
