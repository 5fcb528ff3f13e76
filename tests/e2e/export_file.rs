//! The `file` exporter: OpenTelemetry SDK → Ferry → OTLP JSON lines in the granted directory,
//! read back and compared field by field; a directory that is unusable at first; a batch too
//! large for `max_file_bytes`, refused for good.

use std::path::Path;

use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::trace_service::ExportTraceServiceRequest;

use crate::harness::{Ferry, PREAMBLE, QUICK_RETRY, eventually, otel_send};
use crate::otel_sdk::{check_spans, spans_of};

fn ferry_with_file_exporter(dir: &Path, extra: &str) -> Ferry {
    Ferry::start(
        "file",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.file]
            plugin = "file"
            granted_dir = "{}"
            {QUICK_RETRY}
            config = {{ path = "otel" {extra} }}
            "#,
            dir.display()
        ),
    )
}

/// Every line of `path` parsed as an OTLP/JSON request.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad OTLP JSON line {e}: {l}")))
        .collect()
}

fn span_count(dir: &Path) -> usize {
    spans_of(read_lines::<ExportTraceServiceRequest>(
        &dir.join("otel/traces.jsonl"),
    ))
    .values()
    .map(Vec::len)
    .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_telemetry_lands_as_otlp_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let ferry = ferry_with_file_exporter(dir.path(), "");
    let sent = otel_send(
        "grpc",
        &format!("http://{}", ferry.grpc.unwrap()),
        "file-run",
    );
    let n = sent["spans"].as_array().unwrap().len();
    let out = dir.path().join("otel");
    eventually("every span, metric and log is on disk", async || {
        let points: usize = read_lines::<ExportMetricsServiceRequest>(&out.join("metrics.jsonl"))
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .map(|s| s.metrics.len())
            .sum();
        let logs: usize = read_lines::<ExportLogsServiceRequest>(&out.join("logs.jsonl"))
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        span_count(dir.path()) >= n && points >= 3 && logs >= 3
    })
    .await;
    let got = spans_of(read_lines::<ExportTraceServiceRequest>(
        &out.join("traces.jsonl"),
    ));
    check_spans(&sent, &got, "file-run");
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_directory_is_retried_and_then_written() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the exporter's directory should be: every write fails until it is gone.
    std::fs::write(dir.path().join("otel"), "in the way").unwrap();
    let ferry = ferry_with_file_exporter(dir.path(), "");
    let sent = otel_send("http", &ferry.http_url(), "file-down");
    eventually("the exporter retries", async || {
        ferry
            .metric(
                "ferry_exporter_retries_total",
                &["exporter=\"file\"", "signal=\"traces\""],
            )
            .await
            >= 2
    })
    .await;
    std::fs::remove_file(dir.path().join("otel")).unwrap();
    let n = sent["spans"].as_array().unwrap().len();
    eventually(
        "the spans are written once the directory is usable",
        async || span_count(dir.path()) >= n,
    )
    .await;
    let got = spans_of(read_lines::<ExportTraceServiceRequest>(
        &dir.path().join("otel/traces.jsonl"),
    ));
    check_spans(&sent, &got, "file-down");
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_larger_than_a_whole_file_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ferry = ferry_with_file_exporter(dir.path(), r#", max_file_bytes = "1KiB""#);
    let sent = otel_send(
        "grpc",
        &format!("http://{}", ferry.grpc.unwrap()),
        "file-perm",
    );
    let n = sent["spans"].as_array().unwrap().len() as u64;
    eventually("the traces batch is dropped as permanent", async || {
        ferry
            .metric(
                "ferry_exporter_dropped_items_total",
                &[
                    "exporter=\"file\"",
                    "signal=\"traces\"",
                    "reason=\"permanent\"",
                ],
            )
            .await
            == n
    })
    .await;
    assert!(
        ferry.logs().contains("max_file_bytes"),
        "the reason is logged"
    );
    assert_eq!(span_count(dir.path()), 0);
    assert_eq!(
        ferry
            .metric(
                "ferry_exporter_retries_total",
                &["exporter=\"file\"", "signal=\"traces\""]
            )
            .await,
        0
    );
}
