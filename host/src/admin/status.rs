//! `/status.json`: the pipeline as a graph with live rates, and per component the figures of
//! `/metrics` (the same series, read from the same registry), the last errors and the reload
//! history. Rates are over the last few seconds: a task takes a snapshot of the registry every
//! second and keeps the last [`WINDOW`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::layout::{Layout, ProcessorLayout, Reload, unix_ms};
use crate::telemetry::{NoteSample, Sample, Telemetry, label};

/// Snapshots kept: rates are over the time between the oldest and the newest.
pub const WINDOW: usize = 6;

struct Snap {
    at: Instant,
    samples: Vec<Sample>,
    notes: Vec<NoteSample>,
}

/// The last snapshots of the registry.
#[derive(Clone)]
pub struct Window {
    telemetry: Arc<Telemetry>,
    snaps: Arc<Mutex<VecDeque<Snap>>>,
}

impl Window {
    /// A window over `telemetry`, with one snapshot taken now.
    pub fn new(telemetry: Arc<Telemetry>) -> Window {
        let w = Window {
            telemetry,
            snaps: Arc::default(),
        };
        w.take();
        w
    }

    /// Takes a snapshot, forgetting the oldest past [`WINDOW`].
    pub fn take(&self) {
        let (samples, notes) = self.telemetry.snapshot();
        let mut snaps = self.snaps.lock().expect("window lock");
        if snaps.len() == WINDOW {
            snaps.pop_front();
        }
        snaps.push_back(Snap {
            at: Instant::now(),
            samples,
            notes,
        });
    }

    /// Takes a snapshot every second until the task is dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.take();
        }
    }

    /// What is wrong now: exporters whose circuit is open, queues that refused writes in the
    /// window (at their budget, or a durable queue's storage failing).
    pub fn problems(&self, layout: &Layout) -> Vec<String> {
        self.fresh(|f| problems(f, layout))
    }

    /// `read` of the figures now (read now, so that they agree with `/metrics`) and the rates
    /// over the window.
    fn fresh<T>(&self, read: impl FnOnce(&Figures<'_>) -> T) -> T {
        self.take();
        let snaps = self.snaps.lock().expect("window lock");
        read(&Figures {
            old: snaps.front().expect("one"),
            new: snaps.back().expect("one"),
        })
    }

    /// The status now, with `layout`.
    pub fn status(&self, layout: &Layout) -> Status {
        self.fresh(|f| build(f, layout))
    }
}

/// What is wrong in `f`: see [`Window::problems`].
fn problems(f: &Figures<'_>, layout: &Layout) -> Vec<String> {
    let mut out = Vec::new();
    for e in &layout.exporters {
        let l = [("exporter", e.name.as_str())];
        if f.value("ferry_exporter_circuit_open", &l) > 0 {
            out.push(format!("exporter {}: circuit open", e.name));
        }
    }
    for s in SIGNALS {
        for (reason, what) in [
            ("queue_full", "at its budget"),
            ("storage", "its storage failing"),
        ] {
            let w = [("signal", s), ("reason", reason)];
            if f.rate("ferry_receiver_refused_requests_total", &w) > 0.0 {
                out.push(format!("{s} queue refuses writes ({what})"));
            }
        }
    }
    out
}

/// Two snapshots: figures are read from `new`, rates between `old` and `new`.
pub(super) struct Figures<'a> {
    old: &'a Snap,
    new: &'a Snap,
}

/// Whether `s` is `name` with every label of `with`.
fn matches(s: &Sample, name: &str, with: &[(&str, &str)]) -> bool {
    s.name == name && with.iter().all(|(k, v)| s.label(k) == *v)
}

fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| matches(s, name, with))
        .map(|s| s.value)
        .sum()
}

