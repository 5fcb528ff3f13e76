//! The `prometheus-remote-write` exporter against a real Prometheus (Debian's package, remote
//! write receiver on, loopback): OpenTelemetry SDK metrics → Ferry → Prometheus, asserted
//! through Prometheus' query API; plus Prometheus down at first, and a Prometheus whose
//! receiver is off (404, permanent).

use serde_json::json;

use crate::harness::{Ferry, PREAMBLE, QUICK_RETRY, eventually, otel_send, reserve_port};
use crate::servers::Prometheus;

fn ferry_to(port: u16) -> Ferry {
    Ferry::start(
        "prom",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.prometheus]
            plugin = "prometheus-remote-write"
            {QUICK_RETRY}
            config = {{ endpoint = "http://127.0.0.1:{port}/api/v1/write" }}
            # The SDK sends traces and logs too; something must take them.
            [exporters.rest]
            plugin = "debug"
            signals = ["traces", "logs"]
            "#
        ),
    )
}

/// The value of the one series `promql` selects, if there is exactly one.
async fn one(prom: &Prometheus, promql: &str) -> Option<f64> {
    match prom.query(promql).await.as_slice() {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

/// Checks everything `otel_send.py` recorded for `job`, under OpenTelemetry's Prometheus names.
async fn assert_sdk_metrics(prom: &Prometheus, job: &str, run: &str) {
    eventually(
        "the SDK's metrics are queryable in Prometheus",
        async || {
            one(prom, &format!("e2e_inflight{{job=\"{job}\"}}"))
                .await
                .is_some()
                && one(prom, &format!("e2e_latency_seconds_count{{job=\"{job}\"}}"))
                    .await
                    .is_some()
        },
    )
    .await;
    let sel = format!("job=\"{job}\",otel_scope_name=\"ferry.e2e\"");
    let q = |m: &str| format!("{m}{{{sel}}}");
    // A monotonic counter with unit "1": `_total`, one series per attribute set.
    let mut requests: Vec<(String, f64)> = prom
        .query(&q("e2e_requests_total"))
        .await
        .into_iter()
        .map(|(labels, v)| (labels["route"].as_str().unwrap().to_string(), v))
        .collect();
    requests.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        requests,
        vec![("/a".to_string(), 6.0), ("/b".to_string(), 7.0)]
    );
    // A histogram in seconds: `_seconds_bucket{le}` (cumulative), `_sum`, `_count`.
    assert_eq!(one(prom, &q("e2e_latency_seconds_count")).await, Some(2.0));
    let sum = one(prom, &q("e2e_latency_seconds_sum")).await.unwrap();
    assert!((sum - 0.4).abs() < 1e-9, "histogram sum {sum}");
    let bucket = |le: &str| format!("e2e_latency_seconds_bucket{{{sel},le=\"{le}\"}}");
    assert_eq!(one(prom, &bucket("0")).await, Some(0.0));
    assert_eq!(
        one(prom, &bucket("5")).await,
        Some(2.0),
        "0.1 and 0.3 are under 5"
    );
    assert_eq!(one(prom, &bucket("+Inf")).await, Some(2.0));
    // A non-monotonic sum is a gauge, no suffix.
    assert_eq!(one(prom, &q("e2e_inflight")).await, Some(3.0));
    // The resource's other attributes are on target_info.
    let info = prom.query(&format!("target_info{{job=\"{job}\"}}")).await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["e2e_run"], json!(run));
    assert_eq!(info[0].0["telemetry_sdk_language"], json!("python"));
    assert_eq!(info[0].1, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_metrics_arrive_in_prometheus_under_otel_names() {
    let reserved = reserve_port();
    let port = reserved.port();
    let Some(prom) = Prometheus::start(port, true).await else {
        return;
    };
    let ferry = ferry_to(port);
    otel_send(
        "grpc",
        &format!("http://{}", ferry.grpc.unwrap()),
        "prom-run",
    );
    assert_sdk_metrics(&prom, "ferry-e2e-grpc", "prom-run").await;
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_down_at_first_gets_the_metrics_once_it_is_up() {
    let reserved = reserve_port();
    let port = reserved.port();
    let ferry = ferry_to(port);
    otel_send("http", &ferry.http_url(), "prom-down");
    eventually(
        "the exporter retries the unreachable Prometheus",
        async || {
            ferry
                .metric("ferry_exporter_retries_total", &["exporter=\"prometheus\""])
                .await
                >= 2
        },
    )
    .await;
    let Some(prom) = Prometheus::start(port, true).await else {
        return;
    };
    assert_sdk_metrics(&prom, "ferry-e2e-http", "prom-down").await;
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_from_prometheus_is_dropped_and_counted() {
    // Without --web.enable-remote-write-receiver Prometheus answers 404: never retried.
    let reserved = reserve_port();
    let port = reserved.port();
    let Some(prom) = Prometheus::start(port, false).await else {
        return;
    };
    let ferry = ferry_to(port);
    otel_send(
        "grpc",
        &format!("http://{}", ferry.grpc.unwrap()),
        "prom-perm",
    );
    eventually("the metrics are dropped as permanent", async || {
        ferry
            .metric(
                "ferry_exporter_dropped_items_total",
                &["exporter=\"prometheus\"", "reason=\"permanent\""],
            )
            .await
            == 4
    })
    .await;
    assert!(
        ferry.logs().contains("HTTP 404"),
        "Prometheus' answer is logged"
    );
    assert_eq!(
        ferry
            .metric("ferry_exporter_retries_total", &["exporter=\"prometheus\""])
            .await,
        0
    );
    assert!(prom.query("e2e_inflight").await.is_empty());
}
