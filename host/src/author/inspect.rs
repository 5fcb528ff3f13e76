//! `ferry plugin inspect`: what a component is, what it needs, and whether this host can run
//! it, each problem named.

use std::fmt;
use std::path::Path;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceType};

use super::size_text;
use crate::plugin::engine::CodeOrigin;
use crate::plugin::exporter::{self, CONTRACTS};
use crate::plugin::registry;
use crate::plugin::{Manifest, PluginEngine};

/// The export a plugin is known by, without its version.
const EXPORTER: &str = "ferry:plugin/exporter";
const PROCESSOR: &str = "ferry:plugin/processor";

/// What the file holds, judged from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A WebAssembly component (what a plugin must be).
    Component,
    /// A core WebAssembly module: built for wasm32-wasip1 or not componentized.
    CoreModule,
    /// Not WebAssembly at all.
    NotWasm,
}

fn kind(bytes: &[u8]) -> Kind {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => Kind::Component,
        Some([0, b'a', b's', b'm', 0x01, 0, 0, 0]) => Kind::CoreModule,
        _ => Kind::NotWasm,
    }
}

/// Why `bytes` cannot be a plugin at all, judged from the header alone.
pub fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    match kind(bytes) {
        Kind::Component => None,
        Kind::CoreModule => Some(
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)",
        ),
        Kind::NotWasm => Some("this is not a WebAssembly file (no `\\0asm` header)"),
    }
}

/// Which `ferry:plugin` contract the component implements.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "version", rename_all = "kebab-case")]
pub enum Contract {
    /// A version this host speaks.
    Supported(String),
    /// `ferry:plugin/exporter` at a version this host does not speak.
    Unsupported(String),
    /// No `ferry:plugin/exporter` export at all.
    Missing,
}

/// One import and whether the host provides it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Import {
    /// e.g. `wasi:http/outgoing-handler@0.2.12`.
    pub name: String,
    /// The host links it.
    pub provided: bool,
    /// What a plugin gets from it inside the sandbox, or why it cannot be linked.
    pub note: String,
}

/// Everything `inspect` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The file.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// What its header says it is.
    pub kind: Kind,
    /// Where its machine code came from, when it compiled.
    pub code: Option<CodeOrigin>,
    /// How long compiling (or loading from the cache) took.
    pub compile_ms: Option<f64>,
    /// Every export.
    pub exports: Vec<String>,
    /// Every import, checked against the host.
    pub imports: Vec<Import>,
    /// The contract version it implements.
    pub contract: Option<Contract>,
    /// The world it implements (`exporter-plugin`, `processor-plugin`), when it speaks a
    /// supported contract.
    pub world: Option<&'static str>,
    /// What `describe` returned.
    pub manifest: Option<ManifestView>,
    /// Linear memory held after instantiation and `describe`.
    pub memory_after_describe: Option<usize>,
    /// Everything that stops the daemon from loading it; empty when it would load.
    pub problems: Vec<String>,
}

/// A manifest as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ManifestView {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Signals it exports.
    pub signals: Vec<String>,
    /// How it wants batches encoded.
    pub encoding: &'static str,
}

impl From<&Manifest> for ManifestView {
    fn from(m: &Manifest) -> Self {
        ManifestView {
            name: m.name.clone(),
            version: m.version.clone(),
            signals: m.signals.iter().map(|s| s.as_str().to_string()).collect(),
            encoding: m.encoding.as_str(),
        }
    }
}

