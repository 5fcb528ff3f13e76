//! `ferry-sdk`: write Ferry exporter plugins in Rust.
//!
//! A plugin is a WebAssembly component (target `wasm32-wasip2`) that implements the
//! `ferry:plugin/exporter-plugin` world in `wit/plugin.wit`. With this crate a plugin is one
//! type implementing [`Exporter`] plus one [`export!`] line:
//!
//! ```ignore
//! use ferry_sdk::{BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
//!
//! struct Counter { seen: u64 }
//!
//! impl Exporter for Counter {
//!     fn manifest() -> Manifest {
//!         Manifest::new("counter", env!("CARGO_PKG_VERSION"), &[Signal::Traces], Encoding::OtlpProtobuf)
//!     }
//!     fn init(_config: &str) -> Result<Self, String> { Ok(Counter { seen: 0 }) }
//!     fn export(&mut self, meta: BatchMeta, _payload: Vec<u8>) -> Result<(), ExportError> {
//!         self.seen += u64::from(meta.items);
//!         ferry_sdk::log::info(&format!("{} spans so far", self.seen));
//!         Ok(())
//!     }
//! }
//!
//! ferry_sdk::export!(Counter);
//! ```
//!
//! The host owns batching, retries and the network policy: `export` reports what happened with
//! an [`ExportError`] and returns; it never sleeps or loops on failures.

pub mod http;
pub mod log;
pub mod otlp;

/// Raw bindings generated from `wit/plugin.wit`.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferry:plugin/exporter-plugin",
        with: {
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
        pub_export_macro: true,
        export_macro_name: "__export_exporter_plugin",
        default_bindings_module: "ferry_sdk::bindings",
    });
}

pub use bindings::ferry::plugin::types::{
    BatchMeta, Encoding, ExportError, LogLevel, Manifest, Signal,
};
pub use ferry_proto as proto;

impl Manifest {
    /// A manifest for a plugin named `name` at `version`.
    pub fn new(name: &str, version: &str, signals: &[Signal], encoding: Encoding) -> Self {
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            signals: signals.to_vec(),
            encoding,
        }
    }
}

/// One exporter plugin. The host creates an instance, calls [`Exporter::init`] once with the
/// exporter's config (as JSON), then [`Exporter::export`] for each batch.
pub trait Exporter: Sized + 'static {
    /// Static facts about the plugin: its name, version, signals and wanted encoding.
    fn manifest() -> Manifest;

    /// Builds the exporter from its config (the TOML `config` table, as JSON). Return a clear
    /// message on bad config: the daemon shows it to the user and does not start the exporter.
    fn init(config: &str) -> Result<Self, String>;

    /// Exports one batch, encoded as [`Exporter::manifest`] asked.
    fn export(&mut self, meta: BatchMeta, payload: Vec<u8>) -> Result<(), ExportError>;

    /// Called once before the instance is dropped.
    fn shutdown(&mut self) {}
}

/// Parses a plugin's JSON config into `T`; the error names the offending field, for the user.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))
}

/// Exports `$t` (a type implementing [`Exporter`]) as this component's `exporter` interface.
#[macro_export]
macro_rules! export {
    ($t:ty) => {
        const _: () = {
            // On a native target (e.g. `cargo test --workspace`) the component exports are not
            // emitted: their symbol names are only meaningful to wasm32 component tooling.
            #[allow(dead_code)]
            struct __FerryPlugin;

            ::std::thread_local! {
                static __FERRY_STATE: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::bindings::exports::ferry::plugin::exporter::Guest for __FerryPlugin {
                fn describe() -> $crate::Manifest {
                    <$t as $crate::Exporter>::manifest()
                }

                fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    let state = <$t as $crate::Exporter>::init(&config)?;
                    __FERRY_STATE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(state));
                    ::core::result::Result::Ok(())
                }

                fn export(
                    meta: $crate::BatchMeta,
                    payload: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), $crate::ExportError> {
                    __FERRY_STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(state) => {
                            <$t as $crate::Exporter>::export(state, meta, payload)
                        }
                        ::core::option::Option::None => ::core::result::Result::Err(
                            $crate::ExportError::Permanent("export called before init".into()),
                        ),
                    })
                }

                fn shutdown() {
                    if let ::core::option::Option::Some(mut state) =
                        __FERRY_STATE.with(|s| s.borrow_mut().take())
                    {
                        <$t as $crate::Exporter>::shutdown(&mut state);
                    }
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_exporter_plugin!(__FerryPlugin with_types_in $crate::bindings);

            // Natively nothing calls the guest functions; keep them (and the plugin's code)
            // alive so a native build type-checks and lints the plugin like the wasm one.
            #[cfg(not(target_arch = "wasm32"))]
            #[used]
            static __FERRY_NATIVE: (
                fn() -> $crate::Manifest,
                fn(::std::string::String) -> ::core::result::Result<(), ::std::string::String>,
                fn($crate::BatchMeta, ::std::vec::Vec<u8>) -> ::core::result::Result<(), $crate::ExportError>,
                fn(),
            ) = (
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin::exporter::Guest>::describe,
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin::exporter::Guest>::init,
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin::exporter::Guest>::export,
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin::exporter::Guest>::shutdown,
            );
        };
    };
}
