//! The daemon's TOML configuration: parsing, `${ENV}` substitution and validation.
//!
//! Each component owns its config type and its checks (receivers in `receiver/`, the queue
//! in `pipeline/`, the plugin limits in `plugin/`, the admin endpoint in `admin/`, the
//! threads in `runtime.rs`); this module assembles them. Each section is deserialised on its
//! own so that one run reports every error in the file, each with its key path, instead of
//! stopping at the first.

mod env;
mod exporter;

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;

pub use crate::admin::AdminConfig;
pub use crate::pipeline::config::{PipelineConfig, QueueConfig, QueueMode, WhenFull};
pub use crate::pipeline::retry::RetryConfig;
pub use crate::plugin::breaker::CircuitBreakerConfig;
pub use crate::plugin::secrets::SecretSource;
pub use crate::plugin::settings::{HttpLimits, PluginLog, Plugins};
pub use crate::processor::{ProcessorConfig, Processors};
pub use crate::receiver::Receivers;
pub use crate::runtime::RuntimeConfig;
pub use crate::units::{at_path, parse_bytes, parse_duration};
pub use env::substitute_env;
pub use exporter::{DEFAULT_CONCURRENCY, ExporterConfig, MAX_CONCURRENCY};

/// What the executable carries, which a config is checked against and the daemon runs with:
/// the plugin catalog, and the receivers a config may enable (a bundle's, or all this build
/// has).
#[derive(Debug, Clone)]
pub struct Carried {
    /// Built-in and precompiled plugins.
    pub catalog: crate::plugin::Catalog,
    /// Receiver names a config may enable.
    pub receivers: Vec<String>,
}

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
    /// `[processors.NAME]`, by name.
    pub processors: Processors,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
}

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

const TOP_LEVEL: &[&str] = &[
    "receivers",
    "plugins",
    "pipeline",
    "queue",
    "admin",
    "exporters",
    "processors",
    "runtime",
];

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
    /// Reads and validates the config file at `path`, for a ferry with every receiver it was
    /// built with.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_for(path, &crate::receiver::built_names())
    }

    /// Reads and validates the config file at `path` for an executable that may start only
    /// the receivers `carried` (a bundle's).
    pub fn load_for(path: &Path, carried: &[String]) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
        Self::parse_for(&text, carried)
    }

    /// Parses and validates config text, reporting every problem found, for a ferry with
    /// every receiver it was built with.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Self::parse_for(text, &crate::receiver::built_names())
    }

    /// Parses and validates config text for an executable that may start only the receivers
    /// `carried`, reporting every problem found.
    pub fn parse_for(text: &str, carried: &[String]) -> Result<Config, ConfigErrors> {
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
        let receivers = Receivers::from_toml(root.get("receivers"), &mut errors);
        let plugins: Plugins = section(&root, "plugins", &mut errors);
        let pipeline: PipelineConfig = section(&root, "pipeline", &mut errors);
        let queue: QueueConfig = section(&root, "queue", &mut errors);
        let admin: AdminConfig = section(&root, "admin", &mut errors);
        let runtime: RuntimeConfig = section(&root, "runtime", &mut errors);
        let mut processors = Processors::new();
        match root.get("processors") {
            None => {}
            Some(toml::Value::Table(t)) => {
                for (name, value) in t {
                    match at_path::<ProcessorConfig>(&format!("processors.{name}"), value) {
                        Ok(p) => {
                            processors.insert(name.clone(), p);
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            Some(_) => errors.push("processors: expected a table of processors".into()),
        }
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
            processors,
            runtime,
        };
        config.check(carried, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Each component checks its own section; what spans sections is checked here.
    fn check(&self, carried: &[String], errors: &mut Vec<String>) {
        self.pipeline.check(&self.queue, errors);
        self.plugins.check(errors);
        self.admin.check(errors);
        self.runtime.check(errors);
        let budget = self.queue.budget(&self.pipeline);
        self.receivers.check(budget, carried, errors);
        crate::processor::check(&self.processors, errors);
        let chain = crate::processor::check_chain;
        chain(
            "pipeline.processors",
            &self.pipeline.processors,
            &self.processors,
            true,
            errors,
        );
        for (name, e) in &self.exporters {
            e.check(name, errors);
            chain(
                &format!("exporters.{name}.processors"),
                &e.processors,
                &self.processors,
                false,
                errors,
            );
        }
    }

    /// What identifies the sections a reload cannot change (`[receivers]`, `[pipeline]`
    /// but its `processors`, `[queue]`, `[admin]`, `[runtime]`): equal when, and only when,
    /// their data is.
    pub fn fixed_sections(&self) -> serde_json::Value {
        let pipeline = crate::pipeline::config::PipelineConfig {
            processors: Vec::new(),
            ..self.pipeline.clone()
        };
        serde_json::json!({
            "receivers": self.receivers.canonical(),
            "pipeline": pipeline,
            "queue": self.queue,
            "admin": self.admin,
            "runtime": self.runtime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Signal;
    use std::time::Duration;

    #[test]
    fn default_config_is_valid() {
        let c = Config::parse(DEFAULT_CONFIG).expect("embedded default config");
        assert!(c.exporters.contains_key("debug"));
        assert!(
            c.receivers
                .get::<crate::receiver::otlp::OtlpReceiverConfig>("otlp")
                .is_some()
        );
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
    fn a_tail_sampler_runs_only_in_an_exporters_chain() {
        let text = |chain: &str| {
            format!(
                "{chain}\n[processors.tail]\nkind = \"tail_sample\"\n\
                 policies = [{{ name = \"errors\", spans = {{ any = [{{ status = \"error\" }}] }} }}]\n\
                 [exporters.out]\nplugin = \"debug\"\nprocessors = [\"tail\"]\n"
            )
        };
        assert!(Config::parse(&text("")).is_ok());
        let errors = Config::parse(&text("[pipeline]\nprocessors = [\"tail\"]"))
            .unwrap_err()
            .0
            .join("\n");
        assert!(
            errors.contains("pipeline.processors[0]: \"tail\" is a tail_sample, which runs only in an exporter's chain"),
            "{errors}"
        );
    }

    #[test]
    fn every_placeholder_names_a_defined_secret() {
        let errors = Config::parse(
            r#"
            [exporters.bus]
            plugin = "debug"
            config = { password = "${secret:pw}", nested = { token = "${secret:tok}" } }
            secrets = { pw = { env = "NATS_PW" }, "bad.name" = { env = "X", file = "/y" } }
        "#,
        )
        .unwrap_err()
        .0
        .join("\n");
        for needle in [
            "exporters.bus.config.nested.token: names the secret \"tok\", which exporters.bus.secrets does not define",
            "exporters.bus.secrets.bad.name: a name is letters",
            "exporters.bus.secrets.bad.name: set exactly one of `env` and `file`",
        ] {
            assert!(errors.contains(needle), "{needle} missing from {errors}");
        }
        assert!(!errors.contains("config.password"), "{errors}");
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
            c.receivers
                .get::<crate::receiver::zipkin::ZipkinReceiverConfig>("zipkin")
                .unwrap()
                .http
                .to_string(),
            "127.0.0.1:9411"
        );
        let oc = c
            .receivers
            .get::<crate::receiver::opencensus::OpenCensusReceiverConfig>("opencensus")
            .unwrap();
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
            substitute_env("p=\"${secret:nats}\" ${PORT}", env).unwrap(),
            "p=\"${secret:nats}\" 9999"
        );
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
