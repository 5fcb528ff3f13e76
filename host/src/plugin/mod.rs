//! The plugin runtime: exporters are sandboxed WebAssembly components.
//!
//! `engine` owns wasmtime; `registry` finds plugin bytes; `policy` parses what a plugin may
//! reach and `ctx` enforces it; `sender` is the pooled HTTP client behind wasi:http;
//! `exporter` pre-instantiates a plugin and calls it under the sandbox's limits.

pub mod bindings;
pub mod breaker;
pub mod ctx;
pub mod engine;
pub mod exporter;
pub mod policy;
pub mod registry;
pub mod sender;

pub use engine::PluginEngine;
pub use exporter::{LoadError, Manifest, PluginExporter};
