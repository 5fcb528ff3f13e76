//! Host bindings for the `ferry:plugin/exporter-plugin` worlds: 0.2.0 (`wit/plugin.wit`) and
//! 0.1.0 (`wit/deps/ferry-plugin-0.1.0`), which the host keeps loading.

/// `ferry:plugin@0.2.0`: batches are host resources.
pub mod v0_2 {
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
    pub use self::ferry::plugin0_2_0::{batches, host, types};
}

/// `ferry:plugin@0.1.0`: batches are copied into the plugin as `list<u8>`.
pub mod v0_1 {
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
    pub use self::ferry::plugin0_1_0::{host, types};
}
