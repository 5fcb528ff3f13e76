//! `ferry:plugin@0.2.0` (`wit/plugin.wit`): batches are host resources, lent to the plugin for
//! one call.

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::Linker;
use wasmtime::component::{HasSelf, Resource};

use wasmtime_wasi::p2::{DynOutputStream, StreamError};

use crate::plugin::ctx::HostBatch;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:plugin/exporter-plugin@0.2.0",
        imports: {
            "ferry:plugin/batches.[method]batch.len": trappable,
            "ferry:plugin/batches.[method]batch.read": trappable,
            "ferry:plugin/batches.[method]batch.write-to": async | trappable,
        },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "ferry:plugin/batches.batch": crate::plugin::ctx::HostBatch,
        },
    });
}

pub use bindings::ferry::plugin0_2_0::{batches, host, types};

super::common!("0.2.0", ferry_plugin0_2_0_exporter);

fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    host::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)?;
    batches::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)
}

/// One `export` call: the plugin is lent the batch (a handle), not a copy, for the call.
async fn export(
    plugin: &bindings::ExporterPlugin,
    store: &mut Store<PluginCtx>,
    meta: types::BatchMeta,
    payload: Bytes,
) -> wasmtime::Result<Result<(), types::ExportError>> {
    super::with_batch(store, payload, async |store, handle| {
        plugin
            .ferry_plugin0_2_0_exporter()
            .call_export(store, meta, handle)
            .await
    })
    .await
}

impl batches::Host for PluginCtx {}

impl batches::HostBatch for PluginCtx {
    fn len(&mut self, batch: Resource<HostBatch>) -> wasmtime::Result<u64> {
        self.refuse_if_exhausted()?;
        Ok(self.table.get(&batch)?.0.len() as u64)
    }

    fn read(
        &mut self,
        batch: Resource<HostBatch>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Vec<u8>> {
        self.refuse_if_exhausted()?;
        let bytes = &self.table.get(&batch)?.0;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(bytes[start..end.min(bytes.len())].to_vec())
    }

    async fn write_to(
        &mut self,
        batch: Resource<HostBatch>,
        out: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Result<(), String>> {
        self.refuse_if_exhausted()?;
        let bytes = self.table.get(&batch)?.0.clone();
        let stream = self.table.get_mut(&out)?;
        let mut written = 0;
        // The stream takes what `check_write` permits per write (1 MiB for a request body);
        // each write is a slice of the batch, not a copy of it.
        while written < bytes.len() {
            let permit = match stream.check_write() {
                Ok(0) => {
                    stream.ready().await;
                    continue;
                }
                Ok(n) => n,
                Err(e) => return stream_failed(e),
            };
            let n = permit.min(bytes.len() - written);
            if let Err(e) = stream.write(bytes.slice(written..written + n)) {
                return stream_failed(e);
            }
            written += n;
        }
        Ok(Ok(()))
    }

    fn drop(&mut self, batch: Resource<HostBatch>) -> wasmtime::Result<()> {
        // The host ends the loan itself after the call; a guest cannot own a batch handle.
        let _ = batch;
        Ok(())
    }
}

/// A failed body stream is the plugin's to report (`Err`); a broken stream contract traps.
fn stream_failed(e: StreamError) -> wasmtime::Result<Result<(), String>> {
    match e {
        StreamError::Closed => Ok(Err("the stream is closed".into())),
        StreamError::LastOperationFailed(e) => Ok(Err(format!("{e:#}"))),
        StreamError::Trap(e) => Err(e),
    }
}
