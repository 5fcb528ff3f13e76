//! `[exporters.NAME]`: one exporter, and its validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::retry::RetryConfig;
use crate::plugin::breaker::CircuitBreakerConfig;
use crate::plugin::exporter::{ExporterSpec, InstanceLimits};
use crate::plugin::resources::HostLimits;
use crate::plugin::secrets::SecretSource;
use crate::signal::Signal;
use crate::units::{de_bytes, de_duration};

/// `[exporters.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Values the host writes in place of `${secret:NAME}` in the first line the plugin
    /// writes on a TCP connection; the plugin never sees them.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// A host directory the plugin may use, visible to it as `/data`. Nothing else of the
    /// filesystem is.
    pub granted_dir: Option<PathBuf>,
    /// When repeated faults stop calls to this exporter for a while.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Batches of one signal in flight to this exporter at once. Unset: see
    /// [`ExporterConfig::concurrency_for`].
    pub concurrency: Option<u32>,
    /// This exporter's chain: processors (defined under `[processors]`) applied in order to
    /// each batch read for it, and to nothing any other exporter sees.
    #[serde(default)]
    pub processors: Vec<String>,
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

fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}

impl ExporterConfig {
    /// Adds what is wrong with `[exporters.NAME]` to `errors`.
    pub fn check(&self, name: &str, errors: &mut Vec<String>) {
        let e = self;
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
            if let Some(e) = source.check() {
                errors.push(format!("{key}: {e}"));
            }
        }
        for (secret, source) in &e.secrets {
            let key = format!("exporters.{name}.secrets.{secret}");
            if !crate::plugin::secrets::valid_name(secret) {
                errors.push(format!(
                    "{key}: a name is letters, digits, `_` and `-`, at most 64"
                ));
            }
            if let Some(e) = source.check() {
                errors.push(format!("{key}: {e}"));
            }
        }
        for (path, secret) in crate::plugin::secrets::named_in(&e.config) {
            if !e.secrets.contains_key(&secret) {
                errors.push(format!(
                    "exporters.{name}.{path}: names the secret {secret:?}, which \
                     exporters.{name}.secrets does not define"
                ));
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

impl ExporterConfig {
    /// What the plugin runtime builds this exporter from.
    pub fn spec(&self) -> ExporterSpec<'_> {
        ExporterSpec {
            settings: &self.config,
            allowed_hosts: self.allowed_hosts.as_deref(),
            secret_headers: &self.secret_headers,
            secrets: &self.secrets,
            limits: InstanceLimits {
                memory: self.memory,
                host: HostLimits {
                    bytes: self.host_memory,
                    resources: self.max_resources,
                },
                timeout: self.timeout,
                granted_dir: self.granted_dir.clone(),
            },
            signals: self.signals.as_deref(),
            breaker: &self.circuit_breaker,
        }
    }
}
