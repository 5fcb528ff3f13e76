//! The queue: one log per signal, bounded in bytes, with a cursor per exporter.
//!
//! One copy of each batch serves every exporter; a batch is freed when the slowest cursor
//! has moved past it. [`Queue`] is the seam for a durable implementation; [`MemoryQueue`] is
//! the in-memory one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;

use crate::signal::Signal;

/// How a batch is handed to a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// OTLP protobuf: the batch bytes as they are.
    OtlpProtobuf,
    /// OTLP/JSON, encoded once per batch on first use.
    OtlpJson,
}

impl Encoding {
    /// Its name in the contract (`otlp-protobuf`, `otlp-json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::OtlpProtobuf => "otlp-protobuf",
            Encoding::OtlpJson => "otlp-json",
        }
    }
}

/// A sealed batch: OTLP export-request bytes for one signal.
#[derive(Debug)]
pub struct Batch {
    /// Signal of every item in it.
    pub signal: Signal,
    /// Spans, data points or log records.
    pub items: u32,
    /// `Export*ServiceRequest` protobuf (a concatenation of received requests).
    pub payload: Bytes,
    /// When it was made (sealed by the batcher, or read back from disk).
    pub created: std::time::SystemTime,
    json: OnceLock<Result<Bytes, String>>,
}

/// How far a cursor is behind the queue's head.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lag {
    /// Records (batches) not yet exported.
    pub records: u64,
    /// Their items, where the queue knows without reading them (memory mode).
    pub items: Option<u64>,
    /// Their bytes.
    pub bytes: u64,
    /// When the oldest of them was made, where the queue knows (memory mode).
    pub oldest: Option<std::time::SystemTime>,
}

impl Batch {
    /// A batch of `items` items.
    pub fn new(signal: Signal, items: u32, payload: Bytes) -> Self {
        Batch {
            signal,
            items,
            payload,
            created: std::time::SystemTime::now(),
            json: OnceLock::new(),
        }
    }

    /// The batch in `encoding`; JSON is computed once and shared by every exporter.
    pub fn encoded(&self, encoding: Encoding) -> Result<Bytes, String> {
        match encoding {
            Encoding::OtlpProtobuf => Ok(self.payload.clone()),
            Encoding::OtlpJson => self.json.get_or_init(|| self.to_json()).clone(),
        }
    }

    fn to_json(&self) -> Result<Bytes, String> {
        use ferry_proto::{logs_service, metrics_service, trace_service};
        fn enc<M: Message + Default + serde::Serialize>(b: &[u8]) -> Result<Bytes, String> {
            let m = M::decode(b).map_err(|e| format!("batch does not decode: {e}"))?;
            serde_json::to_vec(&m)
                .map(Bytes::from)
                .map_err(|e| format!("JSON encoding failed: {e}"))
        }
        match self.signal {
            Signal::Traces => enc::<trace_service::ExportTraceServiceRequest>(&self.payload),
            Signal::Metrics => enc::<metrics_service::ExportMetricsServiceRequest>(&self.payload),
            Signal::Logs => enc::<logs_service::ExportLogsServiceRequest>(&self.payload),
        }
    }
}

/// The concatenation of `parts` (`bytes` long): one batch from many requests, which protobuf
/// reads as their merge. A single part is passed through without copying.
pub fn concat(mut parts: Vec<Bytes>, bytes: usize) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    let mut buf = bytes::BytesMut::with_capacity(bytes);
    for p in parts {
        buf.extend_from_slice(&p);
    }
    buf.freeze()
}

/// The queue has no room for this many bytes.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("queue full: {used} of {capacity} bytes used, {wanted} more requested")]
pub struct QueueFull {
    /// Bytes in use.
    pub used: usize,
    /// Budget.
    pub capacity: usize,
    /// Bytes asked for.
    pub wanted: usize,
}

