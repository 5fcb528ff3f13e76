//! Contract versions: a plugin built against an older `ferry:plugin` version keeps working.
//!
//! `tests/fixtures/otlp-http-contract-0_1_0.wasm` and `-0_2_0.wasm` are the `otlp-http` plugin
//! as ferry-sdk built it for `ferry:plugin@0.1.0` (every batch copied into the plugin as
//! `list<u8>`) and `@0.2.0` (the batch lent as a handle), kept as binaries because that is what
//! a user upgrading the daemon still has.

use std::path::Path;

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, eventually, ferry_command, post_traces, span_names,
    traces_request,
};

fn fixture_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for (name, version) in [("legacy", "0_1_0"), ("older", "0_2_0")] {
        let fixture = fixtures.join(format!("otlp-http-contract-{version}.wasm"));
        std::fs::copy(fixture, dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_built_for_contracts_0_1_0_and_0_2_0_still_load_and_export() {
    let dir = fixture_dir();
    let out = ferry_command()
        .args(["plugins", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    // NAME VERSION SIGNALS ENCODING CONTRACT KIND SOURCE
    let contract = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .to_string()
    };
    assert_eq!(contract("legacy"), "0.1.0", "{listing}");
    assert_eq!(contract("older"), "0.2.0", "{listing}");
    assert_eq!(contract("otlp-http"), "0.3.0", "{listing}");

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
            config = {{ endpoint = "{url}" }}
            [exporters.older]
            plugin = "older"
            config = {{ endpoint = "{url}" }}
            "#,
            dir.path().display(),
            url = sink.url()
        ),
    );
    let (status, _, _) = post_traces(&ferry, traces_request(3, "legacy", 1)).await;
    assert_eq!(status, 200);
    eventually("the spans at the sink, once per exporter", async || {
        span_names(&sink).len() == 6
    })
    .await;
    let mut names = span_names(&sink);
    names.sort();
    assert_eq!(
        names,
        [
            "legacy-0", "legacy-0", "legacy-1", "legacy-1", "legacy-2", "legacy-2"
        ]
    );
    for version in ["0.1.0", "0.2.0"] {
        assert!(
            ferry.logs().contains(&format!("contract=\"{version}\"")),
            "{}",
            ferry.logs()
        );
    }
}