impl Figures<'_> {
    fn value(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        sum(&self.new.samples, name, with) as u64
    }

    /// The value, if some series matches.
    fn get(&self, name: &str, with: &[(&str, &str)]) -> Option<u64> {
        self.new
            .samples
            .iter()
            .any(|s| matches(s, name, with))
            .then(|| self.value(name, with))
    }

    /// Per second over the window, of the series `name` with `with`, summed.
    pub(super) fn rate(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let secs = self.new.at.duration_since(self.old.at).as_secs_f64();
        if secs < 0.5 {
            return 0.0;
        }
        let d = sum(&self.new.samples, name, with) - sum(&self.old.samples, name, with);
        (d.max(0.0) / secs * 10.0).round() / 10.0
    }

    /// Counts by the values of label `by`.
    fn by(&self, name: &str, with: &[(&str, &str)], by: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in self.new.samples.iter().filter(|s| matches(s, name, with)) {
            *out.entry(s.label(by).to_string()).or_default() += s.value as u64;
        }
        out
    }

    /// The `q` quantile (ms) of the histogram `name` over the window: the upper bound of the
    /// bucket it falls in; `None` without observations.
    fn quantile(&self, name: &str, with: &[(&str, &str)], q: f64) -> Option<f64> {
        let buckets = |samples: &[Sample]| -> Vec<(f64, u64)> {
            let mut out: Vec<(f64, u64)> = Vec::new();
            for s in samples.iter().filter(|s| matches(s, name, with)) {
                for (i, (bound, n)) in s.buckets.iter().enumerate() {
                    match out.get_mut(i) {
                        Some(b) => b.1 += n,
                        None => out.push((*bound, *n)),
                    }
                }
            }
            out
        };
        let (new, old) = (buckets(&self.new.samples), buckets(&self.old.samples));
        let delta: Vec<(f64, u64)> = new
            .iter()
            .enumerate()
            .map(|(i, (b, n))| (*b, n - old.get(i).map_or(0, |o| o.1)))
            .collect();
        let total = delta.last()?.1;
        if total == 0 {
            return None;
        }
        let at = delta.iter().find(|(_, n)| *n as f64 >= q * total as f64)?;
        // Past the last finite bound (30 s), the figure is unknown.
        at.0.is_finite().then_some(at.0 * 1000.0)
    }

    fn note(&self, name: &str, with: &[(&str, &str)]) -> Option<LastError> {
        self.new
            .notes
            .iter()
            .filter(|n| n.name == name && with.iter().all(|(k, v)| label(&n.labels, k) == *v))
            .max_by_key(|n| n.at)
            .map(|n| LastError {
                message: n.text.clone(),
                at_unix_ms: unix_ms(n.at),
            })
    }
}

/// `/status.json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Ferry's version.
    pub version: &'static str,
    /// Whether the daemon is started (plugins loaded, receivers listening).
    pub ready: bool,
    /// When the daemon started (Unix ms).
    pub started_unix_ms: i64,
    /// Seconds since.
    pub uptime_seconds: u64,
    /// The config file, if any.
    pub config_file: Option<String>,
    /// Seconds the rates are over.
    pub rate_window_seconds: f64,
    /// The receivers.
    pub receivers: Vec<ReceiverStatus>,
    /// The processors, of the ingest chain then of each exporter's.
    pub processors: Vec<ProcessorStatus>,
    /// One queue per signal.
    pub queues: Vec<QueueStatus>,
    /// The exporters.
    pub exporters: Vec<ExporterStatus>,
    /// The exporters' plugins.
    pub plugins: Vec<PluginStatus>,
    /// The pipeline as nodes and edges with their rates.
    pub graph: super::graph::Graph,
    /// The last reloads, oldest first.
    pub reloads: Vec<Reload>,
}

/// A message and when it came.
#[derive(Debug, Serialize)]
pub struct LastError {
    /// The message (control characters escaped, at most 512 characters).
    pub message: String,
    /// When (Unix ms).
    pub at_unix_ms: i64,
}

/// A receiver.
#[derive(Debug, Serialize)]
pub struct ReceiverStatus {
    /// Its name in the metrics (`otlp_grpc`, `zipkin`...).
    pub name: String,
    /// Items accepted, by signal.
    pub accepted_items: BTreeMap<String, u64>,
    /// Items accepted per second.
    pub accepted_per_second: f64,
    /// Requests refused, by reason.
    pub refused_requests: BTreeMap<String, u64>,
    /// Requests refused per second.
    pub refused_per_second: f64,
    /// The last refusal.
    pub last_error: Option<LastError>,
}

/// A processor in a chain.
#[derive(Debug, Serialize)]
pub struct ProcessorStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// `ingest`, or the exporter whose chain it is in.
    pub chain: String,
    /// Items it has seen, by outcome (kept, modified, dropped), in every chain it is in.
    pub items: BTreeMap<String, u64>,
    /// Items it sees per second.
    pub items_per_second: f64,
}