/// A per-signal log of batches with named cursors.
pub trait Queue: Send + Sync {
    /// Appends a batch; its sequence number is returned.
    fn append(&self, batch: Arc<Batch>) -> Result<u64, QueueFull>;
    /// The batch at `seq`, if it has been appended and not yet freed.
    fn get(&self, seq: u64) -> Option<Arc<Batch>>;
    /// The next batch to export from `from` on, and the sequence number after it. A queue may
    /// merge consecutive records into one batch; an empty batch means the records were lost
    /// (and counted) and only the cursor moves.
    fn read(&self, from: u64) -> Option<(Arc<Batch>, u64)> {
        self.get(from).map(|b| (b, from + 1))
    }
    /// Opens (or reopens) cursor `name`; returns the next sequence number it should read.
    fn open_cursor(&self, name: &str) -> u64;
    /// Marks every batch before `next` done for cursor `name`, freeing what all cursors passed.
    fn commit(&self, name: &str, next: u64);
    /// Removes cursor `name` so it no longer holds batches.
    fn close_cursor(&self, name: &str);
    /// Where cursor `name` is, if it exists.
    fn cursor(&self, name: &str) -> Option<u64>;
    /// Watches the next sequence number to be appended.
    fn head(&self) -> watch::Receiver<u64>;
    /// Bytes held.
    fn used_bytes(&self) -> usize;
    /// Every cursor, with how far it is behind the head.
    fn lags(&self) -> Vec<(String, Lag)>;
    /// Byte budget.
    fn capacity(&self) -> usize;
}

#[derive(Debug)]
struct Inner {
    /// Sequence number of `records[0]`.
    base: u64,
    records: VecDeque<Arc<Batch>>,
    bytes: usize,
    cursors: BTreeMap<String, u64>,
}

/// The in-memory queue.
#[derive(Debug)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    head: watch::Sender<u64>,
}

impl MemoryQueue {
    /// A queue holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            inner: Mutex::new(Inner {
                base: 0,
                records: VecDeque::new(),
                bytes: 0,
                cursors: BTreeMap::new(),
            }),
            capacity,
            head: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("queue lock")
    }
}

impl Inner {
    fn trim(&mut self) {
        let head = self.base + self.records.len() as u64;
        // With no cursor nothing would ever read a batch; keeping it would only fill memory,
        // and the pipeline refuses input for signals that have no exporter anyway.
        let min = self.cursors.values().copied().min().unwrap_or(head);
        while self.base < min {
            let Some(b) = self.records.pop_front() else {
                break;
            };
            self.bytes -= b.payload.len();
            self.base += 1;
        }
    }
}

impl Queue for MemoryQueue {
    fn append(&self, batch: Arc<Batch>) -> Result<u64, QueueFull> {
        let mut inner = self.lock();
        let wanted = batch.payload.len();
        if inner.bytes + wanted > self.capacity {
            return Err(QueueFull {
                used: inner.bytes,
                capacity: self.capacity,
                wanted,
            });
        }
        inner.bytes += wanted;
        inner.records.push_back(batch);
        let seq = inner.base + inner.records.len() as u64 - 1;
        drop(inner);
        self.head.send_replace(seq + 1);
        Ok(seq)
    }

    fn get(&self, seq: u64) -> Option<Arc<Batch>> {
        let inner = self.lock();
        let i = seq.checked_sub(inner.base)?;
        inner.records.get(i as usize).cloned()
    }

    fn open_cursor(&self, name: &str) -> u64 {
        let mut inner = self.lock();
        let head = inner.base + inner.records.len() as u64;
        *inner.cursors.entry(name.to_string()).or_insert(head)
    }

    fn commit(&self, name: &str, next: u64) {
        let mut inner = self.lock();
        if let Some(c) = inner.cursors.get_mut(name) {
            *c = (*c).max(next);
        }
        inner.trim();
    }

    fn close_cursor(&self, name: &str) {
        let mut inner = self.lock();
        inner.cursors.remove(name);
        inner.trim();
    }

