//! Bundles: one executable carrying the daemon, the plugins it needs precompiled for its
//! engine, and optionally a default config, so it runs with no plugin directory and no compile
//! step at start.
//!
//! A bundle is a `ferry` executable (ideally a runtime-only build) with a payload appended:
//!
//! ```text
//! [executable][payload][payload length: u64 LE][SHA-256 of payload: 32 bytes]["FERRYBN1"]
//! payload = [manifest length: u32 LE][manifest JSON][machine code of each plugin]
//! ```
//!
//! Only machine code is carried (not the components): it is all the runtime loads, and the
//! manifest keeps each component's digest, which is what the engine keys code by. The manifest
//! names the engine the code was compiled for; a bundle whose payload does not match its
//! checksum, or whose engine is not the running one, is refused before anything is loaded.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::plugin::PluginEngine;
use crate::plugin::registry::{Origin, PluginSource};

/// Last bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"FERRYBN1";
/// The trailer: payload length, payload checksum, magic.
const TRAILER: usize = 8 + 32 + 8;
/// Version of the payload layout.
const FORMAT: u32 = 2;
/// The file name `ferry bundle` looks for beside itself when no `--runtime` is given.
pub const RUNTIME_NAME: &str = "ferry-runtime";

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
    /// The executable to carry cannot run this bundle.
    #[error("runtime {path}: {reason}")]
    Runtime {
        /// The executable.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The receivers asked for do not fit the runtime or the config.
    #[error("{0}")]
    Receivers(String),
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
    /// Whether the carried executable has the compiler (it can also load a plugin directory's
    /// components) or is runtime-only.
    pub compiler: bool,
    /// The receivers a config may enable (`ferry bundle --receivers`).
    pub receivers: Vec<String>,
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

/// What an executable is: its engine, whether it compiles, and its receivers. `ferry bundle`
/// asks a runtime for it (hidden `ferry build-info`) before carrying it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildInfo {
    /// Its `ferry` version.
    pub ferry: String,
    /// The engine it compiles for and loads code from.
    pub engine: String,
    /// Whether it carries the compiler.
    pub compiler: bool,
    /// The receivers it can start.
    pub receivers: Vec<String>,
}

impl BuildInfo {
    /// This process's.
    pub fn current() -> BuildInfo {
        BuildInfo {
            ferry: env!("CARGO_PKG_VERSION").into(),
            engine: crate::plugin::engine::engine_key(),
            compiler: cfg!(feature = "compiler"),
            receivers: crate::receiver::carried()
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }

    /// Asks the executable `path` for its build info.
    pub fn of(path: &Path) -> Result<BuildInfo, BundleError> {
        let fail = |reason: String| BundleError::Runtime {
            path: path.to_path_buf(),
            reason,
        };
        let out = std::process::Command::new(path)
            .arg("build-info")
            .output()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "`build-info` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("not a ferry of this kind (build-info: {e})")))
    }

    /// Why this executable cannot carry code compiled for `engine` and start `receivers`.
    fn unfit(&self, engine: &str, receivers: &[String]) -> Option<String> {
        if self.engine != engine {
            return Some(format!(
                "it runs engine {}, but this ferry compiles for {engine}: build both from the \
                 same source",
                self.engine
            ));
        }
        let missing: Vec<&str> = receivers
            .iter()
            .filter(|r| !self.receivers.contains(r))
            .map(String::as_str)
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "it was built without the {} receiver(s) (it has {}); build one with \
                 `cargo build --profile slim -p ferry --no-default-features --features {}`",
                missing.join(", "),
                self.receivers.join(", "),
                receivers
                    .iter()
                    .filter(|r| *r != "otlp")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
    }
}

/// The executable a bundle carries, and what it is.
#[derive(Debug)]
pub struct Runtime {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub info: BuildInfo,
    /// Why a runtime found beside this executable was passed over, if one was.
    pub passed_over: Option<String>,
}

/// Chooses the executable a bundle carries: `explicit` (which must fit), else
/// [`RUNTIME_NAME`] beside this executable when it fits, else this executable. To fit, it runs
/// the same engine and has every receiver in `receivers` (all of its own when `None`).
pub fn choose_runtime(
    explicit: Option<&Path>,
    receivers: Option<&[String]>,
) -> Result<Runtime, BundleError> {
    let engine = crate::plugin::engine::engine_key();
    let wanted = receivers.unwrap_or_default();
    let fit = |path: &Path| {
        let info = BuildInfo::of(path)?;
        match info.unfit(&engine, wanted) {
            None => Ok(info),
            Some(reason) => Err(BundleError::Runtime {
                path: path.to_path_buf(),
                reason,
            }),
        }
    };
    if let Some(path) = explicit {
        return Ok(Runtime {
            path: path.to_path_buf(),
            info: fit(path)?,
            passed_over: None,
        });
    }
    let me = std::env::current_exe().map_err(io(Path::new("current executable")))?;
    let mut passed_over = None;
    if let Some(beside) = me.parent().map(|d| d.join(RUNTIME_NAME))
        && beside.is_file()
    {
        match fit(&beside) {
            Ok(info) => {
                return Ok(Runtime {
                    path: beside,
                    info,
                    passed_over: None,
                });
            }
            Err(e) => passed_over = Some(e.to_string()),
        }
    }
    let info = BuildInfo::current();
    if let Some(reason) = info.unfit(&engine, wanted) {
        return Err(BundleError::Runtime { path: me, reason });
    }
    Ok(Runtime {
        path: me,
        info,
        passed_over,
    })
}

/// Refuses receiver names Ferry does not have.
pub fn check_receiver_names(asked: &[String]) -> Result<(), BundleError> {
    let unknown: Vec<String> = asked
        .iter()
        .filter(|r| !crate::receiver::ALL.contains(&r.as_str()))
        .map(|r| format!("{r:?}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(BundleError::Receivers(format!(
        "unknown receiver(s) {} (receivers: {})",
        unknown.join(", "),
        crate::receiver::ALL.join(", ")
    )))
}

