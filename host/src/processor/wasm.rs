//! Wasm processors (`kind = "wasm"`): a plugin implementing the `processor-plugin` world,
//! sandboxed and pooled like an exporter. What it answers is checked as received data is
//! (it must decode as a request of the same signal, with well-formed items, and be at most
//! `max_growth` times the size of what it was given) before anything is forwarded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::otlp::Decoded;
use crate::pipeline::Encoding;
use crate::plugin::breaker::CircuitBreakerConfig;
use crate::plugin::contract::Processed;
use crate::plugin::exporter::{ExporterSpec, InstanceLimits};
use crate::plugin::resources::HostLimits;
use crate::plugin::sender::HostSender;
use crate::plugin::text::LogPolicy;
use crate::plugin::{PluginEngine, PluginExporter, registry};
use crate::signal::Signal;
use crate::telemetry::Telemetry;
use crate::units::{de_bytes, de_duration};

/// The settings of `kind = "wasm"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WasmConfig {
    /// Plugin name: `NAME.wasm` in the plugin directory, or a built-in plugin.
    pub plugin: String,
    /// The plugin's own settings, handed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Destinations the plugin may reach (as for exporters); none unless granted here.
    pub allowed_hosts: Option<Vec<String>>,
    /// CPU deadline and wall-clock limit of one call.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Memory cap of one instance.
    #[serde(default = "default_memory", deserialize_with = "de_bytes")]
    pub memory: usize,
    /// Host memory one instance may hold through its resources.
    #[serde(default = "default_host_memory", deserialize_with = "de_bytes")]
    pub host_memory: usize,
    /// Live host resources one instance may hold.
    #[serde(default = "default_max_resources")]
    pub max_resources: usize,
    /// When repeated faults stop calls to it (calls then fail at once, under `on_error`).
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// A replacement may be at most this many times the size of the batch it replaces.
    #[serde(default = "default_growth")]
    pub max_growth: f64,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_memory() -> usize {
    crate::plugin::exporter::DEFAULT_MEMORY
}
fn default_host_memory() -> usize {
    crate::plugin::resources::DEFAULT_HOST_MEMORY
}
fn default_max_resources() -> usize {
    crate::plugin::resources::DEFAULT_MAX_RESOURCES
}
fn default_growth() -> f64 {
    4.0
}

impl WasmConfig {
    /// Adds what is wrong with the settings at `path` to `errors`.
    pub fn check(&self, path: &str, errors: &mut Vec<String>) {
        if self.plugin.trim().is_empty() {
            errors.push(format!("{path}.plugin: must name a plugin"));
        }
        if self.timeout.is_zero() {
            errors.push(format!("{path}.timeout: must be greater than zero"));
        }
        if self.memory < 1 << 20 {
            errors.push(format!("{path}.memory: must be at least 1MiB"));
        }
        if self.max_growth.is_nan() || self.max_growth < 1.0 {
            errors.push(format!(
                "{path}.max_growth: must be at least 1, not {}",
                self.max_growth
            ));
        }
        if self.circuit_breaker.threshold == 0 {
            errors.push(format!(
                "{path}.circuit_breaker.threshold: must be at least 1"
            ));
        }
        for (i, h) in self.allowed_hosts.iter().flatten().enumerate() {
            if let Err(msg) = crate::plugin::policy::HostPattern::parse(h) {
                errors.push(format!("{path}.allowed_hosts[{i}]: {msg}"));
            }
        }
    }
}

/// What Wasm processors are loaded with.
#[derive(Clone)]
pub struct WasmEnv<'a> {
    /// The engine (and its catalog of built-in plugins).
    pub engine: &'a PluginEngine,
    /// The plugin directory, if any.
    pub dir: Option<PathBuf>,
    /// The host's HTTP sender, for processors granted egress.
    pub sender: HostSender,
    /// What plugins may write to the log.
    pub log: LogPolicy,
}

/// What a Wasm processor made of a batch, checked.
pub enum WasmOutput {
    /// Unchanged.
    Keep,
    /// This request (protobuf) instead, with this many items.
    Replace(Bytes, u32),
    /// Nothing.
    Drop,
}

