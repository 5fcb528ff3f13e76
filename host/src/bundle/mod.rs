//! Bundles: one executable carrying the daemon, the plugins it needs precompiled for its
//! engine, and optionally a default config, so it runs with no plugin directory and no compile
//! step at start.
//!
//! A bundle is a `ferry` executable (ideally a runtime-only build) with a payload appended:
//!
//! ```text
//! [executable][payload][payload length: u64 LE][SHA-256 of payload: 32 bytes]["FERRYBN1"]
//! payload = [manifest length: u32 LE][manifest JSON][machine code of each plugin]
//! ```
//!
//! Only machine code is carried (not the components): it is all the runtime loads, and the
//! manifest keeps each component's digest, which is what the engine keys code by. The manifest
//! names the engine the code was compiled for; a bundle whose payload does not match its
//! checksum, or whose engine is not the running one, is refused before anything is loaded.

//!
//! `format` reads and writes that layout, `probe` asks an executable what it is before it is
//! carried, and `catalog` turns the running executable's bundle into the plugin catalog and
//! receiver set the rest of the daemon is handed.

mod catalog;
mod format;
mod probe;

use std::path::PathBuf;

pub use catalog::{Running, open_running};
pub use format::{Bundle, Entry, MAGIC, Manifest, NewBundle, runtime_of};
pub use probe::{BuildInfo, RUNTIME_NAME, Runtime, choose_runtime};

use crate::plugin::registry::PluginSource;

/// Why a bundle cannot be made, read or run.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file read or written (the bundle, its runtime, or the output).
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The payload does not match its checksum or cannot be parsed.
    #[error(
        "{path}: the bundle is corrupt ({what}); rebuild it with `ferry bundle`, do not edit it"
    )]
    Corrupt {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong: the checksum, a length, or the manifest.
        what: String,
    },
    /// The code was compiled for another engine than the one running it.
    #[error(
        "{path}: the bundle's plugins were compiled for engine {bundle}, but this ferry runs \
         engine {running}; rebuild the bundle with this ferry (`ferry bundle`)"
    )]
    Engine {
        /// The bundle file.
        path: PathBuf,
        /// The engine key its code was compiled for.
        bundle: String,
        /// The engine key of this executable.
        running: String,
    },
    /// A plugin to bundle could not be found or compiled.
    #[error("plugin {name}: {reason}")]
    Plugin {
        /// The plugin as named on the command line.
        name: String,
        /// Why it cannot be carried (not found, named twice, does not compile).
        reason: String,
    },
    /// The executable to carry cannot run this bundle.
    #[error("runtime {path}: {reason}")]
    Runtime {
        /// The executable asked for or found beside this one.
        path: PathBuf,
        /// Why it cannot carry the bundle (another engine, a missing receiver).
        reason: String,
    },
    /// The receivers asked for do not fit the runtime or the config.
    #[error("{0}")]
    Receivers(String),
}

/// Refuses receiver names Ferry does not have.
pub fn check_receiver_names(asked: &[String]) -> Result<(), BundleError> {
    let unknown: Vec<String> = asked
        .iter()
        .filter(|r| !crate::receiver::names().contains(&r.as_str()))
        .map(|r| format!("{r:?}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(BundleError::Receivers(format!(
        "unknown receiver(s) {} (receivers: {})",
        unknown.join(", "),
        crate::receiver::names().join(", ")
    )))
}

/// What would stop `config` running in a bundle that carries `receivers` and `plugins` on
/// `runtime`: receivers it enables beyond them, and, on a runtime-only build (which cannot
/// compile), plugins its exporters name that the bundle does not carry.
pub fn config_problems(
    config: &crate::config::Config,
    receivers: &[String],
    plugins: &[PluginSource],
    runtime: &BuildInfo,
) -> Vec<String> {
    let mut problems = Vec::new();
    for r in config.receivers.enabled() {
        if !receivers.iter().any(|c| c == r) {
            problems.push(format!(
                "receivers.{r} is enabled, but the bundle carries only the {} receiver(s)",
                receivers.join(", ")
            ));
        }
    }
    if !runtime.compiler {
        for (name, e) in &config.exporters {
            if !plugins.iter().any(|p| p.name == e.plugin) {
                problems.push(format!(
                    "exporters.{name} uses plugin {:?}, which the bundle does not carry and \
                     its runtime-only runtime cannot compile: add --plugin {}",
                    e.plugin, e.plugin
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Catalog;
    use crate::plugin::registry;

    #[test]
    fn receivers_must_be_known_and_in_the_runtime_and_the_config_must_fit() {
        let runtime = BuildInfo {
            ferry: "0".into(),
            engine: crate::plugin::engine::engine_key(),
            compiler: false,
            receivers: vec!["otlp".into()],
        };
        let asked = ["otlp".to_string(), "smtp".to_string()];
        let err = check_receiver_names(&asked).unwrap_err().to_string();
        assert!(err.contains("unknown receiver(s) \"smtp\""), "{err}");
        check_receiver_names(&["zipkin".into()]).unwrap();

        let config = crate::config::Config::parse(
            "[receivers.otlp]\nhttp = \"127.0.0.1:0\"\n[receivers.zipkin]\n\
             [exporters.sink]\nplugin = \"blackhole\"\n",
        )
        .unwrap();
        let problems = config_problems(&config, &runtime.receivers, &[], &runtime);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .contains("receivers.zipkin is enabled, but the bundle carries only the otlp"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("exporters.sink uses plugin \"blackhole\"")
                && problems[1].contains("add --plugin blackhole"),
            "{problems:?}"
        );
        let blackhole = [registry::find(&Catalog::builtin(), "blackhole", None).unwrap()];
        let both = ["otlp".to_string(), "zipkin".to_string()];
        assert!(config_problems(&config, &both, &blackhole, &runtime).is_empty());

        let zipkin = ["zipkin".to_string()];
        let why = runtime.unfit(&runtime.engine, &zipkin).unwrap();
        assert!(
            why.contains("built without the zipkin receiver(s)")
                && why.contains("--no-default-features --features zipkin"),
            "{why}"
        );
        let why = runtime.unfit("another-engine", &[]).unwrap();
        assert!(why.contains("runs engine"), "{why}");
    }
}
