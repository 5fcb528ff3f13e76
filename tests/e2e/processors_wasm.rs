//! Wasm processors, end to end: the Rust and Python examples built from source reshape what
//! the OpenTelemetry SDK sends; hostile processors are refused, passed or dropped per their
//! `on_error`, and harm nothing else; a refusing ingest chain loses nothing its sender was
//! told was accepted, and delivers once a reload fixes it.

use std::time::Duration;

use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{Value, json};
use sha2::Digest;

use crate::guests::{plugin_dir, python_hasher};
use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, built_wasm, eventually, hex, post_traces, spans_by_id,
    traces_request,
};
use crate::load::{Load, delivery};
use crate::otel_sdk::{attrs, json_attrs, received_spans};

fn sha256(s: &str) -> String {
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// A traces request with one span per `(name, duration_ms)`.
fn timed_spans(spans: &[(&str, u64)]) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .iter()
                    .enumerate()
                    .map(|(i, (name, ms))| Span {
                        trace_id: vec![9; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: name.to_string(),
                        start_time_unix_nano: 1_000_000_000,
                        end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn flag(attrs: &[KeyValue], key: &str) -> Option<bool> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::BoolValue(b) => Some(*b),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_and_python_processors_built_from_source_reshape_what_the_sdk_sends() {
    let dir = plugin_dir(&[
        ("slow-tagger", &built_wasm("ferry_example_slow_tagger")),
        ("python-hasher", &python_hasher()),
    ]);
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start(
        "wasm-processors",
        &format!(
            r#"{PREAMBLE}
            processors = ["slow", "hash"]
            [plugins]
            dir = "{}"
            [processors.slow]
            kind = "wasm"
            plugin = "slow-tagger"
            config = {{ threshold_ms = 1000 }}
            [processors.hash]
            kind = "wasm"
            plugin = "python-hasher"
            [exporters.capture]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            "#,
            dir.path().display(),
            sink.url()
        ),
    );
    let (status, _, _) = post_traces(&ferry, timed_spans(&[("fast", 5), ("slow", 2_000)])).await;
    assert_eq!(status, 200);
    let sent = crate::harness::otel_send("http", &ferry.http_url(), "wasm");
    let spans = sent["spans"].as_array().unwrap();
    eventually("every span arrives", async || {
        received_spans(&sink).len() == spans.len() + 2
    })
    .await;
    let got = received_spans(&sink);
    // The Rust processor marked the one span over its threshold, and only it.
    let by_name = |name: &str| {
        got.values()
            .flatten()
            .find(|(s, _, _)| s.name == name)
            .unwrap_or_else(|| panic!("{name} arrived"))
            .0
            .clone()
    };
    assert_eq!(flag(&by_name("slow").attributes, "span.slow"), Some(true));
    assert_eq!(flag(&by_name("fast").attributes, "span.slow"), None);
    // The Python processor hashed the e-mail addresses; everything else is as sent.
    for s in spans {
        let id = s["span_id"].as_str().unwrap();
        let (span, _, _) = &got[id][0];
        let mut want = json_attrs(&s["attributes"]);
        if let Some(Value::String(email)) = want.get("user.email").cloned() {
            want.insert("user.email".into(), json!(sha256(&email)));
        }
        assert_eq!(attrs(&span.attributes), want, "attributes of {}", span.name);
    }
    // Logs pass both (neither has anything to change in them) and arrive as sent.
    let logs = sent["logs"].as_array().unwrap().len();
    eventually("every log record arrives", async || {
        crate::processors::logs_at(&sink).len() == logs
    })
    .await;
    crate::otel_sdk::check_logs(&sink, &sent);
    // A replaced batch counts all its items as modified: the tagger replaced the posted
    // request (2 spans) and kept the SDK's; the hasher replaced the SDK's requests only.
    let modified = async |p: &str| {
        let l = format!("processor=\"{p}\"");
        ferry
            .metric(
                "ferry_processor_items_total",
                &[&l, "signal=\"traces\"", "outcome=\"modified\""],
            )
            .await
    };
    assert_eq!(modified("slow").await, 2);
    let hashed = modified("hash").await as usize;
    assert!((2..=spans.len()).contains(&hashed), "{hashed}");
    assert_eq!(ferry.metric("ferry_processor_faults_total", &[]).await, 0);
}

/// `[processors.NAME]` running the hostile processor in `mode`.
fn hostile(name: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
        [processors.{name}]
        kind = "wasm"
        plugin = "hostile-processor"
        config = {{ mode = "{mode}" }}
        {extra}
        "#
    )
}

fn exporter(name: &str, sink: &Sink, chain: &[&str]) -> String {
    format!(
        r#"
        [exporters.{name}]
        plugin = "otlp-http"
        signals = ["traces"]
        processors = {chain:?}
        config = {{ endpoint = "{}" }}
        retry = {{ initial_interval = "50ms", max_interval = "200ms", max_elapsed = "10m" }}
        "#,
        sink.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_processors_are_refused_passed_or_dropped_per_on_error_and_harm_nothing_else() {
    let dir = plugin_dir(&[(
        "hostile-processor",
        &built_wasm("ferry_test_hostile_processor"),
    )]);
    // (processor, mode, extra settings, expected at its exporter's sink, instance fault)
    let cases: [(&str, &str, &str, usize, Option<&str>); 7] = [
        ("trap", "trap", "on_error = \"pass\"", 5, Some("trap")),
        (
            "spin",
            "loop",
            "on_error = \"drop\"\ntimeout = \"300ms\"",
            0,
            Some("timeout"),
        ),
        (
            "hog",
            "memory",
            "on_error = \"pass\"\nmemory = \"16MiB\"",
            5,
            Some("memory"),
        ),
        ("junk", "malformed", "on_error = \"pass\"", 5, None),
        ("metric", "other-signal", "on_error = \"pass\"", 5, None),
        ("grow", "grow", "on_error = \"drop\"", 0, None),
        ("stubborn", "error", "", 0, None),
    ];
    let plain = Sink::start(Script::default()).await;
    let mut sinks = Vec::new();
    let mut toml = format!(
        "{PREAMBLE}\n[plugins]\ndir = \"{}\"\n{}",
        dir.path().display(),
        exporter("plain", &plain, &[])
    );
    for (name, mode, extra, _, _) in &cases {
        let sink = Sink::start(Script::default()).await;
        toml += &hostile(name, mode, extra);
        toml += &exporter(&format!("e_{name}"), &sink, &[name]);
        sinks.push(sink);
    }
    let ferry = Ferry::start("hostile-processors", &toml);
    let (status, _, _) = post_traces(&ferry, traces_request(5, "h", 1)).await;
    assert_eq!(status, 200);
    eventually("each processor has had its say", async || {
        let mut done = crate::harness::span_names(&plain).len() == 5;
        for ((name, _, _, want, _), sink) in cases.iter().zip(&sinks) {
            let l = format!("processor=\"{name}\"");
            done &= crate::harness::span_names(sink).len() == *want
                && ferry.metric("ferry_processor_faults_total", &[&l]).await >= 1;
        }
        done
    })
    .await;
    for ((name, _, _, want, instance_fault), sink) in cases.iter().zip(&sinks) {
        let l = format!("processor=\"{name}\"");
        let mut names = crate::harness::span_names(sink);
        names.sort();
        if *want > 0 {
            assert_eq!(
                names,
                ["h-0", "h-1", "h-2", "h-3", "h-4"],
                "{name}: passed as it was"
            );
        }
        if let Some(reason) = instance_fault {
            let r = format!("reason=\"{reason}\"");
            assert!(
                ferry
                    .metric("ferry_processor_instance_faults_total", &[&l, &r])
                    .await
                    >= 1,
                "{name}: instance discarded for {reason}"
            );
        }
        if *name == "spin" || *name == "grow" {
            assert_eq!(
                ferry
                    .metric("ferry_processor_items_total", &[&l, "outcome=\"dropped\""])
                    .await,
                5,
                "{name}: dropped and counted"
            );
        }
    }
    // The refusing processor's exporter keeps retrying its batch: failed attempts, nothing lost.
    assert!(
        ferry
            .metric(
                "ferry_exporter_failed_attempts_total",
                &["exporter=\"e_stubborn\"", "kind=\"processor\""]
            )
            .await
            >= 2
    );
    assert!(crate::harness::span_names(&sinks[6]).is_empty());
    // The daemon still takes traffic, and the well-behaved exporter still delivers.
    let (status, _, _) = post_traces(&ferry, traces_request(2, "after", 100)).await;
    assert_eq!(status, 200);
    eventually("later traffic at the plain exporter", async || {
        crate::harness::span_names(&plain).len() == 7
    })
    .await;
    let logs = ferry.logs();
    for needle in [
        "processor=\"junk\"",
        "its replacement is not an OTLP traces request",
        "its replacement of",
    ] {
        assert!(logs.contains(needle), "{needle} in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_ingest_chain_loses_nothing_and_delivers_once_a_reload_fixes_it() {
    let dir = plugin_dir(&[(
        "hostile-processor",
        &built_wasm("ferry_test_hostile_processor"),
    )]);
    let sink = Sink::start(Script::default()).await;
    let config = |mode: &str| {
        format!(
            "{PREAMBLE}\nprocessors = [\"gate\"]\n[plugins]\ndir = \"{}\"\n{}{}",
            dir.path().display(),
            hostile("gate", mode, ""),
            exporter("out", &sink, &[])
        )
    };
    let ferry = Ferry::start("refusing-ingest", &config("error"));
    let (status, _, body) = post_traces(&ferry, traces_request(1, "probe", 1_000_000)).await;
    assert_eq!(status, 503, "retryable refusal");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("processor \\\"gate\\\" failed")
            || body.contains("processor \"gate\" failed"),
        "{body}"
    );
    let load = Load::start(&ferry.http_url(), 2, 10, Duration::from_millis(20), 0);
    eventually("requests are refused", async || {
        ferry
            .metric(
                "ferry_receiver_refused_requests_total",
                &["reason=\"processor\""],
            )
            .await
            >= 5
    })
    .await;
    assert!(
        crate::harness::span_names(&sink).is_empty(),
        "nothing leaks past a refusal"
    );
    crate::harness::rewrite(&ferry, &config("tag"));
    ferry.logged("the ingest chain is swapped").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    assert!(tally.pushed_back > 0, "the senders were asked to retry");
    eventually("every acknowledged span arrives", async || {
        delivery(&sink, &tally.acked, 10).missing.is_empty()
    })
    .await;
    for (id, copies) in spans_by_id(&sink) {
        for (span, _) in copies {
            let seen = span.attributes.iter().find(|kv| kv.key == "hostile.seen");
            assert_eq!(
                seen.and_then(|kv| kv.value.clone()),
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue("yes".into()))
                }),
                "span {id} went through the fixed processor"
            );
        }
    }
}

/// Requests like the benchmark's: spans named `bench-op-0..15` with ten attributes each,
/// trace ids spread over the sampling range, and one of two resources already carrying a
/// `deployment.environment`.
fn bench_requests() -> Vec<Vec<u8>> {
    use ferry_proto::resource::Resource;
    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    // splitmix64: ids that look random and are the same every run.
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..4)
        .map(|r| {
            let resource_spans = (0..2)
                .map(|g| {
                    let mut res = vec![attr("service.name", &format!("svc-{g}"))];
                    if g == 1 {
                        res.push(attr("deployment.environment", "prod"));
                    }
                    let spans = (0..40)
                        .map(|i| {
                            let mut trace_id = next().to_be_bytes().to_vec();
                            trace_id.extend(next().to_be_bytes());
                            Span {
                                trace_id,
                                span_id: (r * 1000 + g * 100 + i + 1u64).to_be_bytes().to_vec(),
                                name: format!("bench-op-{}", i % 16),
                                start_time_unix_nano: 1_000,
                                end_time_unix_nano: 2_000,
                                attributes: (0..10)
                                    .map(|a| attr(&format!("bench.attr.{a}"), "value"))
                                    .collect(),
                                ..Default::default()
                            }
                        })
                        .collect();
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: res,
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            spans,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest { resource_spans }.encode_to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_chain_as_a_wasm_processor_decides_exactly_as_the_built_ins() {
    let dir = plugin_dir(&[("bench-chain", &built_wasm("ferry_test_bench_chain"))]);
    let (native, wasm) = (
        Sink::start(Script::default()).await,
        Sink::start(Script::default()).await,
    );
    let ferry = Ferry::start(
        "bench-chain",
        &format!(
            r#"{PREAMBLE}
            [plugins]
            dir = "{}"
            [processors.env]
            kind = "resource"
            actions = [{{ key = "deployment.environment", action = "upsert", value = "bench" }}]
            [processors.scrub]
            kind = "attributes"
            apply_to = ["spans"]
            actions = [{{ key = "bench.attr.9", action = "delete" }}]
            [processors.drop]
            kind = "filter"
            spans = {{ any = [{{ name = "bench-op-3" }}, {{ name = "bench-op-7" }}] }}
            [processors.half]
            kind = "sample"
            percentage = 50
            [processors.chain]
            kind = "wasm"
            plugin = "bench-chain"
            {}{}"#,
            dir.path().display(),
            crate::processors::exporter("native", &native.url(), &["env", "scrub", "drop", "half"]),
            crate::processors::exporter("wasm", &wasm.url(), &["chain"]),
        ),
    );
    let requests = bench_requests();
    for body in &requests {
        assert_eq!(post_traces(&ferry, body.clone()).await.0, 200);
    }
    let sent = requests.len() * 2 * 40;
    let decided = async |p: &str| {
        let mut n = 0;
        for o in ["kept", "modified", "dropped"] {
            let labels = [format!("processor=\"{p}\""), format!("outcome=\"{o}\"")];
            n += ferry
                .metric("ferry_processor_items_total", &[&labels[0], &labels[1]])
                .await;
        }
        n as usize
    };
    eventually("both chains processed every span", async || {
        decided("env").await == sent && decided("chain").await == sent
    })
    .await;
    eventually("both sinks settle", async || {
        let (n, w) = (received_spans(&native), received_spans(&wasm));
        !n.is_empty() && n.len() == w.len()
    })
    .await;
    let (got_native, got_wasm) = (received_spans(&native), received_spans(&wasm));
    assert_eq!(got_native, got_wasm);
    // And both did what the chain says, so the comparison above is of something.
    let kept = got_native.len();
    assert!((sent / 4..sent * 3 / 4).contains(&kept), "{kept} of {sent}");
    for copies in got_native.values() {
        let (span, resource, _) = &copies[0];
        assert_eq!(copies.len(), 1);
        assert!(!["bench-op-3", "bench-op-7"].contains(&span.name.as_str()));
        assert_eq!(span.trace_state, "ot=th:8");
        assert_eq!(span.attributes.len(), 9);
        assert!(span.attributes.iter().all(|kv| kv.key != "bench.attr.9"));
        assert_eq!(resource["deployment.environment"], json!("bench"));
    }
    assert_eq!(ferry.metric("ferry_processor_faults_total", &[]).await, 0);
}
