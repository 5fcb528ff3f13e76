//! How far each exporter's cursor is behind its signal's queue, as gauges refreshed whenever
//! the metrics are read (`/metrics`, the status page): records, bytes, and in memory mode items
//! and the age of the oldest batch not yet exported.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use super::Pipeline;
use crate::signal::Signal;
use crate::telemetry::Telemetry;

/// Registers the lag gauges of every signal's queue.
pub fn register(pipeline: &Arc<Pipeline>, telemetry: &Arc<Telemetry>) {
    for signal in Signal::ALL {
        let p = pipeline.clone();
        let t: Weak<Telemetry> = Arc::downgrade(telemetry);
        // Cursors seen at the last refresh: one that is gone (its exporter removed) is zeroed.
        let seen = Mutex::new(BTreeSet::<String>::new());
        telemetry.on_render(move || {
            let Some(t) = t.upgrade() else { return };
            let lags = p.queue(signal).lags();
            let mut seen = seen.lock().expect("lag lock");
            let now: BTreeSet<String> = lags.iter().map(|(n, _)| n.clone()).collect();
            for gone in seen.difference(&now) {
                set(&t, signal, gone, &super::queue::Lag::default());
            }
            for (name, lag) in &lags {
                set(&t, signal, name, lag);
            }
            *seen = now;
        });
    }
}

fn set(t: &Telemetry, signal: Signal, exporter: &str, lag: &super::queue::Lag) {
    let l = [("signal", signal.as_str()), ("exporter", exporter)];
    t.gauge(
        "ferry_queue_behind_records",
        "Batches of the signal's queue an exporter has not exported yet.",
        &l,
    )
    .set(i64::try_from(lag.records).unwrap_or(i64::MAX));
    t.gauge(
        "ferry_queue_behind_bytes",
        "Bytes of the signal's queue an exporter has not exported yet.",
        &l,
    )
    .set(i64::try_from(lag.bytes).unwrap_or(i64::MAX));
    if let Some(items) = lag.items {
        t.gauge(
            "ferry_queue_behind_items",
            "Items of the signal's queue an exporter has not exported yet (memory mode).",
            &l,
        )
        .set(i64::try_from(items).unwrap_or(i64::MAX));
    }
    let age = lag
        .oldest
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if lag.items.is_some() {
        t.gauge(
            "ferry_queue_behind_age_ms",
            "Age of the oldest batch an exporter has not exported yet, in milliseconds (memory mode; 0 when none).",
            &l,
        )
        .set(age);
    }
}
