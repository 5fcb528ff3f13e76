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
        Some(path) => Config::load_for(path, &running.carried.receivers)?,
        None => Config::parse_for(super::default_config(running), &running.carried.receivers)
            .context("embedded default config")?,
    };
    crate::daemon::run(config, path, running.carried.clone()).await?;
    Ok(ExitCode::SUCCESS)
}
