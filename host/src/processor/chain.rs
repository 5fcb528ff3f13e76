//! A chain: processors applied in order to each request (the ingest chain) or batch (an
//! exporter chain), consecutive built-ins sharing one walk ([`super::pass`]), each Wasm
//! processor called on its own.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;

use super::tail::TailSampler;
use super::wasm::{WasmEnv, WasmOutput, WasmProcessor};
use super::{Checked, Fault, Native, OnError, Processors, Tally, pass, schema};
use crate::signal::Signal;
use crate::telemetry::{Counter, Histogram, Telemetry};

/// What a chain made of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Nothing changed: forward the original bytes.
    Unchanged,
    /// Forward these bytes, holding this many items (none: nothing to forward).
    Replaced {
        /// The new request.
        payload: Bytes,
        /// Its items.
        items: u32,
    },
}

struct Counts {
    kept: Counter,
    dropped: Counter,
    modified: Counter,
    faults: Counter,
}

enum Stage {
    Native(Box<dyn Native>),
    Wasm(Box<WasmProcessor>),
    Tail(Box<TailSampler>),
}

struct Link {
    name: String,
    on_error: OnError,
    stage: Stage,
    counts: [Counts; 3],
}

impl Link {
    fn handles(&self, signal: Signal) -> bool {
        match &self.stage {
            Stage::Native(n) => n.handles(signal),
            Stage::Wasm(w) => w.handles(signal),
            Stage::Tail(_) => signal == Signal::Traces,
        }
    }

    /// Counts a failure on a request of `items` items, logs it, and says what the policy
    /// makes of it: `Err` to refuse, `Ok(true)` to drop it, `Ok(false)` to pass it on as it
    /// was.
    fn failed(&self, signal: Signal, items: u64, message: String) -> Result<bool, Fault> {
        self.counts[signal.index()].faults.inc();
        tracing::warn!(processor = self.name.as_str(), on_error = ?self.on_error, %signal, "{message}");
        match self.on_error {
            OnError::Refuse => Err(Fault {
                processor: self.name.clone(),
                message,
            }),
            OnError::Pass => Ok(false),
            OnError::Drop => {
                self.count(
                    signal,
                    items,
                    Tally {
                        dropped: items,
                        modified: 0,
                    },
                );
                Ok(true)
            }
        }
    }

    fn count(&self, signal: Signal, items: u64, t: Tally) {
        let c = &self.counts[signal.index()];
        c.dropped.add(t.dropped);
        c.modified.add(t.modified);
        c.kept.add(items.saturating_sub(t.dropped + t.modified));
    }
}

/// Links (by index) that handle a signal, as they run: native ones that share one walk
/// over a request, or one Wasm processor.
enum Run {
    Native {
        links: Vec<usize>,
        /// The walk's time, labelled with the processors' names joined by `+`.
        duration: Histogram,
    },
    Wasm {
        link: usize,
        duration: Histogram,
    },
    /// A tail sampler: its time is mostly waiting, so it is not observed.
    Tail {
        link: usize,
    },
}

/// Processors applied in order.
#[derive(Default)]
pub struct Chain {
    links: Vec<Link>,
    /// For each signal, how its links run.
    runs: [Vec<Run>; 3],
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.links.iter().map(|l| &l.name))
            .finish()
    }
}

fn duration(telemetry: &Telemetry, names: &str) -> Histogram {
    telemetry.histogram(
        "ferry_processor_duration_seconds",
        "Time a processor (or built-ins sharing one walk, named together) spent on one request or batch.",
        &[("processor", names)],
    )
}

/// How the links of a chain run for `signal`.
fn runs(links: &[Link], signal: Signal, telemetry: &Telemetry) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut natives: Vec<usize> = Vec::new();
    let flush = |natives: &mut Vec<usize>, runs: &mut Vec<Run>| {
        let on_resources = natives.iter().map(|&i| match &links[i].stage {
            Stage::Native(n) => n.on_resources(),
            Stage::Wasm(_) | Stage::Tail(_) => false,
        });
        let starts = pass::plan(on_resources);
        for (k, &start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(natives.len());
            let part = natives[start..end].to_vec();
            let names: Vec<&str> = part.iter().map(|&i| links[i].name.as_str()).collect();
            runs.push(Run::Native {
                duration: duration(telemetry, &names.join("+")),
                links: part,
            });
        }
        natives.clear();
    };
    for (i, link) in links.iter().enumerate() {
        if !link.handles(signal) {
            continue;
        }
        match link.stage {
            Stage::Native(_) => natives.push(i),
            Stage::Wasm(_) => {
                flush(&mut natives, &mut runs);
                runs.push(Run::Wasm {
                    link: i,
                    duration: duration(telemetry, &link.name),
                });
            }
            Stage::Tail(_) => {
                flush(&mut natives, &mut runs);
                runs.push(Run::Tail { link: i });
            }
        }
    }
    flush(&mut natives, &mut runs);
    runs
}

