//! Where plugins come from: `NAME.wasm` in the plugin directory, or the built-in set compiled
//! into the binary.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::catalog::Catalog;

/// Where a plugin was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the `ferry` binary.
    Builtin,
    /// Carried, precompiled, by this executable's bundle.
    Bundle,
    /// A file in the plugin directory.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::Bundle => f.write_str("bundled"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin's component bytes and where they came from.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// Plugin name (file stem, or the built-in name).
    pub name: String,
    /// Where it came from.
    pub origin: Origin,
    /// The component (empty for a bundled plugin: the bundle carries only its machine code).
    pub wasm: Cow<'static, [u8]>,
    /// SHA-256 of the component: what its compiled code is keyed by.
    pub digest: [u8; 32],
}

impl PluginSource {
    /// A plugin from its component's bytes.
    pub fn new(name: String, origin: Origin, wasm: Cow<'static, [u8]>) -> PluginSource {
        let digest = Sha256::digest(&wasm).into();
        PluginSource {
            name,
            origin,
            wasm,
            digest,
        }
    }
}

/// Why a plugin could not be found.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Neither in the directory nor carried by this executable.
    #[error("plugin {name:?} not found (looked for {looked}; this ferry carries: {carried})")]
    NotFound {
        /// Name asked for.
        name: String,
        /// Where we looked.
        looked: String,
        /// The plugins carried by this executable (bundled and built in).
        carried: String,
    },
    /// The name could escape the plugin directory.
    #[error("invalid plugin name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
    /// The file exists but could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The `.wasm` file or plugin directory that could not be read.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A plugin name: letters, digits, '-' and '_' (so it can never leave the plugin directory).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The component in `path`, named by its file stem (a name configs could not use is kept
/// as it is; checking it is the caller's).
pub fn read_file(path: &Path) -> Result<PluginSource, RegistryError> {
    let wasm = std::fs::read(path).map_err(|source| RegistryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(PluginSource::new(
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into()),
        Origin::File(path.to_path_buf()),
        Cow::Owned(wasm),
    ))
}

/// Finds plugin `name`: `dir/NAME.wasm` first, then what `catalog` carries.
pub fn find(
    catalog: &Catalog,
    name: &str,
    dir: Option<&Path>,
) -> Result<PluginSource, RegistryError> {
    if !valid_name(name) {
        return Err(RegistryError::BadName(name.to_string()));
    }
    let mut looked = Vec::new();
    if let Some(dir) = dir {
        let path = dir.join(format!("{name}.wasm"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                return Ok(PluginSource::new(
                    name.to_string(),
                    Origin::File(path),
                    Cow::Owned(bytes),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                looked.push(path.display().to_string());
            }
            Err(source) => return Err(RegistryError::Read { path, source }),
        }
    }
    if let Some(entry) = catalog.precompiled_named(name) {
        return Ok(PluginSource {
            name: name.to_string(),
            origin: Origin::Bundle,
            wasm: Cow::Borrowed(&[]),
            digest: entry.digest,
        });
    }
    if let Some(wasm) = catalog.builtin_named(name) {
        return Ok(PluginSource::new(
            name.to_string(),
            Origin::Builtin,
            Cow::Borrowed(wasm),
        ));
    }
    looked.push("the plugins this ferry carries".into());
    Err(RegistryError::NotFound {
        name: name.to_string(),
        looked: looked.join(", "),
        carried: {
            let carried = catalog.names();
            if carried.is_empty() {
                "none (a runtime-only build carries none of its own)".into()
            } else {
                carried.join(", ")
            }
        },
    })
}

/// Every plugin available: the directory's `.wasm` files, then the plugins `catalog` carries
/// that they do not shadow.
pub fn list(catalog: &Catalog, dir: Option<&Path>) -> Result<Vec<PluginSource>, RegistryError> {
    let mut out = Vec::new();
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "wasm").then(|| p.file_stem()?.to_str().map(str::to_string))?
            })
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        for n in names {
            out.push(find(catalog, &n, Some(dir))?);
        }
    }
    for name in catalog.names() {
        if !out.iter().any(|p| p.name == name) {
            out.push(find(catalog, name, None)?);
        }
    }
    Ok(out)
}
