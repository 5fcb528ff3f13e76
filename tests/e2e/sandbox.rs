//! Hostile plugins, each next to a well-behaved exporter on the same pipeline: the daemon
//! stays up, the well-behaved exporter receives every item, and the hostile exporter's failure
//! is counted in `/metrics` and named in the log.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, built_wasm, eventually, post_traces, span_names, traces_request,
};

pub struct Setup {
    pub ferry: Ferry,
    pub good: Sink,
    _plugins: tempfile::TempDir,
}

pub fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        built_wasm("ferry_test_hostile"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    dir
}

/// `[exporters.NAME]` for the hostile plugin with fast retries, a 1 s call limit and a
/// quick circuit breaker; `extra` adds keys (`config = {...}` at least).
pub fn hostile(name: &str, extra: &str) -> String {
    hostile_timed(name, "1s", extra)
}

/// [`hostile`] with another call limit.
pub fn hostile_timed(name: &str, timeout: &str, extra: &str) -> String {
    format!(
        r#"
        [exporters.{name}]
        plugin = "hostile"
        signals = ["traces"]
        timeout = "{timeout}"
        retry = {{ initial_interval = "50ms", max_interval = "200ms", max_elapsed = "3s" }}
        circuit_breaker = {{ threshold = 3, open_for = "200ms", max_open_for = "1s" }}
        {extra}
        "#
    )
}

/// A config with the plugin directory, `pipeline` keys, the well-behaved exporter `good`
/// (traces to `good`) and `exporters`.
pub fn config_with(plugins: &Path, good: &Sink, pipeline: &str, exporters: &str) -> String {
    format!(
        r#"
        {PREAMBLE}
        {pipeline}
        [plugins]
        dir = "{}"
        [exporters.good]
        plugin = "otlp-http"
        signals = ["traces"]
        config = {{ endpoint = "{}" }}
        {exporters}
        "#,
        plugins.display(),
        good.url()
    )
}

pub async fn setup_with(name: &str, hostile_exporters: &str, env: &[(&str, &str)]) -> Setup {
    let good = Sink::start(Script::default()).await;
    let plugins = plugin_dir();
    let toml = config_with(plugins.path(), &good, "", hostile_exporters);
    let ferry = Ferry::start_with_env(name, &toml, env);
    Setup {
        ferry,
        good,
        _plugins: plugins,
    }
}

async fn setup(name: &str, extra: &str) -> Setup {
    setup_with(name, &hostile("hostile", extra), &[]).await
}

