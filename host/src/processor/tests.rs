#![cfg(test)]
//! The built-in processors on hand-made requests, and chains as the daemon runs them.

use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::resource::Resource;
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

use super::*;

fn s(v: &str) -> Option<AnyValue> {
    otlp::string(v)
}

fn kv(k: &str, v: &str) -> KeyValue {
    otlp::kv(k, s(v))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    otlp::get(attrs, key)
}

fn text_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attr(attrs, key).map(|v| otlp::text(v).into_owned())
}

fn span(id: u8, parent: u8, name: &str, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 1_000 + u64::from(id) * 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "t".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn log(severity: i32, body: &str, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        severity_number: severity,
        body: s(body),
        attributes: attrs,
        ..Default::default()
    }
}

fn gauge(name: &str, routes: &[&str]) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: routes
                .iter()
                .map(|r| NumberDataPoint {
                    attributes: vec![kv("route", r)],
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

fn metrics(list: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource::default()),
            scope_metrics: vec![ScopeMetrics {
                metrics: list,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The chain `names` from `[processors]` TOML, with its telemetry.
pub(super) fn chain(processors: &str, names: &[&str]) -> (Chain, Arc<Telemetry>) {
    let t = Telemetry::new();
    let defs: toml::Table = toml::from_str(processors).unwrap();
    let defs: Processors = defs
        .into_iter()
        .map(|(k, v)| (k, v.try_into().unwrap()))
        .collect();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let chain = futures::executor::block_on(Chain::build(&names, &defs, &t, None, None)).unwrap();
    (chain, t)
}

fn run(c: &Chain, d: &Decoded) -> (Decoded, u32) {
    let bytes = d.encode();
    match run_bytes(c, d.signal(), &bytes, d.items() as u32).unwrap() {
        Output::Unchanged => (d.clone(), d.items() as u32),
        Output::Replaced { payload, items } => {
            (Decoded::decode(d.signal(), &payload).unwrap(), items)
        }
    }
}

/// A chain of built-ins runs without awaiting anything.
pub(super) fn run_bytes(
    c: &Chain,
    signal: Signal,
    bytes: &Bytes,
    items: u32,
) -> Result<Output, Fault> {
    futures::executor::block_on(c.run(signal, bytes, items, Checked::No))
}

pub(super) fn metric_value(t: &Telemetry, name: &str, labels: &[&str]) -> u64 {
    t.render()
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn attributes_act_where_the_conditions_say() {
    let (c, t) = chain(
        r#"
        [scrub]
        kind = "attributes"
        actions = [
          { key = "env", action = "upsert", value = "prod" },
          { key = "tier", action = "insert", value = 3 },
          { key = "absent", action = "update", value = "x" },
          { pattern = "^secret\\.", action = "delete" },
          { key = "user.email", action = "hash" },
          { key = "old", action = "rename", to = "new" },
          { key = "copy", action = "insert", from_attribute = "new" },
        ]
        apply_to = ["spans"]
        exclude = { any = [{ name = "health" }] }
        "#,
        &["scrub"],
    );
    let req = traces(
        "api",
        vec![
            span(
                1,
                0,
                "checkout",
                vec![
                    kv("secret.token", "t"),
                    kv("secret.pin", "1"),
                    kv("user.email", "a@b.c"),
                    kv("old", "v"),
                    kv("env", "dev"),
                ],
            ),
            span(2, 1, "health", vec![kv("secret.token", "t")]),
        ],
    );
    let (Decoded::Traces(out), items) = run(&c, &Decoded::Traces(req)) else {
        unreachable!()
    };
    assert_eq!(items, 2);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    let a = &spans[0].attributes;
    assert_eq!(text_attr(a, "env").as_deref(), Some("prod"));
    assert_eq!(attr(a, "tier"), Some(&any_value::Value::IntValue(3)));
    assert_eq!(attr(a, "absent"), None, "update does not insert");
    assert_eq!(attr(a, "secret.token"), None);
    assert_eq!(attr(a, "secret.pin"), None);
    use sha2::Digest;
    let sha = otlp::hex(&sha2::Sha256::digest(b"a@b.c"));
    assert_eq!(sha.len(), 64);
    assert_eq!(text_attr(a, "user.email"), Some(sha));
    assert_eq!(attr(a, "old"), None);
    assert_eq!(text_attr(a, "new").as_deref(), Some("v"));
    assert_eq!(text_attr(a, "copy").as_deref(), Some("v"));
    assert_eq!(
        spans[1].attributes,
        vec![kv("secret.token", "t")],
        "excluded span untouched"
    );
    assert_eq!(
        metric_value(&t, "ferry_processor_items_total", &["outcome=\"modified\""]),
        1
    );
    assert_eq!(
        metric_value(&t, "ferry_processor_items_total", &["outcome=\"kept\""]),
        1
    );
}

#[test]
fn resource_actions_count_every_item_under_a_changed_resource() {
    let (c, t) = chain(
        r#"
        [env]
        kind = "resource"
        actions = [{ key = "deployment.environment", action = "upsert", value = "prod" }]
        "#,
        &["env"],
    );
    let (Decoded::Logs(out), _) = run(
        &c,
        &Decoded::Logs(logs(vec![log(9, "a", vec![]), log(9, "b", vec![])])),
    ) else {
        unreachable!()
    };
    let res = &out.resource_logs[0].resource.as_ref().unwrap().attributes;
    assert_eq!(
        text_attr(res, "deployment.environment").as_deref(),
        Some("prod")
    );
    assert_eq!(text_attr(res, "service.name").as_deref(), Some("api"));
    assert_eq!(
        metric_value(
            &t,
            "ferry_processor_items_total",
            &["signal=\"logs\"", "outcome=\"modified\""]
        ),
        2
    );
}

#[test]
fn filter_drops_by_condition_counts_why_and_notices_orphans() {
    let (c, t) = chain(
        r#"
        [drop]
        kind = "filter"
        spans = { any = [{ name = "health" }, { attribute = "http.route", regex = "^/internal" }, { duration_above = "4ms" }] }
        log_records = { all = [{ severity_below = "info" }, { service = "api" }] }
        metrics = { any = [{ name_regex = "^debug\\." }] }
        data_points = { any = [{ attribute = "route", equals = "/healthz" }] }
        "#,
        &["drop"],
    );
    let req = traces(
        "api",
        vec![
            span(1, 0, "health", vec![]),
            span(2, 1, "child-of-health", vec![]),
            span(3, 0, "GET", vec![kv("http.route", "/internal/x")]),
            span(5, 0, "slow", vec![]),
            span(4, 5, "child-of-slow", vec![]),
        ],
    );
    let (Decoded::Traces(out), items) = run(&c, &Decoded::Traces(req)) else {
        unreachable!()
    };
    let names: Vec<_> = out.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["child-of-health", "child-of-slow"]);
    assert_eq!(items, 2);
    for (rule, n) in [
        ("spans.any[0]", 1),
        ("spans.any[1]", 1),
        ("spans.any[2]", 1),
    ] {
        assert_eq!(
            metric_value(
                &t,
                "ferry_processor_filtered_total",
                &[&format!("rule=\"{rule}\"")]
            ),
            n,
            "{rule}"
        );
    }
    assert_eq!(
        metric_value(&t, "ferry_processor_orphaned_spans_total", &[]),
        2
    );

    let (Decoded::Logs(out), items) = run(
        &c,
        &Decoded::Logs(logs(vec![log(5, "debug", vec![]), log(9, "info", vec![])])),
    ) else {
        unreachable!()
    };
    assert_eq!(items, 1);
    assert_eq!(
        out.resource_logs[0].scope_logs[0].log_records[0].severity_number,
        9
    );

    let req = metrics(vec![
        gauge("debug.x", &["/a"]),
        gauge("http", &["/a", "/healthz"]),
    ]);
    let (Decoded::Metrics(out), items) = run(&c, &Decoded::Metrics(req)) else {
        unreachable!()
    };
    assert_eq!(items, 1);
    let m = &out.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].name, "http");
    assert_eq!(
        metric_value(
            &t,
            "ferry_processor_items_total",
            &["signal=\"metrics\"", "outcome=\"dropped\""]
        ),
        2
    );

    // Everything dropped: nothing is left to forward, not even empty resource groups.
    let (c, _) = chain(
        "[all]\nkind = \"filter\"\nspans = { any = [{ service = \"api\" }] }",
        &["all"],
    );
    let req = Decoded::Traces(traces("api", vec![span(1, 0, "a", vec![])]));
    let out = run_bytes(&c, Signal::Traces, &req.encode(), 1).unwrap();
    assert_eq!(
        out,
        Output::Replaced {
            payload: Bytes::new(),
            items: 0
        }
    );
}

#[test]
fn redact_keeps_allowed_keys_and_masks_secrets_counting_but_never_showing_them() {
    let (c, t) = chain(
        r#"
        [pii]
        kind = "redact"
        allowed_keys = ["http.route", "note"]
        mask = ["credit_card", "email"]
        blocked_values = ["token-[0-9]+"]
        "#,
        &["pii"],
    );
    let req = traces(
        "api",
        vec![span(
            1,
            0,
            "a",
            vec![
                kv("http.route", "/pay"),
                kv("user.id", "42"),
                kv(
                    "note",
                    "card 4111 1111 1111 1111 of bob@example.com, token-77; order 1234567890123",
                ),
            ],
        )],
    );
    let (Decoded::Traces(out), _) = run(&c, &Decoded::Traces(req)) else {
        unreachable!()
    };
    let a = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attr(a, "user.id"), None);
    assert_eq!(
        text_attr(a, "note").as_deref(),
        Some("card **** of ****, ****; order 1234567890123"),
        "a number failing the Luhn check is not a card"
    );
    assert_eq!(
        attr(a, "redaction.removed.count"),
        Some(&any_value::Value::IntValue(1))
    );
    assert_eq!(
        attr(a, "redaction.masked.count"),
        Some(&any_value::Value::IntValue(3))
    );
    assert_eq!(
        metric_value(&t, "ferry_processor_redacted_total", &["action=\"masked\""]),
        3
    );
    let (Decoded::Logs(out), _) = run(
        &c,
        &Decoded::Logs(logs(vec![log(9, "mail me: x@y.org", vec![])])),
    ) else {
        unreachable!()
    };
    assert_eq!(
        out.resource_logs[0].scope_logs[0].log_records[0].body,
        s("mail me: ****")
    );
}

#[test]
fn limit_truncates_at_character_boundaries_and_records_what_it_dropped() {
    let (c, _) = chain(
        r#"
        [caps]
        kind = "limit"
        max_value_bytes = 5
        max_attributes = 2
        max_events = 1
        "#,
        &["caps"],
    );
    let mut sp = span(
        1,
        0,
        "a",
        vec![kv("a", "héllo wörld"), kv("b", "ok"), kv("c", "x")],
    );
    sp.events = vec![Default::default(), Default::default()];
    let (Decoded::Traces(out), _) = run(&c, &Decoded::Traces(traces("api", vec![sp]))) else {
        unreachable!()
    };
    let sp = &out.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        text_attr(&sp.attributes, "a").as_deref(),
        Some("héll"),
        "5 bytes would split é"
    );
    assert_eq!(sp.attributes.len(), 2);
    assert_eq!(sp.dropped_attributes_count, 1);
    assert_eq!((sp.events.len(), sp.dropped_events_count), (1, 1));
}

