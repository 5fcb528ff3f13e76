//! Processors, end to end: the OpenTelemetry Python SDK sends through Ferry, and what reaches
//! capture backends is checked field by field against what the SDK reported sending.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use ferry_proto::logs::LogRecord;
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics::{Metric, metric};
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use prost::Message;
use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, client_json, client_script, eventually, hex, python,
};
use crate::otel_sdk::{
    Received, assert_sdk_runs_arrived, attrs, json_attrs, received_spans, value,
};

/// `[exporters.NAME]` sending every signal to `sink`, through `chain`.
pub(crate) fn exporter(name: &str, url: &str, chain: &[&str]) -> String {
    format!(
        r#"
        [exporters.{name}]
        plugin = "otlp-http"
        processors = {chain:?}
        config = {{ endpoint = "{url}" }}
        "#
    )
}

/// Runs `otel_send.py` over OTLP/HTTP with `traces` traces.
fn sdk(endpoint: &str, run: &str, traces: usize) -> Value {
    client_json(
        Command::new(python())
            .arg(client_script("otel_send.py"))
            .args([
                "--protocol",
                "http",
                "--endpoint",
                endpoint,
                "--run",
                run,
                "--traces",
                &traces.to_string(),
            ]),
    )
}

/// Every log record at `sink` with its resource attributes.
pub(crate) fn logs_at(sink: &Sink) -> Vec<(LogRecord, BTreeMap<String, Value>)> {
    let mut out = Vec::new();
    for b in sink.bodies("/v1/logs") {
        for rl in ExportLogsServiceRequest::decode(b).unwrap().resource_logs {
            let res = attrs(&rl.resource.map(|r| r.attributes).unwrap_or_default());
            for sl in rl.scope_logs {
                out.extend(sl.log_records.into_iter().map(|l| (l, res.clone())));
            }
        }
    }
    out
}

/// Every metric at `sink` with its resource attributes.
fn metrics_at(sink: &Sink) -> Vec<(Metric, BTreeMap<String, Value>)> {
    let mut out = Vec::new();
    for b in sink.bodies("/v1/metrics") {
        for rm in ExportMetricsServiceRequest::decode(b)
            .unwrap()
            .resource_metrics
        {
            let res = attrs(&rm.resource.map(|r| r.attributes).unwrap_or_default());
            for sm in rm.scope_metrics {
                out.extend(sm.metrics.into_iter().map(|m| (m, res.clone())));
            }
        }
    }
    out
}

/// The attributes of every data point of `m`.
fn point_attrs(m: &Metric) -> Vec<BTreeMap<String, Value>> {
    match &m.data {
        Some(metric::Data::Sum(s)) => s.data_points.iter().map(|p| attrs(&p.attributes)).collect(),
        Some(metric::Data::Gauge(s)) => {
            s.data_points.iter().map(|p| attrs(&p.attributes)).collect()
        }
        Some(metric::Data::Histogram(s)) => {
            s.data_points.iter().map(|p| attrs(&p.attributes)).collect()
        }
        other => panic!("unexpected metric data {other:?}"),
    }
}

fn spans_at(sink: &Sink) -> Vec<Received> {
    received_spans(sink).into_values().flatten().collect()
}

fn sent_spans(sent: &Value) -> &Vec<Value> {
    sent["spans"].as_array().unwrap()
}

fn sha256(s: &str) -> String {
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// The span the SDK reported as `sent`, at `sink` (exactly once).
fn one<'a>(got: &'a [Received], sent: &Value) -> &'a Received {
    let id = sent["span_id"].as_str().unwrap();
    let copies: Vec<_> = got
        .iter()
        .filter(|(s, _, _)| hex(&s.span_id) == id)
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "span {} ({id}) arrived {} times",
        sent["name"],
        copies.len()
    );
    copies[0]
}

const TRACES: usize = 3;