/// The queue an exporter's chain reads from, as its processors need it.
#[derive(Debug, Clone, Copy)]
pub struct QueueView<'a> {
    /// Where processors keep what must outlive a crash along with a durable queue (a tail
    /// sampler's decisions): a directory of this exporter's own; none in memory mode.
    pub state: Option<&'a Path>,
    /// The queue's byte budget (what a processor holding batches holds them in).
    pub budget: usize,
}

impl Chain {
    /// The chain of the processors named `names`, all defined in `processors` (the config
    /// was checked). Wasm processors are loaded with `wasm`; without it, a chain naming one
    /// fails. An exporter's chain is given its `queue`.
    pub async fn build(
        names: &[String],
        processors: &Processors,
        telemetry: &Telemetry,
        wasm: Option<&WasmEnv<'_>>,
        queue: Option<&QueueView<'_>>,
    ) -> Result<Chain, Vec<String>> {
        let mut links = Vec::new();
        let mut errors = Vec::new();
        for name in names {
            let Some(p) = processors.get(name) else {
                errors.push(format!("no processor named {name:?} is defined"));
                continue;
            };
            let stage = match (p.wasm(name), wasm) {
                (None, _) => match p.tail(name, telemetry, queue) {
                    Some(tail) => tail.map(|t| Stage::Tail(Box::new(t))),
                    None => p.build(name, telemetry).map(Stage::Native),
                },
                (Some(Err(e)), _) => Err(e),
                (Some(Ok(_)), None) => Err(vec![format!(
                    "processors.{name}: Wasm processors need the plugin engine"
                )]),
                (Some(Ok(c)), Some(env)) => WasmProcessor::load(name, &c, env, telemetry)
                    .await
                    .map(|w| Stage::Wasm(Box::new(w)))
                    .map_err(|e| vec![e]),
            };
            match stage {
                Ok(stage) => links.push(Link {
                    name: name.clone(),
                    on_error: p.on_error,
                    stage,
                    counts: Signal::ALL.map(|s| {
                        let l = [("processor", name.as_str()), ("signal", s.as_str())];
                        let items = |outcome| {
                            telemetry.counter(
                                "ferry_processor_items_total",
                                "Items seen by a processor, by outcome (kept unchanged, modified, dropped).",
                                &[l[0], l[1], ("outcome", outcome)],
                            )
                        };
                        Counts {
                            kept: items("kept"),
                            dropped: items("dropped"),
                            modified: items("modified"),
                            faults: telemetry.counter(
                                "ferry_processor_faults_total",
                                "Requests or batches a processor failed on (then handled per its on_error).",
                                &l,
                            ),
                        }
                    }),
                }),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            let runs = Signal::ALL.map(|s| runs(&links, s, telemetry));
            Ok(Chain { links, runs })
        } else {
            Err(errors)
        }
    }

    /// Whether the chain has no processor at all.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether the chain holds batches until later ones arrive (a tail sampler).
    pub fn holds(&self) -> bool {
        self.links.iter().any(|l| matches!(l.stage, Stage::Tail(_)))
    }

    /// Makes every processor that holds data decide on what it holds now, and on whatever
    /// comes next, without waiting (the exporter is draining).
    pub fn drain(&self) {
        for l in &self.links {
            if let Stage::Tail(t) = &l.stage {
                t.drain();
            }
        }
    }

    /// Whether any processor of the chain acts on `signal`.
    pub fn handles(&self, signal: Signal) -> bool {
        !self.runs[signal.index()].is_empty()
    }

    /// Runs the chain over one request of `signal` holding `items` items.
    pub async fn run(
        &self,
        signal: Signal,
        payload: &Bytes,
        items: u32,
        checked: Checked,
    ) -> Result<Output, Fault> {
        // The request as the next run sees it: the original, or what a run before made of
        // it (a Wasm processor's replacement is always checked, a walk's output well formed).
        let mut bytes: Option<Bytes> = None;
        let mut valid = checked == Checked::Yes;
        let mut items = u64::from(items);
        for run in &self.runs[signal.index()] {
            let started = Instant::now();
            let input = bytes.as_ref().unwrap_or(payload);
            // A run that reads the wire form checks it first, unless it was checked already.
            let reader = match run {
                Run::Native { links, .. } => Some(links[0]),
                Run::Tail { link } => Some(*link),
                Run::Wasm { .. } => None,
            };
            if let Some(i) = reader
                && bytes.is_none()
                && !std::mem::replace(&mut valid, true)
                && let Err(e) = schema::validate(signal, input)
            {
                let why = format!("the {signal} request does not decode: {e}");
                if self.links[i].failed(signal, items, why)? {
                    return Ok(Output::nothing());
                }
                continue;
            }
            match run {
                Run::Native { links, duration } => {
                    let first = &self.links[links[0]];
                    let natives = links.iter().filter_map(|&i| match &self.links[i].stage {
                        Stage::Native(n) => Some(&**n),
                        Stage::Wasm(_) | Stage::Tail(_) => None,
                    });
                    let (steps, walked) = pass::run(signal, natives, input);
                    if let pass::Walked::Malformed = walked {
                        let why = format!("the {signal} request does not split into fields");
                        if first.failed(signal, items, why)? {
                            return Ok(Output::nothing());
                        }
                        continue;
                    }
                    for (&i, st) in links.iter().zip(&steps) {
                        self.links[i].count(signal, st.seen, st.tally);
                        items = items.saturating_sub(st.tally.dropped);
                    }
                    if let pass::Walked::Rewritten(new) = walked {
                        bytes = Some(new);
                    }
                    duration.observe(started.elapsed());
                }
                Run::Wasm { link, duration } => {
                    let link = &self.links[*link];
                    let Stage::Wasm(wasm) = &link.stage else {
                        continue;
                    };
                    if items == 0 {
                        return Ok(Output::nothing());
                    }
                    let n = u32::try_from(items).unwrap_or(u32::MAX);
                    match wasm.process(signal, input, n).await {
                        Ok(WasmOutput::Keep) => link.count(signal, items, Tally::default()),
                        Ok(WasmOutput::Replace(new, kept)) => {
                            let kept = u64::from(kept);
                            let t = Tally {
                                dropped: items.saturating_sub(kept),
                                modified: kept.min(items),
                            };
                            link.count(signal, items, t);
                            (bytes, items) = (Some(new), kept);
                        }
                        Ok(WasmOutput::Drop) => {
                            link.count(
                                signal,
                                items,
                                Tally {
                                    dropped: items,
                                    modified: 0,
                                },
                            );
                            return Ok(Output::nothing());
                        }
                        Err(why) => {
                            if link.failed(signal, items, why)? {
                                return Ok(Output::nothing());
                            }
                        }
                    }
                    duration.observe(started.elapsed());
                }
                Run::Tail { link } => {
                    let link = &self.links[*link];
                    let Stage::Tail(tail) = &link.stage else {
                        continue;
                    };
                    if let Output::Replaced {
                        payload,
                        items: kept,
                    } = tail.process(input).await
                    {
                        let kept = u64::from(kept);
                        let t = Tally {
                            dropped: items.saturating_sub(kept),
                            modified: 0,
                        };
                        link.count(signal, items, t);
                        (bytes, items) = (Some(payload), kept);
                    } else {
                        link.count(signal, items, Tally::default());
                    }
                }
            }
        }
        let items = u32::try_from(items).unwrap_or(u32::MAX);
        Ok(match bytes {
            Some(payload) => Output::Replaced { payload, items },
            None => Output::Unchanged,
        })
    }
}

impl Output {
    fn nothing() -> Output {
        Output::Replaced {
            payload: Bytes::new(),
            items: 0,
        }
    }
}

/// The ingest chain, swapped whole on reload: each request runs wholly on the chain it
/// found when it started.
#[derive(Debug, Default)]
pub struct IngestChain(RwLock<Arc<Chain>>);

impl IngestChain {
    /// Starts with `chain`.
    pub fn new(chain: Chain) -> Arc<Self> {
        Arc::new(IngestChain(RwLock::new(Arc::new(chain))))
    }

    /// The chain now in force.
    pub fn current(&self) -> Arc<Chain> {
        self.0.read().expect("ingest chain lock").clone()
    }

    /// Puts `chain` in force for every request that starts from now on.
    pub fn swap(&self, chain: Chain) {
        *self.0.write().expect("ingest chain lock") = Arc::new(chain);
    }
}

/// An exporter chain runs on each batch read for its exporter.
impl crate::pipeline::router::Process for Chain {
    fn process<'a>(
        &'a self,
        batch: &'a crate::pipeline::Batch,
    ) -> crate::pipeline::router::ProcessFuture<'a> {
        Box::pin(async move {
            let run = self.run(batch.signal, &batch.payload, batch.items, Checked::No);
            match run.await {
                Ok(Output::Unchanged) => Ok(None),
                Ok(Output::Replaced { payload, items }) => Ok(Some(crate::pipeline::Batch::new(
                    batch.signal,
                    items,
                    payload,
                ))),
                Err(fault) => Err(fault.to_string()),
            }
        })
    }

    fn holds(&self) -> bool {
        Chain::holds(self)
    }

    fn drain(&self) {
        Chain::drain(self)
    }
}
