//! Self-metrics: counters, gauges and histograms rendered in the Prometheus text format.
//!
//! Components register their series once at start-up and keep the returned handles, so the hot
//! path only touches an atomic.

pub mod tap;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bucket bounds (seconds) for call latency histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram(Arc::new(HistogramInner {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.0.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Debug)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: &'static str,
    /// By their labels rendered; with the labels as given.
    series: BTreeMap<String, (Labels, Series)>,
}

/// Labels as given: name and value.
pub type Labels = Vec<(String, String)>;

/// The last message of some kind (an error) and when it came: for the status page, not for
/// `/metrics`, whose values are numbers.
#[derive(Clone, Debug, Default)]
pub struct Note(Arc<Mutex<Option<(String, std::time::SystemTime)>>>);

/// Longest note kept, in characters; the rest is cut.
const NOTE_CHARS: usize = 512;

impl Note {
    /// Records `text` (cut to 512 characters, control characters escaped) as of now.
    pub fn set(&self, text: &str) {
        let mut kept = String::with_capacity(text.len().min(NOTE_CHARS));
        for (i, c) in text.chars().enumerate() {
            if i == NOTE_CHARS {
                kept.push('…');
                break;
            }
            if c.is_control() {
                kept.extend(c.escape_default());
            } else {
                kept.push(c);
            }
        }
        *self.0.lock().expect("note lock") = Some((kept, std::time::SystemTime::now()));
    }

    /// The text and when it was set, if ever.
    pub fn get(&self) -> Option<(String, std::time::SystemTime)> {
        self.0.lock().expect("note lock").clone()
    }
}

/// One series at a moment, for the status page.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The metric's name.
    pub name: &'static str,
    /// Its labels.
    pub labels: Labels,
    /// A counter's or gauge's value; a histogram's count.
    pub value: f64,
    /// A histogram's cumulative bucket counts by upper bound (seconds), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
}

impl Sample {
    /// The value of label `key`, or `""`.
    pub fn label(&self, key: &str) -> &str {
        label(&self.labels, key)
    }
}

/// The value of label `key` in `labels`, or `""`.
pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// A note at a moment.
#[derive(Clone, Debug)]
pub struct NoteSample {
    /// The note's name.
    pub name: &'static str,
    /// Its labels.
    pub labels: Labels,
    /// Its text.
    pub text: String,
    /// When it was set.
    pub at: std::time::SystemTime,
}

/// Refreshes gauges that are read from elsewhere, just before rendering.
type Refresh = Box<dyn Fn() + Send + Sync>;

/// The daemon's metric registry.
#[derive(Default)]
pub struct Telemetry {
    families: Mutex<BTreeMap<&'static str, Family>>,
    refreshers: Mutex<Vec<Refresh>>,
    notes: Mutex<Notes>,
    taps: tap::Taps,
}

/// Notes by name and rendered labels, with the labels as given.
type Notes = BTreeMap<(&'static str, String), (Labels, Note)>;

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn label_key(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{escaped}\"");
    }
    out
}

