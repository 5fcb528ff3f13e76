//! Per-instance store state (`PluginCtx`) and the host side of the plugin's imports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::Resource;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::policy::AllowedHosts;
use super::resources::{self, BODY_BUFFER_CHUNKS, BODY_CHUNK, FIELDS_LIMIT, HostLimits, HostUsage};
use super::secrets::{SecretHeaders, SocketSecrets};
use super::sender::HostSender;
use super::sockets::SocketGuard;
use super::stderr::StderrRing;
use super::text::{LogGate, escape, escape_tail};
use crate::telemetry::Counter;

/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY: usize = 64 << 20;

/// What every instance of one exporter is confined to.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    /// Memory cap.
    pub memory: usize,
    /// Host memory and resources.
    pub host: HostLimits,
    /// CPU deadline and wall-clock timeout of every call.
    pub timeout: Duration,
    /// The only directory the plugin may open, if any.
    pub granted_dir: Option<PathBuf>,
}

impl Default for InstanceLimits {
    fn default() -> Self {
        InstanceLimits {
            memory: DEFAULT_MEMORY,
            host: HostLimits::default(),
            timeout: Duration::from_secs(10),
            granted_dir: None,
        }
    }
}

/// What the instances of one exporter share with the host: the checks on their outgoing
/// requests and the gate on their log.
#[derive(Clone)]
pub struct Egress {
    /// The exporter's name, for logs.
    pub exporter: Arc<str>,
    /// Destinations it may reach.
    pub allowed: Arc<AllowedHosts>,
    /// Headers added on the way out.
    pub secrets: Arc<SecretHeaders>,
    /// Values put into the first line of each TCP connection.
    pub socket_secrets: Arc<SocketSecrets>,
    /// The pooled sender.
    pub sender: HostSender,
    /// Refused requests.
    pub denied: Counter,
    /// Bounds what the plugin writes to the log.
    pub log: Arc<LogGate>,
}

impl WasiHttpHooks for Egress {
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        BODY_BUFFER_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
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
            if self.log.admit() {
                let max = self.log.policy().max_message_bytes;
                tracing::warn!(
                    exporter = &*self.exporter,
                    "plugin request to {} {} denied: not in allowed_hosts",
                    escape(request.method().as_str(), max),
                    escape(&request.uri().to_string(), max)
                );
            }
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

/// Where a granted directory appears inside the plugin.
pub const GRANTED_DIR: &str = "/data";

/// The state of one plugin instance's store.
pub struct PluginCtx {
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    /// Stands in for `table` once the instance went past its host limits: it holds nothing
    /// and takes nothing, so the plugin's next WASI or `wasi:http` call traps.
    refusal: ResourceTable,
    http: WasiHttpCtx,
    egress: Egress,
    sockets: Arc<SocketGuard>,
    /// Memory cap, and how much the instance has used.
    pub limits: MemoryLimiter,
    host: HostGuard,
    /// What the guest wrote to stderr during the current call (a Rust panic message).
    stderr: StderrRing,
}

/// The host memory an instance holds, checked against its limits.
struct HostGuard {
    limits: HostLimits,
    /// The most held since the current call began.
    peak: HostUsage,
    /// Set when the instance went past its limits; it is never entered again.
    exhausted: Option<HostUsage>,
}

impl PluginCtx {
    /// A sandboxed context: no environment, no args, stdout discarded, no sockets but those
    /// `allowed_hosts` grants (checked by [`SocketGuard`]), and no files except
    /// `granted_dir` (as `/data`) when the config grants one.
    pub fn new(egress: Egress, limits: &InstanceLimits) -> wasmtime::Result<Self> {
        let stderr = StderrRing::default();
        let sockets = SocketGuard::new(egress.clone());
        let check = sockets.clone();
        let mut builder = WasiCtx::builder();
        // Every socket operation is open to the plugin so that each use of an address
        // reaches the guard, which refuses and counts what the grants do not cover.
        builder
            .stderr(stderr.clone())
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |addr, what| {
                Box::pin(std::future::ready(check.permits(addr, what)))
            });
        if let Some(dir) = &limits.granted_dir {
            builder.preopened_dir(dir, GRANTED_DIR, FsPerms::ReadWrite)?;
        }
        let wasi = builder.build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.host.resources);
        let mut refusal = ResourceTable::new();
        refusal.set_max_capacity(0);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELDS_LIMIT);
        Ok(PluginCtx {
            wasi,
            table,
            refusal,
            http,
            egress,
            sockets,
            limits: MemoryLimiter::new(limits.memory),
            host: HostGuard {
                limits: limits.host,
                peak: HostUsage::default(),
                exhausted: None,
            },
            stderr,
        })
    }

    /// The instance's socket guard.
    pub(super) fn sockets_guard(&self) -> Arc<SocketGuard> {
        self.sockets.clone()
    }

    /// Starts a call: stderr and the host-memory peak start afresh.
    pub fn begin_call(&mut self) {
        self.stderr.clear();
        self.host.peak = resources::measure(&mut self.table);
    }

    /// Ends a call: what the instance still holds, and the most it held during the call.
    pub fn end_call(&mut self) -> (HostUsage, HostUsage) {
        let now = resources::measure(&mut self.table);
        self.note(now);
        self.egress.log.flush();
        (now, self.host.peak)
    }

    /// Why an instance that trapped was stopped by its host limits, if it was: what it held.
    pub fn host_fault(&mut self) -> Option<HostUsage> {
        self.host.exhausted.or_else(|| {
            let now = resources::measure(&mut self.table);
            (now.resources >= self.host.limits.resources).then_some(now)
        })
    }

    /// What the guest wrote to stderr in this call, escaped onto one line and cut to the
    /// log's message size (its end kept: that is where a panic message is).
    pub fn stderr_tail(&self) -> String {
        escape_tail(
            self.stderr.text().trim(),
            self.egress.log.policy().max_message_bytes,
        )
    }

    fn note(&mut self, usage: HostUsage) {
        let peak = &mut self.host.peak;
        peak.bytes = peak.bytes.max(usage.bytes);
        peak.resources = peak.resources.max(usage.resources);
    }

    /// Weighs the table before a WASI or `wasi:http` call; past the limits, the call gets
    /// the refusing table instead.
    fn guarded_table(&mut self) -> bool {
        if self.host.exhausted.is_none() {
            let now = resources::measure(&mut self.table);
            self.note(now);
            if now.exceeds(&self.host.limits) {
                self.host.exhausted = Some(now);
            }
        }
        self.host.exhausted.is_none()
    }

    pub(super) fn refuse_if_exhausted(&self) -> wasmtime::Result<()> {
        match self.host.exhausted {
            Some(u) => Err(wasmtime::Error::msg(format!(
                "host resource limit exceeded ({} bytes in {} resources)",
                u.bytes, u.resources
            ))),
            None => Ok(()),
        }
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
        let ok = self.guarded_table();
        WasiCtxView {
            ctx: &mut self.wasi,
            table: if ok {
                &mut self.table
            } else {
                &mut self.refusal
            },
        }
    }
}

impl WasiHttpView for PluginCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let ok = self.guarded_table();
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: if ok {
                &mut self.table
            } else {
                &mut self.refusal
            },
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

    /// A `host.log` message: rate-limited, cut and escaped, so it is one line of the host's
    /// log under this exporter's name whatever it contains.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        let gate = &self.egress.log;
        if !gate.admit() {
            return;
        }
        let message = escape(message, gate.policy().max_message_bytes);
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
pub(crate) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
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