/// A signal's queue.
#[derive(Debug, Serialize)]
pub struct QueueStatus {
    /// `traces`, `metrics` or `logs`.
    pub signal: String,
    /// `memory` or `durable`.
    pub mode: String,
    /// Bytes held.
    pub bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
    /// The exporters reading it.
    pub exporters: Vec<String>,
    /// How far each exporter's cursor is behind the head.
    pub cursors: Vec<CursorStatus>,
}

/// An exporter's cursor in a queue.
#[derive(Debug, Serialize)]
pub struct CursorStatus {
    /// The exporter.
    pub exporter: String,
    /// Batches not yet exported.
    pub behind_records: u64,
    /// Their bytes.
    pub behind_bytes: u64,
    /// Their items (memory mode; `null` in durable mode, where it would mean reading them).
    pub behind_items: Option<u64>,
    /// Age of the oldest of them, in ms (memory mode; 0 when none).
    pub oldest_age_ms: Option<u64>,
}

/// An exporter.
#[derive(Debug, Serialize)]
pub struct ExporterStatus {
    /// Its name.
    pub name: String,
    /// The plugin it runs.
    pub plugin: String,
    /// The signals it takes.
    pub signals: Vec<String>,
    /// Its chain's processors.
    pub processors: Vec<String>,
    /// `ok`, `retrying` (a batch waits to be tried again) or `circuit_open`.
    pub state: &'static str,
    /// When the next waiting batch is tried (Unix ms), while `retrying`.
    pub next_attempt_unix_ms: Option<i64>,
    /// Until when the circuit is open (Unix ms), while `circuit_open`.
    pub circuit_open_until_unix_ms: Option<i64>,
    /// The last failed attempt's error.
    pub last_error: Option<LastError>,
    /// Items exported.
    pub sent_items: u64,
    /// Items exported per second.
    pub sent_per_second: f64,
    /// Items given up on, by reason.
    pub dropped_items: BTreeMap<String, u64>,
    /// Failed attempts, by kind.
    pub failed_attempts: BTreeMap<String, u64>,
    /// Median plugin call time over the window (ms, a bucket bound), if any call.
    pub call_p50_ms: Option<f64>,
    /// 99th percentile likewise.
    pub call_p99_ms: Option<f64>,
    /// Plugin calls running now.
    pub calls_in_flight: u64,
}

/// An exporter's plugin.
#[derive(Debug, Serialize)]
pub struct PluginStatus {
    /// The exporter running it.
    pub exporter: String,
    /// What it is, where it came from, its caps.
    #[serde(flatten)]
    pub layout: super::layout::PluginLayout,
    /// Instances created so far.
    pub instances_created: u64,
    /// The most linear memory one instance held at the end of a call.
    pub memory_peak_bytes: u64,
    /// The most host memory one instance held during a call.
    pub host_memory_peak_bytes: u64,
    /// Faults, by reason (trap, timeout, memory, host_resources).
    pub faults: BTreeMap<String, u64>,
}

/// The signals, as the metrics label them.
pub(super) const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];

fn names(p: &[ProcessorLayout]) -> Vec<String> {
    p.iter().map(|p| p.name.clone()).collect()
}

