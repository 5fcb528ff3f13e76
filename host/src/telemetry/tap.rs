//! Taps: a sample of what flows at a named point (a receiver's output, the ingest chain's, an
//! exporter's input, what an exporter dropped), for `GET /tap` and `ferry tap`. Components
//! register their points once and offer each batch; with nobody tapping, an offer is one
//! relaxed atomic load. Each tapper takes at most its rate of batches a second (a token bucket
//! checked at the offer, so the batches it passes over are never even queued) through a small
//! bounded channel: when it reads too slowly the batches that do not fit are skipped too (and
//! counted), so a tap never makes the pipeline wait, and it only ever sees shared bytes, so it
//! never changes what is delivered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;

use crate::signal::Signal;

/// Batches a tapper may fall behind by before the next ones are skipped.
const BACKLOG: usize = 4;

/// A token bucket of `rate` a second, holding at most one second's worth (at least one).
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One tapper: where its batches go, at what rate, and how many it passed over since the last.
struct Tapper {
    tx: mpsc::Sender<(Tapped, u64)>,
    bucket: Bucket,
    skipped: u64,
}

/// One batch seen at a point.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// Its signal.
    pub signal: Signal,
    /// Items in it.
    pub items: u32,
    /// The OTLP protobuf request.
    pub payload: Bytes,
    /// Why it was dropped, at a `dropped:` point.
    pub reason: Option<String>,
    /// When it was seen.
    pub at: SystemTime,
}

#[derive(Default)]
struct PointInner {
    /// Tappers now: the only thing an offer reads when there are none.
    active: AtomicUsize,
    tappers: Mutex<Vec<Tapper>>,
    /// Batches a tapper had no room for.
    skipped: AtomicU64,
}

/// A point batches can be tapped at.
#[derive(Clone, Default)]
pub struct Point(Arc<PointInner>);

impl Point {
    /// Hands the batch `make` builds to every tapper, if any; never waits.
    #[inline]
    pub fn offer(&self, make: impl FnOnce() -> Tapped) {
        if self.0.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.offer_slow(make());
    }

    #[cold]
    fn offer_slow(&self, t: Tapped) {
        let mut tappers = self.0.tappers.lock().expect("tap lock");
        tappers.retain_mut(|tapper| {
            if tapper.tx.is_closed() {
                return false;
            }
            if !tapper.bucket.take() {
                tapper.skipped += 1;
                return true;
            }
            match tapper.tx.try_send((t.clone(), tapper.skipped)) {
                Ok(()) => tapper.skipped = 0,
                Err(_) => {
                    self.0.skipped.fetch_add(1, Ordering::Relaxed);
                    tapper.skipped += 1;
                }
            }
            true
        });
        self.0.active.store(tappers.len(), Ordering::Relaxed);
    }

    /// A new tapper's end, taking at most `rate` batches a second; each comes with the
    /// number of batches passed over since the one before.
    fn subscribe(&self, rate: f64) -> mpsc::Receiver<(Tapped, u64)> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let mut tappers = self.0.tappers.lock().expect("tap lock");
        tappers.retain(|t| !t.tx.is_closed());
        tappers.push(Tapper {
            tx,
            bucket: Bucket {
                rate,
                tokens: 1.0,
                at: std::time::Instant::now(),
            },
            skipped: 0,
        });
        self.0.active.store(tappers.len(), Ordering::Relaxed);
        rx
    }

    /// Batches tappers had no room for, so far.
    pub fn skipped(&self) -> u64 {
        self.0.skipped.load(Ordering::Relaxed)
    }
}

/// Every tap point, by name.
#[derive(Default)]
pub struct Taps {
    points: Mutex<BTreeMap<String, Point>>,
}

impl Taps {
    /// The point `name` (the same one for the same name).
    pub fn point(&self, name: &str) -> Point {
        self.points
            .lock()
            .expect("taps lock")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The names of every point.
    pub fn names(&self) -> Vec<String> {
        self.points
            .lock()
            .expect("taps lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Taps point `name` at `rate` batches a second at most, if there is such a point.
    pub fn subscribe(&self, name: &str, rate: f64) -> Option<mpsc::Receiver<(Tapped, u64)>> {
        let point = self.points.lock().expect("taps lock").get(name)?.clone();
        Some(point.subscribe(rate))
    }
}

/// A tapped batch as one line of JSON: when, where, the signal, the items, why it was dropped
/// (at a `dropped:` point) and the request itself as OTLP/JSON.
pub fn json_line(point: &str, t: &Tapped) -> String {
    use ferry_proto::{logs_service, metrics_service, trace_service};
    fn otlp<M: Message + Default + serde::Serialize>(b: &[u8]) -> serde_json::Value {
        match M::decode(b) {
            Ok(m) => serde_json::to_value(&m).unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::Value::String(format!("does not decode: {e}")),
        }
    }
    let request = match t.signal {
        Signal::Traces => otlp::<trace_service::ExportTraceServiceRequest>(&t.payload),
        Signal::Metrics => otlp::<metrics_service::ExportMetricsServiceRequest>(&t.payload),
        Signal::Logs => otlp::<logs_service::ExportLogsServiceRequest>(&t.payload),
    };
    let at =
        t.at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
    serde_json::json!({
        "at_unix_ms": at,
        "point": point,
        "signal": t.signal.as_str(),
        "items": t.items,
        "reason": t.reason,
        "request": request,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tapped(n: u32) -> Tapped {
        Tapped {
            signal: Signal::Logs,
            items: n,
            payload: Bytes::new(),
            reason: None,
            at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn offers_reach_tappers_only_while_they_listen_and_a_slow_one_loses_batches() {
        let taps = Taps::default();
        let p = taps.point("exporter:x");
        let mut built = 0;
        p.offer(|| {
            built += 1;
            tapped(1)
        });
        assert_eq!(built, 0, "nobody taps: nothing is even built");
        assert!(taps.subscribe("exporter:nope", 1.0).is_none());
        // A fast tapper that does not read: its channel fills, the rest are skipped.
        let mut rx = taps.subscribe("exporter:x", 1e9).unwrap();
        for n in 0..(BACKLOG as u32 + 10) {
            p.offer(|| tapped(n));
        }
        assert_eq!(
            p.skipped(),
            10,
            "the tapper fell behind: the rest are skipped"
        );
        assert_eq!(rx.recv().await.unwrap().0.items, 0);
        drop(rx);
        p.offer(|| tapped(1));
        assert_eq!(
            p.0.active.load(Ordering::Relaxed),
            0,
            "a gone tapper is forgotten"
        );
        // One a second: the first goes through, the others within the second are passed over
        // (never queued).
        let mut slow = taps.subscribe("exporter:x", 1.0).unwrap();
        for n in 0..5 {
            p.offer(|| tapped(n));
        }
        assert_eq!(slow.recv().await.unwrap().0.items, 0);
        assert!(slow.try_recv().is_err(), "nothing else queued");
        assert_eq!(
            p.skipped(),
            10,
            "passing over for the rate is not falling behind"
        );
    }

    #[test]
    fn a_line_is_otlp_json() {
        let line = json_line("receiver:otlp_http", &tapped(0));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["point"], "receiver:otlp_http");
        assert_eq!(v["signal"], "logs");
        assert!(v["request"].is_object(), "{line}");
    }
}
