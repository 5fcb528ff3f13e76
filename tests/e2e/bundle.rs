//! `ferry bundle`: one executable with the runtime, precompiled plugins and a config, which
//! runs with no plugin directory and compiles nothing; and refuses to run when tampered with
//! or built for another engine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, built_wasm, eventually, ferry_command, post_traces, run,
    span_names, traces_request, workspace,
};

/// Runs `ferry bundle ARGS` and returns the bundle's path.
fn make_bundle(dir: &Path, args: &[&str]) -> PathBuf {
    let out = dir.join("my-ferry");
    run(ferry_command().arg("bundle").args(args).arg("-o").arg(&out));
    out
}

/// Writes `dir/NAME`: a config of the OTLP receiver (free ports) and `rest`.
fn write_config(dir: &Path, name: &str, rest: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{PREAMBLE}\n{rest}\n")).unwrap();
    path
}

/// `[exporters.out]`: OTLP/HTTP to `sink`.
fn to_sink(sink: &Sink) -> String {
    format!(
        "[exporters.out]\nplugin = \"otlp-http\"\nconfig = {{ endpoint = \"{}\" }}",
        sink.url()
    )
}

/// A bundle with `otlp-http` (built in) and the minimal example (a `.wasm` file), and a config
/// sending traces to `sink` through both.
fn two_plugin_bundle(dir: &Path, sink: &Sink) -> PathBuf {
    let config = write_config(
        dir,
        "bundled.toml",
        &format!("{}\n[exporters.count]\nplugin = \"minimal\"", to_sink(sink)),
    );
    let minimal = dir.join("minimal.wasm");
    std::fs::copy(built_wasm("ferry_example_minimal"), &minimal).unwrap();
    make_bundle(
        dir,
        &[
            "--plugin",
            "otlp-http",
            "--plugin",
            minimal.to_str().unwrap(),
            "--receivers",
            "otlp",
            "--config",
            config.to_str().unwrap(),
        ],
    )
}

/// A config enabling the Zipkin receiver besides OTLP, writing nowhere that matters.
fn zipkin_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        "zipkin.toml",
        "[receivers.zipkin]\nhttp = \"127.0.0.1:0\"\n[exporters.sink]\nplugin = \"blackhole\"",
    )
}

/// Runs `path ARGS`, which must fail, and returns its stderr.
fn refused(path: &Path, args: &[&str]) -> String {
    let out = Command::new(path).args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "{} {args:?} must fail",
        path.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lines of `ferry bundle --list FILE`.
fn listing(bundle: &Path) -> String {
    run(Command::new(bundle).args(["bundle", "--list"]).arg(bundle))
}

/// Starts `bundle run` with no plugin directory, no `--config` and an empty compiled-code
/// cache, sends four spans, and checks they reach `sink` and nothing was compiled.
async fn deliver_through(bundle: &Path, dir: &Path, sink: &Sink, tag: &str) -> Ferry {
    let cache = dir.join("cache");
    let mut cmd = Command::new(bundle);
    cmd.arg("run")
        .env("FERRY_CACHE_DIR", &cache)
        .current_dir(dir);
    let ferry = Ferry::start_command(tag, cmd);
    let (status, _, _) = post_traces(&ferry, traces_request(4, tag, 1)).await;
    assert_eq!(status, 200);
    eventually("the bundle's traces at the sink", async || {
        span_names(sink).len() >= 4
    })
    .await;
    let mut names = span_names(sink);
    names.sort();
    let want: Vec<String> = (0..4).map(|i| format!("{tag}-{i}")).collect();
    assert_eq!(names, want);
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 0, "nothing was compiled at start");
    ferry
}

