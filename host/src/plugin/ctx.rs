//! Per-instance store state (`PluginCtx`) and the host side of the plugin's imports.

use std::path::Path;
use std::sync::Arc;

use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::bindings::ferry::plugin::{host, types};
use super::policy::{AllowedHosts, SecretHeaders};
use super::sender::HostSender;
use crate::telemetry::Counter;

/// What a plugin's outgoing requests are checked against, shared by its instances.
#[derive(Clone)]
pub struct Egress {
    /// The exporter's name, for logs.
    pub exporter: Arc<str>,
    /// Destinations it may reach.
    pub allowed: Arc<AllowedHosts>,
    /// Headers added on the way out.
    pub secrets: Arc<SecretHeaders>,
    /// The pooled sender.
    pub sender: HostSender,
    /// Refused requests.
    pub denied: Counter,
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        if !self.allowed.permits(request.uri()) {
            self.denied.inc();
            tracing::warn!(
                exporter = &*self.exporter,
                "plugin request to {} {} denied: not in allowed_hosts",
                request.method(),
                request.uri()
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        self.secrets.apply(request.headers_mut());
        let sender = self.sender.clone();
        Box::new(async move {
            let response = sender.send(request, options).await?;
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Where a granted directory appears inside the plugin.
pub const GRANTED_DIR: &str = "/data";

/// The state of one plugin instance's store.
pub struct PluginCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    egress: Egress,
    /// Memory cap.
    pub limits: StoreLimits,
    /// What the guest wrote to stderr (a Rust panic message lands here).
    pub stderr: MemoryOutputPipe,
}

impl PluginCtx {
    /// A sandboxed context: no environment, no args, no sockets, stdout discarded, and no
    /// files except `granted_dir` (as `/data`) when the config grants one.
    pub fn new(
        egress: Egress,
        memory_bytes: usize,
        granted_dir: Option<&Path>,
    ) -> wasmtime::Result<Self> {
        let stderr = MemoryOutputPipe::new(16 << 10);
        let mut builder = WasiCtx::builder();
        builder
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(dir) = granted_dir {
            builder.preopened_dir(dir, GRANTED_DIR, FsPerms::ReadWrite)?;
        }
        let wasi = builder.build();
        Ok(PluginCtx {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            egress,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            stderr,
        })
    }

    /// The guest's stderr so far, as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl types::Host for PluginCtx {}

impl host::Host for PluginCtx {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let exporter = &*self.egress.exporter;
        match level {
            types::LogLevel::Trace => tracing::trace!(exporter, "{message}"),
            types::LogLevel::Debug => tracing::debug!(exporter, "{message}"),
            types::LogLevel::Info => tracing::info!(exporter, "{message}"),
            types::LogLevel::Warn => tracing::warn!(exporter, "{message}"),
            types::LogLevel::Error => tracing::error!(exporter, "{message}"),
        }
    }
}
