//! Agents → NATS JetStream (three nodes, R=3) → gateways → a capture backend, with the real
//! OpenTelemetry SDK: every span, log and metric the SDK was told was accepted arrives, in both
//! modes, and in `by_trace` mode every trace arrives through one gateway, even when its spans
//! entered through different agents.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use ferry_proto::common::KeyValue;
use ferry_proto::common::any_value::Value as V;
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, client_json, client_script, eventually, hex, otel_send,
    post_traces, python,
};
use crate::nats::NatsCluster;

/// A gateway: the `nats` receiver on `stream` (subjects: its name in lower case), tagging
/// every resource with its name, and exporting to `sink`.
pub fn gateway(name: &str, cluster: &NatsCluster, stream: &str, mode: &str, sink: &Sink) -> Ferry {
    gateway_with(name, cluster, stream, mode, sink, &[], "")
}

/// A [`gateway`] whose exporter runs the processors named `chain`, defined in `defs` (TOML).
pub fn gateway_with(
    name: &str,
    cluster: &NatsCluster,
    stream: &str,
    mode: &str,
    sink: &Sink,
    chain: &[&str],
    defs: &str,
) -> Ferry {
    Ferry::start(
        name,
        &format!(
            r#"
            {PREAMBLE}
            processors = ["gateway"]
            [receivers.nats]
            endpoints = {}
            stream = "{stream}"
            subject_prefix = "{prefix}"
            mode = "{mode}"
            shards = 4
            ack_wait = "4s"
            takeover = "4s"
            lease_replicas = 3
            gateway_id = "{name}"
            [processors.gateway]
            kind = "resource"
            actions = [{{ key = "ferry.gateway", action = "upsert", value = "{name}" }}]
            {defs}
            [exporters.capture]
            plugin = "otlp-http"
            processors = {chain:?}
            config = {{ endpoint = "{}" }}
            "#,
            cluster.toml_urls(),
            sink.url(),
            prefix = stream.to_lowercase(),
        ),
    )
}

/// Waits until two gateways hold two of the four shards each: a trace is whole at one
/// gateway only while its shard stays there.
pub async fn two_shards_each(gateways: &[Ferry; 2]) {
    eventually("the gateways hold two shards each", async || {
        let mut owned = Vec::new();
        for g in gateways {
            owned.push(g.metric("ferry_receiver_nats_shards_owned", &[]).await);
        }
        owned == [2, 2]
    })
    .await;
}

/// An agent: OTLP in, the `nats` exporter to `stream` out (subjects as [`gateway`]'s).
pub fn agent(name: &str, cluster: &NatsCluster, stream: &str, mode: &str) -> Ferry {
    Ferry::start(
        name,
        &format!(
            r#"
            {PREAMBLE}
            [exporters.bus]
            plugin = "nats"
            retry = {{ initial_interval = "100ms", max_interval = "1s", max_elapsed = "10m" }}
            config = {{ endpoints = {}, stream = "{stream}", subject_prefix = "{prefix}", mode = "{mode}", shards = 4, create_stream = {{ replicas = 3 }} }}
            "#,
            cluster.toml_urls(),
            prefix = stream.to_lowercase(),
        ),
    )
}

fn gateway_of(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "ferry.gateway")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            V::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Span id → (trace id, gateway) of every span the sink got; and how many arrived twice.
pub fn spans_at(sink: &Sink) -> (BTreeMap<String, (String, String)>, usize) {
    let mut out = BTreeMap::new();
    let mut twice = 0;
    for body in sink.bodies("/v1/traces") {
        for rs in ExportTraceServiceRequest::decode(body)
            .unwrap()
            .resource_spans
        {
            let gw = gateway_of(&rs.resource.clone().unwrap_or_default().attributes);
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                twice += usize::from(
                    out.insert(hex(&s.span_id), (hex(&s.trace_id), gw.clone()))
                        .is_some(),
                );
            }
        }
    }
    (out, twice)
}

