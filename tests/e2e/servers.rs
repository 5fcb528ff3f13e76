//! Real backends for the exporter tests, from Debian's packages: installed on first use (when
//! missing and we may), started as child processes on loopback ports of their own, stopped on
//! drop. A server that cannot be installed skips its test with a loud message, and fails it
//! under CI (`CI` set), so a green CI run always means the real server was exercised.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{PATIENCE, ReservedPort, reserve_port};

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Says loudly that a test could not run; under CI that is a failure.
fn unavailable(what: &str) {
    let msg = format!("SKIPPED: {what}");
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg} (not allowed under CI)"
    );
    eprintln!("\n{}\n!!! {msg}\n{}\n", "!".repeat(72), "!".repeat(72));
}

/// `binary` from Debian's `package`, installed with apt-get when missing (as root).
pub fn server_binary(binary: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = which(binary) {
        return Some(p);
    }
    if !is_root() || which("apt-get").is_none() {
        unavailable(&format!(
            "{binary} is not installed and cannot be (needs root and apt-get): apt-get install {package}"
        ));
        return None;
    }
    // Tests run in parallel; apt's own lock would make the second one fail, so queue here.
    let lock = Path::new(env!("CARGO_TARGET_TMPDIR")).join("apt.lock");
    let deadline = Instant::now() + Duration::from_secs(900);
    while std::fs::create_dir(&lock).is_err() {
        assert!(Instant::now() < deadline, "stale lock {}", lock.display());
        std::thread::sleep(Duration::from_millis(300));
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if which(binary).is_none() && !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    let _ = std::fs::remove_dir(&lock);
    let found = which(binary);
    if found.is_none() {
        unavailable(&format!(
            "apt-get install {package} did not provide {binary}"
        ));
    }
    found
}

/// A GET that reports failure instead of panicking (for readiness polls).
pub async fn try_get(url: &str) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(url.parse().ok()?).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A child process killed (and reaped) on drop, with its working directory.
struct Process {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(name: &str, url: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((200, _)) = try_get(url).await {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{name} not ready at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Prometheus server on loopback.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _process: Process,
}

impl Prometheus {
    /// Starts Prometheus on `port`, with the remote-write receiver on or off; `None` when it
    /// cannot be installed (the test is skipped loudly).
    pub async fn start(port: u16, remote_write: bool) -> Option<Prometheus> {
        let bin = server_binary("prometheus", "prometheus")?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let log = dir.path().join("prometheus.log");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if remote_write {
            cmd.arg("--web.enable-remote-write-receiver");
        }
        let mut child = cmd.spawn().expect("start prometheus");
        let url = format!("http://127.0.0.1:{port}");
        wait_ready("prometheus", &format!("{url}/-/ready"), &mut child, &log).await;
        Some(Prometheus {
            url,
            _process: Process { child, _dir: dir },
        })
    }

    /// The result of an instant query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url,
            ferry_proto::percent::encode(promql)
        );
        let (status, body) = try_get(&url).await.expect("query prometheus");
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }
}

/// A ClickHouse server on loopback.
pub struct ClickHouse {
    /// `http://127.0.0.1:PORT` of the HTTP interface.
    pub url: String,
    _process: Process,
    _ports: [ReservedPort; 2],
}

impl ClickHouse {
    /// Starts ClickHouse with its HTTP interface on `port`; `None` when it cannot be installed.
    pub async fn start(port: u16) -> Option<ClickHouse> {
        let bin = server_binary("clickhouse-server", "clickhouse-server")?;
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let log = dir.path().join("stderr.log");
        // Ports nobody else may take while it starts; it binds them beside the reservations.
        let tcp = reserve_port();
        let interserver = reserve_port();
        let mut child = Command::new(bin)
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--path={}/", p("data")))
            .arg(format!("--tmp_path={}/", p("tmp")))
            .arg(format!("--user_files_path={}/", p("user_files")))
            .arg(format!("--format_schema_path={}/", p("format_schemas")))
            .arg(format!("--http_port={port}"))
            .arg(format!("--tcp_port={}", tcp.port()))
            .arg(format!("--interserver_http_port={}", interserver.port()))
            .arg("--listen_host=127.0.0.1")
            .arg(format!("--logger.log={}", p("server.log")))
            .arg(format!("--logger.errorlog={}", p("error.log")))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start clickhouse-server");
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(
            "clickhouse",
            &format!("{url}/?query=SELECT%201"),
            &mut child,
            &log,
        )
        .await;
        Some(ClickHouse {
            url,
            _process: Process { child, _dir: dir },
            _ports: [tcp, interserver],
        })
    }

    /// Runs `sql` and returns its rows (`FORMAT JSONEachRow` is appended).
    pub async fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        let url = format!(
            "{}/?query={}",
            self.url,
            ferry_proto::percent::encode(&format!("{sql} FORMAT JSONEachRow"))
        );
        let (status, body) = try_get(&url).await.expect("query clickhouse");
        assert_eq!(status, 200, "{sql}: {body}");
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}
