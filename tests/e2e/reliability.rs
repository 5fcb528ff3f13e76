//! Fault injection under steady load: the backend goes away, the memory budget runs out, the
//! daemon is killed, stopped, fed a damaged disk and reloaded. Each test counts, at the sink,
//! every span the senders were told was accepted. `RELIABILITY.md` reports these runs.

use std::path::Path;
use std::time::Duration;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, eventually, post_traces, rewrite, spans_by_id, traces_request,
};
use crate::load::{Load, delivery};

const RETRY: &str =
    r#"retry = { initial_interval = "50ms", max_interval = "500ms", max_elapsed = "10m" }"#;

/// A config with one OTLP/HTTP exporter per sink (named `e0`, `e1`, ...); `queue` is the body
/// of `[queue]` and `pipeline` more `[pipeline]` keys.
fn config(sinks: &[&Sink], pipeline: &str, queue: &str) -> String {
    let mut s = format!("{PREAMBLE}\nbatch_max_items = 1000\n{pipeline}\n[queue]\n{queue}\n");
    for (i, sink) in sinks.iter().enumerate() {
        s += &exporter(&format!("e{i}"), sink, "");
    }
    s
}

fn exporter(name: &str, sink: &Sink, extra: &str) -> String {
    format!(
        r#"
        [exporters.{name}]
        plugin = "otlp-http"
        signals = ["traces"]
        config = {{ endpoint = "{}" {extra} }}
        {RETRY}
        "#,
        sink.url()
    )
}

fn durable(dir: &Path) -> String {
    format!(
        "mode = \"durable\"\ndir = \"{}\"\nsegment_bytes = \"64KiB\"\nmax_bytes = \"256MiB\"",
        dir.display()
    )
}

fn report(scenario: &str, d: &crate::load::Delivery, extra: &str) {
    eprintln!(
        "RELIABILITY {scenario}: acknowledged spans {}, delivered {}, lost {}, duplicates {}{extra}",
        d.acked_spans,
        d.delivered,
        d.missing.len(),
        d.duplicates
    );
}

