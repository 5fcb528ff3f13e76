//! Size-rotated JSON-lines files, one per signal, in one directory.
//!
//! The current file is `SIGNAL.jsonl`; on rotation it is renamed to
//! `SIGNAL-<unix nanoseconds, 20 digits>.jsonl`, so rotated files sort oldest first by name.
//! A line is written whole or not at all: a failed write is cut back off the file, so a
//! retried batch never leaves half a line behind.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a line was not written.
#[derive(Debug)]
pub enum WriteError {
    /// The line alone is larger than a whole file may be.
    TooLarge {
        /// Line size with its newline.
        line: u64,
        /// `max_file_bytes`.
        max: u64,
    },
    /// The filesystem refused; the message says what and where.
    Io(String),
}

/// The files of one exporter.
pub struct Files {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    fsync: bool,
}

fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> WriteError {
    WriteError::Io(format!("{what} {}: {e}", path.display()))
}

impl Files {
    /// Files in `dir` (created when missing).
    pub fn new(dir: PathBuf, max_file_bytes: u64, max_files: usize, fsync: bool) -> Files {
        Files {
            dir,
            max_file_bytes,
            max_files,
            fsync,
        }
    }

    fn current(&self, signal: &str) -> PathBuf {
        self.dir.join(format!("{signal}.jsonl"))
    }

    /// Appends `json` and a newline to `signal`'s file, rotating first if it would outgrow
    /// `max_file_bytes`.
    pub fn write(&mut self, signal: &str, json: &[u8]) -> Result<(), WriteError> {
        let line = json.len() as u64 + 1;
        if line > self.max_file_bytes {
            return Err(WriteError::TooLarge {
                line,
                max: self.max_file_bytes,
            });
        }
        let path = self.current(signal);
        let mut file = self.open(&path)?;
        let len = file
            .metadata()
            .map_err(|e| io("reading the size of", &path, e))?
            .len();
        if len > 0 && len + line > self.max_file_bytes {
            drop(file);
            self.rotate(signal, &path)?;
            file = self.open(&path)?;
            return self.append(&mut file, &path, 0, json);
        }
        self.append(&mut file, &path, len, json)
    }

    fn open(&self, path: &std::path::Path) -> Result<File, WriteError> {
        let open = || OpenOptions::new().create(true).append(true).open(path);
        match open() {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).map_err(|e| io("creating", &self.dir, e))?;
                open().map_err(|e| io("opening", path, e))
            }
            Err(e) => Err(io("opening", path, e)),
        }
    }

    fn append(
        &self,
        file: &mut File,
        path: &std::path::Path,
        len: u64,
        json: &[u8],
    ) -> Result<(), WriteError> {
        let mut buf = Vec::with_capacity(json.len() + 1);
        buf.extend_from_slice(json);
        buf.push(b'\n');
        let result = file
            .write_all(&buf)
            .and_then(|_| if self.fsync { file.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            // Best effort: a half-written line would corrupt the file for every reader.
            let _ = file.set_len(len);
            return Err(io("writing", path, e));
        }
        Ok(())
    }

    fn rotate(&self, signal: &str, path: &std::path::Path) -> Result<(), WriteError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut rotated = self.dir.join(format!("{signal}-{nanos:020}.jsonl"));
        let mut n = nanos;
        while rotated.exists() {
            n += 1;
            rotated = self.dir.join(format!("{signal}-{n:020}.jsonl"));
        }
        fs::rename(path, &rotated).map_err(|e| io("rotating", path, e))?;
        self.prune(signal)
    }

    /// The rotated files of `signal`, oldest first.
    pub fn rotated(&self, signal: &str) -> Result<Vec<PathBuf>, WriteError> {
        let prefix = format!("{signal}-");
        let mut out: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| io("listing", &self.dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn prune(&self, signal: &str) -> Result<(), WriteError> {
        if self.max_files == 0 {
            return Ok(());
        }
        let rotated = self.rotated(signal)?;
        let excess = rotated.len().saturating_sub(self.max_files);
        for old in &rotated[..excess] {
            fs::remove_file(old).map_err(|e| io("removing", old, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &std::path::Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("out");
        let mut files = Files::new(sub.clone(), 100, 2, false);
        // 30-byte lines: three fit in 100 bytes, the fourth rotates.
        for i in 0..10 {
            files
                .write(
                    "traces",
                    format!("{{\"n\":{i:02},\"pad\":\"xxxxxxxxxxxx\"}}").as_bytes(),
                )
                .unwrap();
        }
        let rotated = files.rotated("traces").unwrap();
        assert_eq!(rotated.len(), 2, "retention keeps two rotated files");
        let current = lines(&sub.join("traces.jsonl"));
        assert_eq!(
            current.len(),
            1,
            "10 lines = 3 rotations of 3 lines, plus one"
        );
        assert!(current[0].contains("\"n\":09"));
        let kept: Vec<String> = rotated.iter().flat_map(|p| lines(p)).collect();
        assert_eq!(kept.len(), 6);
        assert!(
            kept[0].contains("\"n\":03") && kept[5].contains("\"n\":08"),
            "{kept:?}"
        );
        for p in rotated.iter().chain([&sub.join("traces.jsonl")]) {
            assert!(fs::metadata(p).unwrap().len() <= 100);
        }
        // Other signals have their own files.
        files.write("logs", b"{}").unwrap();
        assert_eq!(lines(&sub.join("logs.jsonl")), vec!["{}"]);
        assert_eq!(files.rotated("logs").unwrap().len(), 0);
    }

    #[test]
    fn a_line_larger_than_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::new(dir.path().to_path_buf(), 10, 2, false);
        assert!(matches!(
            files.write("traces", b"0123456789"),
            Err(WriteError::TooLarge { line: 11, max: 10 })
        ));
        assert!(!dir.path().join("traces.jsonl").exists());
    }

    #[test]
    fn an_unusable_directory_is_an_io_error_until_it_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("out");
        fs::write(&sub, "a file where the directory should be").unwrap();
        let mut files = Files::new(sub.clone(), 1000, 2, true);
        assert!(matches!(files.write("logs", b"{}"), Err(WriteError::Io(_))));
        fs::remove_file(&sub).unwrap();
        files.write("logs", b"{}").unwrap();
        assert_eq!(lines(&sub.join("logs.jsonl")), vec!["{}"]);
    }
}
