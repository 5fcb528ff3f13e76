//! An append-only log of records on disk, in numbered segment files: the storage under the
//! durable queue ([`super::durable`]).
//!
//! Written here rather than taken from a crate: the WAL crates looked at either warn against
//! production use (okaywal), fsync every append with no group commit, or refuse to open a log
//! with a corrupt completed segment (walogs), where Ferry must start anyway, skip what is
//! damaged and count the loss.
//!
//! A segment is `{first_seq:020}.seg`; each record is framed as
//! `len: u32 LE | crc32: u32 LE | seq: u64 LE | payload`, the CRC covering `seq` and `payload`.
//! Appends are plain writes; [`SegmentLog::sync`] makes everything appended so far durable
//! with one `fdatasync`, so callers group many appends under one sync (group commit).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

const HEADER: usize = 16;
const EXTENSION: &str = "seg";

/// What opening a log found damaged and left behind; a log always opens.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records known to be lost (sequence numbers skipped over).
    pub lost_records: u64,
    /// Bytes that could not be read as records (a torn tail, a corrupt stretch).
    pub lost_bytes: u64,
    /// One line per problem, for the log.
    pub problems: Vec<String>,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: Arc<Path>,
    /// Byte offset of each record, in sequence order from `first_seq`.
    offsets: Vec<u64>,
    bytes: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.offsets.len() as u64
    }
}

/// The position of one record on disk, from [`SegmentLog::locate`].
#[derive(Debug, Clone)]
pub struct RecordAt {
    seq: u64,
    path: Arc<Path>,
    offset: u64,
}

impl RecordAt {
    /// The segment file holding the record (shared by every record of the segment).
    pub fn path(&self) -> &Arc<Path> {
        &self.path
    }

    /// Reads the record and checks its checksum. A segment file is only deleted once every
    /// reader is past it, so a located record stays readable.
    pub fn read(&self) -> io::Result<Bytes> {
        self.read_from(&File::open(&self.path)?)
    }

    /// Like [`RecordAt::read`], from the segment file already open (see [`RecordAt::path`]).
    pub fn read_from(&self, file: &File) -> io::Result<Bytes> {
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, self.offset)?;
        let size = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let mut payload = vec![0u8; size];
        file.read_exact_at(&mut payload, self.offset + HEADER as u64)?;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if checksum(self.seq, &[&payload]) != crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record {} in {} fails its checksum",
                    self.seq,
                    self.path.display()
                ),
            ));
        }
        Ok(payload.into())
    }
}

/// The log. Not thread-safe by itself: the durable queue owns it behind its lock.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    max_record: usize,
    segments: Vec<Segment>,
    file: File,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{EXTENSION}"))
}

