//! `ferry:plugin@0.1.0` (`wit/deps/ferry-plugin-0.1.0`): batches are copied into the plugin as
//! `list<u8>`. Kept so plugins built against it still load.

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::HasSelf;
use wasmtime::component::{InstancePre, Linker};

use super::{Exporter, ExporterPre, Version};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ferry:plugin/exporter-plugin@0.1.0",
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use bindings::ferry::plugin0_1_0::{host, types};
use bindings::{ExporterPlugin, ExporterPluginPre};

super::common!("0.1.0");

/// This version, for the host's table of versions.
pub const VERSION: Version = Version {
    number: "0.1.0",
    add_to_linker,
    pre,
};

fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    host::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)
}

fn pre(pre: InstancePre<PluginCtx>) -> wasmtime::Result<Box<dyn ExporterPre>> {
    Ok(Box::new(Pre(ExporterPluginPre::new(pre)?)))
}

struct Pre(ExporterPluginPre<PluginCtx>);

#[async_trait::async_trait]
impl ExporterPre for Pre {
    fn engine(&self) -> &wasmtime::Engine {
        self.0.engine()
    }

    async fn instantiate(
        &self,
        store: &mut Store<PluginCtx>,
    ) -> wasmtime::Result<Box<dyn Exporter>> {
        Ok(Box::new(Plugin(self.0.instantiate_async(store).await?)))
    }
}

struct Plugin(ExporterPlugin);

#[async_trait::async_trait]
impl Exporter for Plugin {
    async fn describe(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<Manifest> {
        let e = self.0.ferry_plugin0_1_0_exporter();
        Ok(e.call_describe(store).await?.into())
    }

    async fn init(
        &self,
        store: &mut Store<PluginCtx>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        self.0
            .ferry_plugin0_1_0_exporter()
            .call_init(store, config)
            .await
    }

    /// The plugin gets a copy of the batch.
    async fn export(
        &self,
        store: &mut Store<PluginCtx>,
        signal: Signal,
        items: u32,
        attempt: u32,
        payload: Bytes,
    ) -> wasmtime::Result<Outcome> {
        let meta = meta(signal, items, attempt);
        let result = self
            .0
            .ferry_plugin0_1_0_exporter()
            .call_export(store, meta, &payload)
            .await?;
        Ok(result.err().map(Outcome::from).unwrap_or(Outcome::Ok))
    }

    async fn shutdown(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<()> {
        self.0
            .ferry_plugin0_1_0_exporter()
            .call_shutdown(store)
            .await
    }
}
