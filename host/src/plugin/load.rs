//! What an exporter is built from (its spec, in the runtime's own terms) and why loading one
//! fails.

use std::collections::BTreeMap;
use std::time::Duration;

use super::breaker::CircuitBreakerConfig;
use super::contract::World;
use super::ctx::InstanceLimits;
use super::engine::EngineError;
use super::instance::{stderr_suffix, trap_reason};
use super::secrets::SecretSource;
use crate::signal::Signal;

fn kind(w: World) -> &'static str {
    match w {
        World::Exporter => "exporter",
        World::Processor => "processor",
    }
}

fn section(w: World) -> &'static str {
    match w {
        World::Exporter => "exporters",
        World::Processor => "processors",
    }
}

/// What an exporter is built from, in the runtime's own terms: the config layer makes one
/// from `[exporters.NAME]`.
#[derive(Debug)]
pub struct ExporterSpec<'a> {
    /// The plugin's own settings, handed to its `init` as JSON (and read for the endpoints
    /// `allowed_hosts` defaults to).
    pub settings: &'a toml::Table,
    /// Destinations the plugin may reach, when set.
    pub allowed_hosts: Option<&'a [String]>,
    /// Headers the host adds to the plugin's allowed requests.
    pub secret_headers: &'a BTreeMap<String, SecretSource>,
    /// Values the host writes in place of `${secret:NAME}` on the plugin's connections.
    pub secrets: &'a BTreeMap<String, SecretSource>,
    /// Limits of each instance.
    pub limits: InstanceLimits,
    /// Signals routed to it; `None`: every signal the plugin takes.
    pub signals: Option<&'a [Signal]>,
    /// When repeated faults stop calls to it.
    pub breaker: &'a CircuitBreakerConfig,
}

/// Why an exporter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Compilation or engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The component does not implement a `ferry:plugin` world the host supports, or imports
    /// something the host does not provide.
    #[error(
        "plugin does not fit a ferry:plugin world (exporter-plugin 0.3.0, 0.2.0 or 0.1.0, \
         processor-plugin 0.3.0): {0:#}"
    )]
    Contract(wasmtime::Error),
    /// `describe` or `init` trapped.
    #[error(
        "plugin trapped during {during}: {}{}",
        trap_reason("-", error),
        stderr_suffix(stderr)
    )]
    Trap {
        /// The guest call that trapped (`instantiate`, `describe`, `init`...).
        during: &'static str,
        /// The trap, with wasmtime's chain of causes.
        error: wasmtime::Error,
        /// What the guest printed to stderr, escaped (the end of it), if anything.
        stderr: String,
    },
    /// A call did not finish within the exporter's timeout.
    #[error("plugin did not finish {during} within {limit:?}")]
    Timeout {
        /// The guest call that ran out of time.
        during: &'static str,
        /// The exporter's `timeout`, which the call exceeded.
        limit: Duration,
    },
    /// `init` refused the configuration.
    #[error("plugin rejected its config: {0}")]
    Config(String),
    /// The egress policy could not be built.
    #[error("allowed_hosts: {0}")]
    Policy(String),
    /// The config asks for signals the plugin does not support.
    #[error("plugin {plugin} does not support {signal} (it supports: {supported})")]
    Signal {
        /// The plugin's name, from its manifest.
        plugin: String,
        /// The first signal asked for that it does not export.
        signal: Signal,
        /// The signals its manifest lists, comma-separated.
        supported: String,
    },
    /// The plugin implements the other world (a processor configured as an exporter, or the
    /// reverse).
    #[error(
        "it is a {} plugin, not a {} plugin (configure it under [{}.NAME])",
        kind(*found), kind(*wanted), section(*found)
    )]
    World {
        /// The world the configuration needs.
        wanted: World,
        /// The world the plugin implements.
        found: World,
    },
    /// The config table could not become JSON.
    #[error("config cannot be passed as JSON: {0}")]
    Json(String),
}

impl LoadError {
    /// Whether the plugin trapped or ran out of time while being instantiated or described:
    /// faulty code, not a configuration to fix.
    pub fn is_fault_before_init(&self) -> bool {
        matches!(
            self,
            LoadError::Trap { during, .. } | LoadError::Timeout { during, .. }
                if *during == "describe" || *during == "instantiation"
        )
    }
}
