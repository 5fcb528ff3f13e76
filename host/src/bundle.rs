//! Bundles: one executable carrying the daemon, the plugins it needs precompiled for its
//! engine, and optionally a default config, so it runs with no plugin directory and no compile
//! step at start.
//!
//! A bundle is the `ferry` executable with a payload appended:
//!
//! ```text
//! [executable][payload][payload length: u64 LE][SHA-256 of payload: 32 bytes]["FERRYBN1"]
//! payload = [manifest length: u32 LE][manifest JSON][blobs]
//! ```
//!
//! The manifest names the engine the code was compiled for; a bundle whose payload does not
//! match its checksum, or whose engine is not the running one, is refused before anything is
//! loaded.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::plugin::PluginEngine;
use crate::plugin::registry::PluginSource;

/// Last bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"FERRYBN1";
/// The trailer: payload length, payload checksum, magic.
const TRAILER: usize = 8 + 32 + 8;
/// Version of the payload layout.
const FORMAT: u32 = 1;

/// Why a bundle cannot be made, read or run.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The payload does not match its checksum or cannot be parsed.
    #[error(
        "{path}: the bundle is corrupt ({what}); rebuild it with `ferry bundle`, do not edit it"
    )]
    Corrupt {
        /// The bundle.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The code was compiled for another engine than the one running it.
    #[error(
        "{path}: the bundle's plugins were compiled for engine {bundle}, but this ferry runs \
         engine {running}; rebuild the bundle with this ferry (`ferry bundle`)"
    )]
    Engine {
        /// The bundle.
        path: PathBuf,
        /// Its engine.
        bundle: String,
        /// The running one.
        running: String,
    },
    /// A plugin to bundle could not be found or compiled.
    #[error("plugin {name}: {reason}")]
    Plugin {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// What a bundle holds, as stored in it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Payload layout version.
    pub format: u32,
    /// The `ferry` version that made it.
    pub ferry: String,
    /// The engine the plugins were compiled for (wasmtime version and settings).
    pub engine: String,
    /// A default config, used by `ferry run` without `--config`.
    pub config: Option<String>,
    /// The plugins.
    pub plugins: Vec<Entry>,
}

/// One bundled plugin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Plugin name (what configs refer to).
    pub name: String,
    /// The component, as a byte range of the blobs.
    pub wasm: Range<u64>,
    /// Its machine code for `engine`, as a byte range of the blobs.
    pub code: Range<u64>,
}

