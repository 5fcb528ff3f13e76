//! Builds the first-party plugins (and the SDK example) for `wasm32-wasip2` and embeds the
//! built-in ones, so `ferry` runs with no extra step. Like wasmtime's test-programs artifacts,
//! this runs a nested `cargo build` with its own target directory (no lock contention with the
//! outer build).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where guest crates live, and whether those are built-in plugins (named by their folder).
/// The workspace's members and `scripts/test.sh` find them the same way.
const GUEST_DIRS: &[(&str, bool)] = &[
    ("plugins", true),
    ("examples", false),
    ("tests/plugins", false),
];

/// A guest crate: its package name, the stem of its `.wasm` file, and its built-in name if it
/// is one.
struct Guest {
    package: String,
    stem: String,
    builtin: Option<String>,
}

/// Every guest crate: each folder of [`GUEST_DIRS`] with a `Cargo.toml`, in name order.
fn guests(root: &Path) -> Vec<Guest> {
    let mut out = Vec::new();
    for (dir, builtin) in GUEST_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut folders: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        folders.sort();
        for folder in folders {
            let Ok(manifest) = std::fs::read_to_string(folder.join("Cargo.toml")) else {
                continue;
            };
            let package = manifest
                .lines()
                .find_map(|l| {
                    let v = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
                    Some(v.trim().trim_matches('"').to_string())
                })
                .unwrap_or_else(|| panic!("{}: no package name", folder.display()));
            let name = folder.file_name().unwrap().to_string_lossy().into_owned();
            out.push(Guest {
                stem: package.replace('-', "_"),
                package,
                builtin: builtin.then_some(name),
            });
        }
    }
    out
}

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for dir in [
        "sdk",
        "plugins",
        "examples",
        "tests/plugins",
        "wit",
        "proto",
        "wire",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");

    println!("cargo:rerun-if-env-changed=FERRY_NO_BUILTIN_PLUGINS");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    embed_sdk_files(&root, &out_dir);
    // A runtime-only build cannot compile plugins, so built-in components would be dead
    // weight: its plugins come precompiled, in a bundle.
    let runtime_only = std::env::var_os("CARGO_FEATURE_COMPILER").is_none();
    if runtime_only || std::env::var_os("FERRY_NO_BUILTIN_PLUGINS").is_some() {
        // Also for builds that cannot target wasm32-wasip2 (fuzzing on nightly): no built-ins.
        write_if_changed(
            &out_dir.join("builtin_plugins.rs"),
            "/// Built-in plugins: none in this build.\npub const PLUGINS: &[(&str, &[u8])] = &[];\n",
        );
        println!("cargo:rustc-env=FERRY_PLUGIN_WASM_DIR=");
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg(PROFILE)
        .arg("--target-dir")
        .arg(&target_dir);
    let guests = guests(&root);
    for g in &guests {
        cmd.arg("-p").arg(&g.package);
    }
    // The outer build's flags and wrappers (clippy, coverage, sanitizers) are for the host,
    // not for the guest target.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins for {TARGET} failed (is the target installed? run `rustup target add {TARGET}`)"
        );
    }

    let wasm_dir = target_dir.join(TARGET).join(PROFILE);
    let mut builtins = String::from(
        "/// Built-in plugins: (name, component bytes).\npub const PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for Guest { stem, builtin, .. } in &guests {
        let path = wasm_dir.join(format!("{stem}.wasm"));
        assert!(
            path.exists(),
            "expected {} after the plugin build",
            path.display()
        );
        if let Some(name) = builtin {
            builtins.push_str(&format!(
                "    ({name:?}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
    }
    builtins.push_str("];\n");
    write_if_changed(&out_dir.join("builtin_plugins.rs"), &builtins);
    // Tests and examples find the other components here.
    println!(
        "cargo:rustc-env=FERRY_PLUGIN_WASM_DIR={}",
        wasm_dir.display()
    );
}

/// What `ferry plugin new` writes into a project: the SDKs, the WIT and the templates, each
/// as (path in this repository, bytes).
const SDK_FILES: &[&str] = &[
    "Cargo.toml",
    "sdk/Cargo.toml",
    "sdk/src",
    "sdk/processor/Cargo.toml",
    "sdk/processor/src",
    "proto/Cargo.toml",
    "proto/src",
    "wire/Cargo.toml",
    "wire/src",
    "sdk/python/ferry_sdk",
    "sdk/js/ferry-sdk.js",
    "sdk/templates",
    "wit/plugin.wit",
    "wit/deps",
];

fn embed_sdk_files(root: &Path, out_dir: &Path) {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        let path = root.join(rel);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .map(|e| e.unwrap().file_name())
                .collect();
            entries.sort();
            for name in entries {
                let child = rel.join(&name);
                // The older contract versions in wit/deps come along: with them the Rust
                // bindings keep their versioned module names (`plugin0_2_0`).
                let skip = name == "__pycache__" || name == "node_modules";
                if !skip {
                    walk(root, &child, out);
                }
            }
        } else {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    let mut files = Vec::new();
    for entry in SDK_FILES {
        walk(root, Path::new(entry), &mut files);
    }
    let mut code = String::from(
        "/// SDK, WIT and template files: (path in the Ferry repository, bytes).\npub const FILES: &[(&str, &[u8])] = &[\n",
    );
    for rel in files {
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            root.join(&rel).display().to_string()
        ));
    }
    code.push_str("];\n");
    write_if_changed(&out_dir.join("sdk_files.rs"), &code);
}

fn write_if_changed(path: &Path, content: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(content) {
        std::fs::write(path, content).unwrap();
    }
}
