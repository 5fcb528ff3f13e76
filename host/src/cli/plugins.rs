//! `ferry plugins`: the plugins this executable carries and a directory holds, with their
//! manifests.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bundle::Running;
use crate::plugin::registry;

/// Lists every plugin available, described by the real sandbox.
pub async fn list(dir: Option<PathBuf>, running: &Running) -> anyhow::Result<ExitCode> {
    let engine = super::engine(running, crate::plugin::engine::default_cache_dir())?;
    outln!(
        "{:<20} {:<10} {:<24} {:<14} {:<9} {:<10} SOURCE",
        "NAME",
        "VERSION",
        "SIGNALS",
        "ENCODING",
        "CONTRACT",
        "KIND"
    );
    for source in registry::list(engine.catalog(), dir.as_deref())? {
        match crate::plugin::exporter::describe(&engine, &source).await {
            Ok(m) => outln!(
                "{:<20} {:<10} {:<24} {:<14} {:<9} {:<10} {}",
                source.name,
                m.version,
                m.signals
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                format!("{:?}", m.encoding),
                m.contract,
                match m.world {
                    crate::plugin::contract::World::Exporter => "exporter",
                    crate::plugin::contract::World::Processor => "processor",
                },
                source.origin
            ),
            Err(e) => outln!("{:<20} error: {e} ({})", source.name, source.origin),
        }
    }
    Ok(ExitCode::SUCCESS)
}
