//! Criterion micro-benchmarks of the hot path: wire-walk validation, the processor chain
//! (back to back, and after an idle gap as at a low request rate), batch concatenation,
//! OTLP/JSON encoding, and a plugin `export` call (the Wasm boundary) beside a real
//! pass-through export to a loopback backend, by a plugin of each contract version and
//! natively.
//!
//! `cargo bench -p ferry --bench hot_path` (figures and machine in BENCHMARKS.md).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry::config::ExporterConfig;
use ferry::pipeline::queue::{Batch, Encoding, concat};
use ferry::pipeline::router::{Export, Outcome};
use ferry::plugin::engine::PluginEngine;
use ferry::plugin::exporter::PluginExporter;
use ferry::plugin::registry;
use ferry::plugin::sender::{HostSender, SenderLimits};
use ferry::signal::Signal;
use ferry::telemetry::Telemetry;
use ferry::wire;
use ferry_bench::request;

// The daemon's allocator (host/src/main.rs), so that these figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `spans` spans of 10 attributes, as requests of 100 spans concatenated (a batch).
fn batch(spans: usize) -> Bytes {
    let parts: Vec<Bytes> = (0..spans / 100)
        .map(|i| Bytes::from(request(ferry_bench::Signal::Traces, 100, 10, i as u64)))
        .collect();
    let len = parts.iter().map(Bytes::len).sum();
    concat(parts, len)
}

fn wire_walk(c: &mut Criterion) {
    let one = Bytes::from(request(ferry_bench::Signal::Traces, 100, 10, 1));
    let mut g = c.benchmark_group("wire_walk");
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("traces/100_spans", |b| {
        b.iter(|| wire::inspect(Signal::Traces, std::hint::black_box(&one)).unwrap())
    });
    g.finish();
}

fn concatenation(c: &mut Criterion) {
    let parts: Vec<Bytes> = (0..82)
        .map(|i| Bytes::from(request(ferry_bench::Signal::Traces, 100, 10, i)))
        .collect();
    let len: usize = parts.iter().map(Bytes::len).sum();
    let mut g = c.benchmark_group("concat");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("82_requests_8200_spans", |b| {
        b.iter_batched(|| parts.clone(), |p| concat(p, len), BatchSize::SmallInput)
    });
    g.finish();
}