fn log_bodies(sink: &Sink) -> BTreeSet<String> {
    sink.bodies("/v1/logs")
        .into_iter()
        .flat_map(|b| ExportLogsServiceRequest::decode(b).unwrap().resource_logs)
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .filter_map(|r| match r.body?.value? {
            V::StringValue(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn metric_names(sink: &Sink) -> BTreeSet<String> {
    sink.bodies("/v1/metrics")
        .into_iter()
        .flat_map(|b| {
            ExportMetricsServiceRequest::decode(b)
                .unwrap()
                .resource_metrics
        })
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .map(|m| m.name)
        .collect()
}

fn strings(v: &serde_json::Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect()
}

async fn every_signal_arrives(mode: &str, stream: &str, cluster: &NatsCluster) {
    let sink = Sink::start(Script::default()).await;
    let gateways = [
        gateway(&format!("{mode}-g1"), cluster, stream, mode, &sink),
        gateway(&format!("{mode}-g2"), cluster, stream, mode, &sink),
    ];
    if mode == "by_trace" {
        two_shards_each(&gateways).await;
    }
    let agents = [
        agent(&format!("{mode}-a1"), cluster, stream, mode),
        agent(&format!("{mode}-a2"), cluster, stream, mode),
    ];
    let (mut spans, mut logs) = (BTreeSet::new(), BTreeSet::new());
    for (i, a) in agents.iter().enumerate() {
        let sent = otel_send(
            "grpc",
            &format!("http://{}", a.grpc.unwrap()),
            &format!("{mode}-{i}"),
        );
        spans.extend(strings(&sent, "spans", "span_id"));
        logs.extend(strings(&sent, "logs", "body"));
    }
    // Traces that cross services, each service sending to another agent.
    let crossed = client_json(
        Command::new(python())
            .arg(client_script("otel_two_services.py"))
            .args(["--front", &format!("http://{}", agents[0].grpc.unwrap())])
            .args(["--back", &format!("http://{}", agents[1].grpc.unwrap())])
            .args(["--traces", "24", "--run", mode]),
    );
    spans.extend(strings(&crossed, "spans", "span_id"));

    eventually(
        &format!("{mode}: everything the SDK sent reaches the backend"),
        async || {
            let (got, _) = spans_at(&sink);
            spans.iter().all(|s| got.contains_key(s))
                && log_bodies(&sink).is_superset(&logs)
                && ["e2e.requests", "e2e.latency", "e2e.inflight"]
                    .iter()
                    .all(|m| metric_names(&sink).contains(*m))
        },
    )
    .await;
    let (got, twice) = spans_at(&sink);
    eprintln!(
        "{mode}: {} spans sent, {twice} delivered twice",
        spans.len()
    );
    let mut by_trace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (trace, gw) in got.values() {
        by_trace.entry(trace).or_default().insert(gw);
    }
    let used: BTreeSet<&str> = by_trace.values().flatten().copied().collect();
    assert!(used.iter().all(|g| g.starts_with(mode)), "{used:?}");
    if mode == "by_trace" {
        assert_eq!(used.len(), 2, "both gateways deliver: {used:?}");
        for (trace, gws) in &by_trace {
            assert_eq!(gws.len(), 1, "trace {trace} came through {gws:?}");
        }
        for g in &gateways {
            let owned = g.metric("ferry_receiver_nats_shards_owned", &[]).await;
            assert_eq!(owned, 2, "4 shards over 2 gateways");
        }
    }
    for g in &gateways {
        assert_eq!(
            g.metric("ferry_receiver_nats_terminated_total", &[]).await,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_two_gateways_deliver_every_signal_in_both_modes() {
    let cluster = NatsCluster::start(3).await;
    every_signal_arrives("work_queue", "WQ", &cluster).await;
    every_signal_arrives("by_trace", "BT", &cluster).await;
}

/// A request of `n` spans named `{tag}-{i}`, all of one trace whose id follows from `r`.
fn trace_request(r: u64, n: usize, tag: &str) -> Vec<u8> {
    use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
    let trace_id =
        (u128::from(r + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_be_bytes();
    let spans = (0..n)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: (r * 1000 + i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("{tag}-{i}"),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn owned(g: &Ferry) -> u64 {
    g.metric("ferry_receiver_nats_shards_owned", &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_a_gateway_moves_its_shards_loses_nothing_and_it_gets_them_back() {
    let cluster = NatsCluster::start(3).await;
    let sink = Sink::start(Script::default()).await;
    let mut g1 = gateway("gw-1", &cluster, "KILL", "by_trace", &sink);
    let g2 = gateway("gw-2", &cluster, "KILL", "by_trace", &sink);
    eventually("the gateways hold two shards each", async || {
        owned(&g1).await == 2 && owned(&g2).await == 2
    })
    .await;
    let a = agent("kill-agent", &cluster, "KILL", "by_trace");
    let mut sent = BTreeSet::new();
    let mut killed_at = None;
    for r in 0..160u64 {
        if r == 50 {
            g1.kill9();
            killed_at = Some(std::time::Instant::now());
        }
        let tag = format!("g{r}");
        let (status, _, body) = post_traces(&a, trace_request(r, 20, &tag)).await;
        assert_eq!(status, 200, "request {r}: {body:?}");
        sent.extend((0..20).map(|i| format!("{tag}-{i}")));
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    eventually("the surviving gateway takes every shard", async || {
        owned(&g2).await == 4
    })
    .await;
    eprintln!(
        "shards moved within {:?} of the kill (takeover = 4s)",
        killed_at.unwrap().elapsed()
    );
    eventually(
        "every span the agent accepted reaches the backend",
        async || {
            let names: BTreeSet<String> = crate::harness::span_names(&sink).into_iter().collect();
            names.is_superset(&sent)
        },
    )
    .await;
    // Back again: it gets its share back.
    let g1 = gateway("gw-1", &cluster, "KILL", "by_trace", &sink);
    eventually(
        "the returning gateway gets its two shards back",
        async || owned(&g1).await == 2 && owned(&g2).await == 2,
    )
    .await;
    let redelivered = g2
        .metric("ferry_receiver_nats_redelivered_total", &[])
        .await;
    let names = crate::harness::span_names(&sink);
    eprintln!(
        "{} spans sent, {} delivered ({} redelivered messages)",
        sent.len(),
        names.len(),
        redelivered
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_down_entirely_for_30s_the_agent_queues_and_delivers_everything_afterwards() {
    let mut cluster = NatsCluster::start(3).await;
    let sink = Sink::start(Script::default()).await;
    let g = gateway("down-gw", &cluster, "DOWN", "work_queue", &sink);
    let a = agent("down-agent", &cluster, "DOWN", "work_queue");
    let mut sent = BTreeSet::new();
    let send = async |from: u64, to: u64, sent: &mut BTreeSet<String>| {
        for r in from..to {
            let tag = format!("d{r}");
            let (status, _, body) = post_traces(&a, trace_request(r, 20, &tag)).await;
            assert_eq!(status, 200, "request {r}: {body:?}");
            sent.extend((0..20).map(|i| format!("{tag}-{i}")));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    send(0, 20, &mut sent).await;
    for i in 0..3 {
        cluster.kill(i);
    }
    // 30 s without a bus: the agent keeps accepting, into its queue.
    send(20, 320, &mut sent).await;
    cluster.restart_all().await;
    eventually(
        "everything the agent accepted reaches the backend",
        async || {
            let names: BTreeSet<String> = crate::harness::span_names(&sink).into_iter().collect();
            names.is_superset(&sent)
        },
    )
    .await;
    assert_eq!(
        a.metric("ferry_exporter_dropped_items_total", &["exporter=\"bus\""])
            .await,
        0
    );
    assert_eq!(
        g.metric("ferry_receiver_nats_terminated_total", &[]).await,
        0
    );
}
