//! The decisions of a `tail_sample` in an exporter with a durable queue, kept on disk so that
//! they outlive a crash. A trace can be decided and its first part exported (the cursor past
//! it) while a later batch holding more of its spans is not yet answered; after a restart that
//! batch is replayed, and its spans must follow the decision already made, not a new one made
//! on part of the trace.
//!
//! The file is a sequence of 17-byte records (trace id, then 0 = keep or 1 = drop), appended
//! as decisions are made. A batch is answered only once every record written before is
//! synced, so a cursor never moves past a batch whose decisions could be lost. A torn record
//! at the end (a crash mid-write) is ignored. When the file holds many more records than the
//! sampler remembers, it is rewritten with only those (write, sync, rename).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::held::TraceId;
use super::policy::Decision;

const RECORD: usize = 17;

/// An open decisions file.
pub struct Journal {
    path: PathBuf,
    file: Mutex<Appender>,
    /// Bytes known to be on disk: a sync is needed only when `written` is past it.
    synced: Mutex<u64>,
}

struct Appender {
    file: File,
    /// Bytes written since the file was opened or rewritten.
    written: u64,
    /// Records in the file.
    records: usize,
}

fn encode(out: &mut Vec<u8>, id: &TraceId, d: Decision) {
    out.extend_from_slice(id);
    out.push(match d {
        Decision::Keep => 0,
        Decision::Drop => 1,
    });
}

impl Journal {
    /// Opens (or creates) the file at `path`, creating its directory.
    pub fn open(path: &Path) -> io::Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(Appender {
                file,
                written: 0,
                records: 0,
            }),
            synced: Mutex::new(0),
        })
    }

    fn appender(&self) -> std::sync::MutexGuard<'_, Appender> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decisions in the file, oldest first, at most the `keep` most recent.
    pub fn read(&self, keep: usize) -> io::Result<Vec<(TraceId, Decision)>> {
        let mut bytes = Vec::new();
        File::open(&self.path)?.read_to_end(&mut bytes)?;
        let whole = bytes.len() / RECORD;
        let mut out = Vec::with_capacity(whole.min(keep));
        for r in bytes.chunks_exact(RECORD).skip(whole.saturating_sub(keep)) {
            let id: TraceId = r[..16].try_into().expect("16 bytes");
            let d = match r[16] {
                0 => Decision::Keep,
                1 => Decision::Drop,
                // Not written by this format: the file is damaged from here on.
                _ => break,
            };
            out.push((id, d));
        }
        let mut a = self.appender();
        a.records = whole;
        if bytes.len() % RECORD != 0 {
            // A torn last record: later records must start on a record boundary.
            drop(a);
            self.rewrite(out.iter().map(|(id, d)| (id, *d)))?;
        }
        Ok(out)
    }

    /// Appends decisions (in page cache, so they survive the process; [`Journal::sync`] makes
    /// them survive the machine). Returns the records the file holds now.
    pub fn append<'a>(
        &self,
        decisions: impl IntoIterator<Item = (&'a TraceId, Decision)>,
    ) -> io::Result<usize> {
        let mut buf = Vec::new();
        let mut n = 0;
        for (id, d) in decisions {
            encode(&mut buf, id, d);
            n += 1;
        }
        let mut a = self.appender();
        if n > 0 {
            a.file.write_all(&buf)?;
            a.written += buf.len() as u64;
            a.records += n;
        }
        Ok(a.records)
    }

    /// Makes everything appended so far durable; callers that come while a sync runs share
    /// the next one.
    pub fn sync(&self) -> io::Result<()> {
        let (target, file) = {
            let a = self.appender();
            (a.written, a.file.try_clone()?)
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= target {
            return Ok(());
        }
        file.sync_data()?;
        *synced = target;
        Ok(())
    }

    /// Replaces the file's records with `decisions` (oldest first), atomically.
    pub fn rewrite<'a>(
        &self,
        decisions: impl IntoIterator<Item = (&'a TraceId, Decision)>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        for (id, d) in decisions {
            encode(&mut buf, id, d);
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        drop(f);
        let mut a = self.appender();
        std::fs::rename(&tmp, &self.path)?;
        a.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        a.records = buf.len() / RECORD;
        // The new file is synced whole; `written` keeps growing from here.
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = a.written;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        [n; 16]
    }

    #[test]
    fn decisions_come_back_after_a_reopen_the_most_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("tail.decisions");
        let j = Journal::open(&path).unwrap();
        assert!(j.read(10).unwrap().is_empty());
        let n = j
            .append([(&id(1), Decision::Keep), (&id(2), Decision::Drop)])
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(j.append([(&id(3), Decision::Keep)]).unwrap(), 3);
        j.sync().unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(
            j.read(2).unwrap(),
            vec![(id(2), Decision::Drop), (id(3), Decision::Keep)]
        );
        assert_eq!(j.append([(&id(4), Decision::Drop)]).unwrap(), 4);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_appends_start_on_a_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.decisions");
        let j = Journal::open(&path).unwrap();
        j.append([(&id(1), Decision::Keep)]).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9; 5]).unwrap();
        drop(f);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.read(10).unwrap(), vec![(id(1), Decision::Keep)]);
        j.append([(&id(2), Decision::Drop)]).unwrap();
        assert_eq!(
            j.read(10).unwrap(),
            vec![(id(1), Decision::Keep), (id(2), Decision::Drop)]
        );
    }

    #[test]
    fn a_rewrite_keeps_only_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.decisions");
        let j = Journal::open(&path).unwrap();
        for n in 0..10 {
            j.append([(&id(n), Decision::Keep)]).unwrap();
        }
        j.rewrite([(&id(8), Decision::Keep), (&id(9), Decision::Drop)])
            .unwrap();
        assert_eq!(j.append([(&id(10), Decision::Keep)]).unwrap(), 3);
        j.sync().unwrap();
        assert_eq!(j.read(100).unwrap().len(), 3);
        assert!(!path.with_extension("tmp").exists());
    }
}