impl Report {
    /// True when the daemon would load this plugin.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Inspects the component in `path`.
pub async fn inspect(engine: &PluginEngine, path: &Path) -> anyhow::Result<Report> {
    let source = registry::read_file(path)?;
    let wasm = &source.wasm;
    let mut report = Report {
        file: path.display().to_string(),
        size: wasm.len() as u64,
        kind: kind(wasm),
        code: None,
        compile_ms: None,
        exports: Vec::new(),
        imports: Vec::new(),
        contract: None,
        world: None,
        manifest: None,
        memory_after_describe: None,
        problems: Vec::new(),
    };
    let component = match super::compile(engine, wasm) {
        Ok((component, origin, ms)) => {
            report.code = Some(origin);
            report.compile_ms = Some(ms);
            component
        }
        Err(problem) => {
            report.problems.push(problem);
            return Ok(report);
        }
    };
    let ty = component.component_type();
    report.exports = ty
        .exports(engine.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let (found, world) = contract(&report.exports);
    report.contract = Some(found);
    report.world = world;
    report.imports = check_imports(engine, &component);

    match report.contract.as_ref().expect("just set") {
        Contract::Supported(_) => {}
        Contract::Unsupported(v) => report.problems.push(format!(
            "it implements {EXPORTER}@{v}, a contract version this host does not speak \
             (it speaks {}): rebuild it against one of those, or run a ferry that speaks {v}",
            CONTRACTS.join(", ")
        )),
        Contract::Missing => report.problems.push(format!(
            "it does not export {EXPORTER} or {PROCESSOR} (it exports: {}){}: a Ferry exporter \
             targets the world ferry:plugin/exporter-plugin@{v}, a processor \
             ferry:plugin/processor-plugin@{v}",
            list_or_nothing(&report.exports),
            world_hint(&report.exports),
            v = CONTRACTS[0]
        )),
    }
    for i in report.imports.iter().filter(|i| !i.provided) {
        report.problems.push(format!(
            "it imports {}, which this host does not provide: {}",
            i.name, i.note
        ));
    }
    if !report.ok() {
        return Ok(report);
    }

    match exporter::probe(engine, &source).await {
        Ok((manifest, memory)) => {
            report.manifest = Some(ManifestView::from(&manifest));
            report.memory_after_describe = Some(memory);
        }
        Err(e) => report.problems.push(e.to_string()),
    }
    Ok(report)
}

fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

/// The contract version a component speaks, and the world it implements when this host
/// speaks that version.
fn contract(exports: &[String]) -> (Contract, Option<&'static str>) {
    let mut unsupported = None;
    for (prefix, world) in [
        (EXPORTER, "exporter-plugin"),
        (PROCESSOR, "processor-plugin"),
    ] {
        let versions: Vec<&str> = exports
            .iter()
            .filter_map(|e| e.strip_prefix(prefix)?.strip_prefix('@'))
            .collect();
        if let Some(v) = CONTRACTS.iter().find(|c| versions.contains(c)) {
            return (Contract::Supported(v.to_string()), Some(world));
        }
        unsupported = unsupported.or(versions.first().map(|v| v.to_string()));
        if exports.iter().any(|e| e == prefix) {
            unsupported = unsupported.or(Some("(none)".into()));
        }
    }
    match unsupported {
        Some(v) => (Contract::Unsupported(v), None),
        None => (Contract::Missing, None),
    }
}

/// Names the world a component with other exports was most likely built for.
fn world_hint(exports: &[String]) -> &'static str {
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@")) {
        "; it looks like a command-line program (world wasi:cli/command)"
    } else if exports
        .iter()
        .any(|e| e.starts_with("wasi:http/incoming-handler@"))
    {
        "; it looks like an HTTP server (world wasi:http/proxy)"
    } else {
        ""
    }
}

