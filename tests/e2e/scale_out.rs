//! Scale-out over NATS JetStream: agents publish to a three-node cluster with the `nats`
//! exporter, and what JetStream acknowledged is in the replicated stream, cut as configured.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::{Ferry, PREAMBLE, eventually, otel_send, post_traces, traces_request};
use crate::nats::NatsCluster;

/// An agent: OTLP in, the `nats` exporter out to `cluster`, with `extra` config keys.
fn agent(name: &str, cluster: &NatsCluster, extra: &str) -> Ferry {
    agent_with(name, cluster, "", extra, &[])
}

/// [`agent`], with `keys` in the exporter's table and `env` in the daemon's environment.
pub fn agent_with(
    name: &str,
    cluster: &NatsCluster,
    keys: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Ferry {
    Ferry::start_with_env(
        name,
        &format!(
            r#"
            {PREAMBLE}
            [exporters.bus]
            plugin = "nats"
            retry = {{ initial_interval = "100ms", max_interval = "1s", max_elapsed = "5m" }}
            {keys}
            config = {{ endpoints = {}, {extra} }}
            "#,
            cluster.toml_urls()
        ),
        env,
    )
}

/// `field` of every entry of `list` in `v` (none if `v` has no such list).
fn strings(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_publish_every_signal_to_a_replicated_stream_each_trace_on_one_shard() {
    let cluster = NatsCluster::start(3).await;
    let config = "mode = \"by_trace\", shards = 4, create_stream = { replicas = 3 }";
    let agents = [
        agent("agent-1", &cluster, config),
        agent("agent-2", &cluster, config),
    ];
    let mut sent_spans = BTreeSet::new();
    let mut sent_logs = BTreeSet::new();
    for (i, a) in agents.iter().enumerate() {
        let sent = otel_send(
            "grpc",
            &format!("http://{}", a.grpc.unwrap()),
            &format!("bus-{i}"),
        );
        sent_spans.extend(strings(&sent, "spans", "span_id"));
        sent_logs.extend(strings(&sent, "logs", "body"));
    }

    let mut stream = Value::Null;
    eventually(
        "every span, log and metric the SDK sent is in the stream",
        async || {
            stream = cluster.read("FERRY");
            let msgs = stream["messages"].as_array().unwrap();
            let spans: BTreeSet<String> = msgs
                .iter()
                .flat_map(|m| strings(m, "spans", "span_id"))
                .collect();
            let logs: BTreeSet<String> = msgs
                .iter()
                .flat_map(|m| strings(m, "logs", "body"))
                .collect();
            let metrics = msgs
                .iter()
                .flat_map(|m| strings(m, "metrics", "name"))
                .count();
            spans.is_superset(&sent_spans) && logs.is_superset(&sent_logs) && metrics >= 6
        },
    )
    .await;

    assert_eq!(stream["config"]["replicas"], 3);
    assert_eq!(stream["config"]["retention"], "workqueue");
    assert_eq!(stream["config"]["discard"], "new");
    assert_eq!(stream["config"]["subjects"][0], "ferry.>");
    let msgs = stream["messages"].as_array().unwrap();
    // Each span once: JetStream acknowledged every message exactly once.
    let all: Vec<String> = msgs
        .iter()
        .flat_map(|m| strings(m, "spans", "span_id"))
        .collect();
    assert_eq!(all.len(), sent_spans.len(), "no span stored twice");
    // Every message has a de-duplication id; no two messages share one.
    let ids: BTreeSet<&str> = msgs.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), msgs.len());
    assert!(!ids.contains(""));
    // Spans and logs of one trace are on one shard: the one its id's last 8 bytes pick.
    let mut shard_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in msgs {
        let subject = m["subject"].as_str().unwrap().to_string();
        let signal = subject.split('.').nth(1).unwrap();
        let list = match signal {
            "traces" => "spans",
            "logs" => "logs",
            _ => continue,
        };
        for item in m[list].as_array().unwrap() {
            let trace = item["trace_id"].as_str().unwrap();
            if trace.is_empty() || trace.chars().all(|c| c == '0') {
                continue;
            }
            let key = u64::from_str_radix(&trace[16..], 16).unwrap();
            assert_eq!(subject, format!("ferry.{signal}.{}", key % 4));
            shard_of
                .entry(trace.to_string())
                .or_default()
                .insert(subject.clone());
        }
    }
    assert!(shard_of.len() >= 4, "several traces: {}", shard_of.len());
    let shards: BTreeSet<&String> = shard_of.values().flatten().collect();
    assert!(shards.len() > 1, "traces spread over shards: {shards:?}");
    for a in &agents {
        assert_eq!(
            a.metric(
                "ferry_exporter_dropped_items_total",
                &["exporter=\"bus\"", "reason=\"permanent\""]
            )
            .await,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_stream_is_named_and_nothing_is_lost_once_it_exists() {
    let cluster = NatsCluster::start(1).await;
    let a = agent("agent-nostream", &cluster, "stream = \"LATER\"");
    let sent = otel_send("grpc", &format!("http://{}", a.grpc.unwrap()), "later");
    a.logged("JetStream stream LATER does not exist").await;
    // Another agent that may create it does, with its first batch; the first agent's retried
    // batches then land in it.
    let b = agent(
        "agent-creates",
        &cluster,
        "stream = \"LATER\", create_stream = { replicas = 1 }",
    );
    otel_send("grpc", &format!("http://{}", b.grpc.unwrap()), "creator");
    let sent_spans: BTreeSet<String> = strings(&sent, "spans", "span_id").into_iter().collect();
    eventually("the retried batches are in the stream", async || {
        let s = cluster.read("LATER");
        let got: BTreeSet<String> = s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| strings(m, "spans", "span_id"))
            .collect();
        got.is_superset(&sent_spans)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_nats_node_an_agent_publishes_to_loses_nothing_and_the_agent_sees_no_error() {
    let mut cluster = NatsCluster::start(3).await;
    let a = agent(
        "agent-kill",
        &cluster,
        "ack_timeout = \"2s\", create_stream = { replicas = 3 }",
    );
    let mut sent = BTreeSet::new();
    for r in 0..150u64 {
        if r == 50 {
            // The agent's connection is to the first node: take it down mid-stream.
            cluster.kill(0);
        }
        if r == 110 {
            cluster.restart(0).await;
        }
        let tag = format!("k{r}");
        let (status, _, body) = post_traces(&a, traces_request(40, &tag, r * 1000)).await;
        assert_eq!(status, 200, "request {r}: {body:?}");
        sent.extend((0..40).map(|i| format!("{tag}-{i}")));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut stored = Vec::new();
    eventually("every acknowledged span is in the stream", async || {
        let s = cluster.read("FERRY");
        stored = s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| strings(m, "spans", "name"))
            .collect();
        stored
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .is_superset(&sent)
    })
    .await;
    let unique: BTreeSet<&String> = stored.iter().collect();
    eprintln!(
        "{} spans sent, {} stored, {} of them twice",
        sent.len(),
        stored.len(),
        stored.len() - unique.len()
    );
    assert_eq!(unique.len(), sent.len(), "only what was sent");
    assert_eq!(
        a.metric(
            "ferry_exporter_dropped_items_total",
            &["exporter=\"bus\"", "signal=\"traces\""]
        )
        .await,
        0
    );
}
