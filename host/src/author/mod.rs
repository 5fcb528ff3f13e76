//! Tools for plugin authors: `ferry plugin inspect`, `ferry plugin test` and
//! `ferry plugin new`.
//!
//! `inspect` reads a component and checks it against this host; `harness` runs it in the
//! daemon's sandbox against the `samples`, with the `capture` server as its backend;
//! `scaffold` writes a new plugin project.

pub mod capture;
pub mod harness;
pub mod inspect;
pub mod processor_test;
pub mod samples;
pub mod scaffold;

use std::time::{Duration, Instant};

use wasmtime::component::Component;

use crate::plugin::PluginEngine;
use crate::plugin::engine::CodeOrigin;

/// A duration in milliseconds, to a tenth.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// `512 B`, `8.1 KiB`, `41.9 MiB`.
fn size_text(bytes: usize) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

/// The report line saying where a component's code came from and how long it took;
/// `compiled` is how a fresh compile is described.
fn write_code_line(
    f: &mut std::fmt::Formatter<'_>,
    code: Option<CodeOrigin>,
    ms: Option<f64>,
    compiled: &str,
) -> std::fmt::Result {
    let (Some(code), Some(ms)) = (code, ms) else {
        return Ok(());
    };
    let how = match code {
        CodeOrigin::Compiled => compiled,
        CodeOrigin::DiskCache => "loaded from the compiled-code cache",
        CodeOrigin::Memory => "already compiled",
    };
    writeln!(f, "code       {how} in {ms} ms")
}

/// A file's component compiled as the daemon would (through its cache), with where the code
/// came from and how many milliseconds that took; `Err` says why it is not a component this
/// host can compile.
fn compile(engine: &PluginEngine, wasm: &[u8]) -> Result<(Component, CodeOrigin, f64), String> {
    if let Some(problem) = inspect::not_a_component(wasm) {
        return Err(problem.into());
    }
    let started = Instant::now();
    let (component, origin) = engine.compile_traced(wasm).map_err(|e| e.to_string())?;
    Ok((component, origin, millis(started.elapsed())))
}
