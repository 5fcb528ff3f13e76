//! The durable queue: a signal's log on disk ([`SegmentLog`]) with persisted cursors.
//!
//! Every accepted request becomes one record (`items: u32 LE | OTLP request bytes`). Appends
//! are plain writes; one sync task makes them durable with one `fdatasync` for everything
//! appended since the last (group commit), and a receiver answers its sender only once the
//! record is synced. Exporters see only synced records, and read them back batched: a read
//! concatenates consecutive records up to `batch_max_items` items, the protobuf merge that
//! the memory batcher relies on too.
//!
//! Cursors are kept in `cursors.json` next to the segments, replaced atomically (write, sync,
//! rename) when a cursor is created and about once a second after they move. A crash can
//! therefore re-export what was exported in the last second (duplicates, never loss).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::queue::{Batch, Lag, Queue, QueueFull, concat};
use super::segment_log::{Recovery, SegmentLog};
use crate::signal::Signal;
use crate::telemetry::Counter;

const CURSORS: &str = "cursors.json";
const CURSORS_TMP: &str = "cursors.json.tmp";
/// A read never gathers more than this many bytes into one batch.
const MAX_READ_BYTES: usize = 8 << 20;
/// How often moved cursors are written out.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Why the durable queue could not take a request.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The disk budget is reached.
    #[error(transparent)]
    Full(#[from] QueueFull),
    /// The disk refused the write or the sync (full, read-only, failing).
    #[error("durable queue: {0}")]
    Storage(String),
}

/// How far the log is durable, and whether syncing broke.
#[derive(Debug, Clone, Default)]
struct Synced {
    /// Every record before this sequence number is on disk.
    upto: u64,
    /// A failed `fdatasync`: records not yet synced may be gone, so nothing more is acknowledged.
    failed: Option<Arc<str>>,
}

#[derive(Debug)]
struct Inner {
    log: SegmentLog,
    cursors: BTreeMap<String, u64>,
    /// Cursors moved since they were last written out.
    dirty: bool,
}

/// What opening found on disk.
#[derive(Debug, Default)]
pub struct Opened {
    /// Damage skipped over.
    pub recovery: Recovery,
    /// Records waiting for at least one exporter (replayed from their cursors).
    pub backlog_records: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Cursors found, by exporter name.
    pub cursors: BTreeMap<String, u64>,
}

/// One signal's queue on disk.
#[derive(Debug)]
pub struct DurableQueue {
    signal: Signal,
    dir: PathBuf,
    capacity: usize,
    max_items: u32,
    inner: Mutex<Inner>,
    /// Sequence number after the last synced record: what exporters may read.
    head: watch::Sender<u64>,
    synced: watch::Sender<Synced>,
    sync_wanted: Arc<Notify>,
    /// Serialises writers of the cursor file.
    persist: Mutex<()>,
    /// Records found damaged (on opening or reading back).
    lost: Counter,
}

fn record_items(record: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(record.get(..4)?.try_into().ok()?))
}

impl DurableQueue {
    /// Opens (or creates) the queue in `dir` and starts its sync and cursor tasks; needs a
    /// Tokio runtime. A damaged log still opens: what was skipped is in [`Opened::recovery`]
    /// and added to `lost`, as is any record found damaged later.
    pub fn open(
        dir: &Path,
        signal: Signal,
        capacity: usize,
        segment_bytes: usize,
        max_items: u32,
        lost: Counter,
    ) -> io::Result<(Arc<Self>, Opened)> {
        std::fs::create_dir_all(dir)?;
        let (log, recovery) = SegmentLog::open(dir, segment_bytes as u64, capacity)?;
        let mut cursors = read_cursors(dir)?;
        let first = log.first_seq();
        let next = log.next_seq();
        for c in cursors.values_mut() {
            *c = (*c).clamp(first, next);
        }
        let backlog_from = cursors.values().copied().min().unwrap_or(next);
        lost.add(recovery.lost_records);
        let opened = Opened {
            recovery,
            backlog_records: next - backlog_from,
            bytes: log.bytes(),
            cursors: cursors.clone(),
        };
        let queue = Arc::new(DurableQueue {
            signal,
            dir: dir.to_path_buf(),
            capacity,
            max_items,
            inner: Mutex::new(Inner {
                log,
                cursors,
                dirty: false,
            }),
            head: watch::channel(next).0,
            synced: watch::channel(Synced {
                upto: next,
                failed: None,
            })
            .0,
            sync_wanted: Arc::new(Notify::new()),
            persist: Mutex::new(()),
            lost,
        });
        tokio::spawn(sync_task(Arc::downgrade(&queue), queue.sync_wanted.clone()));
        tokio::spawn(persist_task(Arc::downgrade(&queue)));
        Ok((queue, opened))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("durable queue lock")
    }

