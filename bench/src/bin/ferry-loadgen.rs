//! `ferry-loadgen`: drives OTLP load at a daemon over gRPC or HTTP/protobuf.
//!
//! Requests are encoded before the clock starts, so the generator spends its time sending.
//! Each sender has its own connection and one request in flight. After `--warmup` seconds
//! (not measured) it measures for `--duration` seconds (or `--requests` requests) and prints
//! the throughput, request latency and errors, then one machine-readable line:
//!
//! `SUMMARY {"items_per_sec": ..., "acked_items": ..., ...}`
//!
//! `acked_items` counts every item the daemon acknowledged, warm-up included, so a sink's
//! count can be checked against it. `--rate` caps the offered load (items per second).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ferry_bench::{Signal, request, trace_id_prefixes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Debug)]
enum Protocol {
    Grpc,
    Http,
}

#[derive(Parser, Debug)]
struct Args {
    /// `host:port` of the daemon's OTLP receiver.
    #[arg(long)]
    target: String,
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    #[arg(long, value_enum, default_value = "traces")]
    signal: Signal,
    /// Items (spans, data points, log records) per request.
    #[arg(long, default_value_t = 100)]
    items: usize,
    /// Attributes per item.
    #[arg(long, default_value_t = 10)]
    attributes: usize,
    /// Concurrent senders (connections).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured requests instead (across all senders).
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Give every request's traces ids never sent before (traces only), as a tail sampler
    /// needs: otherwise the requests repeat every `--distinct`.
    #[arg(long)]
    unique_traces: bool,
    /// Distinct pre-encoded requests to cycle through.
    #[arg(long, default_value_t = 64)]
    distinct: u64,
    /// Offer at most this many items per second in all (spread over the senders), so daemons
    /// can be compared at an equal load; unlimited when absent.
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: u64,
    acked_items: u64,
    first_error: Option<String>,
}

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(target: &str, protocol: Protocol) -> anyhow::Result<Conn> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    Ok(match protocol {
        Protocol::Http => {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Conn::H1(send)
        }
        Protocol::Grpc => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Conn::H2(send)
        }
    })
}

/// Sends one request; `Ok` means the daemon acknowledged it.
async fn send(conn: &mut Conn, args: &Args, host: &str, body: Bytes) -> Result<(), String> {
    match conn {
        Conn::H1(s) => {
            let req = http::Request::post(args.signal.http_path())
                .header("host", host)
                .header("content-type", "application/x-protobuf")
                .body(Full::new(body))
                .unwrap();
            s.ready().await.map_err(|e| e.to_string())?;
            let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let _ = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        }
        Conn::H2(s) => {
            let req = http::Request::post(format!("http://{host}{}", args.signal.grpc_path()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(body))
                .unwrap();
            s.ready().await.map_err(|e| e.to_string())?;
            let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
            let headers = resp.headers().clone();
            let collected = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            let status = collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
                .or_else(|| headers.get("grpc-status").cloned());
            match status.as_ref().and_then(|v| v.to_str().ok()) {
                Some("0") => Ok(()),
                Some(code) => Err(format!("grpc-status {code}")),
                None => Err("no grpc-status".into()),
            }
        }
    }
}

fn grpc_frame(message: Vec<u8>) -> Bytes {
    let mut b = Vec::with_capacity(message.len() + 5);
    b.push(0);
    b.extend_from_slice(&(message.len() as u32).to_be_bytes());
    b.extend_from_slice(&message);
    Bytes::from(b)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.unique_traces && args.signal != Signal::Traces {
        anyhow::bail!("--unique-traces is for --signal traces");
    }
    // Each body with where its trace ids' prefixes are (when they are to be made unique).
    let bodies: Arc<Vec<(Bytes, Vec<usize>)>> = Arc::new(
        (0..args.distinct)
            .map(|seed| {
                let msg = request(args.signal, args.items, args.attributes, seed);
                let mut at = if args.unique_traces {
                    trace_id_prefixes(&msg, seed)
                } else {
                    Vec::new()
                };
                match args.protocol {
                    Protocol::Grpc => {
                        at.iter_mut().for_each(|a| *a += 5);
                        (grpc_frame(msg), at)
                    }
                    Protocol::Http => (Bytes::from(msg), at),
                }
            })
            .collect(),
    );
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(
        args.requests.unwrap_or(u64::MAX),
    ));
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let (args, bodies, stop, budget) =
            (args.clone(), bodies.clone(), stop.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn = match connect(&args.target, args.protocol).await {
                Ok(c) => c,
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error = Some(format!("connect {}: {e}", args.target));
                    return tally;
                }
            };
            let mut i = worker as u64;
            // Each sender's share of the rate, as a gap between request starts.
            let gap = args
                .rate
                .map(|r| Duration::from_secs_f64(args.concurrency as f64 * args.items as f64 / r));
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(gap) = gap {
                    tokio::time::sleep_until(next.into()).await;
                    next += gap;
                }
                let measuring = Instant::now() >= warmup_end;
                if measuring
                    && budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                        .is_err()
                {
                    break;
                }
                let (body, at) = &bodies[(i % bodies.len() as u64) as usize];
                let body = if at.is_empty() {
                    body.clone()
                } else {
                    // `i` is this request's own number (senders step by their count).
                    let mut b = body.to_vec();
                    for &a in at {
                        b[a..a + 8].copy_from_slice(&(i + 1 + u64::MAX / 2).to_be_bytes());
                    }
                    Bytes::from(b)
                };
                i += args.concurrency as u64;
                let started = Instant::now();
                let result = send(&mut conn, &args, &args.target, body).await;
                let took = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match result {
                    Ok(()) => {
                        tally.acked_items += args.items as u64;
                        if measuring {
                            tally.ok += 1;
                            tally.latencies_us.push(took);
                        }
                    }
                    Err(e) => {
                        if measuring {
                            tally.errors += 1;
                        }
                        tally.first_error.get_or_insert(e);
                        // A broken connection is replaced; the request is not retried.
                        if let Ok(c) = connect(&args.target, args.protocol).await {
                            conn = c;
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep_until(warmup_end.into()).await;
    let measure_start = Instant::now();
    if args.requests.is_none() {
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies_us.extend(t.latencies_us);
        all.ok += t.ok;
        all.errors += t.errors;
        all.acked_items += t.acked_items;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let seconds = measure_start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let items = all.ok * args.items as u64;
    let summary = serde_json::json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "signal": format!("{:?}", args.signal).to_lowercase(),
        "items_per_request": args.items,
        "attributes": args.attributes,
        "concurrency": args.concurrency,
        "seconds": seconds,
        "requests_ok": all.ok,
        "errors": all.errors,
        "items_per_sec": items as f64 / seconds,
        "p50_ms": percentile(&all.latencies_us, 0.50),
        "p99_ms": percentile(&all.latencies_us, 0.99),
        "acked_items": all.acked_items,
        "first_error": all.first_error,
    });
    println!(
        "{:.0} items/s over {seconds:.1} s ({} requests of {} items, {} errors); latency p50 {:.2} ms, p99 {:.2} ms",
        items as f64 / seconds,
        all.ok,
        args.items,
        all.errors,
        percentile(&all.latencies_us, 0.50),
        percentile(&all.latencies_us, 0.99)
    );
    println!("SUMMARY {summary}");
    Ok(())
}
