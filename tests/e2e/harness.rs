//! Test harness: starts the real `ferry` binary, a capture backend, and real clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The usual start of a test config: both OTLP receivers and the admin endpoint on free
/// loopback ports (read back from the log), and quick batches. Ends inside `[pipeline]`, so
/// pipeline keys may follow.
pub const PREAMBLE: &str = r#"
[receivers.otlp]
grpc = "127.0.0.1:0"
http = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[pipeline]
batch_timeout = "20ms"
"#;

/// A config with `receivers` (TOML) plus OTLP and admin on free ports, exporting every signal
/// to `sink` over OTLP/HTTP.
pub fn capture_config(receivers: &str, sink: &Sink) -> String {
    format!(
        r#"{PREAMBLE}
        {receivers}
        [exporters.capture]
        plugin = "otlp-http"
        config = {{ endpoint = "{}" }}
        "#,
        sink.url()
    )
}

/// An attribute value as JSON, the shape the client scripts report.
fn json_value(v: &ferry_proto::common::any_value::Value) -> serde_json::Value {
    use ferry_proto::common::any_value::Value as V;
    match v {
        V::StringValue(s) => serde_json::json!(s),
        V::IntValue(i) => serde_json::json!(i),
        V::DoubleValue(d) => serde_json::json!(d),
        V::BoolValue(b) => serde_json::json!(b),
        other => serde_json::json!(format!("{other:?}")),
    }
}

/// Attributes as a map of JSON values.
pub fn json_attrs(
    kvs: &[ferry_proto::common::KeyValue],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| {
            let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
            (
                kv.key.clone(),
                v.map_or(serde_json::Value::Null, json_value),
            )
        })
        .collect()
}

