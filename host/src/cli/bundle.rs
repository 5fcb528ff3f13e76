//! `ferry bundle`: one executable carrying a runtime, precompiled plugins and a config; and
//! `ferry bundle --list FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::bundle::{NewBundle, Running, check_receiver_names, choose_runtime, config_problems};
use crate::config::{Config, DEFAULT_CONFIG};
use crate::plugin::registry;

/// Shows what the bundle `file` holds.
pub fn list(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let Some(b) = crate::bundle::Bundle::read(file)? else {
        anyhow::bail!("{} is not a ferry bundle", file.display());
    };
    let m = &b.manifest;
    outln!("bundle     {}", file.display());
    outln!(
        "runtime    ferry {}, {} bytes, {}",
        m.ferry,
        b.runtime_len,
        if m.compiler {
            "with the compiler"
        } else {
            "runtime-only"
        }
    );
    outln!("engine     {}", m.engine);
    outln!("receivers  {}", m.receivers.join(", "));
    match &m.config {
        Some(c) => outln!("config     embedded ({} bytes)", c.len()),
        None => outln!("config     none (the built-in default)"),
    }
    for p in &m.plugins {
        outln!(
            "plugin     {:<24} machine code {} bytes, component sha256:{}",
            p.name,
            p.code.end - p.code.start,
            p.digest
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a bundle.
pub fn bundle(
    plugins: Vec<String>,
    config: Option<PathBuf>,
    output: Option<PathBuf>,
    receivers: Option<Vec<String>>,
    runtime: Option<PathBuf>,
    running: &Running,
) -> anyhow::Result<ExitCode> {
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
            registry::find(&running.carried.catalog, p, None)?
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
    let engine = super::engine(running, None)?;
    let bundle = NewBundle::build(&engine, &sources, &runtime.info, receivers, embedded)?;
    bundle.write(&crate::bundle::runtime_of(&runtime.path)?, &output)?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    let m = &bundle.manifest;
    outln!(
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