#[test]
fn a_chain_with_nothing_for_a_signal_never_decodes_it_and_failures_follow_on_error() {
    let garbage = Bytes::from_static(b"\xff\xff\xff");
    let (c, _) = chain(
        "[f]\nkind = \"filter\"\nspans = { any = [{ name = \"x\" }] }",
        &["f"],
    );
    assert_eq!(
        run_bytes(&c, Signal::Metrics, &garbage, 1).unwrap(),
        Output::Unchanged,
        "metrics pass undecoded"
    );
    assert!(
        run_bytes(&c, Signal::Traces, &garbage, 1).is_err(),
        "refuse by default"
    );
    let (c, t) = chain(
        "[f]\nkind = \"filter\"\non_error = \"drop\"\nspans = { any = [{ name = \"x\" }] }",
        &["f"],
    );
    assert_eq!(
        run_bytes(&c, Signal::Traces, &garbage, 4).unwrap(),
        Output::Replaced {
            payload: Bytes::new(),
            items: 0
        }
    );
    assert_eq!(metric_value(&t, "ferry_processor_faults_total", &[]), 1);
    let (c, _) = chain(
        "[f]\nkind = \"filter\"\non_error = \"pass\"\nspans = { any = [{ name = \"x\" }] }",
        &["f"],
    );
    assert_eq!(
        run_bytes(&c, Signal::Traces, &garbage, 1).unwrap(),
        Output::Unchanged
    );
    // Nothing changed: the original bytes go on, not a re-encoding.
    let req = Decoded::Traces(traces("api", vec![span(1, 0, "a", vec![])])).encode();
    let (c, _) = chain(
        "[f]\nkind = \"filter\"\nspans = { any = [{ name = \"x\" }] }",
        &["f"],
    );
    assert_eq!(
        run_bytes(&c, Signal::Traces, &req, 1).unwrap(),
        Output::Unchanged
    );
}

