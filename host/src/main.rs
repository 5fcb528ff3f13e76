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
    /// Tools for plugin authors: inspect, test and scaffold plugins.
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show what a component implements and needs, and whether this host can run it.
    Inspect {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin in the real sandbox against sample batches (traces, metrics and logs;
    /// small and large), with a local capture server standing in for its backend.
    Test {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The plugin's config as JSON. `${capture}` is the capture server's URL; other
        /// `${NAME}` come from the environment.
        #[arg(long, default_value = ferry::author::harness::DEFAULT_CONFIG)]
        config: String,
        /// HTTP status the capture server answers with (try 503 or 429 to see how the plugin
        /// reports a failing backend).
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Memory cap of an instance, as the exporter's `memory` setting (e.g. 128MiB).
        #[arg(long)]
        memory: Option<String>,
        /// Time limit of one call, as the exporter's `timeout` setting (e.g. 30s).
        #[arg(long)]
        timeout: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a new plugin project that builds and passes `ferry plugin test` as it is.
    New {
        /// Plugin name (letters, digits, '-' and '_').
        name: String,
        /// Language of the project.
        #[arg(long, value_enum)]
        lang: ferry::author::scaffold::Lang,
        /// Directory to create the project in (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Logs to stderr, filtered by `$FERRY_LOG` or else `default`.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
            init_logging("info");
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
        Command::Plugin { action } => plugin(action).await,
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_report(report: &(impl std::fmt::Display + serde::Serialize), json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("reports serialise")
        );
    } else {
        println!("{report}");
    }
}

async fn plugin(action: PluginCommand) -> anyhow::Result<ExitCode> {
    let code = |ok: bool| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match action {
        PluginCommand::Inspect { file, json } => {
            let engine = PluginEngine::builder()
                .cache_dir(ferry::plugin::engine::default_cache_dir())
                .build()?;
            let report = ferry::author::inspect::inspect(&engine, &file).await?;
            print_report(&report, json);
            Ok(code(report.ok()))
        }
        PluginCommand::Test {
            file,
            config,
            status,
            memory,
            timeout,
            json,
        } => {
            // The plugin's own log lines are what an author wants to see next to the report.
            init_logging("warn,ferry::plugin::ctx=debug");
            let engine = PluginEngine::builder()
                .cache_dir(ferry::plugin::engine::default_cache_dir())
                .build()?;
            let options = ferry::author::harness::Options {
                config,
                status,
                memory,
                timeout,
            };
            let report = ferry::author::harness::run(&engine, &file, &options).await?;
            print_report(&report, json);
            Ok(code(report.passed()))
        }
        PluginCommand::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let next = ferry::author::scaffold::create(&name, lang, &dir)?;
            println!("created {} ({lang} plugin {name})", dir.display());
            println!("{next}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