/// Checks that span `s` carries each of `attributes` (a JSON object, types included) and each
/// of `events` (`[{"name", "attributes"}]`), as a client script reported sending them.
pub fn assert_attributes_and_events(
    s: &ferry_proto::trace::Span,
    attributes: &serde_json::Value,
    events: &serde_json::Value,
) {
    let got = json_attrs(&s.attributes);
    for (k, v) in attributes.as_object().unwrap() {
        assert_eq!(
            got.get(k),
            Some(v),
            "attribute {k} of {} (types survive)",
            s.name
        );
    }
    for e in events.as_array().unwrap() {
        let ev = s
            .events
            .iter()
            .find(|x| x.name == e["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("event {e} of {}", s.name));
        assert!(
            ev.time_unix_nano >= s.start_time_unix_nano,
            "event time of {}",
            s.name
        );
        let got = json_attrs(&ev.attributes);
        for (k, v) in e["attributes"].as_object().unwrap() {
            assert_eq!(got.get(k), Some(v), "attribute {k} of event {e}");
        }
    }
}

/// Standard base64 (padding optional).
pub fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// Lower-case hex of an id.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Liveness bound for anything a test waits on (never a performance threshold).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `f` until it returns true or `PATIENCE` passes.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running `ferry run` process.
pub struct Ferry {
    child: Child,
    /// Bound OTLP/gRPC address.
    pub grpc: Option<SocketAddr>,
    /// Bound OTLP/HTTP address.
    pub http: Option<SocketAddr>,
    /// Bound admin address.
    pub admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Ferry {
    /// Starts `ferry run --config` with `toml` (use port 0 everywhere; the bound addresses are
    /// read back from the log).
    pub fn start(name: &str, toml: &str) -> Ferry {
        Self::start_with_env(name, toml, &[])
    }

    /// Like [`Ferry::start`], with extra environment variables for the daemon.
    pub fn start_with_env(name: &str, toml: &str, env: &[(&str, &str)]) -> Ferry {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cmd = ferry_command();
        cmd.args(["run", "--config", path.to_str().unwrap()])
            .envs(env.iter().copied());
        Self::spawn(name, cmd, dir)
    }

    /// Starts `ferry run` on its embedded default config.
    pub fn start_default() -> Ferry {
        let mut cmd = ferry_command();
        cmd.arg("run");
        Self::spawn("default", cmd, tempfile::tempdir().unwrap())
    }

    /// Starts `cmd` (a `ferry run` of some executable) and waits until it is ready.
    pub fn start_command(name: &str, cmd: Command) -> Ferry {
        Self::spawn(name, cmd, tempfile::tempdir().unwrap())
    }

    fn spawn(name: &str, mut cmd: Command, dir: tempfile::TempDir) -> Ferry {
        let mut child = cmd
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[ferry {tag}] {line}");
                if line.contains("ferry ready") || line.contains("error") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
            let _ = tx.send("<exited>".into());
        });
        loop {
            let line = rx
                .recv_timeout(PATIENCE)
                .expect("ferry did not become ready");
            if line.contains("ferry ready") {
                break;
            }
            if line == "<exited>" {
                panic!(
                    "ferry exited before it was ready:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
        let mut ferry = Ferry {
            grpc: None,
            http: None,
            admin: None,
            child,
            logs,
            dir,
        };
        ferry.grpc = ferry.receiver_addr("otlp_grpc");
        ferry.http = ferry.receiver_addr("otlp_http");
        ferry.admin = ferry.receiver_addr("admin");
        ferry
    }

    /// The address `receiver` (e.g. `zipkin`) bound, as the daemon logged it.
    pub fn receiver_addr(&self, receiver: &str) -> Option<SocketAddr> {
        let needle = format!("receiver=\"{receiver}\" addr=");
        self.logs.lock().unwrap().iter().find_map(|l| {
            let rest = &l[l.find(&needle)? + needle.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// `http://` base URL of the OTLP/HTTP receiver.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http.expect("http receiver"))
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = request(
            "GET",
            &format!("http://{}/metrics", self.admin.unwrap()),
            &[],
            vec![],
        )
        .await;
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Items of `signal` that `exporter` dropped after a permanent error.
    pub async fn dropped_permanent(&self, exporter: &str, signal: &str) -> u64 {
        let (e, s) = (
            format!("exporter=\"{exporter}\""),
            format!("signal=\"{signal}\""),
        );
        self.metric(
            "ferry_exporter_dropped_items_total",
            &[&e, &s, "reason=\"permanent\""],
        )
        .await
    }

    /// Sum of every series of `name` whose labels contain all of `labels` (`k="v"` strings).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, or `VmHWM` for the peak).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The config file the daemon was started with (rewrite it to trigger a reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ferry.toml")
    }

    /// Sends `signal` (e.g. `HUP`) to the daemon.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} failed");
    }

    /// Kills the daemon with SIGKILL (no chance to flush or save anything) and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// Waits until the daemon has logged a line containing `needle`.
    pub async fn logged(&self, needle: &str) {
        eventually(&format!("ferry logs {needle:?}"), async || {
            self.logs().contains(needle)
        })
        .await
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ferry did not stop after SIGTERM");
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns status, headers and body.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, HeaderMap, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// One unary gRPC call with a raw message; returns (grpc-status, grpc-message, response body).
pub async fn grpc_unary(addr: SocketAddr, path: &str, message: &[u8]) -> (i32, String, Bytes) {
    let (status, message, payload, _) = grpc_unary_trailers(addr, path, message).await;
    (status, message, payload)
}

/// [`grpc_unary`], also returning the trailers (or headers, for a trailers-only answer).
pub async fn grpc_unary_trailers(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
) -> (i32, String, Bytes, http::HeaderMap) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let resp = client.request(req).await.expect("gRPC request");
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let mut trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    let get = |k: &str| {
        trailers
            .get(k)
            .or_else(|| head.get(k))
            .map(|v| v.to_str().unwrap().to_string())
    };
    let status = get("grpc-status").expect("grpc-status").parse().unwrap();
    let message = get("grpc-message")
        .map(|m| ferry_proto::percent::decode(&m))
        .unwrap_or_default();
    let payload = if body.len() >= 5 {
        body.slice(5..)
    } else {
        body
    };
    for (k, v) in &head {
        if !trailers.contains_key(k) {
            trailers.insert(k.clone(), v.clone());
        }
    }
    (status, message, payload, trailers)
}

/// What the capture backend answers.
#[derive(Clone, Default)]
pub struct Script {
    /// Statuses for the first requests, in order; afterwards `then`.
    pub first: Vec<(u16, Option<&'static str>)>,
    /// Status once `first` is used up (0 = 200).
    pub then: u16,
    /// Body of every 200 answer (empty: a plain OTLP success).
    pub ok_body: Vec<u8>,
    /// `Location` of every 3xx answer.
    pub redirect_to: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

#[derive(Default)]
struct SinkState {
    received: Vec<(String, HeaderMap, Bytes)>,
    attempts: Vec<(String, u16)>,
    script: Script,
    in_flight: usize,
    peak_in_flight: usize,
}

/// An OTLP/HTTP backend that records what it accepted and answers as scripted.
pub struct Sink {
    /// Bound address.
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
}

async fn sink_handler(State(state): State<Arc<Mutex<SinkState>>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let body = axum::body::to_bytes(req.into_body(), 256 << 20)
        .await
        .unwrap();
    let delay = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
        s.script.delay
    };
    tokio::time::sleep(delay).await;
    state.lock().unwrap().in_flight -= 1;
    let body = if gzip {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        Bytes::from(out)
    } else {
        body
    };
    let mut s = state.lock().unwrap();
    let (status, retry_after) = if s.script.first.is_empty() {
        (
            if s.script.then == 0 {
                200
            } else {
                s.script.then
            },
            None,
        )
    } else {
        s.script.first.remove(0)
    };
    s.attempts.push((path.clone(), status));
    if status == 200 {
        s.received.push((path, headers, body));
        let answer = s.script.ok_body.clone();
        return (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            answer,
        )
            .into_response();
    }
    let mut resp = (StatusCode::from_u16(status).unwrap(), "scripted failure").into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    if (300..400).contains(&status) {
        resp.headers_mut()
            .insert("location", s.script.redirect_to.parse().unwrap());
    }
    resp
}

impl Sink {
    /// Starts a sink on a free loopback port.
    pub async fn start(script: Script) -> Sink {
        let state = Arc::new(Mutex::new(SinkState {
            script,
            ..Default::default()
        }));
        let app = Router::new()
            .fallback(sink_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { addr, state }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the script.
    pub fn set_script(&self, script: Script) {
        self.state.lock().unwrap().script = script;
    }

    /// Accepted request bodies for `path`.
    pub fn bodies(&self, path: &str) -> Vec<Bytes> {
        let s = self.state.lock().unwrap();
        s.received
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// Request headers of every accepted request, any path.
    pub fn headers(&self) -> Vec<HeaderMap> {
        let s = self.state.lock().unwrap();
        s.received.iter().map(|(_, h, _)| h.clone()).collect()
    }

    /// Most requests the sink was answering at once (each held for the script's `delay`).
    pub fn peak_in_flight(&self) -> usize {
        self.state.lock().unwrap().peak_in_flight
    }

    /// Every request seen, accepted or not: (path, status answered).
    pub fn attempts(&self) -> Vec<(String, u16)> {
        self.state.lock().unwrap().attempts.clone()
    }
}

/// The Python interpreter of a venv with the OpenTelemetry SDK and OTLP exporters, created on
/// first use (pinned versions, from PyPI).
pub fn python() -> PathBuf {
    python_with(
        &[
            "opentelemetry-sdk==1.45.2",
            "opentelemetry-exporter-otlp-proto-grpc==1.45.2",
            "opentelemetry-exporter-otlp-proto-http==1.45.2",
        ],
        "import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
    )
}

/// The Python interpreter of the shared e2e venv, with `packages` installed (from PyPI) unless
/// `import_check` already succeeds.
pub fn python_with(packages: &[&str], import_check: &str) -> PathBuf {
    python_in("e2e-venv", packages, import_check)
}

/// The Python interpreter of venv `target/NAME`, for clients whose pins clash with the shared
/// one's, with `packages` installed (from PyPI) unless `import_check` already succeeds.
pub fn python_in(name: &str, packages: &[&str], import_check: &str) -> PathBuf {
    let venv = workspace().join("target").join(name);
    let py = venv.join("bin").join("python");
    let ready = || {
        Command::new(&py)
            .args(["-c", import_check])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    install_once(name, ready, || {
        if !py.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv failed");
        }
        let ok = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install of {packages:?} failed");
    });
    py
}

/// Runs `install` unless `ready()` already holds, once across every test process (several
/// may get here at once: a directory `target/NAME.lock` is the lock).
pub fn install_once(name: &str, ready: impl Fn() -> bool, install: impl FnOnce()) {
    if ready() {
        return;
    }
    let lock = workspace().join("target").join(format!("{name}.lock"));
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::fs::create_dir(&lock).is_err() {
        assert!(Instant::now() < deadline, "stale lock {}", lock.display());
        std::thread::sleep(Duration::from_millis(200));
        if ready() {
            return;
        }
    }
    struct Unlock(PathBuf);
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unlock = Unlock(lock);
    if !ready() {
        install();
    }
    assert!(ready(), "{name} is not usable after installing it");
}

/// Runs `cmd` and returns its stdout; fails the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tests/e2e/clients/NAME`: a script driving a real client library.
pub fn client_script(name: &str) -> PathBuf {
    workspace().join("tests/e2e/clients").join(name)
}

/// Runs a client script and returns the JSON it prints about what it sent; a failing client
/// fails the test with its stderr.
pub fn client_json(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&run(cmd)).expect("client JSON")
}

/// Runs `tests/e2e/clients/otel_send.py` and returns what it reports having sent.
pub fn otel_send(protocol: &str, endpoint: &str, run: &str) -> serde_json::Value {
    client_json(
        Command::new(python())
            .arg(client_script("otel_send.py"))
            .args(["--protocol", protocol, "--endpoint", endpoint, "--run", run]),
    )
}

/// Path of a wasm component built by the host's build script.
pub fn built_wasm(stem: &str) -> PathBuf {
    Path::new(env!("FERRY_PLUGIN_WASM_DIR")).join(format!("{stem}.wasm"))
}

/// An OTLP traces request with `n` spans named `{tag}-{i}`; span ids start at `first_id`.
pub fn traces_request(n: usize, tag: &str, first_id: u64) -> Vec<u8> {
    use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
    use ferry_proto::trace_service::ExportTraceServiceRequest;
    use prost::Message;
    let spans = (0..n)
        .map(|i| Span {
            trace_id: [7u8; 16].to_vec(),
            span_id: (first_id + i as u64).to_be_bytes().to_vec(),
            name: format!("{tag}-{i}"),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
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

/// Every span in the traces bodies the sink accepted, by span id (hex), with the attributes
/// of its resource.
pub fn spans_by_id(
    sink: &Sink,
) -> std::collections::BTreeMap<
    String,
    Vec<(ferry_proto::trace::Span, Vec<ferry_proto::common::KeyValue>)>,
> {
    use ferry_proto::trace_service::ExportTraceServiceRequest;
    use prost::Message;
    let mut out: std::collections::BTreeMap<String, Vec<_>> = std::collections::BTreeMap::new();
    for body in sink.bodies("/v1/traces") {
        for rs in ExportTraceServiceRequest::decode(body)
            .unwrap()
            .resource_spans
        {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.entry(hex(&s.span_id))
                        .or_default()
                        .push((s, resource.clone()));
                }
            }
        }
    }
    out
}

/// Replaces `ferry`'s config file in one step (write aside, rename), as an editor or a deploy
/// would.
pub fn rewrite(ferry: &Ferry, toml: &str) {
    let path = ferry.config_path();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, toml).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// The `ferry` binary, sharing the tests' compiled-plugin cache.
pub fn ferry_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env(
        "FERRY_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-cache"),
    );
    cmd
}

/// Span names in every traces body the sink accepted.
pub fn span_names(sink: &Sink) -> Vec<String> {
    use ferry_proto::trace_service::ExportTraceServiceRequest;
    use prost::Message;
    sink.bodies("/v1/traces")
        .into_iter()
        .flat_map(|b| ExportTraceServiceRequest::decode(b).unwrap().resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|s| s.name)
        .collect()
}

/// `POST /v1/traces` as protobuf.
pub async fn post_traces(ferry: &Ferry, body: Vec<u8>) -> (u16, HeaderMap, Bytes) {
    request(
        "POST",
        &format!("{}/v1/traces", ferry.http_url()),
        &[("content-type", "application/x-protobuf")],
        body,
    )
    .await
}

/// A loopback port held for a server that starts later on a known address (a backend that is
/// "down" at first). The port is bound by a socket that never listens: connections to it are
/// refused, the kernel gives it to no one binding port 0, and a socket without
/// `SO_REUSEADDR` cannot bind it. The real server takes it while it is held, since the
/// servers tests start (Rust's and Go's listeners, ClickHouse) bind with `SO_REUSEADDR`, which
/// Linux allows beside a socket that is not listening. Keep it until the test ends.
pub struct ReservedPort {
    _socket: socket2::Socket,
    port: u16,
}

impl ReservedPort {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Reserves a loopback port (see [`ReservedPort`]).
pub fn reserve_port() -> ReservedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    ReservedPort {
        _socket: socket,
        port,
    }
}

/// A retry policy quick enough for tests of a backend that is down for a while.
pub const QUICK_RETRY: &str =
    r#"retry = { initial_interval = "200ms", max_interval = "1s", max_elapsed = "5m" }"#;

/// A reserved port refuses connections, is given to no one binding port 0 and cannot be bound
/// without `SO_REUSEADDR`, until the real server takes it, which it can while it is held.
#[tokio::test]
async fn a_reserved_port_refuses_connections_and_stays_reserved_until_its_server_takes_it() {
    let reserved = reserve_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], reserved.port()));
    let err = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // Another server asking for any port is never given this one.
    let others: Vec<std::net::TcpListener> = (0..512)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    assert!(
        others
            .iter()
            .all(|l| l.local_addr().unwrap().port() != reserved.port())
    );
    // Nor can a socket that does not ask to share an address bind it.
    let plain = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let err = plain.bind(&addr.into()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // The server the port was held for takes it, and then answers.
    let server = tokio::net::TcpListener::bind(addr).await.unwrap();
    let accepted = tokio::spawn(async move { server.accept().await.map(|_| ()) });
    tokio::net::TcpStream::connect(addr).await.unwrap();
    accepted.await.unwrap().unwrap();
    drop(reserved);
}
