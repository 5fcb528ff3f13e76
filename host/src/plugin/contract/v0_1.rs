//! `ferry:plugin@0.1.0` (`wit/deps/ferry-plugin-0.1.0`): batches are copied into the plugin as
//! `list<u8>`. Kept so plugins built against it still load.

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::HasSelf;
use wasmtime::component::Linker;

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

super::common!("0.1.0", ferry_plugin0_1_0_exporter);

fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    host::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)
}

/// One `export` call: the plugin gets a copy of the batch.
async fn export(
    plugin: &bindings::ExporterPlugin,
    store: &mut Store<PluginCtx>,
    meta: types::BatchMeta,
    payload: Bytes,
) -> wasmtime::Result<Result<(), types::ExportError>> {
    plugin
        .ferry_plugin0_1_0_exporter()
        .call_export(store, meta, &payload)
        .await
}