/// The CRC of a record: its sequence number and its payload, given in `parts`.
fn checksum(seq: u64, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Reads the records of one segment file; stops at the first record that is cut short, fails
/// its checksum or breaks the sequence. Returns the offsets read and where reading stopped.
fn scan(path: &Path, first_seq: u64, max_record: usize) -> io::Result<(Vec<u64>, u64, u64)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut data = Vec::with_capacity(len as usize);
    file.read_to_end(&mut data)?;
    let mut offsets = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= HEADER {
        let h = &data[at..at + HEADER];
        let size = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let expected = first_seq + offsets.len() as u64;
        if size > max_record || data.len() - at - HEADER < size || seq != expected {
            break;
        }
        let payload = &data[at + HEADER..at + HEADER + size];
        if checksum(seq, &[payload]) != crc {
            break;
        }
        offsets.push(at as u64);
        at += HEADER + size;
    }
    Ok((offsets, at as u64, len))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, rolling to a new segment past `segment_bytes`;
    /// records over `max_record` bytes are refused on append and treated as damage on open.
    pub fn open(dir: &Path, segment_bytes: u64, max_record: usize) -> io::Result<(Self, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let mut recovery = Recovery::default();
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let parsed = (path.extension().and_then(|e| e.to_str()) == Some(EXTENSION))
                .then(|| path.file_stem()?.to_str()?.parse::<u64>().ok())
                .flatten();
            match parsed {
                Some(first) => firsts.push(first),
                None => recovery
                    .problems
                    .push(format!("ignoring {}: not a segment", path.display())),
            }
        }
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(firsts.len());
        for (i, &first_seq) in firsts.iter().enumerate() {
            let path = segment_path(dir, first_seq);
            if let Some(prev) = segments.last()
                && prev.end_seq() < first_seq
            {
                let lost = first_seq - prev.end_seq();
                recovery.lost_records += lost;
                recovery.problems.push(format!(
                    "records {}..{first_seq} are missing before {}",
                    prev.end_seq(),
                    path.display()
                ));
            }
            let (offsets, good, len) = scan(&path, first_seq, max_record)?;
            let last = i + 1 == firsts.len();
            if good < len {
                recovery.lost_bytes += len - good;
                recovery.problems.push(format!(
                    "{}: {} bytes after record {} are damaged{}",
                    path.display(),
                    len - good,
                    first_seq + offsets.len() as u64,
                    if last {
                        " (a torn tail); truncated"
                    } else {
                        "; skipped"
                    }
                ));
                if last {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(good)?;
                    f.sync_all()?;
                }
            }
            segments.push(Segment {
                first_seq,
                path: path.into(),
                offsets,
                bytes: good,
            });
        }
        let file = match segments.last() {
            Some(s) => OpenOptions::new().append(true).open(&s.path)?,
            None => {
                let path = segment_path(dir, 0);
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                sync_dir(dir)?;
                segments.push(Segment {
                    first_seq: 0,
                    path: path.into(),
                    offsets: Vec::new(),
                    bytes: 0,
                });
                file
            }
        };
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            max_record,
            segments,
            file,
        };
        Ok((log, recovery))
    }

    /// Sequence number of the oldest record still on disk.
    pub fn first_seq(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| !s.offsets.is_empty())
            .map_or_else(|| self.next_seq(), |s| s.first_seq)
    }

    /// Sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end_seq)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Bytes of the records from `seq` on (what a reader at `seq` has yet to read).
    pub fn bytes_from(&self, seq: u64) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.end_seq() > seq)
            .map(|s| match seq.checked_sub(s.first_seq) {
                Some(i) => s.bytes - s.offsets[i as usize],
                None => s.bytes,
            })
            .sum()
    }

    /// Appends one record made of `parts` back to back (not yet durable: see
    /// [`SegmentLog::sync`]); returns its sequence number. A failed write (a full disk) leaves
    /// the log as it was, so later records are not stranded behind a torn one.
    pub fn append(&mut self, parts: &[&[u8]]) -> io::Result<u64> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size > self.max_record {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record of {size} bytes exceeds the limit of {}",
                    self.max_record
                ),
            ));
        }
        let current = self.segments.last().expect("a log always has a segment");
        if current.bytes >= self.segment_bytes && !current.offsets.is_empty() {
            self.roll()?;
        }
        let seq = self.next_seq();
        let mut frame = Vec::with_capacity(HEADER + size);
        frame.extend_from_slice(&(size as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(seq, parts).to_le_bytes());
        frame.extend_from_slice(&seq.to_le_bytes());
        for p in parts {
            frame.extend_from_slice(p);
        }
        let current = self
            .segments
            .last_mut()
            .expect("a log always has a segment");
        if let Err(e) = self.file.write_all(&frame) {
            // Best effort: if even the truncation fails, reopening finds a torn record and
            // truncates it there.
            let _ = self.file.set_len(current.bytes);
            return Err(e);
        }
        current.offsets.push(current.bytes);
        current.bytes += frame.len() as u64;
        Ok(seq)
    }

    /// Makes every record appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A handle on the segment being written, to make the records appended so far durable
    /// without holding the log (earlier segments were synced when they were rolled over).
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let first_seq = self.next_seq();
        let path = segment_path(&self.dir, first_seq);
        self.file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first_seq,
            path: path.into(),
            offsets: Vec::new(),
            bytes: 0,
        });
        Ok(())
    }

    /// The record at `seq`, if it is on disk.
    pub fn read(&self, seq: u64) -> io::Result<Option<Bytes>> {
        match self.locate(seq) {
            Some(at) => at.read().map(Some),
            None => Ok(None),
        }
    }

    /// Where the record at `seq` is, so it can be read without holding the log.
    pub fn locate(&self, seq: u64) -> Option<RecordAt> {
        let segment = self
            .segments
            .iter()
            .rev()
            .find(|s| s.first_seq <= seq && seq < s.end_seq())?;
        Some(RecordAt {
            seq,
            path: segment.path.clone(),
            offset: segment.offsets[(seq - segment.first_seq) as usize],
        })
    }

    /// Deletes every segment whose records all come before `seq`; the newest segment stays, so
    /// numbering survives a restart.
    pub fn release_before(&mut self, seq: u64) -> io::Result<()> {
        let keep_from = self
            .segments
            .iter()
            .position(|s| s.end_seq() > seq)
            .unwrap_or(self.segments.len() - 1)
            .min(self.segments.len() - 1);
        for s in self.segments.drain(..keep_from) {
            std::fs::remove_file(&s.path)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn segment_files(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.to_path_buf()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        format!("record {i} ")
            .repeat(1 + i as usize % 7)
            .into_bytes()
    }

    #[test]
    fn records_survive_reopening_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rec) = SegmentLog::open(dir.path(), 256, 1 << 20).unwrap();
        assert_eq!(rec, Recovery::default());
        for i in 0..40 {
            assert_eq!(log.append(&[&payload(i)]).unwrap(), i);
        }
        log.sync().unwrap();
        assert!(log.segment_files().len() > 3, "rolls past 256 bytes");
        drop(log);
        let (mut log, rec) = SegmentLog::open(dir.path(), 256, 1 << 20).unwrap();
        assert_eq!(rec, Recovery::default());
        assert_eq!((log.first_seq(), log.next_seq()), (0, 40));
        for i in 0..40 {
            assert_eq!(log.read(i).unwrap().unwrap(), payload(i));
        }
        assert_eq!(log.append(&[b"after"]).unwrap(), 40);
        assert_eq!(log.read(40).unwrap().unwrap(), &b"after"[..]);
        assert!(log.read(41).unwrap().is_none());
    }

    #[test]
    fn a_torn_tail_is_truncated_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        for i in 0..3 {
            log.append(&[&payload(i)]).unwrap();
        }
        log.sync().unwrap();
        let last = log.segment_files().pop().unwrap();
        drop(log);
        // A crash in the middle of writing a fourth record.
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut log, rec) = SegmentLog::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(rec.lost_bytes, 7);
        assert!(rec.problems[0].contains("torn tail"), "{rec:?}");
        assert_eq!(log.next_seq(), 3);
        assert_eq!(log.append(&[b"next"]).unwrap(), 3);
        log.sync().unwrap();
        drop(log);
        let (log, rec) = SegmentLog::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(rec, Recovery::default(), "the truncation was made durable");
        assert_eq!(log.read(3).unwrap().unwrap(), &b"next"[..]);
    }

    #[test]
    fn a_corrupt_segment_is_skipped_with_its_loss_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 200, 1 << 20).unwrap();
        for i in 0..30 {
            log.append(&[&payload(i)]).unwrap();
        }
        log.sync().unwrap();
        let files = log.segment_files();
        drop(log);
        // Flip a byte in the payload of the second record of the first segment.
        let first = &files[0];
        let mut data = std::fs::read(first).unwrap();
        let size0 = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
        let at = HEADER + size0 + HEADER + 2;
        data[at] ^= 0xff;
        std::fs::write(first, &data).unwrap();
        let next_first: u64 = files[1]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();

        let (log, rec) = SegmentLog::open(dir.path(), 200, 1 << 20).unwrap();
        assert_eq!(
            rec.lost_records,
            next_first - 1,
            "records 1.. of the first segment"
        );
        assert_eq!(rec.lost_bytes as usize, data.len() - HEADER - size0);
        assert!(
            rec.problems.iter().any(|p| p.contains("skipped")),
            "{rec:?}"
        );
        assert_eq!(log.read(0).unwrap().unwrap(), payload(0));
        assert!(log.read(1).unwrap().is_none());
        for i in next_first..30 {
            assert_eq!(log.read(i).unwrap().unwrap(), payload(i));
        }
        assert_eq!(log.next_seq(), 30);
    }

    #[test]
    fn released_segments_are_deleted_and_numbering_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 100, 1 << 20).unwrap();
        for i in 0..20 {
            log.append(&[&payload(i)]).unwrap();
        }
        log.sync().unwrap();
        let before = log.bytes();
        log.release_before(20).unwrap();
        assert_eq!(log.segment_files().len(), 1, "the newest segment stays");
        assert!(log.bytes() < before);
        drop(log);
        let (mut log, rec) = SegmentLog::open(dir.path(), 100, 1 << 20).unwrap();
        assert_eq!(rec, Recovery::default());
        assert_eq!(log.next_seq(), 20);
        assert_eq!(log.append(&[b"x"]).unwrap(), 20);
        let err = log.append(&[&vec![0; (1 << 20) + 1]]).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"));
    }
}
