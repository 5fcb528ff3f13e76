//! The daemon's TOML configuration: parsing, `${ENV}` substitution and validation.
//!
//! Each section is deserialised on its own so that one run reports every error in the file,
//! each with its key path, instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::signal::Signal;

/// The configuration used when `ferry run` is given no file.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A whole daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[receivers]`.
    pub receivers: Receivers,
    /// `[plugins]`.
    pub plugins: Plugins,
    /// `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// `[queue]`.
    pub queue: QueueConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[exporters.NAME]`, by name.
    pub exporters: BTreeMap<String, ExporterConfig>,
}

/// `[receivers]`: which protocols to listen on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receivers {
    /// `[receivers.otlp]`.
    pub otlp: Option<OtlpReceiverConfig>,
    /// `[receivers.zipkin]`.
    pub zipkin: Option<ZipkinReceiverConfig>,
    /// `[receivers.jaeger]`.
    pub jaeger: Option<JaegerReceiverConfig>,
    /// `[receivers.opencensus]`.
    pub opencensus: Option<OpenCensusReceiverConfig>,
}

impl Receivers {
    /// The names of the receivers this config enables.
    pub fn enabled(&self) -> Vec<&'static str> {
        [
            ("otlp", self.otlp.is_some()),
            ("zipkin", self.zipkin.is_some()),
            ("jaeger", self.jaeger.is_some()),
            ("opencensus", self.opencensus.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

/// `[receivers.opencensus]`: the OpenCensus agent's gRPC export streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCensusReceiverConfig {
    /// Listen address; the agent's usual `127.0.0.1:55678` unless set.
    #[serde(default = "default_opencensus_addr")]
    pub grpc: SocketAddr,
    /// Largest stream message accepted.
    #[serde(default = "default_max_request", deserialize_with = "de_bytes")]
    pub max_request_bytes: usize,
}

fn default_zipkin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9411))
}

fn default_opencensus_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 55678))
}

/// `[receivers.jaeger]`: the Jaeger agent's UDP ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JaegerReceiverConfig {
    /// UDP address for thrift compact `emitBatch` (Jaeger's usual port is 6831).
    pub thrift_compact: Option<SocketAddr>,
    /// UDP address for thrift binary `emitBatch` (usually 6832).
    pub thrift_binary: Option<SocketAddr>,
    /// HTTP address for the collector's `POST /api/traces` (thrift binary; usually 14268).
    pub thrift_http: Option<SocketAddr>,
    /// gRPC address for the collector's `PostSpans` (usually 14250).
    pub grpc: Option<SocketAddr>,
    /// Largest HTTP request accepted, after decompression.
    #[serde(default = "default_max_request", deserialize_with = "de_bytes")]
    pub max_request_bytes: usize,
}

/// `[receivers.zipkin]`: Zipkin v1/v2 over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipkinReceiverConfig {
    /// Listen address; Zipkin's usual `127.0.0.1:9411` unless set.
    #[serde(default = "default_zipkin_addr")]
    pub http: SocketAddr,
    /// Largest request accepted, after decompression.
    #[serde(default = "default_max_request", deserialize_with = "de_bytes")]
    pub max_request_bytes: usize,
}

/// `[receivers.otlp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// gRPC listen address (OTLP/gRPC); absent = off.
    pub grpc: Option<SocketAddr>,
    /// HTTP listen address (OTLP/HTTP); absent = off.
    pub http: Option<SocketAddr>,
    /// Largest request accepted, after decompression.
    #[serde(default = "default_max_request", deserialize_with = "de_bytes")]
    pub max_request_bytes: usize,
}

fn default_max_request() -> usize {
    16 << 20
}

/// `[plugins]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// Directory searched for `NAME.wasm` before the built-in plugins.
    pub dir: Option<PathBuf>,
    /// Where compiled plugin code is cached; `""` turns the cache off. Default:
    /// `$FERRY_CACHE_DIR`, `$XDG_CACHE_HOME/ferry` or `~/.cache/ferry`.
    pub cache_dir: Option<PathBuf>,
    /// Limits of the host's HTTP sender, which sends every plugin request.
    #[serde(default)]
    pub http: HttpLimits,
    /// What plugins may write to the log.
    #[serde(default)]
    pub log: PluginLog,
}

