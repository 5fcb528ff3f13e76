//! `ferry validate FILE`: checks a config and loads its plugins, reporting every error.

use std::path::Path;
use std::process::ExitCode;

use crate::bundle::Running;
use crate::config::Config;

/// Validates `file` for this executable (its receivers and plugins).
pub async fn validate(file: &Path, running: &Running) -> anyhow::Result<ExitCode> {
    let config = match Config::load_for(file, &running.carried.receivers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let engine = super::engine(running, config.plugins.effective_cache_dir())?;
    let telemetry = crate::telemetry::Telemetry::new();
    match crate::daemon::load_exporters(&config, &engine, &telemetry).await {
        Ok(exporters) => {
            outln!(
                "{}: valid ({} exporter{})",
                file.display(),
                exporters.len(),
                if exporters.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
