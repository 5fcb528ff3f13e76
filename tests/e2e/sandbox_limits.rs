//! What a plugin can take from the host besides its own memory and CPU: host memory through
//! its resources, time in calls other than `export` (at start, in a reload, at exit), and the
//! log. Each hostile exporter runs next to a well-behaved one that must receive every span.

use std::time::{Duration, Instant};

use crate::harness::{Ferry, Script, Sink, eventually};
use crate::sandbox::{config_with, hostile, hostile_timed, plugin_dir, send, setup_with};

/// An exporter of the hostile plugin with a 10 s call limit: long enough that, unbounded, a
/// hoarding call would get to its 1 GiB.
fn hoarder(name: &str, mode: &str) -> String {
    hostile_timed(
        name,
        "10s",
        &format!("memory = \"16MiB\"\nconfig = {{ mode = \"{mode}\" }}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hoarding_host_resources_is_bounded_and_faults_with_host_resources() {
    let exporters = [
        hoarder("hoard-fields", "hoard-fields"),
        hoarder("hoard-bodies", "hoard-bodies"),
    ]
    .concat();
    let mut s = setup_with("hoard", &exporters, &[]).await;
    let baseline = s.ferry.status_kib("VmRSS");
    let sent = send(&s.ferry, 4, 3).await;
    s.good_gets_everything(&sent).await;
    for name in ["hoard-fields", "hoard-bodies"] {
        let e = format!("exporter=\"{name}\"");
        eventually(
            &format!("{name} faults for its host resources"),
            async || {
                s.metric(
                    "ferry_exporter_faults_total",
                    &[&e, "reason=\"host_resources\""],
                )
                .await
                    >= 2
            },
        )
        .await;
        s.logged(name, "plugin exceeded its host resource limit")
            .await;
        let peak = s.metric("ferry_exporter_host_bytes_peak", &[&e]).await;
        assert!(
            (16 << 20..24 << 20).contains(&peak),
            "{name}: peak host bytes {peak} should be just past host_memory (16 MiB)"
        );
    }
    // Each hoarding call is stopped one step past `host_memory` (16 MiB), with its 16 MiB of
    // linear memory: with up to 4 calls in flight for each of the two exporters that is about
    // 256 MiB at worst. Unbounded, a single call would hold 1 GiB.
    let grown_mib = s.ferry.status_kib("VmHWM").saturating_sub(baseline) >> 10;
    assert!(
        grown_mib < 400,
        "peak RSS grew by {grown_mib} MiB over the baseline"
    );
    s.alive();
}

/// The hostile plugin with a file named `hang-describe` in its granted directory, so that
/// its `describe` blocks for an hour.
fn hanging_describe(name: &str, dir: &std::path::Path) -> String {
    hostile(
        name,
        &format!(
            "granted_dir = \"{}\"\nconfig = {{ mode = \"slow\", sleep_ms = 0 }}",
            dir.display()
        ),
    )
}

fn marker_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hang-describe"), "").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_hanging_in_describe_or_init_at_start_costs_only_its_timeout() {
    let marker = marker_dir();
    let exporters = [
        hanging_describe("describe-hang", marker.path()),
        hostile(
            "init-hang",
            "config = { mode = \"sleep-init\", sleep_ms = 3600000 }",
        ),
    ]
    .concat();
    let mut s = setup_with("hang-start", &exporters, &[]).await;
    s.logged("describe-hang", "plugin did not finish describe within 1s")
        .await;
    s.logged("describe-hang", "the daemon starts without this exporter")
        .await;
    s.logged("init-hang", "plugin did not finish init within 1s")
        .await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;
    eventually("init-hang keeps timing out, counted", async || {
        s.metric(
            "ferry_exporter_faults_total",
            &["exporter=\"init-hang\"", "reason=\"timeout\""],
        )
        .await
            >= 2
    })
    .await;
    // Its circuit opens on the run of faults, and /healthz says so.
    let health = format!("http://{}/healthz", s.ferry.admin.unwrap());
    eventually("/healthz names the open circuit", async || {
        let (status, _, body) = crate::harness::request("GET", &health, &[], vec![]).await;
        status == 200 && String::from_utf8_lossy(&body).contains("exporter init-hang: circuit open")
    })
    .await;
    let strict = format!("{health}?strict");
    eventually("a strict probe gets 503 while it is degraded", async || {
        crate::harness::request("GET", &strict, &[], vec![]).await.0 == 503
    })
    .await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_and_sigterm_are_never_held_by_a_plugin() {
    let good = Sink::start(Script::default()).await;
    let plugins = plugin_dir();
    let marker = marker_dir();
    // Several instances (slow exports, 16 at once), each blocking an hour in `shutdown`.
    let stuck = hostile(
        "stuck",
        "concurrency = 16\nconfig = { mode = \"slow\", sleep_ms = 300, shutdown_sleep_ms = 3600000 }",
    );
    let config = |extra: &str| config_with(plugins.path(), &good, "drain_timeout = \"3s\"", extra);
    let mut ferry = Ferry::start("hang-reload", &config(&stuck));
    let sent = send(&ferry, 8, 2).await;
    let reload = |toml: String| std::fs::write(ferry.config_path(), toml).unwrap();

    // A reload adding a plugin that hangs in `describe` fails with the reason after its
    // timeout; everything running stays.
    reload(config(&format!(
        "{stuck}{}",
        hanging_describe("describe-hang", marker.path())
    )));
    eventually("the reload is rejected", async || {
        ferry
            .metric("ferry_config_reloads_total", &["result=\"load_failed\""])
            .await
            == 1
    })
    .await;
    ferry
        .logged("exporters.describe-hang (plugin hostile")
        .await;
    ferry
        .logged("plugin did not finish describe within 1s")
        .await;
    eventually("the good exporter keeps receiving", async || {
        crate::harness::span_names(&good).len() >= sent.len()
    })
    .await;

    // Back to the first config, then SIGTERM: the stuck plugin's instances get 1 s each, all
    // at once, and the daemon exits.
    reload(config(&stuck));
    eventually("the reload back is applied", async || {
        ferry
            .metric("ferry_config_reloads_total", &["result=\"ok\""])
            .await
            == 1
    })
    .await;
    let started = Instant::now();
    let status = ferry.terminate();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    // drain_timeout (3 s) plus the shutdown's share; unbounded, this would be an hour.
    assert!(took < Duration::from_secs(30), "SIGTERM took {took:?}");
    ferry
        .logged("plugin did not finish shutdown within 1s; instance dropped")
        .await;
    assert!(
        ferry
            .logs()
            .lines()
            .any(|l| l.contains("did not finish shutdown") && l.contains("exporter=\"stuck\"")),
        "the overrun names its exporter"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_plugin_that_hangs_in_shutdown_does_not_block_the_daemon() {
    let good = Sink::start(Script::default()).await;
    let plugins = plugin_dir();
    let config = |extra: &str| config_with(plugins.path(), &good, "", extra);
    let stuck = hostile_timed(
        "stuck",
        "5s",
        "config = { mode = \"slow\", sleep_ms = 0, shutdown_sleep_ms = 3600000 }",
    );
    let ferry = Ferry::start("hang-remove", &config(&stuck));
    let first = send(&ferry, 1, 1).await;
    std::fs::write(ferry.config_path(), config("")).unwrap();
    ferry.logged("reload applied").await;
    // The main loop is free while the removed plugin is still in its 5 s shutdown: another
    // reload is taken at once.
    let sent = send(&ferry, 2, 2).await;
    ferry.signal("HUP");
    eventually("the SIGHUP reload is answered", async || {
        ferry.log_count("reloading the config (SIGHUP)") == 1
    })
    .await;
    assert_eq!(
        ferry.log_count("did not finish shutdown"),
        0,
        "the SIGHUP reload was answered before the removed plugin's shutdown ran out"
    );
    eventually("the good exporter receives everything", async || {
        crate::harness::span_names(&good).len() >= first.len() + sent.len()
    })
    .await;
    eventually("the removed plugin's overrun is logged", async || {
        ferry.logs().lines().any(|l| {
            l.contains("exporter=\"stuck\"") && l.contains("did not finish shutdown within 5s")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_can_neither_flood_nor_forge_the_log() {
    let exporters = [
        hostile(
            "flood",
            "config = { mode = \"flood\", count = 60, size = 1048576 }",
        ),
        hostile(
            "big-error",
            "memory = \"256MiB\"\nconfig = { mode = \"big-error\", size = 100000000 }",
        ),
        hostile("forge", "config = { mode = \"forge\" }"),
    ]
    .concat();
    let mut s = setup_with("flood", &exporters, &[]).await;
    let sent = send(&s.ferry, 3, 2).await;
    s.good_gets_everything(&sent).await;
    eventually("the flood is rate-limited and counted", async || {
        s.metric(
            "ferry_exporter_log_messages_dropped_total",
            &["exporter=\"flood\""],
        )
        .await
            >= 60
    })
    .await;
    s.logged("flood", "plugin log rate limit:").await;
    s.logged("big-error", "bytes truncated").await;
    s.logged("forge", "looks fine\\n2026-12-02T00:00:00.000000Z")
        .await;
    eventually("every big error is counted", async || {
        s.metric(
            "ferry_exporter_dropped_items_total",
            &["exporter=\"big-error\"", "reason=\"permanent\""],
        )
        .await
            == 6
    })
    .await;
    let logs = s.ferry.logs();
    // 180 messages of 1 MiB and three of 100 MB: what reaches the log is capped at 4 KiB a
    // message and 100 messages a second.
    assert!(
        logs.len() < 2 << 20,
        "{} bytes of log from a flood",
        logs.len()
    );
    for line in logs.lines() {
        assert!(
            !line.starts_with("2026-12-02T00:00:00.000000Z"),
            "a plugin forged a log line: {line}"
        );
        // The forged text stays inside a line of the forging exporter, whose own fields the
        // host writes after it.
        assert!(
            !line.contains("all data lost")
                || line.rfind("exporter=\"") == line.rfind("exporter=\"forge\""),
            "a plugin's text passed for another exporter's: {line}"
        );
    }
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_plugin_never_traps_for_printing_and_its_panic_is_in_the_fault_line() {
    let mut s = setup_with(
        "chatty",
        &hostile(
            "chatty",
            "concurrency = 1\nconfig = { mode = \"chatty\", every = 40, size = 1000 }",
        ),
        &[],
    )
    .await;
    // 39 calls print 39 KB to stderr (more than a 16 KiB buffer) and succeed.
    let sent = send(&s.ferry, 39, 1).await;
    s.good_gets_everything(&sent).await;
    let e = "exporter=\"chatty\"";
    eventually("every chatty call succeeds", async || {
        s.metric("ferry_exporter_sent_items_total", &[e]).await == 39
    })
    .await;
    assert_eq!(s.metric("ferry_exporter_faults_total", &[e]).await, 0);
    // The 40th call panics: the fault line carries the panic, not old chatter.
    send(&s.ferry, 1, 1).await;
    s.logged("chatty", "chatty plugin panics on call 40").await;
    s.alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exporter_removed_and_added_back_at_once_resumes_after_its_old_self() {
    let good = Sink::start(Script::default()).await;
    let plugins = plugin_dir();
    let config = |extra: &str| config_with(plugins.path(), &good, "", extra);
    // Each export takes 1.5 s: the removed exporter is still in one when it comes back.
    let slow = hostile_timed(
        "slowpoke",
        "10s",
        "config = { mode = \"slow\", sleep_ms = 1500 }",
    );
    let ferry = Ferry::start("re-add", &config(&slow));
    send(&ferry, 1, 2).await;
    for (n, toml) in [(1, config("")), (2, config(&slow))] {
        std::fs::write(ferry.config_path(), toml).unwrap();
        ferry.signal("HUP");
        eventually("the reload is applied", async || {
            ferry.log_count("reload applied") == n
        })
        .await;
    }
    let back = Instant::now();
    // It resumes from its old self's cursor once that one has finished its export in hand:
    // what arrived meanwhile reaches it (the interrupted batch, maybe again: never lost).
    send(&ferry, 3, 2).await;
    eventually(
        "the exporter that came back exports what followed",
        async || {
            ferry
                .metric(
                    "ferry_exporter_sent_items_total",
                    &["exporter=\"slowpoke\""],
                )
                .await
                >= 6
        },
    )
    .await;
    // The old one finished the export in hand first (1.5 s) before the new one started.
    assert!(back.elapsed() >= Duration::from_millis(1500));
    assert_eq!(ferry.log_count("instance discarded"), 0);
}
