//! `ferry run`: the daemon, on a config file or on this executable's default config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::bundle::Running;
use crate::config::Config;

/// Reads `path`, or this executable's default config when there is none.
pub fn load(path: Option<&Path>, running: &Running) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load_for(path, &running.carried.receivers)?,
        None => Config::parse_for(super::default_config(running), &running.carried.receivers)
            .context("embedded default config")?,
    })
}

/// Runs the daemon on `config` (read from `path`, if given) until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    path: Option<PathBuf>,
    running: &Running,
) -> anyhow::Result<ExitCode> {
    super::init_logging("info");
    crate::daemon::run(config, path, running.carried.clone()).await?;
    Ok(ExitCode::SUCCESS)
}
