//! `ferry-processor-sdk`: write Ferry processor plugins in Rust.
//!
//! A processor is a WebAssembly component (target `wasm32-wasip2`) implementing the
//! `ferry:plugin/processor-plugin@0.3.0` world in `wit/plugin.wit`: one type implementing
//! [`Processor`] plus one [`export!`] line. [`Request`] gives typed access to the batch:
//!
//! ```ignore
//! use ferry_processor_sdk::{Batch, Encoding, Manifest, Outcome, ProcessMeta, Processor, Request, Signal};
//!
//! struct Tagger;
//!
//! impl Processor for Tagger {
//!     fn manifest() -> Manifest {
//!         Manifest::new("tagger", env!("CARGO_PKG_VERSION"), &[Signal::Traces], Encoding::OtlpProtobuf)
//!     }
//!     fn init(_config: &str) -> Result<Self, String> { Ok(Tagger) }
//!     fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String> {
//!         Request::edit(meta.signal, batch, |req| {
//!             let Request::Traces(t) = req else { return false };
//!             let mut changed = false;
//!             for span in ferry_processor_sdk::spans_mut(t) {
//!                 changed |= ferry_processor_sdk::set_attribute(&mut span.attributes, "team", "payments");
//!             }
//!             changed
//!         })
//!     }
//! }
//!
//! ferry_processor_sdk::export!(Tagger);
//! ```
//!
//! A processor answers [`Outcome::Keep`] (forward the batch as it is), [`Outcome::Replace`]
//! (forward this request of the same signal instead) or [`Outcome::Drop`]. The host checks a
//! replacement as it checks received data and refuses one that is malformed, of another
//! signal, or more than `max_growth` times the size of the batch. A batch may be processed
//! again (a retry, a restart): answer the same way for the same batch.

use ferry_proto::common::{AnyValue, KeyValue, any_value};
use ferry_proto::logs_service::ExportLogsServiceRequest;
use ferry_proto::metrics_service::ExportMetricsServiceRequest;
use ferry_proto::trace::Span;
use ferry_proto::trace_service::ExportTraceServiceRequest;
use prost::Message;

pub mod log;

/// Raw bindings generated from `wit/plugin.wit`.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "ferry:plugin/processor-plugin@0.3.0",
        with: {
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
        pub_export_macro: true,
        export_macro_name: "__export_processor_plugin",
        default_bindings_module: "ferry_processor_sdk::bindings",
    });
}

pub use bindings::ferry::plugin0_3_0::types::{
    Encoding, LogLevel, Manifest, Outcome, ProcessMeta, Signal,
};
pub use ferry_proto as proto;
/// Requests in their protobuf wire form, read and edited field by field without decoding:
/// the code the host's built-in processors run. [`edit_wire`] is the way in.
pub use ferry_wire as wire;

impl From<Signal> for wire::Signal {
    fn from(s: Signal) -> wire::Signal {
        match s {
            Signal::Traces => wire::Signal::Traces,
            Signal::Metrics => wire::Signal::Metrics,
            Signal::Logs => wire::Signal::Logs,
        }
    }
}

impl Manifest {
    /// A manifest for a processor named `name` at `version`, taking `signals` in `encoding`.
    pub fn new(name: &str, version: &str, signals: &[Signal], encoding: Encoding) -> Self {
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            signals: signals.to_vec(),
            encoding,
        }
    }
}

/// The batch being processed, held by the host for the length of the call.
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

    /// A copy of the whole batch.
    pub fn to_vec(&self) -> Vec<u8> {
        self.handle.read(0, self.handle.len())
    }

    /// A copy of the batch in its wire form, to read and edit field by field.
    pub fn msg(&self) -> wire::msg::Msg {
        wire::msg::Msg::new(self.to_vec().into())
    }
}

/// Opens `batch` in its wire form, lets `edit` change it (returning whether it did), and
/// answers [`Outcome::Replace`] with the result, [`Outcome::Drop`] when no item is left, or
/// [`Outcome::Keep`] when nothing changed. Resources and scopes left without items are removed.
///
/// This is [`Request::edit`] without decoding: only the messages `edit` opens are split into
/// fields, and whatever it did not change is copied as it came, several times cheaper than
/// decoding and encoding the whole batch (BENCHMARKS.md). The fields are numbered as in the
/// OTLP protobuf; [`wire::items`] names the common ones and walks items and attributes:
///
/// ```ignore
/// use ferry_processor_sdk::wire::items::{self, span};
/// ferry_processor_sdk::edit_wire(meta.signal, batch, |req| {
///     // Drop health checks; say whether anything went.
///     items::retain_items(req, |_resource, _scope, s| s.view().raw(span::NAME) != b"GET /health") > 0
/// })
/// ```
///
/// The batch is what the host accepted, which its receivers checked as deeply as decoding
/// would (a batch an older Ferry wrote to a durable queue was checked less: run
/// [`wire::schema::validate`] first if the processor must know). Reads of malformed bytes see
/// what splits and never fail. Whatever it answers, the host checks a replacement in full
/// before forwarding it.
pub fn edit_wire(
    signal: Signal,
    batch: Batch<'_>,
    edit: impl FnOnce(&mut wire::msg::Msg) -> bool,
) -> Outcome {
    let mut req = batch.msg();
    if !edit(&mut req) {
        return Outcome::Keep;
    }
    wire::items::prune(signal.into(), &mut req);
    let out = req.encode();
    if out.is_empty() {
        Outcome::Drop
    } else {
        Outcome::Replace(out.into())
    }
}

