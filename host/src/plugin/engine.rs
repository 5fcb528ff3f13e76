//! The thin wrapper that owns wasmtime's `Engine` and `Linker` setup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::catalog::Catalog;
use super::ctx::PluginCtx;
use super::registry::PluginSource;

/// Names this module's engine settings in cache and bundle keys: change it with them.
const ENGINE_SETTINGS: &str = "ferry1";

/// Length of one epoch tick: the granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors setting up the engine or compiling a plugin.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the engine configuration or the linker setup.
    #[error("wasmtime setup failed: {0:#}")]
    Setup(wasmtime::Error),
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0:#}")]
    Compile(wasmtime::Error),
    /// This is a runtime-only build: it loads precompiled code (a bundle's, or the cache's)
    /// and compiles nothing.
    #[error(
        "this ferry is runtime-only (built without the `compiler` feature) and cannot compile \
         plugins: run it as a bundle (`ferry bundle --runtime`), or use a full ferry"
    )]
    NoCompiler,
    /// The component's initial memory could not be set up for its instances.
    #[error("cannot set up the plugin's initial memory: {0:#}")]
    MemoryImage(wasmtime::Error),
}

/// Builds a [`PluginEngine`].
#[derive(Debug, Default)]
pub struct PluginEngineBuilder {
    cache_dir: Option<PathBuf>,
    catalog: Catalog,
}

impl PluginEngineBuilder {
    /// Keeps compiled plugins in `dir` (created if missing), so a restart does not recompile.
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// The plugins this engine's registry finds besides a plugin directory, and whose
    /// precompiled code it loads (default: the built-in plugins only).
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Builds the engine, its linker (WASI p2 with nothing granted but the
    /// sockets `allowed_hosts` grants, wasi:http through the
    /// host's hooks, and the `ferry:plugin/host` import) and starts the epoch ticker.
    pub fn build(self) -> Result<PluginEngine, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // CPU deadlines per call are epoch-based; fuel stays off (it slows every instruction).
        config.epoch_interruption(true);
        // No WASIp3 here: without it a call's fixed cost drops from ~1.1 µs to ~0.3 µs.
        config.concurrency_support(false);
        // Code compiled here must load into a runtime-only build, which has none of these.
        #[cfg(feature = "compiler")]
        {
            config.wasm_gc(false);
            config.gc_support(false);
            config.wasm_stack_switching(false);
        }
        let engine = Engine::new(&config).map_err(EngineError::Setup)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(EngineError::Setup)?;
        super::sockets::add_to_linker(&mut linker).map_err(EngineError::Setup)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(EngineError::Setup)?;
        // Every supported contract version; a plugin links against the one it was built for.
        super::contract::add_to_linker(&mut linker).map_err(EngineError::Setup)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("ferry-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| EngineError::Setup(wasmtime::Error::msg(e.to_string())))?;

        let engine_key = engine_key();
        // A bundle's plugins come compiled: load their code instead of compiling them.
        let mut compiled = HashMap::new();
        for plugin in self.catalog.precompiled() {
            let fail = |e: String| {
                EngineError::Setup(wasmtime::Error::msg(format!(
                    "bundled plugin {}: {e}",
                    plugin.name
                )))
            };
            let code = self.catalog.code(plugin).map_err(fail)?;
            // SAFETY: `Catalog::with_precompiled` holds whoever added this code to its
            // contract: it was produced by `precompile_component` of an engine with the same
            // version and settings (a bundle checks its checksum and engine key first).
            let component = unsafe { Component::deserialize(&engine, &code) }
                .map_err(|e| fail(format!("{e:#}")))?;
            build_images(&component)?;
            compiled.insert(plugin.digest, component);
        }
        Ok(PluginEngine {
            engine,
            linker,
            compiled: Mutex::new(compiled),
            cache_dir: self.cache_dir,
            engine_key,
            catalog: self.catalog,
        })
    }
}

/// Where a component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeOrigin {
    /// Compiled earlier by this process.
    Memory,
    /// Read from the compiled-code cache on disk.
    DiskCache,
    /// Compiled now (and stored in the cache when there is one).
    Compiled,
}

