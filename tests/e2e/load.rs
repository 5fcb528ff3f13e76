//! The load generator: concurrent OTLP/HTTP senders that record exactly which requests the
//! daemon acknowledged, so a test can demand every acknowledged span at the sink.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::{Sink, spans_by_id, traces_request};

/// What the senders saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered 200 (the daemon owns them).
    pub acked: BTreeSet<u64>,
    /// Requests whose connection broke before an answer (the daemon may or may not have them).
    pub unknown: BTreeSet<u64>,
    /// Answers asking to retry later (429/503), each retried.
    pub pushed_back: u64,
    /// Any other answer, by status.
    pub other: BTreeMap<u16, u64>,
}

/// Running senders.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    /// `senders` tasks posting requests of `per` spans to `url` (`http://addr`), each waiting
    /// `pace` between requests. Request `r` carries span ids `r*per .. r*per+per` from
    /// `first_request` on.
    pub fn start(url: &str, senders: usize, per: u64, pace: Duration, first_request: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(first_request));
        let tasks = (0..senders)
            .map(|_| {
                let (stop, counter) = (stop.clone(), counter.clone());
                let url = format!("{url}/v1/traces");
                tokio::spawn(async move { send(url, per, pace, stop, counter).await })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the senders and returns what they saw.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Tally::default();
        for t in self.tasks {
            let t = t.await.unwrap();
            all.acked.extend(t.acked);
            all.unknown.extend(t.unknown);
            all.pushed_back += t.pushed_back;
            for (k, v) in t.other {
                *all.other.entry(k).or_default() += v;
            }
        }
        all
    }
}

async fn send(
    url: String,
    per: u64,
    pace: Duration,
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
) -> Tally {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut tally = Tally::default();
    'requests: while !stop.load(Ordering::SeqCst) {
        let r = counter.fetch_add(1, Ordering::SeqCst);
        let body = Bytes::from(traces_request(per as usize, "load", r * per));
        loop {
            let req = http::Request::post(&url)
                .header("content-type", "application/x-protobuf")
                .body(Full::new(body.clone()))
                .unwrap();
            let resp = match client.request(req).await {
                Ok(resp) => resp,
                Err(_) => {
                    tally.unknown.insert(r);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'requests;
                }
            };
            let status = resp.status().as_u16();
            // Read the answer to the end: a request is acknowledged by the whole response.
            if resp.into_body().collect().await.is_err() {
                tally.unknown.insert(r);
                continue 'requests;
            }
            match status {
                200 => {
                    tally.acked.insert(r);
                    break;
                }
                429 | 503 => {
                    tally.pushed_back += 1;
                    if stop.load(Ordering::SeqCst) {
                        continue 'requests;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => {
                    *tally.other.entry(other).or_default() += 1;
                    break;
                }
            }
        }
        tokio::time::sleep(pace).await;
    }
    tally
}

/// How the spans of acknowledged requests arrived at a sink.
#[derive(Debug)]
pub struct Delivery {
    /// Spans acknowledged to the senders.
    pub acked_spans: usize,
    /// Acknowledged spans the sink never got.
    pub missing: Vec<u64>,
    /// Spans the sink got more than once (extra copies).
    pub duplicates: usize,
    /// Distinct spans at the sink.
    pub delivered: usize,
}

/// Every span (by id) at the sink, with how often it arrived.
pub fn span_counts(sink: &Sink) -> BTreeMap<u64, usize> {
    spans_by_id(sink)
        .into_iter()
        .map(|(id, copies)| (u64::from_str_radix(&id, 16).unwrap(), copies.len()))
        .collect()
}

/// Compares the sink with what was acknowledged.
pub fn delivery(sink: &Sink, acked: &BTreeSet<u64>, per: u64) -> Delivery {
    let counts = span_counts(sink);
    let acked_ids: Vec<u64> = acked.iter().flat_map(|r| r * per..r * per + per).collect();
    Delivery {
        acked_spans: acked_ids.len(),
        missing: acked_ids
            .iter()
            .copied()
            .filter(|id| !counts.contains_key(id))
            .collect(),
        duplicates: counts.values().map(|c| c - 1).sum(),
        delivered: counts.len(),
    }
}
