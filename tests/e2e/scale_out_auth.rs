//! A bus that requires credentials: the agent's `nats` exporter writes a `${secret:NAME}`
//! placeholder into its `CONNECT` line and the host puts the value from the environment in its
//! place, so the plugin never holds it; the gateway's receiver reads its own. Everything the
//! SDK sent arrives, a wrong password is refused by the server and named, and no daemon's log
//! shows a secret.

use std::collections::BTreeSet;

use crate::harness::{Ferry, PREAMBLE, Script, Sink, eventually, otel_send};
use crate::nats::NatsCluster;
use crate::scale_out::agent_with;
use crate::scale_out_gateways::spans_at;

/// An agent whose exporter authenticates with `auth` (plugin config keys), its secret `nats`
/// read from `NATS_SECRET`, which is `secret`.
fn agent(name: &str, cluster: &NatsCluster, auth: &str, secret: &str) -> Ferry {
    agent_with(
        name,
        cluster,
        r#"secrets = { nats = { env = "NATS_SECRET" } }"#,
        &format!(
            r#"stream = "AUTH", subject_prefix = "auth", create_stream = {{ replicas = 1 }}, {auth}"#
        ),
        &[("NATS_SECRET", secret)],
    )
}

/// A gateway whose receiver authenticates with `auth` (receiver keys), exporting to `sink`.
fn gateway(cluster: &NatsCluster, auth: &str, secret: &str, sink: &Sink) -> Ferry {
    Ferry::start_with_env(
        "auth-gateway",
        &format!(
            r#"
            {PREAMBLE}
            [receivers.nats]
            endpoints = {}
            stream = "AUTH"
            subject_prefix = "auth"
            {auth}
            [exporters.capture]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            "#,
            cluster.toml_urls(),
            sink.url(),
        ),
        &[("NATS_SECRET", secret)],
    )
}

fn span_ids(sent: &serde_json::Value) -> BTreeSet<String> {
    sent["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["span_id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs an agent and a gateway with these credentials through a server that requires them;
/// returns the daemons, for their logs.
async fn everything_arrives(
    server: &str,
    agent_auth: &str,
    gateway_auth: &str,
    secret: &str,
) -> (NatsCluster, [Ferry; 2]) {
    let cluster = NatsCluster::start_with(1, server).await;
    let sink = Sink::start(Script::default()).await;
    let g = gateway(&cluster, gateway_auth, secret, &sink);
    let a = agent("auth-agent", &cluster, agent_auth, secret);
    let sent = span_ids(&otel_send(
        "grpc",
        &format!("http://{}", a.grpc.unwrap()),
        "auth",
    ));
    eventually("every span crosses the authenticating bus", async || {
        let (got, _) = spans_at(&sink);
        sent.iter().all(|s| got.contains_key(s))
    })
    .await;
    (cluster, [a, g])
}

fn assert_never_logged(daemons: &[&Ferry], secret: &str) {
    for d in daemons {
        assert!(!d.logs().contains(secret), "a log shows the secret");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_password_from_the_host_reach_the_server_and_no_log_shows_them() {
    let secret = "s3cr3t-Pw_!9";
    let (cluster, [a, g]) = everything_arrives(
        &format!("authorization {{ users = [ {{ user: ferry, password: \"{secret}\" }} ] }}\n"),
        r#"user = "ferry", password = "${secret:nats}""#,
        "user = \"ferry\"\npassword = { env = \"NATS_SECRET\" }",
        secret,
    )
    .await;

    // A wrong password: the server refuses the CONNECT, and the agent names why.
    let wrong = agent(
        "auth-wrong",
        &cluster,
        r#"user = "ferry", password = "${secret:nats}""#,
        "not-the-password",
    );
    otel_send(
        "grpc",
        &format!("http://{}", wrong.grpc.unwrap()),
        "refused",
    );
    wrong.logged("Authorization Violation").await;
    assert_never_logged(&[&a, &g, &wrong], secret);
    assert_never_logged(&[&wrong], "not-the-password");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_the_host_reaches_the_server() {
    let secret = "tok-3x4mpl3.Z";
    let (_cluster, [a, g]) = everything_arrives(
        &format!("authorization {{ token: \"{secret}\" }}\n"),
        r#"token = "${secret:nats}""#,
        "token = { env = \"NATS_SECRET\" }",
        secret,
    )
    .await;
    assert_never_logged(&[&a, &g], secret);
}
