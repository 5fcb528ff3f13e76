//! The `ferry` command line: parsing, then one file per command. The running executable's
//! bundle is opened once here and what it carries is handed down as a value.

/// `println!` for a command's output, through [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod bundle;
mod plugin;
mod plugins;
mod run;
mod tap;
mod top;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bundle::Running;
use crate::plugin::PluginEngine;
use crate::runtime::RuntimeConfig;

/// The command line.
#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A telemetry daemon with sandboxed WebAssembly exporters"
)]
pub struct Cli {
    #[command(subcommand)]
    /// What to do.
    command: Command,
}

#[derive(Subcommand)]
/// A `ferry` command.
pub enum Command {
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
    /// Write one executable carrying this daemon, the chosen plugins compiled for its engine,
    /// and optionally a default config (`--list FILE` shows what a bundle holds).
    Bundle {
        /// A plugin to carry: a built-in name, or a `.wasm` file (named by its file stem).
        /// Repeat for more.
        #[arg(long = "plugin", required_unless_present = "list")]
        plugins: Vec<String>,
        /// A TOML config the bundle runs when started without `--config`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The executable to write.
        #[arg(short, long, required_unless_present = "list")]
        output: Option<PathBuf>,
        /// The receivers the bundle carries, comma-separated (default: all the runtime has).
        /// A config enabling another is refused.
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        receivers: Option<Vec<String>>,
        /// The executable to carry. Default: `ferry-runtime` beside this ferry when it fits (a
        /// runtime-only build of the same source, with the receivers asked for), else this
        /// ferry.
        #[arg(long)]
        runtime: Option<PathBuf>,
        /// Show what the bundle FILE holds instead.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["plugins", "config", "output", "runtime", "receivers"])]
        list: Option<PathBuf>,
    },
    /// Print, as JSON, the engine this ferry compiles for and loads code from, whether it has
    /// the compiler, and its receivers (what `ferry bundle` checks a runtime against).
    #[command(hide = true)]
    BuildInfo,
    /// Print the embedded default config.
    DefaultConfig,
    /// Show what flows at a point of a running daemon, one JSON line per batch (the request as
    /// OTLP/JSON), from its admin endpoint's `/tap`. Without POINT, list the points.
    Tap {
        /// `receiver:NAME`, `processors` (after the ingest chain), `exporter:NAME` (what it is
        /// handed) or `dropped:NAME` (what it gave up on, with why).
        point: Option<String>,
        /// The daemon's admin address (`[admin] listen`).
        #[arg(long, default_value = "127.0.0.1:8888")]
        admin: String,
        /// A file holding the admin token (`[admin] token_file`), when the endpoint needs it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Batches a second at most (the ones between are skipped, and counted in each line).
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Stop after this many batches.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show a running daemon's figures (receivers, queues, exporters) in the terminal,
    /// refreshed in place, from its admin endpoint's `/status.json`.
    Top {
        /// The daemon's admin address (`[admin] listen`).
        #[arg(long, default_value = "127.0.0.1:8888")]
        admin: String,
        /// A file holding the admin token (`[admin] token_file`), when the endpoint needs it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How often to refresh, e.g. 2s.
        #[arg(long, default_value = "2s", value_parser = crate::units::parse_duration)]
        interval: std::time::Duration,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
/// A `ferry plugin` command.
pub enum PluginCommand {
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
        #[arg(long, default_value = crate::author::harness::DEFAULT_CONFIG)]
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
        lang: crate::author::scaffold::Lang,
        /// What the plugin is.
        #[arg(long, value_enum, default_value_t)]
        kind: crate::author::scaffold::Kind,
        /// Directory to create the project in (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Logs to stderr, filtered by `$FERRY_LOG` or else `default`.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bundle is checked before anything else runs, and its config becomes the default.
    let running = match crate::bundle::open_running() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        // `ferry run` reads its config first: `[runtime]` says how many threads to start.
        Command::Run { config: path } => {
            let config = match run::load(path.as_deref(), &running) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            match start(&config.runtime) {
                Ok(runtime) => runtime.block_on(run::run(config, path, &running)),
                Err(code) => return code,
            }
        }
        command => match start(&RuntimeConfig::default()) {
            Ok(runtime) => runtime.block_on(dispatch(command, &running)),
            Err(code) => return code,
        },
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config this executable runs without `--config`: a bundle's, else the built-in one.
fn default_config(running: &Running) -> &str {
    running
        .config
        .as_deref()
        .unwrap_or(crate::config::DEFAULT_CONFIG)
}

/// The plugin engine every command uses: this executable's catalog, and the compiled-code
/// cache in `cache_dir`.
fn engine(running: &Running, cache_dir: Option<PathBuf>) -> anyhow::Result<PluginEngine> {
    Ok(PluginEngine::builder()
        .cache_dir(cache_dir)
        .catalog(running.carried.catalog.clone())
        .build()?)
}

/// The async runtime `config` describes, or the exit code when it cannot start.
fn start(config: &RuntimeConfig) -> Result<tokio::runtime::Runtime, ExitCode> {
    config.build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Runs `command` (`main` starts `ferry run` itself, on the runtime its config describes).
async fn dispatch(command: Command, running: &Running) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            run::run(run::load(config.as_deref(), running)?, config, running).await
        }
        Command::Validate { file } => validate::validate(&file, running).await,
        Command::Plugins { dir } => plugins::list(dir, running).await,
        Command::Plugin { action } => plugin::plugin(action, running).await,
        Command::Bundle {
            plugins,
            config,
            output,
            receivers,
            runtime,
            list,
        } => match list {
            Some(file) => bundle::list(&file),
            None => bundle::bundle(plugins, config, output, receivers, runtime, running),
        },
        Command::BuildInfo => {
            let info = crate::bundle::BuildInfo::current();
            outln!("{}", serde_json::to_string(&info).expect("serialises"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Tap {
            point,
            admin,
            token_file,
            rate,
            count,
        } => tap::tap(&admin, token_file.as_deref(), point.as_deref(), rate, count).await,
        Command::Top {
            admin,
            token_file,
            interval,
            once,
        } => top::top(&admin, token_file.as_deref(), interval, once).await,
        Command::DefaultConfig => {
            write_stdout(format_args!("{}", default_config(running)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes a command's output to stdout. A reader that has gone away (`ferry plugins | head
/// -1`) ends the command quietly, as it ends other command-line tools, where `println!` would
/// panic.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Exit status of a check.
fn code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
