//! `ferry plugin inspect|test|new`: the tools for plugin authors.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{PluginCommand, code};
use crate::bundle::Running;

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

/// Whether the component in `file` is a processor (anything else goes to the exporter
/// harness, which reports what is wrong with it).
async fn is_processor(engine: &crate::plugin::PluginEngine, file: &std::path::Path) -> bool {
    let Ok(source) = crate::plugin::registry::read_file(file) else {
        return false;
    };
    crate::plugin::exporter::describe(engine, &source)
        .await
        .is_ok_and(|m| m.world == crate::plugin::contract::World::Processor)
}

/// Runs one of the author tools.
pub async fn plugin(action: PluginCommand, running: &Running) -> anyhow::Result<ExitCode> {
    match action {
        PluginCommand::Inspect { file, json } => {
            let engine = super::engine(running, crate::plugin::engine::default_cache_dir())?;
            let report = crate::author::inspect::inspect(&engine, &file).await?;
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
            super::init_logging("warn,ferry::plugin::ctx=debug");
            let engine = super::engine(running, crate::plugin::engine::default_cache_dir())?;
            if is_processor(&engine, &file).await {
                // A processor has no backend: its default config is empty.
                let config = if config == crate::author::harness::DEFAULT_CONFIG {
                    "{}".to_string()
                } else {
                    crate::config::substitute_env(&config, |k| std::env::var(k).ok())
                        .map_err(|e| anyhow::anyhow!("--config: {}", e.join("; ")))?
                };
                let report = crate::author::processor_test::run(
                    &engine,
                    &file,
                    &config,
                    memory.as_deref(),
                    timeout.as_deref(),
                )
                .await?;
                print_report(&report, json);
                return Ok(code(report.passed()));
            }
            let options = crate::author::harness::Options {
                config,
                status,
                memory,
                timeout,
            };
            let report = crate::author::harness::run(&engine, &file, &options).await?;
            print_report(&report, json);
            Ok(code(report.passed()))
        }
        PluginCommand::New {
            name,
            lang,
            kind,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let next = crate::author::scaffold::create(&name, lang, kind, &dir)?;
            println!("created {} ({lang} {kind} {name})", dir.display());
            println!("{next}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
