//! `blackhole`: accepts every batch of every signal and discards it, without decoding.
//!
//! For benchmarks (the cost of everything but the backend) and for pipelines being set up.
//! It takes no config.

use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};

struct Blackhole;

impl Exporter for Blackhole {
    fn manifest() -> Manifest {
        Manifest::new(
            "blackhole",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        match config.trim() {
            "" | "{}" => Ok(Blackhole),
            other => Err(format!("blackhole takes no config, got {other}")),
        }
    }

    fn export(&mut self, _meta: BatchMeta, _batch: Batch<'_>) -> Result<(), ExportError> {
        Ok(())
    }
}

ferry_sdk::export!(Blackhole);
