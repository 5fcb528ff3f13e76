//! `ferry plugin test` for a processor: runs it in the daemon's sandbox over the sample
//! batches and reports, per call, what it made of the batch (items and bytes in and out,
//! attributes added and removed) and, if the daemon would refuse its answer, why.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use super::inspect::ManifestView;
use super::samples::{self, Size};
use super::{millis, size_text};
use crate::plugin::PluginEngine;
use crate::plugin::registry;
use crate::plugin::sender::HostSender;
use crate::plugin::text::LogPolicy;
use crate::processor::otlp::{self, Decoded};
use crate::processor::wasm::{WasmOutput, WasmProcessor};
use crate::processor::{WasmConfig, WasmEnv};
use crate::signal::Signal;
use crate::telemetry::Telemetry;

/// One `process` call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessCall {
    /// `traces`, `metrics` or `logs`.
    pub signal: &'static str,
    /// `small` or `large`.
    pub size: Size,
    /// Items given.
    pub items_in: u32,
    /// Items it forwards.
    pub items_out: u32,
    /// Bytes given (protobuf).
    pub bytes_in: usize,
    /// Bytes it forwards (protobuf).
    pub bytes_out: usize,
    /// `keep`, `replace`, `drop`, or `refused` (an error, a fault, or an answer the daemon
    /// would not forward).
    pub result: &'static str,
    /// Why it was refused.
    pub message: Option<String>,
    /// Attribute values (resource and item level) its answer has that the batch had not.
    pub attributes_added: usize,
    /// Attribute values the batch had that its answer has not.
    pub attributes_removed: usize,
    /// Wall-clock time of the call.
    pub ms: f64,
}

/// Everything the test found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessorReport {
    /// The file.
    pub file: String,
    /// The manifest, once the plugin loaded.
    pub manifest: Option<ManifestView>,
    /// Contract version.
    pub contract: Option<&'static str>,
    /// The config as the plugin received it.
    pub config: String,
    /// Instantiation, `describe` and `init`.
    pub init_ms: Option<f64>,
    /// The calls, in order.
    pub calls: Vec<ProcessCall>,
    /// Most linear memory an instance held.
    pub memory_peak: usize,
    /// Why the plugin could not be tested at all.
    pub problems: Vec<String>,
}

impl ProcessorReport {
    /// True when the plugin loaded and the daemon would forward every answer.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.calls.iter().all(|c| c.result != "refused")
    }
}

/// Every attribute value of a request, as `(key, value)` text, counted.
fn census(d: &Decoded) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    let mut add = |attrs: &[ferry_proto::common::KeyValue]| {
        for kv in attrs {
            let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
            let text = v.map(|v| otlp::text(v).into_owned()).unwrap_or_default();
            *out.entry((kv.key.clone(), text)).or_default() += 1;
        }
    };
    let mut d = d.clone();
    match &mut d {
        Decoded::Traces(r) => otlp::each_span(r, |res, _, s| {
            add(res);
            add(&s.attributes);
            s.events.iter().for_each(|e| add(&e.attributes));
        }),
        Decoded::Logs(r) => otlp::each_log(r, |res, _, l| {
            add(res);
            add(&l.attributes);
        }),
        Decoded::Metrics(r) => otlp::each_metric(r, |res, _, m| {
            add(res);
            otlp::each_point_attrs(m, |_, a| add(a));
        }),
    }
    out
}

/// Counts of what `after` has beyond `before`, and the reverse.
fn difference(before: &Decoded, after: &Decoded) -> (usize, usize) {
    let (b, a) = (census(before), census(after));
    let beyond = |x: &HashMap<_, usize>, y: &HashMap<_, usize>| {
        x.iter()
            .map(|(k, n)| n.saturating_sub(*y.get(k).unwrap_or(&0)))
            .sum()
    };
    (beyond(&a, &b), beyond(&b, &a))
}

