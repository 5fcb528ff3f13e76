//! Processor chains under load: a reload swaps the ingest chain between requests, never
//! inside one; and with a durable queue, `kill -9` loses no acknowledged span, processed.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_proto::common::KeyValue;

use crate::harness::{Ferry, PREAMBLE, Script, Sink, eventually, rewrite, spans_by_id};
use crate::load::{Load, delivery};

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    use ferry_proto::common::any_value::Value;
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// Two processors that each stamp generation `generation`, on their own key.
fn stamped(sink: &Sink, generation: u32, queue: &str) -> String {
    format!(
        r#"{PREAMBLE}
        batch_max_items = 1000
        processors = ["x", "y"]
        [processors.x]
        kind = "attributes"
        actions = [{{ key = "gen.x", action = "upsert", value = "{generation}" }}]
        [processors.y]
        kind = "resource"
        actions = [{{ key = "gen.y", action = "upsert", value = "{generation}" }}]
        [queue]
        {queue}
        [exporters.out]
        plugin = "otlp-http"
        signals = ["traces"]
        config = {{ endpoint = "{}" }}
        retry = {{ initial_interval = "50ms", max_interval = "500ms", max_elapsed = "10m" }}
        "#,
        sink.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_under_load_swaps_the_ingest_chain_between_requests_never_inside_one() {
    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start("chain-reload", &stamped(&sink, 1, ""));
    let load = Load::start(&ferry.http_url(), 3, 20, Duration::from_millis(2), 0);
    let swapped = "the ingest chain is swapped";
    for generation in 2..=4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        rewrite(&ferry, &stamped(&sink, generation, ""));
        let n = generation as usize - 1;
        eventually("the chain is swapped", async || {
            ferry.log_count(swapped) == n
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let tally = load.stop().await;
    eventually("every acknowledged span arrives", async || {
        delivery(&sink, &tally.acked, 20).missing.is_empty()
    })
    .await;
    let mut generations = BTreeSet::new();
    for (id, copies) in spans_by_id(&sink) {
        for (span, resource) in copies {
            let (x, y) = (text(&span.attributes, "gen.x"), text(&resource, "gen.y"));
            assert!(x.is_some() && x == y, "span {id}: gen.x {x:?}, gen.y {y:?}");
            generations.insert(x.unwrap());
        }
    }
    assert_eq!(
        generations,
        BTreeSet::from(["1", "2", "3", "4"].map(String::from)),
        "every chain served some requests"
    );
    assert_eq!(
        ferry
            .metric("ferry_config_reloads_total", &["result=\"ok\""])
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_an_ingest_chain_and_a_durable_queue_delivers_every_acknowledged_span_processed()
 {
    let dir = tempfile::tempdir().unwrap();
    // A slow backend, so a backlog is on disk when the daemon dies.
    let sink = Sink::start(Script {
        delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let queue = format!(
        "mode = \"durable\"\ndir = \"{}\"\nsegment_bytes = \"64KiB\"\nmax_bytes = \"256MiB\"",
        dir.path().display()
    );
    let toml = stamped(&sink, 1, &queue);
    let mut ferry = Ferry::start("chain-kill9-a", &toml);
    let load = Load::start(&ferry.http_url(), 4, 20, Duration::ZERO, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    ferry.kill9();
    let tally = load.stop().await;
    assert!(
        !delivery(&sink, &tally.acked, 20).missing.is_empty(),
        "a backlog was on disk at the kill"
    );
    sink.set_script(Script::default());
    let _ferry = Ferry::start("chain-kill9-b", &toml);
    eventually("every acknowledged span after the restart", async || {
        delivery(&sink, &tally.acked, 20).missing.is_empty()
    })
    .await;
    for (id, copies) in spans_by_id(&sink) {
        for (span, resource) in copies {
            assert_eq!(
                text(&span.attributes, "gen.x").as_deref(),
                Some("1"),
                "{id}"
            );
            assert_eq!(text(&resource, "gen.y").as_deref(), Some("1"), "{id}");
        }
    }
}