/// What a plugin gets from an interface inside the sandbox.
fn sandbox_note(name: &str) -> &'static str {
    let iface = name.split('@').next().unwrap_or(name);
    match iface {
        "ferry:plugin/host" => "the daemon's log",
        "ferry:plugin/batches" => "the batch handle",
        "ferry:plugin/types" => "contract types",
        "wasi:http/outgoing-handler" => "outgoing HTTP, to the exporter's allowed_hosts only",
        "wasi:http/types" => "HTTP request and response types",
        "wasi:filesystem/preopens" => "no directories, or /data when granted_dir is set",
        "wasi:cli/environment" => "an empty environment and no arguments",
        "wasi:cli/stdout" => "discarded",
        "wasi:cli/stderr" => "kept (shown when the plugin traps)",
        "wasi:cli/stdin" => "empty",
        "wasi:cli/exit" => "exit traps the instance; the host replaces it",
        _ if iface.starts_with("wasi:sockets/") => "linked, but every socket and lookup is denied",
        _ if iface.starts_with("wasi:filesystem/") => "only inside a granted_dir",
        _ if iface.starts_with("wasi:clocks/")
            || iface.starts_with("wasi:random/")
            || iface.starts_with("wasi:io/")
            || iface.starts_with("wasi:cli/") =>
        {
            "available"
        }
        _ => "provided",
    }
}

/// Checks every import against the host's linker. wasmtime reports the first unsatisfied
/// import only, so each one found is stubbed out in a copy of the linker and the check runs
/// again, until the rest all link.
fn check_imports(engine: &PluginEngine, component: &Component) -> Vec<Import> {
    let ty = component.component_type();
    let imports: Vec<(String, ComponentItem)> = ty
        .imports(engine.engine())
        .map(|(n, e)| (n.to_string(), e.ty))
        .collect();
    let mut missing: Vec<(String, String)> = Vec::new();
    let mut linker: Linker<_> = engine.linker().clone();
    linker.allow_shadowing(true);
    for _ in 0..=imports.len() {
        let Err(e) = linker.instantiate_pre(component) else {
            break;
        };
        let message = e.to_string();
        let Some((name, item)) = imports
            .iter()
            .find(|(n, _)| message.contains(&format!("`{n}`")))
        else {
            missing.push((String::new(), format!("{e:#}")));
            break;
        };
        // wasmtime says "implementation is missing" for what the linker has no definition
        // of (all of it, or one of its functions); anything else is a definition of another
        // shape (another version).
        let root = e.root_cause().to_string();
        let reason = if root == message || root.ends_with("is missing") {
            "there is no definition of it (or of part of it) here".to_string()
        } else {
            format!("the host's version of it differs: {e:#}")
        };
        missing.push((name.clone(), reason));
        if stub(&mut linker, name, item).is_err() {
            break;
        }
    }
    let mut out: Vec<Import> = imports
        .iter()
        .map(|(name, _)| match missing.iter().find(|(m, _)| m == name) {
            Some((_, reason)) => Import {
                name: name.clone(),
                provided: false,
                note: reason.clone(),
            },
            None => Import {
                name: name.clone(),
                provided: true,
                note: sandbox_note(name).into(),
            },
        })
        .collect();
    // A failure the loop could not pin on one import still stops the plugin loading.
    out.extend(
        missing
            .into_iter()
            .filter(|(n, _)| n.is_empty())
            .map(|(_, reason)| Import {
                name: "(linking)".into(),
                provided: false,
                note: reason,
            }),
    );
    out
}

/// A resource type for stubbed-out imports.
struct Stub;