    /// Appends one request of `items` items; it is durable once [`DurableQueue::synced`]
    /// says so.
    pub fn append(&self, payload: &[u8], items: u32) -> Result<u64, AppendError> {
        if let Some(why) = &self.synced.borrow().failed {
            return Err(AppendError::Storage(why.to_string()));
        }
        let mut inner = self.lock();
        let used = inner.log.bytes() as usize;
        let wanted = payload.len() + 4;
        if used + wanted > self.capacity {
            return Err(QueueFull {
                used,
                capacity: self.capacity,
                wanted,
            }
            .into());
        }
        let seq = inner
            .log
            .append(&[&items.to_le_bytes(), payload])
            .map_err(|e| {
                AppendError::Storage(format!("cannot write to {}: {e}", self.dir.display()))
            })?;
        drop(inner);
        self.sync_wanted.notify_one();
        Ok(seq)
    }

    /// Waits until the record at `seq` is on disk.
    pub async fn synced(&self, seq: u64) -> Result<(), AppendError> {
        let mut rx = self.synced.subscribe();
        let state = rx
            .wait_for(|s| s.upto > seq || s.failed.is_some())
            .await
            .map_err(|_| AppendError::Storage("the durable queue closed".into()))?;
        if state.upto > seq {
            return Ok(());
        }
        Err(AppendError::Storage(
            state.failed.as_deref().unwrap_or("sync failed").to_string(),
        ))
    }

    /// Syncs what was appended; returns the sequence number everything before is durable up to.
    fn sync_once(&self) -> Result<u64, String> {
        let (target, file) = {
            let inner = self.lock();
            (inner.log.next_seq(), inner.log.sync_handle())
        };
        if target <= self.synced.borrow().upto {
            return Ok(target);
        }
        file.and_then(|f| f.sync_data())
            .map_err(|e| format!("cannot sync {}: {e}", self.dir.display()))?;
        Ok(target)
    }

    /// Writes the cursors out (atomically) if they moved.
    pub fn persist_cursors(&self) -> io::Result<()> {
        let _writer = self.persist.lock().expect("persist lock");
        let snapshot = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            inner.cursors.clone()
        };
        let result = write_cursors(&self.dir, &snapshot);
        if result.is_err() {
            self.lock().dirty = true;
        }
        result
    }

    /// Drops every cursor not in `keep` (exporters no longer configured), freeing what only
    /// they held; returns the names dropped.
    pub fn retain_cursors(&self, keep: &[&str]) -> Vec<String> {
        let mut inner = self.lock();
        let mut dropped = Vec::new();
        inner.cursors.retain(|name, _| {
            let stays = keep.contains(&name.as_str());
            if !stays {
                dropped.push(name.clone());
            }
            stays
        });
        if dropped.is_empty() {
            return dropped;
        }
        inner.dirty = true;
        self.release(&mut inner);
        drop(inner);
        self.persist_or_log("");
        dropped
    }

    /// Saves the cursors now, logging a failure (the periodic task retries).
    fn persist_or_log(&self, cursor: &str) {
        if let Err(e) = self.persist_cursors() {
            tracing::error!(signal = %self.signal, cursor, "cannot save cursors: {e}");
        }
    }

    fn release(&self, inner: &mut Inner) {
        let next = inner.log.next_seq();
        let min = inner.cursors.values().copied().min().unwrap_or(next);
        if let Err(e) = inner.log.release_before(min) {
            tracing::warn!(signal = %self.signal, "cannot delete exported segments: {e}");
        }
    }

    fn lost(&self, seq: u64, why: &str) {
        self.lost.inc();
        tracing::error!(signal = %self.signal, seq, "durable queue record lost: {why}");
    }
}

