//! Where plugins come from: `NAME.wasm` in the plugin directory, or the built-in set compiled
//! into the binary.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

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
    /// The component.
    pub wasm: Cow<'static, [u8]>,
}

/// Why a plugin could not be found.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Neither in the directory nor built in.
    #[error("plugin {name:?} not found (looked for {looked}; built-in plugins: {builtins})")]
    NotFound {
        /// Name asked for.
        name: String,
        /// Where we looked.
        looked: String,
        /// The built-in names.
        builtins: String,
    },
    /// The name could escape the plugin directory.
    #[error("invalid plugin name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
    /// The file exists but could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A plugin carried by this executable's bundle: name, component and its machine code.
pub type Bundled = (String, &'static [u8], &'static [u8]);

static BUNDLED: std::sync::OnceLock<Vec<Bundled>> = std::sync::OnceLock::new();

/// Makes a bundle's plugins available to this process (found after the plugin directory and
/// before the built-ins, and precompiled by every engine built afterwards). Once per process.
pub fn set_bundled(plugins: Vec<Bundled>) {
    let _ = BUNDLED.set(plugins);
}

/// The plugins of this executable's bundle, if it is one.
pub fn bundled() -> &'static [Bundled] {
    BUNDLED.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Names of the built-in plugins.
pub fn builtin_names() -> Vec<&'static str> {
    builtin::PLUGINS.iter().map(|(n, _)| *n).collect()
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
    Ok(PluginSource {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into()),
        origin: Origin::File(path.to_path_buf()),
        wasm: Cow::Owned(wasm),
    })
}

/// Finds plugin `name`: `dir/NAME.wasm` first, then the built-in set.
pub fn find(name: &str, dir: Option<&Path>) -> Result<PluginSource, RegistryError> {
    if !valid_name(name) {
        return Err(RegistryError::BadName(name.to_string()));
    }
    let mut looked = Vec::new();
    if let Some(dir) = dir {
        let path = dir.join(format!("{name}.wasm"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                return Ok(PluginSource {
                    name: name.to_string(),
                    origin: Origin::File(path),
                    wasm: Cow::Owned(bytes),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                looked.push(path.display().to_string());
            }
            Err(source) => return Err(RegistryError::Read { path, source }),
        }
    }
    if let Some((_, wasm, _)) = bundled().iter().find(|(n, _, _)| n == name) {
        return Ok(PluginSource {
            name: name.to_string(),
            origin: Origin::Bundle,
            wasm: Cow::Borrowed(wasm),
        });
    }
    if let Some((_, wasm)) = builtin::PLUGINS.iter().find(|(n, _)| *n == name) {
        return Ok(PluginSource {
            name: name.to_string(),
            origin: Origin::Builtin,
            wasm: Cow::Borrowed(wasm),
        });
    }
    looked.push("the built-in plugins".into());
    Err(RegistryError::NotFound {
        name: name.to_string(),
        looked: looked.join(", "),
        builtins: builtin_names().join(", "),
    })
}

/// Every plugin available: the directory's `.wasm` files, then built-ins they do not shadow.
pub fn list(dir: Option<&Path>) -> Result<Vec<PluginSource>, RegistryError> {
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
            out.push(find(&n, Some(dir))?);
        }
    }
    let names = bundled()
        .iter()
        .map(|(n, _, _)| n.as_str())
        .chain(builtin_names());
    for name in names {
        if !out.iter().any(|p| p.name == name) {
            out.push(find(name, None)?);
        }
    }
    Ok(out)
}
