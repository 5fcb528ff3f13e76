//! The running executable's bundle, as values: the plugin catalog the engine and registry are
//! handed, and the receivers config validation allows. Nothing here is global; `main` opens
//! the bundle once and passes what it carries down.

use std::path::Path;
use std::sync::Arc;

use super::BundleError;
use super::format::{Bundle, io};
use crate::config::Carried;
use crate::plugin::catalog::{Catalog, CodeSource, Precompiled};

/// What this executable carries: its plugins and the receivers a config may enable, and the
/// config it runs without `--config`.
#[derive(Debug, Clone)]
pub struct Running {
    /// The plugins (built-in, and a bundle's precompiled code) and the receivers (a bundle's
    /// `--receivers`, else all this build has).
    pub carried: Carried,
    /// A bundle's embedded default config.
    pub config: Option<String>,
}

impl Running {
    /// A plain executable: built-in plugins and every receiver this build has.
    pub fn plain() -> Running {
        Running {
            carried: Carried {
                catalog: Catalog::builtin(),
                receivers: crate::receiver::built_names(),
            },
            config: None,
        }
    }

    /// What a checked bundle carries.
    pub fn of(bundle: Bundle) -> Running {
        let plugins = bundle
            .manifest
            .plugins
            .iter()
            .map(|e| Precompiled {
                name: e.name.clone(),
                digest: e.digest(),
            })
            .collect();
        let receivers = bundle.manifest.receivers.clone();
        let config = bundle.manifest.config.clone();
        // SAFETY: `open_running` checked the payload's checksum and that its engine key is
        // this build's before calling this; the code was written by `NewBundle::build` from
        // `PluginEngine::precompile`, and is read from the same open file, which cannot be
        // written while it runs.
        let catalog = unsafe { Catalog::builtin().with_precompiled(plugins, Arc::new(bundle)) };
        Running {
            carried: Carried { catalog, receivers },
            config,
        }
    }
}

impl CodeSource for Bundle {
    fn code(&self, plugin: &Precompiled) -> Result<Vec<u8>, String> {
        let entry = self
            .entry(&plugin.name)
            .ok_or_else(|| format!("{} is not in the bundle", plugin.name))?;
        Bundle::code(self, entry).map_err(|e| e.to_string())
    }
}

/// What this executable carries: if it is a bundle, read and checked (checksum and engine)
/// before anything else runs; else the built-in plugins and receivers.
pub fn open_running() -> Result<Running, BundleError> {
    let exe = std::env::current_exe().map_err(io(Path::new("current executable")))?;
    let Some(bundle) = Bundle::read(&exe)? else {
        return Ok(Running::plain());
    };
    bundle.check_engine()?;
    Ok(Running::of(bundle))
}