#[tokio::test(flavor = "multi_thread")]
async fn each_built_in_shapes_sdk_telemetry_as_configured_and_leaves_the_rest_alone() {
    let names = ["plain", "tag", "env", "drop", "pii", "caps"];
    let mut sinks = BTreeMap::new();
    for n in names {
        sinks.insert(n, Sink::start(Script::default()).await);
    }
    let mut toml = format!(
        r#"{PREAMBLE}
        [processors.tag]
        kind = "attributes"
        apply_to = ["spans", "log_records", "data_points"]
        include = {{ any = [{{ service_regex = "^ferry-e2e" }}] }}
        actions = [
          {{ key = "team", action = "insert", value = "payments" }},
          {{ key = "http.route", action = "update", value = "/checkout/{{id}}" }},
          {{ key = "user.email", action = "hash" }},
          {{ key = "db.system", action = "rename", to = "db.system.name" }},
          {{ pattern = "^payment\\.", action = "delete" }},
        ]
        [processors.env]
        kind = "resource"
        actions = [
          {{ key = "deployment.environment", action = "upsert", value = "e2e" }},
          {{ key = "e2e.run", action = "delete" }},
        ]
        [processors.drop]
        kind = "filter"
        spans = {{ any = [{{ name = "db.query" }}] }}
        span_events = {{ any = [{{ name = "cache miss" }}] }}
        log_records = {{ any = [{{ severity_below = "warn" }}] }}
        metrics = {{ any = [{{ name = "e2e.inflight" }}] }}
        data_points = {{ any = [{{ attribute = "route", equals = "/b" }}] }}
        [processors.pii]
        kind = "redact"
        apply_to = ["spans", "log_records", "data_points"]
        allowed_keys = ["http.route", "retry.count", "user.email", "order.id", "payment.card", "route"]
        mask = ["email", "credit_card"]
        [processors.caps]
        kind = "limit"
        max_value_bytes = 4
        max_attributes = 3
        max_events = 0
        "#
    );
    for n in names {
        let chain: &[&str] = if n == "plain" { &[] } else { &[n] };
        toml += &exporter(n, &sinks[n].url(), chain);
    }
    let ferry = Ferry::start("processors", &toml);
    let sent = sdk(&ferry.http_url(), "shapes", TRACES);
    let run = "shapes";
    assert_sdk_runs_arrived(&sinks["plain"], &[(&sent, run)]).await;
    let spans = sent_spans(&sent);
    let logs_sent = sent["logs"].as_array().unwrap();
    eventually("every exporter has its share", async || {
        spans_at(&sinks["tag"]).len() == spans.len()
            && spans_at(&sinks["env"]).len() == spans.len()
            && spans_at(&sinks["drop"]).len() == 2 * TRACES
            && spans_at(&sinks["pii"]).len() == spans.len()
            && spans_at(&sinks["caps"]).len() == spans.len()
            && logs_at(&sinks["tag"]).len() == logs_sent.len()
            && logs_at(&sinks["drop"]).len() == TRACES
            && ["tag", "env", "drop", "pii", "caps"]
                .iter()
                .all(|n| !metrics_at(&sinks[n]).is_empty())
    })
    .await;

    // attributes: inserted, updated, hashed, renamed and deleted where configured; events,
    // which it does not apply to, untouched.
    let got = spans_at(&sinks["tag"]);
    for s in spans {
        let (span, _, _) = one(&got, s);
        let mut want = json_attrs(&s["attributes"]);
        want.insert("team".into(), json!("payments"));
        if want.contains_key("http.route") {
            want.insert("http.route".into(), json!("/checkout/{id}"));
        }
        if let Some(email) = want.get("user.email").cloned() {
            want.insert("user.email".into(), json!(sha256(email.as_str().unwrap())));
        }
        if let Some(db) = want.remove("db.system") {
            want.insert("db.system.name".into(), db);
        }
        assert_eq!(attrs(&span.attributes), want, "attributes of {}", span.name);
        let events: Vec<Value> = span
            .events
            .iter()
            .map(|e| json!({"name": e.name, "attributes": attrs(&e.attributes)}))
            .collect();
        assert_eq!(Value::Array(events), s["events"]);
    }
    for (l, _) in logs_at(&sinks["tag"]) {
        let a = attrs(&l.attributes);
        assert_eq!(a.get("team"), Some(&json!("payments")));
        assert!(!a.keys().any(|k| k.starts_with("payment.")), "{a:?}");
        if value(&l.body)
            .as_str()
            .unwrap()
            .starts_with("payment failed")
        {
            assert!(a.contains_key("order.id"), "left alone: {a:?}");
        }
    }
    for (m, _) in metrics_at(&sinks["tag"]) {
        for p in point_attrs(&m) {
            assert_eq!(p.get("team"), Some(&json!("payments")), "{}", m.name);
        }
    }

    // resource: on every signal, and nothing else changed.
    let got = spans_at(&sinks["env"]);
    for s in spans {
        let (span, res, _) = one(&got, s);
        assert_eq!(res.get("deployment.environment"), Some(&json!("e2e")));
        assert_eq!(res.get("e2e.run"), None);
        assert_eq!(res.get("service.name"), Some(&sent["service"]));
        assert_eq!(attrs(&span.attributes), json_attrs(&s["attributes"]));
    }
    let env_logs = logs_at(&sinks["env"]);
    let env_metrics = metrics_at(&sinks["env"]);
    assert!(env_logs.iter().all(
        |(_, r)| r.get("deployment.environment") == Some(&json!("e2e"))
            && !r.contains_key("e2e.run")
    ));
    assert!(
        env_metrics
            .iter()
            .all(|(_, r)| r.get("deployment.environment") == Some(&json!("e2e")))
    );

    // filter: the db.query spans, the cache-miss events, the INFO log, the inflight metric
    // and the /b data point are gone; everything else arrived as sent.
    let got = spans_at(&sinks["drop"]);
    for s in spans {
        if s["name"] == "db.query" {
            assert!(
                !got.iter()
                    .any(|(g, _, _)| hex(&g.span_id) == s["span_id"].as_str().unwrap())
            );
            continue;
        }
        let (span, _, _) = one(&got, s);
        assert!(span.events.is_empty(), "events of {} dropped", span.name);
        assert_eq!(attrs(&span.attributes), json_attrs(&s["attributes"]));
    }
    let drop_logs = logs_at(&sinks["drop"]);
    assert!(
        drop_logs.iter().all(|(l, _)| l.severity_text == "WARN"),
        "only WARN logs stay"
    );
    let drop_metrics: BTreeMap<String, Vec<_>> = metrics_at(&sinks["drop"])
        .iter()
        .map(|(m, _)| (m.name.clone(), point_attrs(m)))
        .collect();
    assert!(!drop_metrics.contains_key("e2e.inflight"));
    assert_eq!(
        drop_metrics["e2e.requests"],
        vec![BTreeMap::from([("route".to_string(), json!("/a"))])]
    );
    assert!(drop_metrics.contains_key("e2e.latency"));
    let ferry = &ferry;
    let by_rule = async |rule: &str| {
        let l = format!("rule=\"{rule}\"");
        ferry
            .metric(
                "ferry_processor_filtered_total",
                &["processor=\"drop\"", &l],
            )
            .await
    };
    assert_eq!(by_rule("spans.any[0]").await, TRACES as u64);
    assert_eq!(by_rule("span_events.any[0]").await, TRACES as u64);
    assert_eq!(by_rule("log_records.any[0]").await, 1);
    assert_eq!(
        ferry
            .metric(
                "ferry_processor_items_total",
                &[
                    "processor=\"drop\"",
                    "signal=\"traces\"",
                    "outcome=\"dropped\""
                ]
            )
            .await,
        TRACES as u64
    );
    assert_eq!(
        ferry
            .metric("ferry_processor_orphaned_spans_total", &[])
            .await,
        0,
        "db.query spans are leaves"
    );

    // redact: only allowed keys stay, e-mail addresses and card numbers are masked, and the
    // counts (not the values) are recorded.
    let got = spans_at(&sinks["pii"]);
    let allowed = [
        "http.route",
        "retry.count",
        "user.email",
        "order.id",
        "payment.card",
        "route",
    ];
    for s in spans {
        let (span, _, _) = one(&got, s);
        let sent_attrs = json_attrs(&s["attributes"]);
        let mut want: BTreeMap<String, Value> = sent_attrs
            .iter()
            .filter(|(k, _)| allowed.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removed = sent_attrs.len() - want.len();
        if want.contains_key("user.email") {
            want.insert("user.email".into(), json!("****"));
            want.insert("redaction.masked.count".into(), json!(1));
        }
        if removed > 0 {
            want.insert("redaction.removed.count".into(), json!(removed));
        }
        assert_eq!(attrs(&span.attributes), want, "attributes of {}", span.name);
        assert_eq!(span.events.len(), s["events"].as_array().unwrap().len());
    }
    for (l, _) in logs_at(&sinks["pii"]) {
        let a = attrs(&l.attributes);
        assert!(!a.contains_key("payment.provider"));
        if let Some(card) = a.get("payment.card") {
            assert_eq!(card, &json!("****"));
        }
    }
    assert!(
        ferry
            .metric("ferry_processor_redacted_total", &["action=\"masked\""])
            .await
            >= 2 * TRACES as u64
    );

    // limit: three attributes at most (the rest counted as dropped), values cut to 4 bytes,
    // no events (counted).
    let got = spans_at(&sinks["caps"]);
    for s in spans {
        let (span, _, _) = one(&got, s);
        let n = s["attributes"].as_object().unwrap().len();
        assert_eq!(span.attributes.len(), n.min(3), "{}", span.name);
        assert_eq!(span.dropped_attributes_count as usize, n.saturating_sub(3));
        for (k, v) in attrs(&span.attributes) {
            if let Some(s) = v.as_str() {
                assert!(s.len() <= 4, "{k} = {s:?}");
            }
        }
        let events = s["events"].as_array().unwrap().len();
        assert_eq!(
            (span.events.len(), span.dropped_events_count as usize),
            (0, events)
        );
    }
    for (l, _) in logs_at(&sinks["caps"]) {
        assert!(value(&l.body).as_str().unwrap().len() <= 4);
    }
}

/// Whether the consistent sampler at 50% keeps a trace: its randomness (low 56 bits) is at
/// least 2^55, i.e. the top bit of the trace id's byte 9 is set.
fn kept_at_half(trace_id: &str) -> bool {
    u8::from_str_radix(&trace_id[18..20], 16).unwrap() & 0x80 != 0
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingest_chain_shapes_what_every_exporter_sees_an_exporter_chain_only_its_own_and_samplers_in_a_row_agree()
 {
    let [all, errors, behind] = [
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
    ];
    let sample = "[processors.half]\nkind = \"sample\"\npercentage = 50\n";
    let gateway = Ferry::start(
        "gateway",
        &format!(
            "{PREAMBLE}processors = [\"half\"]\n{sample}{}",
            exporter("out", &behind.url(), &[])
        ),
    );
    let agent = Ferry::start(
        "agent",
        &format!(
            r#"{PREAMBLE}processors = ["env", "half"]
            {sample}
            [processors.env]
            kind = "resource"
            actions = [{{ key = "deployment.environment", action = "upsert", value = "e2e" }}]
            [processors.only-errors]
            kind = "filter"
            spans = {{ any = [{{ status = "unset" }}, {{ status = "ok" }}] }}
            {}{}{}"#,
            exporter("all", &all.url(), &[]),
            exporter("errors", &errors.url(), &["only-errors"]),
            exporter("gateway", &gateway.http_url(), &[]),
        ),
    );
    let traces = 24;
    let sent = sdk(&agent.http_url(), "chains", traces);
    let spans = sent_spans(&sent);
    let kept: Vec<&Value> = spans
        .iter()
        .filter(|s| kept_at_half(s["trace_id"].as_str().unwrap()))
        .collect();
    assert!(
        !kept.is_empty() && kept.len() < spans.len(),
        "24 random traces, some kept: {}",
        kept.len()
    );
    let errors_kept: Vec<&&Value> = kept.iter().filter(|s| s["status_code"] == 2).collect();
    eventually("each exporter has what it should", async || {
        spans_at(&all).len() == kept.len()
            && spans_at(&errors).len() == errors_kept.len()
            && spans_at(&behind).len() == kept.len()
            && !metrics_at(&all).is_empty()
    })
    .await;
    // Give stragglers (which must not exist) a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (sink, want, what) in [
        (&all, kept.clone(), "all"),
        (&behind, kept.clone(), "behind the gateway"),
    ] {
        let got = spans_at(sink);
        assert_eq!(got.len(), want.len(), "{what}");
        for s in &want {
            let (span, res, _) = one(&got, s);
            assert_eq!(
                span.trace_state, "ot=th:8",
                "the threshold is recorded ({what})"
            );
            assert_eq!(
                res.get("deployment.environment"),
                Some(&json!("e2e")),
                "{what}"
            );
            assert_eq!(attrs(&span.attributes), json_attrs(&s["attributes"]));
        }
    }
    let got = spans_at(&errors);
    for s in &errors_kept {
        let (span, res, _) = one(&got, s);
        assert_eq!(span.name, "charge");
        assert_eq!(
            res.get("deployment.environment"),
            Some(&json!("e2e")),
            "the ingest chain ran first"
        );
    }
    // Logs with a trace id follow their trace, and carry the threshold.
    let kept_traces: BTreeSet<&str> = kept
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    for (l, _) in logs_at(&all).iter().filter(|(l, _)| !l.trace_id.is_empty()) {
        assert!(kept_traces.contains(hex(&l.trace_id).as_str()));
        assert_eq!(
            attrs(&l.attributes).get("sampling.threshold"),
            Some(&json!("8"))
        );
    }
    let with_trace = sent["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| kept_traces.contains(l["trace_id"].as_str().unwrap()))
        .count();
    assert_eq!(
        logs_at(&all)
            .iter()
            .filter(|(l, _)| !l.trace_id.is_empty())
            .count(),
        with_trace
    );
    // The gateway's sampler, at the same probability, agreed with the agent's on every span.
    let dropped = async |f: &Ferry| {
        f.metric(
            "ferry_processor_items_total",
            &[
                "processor=\"half\"",
                "signal=\"traces\"",
                "outcome=\"dropped\"",
            ],
        )
        .await
    };
    assert_eq!(dropped(&gateway).await, 0);
    assert_eq!(dropped(&agent).await as usize, spans.len() - kept.len());
    // Metrics pass the sampler; the ingest chain still touched them.
    assert!(
        metrics_at(&all)
            .iter()
            .all(|(_, r)| r.get("deployment.environment") == Some(&json!("e2e")))
    );
}
