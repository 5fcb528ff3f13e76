//! Building plugins in other languages from source, as an author would: componentize-py (from
//! PyPI) and componentize-js (from npm) are installed under `target/` on first use, and each
//! example is built once per test run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{install_once, python_in, run, workspace};

/// The componentize-py and componentize-js releases the SDKs are built and tested with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// A directory whose `componentize-py` is installed.
pub fn componentize_py_bin() -> PathBuf {
    let py = python_in(
        "e2e-componentize-py",
        &[COMPONENTIZE_PY],
        "import componentize_py",
    );
    py.parent().unwrap().to_path_buf()
}

/// A directory whose `componentize-js` is installed.
pub fn componentize_js_bin() -> PathBuf {
    let dir = workspace().join("target/e2e-componentize-js");
    let bin = dir.join("node_modules/.bin");
    install_once(
        "e2e-componentize-js",
        || bin.join("componentize-js").exists(),
        || {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("package.json"), "{\"private\":true}").unwrap();
            let ok = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", COMPONENTIZE_JS])
                .current_dir(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "npm install {COMPONENTIZE_JS} failed");
        },
    );
    bin
}

/// `PATH` with `dirs` first.
pub fn path_with(dirs: &[&Path]) -> std::ffi::OsString {
    let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    all.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(all).unwrap()
}

/// Where built example components go.
fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `examples/python-webhook`, built with its own `build.sh`.
pub fn python_webhook() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = out_dir().join("python-webhook.wasm");
            let py = componentize_py_bin();
            run(
                Command::new(workspace().join("examples/python-webhook/build.sh"))
                    .arg(&out)
                    .env("PATH", path_with(&[&py])),
            );
            out
        })
        .clone()
}

/// `examples/python-hasher` (a processor), built with its own `build.sh`.
pub fn python_hasher() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = out_dir().join("python-hasher.wasm");
            let py = componentize_py_bin();
            run(
                Command::new(workspace().join("examples/python-hasher/build.sh"))
                    .arg(&out)
                    .env("PATH", path_with(&[&py])),
            );
            out
        })
        .clone()
}

/// `examples/js-hec`, built with its own `npm run build`.
pub fn js_hec() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let js = componentize_js_bin();
            let example = workspace().join("examples/js-hec");
            run(Command::new("npm")
                .args(["run", "--silent", "build"])
                .current_dir(&example)
                .env("PATH", path_with(&[&js])));
            let out = out_dir().join("js-hec.wasm");
            std::fs::rename(example.join("js-hec.wasm"), &out).unwrap();
            out
        })
        .clone()
}

/// A plugin directory holding `files` (each copied under its own name).
pub fn plugin_dir(files: &[(&str, &Path)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, file) in files {
        std::fs::copy(file, dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}