/// A wasmtime engine configured for Ferry's plugins, with its linker and compiled components.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginCtx>,
    /// Components by content hash, so exporters sharing a plugin compile it once.
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Where compiled code is kept across runs.
    cache_dir: Option<PathBuf>,
    /// Identifies this engine's code format in cache file names.
    engine_key: String,
    /// The plugins it carries besides a plugin directory.
    catalog: Catalog,
}

fn wasmtime_version() -> &'static str {
    // Precompiled code loads only into the exact wasmtime version that produced it; the
    // compatibility hash covers the settings, this covers the version pin.
    "48.0.8"
}

/// Identifies the code an engine of this build makes and loads: the wasmtime version, these
/// engine settings and the platform. The same in a full and a runtime-only build (wasmtime's
/// compatibility hash exists only in the compiling one); `deserialize` still checks the code's
/// real settings and refuses code it cannot run.
pub fn engine_key() -> String {
    format!(
        "wasmtime{}-{ENGINE_SETTINGS}-{}-{}",
        wasmtime_version(),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// Lower-case hex of `bytes` (how component digests are written in cache names and bundles).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default compiled-code cache: `$FERRY_CACHE_DIR`, else `$XDG_CACHE_HOME/ferry`, else
/// `$HOME/.cache/ferry`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FERRY_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("ferry"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("ferry"))
}

impl PluginEngine {
    /// Starts building an engine.
    pub fn builder() -> PluginEngineBuilder {
        PluginEngineBuilder::default()
    }

    /// The plugins this engine carries besides a plugin directory.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Identifies the code this engine makes and loads: the wasmtime version and a hash of
    /// the settings that must match.
    pub fn engine_key(&self) -> &str {
        &self.engine_key
    }

    /// The linker every plugin is instantiated with.
    pub fn linker(&self) -> &Linker<PluginCtx> {
        &self.linker
    }

    /// Compiles a component to machine code for this engine.
    #[cfg(feature = "compiler")]
    fn compile_now(&self, wasm: &[u8]) -> Result<Component, EngineError> {
        Component::new(&self.engine, wasm).map_err(EngineError::Compile)
    }

    #[cfg(not(feature = "compiler"))]
    fn compile_now(&self, _wasm: &[u8]) -> Result<Component, EngineError> {
        Err(EngineError::NoCompiler)
    }

    /// A component's machine code for this engine, serialised (what the cache and bundles
    /// hold).
    #[cfg(feature = "compiler")]
    pub fn precompile(&self, wasm: &[u8]) -> Result<Vec<u8>, EngineError> {
        self.engine
            .precompile_component(wasm)
            .map_err(EngineError::Compile)
    }

    /// A component's machine code for this engine: this build cannot make it.
    #[cfg(not(feature = "compiler"))]
    pub fn precompile(&self, _wasm: &[u8]) -> Result<Vec<u8>, EngineError> {
        Err(EngineError::NoCompiler)
    }

    /// Compiles a component (once per distinct content).
    pub fn compile(&self, wasm: &[u8]) -> Result<Component, EngineError> {
        self.compile_traced(wasm).map(|(c, _)| c)
    }

    /// Compiles a plugin's component (once per distinct content; a bundled plugin's code is
    /// already loaded).
    pub fn compile_source(&self, source: &PluginSource) -> Result<Component, EngineError> {
        self.compile_keyed(&source.digest, &source.wasm)
            .map(|(c, _)| c)
    }

    /// Compiles a component and says where its code came from.
    pub fn compile_traced(&self, wasm: &[u8]) -> Result<(Component, CodeOrigin), EngineError> {
        self.compile_keyed(&Sha256::digest(wasm).into(), wasm)
    }

    /// Compiles `wasm`, whose SHA-256 is `key`.
    fn compile_keyed(
        &self,
        key: &[u8; 32],
        wasm: &[u8],
    ) -> Result<(Component, CodeOrigin), EngineError> {
        let key = *key;
        if let Some(c) = self.compiled.lock().expect("compile cache").get(&key) {
            return Ok((c.clone(), CodeOrigin::Memory));
        }
        let (component, origin) = match &self.cache_dir {
            Some(dir) => self.compile_cached(dir, &key, wasm)?,
            None => (self.compile_now(wasm)?, CodeOrigin::Compiled),
        };
        build_images(&component)?;
        self.compiled
            .lock()
            .expect("compile cache")
            .insert(key, component.clone());
        Ok((component, origin))
    }

    /// Loads compiled code from the cache, or compiles and stores it. Only files this engine
    /// wrote are ever deserialised: names carry the content hash and the engine key, and the
    /// directory is the host's own (never the plugin directory).
    fn compile_cached(
        &self,
        dir: &Path,
        key: &[u8; 32],
        wasm: &[u8],
    ) -> Result<(Component, CodeOrigin), EngineError> {
        let hex = hex(key);
        let path = dir.join(format!("{hex}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was produced by `precompile_component` of an engine with the
            // same version and compatibility hash, and written atomically below.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, CodeOrigin::DiskCache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable compiled-code cache entry: {e:#}")
                }
            }
        }
        let compiled = self.precompile(wasm)?;
        let stored = std::fs::create_dir_all(dir).and_then(|()| {
            let tmp = dir.join(format!(".{hex}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, &compiled)?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = stored {
            tracing::warn!(dir = %dir.display(), "cannot write the compiled-code cache: {e}");
        }
        // SAFETY: these bytes were just produced by this engine's `precompile_component`.
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map(|c| (c, CodeOrigin::Compiled))
            .map_err(EngineError::Compile)
    }
}

/// Builds a component's copy-on-write memory images now, where a failure can be retried,
/// instead of inside its first instantiation. On Linux each image is a sealed memfd, and the
/// kernel refuses the write seal with EBUSY while a page just written is still pinned (held
/// in another CPU's LRU batch, say); a failed build is not kept, so the next attempt writes
/// a fresh memfd.
fn build_images(component: &Component) -> Result<(), EngineError> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        match component.initialize_copy_on_write_image() {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && is_busy(&e) => {
                tracing::debug!("memory image busy (attempt {attempt}), building it again: {e:#}");
                std::thread::sleep(Duration::from_millis(5 << attempt));
                attempt += 1;
            }
            Err(e) => return Err(EngineError::MemoryImage(e)),
        }
    }
}

/// Whether `e` is the kernel's transient EBUSY.
fn is_busy(e: &wasmtime::Error) -> bool {
    const EBUSY: i32 = 16;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(EBUSY))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn only_the_kernels_ebusy_makes_a_memory_image_build_again() {
        let busy = std::io::Error::from_raw_os_error(16);
        let sealed = wasmtime::Error::new(busy).context("cannot add seals");
        assert!(is_busy(&sealed));
        let full = std::io::Error::from_raw_os_error(28);
        assert!(!is_busy(&wasmtime::Error::new(full)));
        assert!(!is_busy(&wasmtime::Error::msg("device or resource busy")));
    }

    #[test]
    fn caches_compiled_code_and_survives_a_corrupt_entry() {
        let dir = tempfile::tempdir().unwrap();
        let engine = PluginEngine::builder()
            .cache_dir(Some(dir.path().to_path_buf()))
            .build()
            .unwrap();
        engine.compile(EMPTY_COMPONENT).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.ends_with(".cwasm") && name.contains("wasmtime48.0.8"),
            "{name}"
        );

        // A second engine loads it; a corrupted entry is replaced, not trusted.
        std::fs::write(&files[0], b"garbage").unwrap();
        let again = PluginEngine::builder()
            .cache_dir(Some(dir.path().to_path_buf()))
            .build()
            .unwrap();
        again.compile(EMPTY_COMPONENT).unwrap();
        assert_ne!(std::fs::read(&files[0]).unwrap(), b"garbage");
    }

    #[test]
    fn rejects_what_is_not_a_component() {
        let engine = PluginEngine::builder().build().unwrap();
        let err = engine.compile(b"definitely not wasm").unwrap_err();
        assert!(
            err.to_string()
                .contains("not a valid WebAssembly component"),
            "{err}"
        );
    }
}
