//! The `otlp-grpc` exporter: OpenTelemetry SDK → agent Ferry → (OTLP over gRPC, h2c) → gateway
//! Ferry → capture, plus a gateway that is down at first and one that refuses for good.

use crate::harness::{
    Ferry, PREAMBLE, QUICK_RETRY, Script, Sink, eventually, otel_send, reserve_port,
};
use crate::otel_sdk::assert_sdk_runs_arrived;

/// A gateway Ferry with its OTLP/gRPC receiver on `port`, forwarding `signals` to `sink`.
fn gateway(port: u16, signals: &str, sink: &Sink) -> Ferry {
    Ferry::start(
        "gateway",
        &format!(
            r#"
            [receivers.otlp]
            grpc = "127.0.0.1:{port}"
            [admin]
            listen = "127.0.0.1:0"
            [pipeline]
            batch_timeout = "20ms"
            [exporters.capture]
            plugin = "otlp-http"
            signals = {signals}
            config = {{ endpoint = "{}" }}
            "#,
            sink.url()
        ),
    )
}

fn agent(port: u16, compression: &str) -> Ferry {
    Ferry::start(
        "agent",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.gateway]
            plugin = "otlp-grpc"
            {QUICK_RETRY}
            config = {{ endpoint = "http://127.0.0.1:{port}", compression = "{compression}" }}
            "#
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_through_an_agent_to_a_gateway_over_grpc_arrives_intact() {
    let sink = Sink::start(Script::default()).await;
    let reserved = reserve_port();
    let port = reserved.port();
    let gw = gateway(port, r#"["traces", "metrics", "logs"]"#, &sink);
    let agent = agent(port, "gzip");
    let grpc = otel_send(
        "grpc",
        &format!("http://{}", agent.grpc.unwrap()),
        "gw-grpc",
    );
    let http = otel_send("http", &agent.http_url(), "gw-http");
    assert_sdk_runs_arrived(&sink, &[(&grpc, "gw-grpc"), (&http, "gw-http")]).await;
    assert_eq!(
        agent
            .metric(
                "ferry_exporter_sent_items_total",
                &["exporter=\"gateway\"", "signal=\"traces\""]
            )
            .await,
        12
    );
    assert_eq!(
        gw.metric(
            "ferry_receiver_accepted_items_total",
            &["receiver=\"otlp_grpc\"", "signal=\"traces\""]
        )
        .await,
        12
    );
    assert_eq!(
        agent
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_that_is_down_at_first_gets_everything_once_it_is_up() {
    let sink = Sink::start(Script::default()).await;
    let reserved = reserve_port();
    let port = reserved.port();
    let agent = agent(port, "none");
    let sent = otel_send(
        "grpc",
        &format!("http://{}", agent.grpc.unwrap()),
        "gw-down",
    );
    eventually("the agent retries the unreachable gateway", async || {
        agent
            .metric("ferry_exporter_retries_total", &["exporter=\"gateway\""])
            .await
            >= 2
    })
    .await;
    let _gw = gateway(port, r#"["traces", "metrics", "logs"]"#, &sink);
    assert_sdk_runs_arrived(&sink, &[(&sent, "gw-down")]).await;
    assert_eq!(
        agent
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_from_the_gateway_is_dropped_and_counted() {
    // The gateway takes traces only: its receiver answers metrics and logs with UNIMPLEMENTED,
    // which the OTLP spec says never to retry.
    let sink = Sink::start(Script::default()).await;
    let reserved = reserve_port();
    let port = reserved.port();
    let _gw = gateway(port, r#"["traces"]"#, &sink);
    let agent = agent(port, "none");
    otel_send(
        "grpc",
        &format!("http://{}", agent.grpc.unwrap()),
        "gw-perm",
    );
    eventually("metrics and logs are dropped as permanent", async || {
        agent.dropped_permanent("gateway", "metrics").await == 4
            && agent.dropped_permanent("gateway", "logs").await == 3
    })
    .await;
    assert!(
        agent.logs().contains("UNIMPLEMENTED"),
        "the reason is logged"
    );
    assert_eq!(
        agent
            .metric(
                "ferry_exporter_sent_items_total",
                &["exporter=\"gateway\"", "signal=\"traces\""]
            )
            .await,
        6
    );
    assert_eq!(
        agent
            .metric("ferry_exporter_retries_total", &["exporter=\"gateway\""])
            .await,
        0,
        "a permanent answer is not retried"
    );
}
