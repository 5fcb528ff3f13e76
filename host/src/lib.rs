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
pub mod receiver;
pub mod signal;
pub mod telemetry;
pub mod units;