#[test]
fn sampling_marks_kept_spans_and_keeps_whole_traces() {
    let (c, _) = chain("[half]\nkind = \"sample\"\npercentage = 50", &["half"]);
    let spans: Vec<Span> = (1..=200u8)
        .map(|i| {
            let mut sp = span(i, 0, "a", vec![]);
            sp.trace_id = (0..16u8)
                .map(|b| b.wrapping_mul(i).wrapping_add(i / 2))
                .collect();
            sp
        })
        .collect();
    let mut twins = spans.clone();
    for s in &mut twins {
        s.span_id = vec![0xee; 8];
    }
    let all: Vec<Span> = spans.into_iter().chain(twins).collect();
    let (Decoded::Traces(out), items) = run(&c, &Decoded::Traces(traces("api", all))) else {
        unreachable!()
    };
    let kept = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(kept.len() as u32, items);
    assert!(kept.iter().all(|s| s.trace_state == "ot=th:8"));
    // Both spans of every kept trace are kept.
    for s in kept {
        assert_eq!(kept.iter().filter(|o| o.trace_id == s.trace_id).count(), 2);
    }
    assert!(
        (60..140).contains(&(kept.len() / 2)),
        "{} of 200 traces kept",
        kept.len() / 2
    );
}

#[test]
fn chains_and_conditions_are_checked_all_at_once_with_key_paths() {
    let err = crate::config::Config::parse(
        r#"
        [pipeline]
        processors = ["env", "nope"]
        [processors.env]
        kind = "resource"
        actions = [{ key = "a", action = "upsert" }]
        [processors.bad-regex]
        kind = "filter"
        spans = { any = [{ name_regex = "(" }] }
        [processors.wrong-field]
        kind = "filter"
        spans = { any = [{ severity_below = "info" }] }
        log_records = { any = [{ span_kind = "server" }] }
        [processors.mystery]
        kind = "teleport"
        [processors.no-kind]
        actions = []
        [exporters.d]
        plugin = "debug"
        processors = ["ghost"]
        "#,
    )
    .unwrap_err()
    .0;
    let joined = err.join("\n");
    for want in [
        "processors.env.actions[0]: set exactly one of `value` and `from_attribute`",
        "processors.bad-regex.spans.any[0].name_regex: not a valid regex",
        "processors.wrong-field.spans.any[0]: spans have no severity_below",
        "processors.wrong-field.log_records.any[0]: log records have no span_kind",
        "processors.mystery.kind: unknown processor kind \"teleport\"",
        "processors.no-kind: missing field `kind`",
        "pipeline.processors[1]: no processor named \"nope\"",
        "exporters.d.processors[0]: no processor named \"ghost\"",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(err.len(), 8, "{joined}");
}

#[test]
fn encoding_round_trips() {
    let d = Decoded::Traces(traces("api", vec![span(1, 0, "a", vec![])]));
    let bytes = d.encode();
    assert_eq!(
        ExportTraceServiceRequest::decode(bytes.as_ref())
            .unwrap()
            .resource_spans
            .len(),
        1
    );
    let _ = Status::default();
}

/// The ```toml blocks of the README section headed `heading`.
fn readme_toml(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find(&format!("\n## {heading}\n")).expect("section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_examples_are_valid_configs() {
    let processors = readme_toml("Processors");
    assert!(processors.contains("kind = \"limit\""));
    let c =
        crate::config::Config::parse(&processors).unwrap_or_else(|e| panic!("{e}\n{processors}"));
    for kind in KINDS {
        assert!(
            c.processors.values().any(|p| p.kind == kind.name),
            "no README example of {}",
            kind.name
        );
    }
    let main = readme_toml("Configuration");
    crate::config::Config::parse(&main).unwrap_or_else(|e| panic!("{e}\n{main}"));
}
