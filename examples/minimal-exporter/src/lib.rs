//! The smallest useful Ferry exporter: counts what it receives and logs a running total.
//!
//! Build it with `cargo build -p ferry-example-minimal --target wasm32-wasip2 --release`, copy
//! `target/wasm32-wasip2/release/ferry_example_minimal.wasm` into the plugin directory, and
//! reference it from the config as `plugin = "ferry_example_minimal"` (the file name without
//! `.wasm`). See `examples/minimal-exporter/README.md`.

use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};

struct Minimal {
    items: u64,
    batches: u64,
}

impl Exporter for Minimal {
    fn manifest() -> Manifest {
        Manifest::new(
            "minimal",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(_config: &str) -> Result<Self, String> {
        Ok(Minimal {
            items: 0,
            batches: 0,
        })
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        self.items += u64::from(meta.items);
        self.batches += 1;
        ferry_sdk::log::info(&format!(
            "minimal: batch {} of {} items ({} bytes); {} items in total",
            self.batches,
            meta.items,
            batch.len(),
            self.items
        ));
        Ok(())
    }
}

ferry_sdk::export!(Minimal);
