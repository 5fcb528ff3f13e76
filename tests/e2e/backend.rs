//! What the pipeline does when the backend fails: retry, drop-and-count, push back.

use std::collections::BTreeSet;

use ferry_proto::grpc_path;
use ferry_proto::wkt::{RetryInfo, RpcStatus};
use prost::Message;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, base64_decode, eventually, grpc_unary_trailers, post_traces,
    span_names, traces_request,
};

fn config(sink: &Sink, extra: &str) -> String {
    format!(
        r#"
        {PREAMBLE}
        {extra}
        [exporters.backend]
        plugin = "otlp-http"
        signals = ["traces"]
        config = {{ endpoint = "{}" }}
        retry = {{ initial_interval = "50ms", max_interval = "200ms", max_elapsed = "5m" }}
        "#,
        sink.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_503_then_recovery_loses_nothing() {
    let sink = Sink::start(Script {
        first: vec![(503, None), (503, Some("1")), (502, None), (503, None)],
        then: 200,
        ..Default::default()
    })
    .await;
    let ferry = Ferry::start("503", &config(&sink, ""));
    let mut sent = BTreeSet::new();
    for r in 0..4 {
        let tag = format!("r{r}");
        let (status, _, _) = post_traces(&ferry, traces_request(5, &tag, r * 100)).await;
        assert_eq!(status, 200);
        sent.extend((0..5).map(|i| format!("{tag}-{i}")));
    }
    eventually(
        "all 20 spans delivered after the backend recovers",
        async || span_names(&sink).len() >= 20,
    )
    .await;
    let got: Vec<String> = span_names(&sink);
    assert_eq!(got.len(), 20, "no duplicates");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), sent);
    let failed: Vec<u16> = sink
        .attempts()
        .iter()
        .map(|a| a.1)
        .filter(|s| *s != 200)
        .collect();
    assert_eq!(failed, vec![503, 503, 502, 503]);
    assert_eq!(ferry.metric("ferry_exporter_retries_total", &[]).await, 4);
    assert_eq!(
        ferry
            .metric(
                "ferry_exporter_failed_attempts_total",
                &["kind=\"throttled\""]
            )
            .await,
        1
    );
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
    assert_eq!(
        ferry.metric("ferry_exporter_sent_items_total", &[]).await,
        20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_400_is_dropped_and_counted_not_retried() {
    let sink = Sink::start(Script {
        then: 400,
        ..Default::default()
    })
    .await;
    let ferry = Ferry::start("400", &config(&sink, ""));
    let (status, _, _) = post_traces(&ferry, traces_request(7, "doomed", 0)).await;
    assert_eq!(status, 200, "the daemon accepted the data");
    eventually("the batch is dropped as permanent", async || {
        ferry
            .metric(
                "ferry_exporter_dropped_items_total",
                &["reason=\"permanent\""],
            )
            .await
            == 7
    })
    .await;
    assert_eq!(sink.attempts().len(), 1, "a 400 is never retried");
    assert_eq!(ferry.metric("ferry_exporter_retries_total", &[]).await, 0);
    assert!(
        ferry
            .logs()
            .contains("dropping batch after a permanent error: HTTP 400")
    );
    // The next batch is tried on its own, and dropped alike.
    let (status, _, _) = post_traces(&ferry, traces_request(3, "doomed-too", 50)).await;
    assert_eq!(status, 200);
    eventually("second batch dropped", async || {
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await
            == 10
    })
    .await;
    assert_eq!(sink.attempts().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_pushes_senders_back_then_drains() {
    let sink = Sink::start(Script {
        then: 503,
        ..Default::default()
    })
    .await;
    let ferry = Ferry::start(
        "full",
        &config(&sink, "queue_max_bytes = \"64KiB\"\nbatch_max_items = 1").replace(
            "http = \"127.0.0.1:0\"",
            "http = \"127.0.0.1:0\"\nmax_request_bytes = \"32KiB\"",
        ),
    );
    // ~2.5 KB per request: the 64 KiB budget fills within a few dozen requests.
    let mut accepted = BTreeSet::new();
    let mut refusal = None;
    for r in 0..200u64 {
        let tag = format!("fill{r}");
        let (status, headers, body) = post_traces(&ferry, traces_request(60, &tag, r * 1000)).await;
        match status {
            200 => {
                accepted.extend((0..60).map(|i| format!("{tag}-{i}")));
            }
            429 => {
                refusal = Some((headers, body));
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let (headers, body) = refusal.expect("the sender was never pushed back");
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert!(String::from_utf8_lossy(&body).contains("queue full"));
    let (code, msg, _, trailers) = grpc_unary_trailers(
        ferry.grpc.unwrap(),
        grpc_path::TRACES,
        &traces_request(60, "grpc", 999_000),
    )
    .await;
    assert_eq!(code, 8, "RESOURCE_EXHAUSTED expected: {msg}");
    assert!(msg.contains("queue full"), "{msg}");
    // A RetryInfo says the refusal is temporary: as the Python SDK reads it, and in the status
    // details as the OTLP spec puts it.
    let bin = |k: &str| {
        let v = trailers
            .get(k)
            .unwrap_or_else(|| panic!("{k} in {trailers:?}"));
        base64_decode(v.to_str().unwrap())
    };
    let info = RetryInfo::decode(&bin("google.rpc.retryinfo-bin")[..]).unwrap();
    assert_eq!(info.retry_delay.unwrap().seconds, 1);
    let details = RpcStatus::decode(&bin("grpc-status-details-bin")[..]).unwrap();
    assert_eq!(details.code, 8);
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert_eq!(
        RetryInfo::decode(&details.details[0].value[..]).unwrap(),
        info
    );
    assert!(
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["reason=\"queue_full\""]
            )
            .await
            >= 2
    );

    // The backend recovers: everything that was accepted arrives, exactly once.
    sink.set_script(Script::default());
    eventually("the backlog drains", async || {
        span_names(&sink).len() >= accepted.len()
    })
    .await;
    let got = span_names(&sink);
    assert_eq!(got.len(), accepted.len());
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), accepted);
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
    // And the receiver takes data again.
    let (status, _, _) = post_traces(&ferry, traces_request(1, "after", 5_000_000)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_partial_success_is_counted_as_rejected() {
    use ferry_proto::trace_service::{ExportTracePartialSuccess, ExportTraceServiceResponse};
    use prost::Message;
    let answer = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "2 spans too old".into(),
        }),
    };
    let sink = Sink::start(Script {
        ok_body: answer.encode_to_vec(),
        ..Default::default()
    })
    .await;
    let ferry = Ferry::start("partial", &config(&sink, ""));
    let (status, _, _) = post_traces(&ferry, traces_request(5, "p", 0)).await;
    assert_eq!(status, 200);
    eventually("the partial rejection is counted", async || {
        ferry
            .metric(
                "ferry_exporter_dropped_items_total",
                &["reason=\"rejected\""],
            )
            .await
            == 2
    })
    .await;
    assert_eq!(
        ferry.metric("ferry_exporter_sent_items_total", &[]).await,
        3
    );
    assert_eq!(ferry.metric("ferry_exporter_retries_total", &[]).await, 0);
    assert_eq!(sink.attempts().len(), 1);
    assert!(ferry.logs().contains("2 spans too old"));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_outside_allowed_hosts_are_denied_and_counted() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start(
        "egress",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.fenced]
            plugin = "otlp-http"
            signals = ["traces"]
            allowed_hosts = ["http://127.0.0.1:1"]
            config = {{ endpoint = "{}" }}
            "#,
            sink.url()
        ),
    );
    let (status, _, _) = post_traces(&ferry, traces_request(4, "fenced", 0)).await;
    assert_eq!(status, 200);
    eventually("the denied batch is dropped", async || {
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await
            == 4
    })
    .await;
    assert_eq!(
        ferry
            .metric(
                "ferry_exporter_egress_denied_total",
                &["exporter=\"fenced\""]
            )
            .await,
        1
    );
    assert!(
        sink.attempts().is_empty(),
        "nothing may reach a host that was not granted"
    );
    assert!(
        ferry.logs().contains("denied: not in allowed_hosts"),
        "{}",
        ferry.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_open_batches_before_exit() {
    let sink = Sink::start(Script::default()).await;
    // Batches would otherwise wait an hour: only the shutdown flush can deliver them.
    let mut ferry = Ferry::start(
        "sigterm",
        &config(&sink, "batch_max_items = 100000")
            .replace("batch_timeout = \"20ms\"", "batch_timeout = \"1h\""),
    );
    let (status, _, _) = post_traces(&ferry, traces_request(4, "late", 0)).await;
    assert_eq!(status, 200);
    assert!(span_names(&sink).is_empty());
    let exit = ferry.terminate();
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
    assert_eq!(span_names(&sink).len(), 4);
    assert!(ferry.logs().contains("shutting down"));
}
