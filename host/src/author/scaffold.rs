//! `ferry plugin new`: writes a plugin project that builds and passes `ferry plugin test` as it
//! is. The SDK, the WIT and the templates are compiled into the binary, so a project can be
//! made anywhere, with no Ferry checkout: each project carries its own copy of the SDK.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

/// The languages a project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the `ferry-sdk` crate.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

/// What kind of plugin a project makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kind {
    /// An exporter (world `exporter-plugin`).
    #[default]
    Exporter,
    /// A processor (world `processor-plugin`).
    Processor,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Exporter => "exporter",
            Kind::Processor => "processor",
        })
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

fn embedded(path: &str) -> &'static [u8] {
    embedded::FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("{path} is not embedded (host/build.rs SDK_FILES)"))
}

/// Embedded files under `prefix/`, as (path below it, bytes).
fn embedded_under(prefix: &str) -> impl Iterator<Item = (&'static str, &'static [u8])> + '_ {
    embedded::FILES.iter().filter_map(move |(p, b)| {
        p.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| (rest, *b))
    })
}

/// The contract's WIT, as the SDKs need it: `plugin.wit` and the WASI packages it uses.
fn wit_files() -> impl Iterator<Item = (String, &'static [u8])> {
    std::iter::once(("plugin.wit".to_string(), embedded("wit/plugin.wit")))
        .chain(embedded_under("wit/deps").map(|(p, b)| (format!("deps/{p}"), b)))
}

/// Fills `{{name}}` (the plugin name) and `{{crate}}` (the name as a Rust identifier, which is
/// also the stem of a Rust plugin's `.wasm`).
fn fill(template: &[u8], name: &str) -> Vec<u8> {
    String::from_utf8_lossy(template)
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .into_bytes()
}

/// A crate manifest with `workspace = true` keys resolved from the Ferry workspace manifest,
/// and path dependencies pointed at the vendored copies next to it.
fn standalone_manifest(member: &str) -> anyhow::Result<String> {
    let root: toml::Table = toml::from_str(std::str::from_utf8(embedded("Cargo.toml"))?)?;
    let mut crate_toml: toml::Table = toml::from_str(std::str::from_utf8(embedded(member))?)?;
    // A vendored crate is built, never tested, and its test dependencies are not vendored.
    crate_toml.remove("dev-dependencies");
    let ws = root
        .get("workspace")
        .and_then(|w| w.as_table())
        .context("workspace manifest has no [workspace]")?;
    let inherits = |v: &toml::Value| {
        v.as_table()
            .and_then(|t| t.get("workspace"))
            .and_then(|w| w.as_bool())
            == Some(true)
    };
    if let Some(package) = crate_toml.get_mut("package").and_then(|p| p.as_table_mut()) {
        let shared = ws.get("package").and_then(|p| p.as_table());
        for (key, value) in package.iter_mut() {
            if inherits(value) {
                *value = shared
                    .and_then(|s| s.get(key))
                    .cloned()
                    .with_context(|| format!("workspace.package.{key} missing"))?;
            }
        }
    }
    if let Some(deps) = crate_toml
        .get_mut("dependencies")
        .and_then(|d| d.as_table_mut())
    {
        let shared = ws.get("dependencies").and_then(|d| d.as_table());
        for (dep, value) in deps.iter_mut() {
            if !inherits(value) {
                continue;
            }
            let mut resolved = match shared.and_then(|s| s.get(dep)).cloned() {
                Some(toml::Value::String(v)) => {
                    let mut t = toml::Table::new();
                    t.insert("version".into(), v.into());
                    t
                }
                Some(toml::Value::Table(t)) => t,
                _ => bail!("workspace.dependencies.{dep} missing"),
            };
            if resolved.contains_key("path") {
                resolved.insert("path".into(), format!("../{dep}").into());
            }
            for (k, v) in value.as_table().into_iter().flatten() {
                if k == "features" {
                    let mut all = resolved
                        .get("features")
                        .and_then(|f| f.as_array())
                        .cloned()
                        .unwrap_or_default();
                    all.extend(v.as_array().cloned().unwrap_or_default());
                    resolved.insert("features".into(), all.into());
                } else if k != "workspace" {
                    resolved.insert(k.clone(), v.clone());
                }
            }
            *value = resolved.into();
        }
    }
    Ok(format!(
        "# Vendored from Ferry by `ferry plugin new`.\n{}",
        toml::to_string(&crate_toml)?
    ))
}