/// `[plugins.log]`: how much of what plugins say reaches the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLog {
    /// Longest plugin text (log message, error message, stderr) in one log line, after
    /// escaping; the rest is cut and its length noted.
    #[serde(default = "default_max_message_bytes", deserialize_with = "de_bytes")]
    pub max_message_bytes: usize,
    /// `host.log` messages per second each exporter may write; the rest are dropped,
    /// counted and summarised.
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
}

fn default_max_message_bytes() -> usize {
    crate::plugin::text::DEFAULT_MAX_MESSAGE_BYTES
}

fn default_messages_per_second() -> u32 {
    crate::plugin::text::DEFAULT_MESSAGES_PER_SECOND
}

impl Default for PluginLog {
    fn default() -> Self {
        PluginLog {
            max_message_bytes: default_max_message_bytes(),
            messages_per_second: default_messages_per_second(),
        }
    }
}

impl PluginLog {
    /// The policy the plugin runtime applies.
    pub fn policy(&self) -> crate::plugin::text::LogPolicy {
        crate::plugin::text::LogPolicy {
            max_message_bytes: self.max_message_bytes,
            messages_per_second: self.messages_per_second,
        }
    }
}

/// `[plugins.http]`: limits on plugin HTTP requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// TCP/TLS connect timeout.
    #[serde(default = "default_connect", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Time until the response head arrives.
    #[serde(default = "default_first_byte", deserialize_with = "de_duration")]
    pub first_byte_timeout: Duration,
    /// Time until the whole response has arrived.
    #[serde(default = "default_total", deserialize_with = "de_duration")]
    pub total_timeout: Duration,
    /// Largest response body handed to a plugin.
    #[serde(default = "default_response_cap", deserialize_with = "de_bytes")]
    pub max_response_bytes: usize,
}

fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_first_byte() -> Duration {
    Duration::from_secs(30)
}
fn default_total() -> Duration {
    Duration::from_secs(60)
}
fn default_response_cap() -> usize {
    16 << 20
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: default_connect(),
            first_byte_timeout: default_first_byte(),
            total_timeout: default_total(),
            max_response_bytes: default_response_cap(),
        }
    }
}

impl Plugins {
    /// The compiled-code cache directory in effect, if any.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(d) if d.as_os_str().is_empty() => None,
            Some(d) => Some(d.clone()),
            None => crate::plugin::engine::default_cache_dir(),
        }
    }
}

/// `[pipeline]`: batching and queueing, per signal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A batch is cut when it holds this many items...
    #[serde(default = "default_batch_items")]
    pub batch_max_items: u32,
    /// ...or when its first item has waited this long.
    #[serde(default = "default_batch_timeout", deserialize_with = "de_duration")]
    pub batch_timeout: Duration,
    /// Memory budget of each signal's queue (memory mode); past it, `queue.when_full` applies.
    #[serde(default = "default_queue_bytes", deserialize_with = "de_bytes")]
    pub queue_max_bytes: usize,
    /// On SIGTERM/SIGINT, how long exporters may keep draining the queues before the daemon
    /// exits (what is left stays on disk in durable mode, and is reported lost in memory mode).
    #[serde(default = "default_drain_timeout", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_batch_items() -> u32 {
    8192
}
fn default_batch_timeout() -> Duration {
    Duration::from_millis(200)
}
fn default_queue_bytes() -> usize {
    64 << 20
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max_items: default_batch_items(),
            batch_timeout: default_batch_timeout(),
            queue_max_bytes: default_queue_bytes(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// Where queued data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// In memory: fast, lost if the process dies.
    #[default]
    Memory,
    /// On disk: receivers acknowledge only what is synced; survives crashes and restarts.
    Durable,
}

/// What happens to a request when its signal's queue is at its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse it so the sender retries later (gRPC RESOURCE_EXHAUSTED with RetryInfo, HTTP 429
    /// with Retry-After).
    #[default]
    Backpressure,
    /// Acknowledge it and drop it, counted in `ferry_queue_dropped_items_total`: for senders
    /// that must never block and can afford to lose data.
    DropNewest,
}

