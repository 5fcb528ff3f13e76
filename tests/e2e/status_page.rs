//! The status page in headless Chromium (Debian's, installed by [`chromium`]) on a daemon
//! under load with two receivers, an ingest processor and two exporters, one failing: the page
//! draws the pipeline, its figures agree with `/metrics`, they move as load goes on, and the
//! failing exporter is shown retrying with its last error. Screenshots are saved in
//! `target/e2e-artifacts/`. `ferry top` shows the same figures in a terminal (tmux). And the
//! admin endpoint's access rules and health.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, eventually, ferry_command, grpc_unary, install_once, request,
    traces_request, workspace,
};
use crate::load::Load;

/// Debian's package `package`, installed once, for the program at `path`.
fn debian(package: &str, path: &str) -> PathBuf {
    install_once(
        package,
        || std::path::Path::new(path).exists(),
        || {
            let apt = |args: &[&str]| {
                Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !apt(&["install", "-y", "-q", package]) {
                assert!(apt(&["update", "-q"]), "apt-get update failed");
                assert!(
                    apt(&["install", "-y", "-q", package]),
                    "apt-get install {package} failed"
                );
            }
        },
    );
    PathBuf::from(path)
}

fn chromium() -> PathBuf {
    debian("chromium", "/usr/bin/chromium")
}

/// `ferry top` on `admin` in a tmux pane 200 × 50: the pane's text, a few times.
struct Top {
    session: String,
}

impl Top {
    fn start(admin: &str) -> Top {
        let tmux = debian("tmux", "/usr/bin/tmux");
        let session = format!("ferry-top-{}", std::process::id());
        let ferry = crate::harness::ferry_command().get_program().to_owned();
        let ok = Command::new(&tmux)
            .args(["new-session", "-d", "-s", &session, "-x", "200", "-y", "50"])
            .arg(format!(
                "{} top --admin {admin} --interval 1s",
                ferry.to_str().unwrap()
            ))
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session");
        Top { session }
    }

    fn screen(&self) -> String {
        let out = Command::new("/usr/bin/tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// The number in the column `col` (0 = the name) of the row starting with `name`.
fn cell(screen: &str, name: &str, col: usize) -> u64 {
    let row = screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{screen}"));
    let cell = row.split_whitespace().nth(col).unwrap();
    cell.parse()
        .unwrap_or_else(|_| panic!("{name}[{col}] = {cell:?} in\n{screen}"))
}

/// Headless Chromium on `url`, given 3 s of page time: the rendered DOM, and a screenshot
/// saved as `target/e2e-artifacts/{shot}.png`.
fn browse(url: &str, shot: &str) -> String {
    let dir = workspace().join("target").join("e2e-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |extra: &str| {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1300",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(extra)
            .arg(url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let png = dir.join(format!("{shot}.png"));
    run(&format!("--screenshot={}", png.display()));
    assert!(png.metadata().unwrap().len() > 10_000, "a screenshot");
    run("--dump-dom")
}

/// The text of the element whose `data-key` is `key`.
fn figure<'a>(dom: &'a str, key: &str) -> &'a str {
    let at = dom
        .find(&format!("data-key=\"{key}\""))
        .unwrap_or_else(|| panic!("no {key} on the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find('<').unwrap();
    &rest[start..end]
}

fn number(dom: &str, key: &str) -> u64 {
    figure(dom, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key}: {:?} is not a count", figure(dom, key)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_draws_the_live_pipeline_and_its_figures_agree_with_the_metrics() {
    let good = Sink::start(Script::default()).await;
    let bad = Sink::start(Script {
        then: 503,
        ..Default::default()
    })
    .await;
    let f = Ferry::start(
        "status",
        &format!(
            r#"
            {PREAMBLE}
            processors = ["env"]
            [processors.env]
            kind = "resource"
            actions = [{{ key = "deployment.environment", action = "upsert", value = "e2e" }}]
            [exporters.good]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            [exporters.bad]
            plugin = "otlp-http"
            retry = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed = "10m" }}
            config = {{ endpoint = "{}" }}
            "#,
            good.url(),
            bad.url()
        ),
    );
    // Load on both receivers: OTLP/HTTP and OTLP/gRPC.
    let http = Load::start(&f.http_url(), 2, 10, Duration::from_millis(30), 0);
    let grpc = tokio::spawn({
        let addr = f.grpc.unwrap();
        async move {
            for i in 0u64.. {
                let body = traces_request(5, "grpc", 1_000_000 + i * 5);
                grpc_unary(
                    addr,
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    &body,
                )
                .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    eventually(
        "the good exporter sends and the bad one retries",
        async || {
            f.metric("ferry_exporter_sent_items_total", &["exporter=\"good\""])
                .await
                > 0
                && f.metric("ferry_exporter_retrying_batches", &["exporter=\"bad\""])
                    .await
                    > 0
        },
    )
    .await;
    let url = format!("http://{}/status", f.admin.unwrap());
    let sent = async || {
        f.metric("ferry_exporter_sent_items_total", &["exporter=\"good\""])
            .await
    };
    let accepted = async || {
        f.metric(
            "ferry_receiver_accepted_items_total",
            &["receiver=\"otlp_http\""],
        )
        .await
    };

    let (sent0, accepted0) = (sent().await, accepted().await);
    let first = browse(&url, "status-1");
    let (sent1, accepted1) = (sent().await, accepted().await);
    for node in [
        "receiver:otlp_grpc",
        "receiver:otlp_http",
        "processor:ingest:env",
        "queue:traces",
        "exporter:good",
        "exporter:bad",
    ] {
        assert!(
            first.contains(&format!("data-node=\"{node}\"")),
            "{node} drawn"
        );
    }
    let on_page = number(&first, "exporter:good:sent_items");
    assert!(
        (sent0..=sent1).contains(&on_page),
        "{sent0} <= {on_page} <= {sent1}"
    );
    let on_page = number(&first, "receiver:otlp_http:accepted_items");
    assert!(
        (accepted0..=accepted1).contains(&on_page),
        "{accepted0} <= {on_page} <= {accepted1}"
    );
    let state = figure(&first, "exporter:bad:state");
    assert!(
        state.starts_with("retrying") || state.starts_with("circuit_open"),
        "{state}"
    );
    assert!(
        figure(&first, "exporter:bad:last_error").contains("503"),
        "{first}"
    );
    assert_eq!(figure(&first, "exporter:good:state"), "ok");
    assert!(
        number(&first, "queue:traces:bad:behind_items") > 0,
        "the retrying exporter's cursor lags"
    );
    assert!(number(&first, "queue:traces:bad:behind_records") > 0);
    assert_eq!(figure(&first, "plugin:good:origin"), "built-in");
    assert_eq!(figure(&first, "plugin:good:digest").len(), 12);
    assert!(
        figure(&first, "plugin:good:contract").starts_with("0."),
        "{first}"
    );
    assert!(number(&first, "plugin:good:instances_created") >= 1);
    assert!(
        figure(&first, "plugin:good:memory").contains(" / 64.0 MiB"),
        "{first}"
    );
    assert!(
        first.contains("data-key=\"edge:queue:traces-&gt;exporter:good\""),
        "the queue's edge to the exporter, with its rate"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = browse(&url, "status-2");
    assert!(
        number(&second, "exporter:good:sent_items") > number(&first, "exporter:good:sent_items"),
        "the figures move as load goes on"
    );
    assert!(
        number(&second, "receiver:otlp_grpc:accepted_items")
            > number(&first, "receiver:otlp_grpc:accepted_items")
    );

    // The JSON behind it, against the metrics.
    let (before, rates_from) = (sent().await, accepted().await);
    let (status, _, body) = request(
        "GET",
        &format!("http://{}/status.json", f.admin.unwrap()),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let after = sent().await;
    let st: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let exporter = |name: &str| {
        st["exporters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()
            .clone()
    };
    let good_sent = exporter("good")["sent_items"].as_u64().unwrap();
    assert!((before..=after).contains(&good_sent));
    assert!(exporter("good")["sent_per_second"].as_f64().unwrap() > 0.0);
    let bad_status = exporter("bad");
    assert!(
        bad_status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    assert!(rates_from > 0);
    assert_eq!(st["processors"][0]["name"], "env");
    assert_eq!(st["queues"][0]["mode"], "memory");

    // `ferry top` in a terminal shows the same live figures, refreshed in place.
    let top = Top::start(&f.admin.unwrap().to_string());
    let mut first = String::new();
    eventually("ferry top draws its tables", async || {
        first = top.screen();
        first.contains("EXPORTER") && first.contains("good")
    })
    .await;
    assert!(
        first.contains("retrying"),
        "the bad exporter's state:\n{first}"
    );
    assert!(first.contains("HTTP 503"), "its last error:\n{first}");
    let sent_then = cell(&first, "good", 3);
    let metric_now = sent().await;
    assert!(
        sent_then <= metric_now && sent_then > 0,
        "{sent_then} vs {metric_now}"
    );
    eventually("its figures move in place", async || {
        let now = top.screen();
        now.matches("SENT/S").count() == 1 && cell(&now, "good", 3) > sent_then
    })
    .await;
    drop(top);
    grpc.abort();
    http.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_the_admin_endpoint_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        format!(
            "[receivers.otlp]\nhttp = \"127.0.0.1:0\"\n[admin]\nlisten = \"0.0.0.0:0\"\n{extra}\n\
             [exporters.d]\nplugin = \"debug\"\n"
        )
    };
    let path = dir.path().join("no-token.toml");
    std::fs::write(&path, config("")).unwrap();
    let out = ferry_command()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "admin.token_file: required when admin.listen (0.0.0.0:0) is not a loopback address"
        ),
        "{err}"
    );

    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n-e2e\n").unwrap();
    let f = Ferry::start(
        "admin-token",
        &config(&format!("token_file = \"{}\"", token.display())),
    );
    let base = format!("http://127.0.0.1:{}", f.admin.unwrap().port());
    let get = async |path: &str, headers: &[(&str, &str)]| {
        let (status, h, _) = request("GET", &format!("{base}{path}"), headers, vec![]).await;
        (status, h)
    };
    let (status, h) = get("/status.json", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(h["www-authenticate"], "Bearer");
    assert_eq!(get("/status", &[]).await.0, 401);
    assert_eq!(
        get("/status.json", &[("authorization", "Bearer wrong")])
            .await
            .0,
        401
    );
    assert_eq!(
        get("/status.json", &[("authorization", "Bearer t0k3n-e2e")])
            .await
            .0,
        200
    );
    assert_eq!(get("/status?token=t0k3n-e2e", &[]).await.0, 200);
    assert_eq!(get("/metrics", &[]).await.0, 200, "open by default");
    assert_eq!(get("/healthz", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_starting_while_plugins_load_then_ready() {
    use std::io::{BufRead, BufReader};
    let good = Sink::start(Script::default()).await;
    let plugins = crate::sandbox::plugin_dir();
    // Its `init` hangs: the start waits its 5 s timeout, then goes on without it.
    let hang = crate::sandbox::hostile_timed(
        "init-hang",
        "5s",
        "config = { mode = \"sleep-init\", sleep_ms = 3600000 }",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(
        &path,
        crate::sandbox::config_with(plugins.path(), &good, "", &hang),
    )
    .unwrap();
    let mut child = ferry_command()
        .args(["run", "--config", path.to_str().unwrap()])
        .env("FERRY_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[ferry health] {line}");
            let _ = tx.send(line);
        }
    });
    let needle = "receiver=\"admin\" addr=";
    let admin = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("admin address");
        if let Some(at) = line.find(needle) {
            break line[at + needle.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    let get = async |path: &str| {
        let (status, _, body) = request("GET", &format!("http://{admin}{path}"), &[], vec![]).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (ready, body) = get("/readyz").await;
    let (healthy, _) = get("/healthz").await;
    let (_, status) = get("/status.json").await;
    let logged: Vec<String> = rx.try_iter().collect();
    assert!(
        !logged.iter().any(|l| l.contains("ferry ready")),
        "asked while the plugin loads"
    );
    assert_eq!((ready, healthy), (503, 503), "{body}");
    assert!(body.starts_with("starting"), "{body}");
    assert!(status.contains("\"ready\":false"), "{status}");
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("ferry ready");
        if line.contains("ferry ready") {
            break;
        }
    }
    assert_eq!(get("/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(get("/healthz").await, (200, "ok\n".to_string()));
    child.kill().unwrap();
    child.wait().unwrap();
}
