//! Host bindings for the `ferry:plugin/exporter-plugin` world (`wit/plugin.wit`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "ferry:plugin/exporter-plugin",
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});