impl Telemetry {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn series<T>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
        pick: impl FnOnce(&Series) -> Option<T>,
    ) -> T {
        let mut families = self.families.lock().expect("telemetry lock");
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(family.kind, kind, "metric {name} registered with two kinds");
        let (_, series) = family
            .series
            .entry(label_key(labels))
            .or_insert_with(|| (owned(labels), make()));
        pick(series).expect("metric kind checked above")
    }

    /// The counter `name{labels}`, created on first use.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        self.series(
            name,
            help,
            "counter",
            labels,
            || Series::Counter(Counter::default()),
            |s| match s {
                Series::Counter(c) => Some(c.clone()),
                _ => None,
            },
        )
    }

    /// The gauge `name{labels}`, created on first use.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        self.series(
            name,
            help,
            "gauge",
            labels,
            || Series::Gauge(Gauge::default()),
            |s| match s {
                Series::Gauge(g) => Some(g.clone()),
                _ => None,
            },
        )
    }

    /// The histogram `name{labels}`, created on first use.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Histogram {
        self.series(
            name,
            help,
            "histogram",
            labels,
            || Series::Histogram(Histogram::new()),
            |s| match s {
                Series::Histogram(h) => Some(h.clone()),
                _ => None,
            },
        )
    }

    /// Runs `f` before every render (for gauges whose value lives elsewhere, such as queue
    /// sizes, so the hot path never updates them).
    pub fn on_render(&self, f: impl Fn() + Send + Sync + 'static) {
        self.refreshers
            .lock()
            .expect("telemetry lock")
            .push(Box::new(f));
    }

    /// Renders every series in the Prometheus text exposition format.
    /// The tap points ([`tap`]).
    pub fn taps(&self) -> &tap::Taps {
        &self.taps
    }

    /// The note `name` with `labels` (the same one for the same name and labels).
    pub fn note(&self, name: &'static str, labels: &[(&str, &str)]) -> Note {
        let mut notes = self.notes.lock().expect("telemetry lock");
        let (_, note) = notes
            .entry((name, label_key(labels)))
            .or_insert_with(|| (owned(labels), Note::default()));
        note.clone()
    }

    fn refresh(&self) {
        for refresh in self.refreshers.lock().expect("telemetry lock").iter() {
            refresh();
        }
    }

    /// Every series' value now, and every note set.
    pub fn snapshot(&self) -> (Vec<Sample>, Vec<NoteSample>) {
        self.refresh();
        let mut samples = Vec::new();
        for (name, family) in self.families.lock().expect("telemetry lock").iter() {
            for (labels, series) in family.series.values() {
                let (value, buckets) = match series {
                    Series::Counter(c) => (c.get() as f64, Vec::new()),
                    Series::Gauge(g) => (g.get() as f64, Vec::new()),
                    Series::Histogram(h) => {
                        let count = h.0.count.load(Ordering::Relaxed);
                        let mut b: Vec<(f64, u64)> = LATENCY_BUCKETS
                            .iter()
                            .zip(&h.0.buckets)
                            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
                            .collect();
                        b.push((f64::INFINITY, count));
                        (count as f64, b)
                    }
                };
                samples.push(Sample {
                    name,
                    labels: labels.clone(),
                    value,
                    buckets,
                });
            }
        }
        let notes = self.notes.lock().expect("telemetry lock");
        let notes = notes
            .iter()
            .filter_map(|((name, _), (labels, note))| {
                let (text, at) = note.get()?;
                Some(NoteSample {
                    name,
                    labels: labels.clone(),
                    text,
                    at,
                })
            })
            .collect();
        (samples, notes)
    }

    pub fn render(&self) -> String {
        self.refresh();
        let families = self.families.lock().expect("telemetry lock");
        let mut out = String::with_capacity(4096);
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, (_, series)) in &family.series {
                let braces = |extra: &str| -> String {
                    match (labels.is_empty(), extra.is_empty()) {
                        (true, true) => String::new(),
                        (true, false) => format!("{{{extra}}}"),
                        (false, true) => format!("{{{labels}}}"),
                        (false, false) => format!("{{{labels},{extra}}}"),
                    }
                };
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", braces(""), g.get());
                    }
                    Series::Histogram(h) => {
                        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.0.buckets) {
                            let le = format!("le=\"{bound}\"");
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {}",
                                braces(&le),
                                bucket.load(Ordering::Relaxed)
                            );
                        }
                        let count = h.0.count.load(Ordering::Relaxed);
                        let _ = writeln!(out, "{name}_bucket{} {count}", braces("le=\"+Inf\""));
                        let sum = h.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                        let _ = writeln!(out, "{name}_sum{} {sum}", braces(""));
                        let _ = writeln!(out, "{name}_count{} {count}", braces(""));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_escaped_labels() {
        let t = Telemetry::new();
        let c = t.counter("ferry_x_total", "things", &[("exporter", "a\"b")]);
        c.add(3);
        t.counter("ferry_x_total", "things", &[("exporter", "a\"b")])
            .inc();
        let text = t.render();
        assert!(text.contains("# TYPE ferry_x_total counter"), "{text}");
        assert!(
            text.contains("ferry_x_total{exporter=\"a\\\"b\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let t = Telemetry::new();
        let h = t.histogram("ferry_lat_seconds", "lat", &[]);
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(60));
        let text = t.render();
        assert!(
            text.contains("ferry_lat_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_lat_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(text.contains("ferry_lat_seconds_count 2"), "{text}");
    }

    #[test]
    fn a_snapshot_has_every_series_with_its_labels_and_the_notes_set() {
        let t = Telemetry::new();
        t.counter(
            "ferry_x_total",
            "x",
            &[("exporter", "a"), ("signal", "logs")],
        )
        .add(2);
        t.histogram("ferry_lat_seconds", "lat", &[])
            .observe(std::time::Duration::from_millis(3));
        let note = t.note("last_error", &[("exporter", "a")]);
        t.note("never_set", &[]);
        note.set(&format!("bad\nthing {}", "x".repeat(600)));
        let (samples, notes) = t.snapshot();
        let x = samples.iter().find(|s| s.name == "ferry_x_total").unwrap();
        assert_eq!((x.label("signal"), x.value), ("logs", 2.0));
        let lat = samples
            .iter()
            .find(|s| s.name == "ferry_lat_seconds")
            .unwrap();
        assert_eq!(lat.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].text.starts_with("bad\\nthing x"),
            "{}",
            notes[0].text
        );
        assert!(notes[0].text.chars().count() <= 520);
    }
}
