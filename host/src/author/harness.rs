//! `ferry plugin test`: runs a plugin in the daemon's own sandbox against the sample batches,
//! with the capture server standing in for its backend, and reports what it sent, how each
//! call ended and how long it took.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use http::StatusCode;
use serde::Deserialize;

use super::capture::{Capture, Captured};
use super::inspect::ManifestView;
use super::samples::{self, Size};
use super::{millis, size_text};
use crate::config::{ExporterConfig, substitute_env};
use crate::pipeline::queue::Batch;
use crate::pipeline::router::{Export, Outcome};
use crate::plugin::contract::World;
use crate::plugin::engine::CodeOrigin;
use crate::plugin::exporter::PluginExporter;
use crate::plugin::registry;
use crate::plugin::resources::{HostLimits, HostUsage, IDLE_ALLOWANCE};
use crate::plugin::sender::HostSender;
use crate::plugin::text::LogPolicy;
use crate::plugin::{LoadError, PluginEngine};
use crate::telemetry::Telemetry;

/// The config a plugin gets when none is given: its endpoint is the capture server.
pub const DEFAULT_CONFIG: &str = r#"{"endpoint": "${capture}"}"#;

/// How to run the test.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin's config as JSON; `${capture}` becomes the capture server's URL and other
    /// `${NAME}` come from the environment.
    pub config: String,
    /// The status the capture server answers with.
    pub status: u16,
    /// The exporter's `memory` setting (e.g. `"128MiB"`); the daemon's default otherwise.
    pub memory: Option<String>,
    /// The exporter's `timeout` setting (e.g. `"30s"`).
    pub timeout: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: DEFAULT_CONFIG.into(),
            status: 200,
            memory: None,
            timeout: None,
        }
    }
}

/// One `export` call (or the final `shutdown`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    /// `traces`, `metrics`, `logs`, or `shutdown`.
    pub signal: String,
    /// `small` or `large` (absent for shutdown).
    pub size: Option<Size>,
    /// Items in the batch.
    pub items: u32,
    /// Batch size in bytes, as encoded for the plugin.
    pub bytes: usize,
    /// `ok`, or the error kind.
    pub result: &'static str,
    /// The plugin's message, for errors.
    pub message: Option<String>,
    /// Wall-clock time of the call.
    pub ms: f64,
    /// What reached the capture server during the call.
    pub sent: Vec<Captured>,
    /// The most host memory the instance held during the call.
    pub host_peak: HostUsage,
    /// What it still held when the call was over (a leak, past a few KiB).
    pub host_held: HostUsage,
}

impl Call {
    /// True when the call succeeded.
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// Everything the test found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The file.
    pub file: String,
    /// The manifest, once the plugin loaded.
    pub manifest: Option<ManifestView>,
    /// Contract version.
    pub contract: Option<&'static str>,
    /// Where the machine code came from.
    pub code: Option<CodeOrigin>,
    /// How long compiling (or loading from the cache) took.
    pub compile_ms: Option<f64>,
    /// The config as the plugin received it.
    pub config: String,
    /// The capture server's URL.
    pub capture: String,
    /// Status the capture server answered with.
    pub status: u16,
    /// Instantiation, `describe` and `init`.
    pub init_ms: Option<f64>,
    /// `init` returned (it may also trap or time out, which the calls then report).
    pub init_ok: bool,
    /// The calls, in order, ending with shutdown.
    pub calls: Vec<Call>,
    /// Most linear memory an instance held.
    pub memory_peak: usize,
    /// The instance memory cap.
    pub memory_limit: usize,
    /// The instance's host memory and resource limits.
    pub host_limits: HostLimits,
    /// Requests refused because they went somewhere other than the capture server.
    pub denied: u64,
    /// Why the plugin could not be tested at all.
    pub problems: Vec<String>,
}

impl Report {
    /// True when the plugin loaded and every call succeeded.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.init_ok && self.calls.iter().all(Call::ok)
    }
}