/// The runtime-only `ferry` (no compiler, no receiver but OTLP), built by cargo into its own
/// target directory on first use (without debug info: it is carried whole by bundles).
fn runtime_only_ferry() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = workspace().join("target/runtime-only");
            run(
                Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .current_dir(workspace())
                    .args([
                        "build",
                        "-p",
                        "ferry",
                        "--no-default-features",
                        "--target-dir",
                    ])
                    .arg(&target)
                    .env("CARGO_PROFILE_DEV_DEBUG", "false")
                    .env("CARGO_PROFILE_DEV_STRIP", "debuginfo"),
            );
            target.join("debug/ferry")
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_with_two_plugins_runs_without_a_plugin_directory_and_delivers_traces() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await;
    let bundle = two_plugin_bundle(dir.path(), &sink);

    let listing = listing(&bundle);
    assert!(listing.contains("plugin     otlp-http"), "{listing}");
    assert!(listing.contains("plugin     minimal"), "{listing}");
    assert!(listing.contains("config     embedded"), "{listing}");
    assert!(listing.contains("receivers  otlp\n"), "{listing}");

    let ferry = deliver_through(&bundle, dir.path(), &sink, "bundled").await;
    assert!(ferry.logs().contains("plugin=minimal"), "{}", ferry.logs());
    ferry.logged("minimal: batch 1 of 4 items").await;

    // The bundle carries the OTLP receiver only, though its runtime has Zipkin's.
    let zipkin = zipkin_config(dir.path());
    let err = refused(&bundle, &["validate", zipkin.to_str().unwrap()]);
    assert!(
        err.contains("receivers.zipkin: this bundle carries only the otlp receiver(s)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_only_bundle_is_found_beside_ferry_and_runs_without_the_compiler() {
    let runtime = tokio::task::spawn_blocking(runtime_only_ferry)
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(
        &Command::new(&runtime)
            .arg("build-info")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(info["compiler"], false, "{info}");
    assert_eq!(info["receivers"], serde_json::json!(["otlp"]), "{info}");

    // `ferry-runtime` beside `ferry` is what `ferry bundle` carries when it fits. Hard links
    // in the target directory's scratch space keep the (large, debug) binaries uncopied.
    let bin = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ferry = bin.path().join("ferry");
    std::fs::hard_link(env!("CARGO_BIN_EXE_ferry"), &ferry).unwrap();
    std::fs::hard_link(&runtime, bin.path().join("ferry-runtime")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await;
    let config = write_config(dir.path(), "bundled.toml", &to_sink(&sink));
    let config = config.to_str().unwrap();
    let never = dir.path().join("never").to_str().unwrap().to_string();
    let never = never.as_str();

    // A receiver the runtime lacks is refused, with the command that builds one with it.
    let err = refused(
        &ferry,
        &[
            "bundle",
            "--runtime",
            runtime.to_str().unwrap(),
            "--plugin",
            "otlp-http",
            "--receivers",
            "otlp,zipkin",
            "-o",
            never,
        ],
    );
    assert!(
        err.contains("built without the zipkin receiver(s)")
            && err.contains("--no-default-features --features zipkin"),
        "{err}"
    );

    // So is a config naming a plugin the runtime-only bundle would not carry.
    let uncarried = write_config(
        dir.path(),
        "uncarried.toml",
        "[exporters.print]\nplugin = \"debug\"",
    );
    let err = refused(
        &ferry,
        &[
            "bundle",
            "--plugin",
            "otlp-http",
            "--config",
            uncarried.to_str().unwrap(),
            "-o",
            never,
        ],
    );
    assert!(
        err.contains("exporters.print uses plugin \"debug\"") && err.contains("add --plugin debug"),
        "{err}"
    );

    let out = dir.path().join("slim-ferry");
    let said = run(Command::new(&ferry)
        .args([
            "bundle",
            "--plugin",
            "otlp-http",
            "--plugin",
            "blackhole",
            "--config",
            config,
        ])
        .arg("-o")
        .arg(&out));
    assert!(said.contains("(runtime-only)"), "{said}");
    let listing = listing(&out);
    assert!(listing.contains("runtime-only"), "{listing}");
    assert!(listing.contains("receivers  otlp\n"), "{listing}");
    assert!(
        std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&ferry).unwrap().len(),
        "the runtime-only bundle is smaller than the full ferry"
    );

    deliver_through(&out, dir.path(), &sink, "slim").await;

    // What it cannot do, it says: no compiler for a plugin directory's component, and no
    // receiver it was built without.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        built_wasm("ferry_example_minimal"),
        plugins.join("minimal.wasm"),
    )
    .unwrap();
    let extra = write_config(
        dir.path(),
        "extra.toml",
        &format!(
            "[plugins]\ndir = \"{}\"\ncache_dir = \"\"\n[exporters.count]\nplugin = \"minimal\"",
            plugins.display()
        ),
    );
    let err = refused(&out, &["validate", extra.to_str().unwrap()]);
    assert!(err.contains("this ferry is runtime-only"), "{err}");
    let err = refused(&out, &["validate", uncarried.to_str().unwrap()]);
    assert!(
        err.contains("plugin \"debug\" not found")
            && err.contains("this ferry carries: otlp-http, blackhole"),
        "{err}"
    );
    let err = refused(
        &out,
        &["validate", zipkin_config(dir.path()).to_str().unwrap()],
    );
    assert!(
        err.contains("receivers.zipkin: this ferry was built without the zipkin receiver"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_bundle_or_one_for_another_engine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Script::default()).await;
    let bundle = two_plugin_bundle(dir.path(), &sink);

    // One flipped bit in the payload (a plugin's machine code, near the end).
    let tampered = dir.path().join("tampered");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x20;
    std::fs::write(&tampered, &bytes).unwrap();
    set_executable(&tampered);
    let err = refused(&tampered, &["run"]);
    assert!(
        err.contains("the bundle is corrupt (checksum mismatch)"),
        "{err}"
    );

    // Sealed correctly, but for another engine.
    let engine = ferry::plugin::PluginEngine::builder().build().unwrap();
    let plugins =
        [
            ferry::plugin::registry::find(&ferry::plugin::Catalog::builtin(), "blackhole", None)
                .unwrap(),
        ];
    let info = ferry::bundle::BuildInfo::current();
    let mut b =
        ferry::bundle::NewBundle::build(&engine, &plugins, &info, info.receivers.clone(), None)
            .unwrap();
    b.manifest.engine = "wasmtime47.0.0-0123456789abcdef".into();
    let foreign = dir.path().join("foreign");
    b.write(&ferry::bundle::runtime_of(&bundle).unwrap(), &foreign)
        .unwrap();
    let err = refused(&foreign, &["run"]);
    assert!(
        err.contains("compiled for engine wasmtime47.0.0-0123456789abcdef, but this ferry runs engine wasmtime48.0.8-"),
        "{err}"
    );
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
