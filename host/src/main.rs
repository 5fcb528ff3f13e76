//! The `ferry` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry::config::{Config, DEFAULT_CONFIG};
use ferry::plugin::{PluginEngine, registry};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A telemetry daemon with sandboxed WebAssembly exporters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (on the embedded default config when --config is not given).
    Run {
        /// TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file and load its plugins; report every error.
    Validate {
        /// TOML config file.
        file: PathBuf,
    },
    /// List the available plugins and their manifests.
    Plugins {
        /// Plugin directory to list besides the built-in plugins.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            init_logging();
            let path = config;
            let config = match &path {
                Some(path) => Config::load(path)?,
                None => Config::parse(DEFAULT_CONFIG).context("embedded default config")?,
            };
            ferry::daemon::run(config, path).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { file } => {
            let config = match Config::load(&file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            let engine = PluginEngine::builder()
                .cache_dir(config.plugins.effective_cache_dir())
                .build()?;
            let telemetry = ferry::telemetry::Telemetry::new();
            match ferry::daemon::load_exporters(&config, &engine, &telemetry).await {
                Ok(exporters) => {
                    println!(
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
        Command::Plugins { dir } => {
            let engine = PluginEngine::builder()
                .cache_dir(ferry::plugin::engine::default_cache_dir())
                .build()?;
            println!(
                "{:<20} {:<10} {:<24} {:<14} {:<9} SOURCE",
                "NAME", "VERSION", "SIGNALS", "ENCODING", "CONTRACT"
            );
            for source in registry::list(dir.as_deref())? {
                match ferry::plugin::exporter::describe(&engine, &source).await {
                    Ok(m) => println!(
                        "{:<20} {:<10} {:<24} {:<14} {:<9} {}",
                        source.name,
                        m.version,
                        m.signals
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        format!("{:?}", m.encoding),
                        m.contract,
                        source.origin
                    ),
                    Err(e) => println!("{:<20} error: {e} ({})", source.name, source.origin),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
