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
//! | `retry` | answers `retryable` forever |
//! | `slow` | sleeps `sleep_ms` per call |
//! | `spy` | logs its config and the headers it sends to `url` |

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
}

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
        if parsed.mode == "spy" {
            ferry_sdk::log::info(&format!("spy: my config is {config}"));
        }
        Ok(Hostile {
            config: parsed,
            calls: 0,
        })
    }

    fn export(&mut self, _meta: BatchMeta, _batch: Batch<'_>) -> Result<(), ExportError> {
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
            "retry" => Err(ExportError::Retryable(
                "hostile: try again (forever)".into(),
            )),
            "slow" => {
                std::thread::sleep(Duration::from_millis(self.config.sleep_ms));
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
}

ferry_sdk::export!(Hostile);
