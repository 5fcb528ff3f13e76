//! Wires a validated [`Config`] into a running daemon: receivers → pipeline → exporters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::pipeline::router::Worker;
use crate::plugin::registry;
use crate::plugin::sender::{HostSender, SenderLimits};
use crate::plugin::{PluginEngine, PluginExporter};
use crate::signal::Signal;
use crate::telemetry::Telemetry;

/// How long shutdown waits for queued batches to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Loads every exporter in `config`, reporting all failures at once.
pub async fn load_exporters(
    config: &Config,
    engine: &PluginEngine,
    telemetry: &Telemetry,
) -> Result<Vec<(String, Arc<PluginExporter>)>, crate::config::ConfigErrors> {
    let http = &config.plugins.http;
    let sender = HostSender::new(SenderLimits {
        connect: http.connect_timeout,
        first_byte: http.first_byte_timeout,
        total: http.total_timeout,
        max_response_bytes: http.max_response_bytes,
    });
    let mut exporters = Vec::new();
    let mut errors = Vec::new();
    for (name, ec) in &config.exporters {
        let source = match registry::find(&ec.plugin, config.plugins.dir.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("exporters.{name}.plugin: {e}"));
                continue;
            }
        };
        match PluginExporter::load(engine, name, &source, ec, sender.clone(), telemetry).await {
            Ok(e) => exporters.push((name.clone(), Arc::new(e))),
            Err(e) => errors.push(format!(
                "exporters.{name} (plugin {} from {}): {e}",
                source.name, source.origin
            )),
        }
    }
    if errors.is_empty() {
        Ok(exporters)
    } else {
        Err(crate::config::ConfigErrors(errors))
    }
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Runs the daemon until SIGINT or SIGTERM, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = Telemetry::new();
    let engine = PluginEngine::builder()
        .cache_dir(config.plugins.effective_cache_dir())
        .build()
        .context("setting up the plugin engine")?;
    let exporters = load_exporters(&config, &engine, &telemetry).await?;

    let pipeline = Pipeline::new(&config.pipeline, &telemetry);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for (name, exporter) in &exporters {
        for &signal in exporter.signals() {
            pipeline.subscribe(signal);
            let worker = Worker::new(
                exporter.clone(),
                pipeline.queue(signal),
                signal,
                config.exporters[name].retry.clone(),
                &telemetry,
            );
            workers.push(tokio::spawn(worker.run(stop_rx.clone())));
        }
        tracing::info!(
            exporter = name.as_str(),
            plugin = %exporter.manifest().name,
            version = %exporter.manifest().version,
            signals = ?exporter.signals().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "exporter ready"
        );
    }
    pipeline.spawn_timers();
    for signal in Signal::ALL {
        let l = [("signal", signal.as_str())];
        let queued = telemetry.gauge(
            "ferry_queue_bytes",
            "Bytes held by the signal's queue and open batch.",
            &l,
        );
        telemetry
            .gauge(
                "ferry_queue_capacity_bytes",
                "Byte budget of the signal's queue.",
                &l,
            )
            .set(config.pipeline.queue_max_bytes as i64);
        let p = pipeline.clone();
        telemetry.on_render(move || queued.set(p.buffered_bytes(signal) as i64));
    }

    let mut servers = tokio::task::JoinSet::new();
    crate::receiver::start_all(
        &config.receivers,
        &mut crate::receiver::Launch {
            pipeline: &pipeline,
            telemetry: &telemetry,
            servers: &mut servers,
        },
    )
    .await?;
    if !config.admin.listen.is_empty() {
        let addr: SocketAddr = config.admin.listen.parse()?;
        let l = bind("the admin endpoint", addr).await?;
        tracing::info!(receiver = "admin", addr = %l.local_addr()?, "listening");
        servers.spawn(crate::admin::serve(l, telemetry.clone()));
    }
    for signal in Signal::ALL {
        if !pipeline.has_exporter(signal) {
            tracing::warn!("no exporter takes {signal}: {signal} requests will be refused");
        }
    }
    tracing::info!("ferry ready");

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: draining queues"),
        Some(r) = servers.join_next() => {
            match r {
                Ok(Err(e)) => return Err(e),
                Err(e) => anyhow::bail!("a server task failed: {e}"),
                Ok(Ok(())) => anyhow::bail!("a server stopped unexpectedly"),
            }
        }
    }
    // Stop accepting, seal what is open, and let every cursor drain.
    servers.abort_all();
    pipeline.flush();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_DEADLINE, futures::future::join_all(workers)).await;
    let left: usize = Signal::ALL
        .iter()
        .map(|s| pipeline.buffered_bytes(*s))
        .sum();
    if drained.is_err() {
        tracing::error!(
            bytes = left,
            "drain deadline passed; undelivered data is lost"
        );
    }
    for (_, e) in &exporters {
        e.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