/// What would stop `config` running in a bundle that carries `receivers` and `plugins` on
/// `runtime`: receivers it enables beyond them, and, on a runtime-only build (which cannot
/// compile), plugins its exporters name that the bundle does not carry.
pub fn config_problems(
    config: &crate::config::Config,
    receivers: &[String],
    plugins: &[PluginSource],
    runtime: &BuildInfo,
) -> Vec<String> {
    let mut problems = Vec::new();
    for r in config.receivers.enabled() {
        if !receivers.iter().any(|c| c == r) {
            problems.push(format!(
                "receivers.{r} is enabled, but the bundle carries only the {} receiver(s)",
                receivers.join(", ")
            ));
        }
    }
    if !runtime.compiler {
        for (name, e) in &config.exporters {
            if !plugins.iter().any(|p| p.name == e.plugin) {
                problems.push(format!(
                    "exporters.{name} uses plugin {:?}, which the bundle does not carry and \
                     its runtime-only runtime cannot compile: add --plugin {}",
                    e.plugin, e.plugin
                ));
            }
        }
    }
    problems
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

static RUNNING: OnceLock<Bundle> = OnceLock::new();

/// If this executable is a bundle: reads and checks it (checksum and engine), limits the
/// receivers to its own, and makes its plugins available to every engine built afterwards.
pub fn open_running() -> Result<Option<&'static Bundle>, BundleError> {
    let exe = std::env::current_exe().map_err(io(Path::new("current executable")))?;
    let Some(bundle) = Bundle::read(&exe)? else {
        return Ok(None);
    };
    bundle.check_engine()?;
    crate::receiver::restrict(bundle.manifest.receivers.clone());
    Ok(Some(RUNNING.get_or_init(|| bundle)))
}

/// The bundle this executable is, once [`open_running`] found one.
pub fn running() -> Option<&'static Bundle> {
    RUNNING.get()
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
    /// this executable carries as a bundle, its code taken as it is), carrying `receivers` and
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
            let compiled = match (p.origin == Origin::Bundle, running()) {
                (true, Some(b)) => {
                    let entry = b.entry(&p.name).ok_or_else(|| fail("not bundled".into()))?;
                    b.code(entry)?
                }
                _ => engine
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
    use crate::plugin::registry;

    fn sample(dir: &Path) -> PathBuf {
        let engine = PluginEngine::builder().build().unwrap();
        let plugins = [registry::find("blackhole", None).unwrap()];
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
        let source = registry::find("blackhole", None).unwrap();
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

    #[test]
    fn receivers_must_be_known_and_in_the_runtime_and_the_config_must_fit() {
        let runtime = BuildInfo {
            ferry: "0".into(),
            engine: crate::plugin::engine::engine_key(),
            compiler: false,
            receivers: vec!["otlp".into()],
        };
        let asked = ["otlp".to_string(), "smtp".to_string()];
        let err = check_receiver_names(&asked).unwrap_err().to_string();
        assert!(err.contains("unknown receiver(s) \"smtp\""), "{err}");
        check_receiver_names(&["zipkin".into()]).unwrap();

        let config = crate::config::Config::parse(
            "[receivers.otlp]\nhttp = \"127.0.0.1:0\"\n[receivers.zipkin]\n\
             [exporters.sink]\nplugin = \"blackhole\"\n",
        )
        .unwrap();
        let problems = config_problems(&config, &runtime.receivers, &[], &runtime);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .contains("receivers.zipkin is enabled, but the bundle carries only the otlp"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("exporters.sink uses plugin \"blackhole\"")
                && problems[1].contains("add --plugin blackhole"),
            "{problems:?}"
        );
        let blackhole = [registry::find("blackhole", None).unwrap()];
        let both = ["otlp".to_string(), "zipkin".to_string()];
        assert!(config_problems(&config, &both, &blackhole, &runtime).is_empty());

        let zipkin = ["zipkin".to_string()];
        let why = runtime.unfit(&runtime.engine, &zipkin).unwrap();
        assert!(
            why.contains("built without the zipkin receiver(s)")
                && why.contains("--no-default-features --features zipkin"),
            "{why}"
        );
        let why = runtime.unfit("another-engine", &[]).unwrap();
        assert!(why.contains("runs engine"), "{why}");
    }
}