fn build(f: &Figures<'_>, layout: &Layout) -> Status {
    let mut receivers: Vec<String> = f
        .new
        .samples
        .iter()
        .filter(|s| s.name == "ferry_receiver_accepted_items_total")
        .map(|s| s.label("receiver").to_string())
        .collect();
    receivers.dedup();
    let receivers: Vec<ReceiverStatus> = receivers
        .into_iter()
        .map(|name| {
            let r = [("receiver", name.as_str())];
            ReceiverStatus {
                accepted_items: f.by("ferry_receiver_accepted_items_total", &r, "signal"),
                accepted_per_second: f.rate("ferry_receiver_accepted_items_total", &r),
                refused_requests: f.by("ferry_receiver_refused_requests_total", &r, "reason"),
                refused_per_second: f.rate("ferry_receiver_refused_requests_total", &r),
                last_error: f.note("receiver_last_error", &r),
                name,
            }
        })
        .collect();
    let processor = |p: &ProcessorLayout, chain: &str| {
        let l = [("processor", p.name.as_str())];
        ProcessorStatus {
            name: p.name.clone(),
            kind: p.kind.clone(),
            chain: chain.to_string(),
            items: f.by("ferry_processor_items_total", &l, "outcome"),
            items_per_second: f.rate("ferry_processor_items_total", &l),
        }
    };
    let mut processors: Vec<ProcessorStatus> = layout
        .ingest
        .iter()
        .map(|p| processor(p, "ingest"))
        .collect();
    for e in &layout.exporters {
        processors.extend(e.processors.iter().map(|p| processor(p, &e.name)));
    }
    let queues = SIGNALS
        .iter()
        .map(|s| {
            let l = [("signal", *s)];
            QueueStatus {
                signal: s.to_string(),
                mode: layout.queue_mode.clone(),
                bytes: f.value("ferry_queue_bytes", &l),
                budget_bytes: f.value("ferry_queue_capacity_bytes", &l),
                exporters: layout
                    .exporters
                    .iter()
                    .filter(|e| e.signals.iter().any(|x| x == s))
                    .map(|e| e.name.clone())
                    .collect(),
                cursors: layout
                    .exporters
                    .iter()
                    .filter(|e| e.signals.iter().any(|x| x == s))
                    .map(|e| {
                        let c = [("signal", *s), ("exporter", e.name.as_str())];
                        CursorStatus {
                            exporter: e.name.clone(),
                            behind_records: f.value("ferry_queue_behind_records", &c),
                            behind_bytes: f.value("ferry_queue_behind_bytes", &c),
                            behind_items: f.get("ferry_queue_behind_items", &c),
                            oldest_age_ms: f.get("ferry_queue_behind_age_ms", &c),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let exporters = layout.exporters.iter().map(|e| exporter(f, e)).collect();
    let plugins = layout
        .exporters
        .iter()
        .filter_map(|e| {
            let l = [("exporter", e.name.as_str())];
            Some(PluginStatus {
                exporter: e.name.clone(),
                layout: e.component.clone()?,
                instances_created: f.value("ferry_exporter_instances_created_total", &l),
                memory_peak_bytes: f.value("ferry_exporter_memory_peak_bytes", &l),
                host_memory_peak_bytes: f.value("ferry_exporter_host_bytes_peak", &l),
                faults: f.by("ferry_exporter_faults_total", &l, "reason"),
            })
        })
        .collect();
    let now = unix_ms(std::time::SystemTime::now());
    Status {
        version: env!("CARGO_PKG_VERSION"),
        ready: layout.ready,
        started_unix_ms: layout.started_unix_ms,
        uptime_seconds: u64::try_from((now - layout.started_unix_ms) / 1000).unwrap_or(0),
        config_file: layout.config_file.clone(),
        rate_window_seconds: f.new.at.duration_since(f.old.at).as_secs_f64(),
        graph: super::graph::graph(f, layout, &receivers),
        receivers,
        processors,
        queues,
        exporters,
        plugins,
        reloads: layout.reloads.iter().cloned().collect(),
    }
}

fn exporter(f: &Figures<'_>, e: &super::layout::ExporterLayout) -> ExporterStatus {
    let l = [("exporter", e.name.as_str())];
    let open = f.value("ferry_exporter_circuit_open", &l) > 0;
    let retrying = f.value("ferry_exporter_retrying_batches", &l) > 0;
    let next_attempt = f
        .new
        .samples
        .iter()
        .filter(|s| matches(s, "ferry_exporter_next_attempt_unix_ms", &l) && s.value > 0.0)
        .map(|s| s.value as i64)
        .min();
    let open_until = f.value("ferry_exporter_circuit_open_until_unix_ms", &l) as i64;
    ExporterStatus {
        name: e.name.clone(),
        plugin: e.plugin.clone(),
        signals: e.signals.clone(),
        processors: names(&e.processors),
        state: match (open, retrying) {
            (true, _) => "circuit_open",
            (false, true) => "retrying",
            (false, false) => "ok",
        },
        next_attempt_unix_ms: next_attempt.filter(|_| retrying),
        circuit_open_until_unix_ms: (open && open_until > 0).then_some(open_until),
        last_error: f.note("exporter_last_error", &l),
        sent_items: f.value("ferry_exporter_sent_items_total", &l),
        sent_per_second: f.rate("ferry_exporter_sent_items_total", &l),
        dropped_items: f.by("ferry_exporter_dropped_items_total", &l, "reason"),
        failed_attempts: f.by("ferry_exporter_failed_attempts_total", &l, "kind"),
        call_p50_ms: f.quantile("ferry_exporter_call_duration_seconds", &l, 0.5),
        call_p99_ms: f.quantile("ferry_exporter_call_duration_seconds", &l, 0.99),
        calls_in_flight: f.value("ferry_exporter_calls_in_flight", &l),
    }
}

/// Serves `/status.json` from `window` and `layout`.
#[derive(Clone)]
pub struct StatusSource {
    /// The registry's last snapshots.
    pub window: Window,
    /// The pipeline as configured.
    pub layout: watch::Receiver<Layout>,
}

impl StatusSource {
    /// Whether the daemon is started, and what is wrong with it now.
    pub fn health(&self) -> (bool, Vec<String>) {
        let layout = self.layout.borrow().clone();
        (layout.ready, self.window.problems(&layout))
    }

    /// The status now.
    pub fn status(&self) -> Status {
        let layout = self.layout.borrow().clone();
        self.window.status(&layout)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::ExporterLayout;
    use super::*;

    fn layout() -> Layout {
        Layout {
            config_file: None,
            started_unix_ms: 0,
            queue_mode: "memory".into(),
            ingest: vec![ProcessorLayout {
                name: "env".into(),
                kind: "resource".into(),
            }],
            exporters: vec![ExporterLayout {
                name: "x".into(),
                plugin: "otlp-http".into(),
                signals: vec!["traces".into()],
                processors: Vec::new(),
                component: None,
            }],
            reloads: VecDeque::new(),
            ready: true,
        }
    }

    #[test]
    fn figures_come_from_the_registry_and_rates_from_two_snapshots() {
        let t = Telemetry::new();
        let accepted = t.counter(
            "ferry_receiver_accepted_items_total",
            "",
            &[("receiver", "otlp_http"), ("signal", "traces")],
        );
        let sent = t.counter(
            "ferry_exporter_sent_items_total",
            "",
            &[("exporter", "x"), ("signal", "traces")],
        );
        let calls = t.histogram(
            "ferry_exporter_call_duration_seconds",
            "",
            &[("exporter", "x")],
        );
        let snap = |at: Instant| {
            let (samples, notes) = t.snapshot();
            Snap { at, samples, notes }
        };
        let t0 = Instant::now();
        let old = snap(t0);
        accepted.add(40);
        sent.add(30);
        for ms in [1, 2, 3, 200] {
            calls.observe(Duration::from_millis(ms));
        }
        t.gauge(
            "ferry_exporter_retrying_batches",
            "",
            &[("exporter", "x"), ("signal", "traces")],
        )
        .set(1);
        t.note(
            "exporter_last_error",
            &[("exporter", "x"), ("signal", "traces")],
        )
        .set("HTTP 503");
        let new = snap(t0 + Duration::from_secs(2));
        let st = build(
            &Figures {
                old: &old,
                new: &new,
            },
            &layout(),
        );
        assert_eq!(st.receivers[0].name, "otlp_http");
        assert_eq!(st.receivers[0].accepted_per_second, 20.0);
        let x = &st.exporters[0];
        assert_eq!(
            (x.sent_items, x.sent_per_second, x.state),
            (30, 15.0, "retrying")
        );
        assert_eq!(x.last_error.as_ref().unwrap().message, "HTTP 503");
        assert_eq!((x.call_p50_ms, x.call_p99_ms), (Some(2.5), Some(250.0)));
        let edge = |from: &str, to: &str| {
            st.graph
                .edges
                .iter()
                .find(|e| e.from == from && e.to == to)
                .unwrap_or_else(|| panic!("no edge {from} -> {to}: {:?}", st.graph.edges))
                .items_per_second
        };
        assert_eq!(edge("receiver:otlp_http", "processor:ingest:env"), 20.0);
        assert_eq!(edge("queue:traces", "exporter:x"), 15.0);
        assert!(
            !st.graph.nodes.iter().any(|n| n.id == "queue:logs"),
            "no exporter takes logs"
        );
    }
}
