//! The plugin runtime: exporters are sandboxed WebAssembly components.
//!
//! `engine` owns wasmtime; `catalog` is what an executable carries (built-in components,
//! precompiled code) and `registry` finds plugin bytes; `policy` parses what a plugin may
//! reach and `ctx` and `sockets` enforce it; `secrets` holds what a plugin may send but never
//! see; `resources` weighs the host memory a plugin holds, and `text` and `stderr` bound what
//! it says; `sender` is the pooled HTTP client behind wasi:http; `contract` has one module per
//! contract version, and `instance` runs every call under a deadline; `exporter`
//! pre-instantiates a plugin and pools its instances.

pub mod breaker;
pub mod catalog;
pub mod contract;
pub mod ctx;
pub mod engine;
pub mod exporter;
pub mod instance;
pub mod load;
pub mod policy;
pub mod registry;
pub mod resources;
pub mod role;
pub mod secrets;
pub mod sender;
pub mod settings;
pub mod sockets;
pub mod stderr;
pub mod text;

pub use catalog::Catalog;
pub use engine::PluginEngine;
pub use exporter::{LoadError, Manifest, PluginExporter};