/// The exporter config the test runs under: the plugin's config, only the capture server
/// reachable, and the limits asked for.
fn exporter_config(
    name: &str,
    config_json: &str,
    capture: &str,
    options: &Options,
) -> anyhow::Result<ExporterConfig> {
    let config: toml::Table = serde_json::from_str(config_json)
        .context("--config must be a JSON object whose values TOML can hold (no null)")?;
    let mut table = toml::Table::new();
    table.insert("plugin".into(), name.into());
    table.insert("config".into(), config.into());
    table.insert(
        "allowed_hosts".into(),
        toml::Value::Array(vec![capture.into()]),
    );
    if let Some(m) = &options.memory {
        table.insert("memory".into(), m.as_str().into());
    }
    if let Some(t) = &options.timeout {
        table.insert("timeout".into(), t.as_str().into());
    }
    // Every call is made and reported: a breaker opened by repeated faults would hold the
    // rest back.
    let mut breaker = toml::Table::new();
    breaker.insert("threshold".into(), i64::from(u32::MAX).into());
    table.insert("circuit_breaker".into(), breaker.into());
    ExporterConfig::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What `ferry plugin test` found: an exporter's calls, or a processor's.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Tested {
    /// An exporter.
    Exporter(Report),
    /// A processor.
    Processor(super::processor_test::ProcessorReport),
}

impl Tested {
    /// True when the plugin loaded and every call went as the daemon needs.
    pub fn passed(&self) -> bool {
        match self {
            Tested::Exporter(r) => r.passed(),
            Tested::Processor(r) => r.passed(),
        }
    }
}

impl fmt::Display for Tested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tested::Exporter(r) => r.fmt(f),
            Tested::Processor(r) => r.fmt(f),
        }
    }
}

/// Runs the plugin in `path` through every sample batch it can take: as an exporter, or, when
/// it turns out to be a processor, through the processor harness.
pub async fn run(engine: &PluginEngine, path: &Path, options: &Options) -> anyhow::Result<Tested> {
    let source = registry::read_file(path)?;
    let status = StatusCode::from_u16(options.status)
        .with_context(|| format!("--status {} is not an HTTP status", options.status))?;
    let capture = Capture::start(status)
        .await
        .context("cannot start the capture server")?;
    let url = capture.url();
    let config_json = substitute_env(&options.config, |name| {
        if name == "capture" {
            Some(url.clone())
        } else {
            std::env::var(name).ok()
        }
    })
    .map_err(|errors| anyhow::anyhow!("--config: {}", errors.join("; ")))?;
    let name = source.name.clone();
    let config = exporter_config(&name, &config_json, &url, options)?;
    let mut report = Report {
        file: path.display().to_string(),
        manifest: None,
        contract: None,
        code: None,
        compile_ms: None,
        config: config_json,
        capture: url,
        status: options.status,
        init_ms: None,
        init_ok: false,
        calls: Vec::new(),
        memory_peak: 0,
        memory_limit: config.memory,
        host_limits: HostLimits {
            bytes: config.host_memory,
            resources: config.max_resources,
        },
        denied: 0,
        problems: Vec::new(),
    };

    match super::compile(engine, &source.wasm) {
        Ok((_, origin, ms)) => {
            report.code = Some(origin);
            report.compile_ms = Some(ms);
        }
        Err(problem) => {
            report.problems.push(problem);
            return Ok(Tested::Exporter(report));
        }
    }
    let telemetry = Telemetry::new();
    let started = Instant::now();
    let exporter = match PluginExporter::load(
        engine,
        &name,
        &source,
        &config.spec(),
        HostSender::new(Default::default()),
        LogPolicy::default(),
        &telemetry,
    )
    .await
    {
        Ok(e) => e,
        Err(LoadError::World {
            found: World::Processor,
            ..
        }) => {
            // A processor has no backend: without a config of its own, it gets none.
            let config = if options.config == DEFAULT_CONFIG {
                "{}"
            } else {
                &report.config
            };
            let (memory, timeout) = (options.memory.as_deref(), options.timeout.as_deref());
            let r = super::processor_test::run(engine, path, config, memory, timeout).await?;
            return Ok(Tested::Processor(r));
        }
        Err(e) => {
            let hint = match e {
                LoadError::Contract(_) | LoadError::Engine(_) => format!(
                    " (`ferry plugin inspect {}` tells what it is and what it lacks)",
                    path.display()
                ),
                _ => String::new(),
            };
            report.problems.push(format!("{e}{hint}"));
            return Ok(Tested::Exporter(report));
        }
    };
    report.init_ms = Some(millis(started.elapsed()));
    report.init_ok = exporter.idle_instances() > 0;
    report.manifest = Some(ManifestView::from(exporter.manifest()));
    report.contract = Some(exporter.manifest().contract);
    // What `init` sent is not part of any call.
    capture.take();

    let encoding = exporter.manifest().encoding;
    for signal in exporter.manifest().signals.clone() {
        for size in [Size::Small, Size::Large] {
            let items = size.items();
            let batch = Batch::new(signal, items, samples::batch(signal, size));
            let payload = batch
                .encoded(encoding)
                .map_err(|e| anyhow::anyhow!("cannot encode the {signal} sample: {e}"))?;
            let bytes = payload.len();
            let started = Instant::now();
            let outcome = exporter.export(signal, items, 0, payload).await;
            let ms = millis(started.elapsed());
            let (result, message) = describe_outcome(outcome);
            let (host_held, host_peak) = exporter.last_host_usage();
            report.calls.push(Call {
                signal: signal.as_str().into(),
                size: Some(size),
                items,
                bytes,
                result,
                message,
                ms,
                sent: capture.take(),
                host_peak,
                host_held,
            });
        }
    }
    report.memory_peak = exporter.memory_peak();
    let started = Instant::now();
    exporter.shutdown(config.timeout).await;
    report.calls.push(Call {
        signal: "shutdown".into(),
        size: None,
        items: 0,
        bytes: 0,
        result: "ok",
        message: None,
        ms: millis(started.elapsed()),
        sent: capture.take(),
        host_peak: HostUsage::default(),
        host_held: HostUsage::default(),
    });
    report.denied = telemetry
        .counter(
            "ferry_exporter_egress_denied_total",
            "Plugin HTTP requests refused by the exporter's allowed_hosts.",
            &[("exporter", &name)],
        )
        .get();
    Ok(Tested::Exporter(report))
}

