//! `ferry plugin inspect|test|new`: the tools for plugin authors.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{PluginCommand, code};
use crate::bundle::Running;

fn print_report(report: &(impl std::fmt::Display + serde::Serialize), json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(report).expect("reports serialise")
        );
    } else {
        outln!("{report}");
    }
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
            outln!("created {} ({lang} {kind} {name})", dir.display());
            outln!("{next}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