/// `[queue]`: memory or disk, and the policy at the budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// `memory` (default) or `durable`.
    #[serde(default)]
    pub mode: QueueMode,
    /// Directory of the durable queue (one subdirectory per signal); required when durable.
    pub dir: Option<PathBuf>,
    /// Disk budget of each signal's durable queue.
    #[serde(default = "default_disk_bytes", deserialize_with = "de_bytes")]
    pub max_bytes: usize,
    /// Size at which a segment file is closed and a new one started; disk space is freed a
    /// whole segment at a time, once every exporter is past it.
    #[serde(default = "default_segment_bytes", deserialize_with = "de_bytes")]
    pub segment_bytes: usize,
    /// `backpressure` (default) or `drop_newest`.
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_disk_bytes() -> usize {
    1 << 30
}
fn default_segment_bytes() -> usize {
    16 << 20
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            mode: QueueMode::default(),
            dir: None,
            max_bytes: default_disk_bytes(),
            segment_bytes: default_segment_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

impl QueueConfig {
    /// The byte budget of each signal's queue in this mode.
    pub fn budget(&self, pipeline: &PipelineConfig) -> usize {
        match self.mode {
            QueueMode::Memory => pipeline.queue_max_bytes,
            QueueMode::Durable => self.max_bytes,
        }
    }
}

/// `[admin]`: self-metrics and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address for `/metrics` and `/healthz`; `""` turns it off.
    #[serde(default = "default_admin")]
    pub listen: String,
}

fn default_admin() -> String {
    "127.0.0.1:8888".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin(),
        }
    }
}

/// `[exporters.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// Plugin name: `NAME.wasm` in the plugin directory, or a built-in plugin.
    pub plugin: String,
    /// Signals routed to this exporter; defaults to every signal the plugin supports.
    pub signals: Option<Vec<Signal>>,
    /// The plugin's own settings, handed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Destinations the plugin may reach (`scheme://host:port`, `*` wildcards for the port
    /// and a leading `*.` for subdomains). Defaults to the hosts of the config's `*endpoint`
    /// URLs.
    pub allowed_hosts: Option<Vec<String>>,
    /// Retry policy for failed exports.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Limit of one `export` (or `init`) call: a CPU deadline (epoch interruption) and a
    /// wall-clock timeout. An instance that hits it is discarded.
    #[serde(default = "default_call_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Memory cap of one plugin instance.
    #[serde(default = "default_memory", deserialize_with = "de_bytes")]
    pub memory: usize,
    /// Host memory one instance may hold through its resources (header fields, request
    /// body buffers, responses): past it the instance traps and is discarded.
    #[serde(default = "default_host_memory", deserialize_with = "de_bytes")]
    pub host_memory: usize,
    /// Live host resources (handles) one instance may hold at once.
    #[serde(default = "default_max_resources")]
    pub max_resources: usize,
    /// Headers the host adds to the plugin's allowed requests; the plugin never sees them.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, SecretSource>,
    /// A host directory the plugin may use, visible to it as `/data`. Nothing else of the
    /// filesystem is.
    pub granted_dir: Option<PathBuf>,
    /// When repeated faults stop calls to this exporter for a while.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Batches of one signal in flight to this exporter at once. Unset: see
    /// [`ExporterConfig::concurrency_for`].
    pub concurrency: Option<u32>,
}

/// Most batches of one signal an exporter may have in flight.
pub const MAX_CONCURRENCY: u32 = 64;

impl ExporterConfig {
    /// How many batches of `signal` may be in flight at once. Spans and log records carry no
    /// ordering requirement, so by default several batches overlap and one slow round trip
    /// does not cap throughput; metric points of one series must reach many backends (the
    /// Prometheus remote-write receiver, for one) in time order, so metrics go one batch at a
    /// time unless `concurrency` says otherwise.
    pub fn concurrency_for(&self, signal: Signal) -> usize {
        let default = match signal {
            Signal::Traces | Signal::Logs => DEFAULT_CONCURRENCY,
            Signal::Metrics => 1,
        };
        self.concurrency.unwrap_or(default) as usize
    }
}

