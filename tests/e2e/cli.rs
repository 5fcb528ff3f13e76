//! The CLI: `validate`, `plugins`, and a plugin from `examples/` loaded from a directory.

use crate::harness::{Ferry, PREAMBLE, built_wasm, eventually, post_traces, traces_request};

fn ferry(args: &[&str]) -> (bool, String, String) {
    let out = crate::harness::ferry_command().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_reports_every_error_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
        [receivers.otlp]
        grpc = "not an address"
        [pipeline]
        batch_max_items = 0
        [exporters.a]
        plugin = "debug"
        colour = "red"
        [runtime]
        worker_threads = 0
        "#,
    )
    .unwrap();
    let (ok, _, err) = ferry(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("receivers.otlp.grpc: invalid socket address"),
        "{err}"
    );
    assert!(err.contains("pipeline.batch_max_items"), "{err}");
    assert!(err.contains("exporters.a.colour: unknown field"), "{err}");
    assert!(
        err.contains("runtime.worker_threads: 0 is out of range"),
        "{err}"
    );

    // Plugin-level problems are reported too, all at once.
    let plugins = dir.path().join("plugins.toml");
    std::fs::write(
        &plugins,
        r#"
        [exporters.nope]
        plugin = "no-such-plugin"
        [exporters.noendpoint]
        plugin = "otlp-http"
        [exporters.debugbad]
        plugin = "debug"
        config = { verbosity = "extreme" }
        "#,
    )
    .unwrap();
    let (ok, _, err) = ferry(&["validate", plugins.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("exporters.nope.plugin") && err.contains("not found"),
        "{err}"
    );
    assert!(
        err.contains("exporters.noendpoint")
            && err.contains("`endpoint` or `traces_endpoint` is required"),
        "{err}"
    );
    assert!(
        err.contains("exporters.debugbad") && err.contains("extreme"),
        "{err}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[exporters.up]\nplugin = \"otlp-http\"\nconfig = { endpoint = \"http://${FERRY_TEST_HOST:-127.0.0.1}:4318\" }\n",
    )
    .unwrap();
    let (ok, out, err) = ferry(&["validate", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("valid (1 exporter)"), "{out}");
}

#[test]
fn every_first_party_exporter_names_what_is_wrong_with_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("exporters.toml");
    std::fs::write(
        &bad,
        r#"
        [exporters.z]
        plugin = "zipkin"
        config = { endpoint = "zipkin:9411" }
        [exporters.p]
        plugin = "prometheus-remote-write"
        config = { endpoint = "http://127.0.0.1:9090/api/v1/write", namespace = "1x", headers = { "Content-Encoding" = "gzip" } }
        [exporters.c]
        plugin = "clickhouse"
        config = { endpoint = "http://127.0.0.1:8123", database = "my-db" }
        [exporters.g]
        plugin = "otlp-grpc"
        config = { endpoint = "http://127.0.0.1:4317/v1/traces" }
        [exporters.f]
        plugin = "file"
        config = { path = "../escape", max_file_bytes = "10 parsecs" }
        "#,
    )
    .unwrap();
    let (ok, _, err) = ferry(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    for (exporter, needle) in [
        (
            "exporters.z",
            "config.endpoint: \"zipkin:9411\" is not an absolute URL",
        ),
        (
            "exporters.p",
            "namespace: \"1x\" must not start with a digit",
        ),
        (
            "exporters.p",
            "headers.Content-Encoding: set by the remote-write protocol",
        ),
        (
            "exporters.c",
            "database: \"my-db\" is not a plain identifier",
        ),
        ("exporters.g", "(no path)"),
        ("exporters.f", "path: \"../escape\" must be relative"),
        ("exporters.f", "max_file_bytes: unknown unit"),
        ("exporters.f", "no directory is granted to this exporter"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(exporter) && l.contains(needle))
            .unwrap_or_else(|| panic!("no error for {exporter} with {needle:?} in:\n{err}"));
        assert!(!line.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn example_plugin_from_a_directory_builds_lists_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        built_wasm("ferry_example_minimal"),
        dir.path().join("minimal.wasm"),
    )
    .unwrap();

    let (ok, out, err) = ferry(&["plugins", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("minimal "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("traces,metrics,logs") && line.contains("minimal.wasm"),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("debug ") && l.contains("built-in")),
        "{out}"
    );

    let ferry = Ferry::start(
        "minimal",
        &format!(
            r#"
            {PREAMBLE}
            [plugins]
            dir = "{}"
            [exporters.mini]
            plugin = "minimal"
            "#,
            dir.path().display()
        ),
    );
    let (status, _, _) = post_traces(&ferry, traces_request(3, "m", 0)).await;
    assert_eq!(status, 200);
    eventually("the example plugin logs its batch", async || {
        ferry.logs().contains("minimal: batch 1 of 3 items")
    })
    .await;
    assert!(ferry.logs().contains("exporter=\"mini\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_on_as_many_worker_threads_as_runtime_says() {
    let daemon = Ferry::start(
        "one-thread",
        &format!(
            r#"
            {PREAMBLE}
            [runtime]
            worker_threads = 1
            [exporters.d]
            plugin = "debug"
            "#
        ),
    );
    assert_eq!(daemon.metric("ferry_runtime_worker_threads", &[]).await, 1);
    let (status, _, _) = post_traces(&daemon, traces_request(3, "t", 0)).await;
    assert_eq!(status, 200);
    eventually("the batch is exported", async || {
        daemon
            .metric("ferry_exporter_sent_items_total", &["exporter=\"d\""])
            .await
            == 3
    })
    .await;

    // A bad value stops the daemon before it starts anything, with the key named.
    let err = refused_run("[runtime]\nworker_threads = 0\n[exporters.x]\nplugin = \"debug\"\n");
    assert!(
        err.contains("runtime.worker_threads: 0 is out of range"),
        "{err}"
    );
}

/// What `ferry run` says on stderr when it refuses to start on `config`.
fn refused_run(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, config).unwrap();
    let (ok, _, err) = ferry(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "ferry run started on {config}");
    err
}

#[test]
fn unknown_plugin_fails_startup_with_a_clear_error() {
    let err = refused_run("[exporters.x]\nplugin = \"ghost\"\n[admin]\nlisten = \"\"\n");
    assert!(err.contains("plugin \"ghost\" not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_exporter_in_detailed_mode_logs_every_item() {
    let ferry = Ferry::start(
        "detailed",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.debug]
            plugin = "debug"
            config = {{ verbosity = "detailed" }}
            "#
        ),
    );
    let (status, _, _) = post_traces(&ferry, traces_request(2, "d", 0x10)).await;
    assert_eq!(status, 200);
    eventually("one line per span", async || {
        let logs = ferry.logs();
        logs.contains("batch signal=traces items=2")
            && logs.contains("span_id=0000000000000010 parent= name=\"d-0\"")
            && logs.contains("span_id=0000000000000011 parent= name=\"d-1\"")
    })
    .await;
    assert!(
        ferry
            .logs()
            .contains("trace_id=07070707070707070707070707070707")
    );
}

/// Every receiver's request limit is checked against the queue budget by the receiver table,
/// jaeger's included (it once was missed), and by `ferry validate` like any other error.
#[test]
fn validate_refuses_a_receiver_request_limit_above_the_queue_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jaeger.toml");
    std::fs::write(
        &config,
        r#"
        [receivers.jaeger]
        thrift_http = "127.0.0.1:0"
        max_request_bytes = "2MiB"
        [receivers.zipkin]
        http = "127.0.0.1:0"
        max_request_bytes = "3MiB"
        [pipeline]
        queue_max_bytes = "1MiB"
        [exporters.sink]
        plugin = "blackhole"
        "#,
    )
    .unwrap();
    let (ok, _, err) = ferry(&["validate", config.to_str().unwrap()]);
    assert!(!ok, "{err}");
    for (receiver, limit) in [("jaeger", 2 << 20), ("zipkin", 3 << 20)] {
        assert!(
            err.contains(&format!(
                "receivers.{receiver}.max_request_bytes: {limit} exceeds the queue budget ({})",
                1 << 20
            )),
            "{err}"
        );
    }
    // Within the budget, the same config is valid.
    let fits = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"2MiB\"", "\"512KiB\"")
        .replace("\"3MiB\"", "\"512KiB\"");
    std::fs::write(&config, fits).unwrap();
    let (ok, out, err) = ferry(&["validate", config.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
}

/// `ferry plugins | head -1`: a reader that goes away ends the listing quietly, not with a
/// panic.
#[test]
fn a_listing_whose_reader_went_away_ends_quietly() {
    for args in [&["plugins"][..], &["default-config"], &["build-info"]] {
        let mut child = crate::harness::ferry_command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the command writes anything: its first write meets a broken pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
