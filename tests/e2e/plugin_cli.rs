//! `ferry plugin inspect`, `test` and `new`, run as an author would: on the Rust, Python and
//! JavaScript examples, on components that are broken in each way the host can tell, and on
//! freshly scaffolded projects built with their own tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guests::{componentize_js_bin, componentize_py_bin, js_hec, path_with, python_webhook};
use crate::harness::{built_wasm, ferry_command, run, workspace};

/// Runs `ferry plugin ARGS... --json`: (exit success, the JSON report, stderr).
fn plugin_json(args: &[&str], cache: Option<&Path>) -> (bool, serde_json::Value, String) {
    let mut cmd = ferry_command();
    cmd.arg("plugin").args(args).arg("--json");
    if let Some(dir) = cache {
        cmd.env("FERRY_CACHE_DIR", dir);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report from {args:?} ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), report, stderr)
}

fn inspect(path: &Path) -> (bool, serde_json::Value) {
    let (ok, report, _) = plugin_json(&["inspect", path.to_str().unwrap()], None);
    (ok, report)
}

fn test(path: &Path, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let mut args = vec!["test", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    plugin_json(&args, None)
}

fn problems(report: &serde_json::Value) -> String {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// (signal, size) of every export call in a test report, and whether each succeeded.
fn calls(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["signal"] != "shutdown")
        .map(|c| {
            (
                c["signal"].as_str().unwrap().to_string(),
                c["size"].as_str().unwrap().to_string(),
                c["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn examples() -> Vec<(&'static str, PathBuf, &'static [&'static str])> {
    vec![
        (
            "minimal",
            built_wasm("ferry_example_minimal"),
            &["traces", "metrics", "logs"],
        ),
        ("python-webhook", python_webhook(), &["traces"]),
        ("js-hec", js_hec(), &["traces", "logs"]),
    ]
}

#[test]
fn inspect_reports_contract_manifest_and_imports_of_each_example() {
    for (name, wasm, signals) in examples() {
        let (ok, r) = inspect(&wasm);
        assert!(ok, "{name}: {r:#}");
        assert_eq!(r["kind"], "component", "{name}");
        assert_eq!(
            r["size"].as_u64(),
            Some(std::fs::metadata(&wasm).unwrap().len())
        );
        assert_eq!(r["contract"]["status"], "supported", "{name}");
        assert_eq!(r["contract"]["version"], "0.3.0", "{name}");
        assert_eq!(r["manifest"]["name"], name);
        assert_eq!(
            r["manifest"]["signals"],
            serde_json::json!(signals),
            "{name}"
        );
        let imports = r["imports"].as_array().unwrap();
        assert!(
            imports.iter().all(|i| i["provided"] == true),
            "{name}: {r:#}"
        );
        assert!(
            imports.iter().any(|i| i["name"]
                .as_str()
                .unwrap()
                .starts_with("ferry:plugin/batches@0.3.0")),
            "{name}"
        );
        assert!(r["memory_after_describe"].as_u64().unwrap() > 0, "{name}");
    }
    // The language runtimes bring WASI imports a Rust plugin does not have; each is linked
    // and reported with what the sandbox gives it.
    let (_, py) = inspect(&python_webhook());
    let sockets = py["imports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().starts_with("wasi:sockets/tcp@"))
        .expect("componentize-py imports wasi:sockets");
    assert!(sockets["note"].as_str().unwrap().contains("denied"));

    // The human form names the same facts.
    let out = ferry_command()
        .args(["plugin", "inspect", python_webhook().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ferry:plugin@0.3.0"), "{text}");
    assert!(text.contains("manifest   python-webhook 0.1.0"), "{text}");
    assert!(text.contains("result     loads"), "{text}");
}

#[test]
fn plugin_test_runs_each_example_through_every_sample_batch() {
    for (name, wasm, signals) in examples() {
        let config = match name {
            "python-webhook" => r#"{"endpoint": "${capture}/hook"}"#,
            _ => r#"{"endpoint": "${capture}"}"#,
        };
        let (ok, r, stderr) = test(&wasm, &["--config", config, "--memory", "128MiB"]);
        assert!(ok, "{name}: {r:#}\n{stderr}");
        let want: Vec<(String, String, String)> = signals
            .iter()
            .flat_map(|s| {
                ["small", "large"].map(|size| (s.to_string(), size.to_string(), "ok".into()))
            })
            .collect();
        assert_eq!(calls(&r), want, "{name}");
        assert_eq!(
            r["calls"].as_array().unwrap().last().unwrap()["signal"],
            "shutdown"
        );
        assert_eq!(r["denied"], 0, "{name}");
        assert!(r["memory_peak"].as_u64().unwrap() > 0, "{name}");
        let sent: Vec<&serde_json::Value> = r["calls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["sent"].as_array().unwrap())
            .collect();
        match name {
            // The minimal example only counts and logs.
            "minimal" => {
                assert!(sent.is_empty(), "{r:#}");
                assert!(
                    stderr.contains("minimal: batch"),
                    "its log lines show: {stderr}"
                );
            }
            "python-webhook" => {
                assert!(!sent.is_empty());
                assert!(
                    sent.iter()
                        .all(|s| s["path"] == "/hook" && s["method"] == "POST")
                );
            }
            _ => assert!(
                sent.iter()
                    .all(|s| s["path"] == "/services/collector/event")
            ),
        }
    }

    // A failing backend: the report shows what the plugin made of it, and the run fails.
    // 503 comes with a Retry-After from the capture server: the SDK reports throttling.
    for (status, wanted) in [("500", "retryable"), ("503", "throttled")] {
        let (ok, r, _) = test(
            &python_webhook(),
            &[
                "--config",
                r#"{"endpoint": "${capture}/hook"}"#,
                "--status",
                status,
            ],
        );
        assert!(!ok);
        assert!(
            calls(&r).iter().all(|(_, _, result)| result == wanted),
            "{status}: {r:#}"
        );
    }
    // A destination outside allowed_hosts: the host refuses and counts it; the Python SDK
    // reports it as permanent, JavaScript's fetch only sees a network error (retryable).
    for (wasm, wanted) in [(python_webhook(), "permanent"), (js_hec(), "retryable")] {
        let (ok, r, _) = test(
            &wasm,
            &[
                "--config",
                r#"{"endpoint": "http://10.1.2.3:8088/x"}"#,
                "--memory",
                "128MiB",
            ],
        );
        assert!(!ok);
        assert!(
            calls(&r).iter().all(|(_, _, result)| result == wanted),
            "{}: {r:#}",
            wasm.display()
        );
        assert_eq!(r["denied"].as_u64(), Some(calls(&r).len() as u64), "{r:#}");
    }

    // A plugin that traps: every call is made (no breaker holds them back) and each fault
    // reported with the plugin's own last words.
    let hostile = built_wasm("ferry_test_hostile");
    let (ok, r, _) = test(&hostile, &["--config", r#"{"mode": "panic", "every": 1}"#]);
    assert!(!ok);
    let faults: Vec<&serde_json::Value> = r["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["signal"] != "shutdown")
        .collect();
    assert_eq!(faults.len(), 6, "{r:#}");
    for c in faults {
        assert_eq!(c["result"], "fault");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("hostile plugin panics"),
            "{c:#}"
        );
    }
    // One that hangs in init: the report says so, and each call names the timeout.
    let (ok, r, _) = test(
        &hostile,
        &["--config", r#"{"mode": "loop-init"}"#, "--timeout", "200ms"],
    );
    assert!(!ok);
    assert_eq!(r["init_ok"], false, "{r:#}");
    assert!(
        calls(&r).iter().all(|(_, _, result)| result == "fault"),
        "{r:#}"
    );
    // The CPU deadline (a trap) or the wall clock (a timeout), whichever is first.
    let first = r["calls"][0]["message"].as_str().unwrap();
    assert!(
        first.contains("trapped during init") || first.contains("did not finish init"),
        "{first}"
    );

    // A config the plugin refuses is named, and nothing is called.
    let (ok, r, _) = test(&python_webhook(), &["--config", r#"{"endpoint": 7}"#]);
    assert!(!ok);
    assert!(problems(&r).contains("endpoint: the webhook URL"), "{r:#}");
    assert!(r["calls"].as_array().unwrap().is_empty());
    // Too little memory: the trap is reported, with the setting to change.
    let out = ferry_command()
        .args([
            "plugin",
            "test",
            js_hec().to_str().unwrap(),
            "--memory",
            "40MiB",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("fault"), "{text}");
    assert!(text.contains("needs more memory: try --memory"), "{text}");
}

/// Broken components, each written in the component text format.
const WRONG_WORLD: &str = r#"(component
  (core module $m (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.3" (instance $inst)))"#;

fn exporter_with_only_shutdown(version: &str, import: &str) -> String {
    format!(
        r#"(component
  {import}
  (core module $m (func (export "shutdown")))
  (core instance $i (instantiate $m))
  (func $shutdown (canon lift (core func $i "shutdown")))
  (instance $inst (export "shutdown" (func $shutdown)))
  (export "ferry:plugin/exporter@{version}" (instance $inst)))"#
    )
}

#[test]
fn inspect_and_test_name_what_is_wrong_with_a_broken_component() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let component = |name: &str, text: &str| write(name, &wat::parse_str(text).unwrap());
    let vault = r#"(import "acme:vault/secrets@1.0.0" (instance (export "get" (func))))"#;
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            component("command.wasm", WRONG_WORLD),
            "does not export ferry:plugin/exporter or ferry:plugin/processor (it exports: wasi:cli/run@0.2.3); it looks like a command-line program",
        ),
        (
            component("future.wasm", &exporter_with_only_shutdown("0.9.0", "")),
            "ferry:plugin/exporter@0.9.0, a contract version this host does not speak (it speaks 0.3.0, 0.2.0, 0.1.0)",
        ),
        (
            component("partial.wasm", &exporter_with_only_shutdown("0.2.0", "")),
            "describe",
        ),
        (
            component("vault.wasm", &exporter_with_only_shutdown("0.2.0", vault)),
            "it imports acme:vault/secrets@1.0.0, which this host does not provide",
        ),
        (
            write("module.wasm", &wat::parse_str("(module)").unwrap()),
            "core WebAssembly module, not a component",
        ),
        (write("notes.wasm", b"hello"), "not a WebAssembly file"),
    ];
    for (path, wanted) in &cases {
        let (ok, r) = inspect(path);
        assert!(!ok, "{}: inspect must fail", path.display());
        assert!(
            problems(&r).contains(wanted),
            "{}: wanted {wanted:?} in {r:#}",
            path.display()
        );
        let (ok, t, _) = test(path, &[]);
        assert!(!ok, "{}: test must fail", path.display());
        let p = problems(&t);
        eprintln!(
            "{}:\n  inspect: {}\n  test: {p}",
            path.display(),
            problems(&r)
        );
        assert!(!p.is_empty(), "{}: {t:#}", path.display());
        assert!(t["calls"].as_array().unwrap().is_empty());
    }
    // inspect lists every import it checked, the missing one marked.
    let (_, r) = inspect(&cases[3].0);
    let vault = &r["imports"].as_array().unwrap()[0];
    assert_eq!(vault["name"], "acme:vault/secrets@1.0.0");
    assert_eq!(vault["provided"], false);
    // test names the contract problem itself, not just "failed".
    let (_, t, _) = test(&cases[1].0, &[]);
    assert!(problems(&t).contains("0.9.0"), "{t:#}");
}

#[test]
fn compiled_code_is_cached_so_a_large_component_loads_fast_the_second_time() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = python_webhook();
    let code = |r: &serde_json::Value| r["code"].as_str().unwrap().to_string();
    let (ok, first, _) = plugin_json(&["inspect", wasm.to_str().unwrap()], Some(cache.path()));
    assert!(ok);
    assert_eq!(code(&first), "compiled");
    let (ok, second, _) = plugin_json(&["inspect", wasm.to_str().unwrap()], Some(cache.path()));
    assert!(ok);
    assert_eq!(code(&second), "disk-cache");
    // The daemon's loader shares the cache: `plugin test` (the daemon's load path) finds it.
    let (_, t, _) = plugin_json(
        &[
            "test",
            wasm.to_str().unwrap(),
            "--config",
            r#"{"endpoint": "${capture}/x"}"#,
        ],
        Some(cache.path()),
    );
    assert_eq!(code(&t), "disk-cache");
}

/// Builds a scaffolded project with its own tool and returns its component.
fn build_scaffold(lang: &str, dir: &Path, name: &str) -> PathBuf {
    match lang {
        "rust" => {
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cargo.args(["build", "--release"]).current_dir(dir);
            // The outer build's settings are for the host; the project brings its own. The
            // dependencies stay compiled between runs in one shared directory.
            for var in [
                "RUSTFLAGS",
                "CARGO_ENCODED_RUSTFLAGS",
                "RUSTC_WRAPPER",
                "CARGO_BUILD_TARGET",
            ] {
                cargo.env_remove(var);
            }
            cargo.env(
                "CARGO_TARGET_DIR",
                workspace().join("target/e2e-scaffold-rust"),
            );
            run(&mut cargo);
            workspace().join(format!(
                "target/e2e-scaffold-rust/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ))
        }
        "python" => {
            let py = componentize_py_bin();
            run(Command::new(dir.join("build.sh")).env("PATH", path_with(&[&py])));
            dir.join(format!("{name}.wasm"))
        }
        _ => {
            // `npm install` would fetch componentize-js again for every project: link the
            // copy installed for the tests instead, then build with the project's own script.
            let js = componentize_js_bin();
            std::os::unix::fs::symlink(js.parent().unwrap(), dir.join("node_modules")).unwrap();
            run(Command::new("npm")
                .args(["run", "--silent", "build"])
                .current_dir(dir));
            dir.join(format!("{name}.wasm"))
        }
    }
}

#[test]
fn plugin_new_projects_build_and_pass_plugin_test_unchanged() {
    let root = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let name = format!("my-{lang}-plugin");
        let dir = root.path().join(&name);
        let next = run(ferry_command()
            .args(["plugin", "new", &name, "--lang", lang, "--dir"])
            .arg(&dir));
        assert!(next.contains("ferry plugin test"), "{next}");

        let wasm = build_scaffold(lang, &dir, &name);
        let (ok, r, stderr) = test(&wasm, &[]);
        assert!(ok, "{lang}: {r:#}\n{stderr}");
        assert_eq!(r["manifest"]["name"], name.as_str());
        let calls = calls(&r);
        assert_eq!(calls.len(), 6, "{lang}: every signal, small and large");
        // The template forwards each batch to <endpoint>/v1/<signal>.
        for c in r["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["signal"] != "shutdown")
        {
            let sent = c["sent"].as_array().unwrap();
            assert_eq!(sent.len(), 1, "{lang}: {c:#}");
            assert_eq!(
                sent[0]["path"],
                format!("/v1/{}", c["signal"].as_str().unwrap())
            );
            assert_eq!(sent[0]["bytes"], c["bytes"], "{lang}: the batch, whole");
        }
        // A second project in the same place is refused rather than written over.
        let again = ferry_command()
            .args(["plugin", "new", &name, "--lang", lang, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!again.status.success());
    }
}

#[test]
fn plugin_new_processor_projects_build_and_plugin_test_shows_before_and_after() {
    let root = tempfile::tempdir().unwrap();
    for (lang, signals) in [
        ("rust", &["traces", "metrics", "logs"][..]),
        ("python", &["traces", "logs"][..]),
        ("js", &["traces", "logs"][..]),
    ] {
        let name = format!("my-{lang}-processor");
        let dir = root.path().join(&name);
        run(ferry_command()
            .args([
                "plugin",
                "new",
                &name,
                "--lang",
                lang,
                "--kind",
                "processor",
                "--dir",
            ])
            .arg(&dir));
        let wasm = build_scaffold(lang, &dir, &name);
        let inspect = run(ferry_command().args(["plugin", "inspect"]).arg(&wasm));
        assert!(
            inspect.contains("(world ferry:plugin/processor-plugin@0.3.0): supported"),
            "{inspect}"
        );
        // Python and JavaScript hold a large batch's JSON several times over.
        let (ok, r, stderr) = test(&wasm, &["--memory", "256MiB"]);
        assert!(ok, "{lang}: {r:#}\n{stderr}");
        let calls = r["calls"].as_array().unwrap();
        assert_eq!(calls.len(), signals.len() * 2, "{lang}: {r:#}");
        for c in calls {
            let signal = c["signal"].as_str().unwrap();
            assert!(signals.contains(&signal), "{lang}: {c:#}");
            assert_eq!(c["items_out"], c["items_in"], "{lang}: {c:#}");
            if signal == "metrics" {
                // The Rust template leaves data points alone.
                assert_eq!(c["result"], "keep", "{lang}: {c:#}");
                continue;
            }
            // The template marks every span and log record.
            assert_eq!(c["result"], "replace", "{lang}: {c:#}");
            assert_eq!(c["attributes_added"], c["items_in"], "{lang}: {c:#}");
            assert_eq!(c["attributes_removed"], 0, "{lang}: {c:#}");
        }
        let text = run(ferry_command()
            .args(["plugin", "test", "--memory", "256MiB"])
            .arg(&wasm));
        assert!(
            text.contains("ATTRIBUTES") && text.ends_with("PASSED\n"),
            "{text}"
        );
    }
}

#[test]
fn plugin_test_reports_host_memory_per_call_and_names_a_leak() {
    let host =
        |call: &serde_json::Value, which: &str, what: &str| call[which][what].as_u64().unwrap();
    // A plugin that sends one request per call holds a request and its body during the call
    // and nothing after it.
    let (ok, r, _) = test(&built_wasm("ferry_plugin_otlp_http"), &[]);
    assert!(ok, "{r:#}");
    for c in r["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["signal"] != "shutdown")
    {
        assert!(
            host(c, "host_peak", "bytes") > 1 << 20,
            "a body buffer: {c:#}"
        );
        assert!(host(c, "host_peak", "resources") >= 3, "{c:#}");
        assert!(host(c, "host_held", "bytes") < 64 << 10, "{c:#}");
    }
    assert_eq!(r["host_limits"]["bytes"], 16 << 20);

    // One that fills two request bodies a call and never sends or drops them leaks: the
    // report shows what each call left held, and says so.
    let hostile = built_wasm("ferry_test_hostile");
    let leaky = r#"{"mode": "hoard-bodies", "hoard_mib": 2}"#;
    let (_, r, _) = test(&hostile, &["--config", leaky]);
    let first = &r["calls"][0];
    assert_eq!(first["result"], "ok", "{r:#}");
    assert!(host(first, "host_held", "bytes") > 2 << 20, "{first:#}");
    assert!(host(first, "host_held", "resources") >= 6, "{first:#}");
    let out = ferry_command()
        .args([
            "plugin",
            "test",
            hostile.to_str().unwrap(),
            "--config",
            leaky,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("held after"), "{text}");
    assert!(
        text.contains("LEAK: a call left host memory held"),
        "{text}"
    );
}

#[test]
fn plugin_test_bounds_a_plugin_that_hangs_in_init_or_shutdown_by_its_timeout() {
    let hostile = built_wasm("ferry_test_hostile");
    // Each would block for an hour: the test reports the overrun and ends.
    let hang_init = r#"{"mode": "sleep-init", "sleep_ms": 3600000}"#;
    let (ok, r, _) = test(&hostile, &["--config", hang_init, "--timeout", "1s"]);
    assert!(!ok);
    assert_eq!(r["init_ok"], false, "{r:#}");
    assert!(
        r["calls"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did not finish init within 1s"),
        "{r:#}"
    );
    let hang_shutdown = r#"{"mode": "slow", "shutdown_sleep_ms": 3600000}"#;
    let started = std::time::Instant::now();
    let (ok, r, stderr) = test(&hostile, &["--config", hang_shutdown, "--timeout", "1s"]);
    assert!(ok, "{r:#}");
    assert!(
        stderr.contains("plugin did not finish shutdown within 1s"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
