//! `ferry tap`: at low rates it shows exactly what an exporter is handed (checked against the
//! backend), and what another one gave up on, with why; the admin endpoint's `/tap` behind it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::harness::{
    Ferry, PREAMBLE, Script, Sink, eventually, ferry_command, post_traces, request, span_names,
    traces_request,
};

/// `ferry tap POINT --count N` on `f`, once it says it listens.
fn tap(f: &Ferry, point: &str, count: u64) -> Child {
    let mut child = ferry_command()
        .args(["tap", point, "--rate", "100", "--count", &count.to_string()])
        .args(["--admin", &f.admin.unwrap().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"tapping\""), "{first}");
    child
}

/// The span names in the requests of the tap's output lines, and the lines.
fn tapped(child: Child) -> (BTreeSet<String>, Vec<serde_json::Value>) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names = lines
        .iter()
        .flat_map(|l| {
            l["request"]["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    (names, lines)
}

/// The tap's output, or a failure if it never ends (it ends after its count of batches).
async fn within<T>(h: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(120), h)
        .await
        .expect("the tap ends after its count")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_tap_shows_what_an_exporter_is_handed_and_what_another_dropped() {
    let good = Sink::start(Script::default()).await;
    let bad = Sink::start(Script {
        then: 400,
        ..Default::default()
    })
    .await;
    let f = Ferry::start(
        "tap",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.good]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            [exporters.bad]
            plugin = "otlp-http"
            config = {{ endpoint = "{}" }}
            "#,
            good.url(),
            bad.url()
        ),
    );
    let (status, _, points) = request(
        "GET",
        &format!("http://{}/tap/points", f.admin.unwrap()),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let points: Vec<String> = serde_json::from_slice(&points).unwrap();
    for p in ["receiver:otlp_http", "exporter:good", "dropped:bad"] {
        assert!(points.iter().any(|x| x == p), "{p} in {points:?}");
    }
    let handed = tap(&f, "exporter:good", 5);
    let dropped = tap(&f, "dropped:bad", 5);
    // One request at a time, each its own batch.
    for r in 0..5u64 {
        let (status, _, _) = post_traces(&f, traces_request(3, &format!("tap-{r}"), r * 10)).await;
        assert_eq!(status, 200);
        eventually("the request reaches the backend", async || {
            span_names(&good).len() == 3 * (r as usize + 1)
        })
        .await;
    }
    let (seen, lines) = within(tokio::task::spawn_blocking(move || tapped(handed))).await;
    let delivered: BTreeSet<String> = span_names(&good).into_iter().collect();
    assert_eq!(seen, delivered, "exactly what the backend got");
    assert_eq!(lines.len(), 5);
    assert!(
        lines
            .iter()
            .all(|l| l["point"] == "exporter:good" && l["items"] == 3)
    );

    let (gave_up, lines) = within(tokio::task::spawn_blocking(move || tapped(dropped))).await;
    assert_eq!(gave_up, delivered, "bad gave up on the same spans");
    for l in &lines {
        let why = l["reason"].as_str().unwrap();
        assert!(
            why.starts_with("permanent: ") && why.contains("400"),
            "{why}"
        );
    }

    // Wrong requests are named.
    let admin = f.admin.unwrap();
    let get = async |q: &str| {
        let (status, _, body) =
            request("GET", &format!("http://{admin}/tap{q}"), &[], vec![]).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = get("?point=exporter:nope").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no tap point \"exporter:nope\" (there are: "),
        "{body}"
    );
    assert_eq!(get("").await.0, 400);
    assert!(
        get("?point=processors&rate=0")
            .await
            .1
            .contains("rate 0 must be above 0")
    );
}
