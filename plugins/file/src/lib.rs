//! `file`: OTLP JSON lines (one export request per line, as the OpenTelemetry Collector's file
//! exporter writes them) into the directory the exporter's `granted_dir` grants, one file per
//! signal, rotated by size, with a retention count.

pub mod files;

use std::path::{Component, Path, PathBuf};

use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

use files::{Files, WriteError};

/// Where the host mounts the granted directory inside the sandbox.
const GRANTED: &str = "/data";

/// A size: bytes as a number, or a string such as `"100MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        let text = match self {
            Size::Bytes(b) => return Ok(*b),
            Size::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "{key}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
                ));
            }
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| format!("{key}: expected a size such as \"100MiB\", got {text:?}"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Subdirectory of the granted directory (created when missing); empty for the grant itself.
    #[serde(default)]
    path: String,
    /// Rotate a signal's file before it would grow past this.
    max_file_bytes: Option<Size>,
    /// Rotated files kept per signal (oldest deleted first); 0 keeps them all.
    #[serde(default = "default_max_files")]
    max_files: usize,
    /// `fdatasync` after every batch (slower; survives a machine crash).
    #[serde(default)]
    fsync: bool,
}

fn default_max_files() -> usize {
    10
}

const DEFAULT_MAX_FILE_BYTES: u64 = 100 << 20;
const MIN_FILE_BYTES: u64 = 1 << 10;

fn relative_path(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(p.to_path_buf())
    } else {
        Err(format!(
            "path: {path:?} must be relative to the granted directory, without `..`"
        ))
    }
}

struct FileExporter {
    files: Files,
}

fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "traces",
        Signal::Metrics => "metrics",
        Signal::Logs => "logs",
    }
}

impl Exporter for FileExporter {
    fn manifest() -> Manifest {
        Manifest::new(
            "file",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpJson,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = ferry_sdk::parse_config(config)?;
        let mut errors = Vec::new();
        let rel = relative_path(&c.path).map_err(|e| errors.push(e)).ok();
        let max_file_bytes = match &c.max_file_bytes {
            None => Some(DEFAULT_MAX_FILE_BYTES),
            Some(s) => match s.bytes("max_file_bytes") {
                Ok(b) if b < MIN_FILE_BYTES => {
                    errors.push(format!("max_file_bytes: at least {MIN_FILE_BYTES} bytes"));
                    None
                }
                Ok(b) => Some(b),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        if !Path::new(GRANTED).is_dir() {
            errors.push(
                "no directory is granted to this exporter: set the exporter's `granted_dir`".into(),
            );
        }
        match (rel, max_file_bytes) {
            (Some(rel), Some(max_file_bytes)) if errors.is_empty() => Ok(FileExporter {
                files: Files::new(
                    Path::new(GRANTED).join(rel),
                    max_file_bytes,
                    c.max_files,
                    c.fsync,
                ),
            }),
            _ => Err(errors.join("; ")),
        }
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let payload = batch.to_vec();
        match self.files.write(signal_name(meta.signal), &payload) {
            Ok(()) => Ok(()),
            Err(WriteError::TooLarge { line, max }) => Err(ExportError::Permanent(format!(
                "a batch of {line} bytes cannot fit in a file of at most {max} bytes (max_file_bytes)"
            ))),
            Err(WriteError::Io(what)) => Err(ExportError::Retryable(what)),
        }
    }
}

ferry_sdk::export!(FileExporter);