/// `host: peak 1.3 MiB in 9 resources, 0 B in 2 held after`.
fn host_text(c: &Call) -> String {
    format!(
        "host: peak {} in {} resources, {} in {} held after",
        size_text(c.host_peak.bytes),
        c.host_peak.resources,
        size_text(c.host_held.bytes),
        c.host_held.resources
    )
}

fn describe_outcome(outcome: Outcome) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Ok => ("ok", None),
        Outcome::Retryable(m) => ("retryable", Some(m)),
        Outcome::Throttled(d) => ("throttled", Some(format!("retry after {d:?}"))),
        Outcome::Partial(n, m) => ("partial", Some(format!("{n} rejected: {m}"))),
        Outcome::Permanent(m) => ("permanent", Some(m)),
        Outcome::Fault(m) => ("fault", Some(m)),
    }
}

/// `POST /v1/traces (application/x-protobuf, gzip, 12.1 KiB)`; a run of alike requests is
/// one entry, `17 × POST /hook (application/json, 2.9 MiB in all)`.
fn sent_text(sent: &[Captured]) -> String {
    if sent.is_empty() {
        return "nothing".into();
    }
    let key = |c: &Captured| {
        let mut detail: Vec<&str> = Vec::new();
        detail.extend(c.header("content-type"));
        detail.extend(c.header("content-encoding"));
        (format!("{} {}", c.method, c.path), detail.join(", "))
    };
    let mut runs: Vec<((String, String), usize, usize)> = Vec::new();
    for c in sent {
        let k = key(c);
        match runs.last_mut() {
            Some((last, n, bytes)) if *last == k => {
                *n += 1;
                *bytes += c.bytes;
            }
            _ => runs.push((k, 1, c.bytes)),
        }
    }
    runs.into_iter()
        .map(|((request, detail), n, bytes)| {
            let sep = if detail.is_empty() { "" } else { ", " };
            if n == 1 {
                format!("{request} ({detail}{sep}{})", size_text(bytes))
            } else {
                format!("{n} × {request} ({detail}{sep}{} in all)", size_text(bytes))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file       {}", self.file)?;
        if let (Some(m), Some(c)) = (&self.manifest, self.contract) {
            writeln!(
                f,
                "plugin     {} {}, contract {c}, signals {}, encoding {}",
                m.name,
                m.version,
                m.signals.join(","),
                m.encoding
            )?;
        }
        super::write_code_line(
            f,
            self.code,
            self.compile_ms,
            "compiled (kept in the compiled-code cache for next time)",
        )?;
        writeln!(f, "config     {}", self.config)?;
        writeln!(
            f,
            "capture    {} answering {}",
            self.capture,
            StatusCode::from_u16(self.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|_| self.status.to_string())
        )?;
        match (self.init_ms, self.init_ok) {
            (Some(ms), true) => writeln!(f, "init       ok in {ms} ms")?,
            (Some(ms), false) => writeln!(
                f,
                "init       FAULT after {ms} ms: it trapped or ran out of time (each call \
                 below tries a new instance)"
            )?,
            (None, _) => {}
        }
        if !self.calls.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<15} {:>6} {:>10}  {:<10} {:>10}  SENT",
                "CALL", "ITEMS", "BYTES", "RESULT", "TIME"
            )?;
            for c in &self.calls {
                let call = match c.size {
                    Some(s) => format!("{} {}", c.signal, s.as_str()),
                    None => c.signal.clone(),
                };
                let (items, bytes) = if c.size.is_some() {
                    (c.items.to_string(), size_text(c.bytes))
                } else {
                    (String::new(), String::new())
                };
                writeln!(
                    f,
                    "{call:<15} {items:>6} {bytes:>10}  {:<10} {:>7.1} ms  {}",
                    c.result,
                    c.ms,
                    sent_text(&c.sent)
                )?;
                if let Some(m) = &c.message {
                    writeln!(f, "{:<15} {m}", "")?;
                }
                if c.size.is_some() {
                    writeln!(f, "{:<15} {}", "", host_text(c))?;
                }
            }
            writeln!(f)?;
            writeln!(
                f,
                "memory     peak {} of the {} limit (the exporter's `memory` setting)",
                size_text(self.memory_peak),
                size_text(self.memory_limit)
            )?;
            let memory_trap = self.calls.iter().any(|c| {
                c.message
                    .as_deref()
                    .is_some_and(|m| m.contains("growing memory"))
            });
            if memory_trap || self.memory_peak * 10 >= self.memory_limit * 9 {
                writeln!(
                    f,
                    "           the plugin needs more memory: try --memory {}MiB and set the \
                     exporter's `memory` to match",
                    (self.memory_limit >> 20).max(32) * 2
                )?;
            }
            let peak = self
                .calls
                .iter()
                .map(|c| c.host_peak.bytes)
                .max()
                .unwrap_or(0);
            writeln!(
                f,
                "host       peak {} of the {} limit (`host_memory`), at most {} resources \
                 (`max_resources`)",
                size_text(peak),
                size_text(self.host_limits.bytes),
                self.host_limits.resources
            )?;
            if self
                .calls
                .iter()
                .any(|c| c.host_held.bytes > IDLE_ALLOWANCE)
            {
                writeln!(
                    f,
                    "           LEAK: a call left host memory held (requests, bodies or \
                     header fields not dropped); the daemon discards such an instance after \
                     every call"
                )?;
            }
            match self.denied {
                0 => writeln!(f, "egress     no request denied")?,
                n => writeln!(
                    f,
                    "egress     {n} request(s) denied: only the capture server is reachable \
                     in a test; point the plugin's endpoint at ${{capture}}"
                )?,
            }
        }
        for p in &self.problems {
            writeln!(f, "problem    {p}")?;
        }
        if self.passed() {
            write!(f, "result     PASS: every call succeeded")
        } else if self.problems.is_empty() {
            let failed = self.calls.iter().filter(|c| !c.ok()).count();
            write!(f, "result     FAIL: {failed} call(s) did not succeed")
        } else {
            write!(f, "result     FAIL: the plugin could not be tested")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_the_capture_server_is_reachable_and_limits_pass_through() {
        let options = Options {
            memory: Some("128MiB".into()),
            timeout: Some("30s".into()),
            ..Options::default()
        };
        let c = exporter_config(
            "p",
            r#"{"endpoint":"http://127.0.0.1:9/x","n":3}"#,
            "http://127.0.0.1:9",
            &options,
        )
        .unwrap();
        assert_eq!(
            c.allowed_hosts,
            Some(vec!["http://127.0.0.1:9".to_string()])
        );
        assert_eq!(c.memory, 128 << 20);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.config["n"].as_integer(), Some(3));
        let err = exporter_config("p", r#"{"a":null}"#, "http://x", &Options::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--config"), "{err}");
    }
}
