//! Per-instance store state (`PluginCtx`) and the host side of the plugin's imports.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::Resource;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::{DynOutputStream, StreamError};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::bindings::v0_2::batches;
use super::bindings::{v0_1, v0_2};
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
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        OUTGOING_BODY_BUFFER_CHUNKS
    }

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
            // Refuse once the plugin has written the body, as a server would: a guest
            // runtime whose request fails while it is still writing may not cope
            // (componentize-js's `fetch` aborts the instance); the body is read and dropped.
            let mut body = request.into_body();
            return Box::new(async move {
                use http_body_util::BodyExt;
                while let Some(Ok(_)) = body.frame().await {}
                Err(Error::HttpRequestDenied)
            });
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

/// Writes (of up to 1 MiB) to a request body that may wait for the connection at once. With
/// wasmtime's default of one, every write of a large body waited for the previous one to reach
/// the socket; a batch written by the host (`batch.write-to`) is slices of memory already held,
/// so queueing a few costs nothing.
const OUTGOING_BODY_BUFFER_CHUNKS: usize = 4;

/// Where a granted directory appears inside the plugin.
pub const GRANTED_DIR: &str = "/data";

/// The state of one plugin instance's store.
pub struct PluginCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    egress: Egress,
    /// Memory cap, and how much the instance has used.
    pub limits: MemoryLimiter,
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
            limits: MemoryLimiter::new(memory_bytes),
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

/// wasmtime's [`StoreLimits`] (a per-memory cap that traps when a guest outgrows it) plus a
/// record of the linear memory an instance has claimed, so `ferry plugin test` can tell an
/// author what `memory` setting the plugin needs.
pub struct MemoryLimiter {
    inner: StoreLimits,
    total: usize,
    peak: usize,
}

impl MemoryLimiter {
    /// Caps each of the instance's memories at `bytes`.
    pub fn new(bytes: usize) -> Self {
        MemoryLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(bytes)
                .trap_on_grow_failure(true)
                .build(),
            total: 0,
            peak: 0,
        }
    }

    /// The most linear memory (all memories together) the instance has held.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.inner.memory_growing(current, desired, maximum)?;
        if granted {
            self.total += desired.saturating_sub(current);
            self.peak = self.peak.max(self.total);
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
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

/// A batch lent to a plugin for one `export` call (`ferry:plugin/batches.batch`): the bytes
/// stay here, shared with the queue, and leave only as a copy the plugin asks for or as slices
/// handed to a request body.
pub struct HostBatch(pub Bytes);

impl PluginCtx {
    /// Lends `batch` to the guest for one call; give the handle back with
    /// [`PluginCtx::take_batch`] once the call is over.
    pub fn lend_batch(&mut self, batch: Bytes) -> wasmtime::Result<Resource<HostBatch>> {
        Ok(self.table.push(HostBatch(batch))?)
    }

    /// Ends a loan made by [`PluginCtx::lend_batch`].
    pub fn take_batch(&mut self, handle: Resource<HostBatch>) {
        let _ = self.table.delete(handle);
    }

    fn log(&self, level: LogLevel, message: &str) {
        let exporter = &*self.egress.exporter;
        match level {
            LogLevel::Trace => tracing::trace!(exporter, "{message}"),
            LogLevel::Debug => tracing::debug!(exporter, "{message}"),
            LogLevel::Info => tracing::info!(exporter, "{message}"),
            LogLevel::Warn => tracing::warn!(exporter, "{message}"),
            LogLevel::Error => tracing::error!(exporter, "{message}"),
        }
    }
}

/// `log-level`, the same in every contract version.
#[derive(Clone, Copy)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The `types` and `host` interfaces of one contract version, identical in each.
macro_rules! host_interfaces {
    ($v:ident) => {
        impl $v::types::Host for PluginCtx {}

        impl $v::host::Host for PluginCtx {
            fn log(&mut self, level: $v::types::LogLevel, message: String) {
                use $v::types::LogLevel as L;
                let level = match level {
                    L::Trace => LogLevel::Trace,
                    L::Debug => LogLevel::Debug,
                    L::Info => LogLevel::Info,
                    L::Warn => LogLevel::Warn,
                    L::Error => LogLevel::Error,
                };
                PluginCtx::log(self, level, &message);
            }
        }
    };
}

host_interfaces!(v0_1);
host_interfaces!(v0_2);

impl batches::Host for PluginCtx {}

impl batches::HostBatch for PluginCtx {
    fn len(&mut self, batch: Resource<HostBatch>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&batch)?.0.len() as u64)
    }

    fn read(
        &mut self,
        batch: Resource<HostBatch>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_records_the_peak_across_memories_and_refuses_past_the_cap() {
        let mut l = MemoryLimiter::new(4 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(l.memory_growing(0, 2 << 20, None).unwrap());
        assert!(l.memory_growing(1 << 20, 3 << 20, None).unwrap());
        assert_eq!(l.peak(), 5 << 20, "two memories: 3 MiB + 2 MiB");
        // Past the cap of one memory: a trap, and the refused growth is not counted.
        assert!(l.memory_growing(3 << 20, 5 << 20, None).is_err());
        assert_eq!(l.peak(), 5 << 20);
    }
}
