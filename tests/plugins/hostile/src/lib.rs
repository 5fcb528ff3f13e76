//! A hostile exporter for the sandbox tests: `config.mode` picks how it misbehaves.
//!
//! | mode | what `export` (or `init`) does |
//! | --- | --- |
//! | `trap` | executes `unreachable` (every call, or every `every`-th call) |
//! | `panic` | panics (a Rust panic is a trap with a message on stderr) |
//! | `loop-export` / `loop-init` | spins forever |
//! | `oom` | allocates until the memory cap stops it |
//! | `egress` | sends a request to `url`, which it was not granted |
//! | `redirect` | posts to `url` and follows the redirect it gets |
//! | `file` / `env` / `socket` | tries to read a file, the environment, or open a socket |
//! | `listen` / `udp` / `lookup` | tries to listen on `url`, send a datagram to `url`, or look up `url`'s host |
//! | `tcp` | connects to `url` (`host:port`) and writes a line saying how many items it got |
//! | `retry` | answers `retryable` forever |
//! | `slow` | sleeps `sleep_ms` per call |
//! | `spy` | logs its config and the headers it sends to `url` |
//! | `hoard-fields` / `hoard-bodies` | creates header fields with large values, or request bodies it fills and never sends, and never drops them (up to `hoard_mib` MiB of host memory per call) |
//! | `sleep-init` | blocks in a host call (a clock sleep of `sleep_ms`) in `init` |
//! | `flood` | logs `count` messages of `size` bytes per call |
//! | `big-error` | fails with a permanent error message of `size` bytes |
//! | `forge` | logs, and fails with, text holding newlines and a line that names another exporter |
//! | `chatty` | prints `size` bytes to stderr on every call and panics on every `every`-th |
//!
//! In any mode, `shutdown_sleep_ms` makes `shutdown` block in a clock sleep that long.
//! `describe` blocks (a clock sleep of an hour) when the granted directory holds a file named
//! `hang-describe`: `describe` gets no config, so that is how a test asks for it.

use std::time::Duration;

use ferry_sdk::http::{self, HttpError, Request};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: String,
    #[serde(default = "one")]
    every: u32,
    #[serde(default)]
    url: String,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    path: String,
    #[serde(default = "gib")]
    hoard_mib: usize,
    #[serde(default)]
    count: usize,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    shutdown_sleep_ms: u64,
}

fn gib() -> usize {
    1024
}

/// Keeps header fields of ~60 KiB each alive on the host until `mib` MiB are held.
fn hoard_fields(mib: usize) {
    let value = vec![b'v'; 60 << 10];
    let mut held = 0;
    while held < mib << 20 {
        let fields = wasip2::http::types::Fields::new();
        if fields.append("x-hoard", &value).is_ok() {
            held += value.len();
        }
        std::mem::forget(fields);
    }
}

/// Fills request bodies that are never sent, and keeps them, until `mib` MiB are written.
fn hoard_bodies(mib: usize) {
    use wasip2::http::types::{Fields, OutgoingRequest};
    let chunk = vec![b'b'; 64 << 10];
    let mut held = 0;
    while held < mib << 20 {
        let request = OutgoingRequest::new(Fields::new());
        let Ok(body) = request.body() else { return };
        let Ok(stream) = body.write() else { return };
        while let Ok(n) = stream.check_write() {
            if n == 0 {
                break;
            }
            let n = (n as usize).min(chunk.len());
            if stream.write(&chunk[..n]).is_err() {
                break;
            }
            held += n;
        }
        std::mem::forget(stream);
        std::mem::forget(body);
        std::mem::forget(request);
    }
}

/// A message that would read, unescaped, as a second log line blaming another exporter.
const FORGED: &str =
    "looks fine\n2026-12-02T00:00:00.000000Z ERROR ferry: all data lost exporter=\"good\"";

fn one() -> u32 {
    1
}

struct Hostile {
    config: Config,
    calls: u32,
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn refused(what: &str, outcome: String) -> Result<(), ExportError> {
    ferry_sdk::log::warn(&format!("hostile {what}: {outcome}"));
    Err(ExportError::Permanent(format!("{what}: {outcome}")))
}

impl Hostile {
    fn request(&self, url: &str) -> Request<'static> {
        Request::post(url, b"hostile".to_vec()).header("x-plugin", "hostile")
    }

    fn send(&self, url: &str) -> Result<http::Response, HttpError> {
        http::send(&self.request(url))
    }
}

