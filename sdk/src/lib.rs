//! `ferry-sdk`: write Ferry exporter plugins in Rust.
//!
//! A plugin is a WebAssembly component (target `wasm32-wasip2`) that implements the
//! `ferry:plugin/exporter-plugin` world in `wit/plugin.wit`. With this crate a plugin is one
//! type implementing [`Exporter`] plus one [`export!`] line:
//!
//! ```ignore
//! use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
//!
//! struct Counter { seen: u64 }
//!
//! impl Exporter for Counter {
//!     fn manifest() -> Manifest {
//!         Manifest::new("counter", env!("CARGO_PKG_VERSION"), &[Signal::Traces], Encoding::OtlpProtobuf)
//!     }
//!     fn init(_config: &str) -> Result<Self, String> { Ok(Counter { seen: 0 }) }
//!     fn export(&mut self, meta: BatchMeta, _batch: Batch<'_>) -> Result<(), ExportError> {
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
//!
//! The batch stays in the host's memory ([`Batch`]): a plugin that reads it takes a copy
//! ([`Batch::to_vec`]); one that forwards it as a request body ([`http::Body::Batch`]) has the
//! host write it, and never copies it at all.

pub mod http;
pub mod log;
pub mod net;
pub mod otlp;

/// Raw bindings generated from `wit/plugin.wit`.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferry:plugin/exporter-plugin@0.3.0",
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

pub use bindings::ferry::plugin0_3_0::types::{
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

/// The batch being exported, held by the host for the length of the `export` call.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    handle: &'a bindings::ferry::plugin0_3_0::batches::Batch,
}

impl<'a> Batch<'a> {
    #[doc(hidden)]
    pub fn new(handle: &'a bindings::ferry::plugin0_3_0::batches::Batch) -> Self {
        Batch { handle }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.handle.len() as usize
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the whole batch, for a plugin that reads it (to decode or compress it).
    pub fn to_vec(&self) -> Vec<u8> {
        self.handle.read(0, self.handle.len())
    }

    /// Has the host write the whole batch to `out`, without it passing through this plugin.
    pub(crate) fn write_to(&self, out: &wasip2::io::streams::OutputStream) -> Result<(), String> {
        self.handle.write_to(out)
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} bytes)", self.len())
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
    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError>;

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

            impl $crate::bindings::exports::ferry::plugin0_3_0::exporter::Guest for __FerryPlugin {
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
                    batch: &$crate::bindings::ferry::plugin0_3_0::batches::Batch,
                ) -> ::core::result::Result<(), $crate::ExportError> {
                    __FERRY_STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(state) => {
                            <$t as $crate::Exporter>::export(state, meta, $crate::Batch::new(batch))
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
                fn($crate::BatchMeta, &$crate::bindings::ferry::plugin0_3_0::batches::Batch) -> ::core::result::Result<(), $crate::ExportError>,
                fn(),
            ) = (
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin0_3_0::exporter::Guest>::describe,
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin0_3_0::exporter::Guest>::init,
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin0_3_0::exporter::Guest>::export,
                <__FerryPlugin as $crate::bindings::exports::ferry::plugin0_3_0::exporter::Guest>::shutdown,
            );
        };
    };
}
