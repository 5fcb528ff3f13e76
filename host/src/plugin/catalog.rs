//! The plugins an executable carries, besides a plugin directory: the components built into
//! it, and machine code precompiled for its engine (a bundle's). A catalog is a value: the
//! engine builder loads its code and the registry finds its plugins, so two catalogs can live
//! in one process and nothing depends on what `main` did first.

use std::sync::Arc;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

/// A plugin carried as machine code only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// Plugin name (what configs refer to).
    pub name: String,
    /// SHA-256 of the component the code was compiled from: the key the engine finds it by.
    pub digest: [u8; 32],
}

/// Where precompiled code is read from (a bundle file, or memory in tests).
pub trait CodeSource: Send + Sync {
    /// The machine code of `plugin`, as `PluginEngine::precompile` wrote it.
    fn code(&self, plugin: &Precompiled) -> Result<Vec<u8>, String>;
}

/// What an executable carries. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    builtin: &'static [(&'static str, &'static [u8])],
    precompiled: Arc<[Precompiled]>,
    code: Option<Arc<dyn CodeSource>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field(
                "builtin",
                &self.builtin.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("precompiled", &self.precompiled)
            .finish()
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::builtin()
    }
}

impl Catalog {
    /// The components built into this binary, and nothing precompiled.
    pub fn builtin() -> Catalog {
        Catalog {
            builtin: builtin::PLUGINS,
            precompiled: Arc::new([]),
            code: None,
        }
    }

    /// A catalog carrying nothing at all.
    pub fn empty() -> Catalog {
        Catalog {
            builtin: &[],
            precompiled: Arc::new([]),
            code: None,
        }
    }

    /// Adds plugins carried as machine code, read from `code` when an engine is built. They
    /// come before built-in plugins of the same name.
    ///
    /// # Safety
    /// The engine deserialises this code without compiling it: `code` must return only bytes
    /// that `PluginEngine::precompile` of this very engine version and settings produced
    /// (a bundle checks its checksum and engine key before it makes a catalog).
    pub unsafe fn with_precompiled(
        self,
        plugins: Vec<Precompiled>,
        code: Arc<dyn CodeSource>,
    ) -> Catalog {
        Catalog {
            precompiled: plugins.into(),
            code: Some(code),
            ..self
        }
    }

    /// The plugins carried as machine code.
    pub fn precompiled(&self) -> &[Precompiled] {
        &self.precompiled
    }

    /// The machine code of a precompiled plugin.
    pub fn code(&self, plugin: &Precompiled) -> Result<Vec<u8>, String> {
        match &self.code {
            Some(source) => source.code(plugin),
            None => Err("the catalog has no code for it".into()),
        }
    }

    /// A precompiled plugin by name.
    pub fn precompiled_named(&self, name: &str) -> Option<&Precompiled> {
        self.precompiled.iter().find(|p| p.name == name)
    }

    /// A built-in component by name.
    pub fn builtin_named(&self, name: &str) -> Option<&'static [u8]> {
        self.builtin
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, wasm)| *wasm)
    }

    /// Names of every plugin carried: precompiled first, then built-in ones, each once.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let all = self.precompiled.iter().map(|p| p.name.as_str());
        for n in all.chain(self.builtin.iter().map(|(n, _)| *n)) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::plugin::PluginEngine;
    use crate::plugin::registry::{self, Origin};

    /// Precompiled code held in memory, by plugin name.
    struct InMemory(HashMap<String, Vec<u8>>);

    impl CodeSource for InMemory {
        fn code(&self, plugin: &Precompiled) -> Result<Vec<u8>, String> {
            self.0.get(&plugin.name).cloned().ok_or("absent".into())
        }
    }

    #[tokio::test]
    async fn two_catalogs_live_side_by_side_in_one_process() {
        let builtin = Catalog::builtin();
        let blackhole = registry::find(&builtin, "blackhole", None).unwrap();
        let first = PluginEngine::builder()
            .catalog(builtin.clone())
            .build()
            .unwrap();
        // The second carries only `sink`: the blackhole's code, precompiled under another name.
        let code = first.precompile(&blackhole.wasm).unwrap();
        let sink = Precompiled {
            name: "sink".into(),
            digest: blackhole.digest,
        };
        let memory = InMemory(HashMap::from([("sink".to_string(), code)]));
        // SAFETY: the code was just made by `precompile` of an engine of this build.
        let only_sink = unsafe { Catalog::empty().with_precompiled(vec![sink], Arc::new(memory)) };
        let second = PluginEngine::builder().catalog(only_sink).build().unwrap();

        assert!(first.catalog().names().contains(&"blackhole"));
        assert!(!first.catalog().names().contains(&"sink"));
        assert_eq!(second.catalog().names(), ["sink"]);
        let err = registry::find(second.catalog(), "blackhole", None).unwrap_err();
        assert!(
            err.to_string().contains("this ferry carries: sink"),
            "{err}"
        );
        assert!(registry::find(first.catalog(), "sink", None).is_err());

        // The second engine runs `sink` from its catalog's code alone (no component bytes).
        let source = registry::find(second.catalog(), "sink", None).unwrap();
        assert_eq!(source.origin, Origin::Bundle);
        assert!(source.wasm.is_empty());
        let manifest = crate::plugin::exporter::describe(&second, &source)
            .await
            .unwrap();
        assert_eq!(manifest.name, "blackhole");
        // Each registry lists only what its own catalog carries.
        let listed = |e: &PluginEngine| -> Vec<String> {
            registry::list(e.catalog(), None)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(listed(&second), ["sink"]);
        assert!(listed(&first).contains(&"blackhole".to_string()));
    }
}