impl Drop for DurableQueue {
    fn drop(&mut self) {
        // Wakes the sync task so it sees the queue is gone and ends.
        self.sync_wanted.notify_one();
    }
}

async fn sync_task(queue: Weak<DurableQueue>, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        let Some(q) = queue.upgrade() else { return };
        // fdatasync blocks; keep it off the runtime's worker threads.
        let result = tokio::task::spawn_blocking({
            let q = q.clone();
            move || q.sync_once()
        })
        .await
        .unwrap_or_else(|e| Err(format!("sync task failed: {e}")));
        match result {
            Ok(upto) => {
                q.synced.send_modify(|s| s.upto = s.upto.max(upto));
                q.head.send_modify(|h| *h = (*h).max(upto));
            }
            Err(why) => {
                tracing::error!(signal = %q.signal, "{why}; refusing new data until restart");
                q.synced.send_modify(|s| s.failed = Some(why.into()));
                return;
            }
        }
    }
}

async fn persist_task(queue: Weak<DurableQueue>) {
    let mut tick = tokio::time::interval(PERSIST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(q) = queue.upgrade() else { return };
        let r = tokio::task::spawn_blocking(move || {
            let r = q.persist_cursors();
            (q, r)
        })
        .await;
        if let Ok((q, Err(e))) = r {
            tracing::warn!(signal = %q.signal, "cannot save cursors (retrying): {e}");
        }
    }
}

