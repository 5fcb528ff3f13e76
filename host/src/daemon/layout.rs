//! The pipeline's layout for the status page, from the config and the exporters running.

use std::path::Path;
use std::time::SystemTime;

use crate::admin::layout::{ExporterLayout, Layout, ProcessorLayout, unix_ms};
use crate::config::Config;
use crate::signal::Signal;

use super::exporters::ExporterSet;

fn chain(names: &[String], config: &Config) -> Vec<ProcessorLayout> {
    names
        .iter()
        .map(|n| ProcessorLayout {
            name: n.clone(),
            kind: config
                .processors
                .get(n)
                .map_or_else(String::new, |p| p.kind.clone()),
        })
        .collect()
}

/// The layout of `config` with `set` running, for a daemon started at `started` on the
/// config file `path` (if any); not `ready` (the caller says when it is).
pub fn layout(
    config: &Config,
    set: &ExporterSet,
    path: Option<&Path>,
    started: SystemTime,
) -> Layout {
    let readers = Signal::ALL.map(|s| set.readers(s));
    Layout {
        ready: false,
        config_file: path.map(|p| p.display().to_string()),
        started_unix_ms: unix_ms(started),
        queue_mode: serde_json::to_value(config.queue.mode)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        ingest: chain(&config.pipeline.processors, config),
        exporters: config
            .exporters
            .iter()
            .filter(|(name, _)| readers.iter().any(|r| r.contains(name)))
            .map(|(name, ec)| ExporterLayout {
                name: name.clone(),
                plugin: ec.plugin.clone(),
                signals: Signal::ALL
                    .iter()
                    .zip(&readers)
                    .filter(|(_, r)| r.contains(name))
                    .map(|(s, _)| s.as_str().to_string())
                    .collect(),
                processors: chain(&ec.processors, config),
                component: set.plugin_layout(name),
            })
            .collect(),
        reloads: Default::default(),
    }
}
