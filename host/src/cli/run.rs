//! `ferry run`: the daemon, on a config file or on this executable's default config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::bundle::Running;
use crate::config::Config;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(path: Option<PathBuf>, running: &Running) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    let config = match &path {
        Some(path) => Config::load_for(path, &running.receivers)?,
        None => Config::parse_for(super::default_config(running), &running.receivers)
            .context("embedded default config")?,
    };
    let carried = crate::daemon::Carried {
        catalog: running.catalog.clone(),
        receivers: running.receivers.clone(),
    };
    crate::daemon::run(config, path, carried).await?;
    Ok(ExitCode::SUCCESS)
}