async fn backend_outage(mode: &str, queue: String) {
    let sink = Sink::start(Script {
        then: 503,
        ..Default::default()
    })
    .await;
    let ferry = Ferry::start(&format!("outage-{mode}"), &config(&[&sink], "", &queue));
    // About 400 spans a second for 35 s; the backend answers 503 for the first 30.
    let load = Load::start(&ferry.http_url(), 2, 10, Duration::from_millis(50), 0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(crate::harness::span_names(&sink).is_empty());
    sink.set_script(Script::default());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tally = load.stop().await;
    assert!(
        tally.unknown.is_empty() && tally.other.is_empty(),
        "{tally:?}"
    );
    assert_eq!(tally.pushed_back, 0, "the budget holds a 30 s outage");
    let per = 10;
    eventually("the backlog drains", async || {
        delivery(&sink, &tally.acked, per).missing.is_empty()
    })
    .await;
    let d = delivery(&sink, &tally.acked, per);
    report(&format!("backend down 30 s ({mode})"), &d, "");
    assert!(d.acked_spans > 5_000, "{d:?}");
    assert_eq!(d.duplicates, 0);
    assert_eq!(d.delivered, d.acked_spans, "nothing unacknowledged arrived");
    assert!(ferry.metric("ferry_exporter_retries_total", &[]).await > 0);
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_backend_gets_concurrency_batches_at_once_and_every_span_once() {
    let sink = Sink::start(Script {
        delay: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // One request per batch, so nine requests make nine batches.
    let toml = format!(
        "{PREAMBLE}\nbatch_max_items = 10\n{}concurrency = 3\n",
        exporter("slow", &sink, "")
    );
    let ferry = Ferry::start("concurrency", &toml);
    for r in 0..9u64 {
        let (status, _, _) = post_traces(&ferry, traces_request(10, "c", r * 10)).await;
        assert_eq!(status, 200);
    }
    eventually("all 90 spans at the sink", async || {
        spans_by_id(&sink).len() == 90
    })
    .await;
    let spans = spans_by_id(&sink);
    assert!(spans.values().all(|s| s.len() == 1), "a span arrived twice");
    assert_eq!(sink.peak_in_flight(), 3, "{}", ferry.logs());
    // The sink keeps a body just before it answers; a batch is counted as sent once the
    // answer is back, so the last wave is counted a moment after its spans are at the sink.
    eventually("all 9 batches counted as sent", async || {
        ferry.metric("ferry_exporter_sent_batches_total", &[]).await == 9
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_down_30s_memory_mode_loses_nothing() {
    backend_outage("memory", String::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_down_30s_durable_mode_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    backend_outage("durable", durable(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_durable_mode_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // A slow backend, so a backlog is on disk when the daemon dies.
    let sink = Sink::start(Script {
        delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let toml = config(&[&sink], "", &durable(dir.path()));
    let mut ferry = Ferry::start("kill9-a", &toml);
    let load = Load::start(&ferry.http_url(), 4, 20, Duration::ZERO, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    ferry.kill9();
    let tally = load.stop().await;
    let per = 20;
    let before = delivery(&sink, &tally.acked, per);
    assert!(
        !before.missing.is_empty(),
        "the backlog was still queued at the kill: {before:?}"
    );

    sink.set_script(Script::default());
    let ferry = Ferry::start("kill9-b", &toml);
    assert!(
        ferry
            .metric("ferry_queue_replayed_records_total", &[])
            .await
            > 0
    );
    eventually("every acknowledged span after the restart", async || {
        delivery(&sink, &tally.acked, per).missing.is_empty()
    })
    .await;
    let d = delivery(&sink, &tally.acked, per);
    report(
        "kill -9 (durable)",
        &d,
        &format!(", in flight at the kill {} requests", tally.unknown.len()),
    );
    assert_eq!(ferry.metric("ferry_queue_lost_records_total", &[]).await, 0);
    // What arrived beyond the acknowledged spans can only be requests cut off mid-answer.
    let extra = d.delivered - d.acked_spans;
    assert!(extra as u64 <= tally.unknown.len() as u64 * per, "{d:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_load_drains_in_memory_mode() {
    let sink = Sink::start(Script {
        delay: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let mut ferry = Ferry::start(
        "sigterm-memory",
        &config(&[&sink], "drain_timeout = \"60s\"", ""),
    );
    let load = Load::start(&ferry.http_url(), 4, 20, Duration::ZERO, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = ferry.terminate();
    assert!(status.success(), "{status}");
    let tally = load.stop().await;
    let d = delivery(&sink, &tally.acked, 20);
    report("SIGTERM mid-load (memory)", &d, "");
    assert!(d.acked_spans > 1000, "{d:?}");
    assert!(d.missing.is_empty(), "drained before exit: {d:?}");
    assert_eq!(d.duplicates, 0);
    assert!(ferry.logs().contains("drained=true"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_past_the_drain_deadline_persists_in_durable_mode() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script {
        // Slow enough that the exporter (4 batches in flight) cannot drain within the deadline.
        delay: Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
    let toml = config(&[&sink], "drain_timeout = \"1s\"", &durable(dir.path()));
    let mut ferry = Ferry::start("sigterm-durable-a", &toml);
    let load = Load::start(&ferry.http_url(), 4, 20, Duration::ZERO, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(ferry.terminate().success());
    let tally = load.stop().await;
    assert!(ferry.logs().contains("kept on disk for the next start"));
    assert!(
        !delivery(&sink, &tally.acked, 20).missing.is_empty(),
        "a backlog was left at the deadline"
    );
    sink.set_script(Script::default());
    let ferry = Ferry::start("sigterm-durable-b", &toml);
    eventually("the rest after the restart", async || {
        delivery(&sink, &tally.acked, 20).missing.is_empty()
    })
    .await;
    let d = delivery(&sink, &tally.acked, 20);
    report("SIGTERM past the deadline (durable)", &d, "");
    assert_eq!(ferry.metric("ferry_queue_lost_records_total", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_segment_is_skipped_counted_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script {
        then: 503,
        ..Default::default()
    })
    .await;
    let toml = config(&[&sink], "drain_timeout = \"1s\"", &durable(dir.path()));
    let mut ferry = Ferry::start("corrupt-a", &toml);
    // 100 requests of 50 spans (about 3 KB each): five 64 KiB segments, none exported.
    let per = 50;
    let load = Load::start(&ferry.http_url(), 1, per, Duration::ZERO, 0);
    eventually("100 requests acknowledged", async || {
        ferry
            .metric("ferry_receiver_accepted_items_total", &[])
            .await
            >= 100 * per
    })
    .await;
    let tally = load.stop().await;
    assert!(ferry.terminate().success());
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let victim = &segments[1];
    let mut data = std::fs::read(victim).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    std::fs::write(victim, &data).unwrap();

    sink.set_script(Script::default());
    let ferry = Ferry::start("corrupt-b", &toml);
    let lost = ferry.metric("ferry_queue_lost_records_total", &[]).await;
    assert!(lost > 0);
    assert!(ferry.logs().contains("durable queue damaged"), "logged");
    let expected = (tally.acked.len() as u64 - lost) * per;
    eventually("everything but the damaged records", async || {
        crate::load::span_counts(&sink).len() as u64 >= expected
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = delivery(&sink, &tally.acked, per);
    report(
        "corrupt segment (durable)",
        &d,
        &format!(", records counted lost {lost}"),
    );
    assert_eq!(
        d.delivered as u64, expected,
        "exactly the undamaged records"
    );
    assert_eq!(d.missing.len() as u64, lost * per, "whole requests lost");
    assert_eq!(d.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_budget_exceeded_pushes_the_sdk_back_and_its_retries_deliver_everything() {
    use crate::harness::{client_json, client_script, python};
    // A slow backend and the smallest budget: the SDK's batches cannot all fit.
    let sink = Sink::start(Script {
        delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let toml = config(&[&sink], "queue_max_bytes = \"64KiB\"", "").replace(
        "http = \"127.0.0.1:0\"",
        "http = \"127.0.0.1:0\"\nmax_request_bytes = \"64KiB\"",
    );
    let ferry = Ferry::start("budget", &toml);
    let endpoint = format!("http://{}", ferry.grpc.unwrap());
    let out = client_json(
        std::process::Command::new(python())
            .arg(client_script("otel_load.py"))
            .args(["--endpoint", &endpoint, "--spans", "4000"]),
    );
    let created: std::collections::BTreeSet<u64> = out["span_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u64::from_str_radix(v.as_str().unwrap(), 16).unwrap())
        .collect();
    assert_eq!(created.len(), 4000);
    assert_eq!(out["failed_exports"], 0, "the SDK gave up on nothing");
    eventually("all 4000 spans", async || {
        crate::load::span_counts(&sink).len() >= 4000
    })
    .await;
    let counts = crate::load::span_counts(&sink);
    let got: std::collections::BTreeSet<u64> = counts.keys().copied().collect();
    assert_eq!(got, created);
    let refused = ferry
        .metric(
            "ferry_receiver_refused_requests_total",
            &["reason=\"queue_full\""],
        )
        .await;
    assert!(refused > 0, "the budget pushed the SDK back");
    eprintln!(
        "RELIABILITY memory budget exceeded: created 4000, delivered {}, duplicates {}, pushed back {refused} times",
        got.len(),
        counts.values().map(|c| c - 1).sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_swaps_exporters_and_rejects_a_broken_config() {
    let [kept, changed, removed, added, late] = [
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
    ];
    let plugins = tempfile::tempdir().unwrap();
    let base = format!(
        "{}\n[plugins]\ndir = \"{}\"\n",
        config(&[], "", ""),
        plugins.path().display()
    );
    let v1 = format!(
        "{base}{}{}{}",
        exporter("kept", &kept, ""),
        exporter("changed", &changed, ""),
        exporter("removed", &removed, "")
    );
    let ferry = Ferry::start("reload", &v1);
    let load = Load::start(&ferry.http_url(), 2, 10, Duration::from_millis(20), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Change one (its exporter timeout), remove one, add one.
    let v2 = format!(
        "{base}{}{}timeout = \"20s\"\n{}",
        exporter("kept", &kept, ""),
        exporter("changed", &changed, ""),
        exporter("added", &added, "")
    );
    rewrite(&ferry, &v2);
    ferry.logged("reload applied").await;
    let removed_final = crate::load::span_counts(&removed).len();
    assert!(removed_final > 0);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // An exporter whose plugin is not there yet: rejected, nothing changes...
    let v3 = format!(
        "{v2}{}",
        exporter("late", &late, "").replace("otlp-http", "late")
    );
    rewrite(&ferry, &v3);
    eventually("the reload is rejected", async || {
        ferry
            .metric("ferry_config_reloads_total", &["result=\"load_failed\""])
            .await
            == 1
    })
    .await;
    assert_eq!(
        ferry
            .metric("ferry_config_last_reload_successful", &[])
            .await,
        0
    );
    // ...until the plugin file is dropped into the directory.
    std::fs::copy(
        crate::harness::built_wasm("ferry_plugin_otlp_http"),
        plugins.path().join("late.wasm.part"),
    )
    .unwrap();
    std::fs::rename(
        plugins.path().join("late.wasm.part"),
        plugins.path().join("late.wasm"),
    )
    .unwrap();
    eventually("the new plugin is picked up", async || {
        ferry.log_count("reload applied") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A broken config, noticed by the watch and again on SIGHUP: both rejected.
    rewrite(&ferry, "[exporters.kept\nplugin = ");
    eventually("the broken config is rejected", async || {
        ferry
            .metric("ferry_config_reloads_total", &["result=\"invalid\""])
            .await
            == 1
    })
    .await;
    ferry.signal("HUP");
    eventually("SIGHUP reloads (and rejects) it again", async || {
        ferry
            .metric("ferry_config_reloads_total", &["result=\"invalid\""])
            .await
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    assert!(
        tally.unknown.is_empty() && tally.other.is_empty() && tally.pushed_back == 0,
        "the receivers were never disturbed: {tally:?}"
    );
    assert_eq!(
        ferry
            .metric("ferry_config_reloads_total", &["result=\"ok\""])
            .await,
        2
    );
    assert_eq!(
        ferry
            .metric("ferry_config_last_reload_successful", &[])
            .await,
        0
    );

    for (name, sink) in [("kept", &kept), ("changed", &changed)] {
        eventually(&format!("{name} has every acknowledged span"), async || {
            delivery(sink, &tally.acked, 10).missing.is_empty()
        })
        .await;
        let d = delivery(sink, &tally.acked, 10);
        report(&format!("reload under load ({name} exporter)"), &d, "");
        assert_eq!(d.delivered, d.acked_spans, "{name}");
        if name == "kept" {
            assert_eq!(d.duplicates, 0, "the untouched exporter was not disturbed");
        }
    }
    for (name, sink) in [("added", &added), ("late", &late)] {
        let spans = crate::load::span_counts(sink);
        assert!(!spans.is_empty(), "{name} started exporting");
        assert!(
            spans.keys().all(|id| tally.acked.contains(&(id / 10))),
            "{name} got only acknowledged spans"
        );
    }
    assert_eq!(
        crate::load::span_counts(&removed).len(),
        removed_final,
        "the removed exporter stopped"
    );
    assert!(ferry.logs().contains("reload rejected"));
}
