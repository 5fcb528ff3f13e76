//! Ferry: a telemetry daemon whose exporters are sandboxed WebAssembly components.
//!
//! Data flows `receiver` → `pipeline` → `plugin`.

pub mod admin;
pub mod author;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod pipeline;
pub mod plugin;
pub mod processor;
pub mod receiver;
pub mod runtime;
pub mod telemetry;
pub mod units;

/// Requests in their wire form (walk, check, read, edit), shared with processor plugins.
pub use ferry_wire as wire;
/// The three OTLP signals.
pub use ferry_wire::signal;

#[cfg(test)]
mod house {
    //! The shape of the source tree, checked: layers, no run-time globals, file sizes.

    use std::path::{Path, PathBuf};

    /// Top-level modules from the bottom up. A module may use modules of lower layers only, so
    /// no two folders can import each other, directly or around a circle.
    const LAYERS: &[&[&str]] = &[
        &["signal"],
        &["telemetry", "units", "runtime"],
        &["pipeline", "admin", "wire"],
        &["plugin"],
        &["processor"],
        &["receiver"],
        &["config"],
        &["author", "bundle", "daemon"],
        &["cli"],
    ];

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every source file of the daemon, and of `ferry-wire` (its layer `wire`, a crate of its
    /// own so that guests can build it) as `wire/...`: (path, top-level module, code).
    fn sources() -> Vec<(String, String, String)> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let src = manifest.join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        files(&manifest.join("../wire/src"), &mut all);
        all.into_iter()
            .map(|p| {
                let rel = match p.strip_prefix(&src) {
                    Ok(rel) => rel.to_string_lossy().into_owned(),
                    Err(_) => format!("wire/{}", p.file_name().unwrap().to_string_lossy()),
                };
                let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
                let text = std::fs::read_to_string(&p).unwrap();
                // Tests may reach anywhere; the rules are for the code they test.
                // (`#![cfg(test)]` at the top makes a whole file test code.)
                let code = text.split("cfg(test)]").next().unwrap().to_string();
                (rel.clone(), top.to_string(), code)
            })
            .collect()
    }

    /// Every `crate::NAME` (and `crate::{A, B}`) a text names.
    fn uses(code: &str) -> Vec<String> {
        let mut out = Vec::new();
        for part in code.split("crate::").skip(1) {
            let names = match part.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").to_string(),
                None => part.to_string(),
            };
            for name in names.split(',') {
                let id: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !id.is_empty() {
                    out.push(id);
                }
                if !part.starts_with('{') {
                    break;
                }
            }
        }
        out
    }

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    #[test]
    fn folders_use_only_lower_layers() {
        let mut wrong = Vec::new();
        for (file, top, code) in sources() {
            if matches!(top.as_str(), "lib" | "main") {
                continue;
            }
            let Some(own) = layer(&top) else {
                wrong.push(format!("{file}: module {top} is in no layer"));
                continue;
            };
            for used in uses(&code) {
                match layer(&used) {
                    Some(l) if used != top && l >= own => {
                        wrong.push(format!("{file}: {top} uses {used}, not a lower layer"))
                    }
                    _ => {}
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn no_static_holds_run_time_state_outside_telemetry() {
        let wrong: Vec<String> = sources()
            .into_iter()
            .filter(|(_, top, _)| top != "telemetry")
            .flat_map(|(file, _, code)| {
                let lines: Vec<&str> = code.lines().collect();
                // The allocator is a static by necessity, and holds no state of ours.
                lines
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| {
                        let l = l.trim_start();
                        let allocator = *i > 0 && lines[i - 1].trim() == "#[global_allocator]";
                        !allocator
                            && (l.starts_with("static ")
                                || l.starts_with("pub static ")
                                || l.starts_with("pub(crate) static "))
                    })
                    .map(|(_, l)| format!("{file}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn no_file_has_more_than_600_lines_of_code() {
        let wrong: Vec<String> = sources()
            .into_iter()
            .filter(|(_, _, code)| code.lines().count() > 600)
            .map(|(file, _, code)| format!("{file}: {} lines", code.lines().count()))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
