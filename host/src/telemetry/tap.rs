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

/// Items a line shows at most: a tap is a sample to read, and a full batch (thousands of items)
/// would cost the machine more to print than to carry.
pub const MAX_SHOWN: usize = 1000;

/// Keeps at most `left` of `v`, counting them off.
fn trim<T>(v: &mut Vec<T>, left: &mut usize) {
    v.truncate(*left);
    *left -= v.len();
}

/// The request `payload` of `signal` as OTLP/JSON with at most `max` items (spans, log
/// records; for metrics, whole metrics), and how many it shows.
fn otlp_json(signal: Signal, payload: &[u8], max: usize) -> Result<(String, usize), String> {
    use ferry_proto::{logs_service, metrics_service, trace_service};
    let mut left = max;
    let json = match signal {
        Signal::Traces => {
            let mut m = trace_service::ExportTraceServiceRequest::decode(payload)
                .map_err(|e| e.to_string())?;
            for s in m.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans) {
                trim(&mut s.spans, &mut left);
            }
            serde_json::to_string(&m)
        }
        Signal::Metrics => {
            let mut m = metrics_service::ExportMetricsServiceRequest::decode(payload)
                .map_err(|e| e.to_string())?;
            for s in m
                .resource_metrics
                .iter_mut()
                .flat_map(|r| &mut r.scope_metrics)
            {
                trim(&mut s.metrics, &mut left);
            }
            serde_json::to_string(&m)
        }
        Signal::Logs => {
            let mut m = logs_service::ExportLogsServiceRequest::decode(payload)
                .map_err(|e| e.to_string())?;
            for s in m.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs) {
                trim(&mut s.log_records, &mut left);
            }
            serde_json::to_string(&m)
        }
    };
    Ok((json.map_err(|e| e.to_string())?, max - left))
}

/// A tapped batch as one line of JSON: when, where, the signal, its items and how many are
/// shown (at most [`MAX_SHOWN`]), why it was dropped (at a `dropped:` point) and the request
/// as OTLP/JSON. Written straight to text: a batch is never held as a JSON tree.
pub fn json_line(point: &str, t: &Tapped) -> String {
    let (request, shown) = match otlp_json(t.signal, &t.payload, MAX_SHOWN) {
        Ok(r) => r,
        Err(e) => (
            serde_json::Value::from(format!("does not decode: {e}")).to_string(),
            0,
        ),
    };
    let at =
        t.at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
    format!(
        "{{\"at_unix_ms\":{at},\"point\":{},\"signal\":\"{}\",\"items\":{},\"shown\":{shown},\"reason\":{},\"request\":{request}}}",
        serde_json::Value::from(point),
        t.signal.as_str(),
        t.items,
        serde_json::to_string(&t.reason).unwrap_or_else(|_| "null".into()),
    )
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
    fn a_line_is_otlp_json_showing_at_most_max_shown_items() {
        use ferry_proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
        use ferry_proto::logs_service::ExportLogsServiceRequest;
        let logs = |n: usize| ScopeLogs {
            log_records: vec![LogRecord::default(); n],
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![logs(MAX_SHOWN - 1), logs(5)],
                ..Default::default()
            }],
        };
        let t = Tapped {
            items: MAX_SHOWN as u32 + 4,
            payload: req.encode_to_vec().into(),
            reason: Some("why \"so\"".into()),
            ..tapped(0)
        };
        let line = json_line("dropped:x", &t);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["point"], "dropped:x");
        assert_eq!(v["signal"], "logs");
        assert_eq!(
            (v["items"].as_u64(), v["shown"].as_u64()),
            (Some(1004), Some(1000))
        );
        assert_eq!(v["reason"], "why \"so\"");
        let scopes = v["request"]["resourceLogs"][0]["scopeLogs"]
            .as_array()
            .unwrap();
        assert_eq!(scopes[1]["logRecords"].as_array().unwrap().len(), 1);
        let bad = json_line(
            "x",
            &Tapped {
                payload: Bytes::from_static(&[0xff]),
                ..tapped(0)
            },
        );
        let v: serde_json::Value = serde_json::from_str(&bad).unwrap();
        assert!(
            v["request"]
                .as_str()
                .unwrap()
                .starts_with("does not decode")
        );
    }
}
