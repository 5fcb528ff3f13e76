//! `ferry:plugin@0.3.0` (`wit/plugin.wit`): the exporter world of 0.2.0, and the
//! `processor-plugin` world. Batches are host resources lent for one call, as in 0.2.0 (whose
//! host side serves both).

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::DynOutputStream;

use crate::plugin::contract::{Guest, GuestPre, Processed, with_batch};
use crate::plugin::ctx::HostBatch;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:plugin/exporter-plugin@0.3.0",
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

/// The processor world shares the exporter world's imports (generated once, above).
mod processor_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:plugin/processor-plugin@0.3.0",
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "ferry:plugin/types": super::bindings::ferry::plugin0_3_0::types,
            "ferry:plugin/host": super::bindings::ferry::plugin0_3_0::host,
            "ferry:plugin/batches": super::bindings::ferry::plugin0_3_0::batches,
        },
    });
}

pub use bindings::ferry::plugin0_3_0::{batches, host, types};

super::common!("0.3.0", ferry_plugin0_3_0_exporter, Some(processor_pre));

fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    host::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)?;
    batches::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)
}

/// One `export` call: the plugin is lent the batch, not a copy.
async fn export(
    plugin: &bindings::ExporterPlugin,
    store: &mut Store<PluginCtx>,
    meta: types::BatchMeta,
    payload: Bytes,
) -> wasmtime::Result<Result<(), types::ExportError>> {
    with_batch(store, payload, async |store, handle| {
        plugin
            .ferry_plugin0_3_0_exporter()
            .call_export(store, meta, handle)
            .await
    })
    .await
}

/// The batch resource of 0.3.0 is served exactly as 0.2.0's.
impl batches::Host for PluginCtx {}

impl batches::HostBatch for PluginCtx {
    fn len(&mut self, batch: Resource<HostBatch>) -> wasmtime::Result<u64> {
        super::v0_2::batches::HostBatch::len(self, batch)
    }

    fn read(
        &mut self,
        batch: Resource<HostBatch>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Vec<u8>> {
        super::v0_2::batches::HostBatch::read(self, batch, offset, len)
    }

    async fn write_to(
        &mut self,
        batch: Resource<HostBatch>,
        out: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Result<(), String>> {
        super::v0_2::batches::HostBatch::write_to(self, batch, out).await
    }

    fn drop(&mut self, batch: Resource<HostBatch>) -> wasmtime::Result<()> {
        super::v0_2::batches::HostBatch::drop(self, batch)
    }
}

fn processor_pre(
    pre: wasmtime::component::InstancePre<PluginCtx>,
) -> wasmtime::Result<Box<dyn GuestPre>> {
    Ok(Box::new(ProcessorPre(
        processor_bindings::ProcessorPluginPre::new(pre)?,
    )))
}

struct ProcessorPre(processor_bindings::ProcessorPluginPre<PluginCtx>);

#[async_trait::async_trait]
impl GuestPre for ProcessorPre {
    fn engine(&self) -> &wasmtime::Engine {
        self.0.engine()
    }

    async fn instantiate(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<Box<dyn Guest>> {
        Ok(Box::new(Processor(self.0.instantiate_async(store).await?)))
    }
}

struct Processor(processor_bindings::ProcessorPlugin);

#[async_trait::async_trait]
impl Guest for Processor {
    async fn describe(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<Manifest> {
        let m = self
            .0
            .ferry_plugin0_3_0_processor()
            .call_describe(store)
            .await?;
        Ok(Manifest {
            world: World::Processor,
            ..m.into()
        })
    }

    async fn init(
        &self,
        store: &mut Store<PluginCtx>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        self.0
            .ferry_plugin0_3_0_processor()
            .call_init(store, config)
            .await
    }

    async fn export(
        &self,
        _: &mut Store<PluginCtx>,
        _: Signal,
        _: u32,
        _: u32,
        _: Bytes,
    ) -> wasmtime::Result<Outcome> {
        Err(wasmtime::Error::msg("a processor plugin cannot export"))
    }

    async fn process(
        &self,
        store: &mut Store<PluginCtx>,
        signal: Signal,
        items: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Result<Processed, String>> {
        let meta = types::ProcessMeta {
            signal: signal.into(),
            items,
        };
        let result = with_batch(store, payload, async |store, handle| {
            self.0
                .ferry_plugin0_3_0_processor()
                .call_process(store, meta, handle)
                .await
        })
        .await?;
        Ok(result.map(|o| match o {
            types::Outcome::Keep => Processed::Keep,
            types::Outcome::Replace(bytes) => Processed::Replace(bytes),
            types::Outcome::Drop => Processed::Drop,
        }))
    }

    async fn shutdown(&self, _: &mut Store<PluginCtx>) -> wasmtime::Result<()> {
        // The processor interface has no shutdown: a processor holds nothing to flush.
        Ok(())
    }
}