/// Batches of traces or logs in flight per exporter when `concurrency` is unset.
pub const DEFAULT_CONCURRENCY: u32 = 4;

fn default_memory() -> usize {
    64 << 20
}

fn default_host_memory() -> usize {
    crate::plugin::resources::DEFAULT_HOST_MEMORY
}

fn default_max_resources() -> usize {
    crate::plugin::resources::DEFAULT_MAX_RESOURCES
}

/// Where a secret header's value comes from: exactly one of `env` and `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Environment variable holding the value.
    pub env: Option<String>,
    /// File holding the value (trailing newline removed).
    pub file: Option<PathBuf>,
    /// Put before the value, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: String,
}

/// Circuit breaker of one exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive faults (traps, timeouts, limits) that open the circuit.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// How long the circuit first stays open; doubles on each failed probe.
    #[serde(default = "default_open_for", deserialize_with = "de_duration")]
    pub open_for: Duration,
    /// Longest time the circuit stays open before a probe.
    #[serde(default = "default_max_open_for", deserialize_with = "de_duration")]
    pub max_open_for: Duration,
}

fn default_threshold() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(5)
}
fn default_max_open_for() -> Duration {
    Duration::from_secs(60)
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            threshold: default_threshold(),
            open_for: default_open_for(),
            max_open_for: default_max_open_for(),
        }
    }
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Exponential backoff with jitter, bounded in total time (as the Collector's exporterhelper).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before the first retry.
    #[serde(default = "default_initial", deserialize_with = "de_duration")]
    pub initial_interval: Duration,
    /// Largest delay between two tries.
    #[serde(default = "default_max_interval", deserialize_with = "de_duration")]
    pub max_interval: Duration,
    /// Give up (drop and count) once a batch has been retried for this long.
    #[serde(default = "default_max_elapsed", deserialize_with = "de_duration")]
    pub max_elapsed: Duration,
}

fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_max_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_elapsed() -> Duration {
    Duration::from_secs(300)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_interval: default_initial(),
            max_interval: default_max_interval(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Parses a duration like `200ms`, `5s`, `1m`, `2h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. \"200ms\", \"5s\", \"1m\")"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size like `64MiB`, `512KiB`, `1GiB`, `100MB` or a bare number of bytes.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. \"64MiB\")"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => usize::try_from(n).map_err(serde::de::Error::custom),
        NumOrStr::Str(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values; `$${` is a literal `${`.
/// Every undefined variable is reported.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                errors.push("unterminated ${ in config".to_string());
                out.push('$');
                rest = after;
                continue;
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => errors.push(format!(
                    "environment variable {name} is not set (used as ${{{name}}})"
                )),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

const TOP_LEVEL: &[&str] = &[
    "receivers",
    "plugins",
    "pipeline",
    "queue",
    "admin",
    "exporters",
];

/// Deserialises `value` found at `key`, naming the full key path of any error.
fn at_path<T: DeserializeOwned>(key: &str, value: &toml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{inner}")
        };
        format!("{path}: {}", e.inner().message().trim())
    })
}

fn section<T: DeserializeOwned + Default>(
    root: &toml::Table,
    key: &str,
    errors: &mut Vec<String>,
) -> T {
    match root.get(key) {
        None => T::default(),
        Some(v) => at_path(key, v).unwrap_or_else(|e| {
            errors.push(e);
            T::default()
        }),
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
        Self::parse(&text)
    }

    /// Parses and validates config text, reporting every problem found.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let text = substitute_env(text, |k| std::env::var(k).ok()).map_err(ConfigErrors)?;
        let root: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigErrors(vec![format!("TOML syntax: {e}")]))?;
        let mut errors = Vec::new();
        for key in root.keys() {
            if !TOP_LEVEL.contains(&key.as_str()) {
                errors.push(format!(
                    "{key}: unknown section (expected one of {})",
                    TOP_LEVEL.join(", ")
                ));
            }
        }
        let receivers: Receivers = section(&root, "receivers", &mut errors);
        let plugins: Plugins = section(&root, "plugins", &mut errors);
        let pipeline: PipelineConfig = section(&root, "pipeline", &mut errors);
        let queue: QueueConfig = section(&root, "queue", &mut errors);
        let admin: AdminConfig = section(&root, "admin", &mut errors);
        let mut exporters = BTreeMap::new();
        match root.get("exporters") {
            None => errors.push("exporters: at least one exporter is required".into()),
            Some(toml::Value::Table(t)) => {
                if t.is_empty() {
                    errors.push("exporters: at least one exporter is required".into());
                }
                for (name, value) in t {
                    match at_path::<ExporterConfig>(&format!("exporters.{name}"), value) {
                        Ok(e) => {
                            exporters.insert(name.clone(), e);
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            Some(_) => errors.push("exporters: expected a table of exporters".into()),
        }
        let config = Config {
            receivers,
            plugins,
            pipeline,
            queue,
            admin,
            exporters,
        };
        config.check(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn check(&self, errors: &mut Vec<String>) {
        if self.pipeline.batch_max_items == 0 {
            errors.push("pipeline.batch_max_items: must be at least 1".into());
        }
        if self.pipeline.batch_timeout.is_zero() {
            errors.push("pipeline.batch_timeout: must be greater than zero".into());
        }
        if self.pipeline.queue_max_bytes < 64 << 10 {
            errors.push("pipeline.queue_max_bytes: must be at least 64KiB".into());
        }
        if self.pipeline.drain_timeout.is_zero() {
            errors.push("pipeline.drain_timeout: must be greater than zero".into());
        }
        let q = &self.queue;
        if q.mode == QueueMode::Durable {
            if q.dir.is_none() {
                errors.push("queue.dir: required when queue.mode = \"durable\"".into());
            }
            if q.segment_bytes < 64 << 10 {
                errors.push("queue.segment_bytes: must be at least 64KiB".into());
            }
            if q.max_bytes < 4 * q.segment_bytes {
                errors.push(format!(
                    "queue.max_bytes: must be at least 4 segments ({} bytes), since disk is \
                     freed a segment at a time",
                    4 * q.segment_bytes
                ));
            }
        }
        let log = &self.plugins.log;
        if log.max_message_bytes < 256 {
            errors.push("plugins.log.max_message_bytes: must be at least 256B".into());
        }
        if log.messages_per_second == 0 {
            errors.push("plugins.log.messages_per_second: must be at least 1".into());
        }
        if !self.admin.listen.is_empty() && self.admin.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "admin.listen: {:?} is not an address like 127.0.0.1:8888",
                self.admin.listen
            ));
        }
        let budget = q.budget(&self.pipeline);
        for name in self.receivers.enabled() {
            if let Err(why) = crate::receiver::check_available(name) {
                errors.push(format!("receivers.{name}: {why}"));
            }
        }
        if let Some(j) = &self.receivers.jaeger
            && j.thrift_compact.is_none()
            && j.thrift_binary.is_none()
            && j.thrift_http.is_none()
            && j.grpc.is_none()
        {
            errors.push(
                "receivers.jaeger: set at least one of `thrift_compact`, `thrift_binary`, `thrift_http`, `grpc`"
                    .into(),
            );
        }
        let request_limits = [
            (
                "otlp",
                self.receivers.otlp.as_ref().map(|r| r.max_request_bytes),
            ),
            (
                "zipkin",
                self.receivers.zipkin.as_ref().map(|r| r.max_request_bytes),
            ),
            (
                "opencensus",
                self.receivers
                    .opencensus
                    .as_ref()
                    .map(|r| r.max_request_bytes),
            ),
        ];
        for (name, limit) in request_limits {
            if let Some(limit) = limit
                && limit > budget
            {
                errors.push(format!(
                    "receivers.{name}.max_request_bytes: {limit} exceeds the queue budget \
                     ({budget}); such a request could never be queued"
                ));
            }
        }
        if let Some(otlp) = &self.receivers.otlp {
            if otlp.grpc.is_none() && otlp.http.is_none() {
                errors.push("receivers.otlp: set `grpc`, `http` or both".into());
            }
            if otlp.grpc.is_some_and(|a| a.port() != 0) && otlp.grpc == otlp.http {
                errors.push("receivers.otlp: `grpc` and `http` cannot share an address".into());
            }
        }
        for (name, e) in &self.exporters {
            if e.plugin.trim().is_empty() {
                errors.push(format!("exporters.{name}.plugin: must name a plugin"));
            }
            if let Some(signals) = &e.signals
                && signals.is_empty()
            {
                errors.push(format!(
                    "exporters.{name}.signals: must list at least one signal"
                ));
            }
            if e.timeout.is_zero() {
                errors.push(format!(
                    "exporters.{name}.timeout: must be greater than zero"
                ));
            }
            if e.retry.initial_interval > e.retry.max_interval {
                errors.push(format!(
                    "exporters.{name}.retry: initial_interval exceeds max_interval"
                ));
            }
            if e.memory < 1 << 20 {
                errors.push(format!("exporters.{name}.memory: must be at least 1MiB"));
            }
            let body = crate::plugin::resources::BODY_RESERVE;
            if e.host_memory < 2 * body {
                errors.push(format!(
                    "exporters.{name}.host_memory: must be at least {} bytes (two request \
                     bodies' buffers)",
                    2 * body
                ));
            }
            if e.max_resources < 16 {
                errors.push(format!(
                    "exporters.{name}.max_resources: must be at least 16, not {}",
                    e.max_resources
                ));
            }
            if let Some(n) = e.concurrency
                && !(1..=MAX_CONCURRENCY).contains(&n)
            {
                errors.push(format!(
                    "exporters.{name}.concurrency: must be between 1 and {MAX_CONCURRENCY}, not {n}"
                ));
            }
            if e.circuit_breaker.threshold == 0 {
                errors.push(format!(
                    "exporters.{name}.circuit_breaker.threshold: must be at least 1"
                ));
            }
            for (header, source) in &e.secret_headers {
                let key = format!("exporters.{name}.secret_headers.{header}");
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    errors.push(format!("{key}: not a valid header name"));
                }
                if source.env.is_some() == source.file.is_some() {
                    errors.push(format!("{key}: set exactly one of `env` and `file`"));
                }
            }
            if let Some(dir) = &e.granted_dir
                && !dir.is_dir()
            {
                errors.push(format!(
                    "exporters.{name}.granted_dir: {} is not a directory",
                    dir.display()
                ));
            }
            if let Some(hosts) = &e.allowed_hosts {
                for (i, h) in hosts.iter().enumerate() {
                    if let Err(msg) = crate::plugin::policy::HostPattern::parse(h) {
                        errors.push(format!("exporters.{name}.allowed_hosts[{i}]: {msg}"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let c = Config::parse(DEFAULT_CONFIG).expect("embedded default config");
        assert!(c.exporters.contains_key("debug"));
        assert!(c.receivers.otlp.is_some());
    }

    #[test]
    fn reports_every_error_with_its_key_path() {
        let text = r#"
            bogus = 1
            [pipeline]
            batch_timeout = "5 fortnights"
            [exporters.a]
            plugin = "debug"
            colour = "blue"
            [exporters.b]
            plugin = "debug"
            signals = []
            allowed_hosts = ["ftp://x"]
        "#;
        let err = Config::parse(text).unwrap_err().0;
        let joined = err.join("\n");
        assert!(joined.contains("bogus: unknown section"), "{joined}");
        assert!(
            joined.contains("pipeline.batch_timeout:") && joined.contains("fortnights"),
            "{joined}"
        );
        assert!(joined.contains("exporters.a.colour:"), "{joined}");
        assert!(joined.contains("exporters.b.signals"), "{joined}");
        assert!(joined.contains("exporters.b.allowed_hosts[0]"), "{joined}");
        assert_eq!(err.len(), 5, "{joined}");
    }

    #[test]
    fn concurrency_defaults_by_signal_and_is_bounded() {
        let c = Config::parse(
            r#"
            [exporters.a]
            plugin = "debug"
            [exporters.b]
            plugin = "debug"
            concurrency = 8
        "#,
        )
        .unwrap();
        let (a, b) = (&c.exporters["a"], &c.exporters["b"]);
        assert_eq!(a.concurrency_for(Signal::Traces), 4);
        assert_eq!(a.concurrency_for(Signal::Logs), 4);
        assert_eq!(
            a.concurrency_for(Signal::Metrics),
            1,
            "metrics stay in order"
        );
        assert_eq!(b.concurrency_for(Signal::Metrics), 8);
        let errors = Config::parse(
            r#"
            [exporters.a]
            plugin = "debug"
            concurrency = 0
            [exporters.b]
            plugin = "debug"
            concurrency = 65
        "#,
        )
        .unwrap_err()
        .0
        .join("\n");
        assert!(
            errors.contains("exporters.a.concurrency: must be between 1 and 64, not 0"),
            "{errors}"
        );
        assert!(errors.contains("exporters.b.concurrency"), "{errors}");
    }

    #[test]
    fn the_queue_section_is_checked_as_a_whole() {
        let errors = Config::parse(
            r#"
            [pipeline]
            drain_timeout = "0s"
            [queue]
            mode = "durable"
            segment_bytes = "1KiB"
            max_bytes = "1MiB"
            when_full = "drop_oldest"
            [exporters.d]
            plugin = "debug"
            "#,
        )
        .unwrap_err()
        .0;
        assert_eq!(
            errors.len(),
            2,
            "the bad enum value stops [queue] from parsing; the other sections still report: {errors:?}"
        );
        assert!(errors[0].contains("queue") && errors[0].contains("drop_oldest"));
        assert!(errors[1].starts_with("pipeline.drain_timeout"));

        let errors = Config::parse(
            r#"
            [receivers.otlp]
            http = "127.0.0.1:0"
            [queue]
            mode = "durable"
            segment_bytes = "1KiB"
            max_bytes = "2KiB"
            [exporters.d]
            plugin = "debug"
            "#,
        )
        .unwrap_err()
        .0;
        assert!(errors.iter().any(|e| e.starts_with("queue.dir: required")));
        assert!(errors.iter().any(|e| e.starts_with("queue.segment_bytes")));
        assert!(errors.iter().any(|e| e.starts_with("queue.max_bytes")));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("receivers.otlp.max_request_bytes")),
            "requests must fit the disk budget: {errors:?}"
        );

        let c = Config::parse(
            r#"
            [queue]
            mode = "durable"
            dir = "/tmp/q"
            when_full = "drop_newest"
            [exporters.d]
            plugin = "debug"
            "#,
        )
        .unwrap();
        assert_eq!(c.queue.mode, QueueMode::Durable);
        assert_eq!(c.queue.when_full, WhenFull::DropNewest);
        assert_eq!(c.queue.budget(&c.pipeline), 1 << 30);
    }

    #[test]
    fn receivers_default_to_their_usual_ports() {
        let c = Config::parse(
            r#"
            [receivers.zipkin]
            [receivers.opencensus]
            [exporters.d]
            plugin = "debug"
        "#,
        )
        .unwrap();
        assert_eq!(
            c.receivers.zipkin.unwrap().http.to_string(),
            "127.0.0.1:9411"
        );
        let oc = c.receivers.opencensus.unwrap();
        assert_eq!(oc.grpc.to_string(), "127.0.0.1:55678");
        assert_eq!(oc.max_request_bytes, 16 << 20);
        let err = Config::parse(
            r#"
            [receivers.opencensus]
            grpc = "nowhere"
            http = "127.0.0.1:1"
            [exporters.d]
            plugin = "debug"
        "#,
        )
        .unwrap_err()
        .0
        .join("\n");
        assert!(err.contains("receivers.opencensus"), "{err}");
    }

    #[test]
    fn env_substitution() {
        let env = |k: &str| (k == "PORT").then(|| "9999".to_string());
        assert_eq!(substitute_env("a=${PORT}", env).unwrap(), "a=9999");
        assert_eq!(substitute_env("a=${NOPE:-1}", env).unwrap(), "a=1");
        assert_eq!(
            substitute_env("a=$${PORT} $x", env).unwrap(),
            "a=${PORT} $x"
        );
        let errs = substitute_env("${A} ${B}", env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("A is not set"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