fn json_encoding(c: &mut Criterion) {
    let payload = batch(1000);
    let mut g = c.benchmark_group("otlp_json");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("traces/1k_spans", |b| {
        b.iter_batched(
            || Batch::new(Signal::Traces, 1000, payload.clone()),
            |batch| batch.encoded(Encoding::OtlpJson).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A loopback HTTP backend that reads each body and answers 200.
async fn backend() -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::new(),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn exporter(engine: &PluginEngine, plugin: &str, toml: &str) -> PluginExporter {
    // Built-ins, and the `otlp-http` plugin as built for contract 0.1.0 (batches copied in).
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let source =
        registry::find(&ferry::plugin::Catalog::builtin(), plugin, Some(&fixtures)).unwrap();
    let config: ExporterConfig = toml::from_str(toml).unwrap();
    PluginExporter::load(
        engine,
        plugin,
        &source,
        &config.spec(),
        HostSender::new(SenderLimits::default()),
        ferry::plugin::text::LogPolicy::default(),
        &Telemetry::new(),
    )
    .await
    .unwrap()
}

fn plugin_export(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = PluginEngine::builder().build().unwrap();
    let (addr, blackhole, otlp_http, otlp_http_0_1) = rt.block_on(async {
        let addr = backend().await;
        let http = |plugin: &str| {
            format!("plugin = \"{plugin}\"\nconfig = {{ endpoint = \"http://{addr}\" }}")
        };
        (
            addr,
            Arc::new(exporter(&engine, "blackhole", "plugin = \"blackhole\"").await),
            Arc::new(exporter(&engine, "otlp-http", &http("otlp-http")).await),
            Arc::new(
                exporter(
                    &engine,
                    "otlp-http-contract-0_1_0",
                    &http("otlp-http-contract-0_1_0"),
                )
                .await,
            ),
        )
    });
    // The same POST made natively, with a pooled hyper client like the host's.
    let native = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let url: http::Uri = format!("http://{addr}/v1/traces").parse().unwrap();
    let mut g = c.benchmark_group("plugin_export");
    for spans in [1000usize, 10_000] {
        let payload = batch(spans);
        g.throughput(Throughput::Elements(spans as u64));
        for (name, exp) in [
            ("blackhole", &blackhole),
            ("otlp-http", &otlp_http),
            ("otlp-http-contract-0_1_0", &otlp_http_0_1),
        ] {
            g.bench_function(format!("{name}/{}k_spans", spans / 1000), |b| {
                b.to_async(&rt).iter(|| async {
                    let out = exp
                        .export(Signal::Traces, spans as u32, 0, payload.clone())
                        .await;
                    assert!(matches!(out, Outcome::Ok), "{out:?}");
                })
            });
        }
        // The same batch handed to a native no-op: what the boundary adds is the difference.
        g.bench_function(format!("native_noop/{}k_spans", spans / 1000), |b| {
            b.iter(|| std::hint::black_box(payload.clone()))
        });
        g.bench_function(format!("native_otlp_http/{}k_spans", spans / 1000), |b| {
            b.to_async(&rt).iter(|| async {
                let req = http::Request::post(url.clone())
                    .header("content-type", "application/x-protobuf")
                    .body(http_body_util::Full::new(payload.clone()))
                    .unwrap();
                let resp = native.request(req).await.unwrap();
                assert!(resp.status().is_success());
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            })
        });
    }
    g.finish();
}

/// The benchmark chain (resource upsert, attribute delete, filter, sample 50%) on one request
/// of 100 spans, each processor alone, and the check a chain runs first; beside them, what
/// decoding the request into structs and encoding it again would cost.
fn processor_chain(c: &mut Criterion) {
    use ferry::processor::{Chain, Checked, Decoded, Processors};
    let one = Bytes::from(request(ferry_bench::Signal::Traces, 100, 10, 1));
    let defs: toml::Table = toml::from_str(
        r#"
        [env]
        kind = "resource"
        actions = [{ key = "deployment.environment", action = "upsert", value = "bench" }]
        [scrub]
        kind = "attributes"
        apply_to = ["spans"]
        actions = [{ key = "bench.attr.9", action = "delete" }]
        [drop]
        kind = "filter"
        spans = { any = [{ name = "bench-op-3" }, { name = "bench-op-7" }] }
        [half]
        kind = "sample"
        percentage = 50
        "#,
    )
    .unwrap();
    let defs: Processors = defs
        .into_iter()
        .map(|(k, v)| (k, v.try_into().unwrap()))
        .collect();
    let t = Telemetry::default();
    let chain = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        futures::executor::block_on(Chain::build(&names, &defs, &t, None, None)).unwrap()
    };
    let mut g = c.benchmark_group("processor_chain");
    g.bench_function("compute_only", |b| b.iter(compute));
    g.throughput(Throughput::Elements(100));
    g.bench_function("decode/100_spans", |b| {
        b.iter(|| Decoded::decode(Signal::Traces, std::hint::black_box(&one)).unwrap())
    });
    let decoded = Decoded::decode(Signal::Traces, &one).unwrap();
    g.bench_function("encode/100_spans", |b| b.iter(|| decoded.encode()));
    // As the ingest chain runs: on a request the receiver has checked (`wire_walk`).
    for names in [
        &["env", "scrub", "drop", "half"][..],
        &["env"],
        &["scrub"],
        &["drop"],
        &["half"],
    ] {
        let c = chain(names);
        g.bench_function(format!("{}/100_spans", names.join("+")), |b| {
            b.iter(|| {
                futures::executor::block_on(c.run(Signal::Traces, &one, 100, Checked::Yes)).unwrap()
            })
        });
    }
    g.finish();

    // The same work when the thread has been idle before each request, as a daemon is at a
    // low request rate: only the work is timed, never the idle gap.
    let whole = chain(&["env", "scrub", "drop", "half"]);
    let mut g = c.benchmark_group("after_idle");
    g.throughput(Throughput::Elements(100));
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_millis(500));
    g.bench_function("wire_walk/100_spans", |b| {
        b.iter_custom(|n| after_idle(n, || wire::inspect(Signal::Traces, &one).unwrap()))
    });
    // A control that touches no memory: a chain of dependent multiplications takes as long
    // after the gap as without it (`compute_only` in `processor_chain`).
    g.bench_function("compute_only", |b| {
        b.iter_custom(|n| after_idle(n, compute))
    });
    g.bench_function("env+scrub+drop+half/100_spans", |b| {
        b.iter_custom(|n| {
            after_idle(n, || {
                futures::executor::block_on(whole.run(Signal::Traces, &one, 100, Checked::Yes))
                    .unwrap()
            })
        })
    });
    g.finish();
}

/// 20,000 dependent multiply-adds, each stored and read back (tens of microseconds of work
/// whose speed depends on the core alone, not on caches).
fn compute() -> u64 {
    (0..20_000u64).fold(1, |x, k| {
        std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(k))
    })
}

/// Runs `work` `n` times, each after 1.25 ms asleep (the mean gap between two 100-span
/// requests at 80k spans/s); returns the time spent in `work`.
fn after_idle<T>(n: u64, mut work: impl FnMut() -> T) -> std::time::Duration {
    let mut spent = std::time::Duration::ZERO;
    for _ in 0..n {
        std::thread::sleep(std::time::Duration::from_micros(1250));
        let started = std::time::Instant::now();
        std::hint::black_box(work());
        spent += started.elapsed();
    }
    spent
}

criterion_group!(
    benches,
    processor_chain,
    wire_walk,
    concatenation,
    json_encoding,
    plugin_export
);
criterion_main!(benches);