/// Rewrites `batch` in one walk, item after item (the walk the host's built-ins share):
/// `r` edits each resource, then edits or drops each item under it, which is written out at
/// once; resources and scopes left without items are removed. Answers [`Outcome::Replace`]
/// with the result, [`Outcome::Drop`] when no item is left, or [`Outcome::Keep`] when the
/// result is the batch as it came. Cheaper than [`edit_wire`] when every item is visited:
/// nothing but the item at hand is held.
///
/// The batch is checked as for [`edit_wire`]; were it malformed, the answer is an error.
pub fn rewrite_wire(
    batch: Batch<'_>,
    r: &mut impl wire::rewrite::Rewrite,
) -> Result<Outcome, String> {
    let req: wire::bytes::Bytes = batch.to_vec().into();
    let out = wire::rewrite::rewrite(&req, r).ok_or("the batch does not split into fields")?;
    Ok(if out.is_empty() {
        Outcome::Drop
    } else if out[..] == req[..] {
        Outcome::Keep
    } else {
        Outcome::Replace(out)
    })
}

/// One processor plugin. The host creates an instance, calls [`Processor::init`] once with
/// the processor's config (as JSON), then [`Processor::process`] for each batch.
pub trait Processor: Sized + 'static {
    /// Static facts: name, version, the signals it processes and the encoding it wants.
    fn manifest() -> Manifest;

    /// Builds the processor from its config (the TOML `config` table, as JSON).
    fn init(config: &str) -> Result<Self, String>;

    /// Processes one batch. An `Err` is a failure on this batch: the host applies the
    /// processor's `on_error` policy.
    fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String>;
}

/// Parses a plugin's JSON config into `T`; the error names the offending field.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))
}

/// A batch decoded (protobuf encoding).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metric data points.
    Metrics(ExportMetricsServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
}

impl Request {
    /// Decodes `bytes` as an export request of `signal`.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Request, String> {
        let e = |e: prost::DecodeError| format!("batch does not decode: {e}");
        Ok(match signal {
            Signal::Traces => Request::Traces(Message::decode(bytes).map_err(e)?),
            Signal::Metrics => Request::Metrics(Message::decode(bytes).map_err(e)?),
            Signal::Logs => Request::Logs(Message::decode(bytes).map_err(e)?),
        })
    }

    /// The request as protobuf.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Traces(r) => r.encode_to_vec(),
            Request::Metrics(r) => r.encode_to_vec(),
            Request::Logs(r) => r.encode_to_vec(),
        }
    }

    /// Decodes `batch`, lets `edit` change it (returning whether it did), and answers
    /// [`Outcome::Replace`] with the result, or [`Outcome::Keep`] when nothing changed.
    pub fn edit(
        signal: Signal,
        batch: Batch<'_>,
        edit: impl FnOnce(&mut Request) -> bool,
    ) -> Result<Outcome, String> {
        let mut req = Request::decode(signal, &batch.to_vec())?;
        Ok(if edit(&mut req) {
            Outcome::Replace(req.encode())
        } else {
            Outcome::Keep
        })
    }
}

/// Every span of a traces request, mutably.
pub fn spans_mut(req: &mut ExportTraceServiceRequest) -> impl Iterator<Item = &mut Span> {
    req.resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
}

/// The value of attribute `key`.
pub fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// Sets string attribute `key` to `value`; says whether anything changed.
pub fn set_attribute(attrs: &mut Vec<KeyValue>, key: &str, value: &str) -> bool {
    let v = Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_string())),
    });
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) if kv.value == v => false,
        Some(kv) => {
            kv.value = v;
            true
        }
        None => {
            attrs.push(KeyValue {
                key: key.to_string(),
                value: v,
                ..Default::default()
            });
            true
        }
    }
}

/// Exports `$t` (a type implementing [`Processor`]) as this component's `processor` interface.
#[macro_export]
macro_rules! export {
    ($t:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct __FerryProcessor;

            ::std::thread_local! {
                static __FERRY_STATE: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::bindings::exports::ferry::plugin0_3_0::processor::Guest for __FerryProcessor {
                fn describe() -> $crate::Manifest {
                    <$t as $crate::Processor>::manifest()
                }

                fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    let state = <$t as $crate::Processor>::init(&config)?;
                    __FERRY_STATE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(state));
                    ::core::result::Result::Ok(())
                }

                fn process(
                    meta: $crate::ProcessMeta,
                    batch: &$crate::bindings::ferry::plugin0_3_0::batches::Batch,
                ) -> ::core::result::Result<$crate::Outcome, ::std::string::String> {
                    __FERRY_STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(state) => {
                            <$t as $crate::Processor>::process(state, meta, $crate::Batch::new(batch))
                        }
                        ::core::option::Option::None => {
                            ::core::result::Result::Err("process called before init".into())
                        }
                    })
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_processor_plugin!(__FerryProcessor with_types_in $crate::bindings);

            // Natively nothing calls the guest functions; keep them alive so a native build
            // type-checks and lints the plugin like the wasm one.
            #[cfg(not(target_arch = "wasm32"))]
            #[used]
            static __FERRY_NATIVE: (
                fn() -> $crate::Manifest,
                fn(::std::string::String) -> ::core::result::Result<(), ::std::string::String>,
                fn($crate::ProcessMeta, &$crate::bindings::ferry::plugin0_3_0::batches::Batch) -> ::core::result::Result<$crate::Outcome, ::std::string::String>,
            ) = (
                <__FerryProcessor as $crate::bindings::exports::ferry::plugin0_3_0::processor::Guest>::describe,
                <__FerryProcessor as $crate::bindings::exports::ferry::plugin0_3_0::processor::Guest>::init,
                <__FerryProcessor as $crate::bindings::exports::ferry::plugin0_3_0::processor::Guest>::process,
            );
        };
    };
}
