//! The bundle layout: an executable, then a checksummed payload of a manifest and machine code.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BundleError;
use super::probe::BuildInfo;
use crate::plugin::PluginEngine;
use crate::plugin::registry::{Origin, PluginSource};

/// Last bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"FERRYBN1";
/// The trailer: payload length, payload checksum, magic.
pub(super) const TRAILER: usize = 8 + 32 + 8;
/// Version of the payload layout.
const FORMAT: u32 = 2;

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
    /// Whether the carried executable has the compiler (it can also load a plugin directory's
    /// components) or is runtime-only.
    pub compiler: bool,
    /// The receivers a config may enable (`ferry bundle --receivers`).
    pub receivers: Vec<String>,
    /// A default config, used by `ferry run` without `--config`.
    pub config: Option<String>,
    /// Each carried plugin's name, component digest and where its code lies.
    pub plugins: Vec<Entry>,
}

/// One bundled plugin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Plugin name (what configs refer to).
    pub name: String,
    /// SHA-256 of the component, hex: the key its code is found by.
    pub digest: String,
    /// Its machine code for `engine`, as a byte range of the code section.
    pub code: Range<u64>,
}

impl Entry {
    /// The component's digest as bytes (checked to be 64 hex digits when the bundle is read).
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.digest[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    }
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
    /// Where in the file the code section starts.
    code_at: u64,
    /// The file as opened when its checksum was checked: code is read from this one, so a
    /// file renamed over the path since is never read.
    file: std::sync::Mutex<std::fs::File>,
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Bundle {
    /// Reads the bundle appended to `path`; `None` when it is a plain executable. The whole
    /// payload is checked against its checksum, but only the manifest is kept in memory.
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
        f.seek(SeekFrom::Start(runtime_len)).map_err(io(path))?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut left = payload_len;
        let mut chunk = vec![0u8; 64 << 10];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.read_exact(&mut chunk[..n]).map_err(io(path))?;
            hasher.update(&chunk[..n]);
            if head.len() < 4 || head.len() < 4 + manifest_len(&head) {
                head.extend_from_slice(&chunk[..n]);
            }
            left -= n as u64;
        }
        if hasher.finalize().as_slice() != &trailer[8..40] {
            return Err(corrupt("checksum mismatch".into()));
        }
        if head.len() < 4 {
            return Err(corrupt("no manifest".into()));
        }
        let manifest_end = 4 + manifest_len(&head);
        if manifest_end as u64 > payload_len {
            return Err(corrupt("manifest length exceeds the payload".into()));
        }
        let manifest: Manifest = serde_json::from_slice(&head[4..manifest_end])
            .map_err(|e| corrupt(format!("manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(corrupt(format!(
                "payload format {} (this ferry reads {FORMAT})",
                manifest.format
            )));
        }
        let code_len = payload_len - manifest_end as u64;
        for p in &manifest.plugins {
            if p.code.start > p.code.end || p.code.end > code_len {
                return Err(corrupt(format!(
                    "plugin {} lies outside the payload",
                    p.name
                )));
            }
            if p.digest.len() != 64 || !p.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(corrupt(format!("plugin {}: bad digest", p.name)));
            }
        }
        Ok(Some(Bundle {
            path: path.to_path_buf(),
            manifest,
            runtime_len,
            code_at: runtime_len + manifest_end as u64,
            file: std::sync::Mutex::new(f),
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

    /// The bundled plugin `name`.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.manifest.plugins.iter().find(|p| p.name == name)
    }

    /// A plugin's machine code, read from the file (it is not kept in memory: the engine
    /// copies what it loads).
    pub fn code(&self, entry: &Entry) -> Result<Vec<u8>, BundleError> {
        let mut f = self.file.lock().expect("bundle file");
        f.seek(SeekFrom::Start(self.code_at + entry.code.start))
            .map_err(io(&self.path))?;
        let mut code = vec![0u8; (entry.code.end - entry.code.start) as usize];
        f.read_exact(&mut code).map_err(io(&self.path))?;
        Ok(code)
    }
}

/// The manifest length a payload starts with (0 until 4 bytes are there).
fn manifest_len(head: &[u8]) -> usize {
    head.get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .unwrap_or(0)
}

/// A bundle being made: its manifest and code, to be appended to a runtime.
#[derive(Debug)]
pub struct NewBundle {
    /// What it will hold.
    pub manifest: Manifest,
    code: Vec<u8>,
}

impl NewBundle {
    /// A bundle of `plugins` for `runtime`, each compiled now by `engine` (or, for a plugin
    /// the engine's catalog carries precompiled, its code taken as it is), carrying `receivers` and
    /// an optional default config.
    pub fn build(
        engine: &PluginEngine,
        plugins: &[PluginSource],
        runtime: &BuildInfo,
        receivers: Vec<String>,
        config: Option<String>,
    ) -> Result<NewBundle, BundleError> {
        let mut code = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        for p in plugins {
            let fail = |reason: String| BundleError::Plugin {
                name: p.name.clone(),
                reason,
            };
            if entries.iter().any(|e| e.name == p.name) {
                return Err(fail("named twice".into()));
            }
            let carried = engine.catalog().precompiled_named(&p.name);
            let compiled = match carried.filter(|_| p.origin == Origin::Bundle) {
                Some(carried) => engine.catalog().code(carried).map_err(fail)?,
                None => engine
                    .precompile(&p.wasm)
                    .map_err(|e| fail(e.to_string()))?,
            };
            let start = code.len() as u64;
            code.extend_from_slice(&compiled);
            entries.push(Entry {
                name: p.name.clone(),
                digest: crate::plugin::engine::hex(&p.digest),
                code: start..code.len() as u64,
            });
        }
        Ok(NewBundle {
            manifest: Manifest {
                format: FORMAT,
                ferry: env!("CARGO_PKG_VERSION").into(),
                engine: engine.engine_key().into(),
                compiler: runtime.compiler,
                receivers,
                config,
                plugins: entries,
            },
            code,
        })
    }

    /// Writes `runtime` (an executable) with this bundle appended to `out`.
    pub fn write(&self, runtime: &[u8], out: &Path) -> Result<(), BundleError> {
        let manifest = serde_json::to_vec(&self.manifest).expect("manifest serialises");
        let mut payload = Vec::with_capacity(4 + manifest.len() + self.code.len());
        payload.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        payload.extend_from_slice(&manifest);
        payload.extend_from_slice(&self.code);
        let tmp = out.with_extension("partial");
        let write = || -> std::io::Result<()> {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            file.write_all(runtime)?;
            file.write_all(&payload)?;
            file.write_all(&(payload.len() as u64).to_le_bytes())?;
            file.write_all(&Sha256::digest(&payload))?;
            file.write_all(MAGIC)?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write().map_err(io(&tmp))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, out).map_err(io(out))
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
    use crate::plugin::Catalog;
    use crate::plugin::registry;

    fn sample(dir: &Path) -> PathBuf {
        let engine = PluginEngine::builder().build().unwrap();
        let plugins = [registry::find(&Catalog::builtin(), "blackhole", None).unwrap()];
        let info = BuildInfo::current();
        let bundle = NewBundle::build(
            &engine,
            &plugins,
            &info,
            vec!["otlp".into()],
            Some("# cfg".into()),
        )
        .unwrap();
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
        assert_eq!(b.manifest.receivers, ["otlp"]);
        b.check_engine().unwrap();
        let entry = b.entry("blackhole").unwrap();
        let source = registry::find(&Catalog::builtin(), "blackhole", None).unwrap();
        assert_eq!(entry.digest(), source.digest);
        // The code is exactly what the engine makes of the component, and loads into it.
        let engine = PluginEngine::builder().build().unwrap();
        let code = b.code(entry).unwrap();
        assert_eq!(code, engine.precompile(&source.wasm).unwrap());
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