/// Every file of a new project: (path in the project, contents).
fn project_files(name: &str, lang: Lang, kind: Kind) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let template = match kind {
        Kind::Exporter => format!("sdk/templates/{lang}"),
        Kind::Processor => format!("sdk/templates/{lang}-processor"),
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = embedded_under(&template)
        .map(|(p, b)| (PathBuf::from(p), fill(b, name)))
        .collect();
    let wit_dir = match lang {
        Lang::Rust => "vendor/wit",
        Lang::Python | Lang::Js => "wit",
    };
    files.extend(wit_files().map(|(p, b)| (Path::new(wit_dir).join(p), b.to_vec())));
    match lang {
        Lang::Rust => {
            let crates: &[(&str, &str)] = match kind {
                Kind::Exporter => &[("ferry-sdk", "sdk"), ("ferry-proto", "proto")],
                Kind::Processor => &[
                    ("ferry-processor-sdk", "sdk/processor"),
                    ("ferry-proto", "proto"),
                    ("ferry-wire", "wire"),
                ],
            };
            for &(krate, src) in crates {
                let dir = Path::new("vendor").join(krate);
                files.push((
                    dir.join("Cargo.toml"),
                    standalone_manifest(&format!("{src}/Cargo.toml"))?.into_bytes(),
                ));
                // Vendored, every SDK sits one folder below `vendor/wit`.
                files.extend(embedded_under(&format!("{src}/src")).map(|(p, b)| {
                    let b = String::from_utf8_lossy(b).replace("\"../../wit\"", "\"../wit\"");
                    (dir.join("src").join(p), b.into_bytes())
                }));
            }
        }
        Lang::Python => files.extend(
            embedded_under("sdk/python/ferry_sdk")
                .map(|(p, b)| (Path::new("ferry_sdk").join(p), b.to_vec())),
        ),
        Lang::Js => files.push((
            PathBuf::from("ferry-sdk.js"),
            embedded("sdk/js/ferry-sdk.js").to_vec(),
        )),
    }
    Ok(files)
}

/// Writes a new `lang` plugin project called `name` into `dir` (which must not exist or be
/// empty) and returns what to do next.
pub fn create(name: &str, lang: Lang, kind: Kind, dir: &Path) -> anyhow::Result<String> {
    if !crate::plugin::registry::valid_name(name) {
        bail!("invalid plugin name {name:?}: use letters, digits, '-' and '_'");
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already exists and is not empty; pick another --dir",
            dir.display()
        );
    }
    for (path, contents) in project_files(name, lang, kind)? {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let d = dir.display();
    let wasm = match lang {
        Lang::Rust => format!(
            "{d}/target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        Lang::Python | Lang::Js => format!("{d}/{name}.wasm"),
    };
    let build = match lang {
        Lang::Rust => {
            format!("rustup target add wasm32-wasip2\n  (cd {d} && cargo build --release)")
        }
        Lang::Python => format!("pip install componentize-py==0.25.1\n  (cd {d} && ./build.sh)"),
        Lang::Js => format!("(cd {d} && npm install && npm run build)"),
    };
    Ok(format!(
        "next:\n  {build}\n  ferry plugin test {wasm}\nthen copy the .wasm into the daemon's plugin directory (see {d}/README.md)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_sdk_manifest_stands_alone() {
        let sdk: toml::Table =
            toml::from_str(&standalone_manifest("sdk/Cargo.toml").unwrap()).unwrap();
        let package = sdk["package"].as_table().unwrap();
        assert_eq!(package["edition"].as_str(), Some("2024"));
        let deps = sdk["dependencies"].as_table().unwrap();
        assert_eq!(deps["ferry-proto"]["path"].as_str(), Some("../ferry-proto"));
        assert!(deps["wit-bindgen"]["version"].as_str().is_some());
        assert!(!sdk.to_string().contains("workspace"));
    }

    #[test]
    fn every_language_gets_its_sdk_the_wit_and_a_filled_template() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = project_files("my-plugin", lang, Kind::Exporter).unwrap();
            let has = |p: &str| files.iter().any(|(f, _)| f == Path::new(p));
            let wit = if lang == Lang::Rust {
                "vendor/wit"
            } else {
                "wit"
            };
            assert!(has(&format!("{wit}/plugin.wit")), "{lang}");
            assert!(has(&format!("{wit}/deps/http.wit")), "{lang}");
            assert!(has("README.md"), "{lang}");
            for (f, body) in &files {
                let text = String::from_utf8_lossy(body);
                assert!(
                    !text.contains("{{"),
                    "{lang}: {} left unfilled",
                    f.display()
                );
            }
        }
    }

    #[test]
    fn a_project_is_not_written_over_another() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = create("x", Lang::Python, Kind::Exporter, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = create(
            "../x",
            Lang::Python,
            Kind::Exporter,
            &dir.path().join("new"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid plugin name"), "{err}");
    }
}