/// Sends `requests` requests of `spans` spans each, as separate batches.
pub async fn send(ferry: &Ferry, requests: usize, spans: usize) -> BTreeSet<String> {
    let mut sent = BTreeSet::new();
    for r in 0..requests {
        let tag = format!("b{r}");
        let (status, _, _) =
            post_traces(ferry, traces_request(spans, &tag, (r * 1000) as u64)).await;
        assert_eq!(status, 200);
        sent.extend((0..spans).map(|i| format!("{tag}-{i}")));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    sent
}

impl Setup {
    pub async fn good_gets_everything(&self, sent: &BTreeSet<String>) {
        eventually(
            "the well-behaved exporter receives every item",
            async || span_names(&self.good).len() >= sent.len(),
        )
        .await;
        let got = span_names(&self.good);
        assert_eq!(got.len(), sent.len(), "no duplicates");
        assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), sent);
    }

    pub async fn metric(&self, name: &str, labels: &[&str]) -> u64 {
        self.ferry.metric(name, labels).await
    }

    async fn hostile_metric(&self, name: &str, labels: &[&str]) -> u64 {
        let mut all = vec!["exporter=\"hostile\""];
        all.extend_from_slice(labels);
        self.ferry.metric(name, &all).await
    }

    /// Waits for a log line naming `exporter` that contains `needle`.
    pub async fn logged(&self, exporter: &str, needle: &str) {
        let tag = format!("exporter=\"{exporter}\"");
        eventually(
            &format!("a log line of {exporter} with {needle:?}"),
            async || {
                self.ferry
                    .logs()
                    .lines()
                    .any(|l| l.contains(&tag) && l.contains(needle))
            },
        )
        .await;
    }

    async fn hostile_gives_up_on(&self, items: u64) {
        eventually(
            "the hostile exporter's batches are given up and counted",
            async || {
                self.hostile_metric("ferry_exporter_dropped_items_total", &[])
                    .await
                    >= items
            },
        )
        .await;
    }

    pub fn alive(&mut self) {
        assert!(self.ferry.alive(), "the daemon must survive its plugins");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trap_on_every_call() {
    let mut s = setup("trap", "config = { mode = \"trap\" }").await;
    let sent = send(&s.ferry, 3, 4).await;
    s.good_gets_everything(&sent).await;
    s.logged("hostile", "plugin trapped").await;
    s.hostile_gives_up_on(12).await;
    assert!(s.hostile_metric("ferry_exporter_faults_total", &[]).await >= 3);
    assert!(
        s.hostile_metric("ferry_exporter_circuit_opened_total", &[])
            .await
            >= 1
    );
    s.logged("hostile", "circuit breaker open").await;
    assert_eq!(
        s.metric("ferry_exporter_dropped_items_total", &["exporter=\"good\""])
            .await,
        0
    );
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn trap_on_every_tenth_call_recovers_on_a_fresh_instance() {
    let mut s = setup("trap10", "config = { mode = \"trap\", every = 10 }").await;
    let sent = send(&s.ferry, 14, 2).await;
    s.good_gets_everything(&sent).await;
    eventually(
        "the hostile exporter delivers every item on fresh instances",
        async || {
            s.hostile_metric("ferry_exporter_sent_items_total", &[])
                .await
                == 28
        },
    )
    .await;
    assert!(s.hostile_metric("ferry_exporter_faults_total", &[]).await >= 1);
    assert!(
        s.hostile_metric("ferry_exporter_instances_created_total", &[])
            .await
            >= 2
    );
    assert_eq!(
        s.hostile_metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
    s.logged("hostile", "instance discarded").await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_panic_is_a_trap_with_its_message_in_the_log() {
    let mut s = setup("panic", "config = { mode = \"panic\" }").await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    s.logged("hostile", "hostile plugin panics on call 1").await;
    assert!(s.hostile_metric("ferry_exporter_faults_total", &[]).await >= 1);
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_in_export_is_interrupted() {
    let mut s = setup("loop-export", "config = { mode = \"loop-export\" }").await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    s.logged("hostile", "interrupt").await;
    assert!(s.hostile_metric("ferry_exporter_faults_total", &[]).await >= 1);
    s.hostile_gives_up_on(6).await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_in_init_does_not_stop_the_daemon() {
    let mut s = setup("loop-init", "config = { mode = \"loop-init\" }").await;
    s.logged("hostile", "starts without an instance").await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    assert!(s.hostile_metric("ferry_exporter_faults_total", &[]).await >= 1);
    s.hostile_gives_up_on(6).await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn allocating_past_the_memory_cap_traps() {
    let mut s = setup("oom", "memory = \"16MiB\"\nconfig = { mode = \"oom\" }").await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    s.logged(
        "hostile",
        "plugin trapped: forcing trap when growing memory",
    )
    .await;
    assert!(s.hostile_metric("ferry_exporter_faults_total", &[]).await >= 1);
    s.alive();
}

async fn egress_case(name: &str, allowed: &str, url: &str, forbidden: &Sink) -> Setup {
    let extra = format!(
        "allowed_hosts = [\"{allowed}\"]\nconfig = {{ mode = \"egress\", url = \"{url}\" }}"
    );
    let mut s = setup(name, &extra).await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    s.logged("hostile", "denied: not in allowed_hosts").await;
    s.logged("hostile", "hostile egress: request denied").await;
    assert!(
        s.hostile_metric("ferry_exporter_egress_denied_total", &[])
            .await
            >= 1
    );
    s.hostile_gives_up_on(6).await;
    assert!(
        forbidden.attempts().is_empty(),
        "a denied request reached its target"
    );
    s.alive();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_to_a_granted_host_by_ip_is_denied() {
    let target = Sink::start(Script::default()).await;
    let port = target.addr.port();
    egress_case(
        "egress-ip",
        &format!("http://localhost:{port}"),
        &format!("http://127.0.0.1:{port}/v1/traces"),
        &target,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_to_another_port_is_denied() {
    let granted = Sink::start(Script::default()).await;
    let target = Sink::start(Script::default()).await;
    egress_case(
        "egress-port",
        &granted.url(),
        &format!("{}/v1/traces", target.url()),
        &target,
    )
    .await;
    assert!(granted.attempts().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_by_redirect_is_denied() {
    let target = Sink::start(Script::default()).await;
    let redirector = Sink::start(Script {
        then: 302,
        redirect_to: format!("{}/stolen", target.url()),
        ..Default::default()
    })
    .await;
    let extra = format!(
        "allowed_hosts = [\"{}\"]\nconfig = {{ mode = \"redirect\", url = \"{}/v1/traces\" }}",
        redirector.url(),
        redirector.url()
    );
    let mut s = setup("redirect", &extra).await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    s.logged("hostile", "hostile redirect: following").await;
    assert!(
        s.hostile_metric("ferry_exporter_egress_denied_total", &[])
            .await
            >= 1
    );
    assert!(
        !redirector.attempts().is_empty(),
        "the granted host was reached"
    );
    assert!(
        target.attempts().is_empty(),
        "the redirect target was reached"
    );
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_files_no_environment_no_sockets() {
    let target = Sink::start(Script::default()).await;
    let exporters = [
        hostile(
            "hostile-file",
            "config = { mode = \"file\", path = \"/etc/passwd\" }",
        ),
        hostile("hostile-env", "config = { mode = \"env\" }"),
        hostile(
            "hostile-socket",
            &format!(
                "config = {{ mode = \"socket\", url = \"{}\" }}",
                target.addr
            ),
        ),
    ]
    .concat();
    let mut s = setup_with(
        "ambient",
        &exporters,
        &[("FERRY_SECRET_IN_ENV", "do-not-leak")],
    )
    .await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    s.logged("hostile-file", "hostile file: reading /etc/passwd failed")
        .await;
    s.logged(
        "hostile-env",
        "hostile env: no environment variables and no args visible",
    )
    .await;
    s.logged("hostile-socket", "hostile socket: connect to")
        .await;
    for name in ["hostile-file", "hostile-env", "hostile-socket"] {
        let e = format!("exporter=\"{name}\"");
        eventually(
            &format!("{name}'s refused batches are counted"),
            async || {
                s.metric(
                    "ferry_exporter_dropped_items_total",
                    &[&e, "reason=\"permanent\""],
                )
                .await
                    == 6
            },
        )
        .await;
    }
    assert!(target.attempts().is_empty());
    assert!(!s.ferry.logs().contains("do-not-leak"));
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_directory_is_the_only_file_access() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("probe.txt"), "hello").unwrap();
    let exporters = [
        hostile(
            "granted",
            &format!(
                "granted_dir = \"{}\"\nconfig = {{ mode = \"file\", path = \"/data/probe.txt\" }}",
                data.path().display()
            ),
        ),
        hostile(
            "outside",
            &format!(
                "granted_dir = \"{}\"\nconfig = {{ mode = \"file\", path = \"/etc/passwd\" }}",
                data.path().display()
            ),
        ),
    ]
    .concat();
    let mut s = setup_with("granted", &exporters, &[]).await;
    let sent = send(&s.ferry, 1, 2).await;
    s.good_gets_everything(&sent).await;
    s.logged("granted", "read 5 bytes of /data/probe.txt").await;
    s.logged("outside", "hostile file: reading /etc/passwd failed")
        .await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn retryable_forever_is_bounded_by_max_elapsed() {
    let mut s = setup("retry", "config = { mode = \"retry\" }").await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    eventually("retries end in a counted drop", async || {
        s.hostile_metric(
            "ferry_exporter_dropped_items_total",
            &["reason=\"retries_exhausted\""],
        )
        .await
            == 6
    })
    .await;
    assert!(s.hostile_metric("ferry_exporter_retries_total", &[]).await >= 2);
    assert_eq!(
        s.hostile_metric("ferry_exporter_faults_total", &[]).await,
        0
    );
    s.logged("hostile", "retries exhausted").await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_plugin_holds_back_only_its_own_cursor() {
    let mut s = setup("slow", "config = { mode = \"slow\", sleep_ms = 700 }").await;
    let sent = send(&s.ferry, 6, 2).await;
    s.good_gets_everything(&sent).await;
    // The good exporter is done while the slow one (0.7 s a batch) is still working through
    // its backlog: its lag did not reach the other cursor.
    let slow_done = s
        .hostile_metric("ferry_exporter_sent_items_total", &[])
        .await;
    assert!(
        slow_done < 12,
        "the slow exporter should still be behind ({slow_done})"
    );
    eventually("the slow exporter catches up", async || {
        s.hostile_metric("ferry_exporter_sent_items_total", &[])
            .await
            == 12
    })
    .await;
    assert_eq!(
        s.hostile_metric("ferry_exporter_faults_total", &[]).await,
        0
    );
    assert_eq!(
        s.metric("ferry_receiver_refused_requests_total", &[]).await,
        0
    );
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_headers_reach_the_backend_but_never_the_plugin() {
    let backend = Sink::start(Script::default()).await;
    let extra = format!(
        r#"allowed_hosts = ["{url}"]
        secret_headers = {{ authorization = {{ env = "FERRY_TEST_TOKEN", prefix = "Bearer " }} }}
        config = {{ mode = "spy", url = "{url}/v1/traces" }}"#,
        url = backend.url()
    );
    let mut s = setup_with(
        "secret",
        &hostile("hostile", &extra),
        &[("FERRY_TEST_TOKEN", "s3cr3t-t0ken")],
    )
    .await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    eventually("the spy's requests reach the backend", async || {
        !backend.headers().is_empty()
    })
    .await;
    for h in backend.headers() {
        assert_eq!(h.get("authorization").unwrap(), "Bearer s3cr3t-t0ken");
        assert_eq!(h.get("x-plugin").unwrap(), "hostile");
    }
    s.logged("hostile", "spy: my config is").await;
    s.logged("hostile", "spy: request headers I sent").await;
    let logs = s.ferry.logs();
    assert!(
        !logs.contains("s3cr3t"),
        "the secret leaked into the plugin's view:\n{logs}"
    );
    // The good exporter never gets the hostile exporter's secret.
    assert!(
        s.good
            .headers()
            .iter()
            .all(|h| h.get("authorization").is_none())
    );
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_sender_caps_responses_and_times_out_slow_backends() {
    let big = Sink::start(Script {
        ok_body: vec![0u8; 64 << 10],
        ..Default::default()
    })
    .await;
    let slow = Sink::start(Script {
        delay: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let plugins = plugin_dir();
    let exporter = |name: &str, url: String| {
        format!(
            r#"
            [exporters.{name}]
            plugin = "otlp-http"
            signals = ["traces"]
            config = {{ endpoint = "{url}" }}
            retry = {{ initial_interval = "50ms", max_interval = "100ms", max_elapsed = "1s" }}
            "#
        )
    };
    let toml = format!(
        r#"
        {PREAMBLE}
        [plugins]
        dir = "{}"
        http = {{ first_byte_timeout = "300ms", max_response_bytes = "4KiB" }}
        {}{}"#,
        plugins.path().display(),
        exporter("big", big.url()),
        exporter("slow", slow.url())
    );
    let mut ferry = Ferry::start("sender", &toml);
    let (status, _, _) = post_traces(&ferry, traces_request(2, "s", 0)).await;
    assert_eq!(status, 200);
    for name in ["big", "slow"] {
        let e = format!("exporter=\"{name}\"");
        eventually(
            &format!("{name}'s batch is retried, then given up"),
            async || {
                ferry
                    .metric(
                        "ferry_exporter_dropped_items_total",
                        &[&e, "reason=\"retries_exhausted\""],
                    )
                    .await
                    == 2
            },
        )
        .await;
        assert!(
            ferry
                .metric(
                    "ferry_exporter_failed_attempts_total",
                    &[&e, "kind=\"retryable\""]
                )
                .await
                >= 2
        );
    }
    assert!(
        !big.attempts().is_empty(),
        "the oversized answer was really sent"
    );
    assert!(ferry.alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn precompiled_files_in_the_plugin_directory_are_never_loaded() {
    let plugins = plugin_dir();
    // A `.cwasm` next to the component (and one named like a built-in) must be ignored.
    std::fs::write(plugins.path().join("hostile.cwasm"), b"not trusted").unwrap();
    std::fs::write(plugins.path().join("debug.cwasm"), b"not trusted").unwrap();
    let good = Sink::start(Script::default()).await;
    let toml = format!(
        r#"
        {PREAMBLE}
        [plugins]
        dir = "{}"
        [exporters.good]
        plugin = "otlp-http"
        config = {{ endpoint = "{}" }}
        [exporters.hostile]
        plugin = "hostile"
        config = {{ mode = "slow", sleep_ms = 0 }}
        [exporters.debug]
        plugin = "debug"
        "#,
        plugins.path().display(),
        good.url()
    );
    let ferry = Ferry::start("cwasm", &toml);
    let (status, _, _) = post_traces(&ferry, traces_request(3, "c", 0)).await;
    assert_eq!(status, 200);
    eventually("all three exporters work", async || {
        ferry
            .metric("ferry_exporter_sent_items_total", &["signal=\"traces\""])
            .await
            == 9
    })
    .await;
}