fn read_cursors(dir: &Path) -> io::Result<BTreeMap<String, u64>> {
    match std::fs::read(dir.join(CURSORS)) {
        Ok(data) => serde_json::from_slice(&data).or_else(|e| {
            // A torn cursor file cannot happen (it is renamed into place), but a damaged disk
            // can do anything: replaying from the oldest record re-sends, never loses.
            tracing::error!(
                "{}: unreadable ({e}); every exporter replays from the oldest record",
                dir.join(CURSORS).display()
            );
            Ok(BTreeMap::from([(String::new(), 0)]))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

fn write_cursors(dir: &Path, cursors: &BTreeMap<String, u64>) -> io::Result<()> {
    let tmp = dir.join(CURSORS_TMP);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(cursors).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(CURSORS))?;
    std::fs::File::open(dir)?.sync_all()
}

impl Queue for DurableQueue {
    fn append(&self, batch: Arc<Batch>) -> Result<u64, QueueFull> {
        match DurableQueue::append(self, &batch.payload, batch.items) {
            Ok(seq) => Ok(seq),
            Err(AppendError::Full(f)) => Err(f),
            Err(AppendError::Storage(why)) => {
                tracing::error!(signal = %self.signal, "{why}");
                Err(QueueFull {
                    used: self.used_bytes(),
                    capacity: self.capacity,
                    wanted: batch.payload.len(),
                })
            }
        }
    }

    fn get(&self, seq: u64) -> Option<Arc<Batch>> {
        if seq >= *self.head.borrow() {
            return None;
        }
        let record = self.lock().log.locate(seq)?.read().ok()?;
        let items = record_items(&record)?;
        Some(Arc::new(Batch::new(self.signal, items, record.slice(4..))))
    }

    fn read(&self, from: u64) -> Option<(Arc<Batch>, u64)> {
        let head = *self.head.borrow();
        if from >= head {
            return None;
        }
        let located: Vec<_> = {
            let inner = self.lock();
            (from..head)
                .take(self.max_items as usize)
                .map(|seq| (seq, inner.log.locate(seq)))
                .collect()
        };
        let mut parts = Vec::new();
        let (mut items, mut bytes, mut next) = (0u32, 0usize, from);
        // Consecutive records share a segment: open each file once per read.
        let mut file: Option<(Arc<Path>, std::fs::File)> = None;
        for (seq, at) in located {
            if !parts.is_empty() && (items >= self.max_items || bytes >= MAX_READ_BYTES) {
                break;
            }
            next = seq + 1;
            // Missing records were counted when the log was opened.
            let Some(at) = at else { continue };
            if file
                .as_ref()
                .is_none_or(|(p, _)| !Arc::ptr_eq(p, at.path()))
            {
                match std::fs::File::open(at.path()) {
                    Ok(f) => file = Some((at.path().clone(), f)),
                    Err(e) => {
                        self.lost(seq, &e.to_string());
                        continue;
                    }
                }
            }
            let (_, f) = file.as_ref().expect("opened above");
            let record = match at.read_from(f) {
                Ok(r) => r,
                Err(e) => {
                    self.lost(seq, &e.to_string());
                    continue;
                }
            };
            let Some(n) = record_items(&record) else {
                self.lost(seq, "record too short");
                continue;
            };
            items = items.saturating_add(n);
            bytes += record.len() - 4;
            parts.push(record.slice(4..));
        }
        Some((
            Arc::new(Batch::new(self.signal, items, concat(parts, bytes))),
            next,
        ))
    }

    fn open_cursor(&self, name: &str) -> u64 {
        let (at, created) = {
            let mut inner = self.lock();
            let next = inner.log.next_seq();
            match inner.cursors.get(name) {
                Some(c) => (*c, false),
                None => {
                    inner.cursors.insert(name.to_string(), next);
                    inner.dirty = true;
                    (next, true)
                }
            }
        };
        // A new cursor is written out at once: if the daemon crashed before the periodic write,
        // records appended meanwhile would be replayed to nobody.
        if created {
            self.persist_or_log(name);
        }
        at
    }

    fn commit(&self, name: &str, next: u64) {
        let mut inner = self.lock();
        if let Some(c) = inner.cursors.get_mut(name)
            && next > *c
        {
            *c = next;
            inner.dirty = true;
        }
        self.release(&mut inner);
    }

    fn close_cursor(&self, name: &str) {
        let mut inner = self.lock();
        if inner.cursors.remove(name).is_some() {
            inner.dirty = true;
        }
        self.release(&mut inner);
        drop(inner);
        self.persist_or_log(name);
    }

    fn cursor(&self, name: &str) -> Option<u64> {
        self.lock().cursors.get(name).copied()
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    fn used_bytes(&self) -> usize {
        self.lock().log.bytes() as usize
    }

    fn lags(&self) -> Vec<(String, Lag)> {
        let inner = self.lock();
        let next = inner.log.next_seq();
        inner
            .cursors
            .iter()
            .map(|(name, c)| {
                let lag = Lag {
                    records: next.saturating_sub(*c),
                    // Counting items or dating records would mean reading them from disk.
                    items: None,
                    bytes: inner.log.bytes_from(*c),
                    oldest: None,
                };
                (name.clone(), lag)
            })
            .collect()
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &Path, capacity: usize) -> (Arc<DurableQueue>, Opened) {
        DurableQueue::open(dir, Signal::Traces, capacity, 4096, 10, Counter::default()).unwrap()
    }

    async fn put(q: &DurableQueue, payload: &[u8], items: u32) -> u64 {
        let seq = q.append(payload, items).unwrap();
        q.synced(seq).await.unwrap();
        seq
    }

    #[tokio::test]
    async fn acknowledged_records_are_read_back_batched_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (q, opened) = open(dir.path(), 1 << 20).await;
        assert_eq!(opened.backlog_records, 0);
        assert_eq!(q.open_cursor("a"), 0);
        assert_eq!(q.open_cursor("b"), 0);
        for i in 0..5u8 {
            put(&q, &[i; 3], 4).await;
        }
        assert_eq!(*q.head().borrow(), 5, "synced records are visible");
        // 10 items per read at most: records 0..3 (12 items) stop after the third.
        let (b, next) = q.read(0).unwrap();
        assert_eq!((b.items, next), (12, 3));
        assert_eq!(&b.payload[..], &[0, 0, 0, 1, 1, 1, 2, 2, 2]);
        q.commit("a", next);
        q.commit("b", 1);
        q.persist_cursors().unwrap();
        drop(q);

        let (q, opened) = open(dir.path(), 1 << 20).await;
        assert_eq!(opened.backlog_records, 4, "from b's cursor");
        assert_eq!(q.open_cursor("a"), 3);
        assert_eq!(q.open_cursor("b"), 1);
        let (b, next) = q.read(3).unwrap();
        assert_eq!(
            (b.items, next, &b.payload[..]),
            (8, 5, &[3, 3, 3, 4, 4, 4][..])
        );
        assert!(q.read(5).is_none());
        assert_eq!(put(&q, b"x", 1).await, 5, "numbering continues");
    }

    #[tokio::test]
    async fn budget_pushes_back_until_exported_segments_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = open(dir.path(), 3 * 4096).await;
        q.open_cursor("slow");
        let big = vec![7u8; 2000];
        let mut seqs = vec![];
        loop {
            match q.append(&big, 1) {
                Ok(s) => seqs.push(s),
                Err(AppendError::Full(f)) => {
                    assert!(f.used + f.wanted > f.capacity);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        q.synced(*seqs.last().unwrap()).await.unwrap();
        assert!(seqs.len() >= 4, "{seqs:?}");
        let used = q.used_bytes();
        q.commit("slow", *seqs.last().unwrap() + 1);
        assert!(q.used_bytes() < used, "whole segments freed");
        q.append(&big, 1).unwrap();
    }

    #[tokio::test]
    async fn each_cursor_knows_the_records_and_bytes_it_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        // 4 KiB segments: the records span several.
        let (q, _) = open(dir.path(), 1 << 20).await;
        q.open_cursor("fast");
        q.open_cursor("slow");
        for _ in 0..10 {
            put(&q, &[7u8; 1000], 1).await;
        }
        Queue::commit(&*q, "fast", 8);
        Queue::commit(&*q, "slow", 3);
        let lags: BTreeMap<String, Lag> = Queue::lags(&*q).into_iter().collect();
        assert_eq!((lags["fast"].records, lags["slow"].records), (2, 7));
        assert!(
            lags["fast"].bytes >= 2000 && lags["fast"].bytes < 2200,
            "{:?}",
            lags["fast"]
        );
        assert!(
            lags["slow"].bytes >= 7000 && lags["slow"].bytes < 7400,
            "{:?}",
            lags["slow"]
        );
        assert_eq!((lags["slow"].items, lags["slow"].oldest), (None, None));
    }

    #[tokio::test]
    async fn removed_cursors_release_and_new_cursors_start_at_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = open(dir.path(), 1 << 20).await;
        q.open_cursor("old");
        for _ in 0..3 {
            put(&q, b"abc", 1).await;
        }
        assert_eq!(q.open_cursor("new"), 3);
        assert_eq!(q.retain_cursors(&["new"]), vec!["old".to_string()]);
        drop(q);
        let (_, opened) = open(dir.path(), 1 << 20).await;
        assert_eq!(
            opened.cursors,
            BTreeMap::from([("new".to_string(), 3)]),
            "the removal was saved"
        );
        assert_eq!(opened.backlog_records, 0);
    }

    #[tokio::test]
    async fn a_record_damaged_after_start_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = open(dir.path(), 1 << 20).await;
        q.open_cursor("a");
        for i in 0..3u8 {
            put(&q, &[i; 8], 1).await;
        }
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut data = std::fs::read(&seg).unwrap();
        // Second record: header 16 + 4 + 8 bytes per record; flip a payload byte.
        data[28 + 16 + 6] ^= 0xff;
        std::fs::write(&seg, &data).unwrap();
        let (b, next) = q.read(0).unwrap();
        assert_eq!((b.items, next), (2, 3));
        assert_eq!(&b.payload[..], &[[0u8; 8], [2u8; 8]].concat()[..]);
        assert_eq!(q.lost.get(), 1);
    }
}