impl Exporter for Hostile {
    fn manifest() -> Manifest {
        if std::fs::metadata("/data/hang-describe").is_ok() {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Manifest::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let parsed: Config = ferry_sdk::parse_config(config)?;
        if parsed.mode == "loop-init" {
            spin();
        }
        if parsed.mode == "sleep-init" {
            std::thread::sleep(Duration::from_millis(parsed.sleep_ms));
        }
        if parsed.mode == "spy" {
            ferry_sdk::log::info(&format!("spy: my config is {config}"));
        }
        Ok(Hostile {
            config: parsed,
            calls: 0,
        })
    }

    fn export(&mut self, meta: BatchMeta, _batch: Batch<'_>) -> Result<(), ExportError> {
        self.calls += 1;
        let due = self.calls.is_multiple_of(self.config.every.max(1));
        match self.config.mode.as_str() {
            // On wasm32, `abort` is the `unreachable` instruction.
            "trap" if due => std::process::abort(),
            "panic" if due => panic!("hostile plugin panics on call {}", self.calls),
            "loop-export" => spin(),
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "egress" => match self.send(&self.config.url) {
                Err(e) => refused("egress", e.to_string()),
                Ok(r) => Err(ExportError::Permanent(format!(
                    "egress reached {} ({})",
                    self.config.url, r.status
                ))),
            },
            "redirect" => {
                let first = self
                    .send(&self.config.url)
                    .map_err(|e| ExportError::Retryable(e.to_string()))?;
                let Some(location) = first.header("location").map(str::to_string) else {
                    return Err(ExportError::Permanent(format!(
                        "no redirect (status {})",
                        first.status
                    )));
                };
                match self.send(&location) {
                    Err(e) => refused("redirect", format!("following {location}: {e}")),
                    Ok(r) => Err(ExportError::Permanent(format!(
                        "redirect reached {location} ({})",
                        r.status
                    ))),
                }
            }
            "file" => {
                let path = if self.config.path.is_empty() {
                    "/etc/passwd"
                } else {
                    &self.config.path
                };
                match std::fs::read(path) {
                    Err(e) => refused("file", format!("reading {path} failed: {e}")),
                    Ok(b) => Err(ExportError::Permanent(format!(
                        "read {} bytes of {path}",
                        b.len()
                    ))),
                }
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                if vars.is_empty() && args.is_empty() {
                    refused("env", "no environment variables and no args visible".into())
                } else {
                    Err(ExportError::Permanent(format!(
                        "saw env {vars:?} args {args:?}"
                    )))
                }
            }
            "socket" => match std::net::TcpStream::connect(self.config.url.as_str()) {
                Err(e) => refused(
                    "socket",
                    format!("connect to {} failed: {e}", self.config.url),
                ),
                Ok(_) => Err(ExportError::Permanent(format!(
                    "opened a socket to {}",
                    self.config.url
                ))),
            },
            "listen" => match std::net::TcpListener::bind(self.config.url.as_str()) {
                Err(e) => refused(
                    "listen",
                    format!("listening on {} failed: {e}", self.config.url),
                ),
                Ok(l) => Err(ExportError::Permanent(format!(
                    "listening on {:?}",
                    l.local_addr()
                ))),
            },
            "udp" => {
                let sent = std::net::UdpSocket::bind("0.0.0.0:0")
                    .and_then(|s| s.send_to(b"hostile", self.config.url.as_str()));
                match sent {
                    Err(e) => refused(
                        "udp",
                        format!("datagram to {} failed: {e}", self.config.url),
                    ),
                    Ok(_) => Err(ExportError::Permanent(format!(
                        "sent a datagram to {}",
                        self.config.url
                    ))),
                }
            }
            "lookup" => {
                use std::net::ToSocketAddrs;
                match self.config.url.to_socket_addrs() {
                    Err(e) => refused(
                        "lookup",
                        format!("looking up {} failed: {e}", self.config.url),
                    ),
                    Ok(found) => Err(ExportError::Permanent(format!(
                        "looked up {}: {:?}",
                        self.config.url,
                        found.collect::<Vec<_>>()
                    ))),
                }
            }
            "tcp" => {
                let line = format!("hostile tcp: {} items\n", meta.items);
                ferry_sdk::net::TcpStream::connect(&self.config.url, Duration::from_secs(2))
                    .and_then(|mut s| s.write_all(line.as_bytes()))
                    .map_err(|e| ExportError::Retryable(format!("tcp to {}: {e}", self.config.url)))
            }
            "retry" => Err(ExportError::Retryable(
                "hostile: try again (forever)".into(),
            )),
            "slow" => {
                std::thread::sleep(Duration::from_millis(self.config.sleep_ms));
                Ok(())
            }
            "hoard-fields" => {
                hoard_fields(self.config.hoard_mib);
                Ok(())
            }
            "hoard-bodies" => {
                hoard_bodies(self.config.hoard_mib);
                Ok(())
            }
            "flood" => {
                let message = "f".repeat(self.config.size);
                for _ in 0..self.config.count {
                    ferry_sdk::log::info(&message);
                }
                Ok(())
            }
            "big-error" => Err(ExportError::Permanent("e".repeat(self.config.size))),
            "forge" => {
                ferry_sdk::log::warn(FORGED);
                Err(ExportError::Permanent(FORGED.into()))
            }
            "chatty" => {
                eprintln!(
                    "chatty plugin, call {}: {}",
                    self.calls,
                    "x".repeat(self.config.size)
                );
                if due {
                    panic!("chatty plugin panics on call {}", self.calls);
                }
                Ok(())
            }
            "spy" => match self.send(&self.config.url) {
                Ok(r) => {
                    ferry_sdk::log::info(&format!(
                        "spy: request headers I sent: {:?}",
                        self.request(&self.config.url).headers
                    ));
                    if r.status == 200 {
                        Ok(())
                    } else {
                        Err(ExportError::Retryable(format!("status {}", r.status)))
                    }
                }
                Err(e) => Err(ExportError::Retryable(e.to_string())),
            },
            _ => Ok(()),
        }
    }

    fn shutdown(&mut self) {
        std::thread::sleep(Duration::from_millis(self.config.shutdown_sleep_ms));
    }
}

ferry_sdk::export!(Hostile);