/// A loaded Wasm processor.
pub struct WasmProcessor {
    plugin: PluginExporter,
    max_growth: f64,
}

impl WasmProcessor {
    /// Finds, loads and initialises processor `name`'s plugin.
    pub async fn load(
        name: &str,
        c: &WasmConfig,
        env: &WasmEnv<'_>,
        telemetry: &Telemetry,
    ) -> Result<WasmProcessor, String> {
        let source = registry::find(env.engine.catalog(), &c.plugin, env.dir.as_deref())
            .map_err(|e| format!("processors.{name}.plugin: {e}"))?;
        Self::from_source(name, &source, c, env, telemetry)
            .await
            .map_err(|e| {
                format!(
                    "processors.{name} (plugin {} from {}): {e}",
                    source.name, source.origin
                )
            })
    }

    /// Loads and initialises processor `name` from `source` (`c.plugin` is not looked up).
    pub async fn from_source(
        name: &str,
        source: &registry::PluginSource,
        c: &WasmConfig,
        env: &WasmEnv<'_>,
        telemetry: &Telemetry,
    ) -> Result<WasmProcessor, crate::plugin::LoadError> {
        let spec = ExporterSpec {
            settings: &c.config,
            allowed_hosts: Some(c.allowed_hosts.as_deref().unwrap_or(&[])),
            secret_headers: &BTreeMap::new(),
            secrets: &BTreeMap::new(),
            limits: InstanceLimits {
                memory: c.memory,
                host: HostLimits {
                    bytes: c.host_memory,
                    resources: c.max_resources,
                },
                timeout: c.timeout,
                granted_dir: None,
            },
            signals: None,
            breaker: &c.circuit_breaker,
        };
        let plugin = PluginExporter::load_as(
            &crate::plugin::role::PROCESSOR,
            env.engine,
            name,
            source,
            &spec,
            env.sender.clone(),
            env.log,
            telemetry,
        )
        .await?;
        Ok(WasmProcessor {
            plugin,
            max_growth: c.max_growth,
        })
    }

    /// The plugin's pool (its manifest, memory peak).
    pub fn plugin(&self) -> &PluginExporter {
        &self.plugin
    }

    /// Whether the plugin takes `signal`.
    pub fn handles(&self, signal: Signal) -> bool {
        self.plugin.signals().contains(&signal)
    }

    /// Runs the plugin over one request (protobuf) of `signal`, holding `items` items.
    pub async fn process(
        &self,
        signal: Signal,
        payload: &Bytes,
        items: u32,
    ) -> Result<WasmOutput, String> {
        let json = self.plugin.manifest().encoding == Encoding::OtlpJson;
        let input = if json {
            let d = Decoded::decode(signal, payload)
                .map_err(|e| format!("the {signal} batch does not decode: {e}"))?;
            Bytes::from(d.to_json())
        } else {
            payload.clone()
        };
        let replacement = match self.plugin.process(signal, items, input.clone()).await? {
            Processed::Keep => return Ok(WasmOutput::Keep),
            Processed::Drop => return Ok(WasmOutput::Drop),
            Processed::Replace(bytes) => bytes,
        };
        let limit = (input.len().max(1) as f64 * self.max_growth) as usize;
        if replacement.len() > limit {
            return Err(format!(
                "its replacement of {} bytes is more than max_growth ({}) times the {} bytes \
                 it was given",
                replacement.len(),
                self.max_growth,
                input.len()
            ));
        }
        let proto = if json {
            Decoded::from_json(signal, &replacement)
                .map_err(|e| format!("its replacement is not OTLP/JSON for {signal}: {e}"))?
                .encode()
        } else {
            Bytes::from(replacement)
        };
        let not_otlp = |e: String| format!("its replacement is not an OTLP {signal} request: {e}");
        // The receivers' check, down to every string: what passes decodes. A request of
        // another signal fails here, as item fields differ in wire type.
        let summary = crate::wire::inspect(signal, &proto).map_err(|e| not_otlp(e.to_string()))?;
        if summary.invalid > 0 {
            return Err(not_otlp(format!(
                "{} of its {} have malformed ids",
                summary.invalid,
                signal.item_name()
            )));
        }
        Ok(WasmOutput::Replace(proto, summary.items))
    }
}