/// Runs the processor in `path`, configured with `config_json` and the `memory` and `timeout`
/// settings given (the defaults of `kind = "wasm"` otherwise), over every sample batch it
/// takes.
pub async fn run(
    engine: &PluginEngine,
    path: &Path,
    config_json: &str,
    memory: Option<&str>,
    timeout: Option<&str>,
) -> anyhow::Result<ProcessorReport> {
    let source = registry::read_file(path)?;
    let mut report = ProcessorReport {
        file: path.display().to_string(),
        manifest: None,
        contract: None,
        config: config_json.to_string(),
        init_ms: None,
        calls: Vec::new(),
        memory_peak: 0,
        problems: Vec::new(),
    };
    let settings: toml::Table = match serde_json::from_str(config_json) {
        Ok(t) => t,
        Err(e) => {
            report
                .problems
                .push(format!("--config is not a JSON object: {e}"));
            return Ok(report);
        }
    };
    let mut table = toml::Table::new();
    table.insert("plugin".into(), source.name.clone().into());
    table.insert("config".into(), settings.into());
    for (key, value) in [("memory", memory), ("timeout", timeout)] {
        if let Some(v) = value {
            table.insert(key.into(), v.into());
        }
    }
    let config: WasmConfig = match crate::units::at_path("--", &toml::Value::Table(table)) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e);
            return Ok(report);
        }
    };
    let env = WasmEnv {
        engine,
        dir: None,
        sender: HostSender::new(Default::default()),
        log: LogPolicy::default(),
    };
    let started = Instant::now();
    let telemetry = Telemetry::new();
    let processor =
        match WasmProcessor::from_source(&source.name, &source, &config, &env, &telemetry).await {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
        };
    report.init_ms = Some(millis(started.elapsed()));
    let manifest = processor.plugin().manifest();
    report.manifest = Some(ManifestView::from(manifest));
    report.contract = Some(manifest.contract);
    for signal in Signal::ALL.into_iter().filter(|s| processor.handles(*s)) {
        for size in [Size::Small, Size::Large] {
            let payload = samples::batch(signal, size);
            let items = size.items();
            let before = Decoded::decode(signal, &payload)?;
            let started = Instant::now();
            let answer = processor.process(signal, &payload, items).await;
            let ms = millis(started.elapsed());
            let mut call = ProcessCall {
                signal: signal.as_str(),
                size,
                items_in: items,
                items_out: items,
                bytes_in: payload.len(),
                bytes_out: payload.len(),
                result: "keep",
                message: None,
                attributes_added: 0,
                attributes_removed: 0,
                ms,
            };
            match answer {
                Ok(WasmOutput::Keep) => {}
                Ok(WasmOutput::Drop) => {
                    (call.result, call.items_out, call.bytes_out) = ("drop", 0, 0);
                }
                Ok(WasmOutput::Replace(bytes, n)) => {
                    let after = Decoded::decode(signal, &bytes)?;
                    (call.attributes_added, call.attributes_removed) = difference(&before, &after);
                    (call.result, call.items_out, call.bytes_out) = ("replace", n, bytes.len());
                }
                Err(why) => {
                    (call.result, call.message) = ("refused", Some(why));
                }
            }
            report.calls.push(call);
        }
    }
    report.memory_peak = processor.plugin().memory_peak();
    Ok(report)
}

impl fmt::Display for ProcessorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file       {}", self.file)?;
        if let (Some(m), Some(c)) = (&self.manifest, self.contract) {
            writeln!(
                f,
                "processor  {} {}, contract {c}, signals {}, encoding {}",
                m.name,
                m.version,
                m.signals.join(","),
                m.encoding
            )?;
        }
        writeln!(f, "config     {}", self.config)?;
        if let Some(ms) = self.init_ms {
            writeln!(f, "init       ok in {ms} ms")?;
        }
        if !self.calls.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<15} {:>16}  {:<8} {:>16}  {:>14} {:>10}",
                "CALL", "IN", "RESULT", "OUT", "ATTRIBUTES", "TIME"
            )?;
            for c in &self.calls {
                let side = |items: u32, bytes: usize| format!("{items} ({})", size_text(bytes));
                writeln!(
                    f,
                    "{:<15} {:>16}  {:<8} {:>16}  {:>14} {:>7.1} ms",
                    format!("{} {}", c.signal, c.size.as_str()),
                    side(c.items_in, c.bytes_in),
                    c.result,
                    side(c.items_out, c.bytes_out),
                    format!("+{} -{}", c.attributes_added, c.attributes_removed),
                    c.ms
                )?;
                if let Some(m) = &c.message {
                    writeln!(f, "    {m}")?;
                }
            }
            writeln!(f)?;
            writeln!(f, "memory     peak {}", size_text(self.memory_peak))?;
        }
        for p in &self.problems {
            writeln!(f, "problem    {p}")?;
        }
        write!(f, "{}", if self.passed() { "PASSED" } else { "FAILED" })
    }
}