/// A bundle read from an executable.
#[derive(Debug)]
pub struct Bundle {
    /// Where it was read from.
    pub path: PathBuf,
    /// What it holds.
    pub manifest: Manifest,
    /// Size of the executable part.
    pub runtime_len: u64,
    blobs: Vec<u8>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Bundle {
    /// Reads the bundle appended to `path`; `None` when it is a plain executable.
    pub fn read(path: &Path) -> Result<Option<Bundle>, BundleError> {
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        let len = f.metadata().map_err(io(path))?.len();
        if len < TRAILER as u64 {
            return Ok(None);
        }
        let mut trailer = [0u8; TRAILER];
        f.seek(SeekFrom::End(-(TRAILER as i64))).map_err(io(path))?;
        f.read_exact(&mut trailer).map_err(io(path))?;
        if &trailer[40..] != MAGIC {
            return Ok(None);
        }
        let corrupt = |what: String| BundleError::Corrupt {
            path: path.to_path_buf(),
            what,
        };
        let payload_len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
        let runtime_len = (len - TRAILER as u64)
            .checked_sub(payload_len)
            .ok_or_else(|| corrupt(format!("payload length {payload_len} exceeds the file")))?;
        let mut payload = vec![0u8; payload_len as usize];
        f.seek(SeekFrom::Start(runtime_len)).map_err(io(path))?;
        f.read_exact(&mut payload).map_err(io(path))?;
        if Sha256::digest(&payload).as_slice() != &trailer[8..40] {
            return Err(corrupt("checksum mismatch".into()));
        }
        let manifest_len = payload
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt("no manifest".into()))?;
        let manifest_end = 4usize
            .checked_add(manifest_len)
            .filter(|e| *e <= payload.len())
            .ok_or_else(|| corrupt("manifest length exceeds the payload".into()))?;
        let manifest: Manifest = serde_json::from_slice(&payload[4..manifest_end])
            .map_err(|e| corrupt(format!("manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(corrupt(format!(
                "payload format {} (this ferry reads {FORMAT})",
                manifest.format
            )));
        }
        let blobs = payload.split_off(manifest_end);
        for p in &manifest.plugins {
            for r in [&p.wasm, &p.code] {
                if r.start > r.end || r.end > blobs.len() as u64 {
                    return Err(corrupt(format!(
                        "plugin {} lies outside the payload",
                        p.name
                    )));
                }
            }
        }
        Ok(Some(Bundle {
            path: path.to_path_buf(),
            manifest,
            runtime_len,
            blobs,
        }))
    }

    /// Refuses a bundle compiled for another engine than this build's.
    pub fn check_engine(&self) -> Result<(), BundleError> {
        let running = crate::plugin::engine::engine_key();
        if self.manifest.engine != running {
            return Err(BundleError::Engine {
                path: self.path.clone(),
                bundle: self.manifest.engine.clone(),
                running,
            });
        }
        Ok(())
    }

    fn blob(&self, r: &Range<u64>) -> &[u8] {
        &self.blobs[r.start as usize..r.end as usize]
    }

    /// Each plugin: (name, component, machine code).
    pub fn plugins(&self) -> impl Iterator<Item = (&str, &[u8], &[u8])> {
        self.manifest
            .plugins
            .iter()
            .map(|p| (p.name.as_str(), self.blob(&p.wasm), self.blob(&p.code)))
    }

    /// Writes `runtime` (an executable) with this bundle's contents appended to `out`.
    pub fn write(&self, runtime: &[u8], out: &Path) -> Result<(), BundleError> {
        let manifest = serde_json::to_vec(&self.manifest).expect("manifest serialises");
        let mut payload = Vec::with_capacity(4 + manifest.len() + self.blobs.len());
        payload.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        payload.extend_from_slice(&manifest);
        payload.extend_from_slice(&self.blobs);
        let mut file = Vec::with_capacity(runtime.len() + payload.len() + TRAILER);
        file.extend_from_slice(runtime);
        file.extend_from_slice(&payload);
        file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(MAGIC);
        let tmp = out.with_extension("partial");
        std::fs::write(&tmp, &file).map_err(io(&tmp))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, out).map_err(io(out))
    }

    /// A new bundle of `plugins`, each compiled now by `engine`, with an optional default
    /// config.
    pub fn build(
        engine: &PluginEngine,
        plugins: &[PluginSource],
        config: Option<String>,
    ) -> Result<Bundle, BundleError> {
        let mut blobs = Vec::new();
        let mut entries = Vec::new();
        let mut push = |bytes: &[u8]| {
            let start = blobs.len() as u64;
            blobs.extend_from_slice(bytes);
            start..blobs.len() as u64
        };
        for p in plugins {
            if entries.iter().any(|e: &Entry| e.name == p.name) {
                return Err(BundleError::Plugin {
                    name: p.name.clone(),
                    reason: "named twice".into(),
                });
            }
            let code = engine
                .precompile(&p.wasm)
                .map_err(|e| BundleError::Plugin {
                    name: p.name.clone(),
                    reason: e.to_string(),
                })?;
            let wasm = push(&p.wasm);
            let code = push(&code);
            entries.push(Entry {
                name: p.name.clone(),
                wasm,
                code,
            });
        }
        Ok(Bundle {
            path: PathBuf::new(),
            manifest: Manifest {
                format: FORMAT,
                ferry: env!("CARGO_PKG_VERSION").into(),
                engine: engine.engine_key().into(),
                config,
                plugins: entries,
            },
            runtime_len: 0,
            blobs,
        })
    }
}

/// The executable part of `path` (the whole file, or what precedes a bundle's payload), so a
/// bundle can be made from a bundle.
pub fn runtime_of(path: &Path) -> Result<Vec<u8>, BundleError> {
    let mut bytes = std::fs::read(path).map_err(io(path))?;
    if let Some(b) = Bundle::read(path)? {
        bytes.truncate(b.runtime_len as usize);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::registry;

    fn sample(dir: &Path) -> PathBuf {
        let engine = PluginEngine::builder().build().unwrap();
        let plugins = [registry::find("blackhole", None).unwrap()];
        let bundle = Bundle::build(&engine, &plugins, Some("# cfg".into())).unwrap();
        let out = dir.join("b");
        bundle.write(b"#!runtime", &out).unwrap();
        out
    }

    #[test]
    fn a_bundle_reads_back_and_a_plain_file_is_no_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let out = sample(dir.path());
        let b = Bundle::read(&out).unwrap().unwrap();
        assert_eq!(b.runtime_len, 9);
        assert_eq!(b.manifest.config.as_deref(), Some("# cfg"));
        b.check_engine().unwrap();
        let (name, wasm, code) = b.plugins().next().unwrap();
        assert_eq!(name, "blackhole");
        assert_eq!(wasm, &registry::find("blackhole", None).unwrap().wasm[..]);
        assert!(!code.is_empty());
        assert_eq!(runtime_of(&out).unwrap(), b"#!runtime");
        std::fs::write(dir.path().join("plain"), b"#!just a program").unwrap();
        assert!(Bundle::read(&dir.path().join("plain")).unwrap().is_none());
    }

    #[test]
    fn a_flipped_byte_or_a_cut_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let out = sample(dir.path());
        let good = std::fs::read(&out).unwrap();
        let mut bad = good.clone();
        bad[100] ^= 1;
        std::fs::write(&out, &bad).unwrap();
        let err = Bundle::read(&out).unwrap_err().to_string();
        assert!(err.contains("corrupt (checksum mismatch)"), "{err}");
        let mut cut = good[..20].to_vec();
        cut.extend_from_slice(&good[good.len() - TRAILER..]);
        std::fs::write(&out, &cut).unwrap();
        let err = Bundle::read(&out).unwrap_err().to_string();
        assert!(err.contains("exceeds the file"), "{err}");
    }
}
