//! Contract versions: a plugin built against an older `ferry:plugin` version keeps working.
//!
//! `tests/fixtures/otlp-http-contract-0_1_0.wasm` is the `otlp-http` plugin as built by ferry-sdk for
//! `ferry:plugin@0.1.0` (every batch copied into the plugin as `list<u8>`), kept as a binary
//! because that is what a user upgrading the daemon still has.

use std::path::Path;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, eventually, ferry_command, post_traces, span_names,
    traces_request,
};

fn fixture_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/otlp-http-contract-0_1_0.wasm");
    std::fs::copy(fixture, dir.path().join("legacy.wasm")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_for_contract_0_1_0_still_loads_and_exports() {
    let dir = fixture_dir();
    let out = ferry_command()
        .args(["plugins", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    // NAME VERSION SIGNALS ENCODING CONTRACT SOURCE
    let contract = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .to_string()
    };
    assert_eq!(contract("legacy"), "0.1.0", "{listing}");
    assert_eq!(contract("otlp-http"), "0.2.0", "{listing}");

    let sink = Sink::start(Script::default()).await;
    let ferry = Ferry::start(
        "legacy-contract",
        &format!(
            r#"
            {PREAMBLE}
            [plugins]
            dir = "{}"
            [exporters.old]
            plugin = "legacy"
            config = {{ endpoint = "{}" }}
            "#,
            dir.path().display(),
            sink.url()
        ),
    );
    let (status, _, _) = post_traces(&ferry, traces_request(3, "legacy", 1)).await;
    assert_eq!(status, 200);
    eventually("the spans at the sink", async || {
        span_names(&sink).len() == 3
    })
    .await;
    let mut names = span_names(&sink);
    names.sort();
    assert_eq!(names, ["legacy-0", "legacy-1", "legacy-2"]);
    assert!(
        ferry.logs().contains("contract=\"0.1.0\""),
        "{}",
        ferry.logs()
    );
}