    fn cursor(&self, name: &str) -> Option<u64> {
        self.lock().cursors.get(name).copied()
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    fn used_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lags(&self) -> Vec<(String, Lag)> {
        let inner = self.lock();
        let lag = |cursor: u64| {
            let from = usize::try_from(cursor.saturating_sub(inner.base)).unwrap_or(usize::MAX);
            let mut lag = Lag {
                items: Some(0),
                ..Lag::default()
            };
            for b in inner.records.iter().skip(from) {
                lag.records += 1;
                lag.items = lag.items.map(|n| n + u64::from(b.items));
                lag.bytes += b.payload.len() as u64;
                lag.oldest.get_or_insert(b.created);
            }
            lag
        };
        inner
            .cursors
            .iter()
            .map(|(name, c)| (name.clone(), lag(*c)))
            .collect()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Arc<Batch> {
        Arc::new(Batch::new(Signal::Logs, 1, Bytes::from(vec![0u8; n])))
    }

    #[test]
    fn frees_only_what_the_slowest_cursor_passed() {
        let q = MemoryQueue::new(1000);
        assert_eq!(q.open_cursor("fast"), 0);
        assert_eq!(q.open_cursor("slow"), 0);
        for _ in 0..3 {
            q.append(batch(100)).unwrap();
        }
        q.commit("fast", 3);
        assert_eq!(q.used_bytes(), 300);
        q.commit("slow", 2);
        assert_eq!(q.used_bytes(), 100);
        assert!(q.get(1).is_none());
        assert!(q.get(2).is_some());
        q.close_cursor("slow");
        assert_eq!(q.used_bytes(), 0);
    }

    #[test]
    fn each_cursor_knows_how_far_it_is_behind() {
        let q = MemoryQueue::new(1000);
        q.open_cursor("fast");
        q.open_cursor("slow");
        let first = batch(100);
        q.append(first.clone()).unwrap();
        q.append(batch(50)).unwrap();
        q.commit("fast", 2);
        let lags: BTreeMap<String, Lag> = q.lags().into_iter().collect();
        assert_eq!(
            lags["fast"],
            Lag {
                items: Some(0),
                ..Lag::default()
            }
        );
        assert_eq!(
            lags["slow"],
            Lag {
                records: 2,
                items: Some(2),
                bytes: 150,
                oldest: Some(first.created),
            }
        );
    }

    #[test]
    fn refuses_past_budget() {
        let q = MemoryQueue::new(250);
        q.open_cursor("a");
        q.append(batch(200)).unwrap();
        let err = q.append(batch(100)).unwrap_err();
        assert_eq!((err.used, err.wanted), (200, 100));
        q.commit("a", 1);
        q.append(batch(100)).unwrap();
    }

    #[test]
    fn json_encoding_follows_otlp_json_and_is_computed_once() {
        use ferry_proto::trace::{ResourceSpans, ScopeSpans, Span};
        use ferry_proto::trace_service::ExportTraceServiceRequest;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "op".into(),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let b = Batch::new(Signal::Traces, 1, Bytes::from(req.encode_to_vec()));
        let json = b.encoded(Encoding::OtlpJson).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "abababababababababababababababab");
        assert_eq!(span["spanId"], "0101010101010101");
        assert_eq!(span["name"], "op");
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        let again = b.encoded(Encoding::OtlpJson).unwrap();
        assert_eq!(json.as_ptr(), again.as_ptr(), "shared, not re-encoded");
        assert_eq!(b.encoded(Encoding::OtlpProtobuf).unwrap(), b.payload);
    }

    #[test]
    fn undecodable_batch_cannot_become_json() {
        let b = Batch::new(Signal::Logs, 1, Bytes::from_static(&[0x0a, 0xff]));
        assert!(
            b.encoded(Encoding::OtlpJson)
                .unwrap_err()
                .contains("does not decode")
        );
    }

    #[test]
    fn new_cursor_starts_at_head() {
        let q = MemoryQueue::new(1000);
        q.open_cursor("a");
        q.append(batch(10)).unwrap();
        assert_eq!(q.open_cursor("b"), 1);
        assert_eq!(*q.head().borrow(), 1);
    }
}
