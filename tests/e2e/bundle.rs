//! `ferry bundle`: one executable with the runtime, precompiled plugins and a config, which
//! runs with no plugin directory and compiles nothing; and refuses to run when tampered with
//! or built for another engine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, built_wasm, eventually, ferry_command, post_traces, span_names,
    traces_request,
};

/// Runs `ferry bundle ARGS` and returns the bundle's path.
fn make_bundle(dir: &Path, args: &[&str]) -> PathBuf {
    let out = dir.join("my-ferry");
    let result = ferry_command()
        .arg("bundle")
        .args(args)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// A bundle with `otlp-http` (built in) and the minimal example (a `.wasm` file), and a config
/// sending traces to `sink` through both.
fn two_plugin_bundle(dir: &Path, sink: &Sink) -> PathBuf {
    let config = dir.join("bundled.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            {PREAMBLE}
            [exporters.out]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            [exporters.count]
            plugin = "minimal"
            "#,
            sink.url()
        ),
    )
    .unwrap();
    let minimal = dir.join("minimal.wasm");
    std::fs::copy(built_wasm("ferry_example_minimal"), &minimal).unwrap();
    make_bundle(
        dir,
        &[
            "--plugin",
            "otlp-http",
            "--plugin",
            minimal.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_with_two_plugins_runs_without_a_plugin_directory_and_delivers_traces() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await;
    let bundle = two_plugin_bundle(dir.path(), &sink);

    let list = Command::new(&bundle)
        .args(["bundle", "--list"])
        .arg(&bundle)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{listing}");
    assert!(listing.contains("plugin   otlp-http"), "{listing}");
    assert!(listing.contains("plugin   minimal"), "{listing}");
    assert!(listing.contains("config   embedded"), "{listing}");

    // No plugin directory, no --config, and an empty compiled-code cache that must stay empty:
    // the bundle's code is loaded, never compiled.
    let cache = dir.path().join("cache");
    let mut cmd = Command::new(&bundle);
    cmd.arg("run")
        .env("FERRY_CACHE_DIR", &cache)
        .current_dir(dir.path());
    let ferry = Ferry::start_command("bundle", cmd);
    assert!(ferry.logs().contains("plugin=minimal"), "{}", ferry.logs());
    let (status, _, _) = post_traces(&ferry, traces_request(4, "bundled", 1)).await;
    assert_eq!(status, 200);
    eventually("the bundle's traces at the sink", async || {
        span_names(&sink).len() >= 4
    })
    .await;
    let mut names = span_names(&sink);
    names.sort();
    assert_eq!(names, ["bundled-0", "bundled-1", "bundled-2", "bundled-3"]);
    ferry.logged("minimal: batch 1 of 4 items").await;
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 0, "nothing was compiled at start");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_bundle_or_one_for_another_engine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await;
    let bundle = two_plugin_bundle(dir.path(), &sink);
    let run = |path: &Path| {
        let out = Command::new(path).arg("run").output().unwrap();
        assert!(!out.status.success(), "{} must not start", path.display());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // One flipped bit in the payload (a plugin's machine code, near the end).
    let tampered = dir.path().join("tampered");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x20;
    std::fs::write(&tampered, &bytes).unwrap();
    set_executable(&tampered);
    let err = run(&tampered);
    assert!(
        err.contains("the bundle is corrupt (checksum mismatch)"),
        "{err}"
    );

    // Sealed correctly, but for another engine.
    let mut b = ferry::bundle::Bundle::read(&bundle).unwrap().unwrap();
    b.manifest.engine = "wasmtime47.0.0-0123456789abcdef".into();
    let foreign = dir.path().join("foreign");
    b.write(&ferry::bundle::runtime_of(&bundle).unwrap(), &foreign)
        .unwrap();
    let err = run(&foreign);
    assert!(
        err.contains("compiled for engine wasmtime47.0.0-0123456789abcdef, but this ferry runs engine wasmtime48.0.8-"),
        "{err}"
    );
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