/// Defines `name` in `linker` with functions that trap, so the check can go on past it.
fn stub<T: 'static>(
    linker: &mut Linker<T>,
    name: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    let engine = linker.engine().clone();
    match item {
        ComponentItem::ComponentInstance(instance) => {
            let mut inst = linker.instance(name)?;
            for (export, e) in instance.exports(&engine) {
                match e.ty {
                    ComponentItem::ComponentFunc(_) => {
                        inst.func_new(export, |_, _, _, _| wasmtime::bail!("not provided"))?
                    }
                    ComponentItem::Resource(_) => {
                        inst.resource(export, ResourceType::host::<Stub>(), |_, _| Ok(()))?
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        ComponentItem::ComponentFunc(_) => linker
            .root()
            .func_new(name, |_, _, _, _| wasmtime::bail!("not provided")),
        ComponentItem::Resource(_) => {
            linker
                .root()
                .resource(name, ResourceType::host::<Stub>(), |_, _| Ok(()))
        }
        _ => wasmtime::bail!("cannot stand in for {name}"),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file       {}", self.file)?;
        writeln!(
            f,
            "size       {} ({} bytes)",
            size_text(self.size as usize),
            self.size
        )?;
        let kind = match self.kind {
            Kind::Component => "WebAssembly component",
            Kind::CoreModule => "core WebAssembly module",
            Kind::NotWasm => "not WebAssembly",
        };
        writeln!(f, "kind       {kind}")?;
        super::write_code_line(f, self.code, self.compile_ms, "compiled")?;
        if let Some(c) = &self.contract {
            let text = match c {
                Contract::Supported(v) => format!(
                    "ferry:plugin@{v} (world ferry:plugin/{}@{v}): supported",
                    self.world.unwrap_or("exporter-plugin")
                ),
                Contract::Unsupported(v) => format!("ferry:plugin@{v}: NOT supported"),
                Contract::Missing => {
                    "none (no ferry:plugin/exporter or ferry:plugin/processor export)".into()
                }
            };
            writeln!(f, "contract   {text}")?;
        }
        if let Some(m) = &self.manifest {
            writeln!(
                f,
                "manifest   {} {}, signals {}, encoding {}",
                m.name,
                m.version,
                m.signals.join(","),
                m.encoding
            )?;
        }
        if let Some(mem) = self.memory_after_describe {
            writeln!(f, "memory     {} after instantiation", size_text(mem))?;
        }
        if !self.exports.is_empty() {
            writeln!(f, "exports")?;
            for e in &self.exports {
                writeln!(f, "  {e}")?;
            }
        }
        if !self.imports.is_empty() {
            writeln!(f, "imports")?;
            let width = self.imports.iter().map(|i| i.name.len()).max().unwrap_or(0);
            for i in &self.imports {
                let mark = if i.provided { "ok     " } else { "MISSING" };
                writeln!(f, "  {:<width$}  {mark}  {}", i.name, i.note)?;
            }
        }
        if self.ok() {
            write!(f, "result     loads: this host can run it")
        } else {
            writeln!(f, "result     does NOT load:")?;
            let last = self.problems.len() - 1;
            for (n, p) in self.problems.iter().enumerate() {
                write!(f, "  - {p}")?;
                if n != last {
                    writeln!(f)?;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_is_read_from_the_exporter_export() {
        let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            contract(&e(&["ferry:plugin/exporter@0.2.0"])),
            (Contract::Supported("0.2.0".into()), Some("exporter-plugin"))
        );
        assert_eq!(
            contract(&e(&["ferry:plugin/exporter@0.1.0"])),
            (Contract::Supported("0.1.0".into()), Some("exporter-plugin"))
        );
        assert_eq!(
            contract(&e(&["ferry:plugin/exporter@0.9.0"])),
            (Contract::Unsupported("0.9.0".into()), None)
        );
        assert_eq!(
            contract(&e(&["ferry:plugin/processor@0.3.0"])),
            (
                Contract::Supported("0.3.0".into()),
                Some("processor-plugin")
            )
        );
        assert_eq!(
            contract(&e(&["wasi:cli/run@0.2.0"])),
            (Contract::Missing, None)
        );
        assert!(world_hint(&e(&["wasi:cli/run@0.2.0"])).contains("wasi:cli/command"));
    }

    #[test]
    fn the_header_tells_a_component_from_a_module() {
        assert_eq!(kind(b"\0asm\x0d\0\x01\0rest"), Kind::Component);
        assert_eq!(kind(b"\0asm\x01\0\0\0rest"), Kind::CoreModule);
        assert_eq!(kind(b"#!/bin/sh"), Kind::NotWasm);
    }
}
