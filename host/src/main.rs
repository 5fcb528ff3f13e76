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
    // A bundle is checked before anything else runs, and its config becomes the default.
    let bundle = match ferry::bundle::open_running() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let default_config = bundle
        .and_then(|b| b.manifest.config.as_deref())
        .unwrap_or(DEFAULT_CONFIG);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command, default_config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, default_config: &str) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            init_logging("info");
            let path = config;
            let config = match &path {
                Some(path) => Config::load(path)?,
                None => Config::parse(default_config).context("embedded default config")?,
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
        Command::Bundle {
            plugins,
            config,
            output,
            receivers,
            runtime,
            list,
        } => match list {
            Some(file) => list_bundle(&file),
            None => bundle(plugins, config, output, receivers, runtime),
        },
        Command::BuildInfo => {
            let info = ferry::bundle::BuildInfo::current();
            println!("{}", serde_json::to_string(&info).expect("serialises"));
            Ok(ExitCode::SUCCESS)
        }
        Command::DefaultConfig => {
            print!("{default_config}");
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

fn list_bundle(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(b) = ferry::bundle::Bundle::read(file)? else {
        anyhow::bail!("{} is not a ferry bundle", file.display());
    };
    let m = &b.manifest;
    println!("bundle     {}", file.display());
    println!(
        "runtime    ferry {}, {} bytes, {}",
        m.ferry,
        b.runtime_len,
        if m.compiler {
            "with the compiler"
        } else {
            "runtime-only"
        }
    );
    println!("engine     {}", m.engine);
    println!("receivers  {}", m.receivers.join(", "));
    match &m.config {
        Some(c) => println!("config     embedded ({} bytes)", c.len()),
        None => println!("config     none (the built-in default)"),
    }
    for p in &m.plugins {
        println!(
            "plugin     {:<24} machine code {} bytes, component sha256:{}",
            p.name,
            p.code.end - p.code.start,
            p.digest
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn bundle(
    plugins: Vec<String>,
    config: Option<PathBuf>,
    output: Option<PathBuf>,
    receivers: Option<Vec<String>>,
    runtime: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use ferry::bundle::{NewBundle, check_receiver_names, choose_runtime, config_problems};
    let output = output.context("--output is required")?;
    if let Some(asked) = &receivers {
        check_receiver_names(asked)?;
    }
    let embedded = match &config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    // The config the bundle runs without --config: the embedded one, else the built-in
    // default. Refuse one the bundle could never run.
    let runs = Config::parse(embedded.as_deref().unwrap_or(DEFAULT_CONFIG)).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}",
            config
                .as_deref()
                .unwrap_or("the built-in default config".as_ref())
                .display()
        )
    })?;
    let runtime = choose_runtime(runtime.as_deref(), receivers.as_deref())?;
    if let Some(why) = &runtime.passed_over {
        eprintln!("note: not using {why}");
    }
    let receivers = receivers.unwrap_or_else(|| runtime.info.receivers.clone());
    let mut sources = Vec::new();
    for p in &plugins {
        let path = std::path::Path::new(p);
        let source = if path.extension().is_some_and(|e| e == "wasm") {
            let source = registry::read_file(path)?;
            anyhow::ensure!(
                registry::valid_name(&source.name),
                "{p}: the file name must be NAME.wasm, with a valid plugin name"
            );
            source
        } else {
            registry::find(p, None)?
        };
        sources.push(source);
    }
    let problems = config_problems(&runs, &receivers, &sources, &runtime.info);
    match &config {
        Some(path) if !problems.is_empty() => {
            anyhow::bail!(
                "{} cannot run in this bundle: {}",
                path.display(),
                problems.join("; ")
            )
        }
        None if !problems.is_empty() => eprintln!(
            "note: with no --config, the bundle runs the built-in default config, which it \
             cannot run ({}); start it with --config, or bundle a config",
            problems.join("; ")
        ),
        _ => {}
    }
    let engine = PluginEngine::builder().build()?;
    let bundle = NewBundle::build(&engine, &sources, &runtime.info, receivers, embedded)?;
    bundle.write(&ferry::bundle::runtime_of(&runtime.path)?, &output)?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    let m = &bundle.manifest;
    println!(
        "wrote {} ({size} bytes): {} plugin(s) compiled for engine {}, receivers {}, on {} ({})",
        output.display(),
        m.plugins.len(),
        m.engine,
        m.receivers.join(", "),
        runtime.path.display(),
        if m.compiler {
            "with the compiler; a runtime-only build makes a smaller bundle"
        } else {
            "runtime-only"
        }
    );
    Ok(ExitCode::SUCCESS)
}
