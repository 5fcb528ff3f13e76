//! Wires a validated [`Config`] into a running daemon: receivers → pipeline → exporters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub mod exporters;
pub mod layout;
pub mod reload;

use crate::config::{Carried, Config};
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginExporter};
use crate::signal::Signal;
use crate::telemetry::Telemetry;
use exporters::ExporterSet;
use reload::Reloader;

/// Loads every exporter in `config` and the processors of every chain, reporting all failures
/// at once (for `ferry validate`).
pub async fn load_exporters(
    config: &Config,
    engine: &PluginEngine,
    telemetry: &Telemetry,
) -> Result<Vec<(String, Arc<PluginExporter>)>, crate::config::ConfigErrors> {
    let env = exporters::wasm_env(config, engine);
    let (names, defs) = (&config.pipeline.processors, &config.processors);
    let ingest = crate::processor::Chain::build(names, defs, telemetry, Some(&env), None).await;
    let loaded = exporters::load_all(config, engine, telemetry).await;
    match (ingest, loaded) {
        (Ok(_), Ok(loaded)) => Ok(loaded
            .into_iter()
            .map(|(name, l)| (name, l.exporter().clone()))
            .collect()),
        (ingest, loaded) => {
            let mut errors: Vec<String> = ingest
                .err()
                .into_iter()
                .flatten()
                .map(|e| format!("pipeline.processors: {e}"))
                .collect();
            errors.extend(loaded.err().into_iter().flat_map(|e| e.0));
            Err(crate::config::ConfigErrors(errors))
        }
    }
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Runs the daemon until SIGINT or SIGTERM, then drains. With the path of its config file,
/// SIGHUP and changes to that file or the plugin directory reload the exporters.
pub async fn run(config: Config, path: Option<PathBuf>, carried: Carried) -> anyhow::Result<()> {
    let Carried {
        catalog,
        receivers: carried,
    } = carried;
    // Before anything starts: a token that cannot be read stops the daemon at once.
    let access = config.admin.access()?;
    let telemetry = Telemetry::new();
    telemetry
        .gauge(
            "ferry_runtime_worker_threads",
            "Threads the daemon receives, processes and exports on (`[runtime] worker_threads`).",
            &[],
        )
        .set(tokio::runtime::Handle::current().metrics().num_workers() as i64);
    let engine = Arc::new(
        PluginEngine::builder()
            .cache_dir(config.plugins.effective_cache_dir())
            .catalog(catalog)
            .build()
            .context("setting up the plugin engine")?,
    );
    let pipeline = Pipeline::new(&config.pipeline, &config.queue, &telemetry)?;
    let mut exporters = ExporterSet::new(engine, telemetry.clone(), pipeline.clone());
    // The admin endpoint answers while plugins load: not ready yet.
    let started = std::time::SystemTime::now();
    let mut layout_now = layout::layout(&config, &exporters, path.as_deref(), started);
    let (layout_tx, layout_rx) = tokio::sync::watch::channel(layout_now.clone());
    let mut servers = tokio::task::JoinSet::new();
    if !config.admin.listen.is_empty() {
        let addr: SocketAddr = config.admin.listen.parse()?;
        let l = bind("the admin endpoint", addr).await?;
        tracing::info!(receiver = "admin", addr = %l.local_addr()?, "listening");
        servers.spawn(crate::admin::serve(l, telemetry.clone(), layout_rx, access));
    }
    let plan = exporters.prepare_start(&config).await?;
    exporters.apply(plan);
    // Cursors saved by exporters that no longer read a signal would hold the disk forever.
    pipeline.forget_cursors_except(|s| exporters.readers(s));
    pipeline.spawn_timers();
    let budget = config.queue.budget(&config.pipeline);
    for signal in Signal::ALL {
        let l = [("signal", signal.as_str())];
        let queued = telemetry.gauge(
            "ferry_queue_bytes",
            "Bytes held by the signal's queue (and open batch, in memory mode).",
            &l,
        );
        telemetry
            .gauge(
                "ferry_queue_capacity_bytes",
                "Byte budget of the signal's queue.",
                &l,
            )
            .set(budget as i64);
        let p = pipeline.clone();
        telemetry.on_render(move || queued.set(p.buffered_bytes(signal) as i64));
    }
    crate::pipeline::lag::register(&pipeline, &telemetry);

    let env = exporters::wasm_env(&config, exporters.engine());
    let chain = crate::processor::Chain::build(
        &config.pipeline.processors,
        &config.processors,
        &telemetry,
        Some(&env),
        None,
    )
    .await
    .map_err(crate::config::ConfigErrors)?;
    let chain = crate::processor::IngestChain::new(chain);
    config
        .receivers
        .start_all(&mut crate::receiver::Launch {
            pipeline: &pipeline,
            chain: &chain,
            telemetry: &telemetry,
            servers: &mut servers,
        })
        .await?;
    for signal in Signal::ALL {
        if !pipeline.has_exporter(signal) {
            tracing::warn!("no exporter takes {signal}: {signal} requests will be refused");
        }
    }
    layout_now = layout::layout(&config, &exporters, path.as_deref(), started);
    layout_now.ready = true;
    layout_tx.send_replace(layout_now);
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    let mut reloader = path.map(|p| {
        Reloader::new(
            p,
            config.clone(),
            carried,
            chain.clone(),
            &telemetry,
            layout_tx,
        )
    });
    if let Some(r) = &reloader {
        r.watch(reload_tx.clone());
    }
    spawn_hangup_listener(reload_tx);
    tracing::info!(durable = pipeline.is_durable(), "ferry ready");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(why) = reload_rx.recv() => match &mut reloader {
                // Loading plugins takes up to their timeouts: SIGTERM is answered meanwhile
                // (a reload cut short has changed nothing; applying one never waits).
                Some(r) => {
                    let interrupted = tokio::select! {
                        _ = r.reload(&mut exporters, why) => false,
                        _ = &mut shutdown => true,
                    };
                    if interrupted {
                        tracing::warn!("shutdown requested during a reload: the reload is abandoned");
                        break;
                    }
                }
                None => tracing::warn!("cannot reload ({why}): running on the embedded default config"),
            },
            Some(r) = servers.join_next() => {
                match r {
                    Ok(Err(e)) => return Err(e),
                    Err(e) => anyhow::bail!("a server task failed: {e}"),
                    Ok(Ok(())) => anyhow::bail!("a server stopped unexpectedly"),
                }
            }
        }
    }
    // Stop accepting (a request being answered is cut off before its acknowledgement), seal
    // what is open, and let every cursor drain until the deadline.
    let deadline = config.pipeline.drain_timeout;
    tracing::info!(?deadline, "shutting down: draining queues");
    servers.abort_all();
    while servers.join_next().await.is_some() {}
    pipeline.flush();
    let names: Vec<String> = exporters.names().iter().map(|s| s.to_string()).collect();
    let drained = exporters.drain(deadline).await;
    pipeline.persist();
    if !drained {
        report_leftovers(&pipeline, &names);
    }
    tracing::info!(drained, "stopped");
    Ok(())
}

/// Logs, per exporter and signal, what the drain deadline left unexported.
fn report_leftovers(pipeline: &Pipeline, exporters: &[String]) {
    for signal in Signal::ALL {
        let queue = pipeline.queue(signal);
        let head = *queue.head().borrow();
        for name in exporters {
            let left = queue.cursor(name).map_or(0, |c| head.saturating_sub(c));
            if left == 0 {
                continue;
            }
            if pipeline.is_durable() {
                tracing::warn!(
                    exporter = name.as_str(), %signal, records = left,
                    "drain deadline passed: not exported yet, kept on disk for the next start"
                );
            } else {
                tracing::error!(
                    exporter = name.as_str(), %signal, batches = left,
                    bytes = pipeline.buffered_bytes(signal),
                    "drain deadline passed: not exported, lost (use [queue] mode = \"durable\" to keep it)"
                );
            }
        }
    }
}

/// Forwards SIGHUP as a reload request.
fn spawn_hangup_listener(tx: mpsc::Sender<&'static str>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tx.send("SIGHUP").await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
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
