//! Circuit breaker: repeated faults (traps, timeouts, limits) stop calls to one exporter for a
//! while, so a broken plugin costs almost nothing while it is broken. After the open period a
//! single call probes it (half-open): success closes the circuit, another fault reopens it for
//! twice as long, up to a maximum.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::telemetry::{Counter, Gauge, Telemetry};
use crate::units::de_duration;

/// Circuit breaker of one exporter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive faults (traps, timeouts, limits) that open the circuit.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// How long the circuit first stays open; doubles on each failed probe.
    #[serde(default = "default_open_for", deserialize_with = "de_duration")]
    pub open_for: Duration,
    /// Longest time the circuit stays open before a probe.
    #[serde(default = "default_max_open_for", deserialize_with = "de_duration")]
    pub max_open_for: Duration,
}

fn default_threshold() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(5)
}
fn default_max_open_for() -> Duration {
    Duration::from_secs(60)
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            threshold: default_threshold(),
            open_for: default_open_for(),
            max_open_for: default_max_open_for(),
        }
    }
}

#[derive(Debug)]
struct State {
    consecutive: u32,
    open_until: Option<Instant>,
    next_open_for: Duration,
}

/// The circuit breaker of one exporter.
#[derive(Debug)]
pub struct Breaker {
    exporter: String,
    config: CircuitBreakerConfig,
    state: Mutex<State>,
    open: Gauge,
    opened: Counter,
    open_until: Gauge,
}

impl Breaker {
    /// A closed breaker for exporter `exporter`.
    pub fn new(exporter: &str, config: &CircuitBreakerConfig, telemetry: &Telemetry) -> Self {
        Self::for_role(&super::role::EXPORTER, exporter, config, telemetry)
    }

    /// A closed breaker for plugin `name` in `role`.
    pub fn for_role(
        role: &super::role::Role,
        name: &str,
        config: &CircuitBreakerConfig,
        telemetry: &Telemetry,
    ) -> Self {
        let (exporter, l) = (name, [(role.label, name)]);
        Breaker {
            exporter: exporter.to_string(),
            config: config.clone(),
            state: Mutex::new(State {
                consecutive: 0,
                open_until: None,
                next_open_for: config.open_for,
            }),
            open: telemetry.gauge(
                role.circuit_open,
                "1 while the plugin's circuit breaker is open or half-open.",
                &l,
            ),
            opened: telemetry.counter(
                role.circuit_opened,
                "Times the plugin's circuit breaker opened.",
                &l,
            ),
            open_until: telemetry.gauge(
                role.circuit_open_until,
                "Until when the plugin's circuit breaker is open (Unix milliseconds; 0 when closed).",
                &l,
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("breaker lock")
    }

    /// Waits while the circuit is open; then a call may go ahead (as a probe if it was open).
    pub async fn ready(&self) {
        let until = self.lock().open_until;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Whether a call may go ahead now (closed, or open long enough for a probe), for callers
    /// that fail at once rather than wait.
    pub fn admits(&self) -> bool {
        self.lock()
            .open_until
            .is_none_or(|until| until <= Instant::now())
    }

    /// Whether the circuit is open or half-open.
    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }

    /// A call completed without a fault (whatever the backend answered).
    pub fn success(&self) {
        let mut s = self.lock();
        if s.open_until.take().is_some() {
            self.open.set(0);
            self.open_until.set(0);
            tracing::info!(
                exporter = self.exporter,
                "circuit breaker closed: the plugin works again"
            );
        }
        s.consecutive = 0;
        s.next_open_for = self.config.open_for;
    }

    /// A call faulted: the instance trapped, timed out, hit a limit or could not be built.
    pub fn fault(&self) {
        let mut s = self.lock();
        s.consecutive += 1;
        // A failed probe reopens at once; otherwise only a run of faults opens the circuit.
        if s.open_until.is_none() && s.consecutive < self.config.threshold {
            return;
        }
        let d = s.next_open_for;
        s.open_until = Some(Instant::now() + d);
        s.next_open_for = (d * 2).min(self.config.max_open_for);
        self.open.set(1);
        self.open_until.set(crate::pipeline::router::unix_ms_in(d));
        self.opened.inc();
        tracing::error!(
            exporter = self.exporter,
            consecutive_faults = s.consecutive,
            "circuit breaker open: no calls to this plugin for {d:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (Breaker, std::sync::Arc<Telemetry>) {
        let t = Telemetry::new();
        let c = CircuitBreakerConfig {
            threshold: 3,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(3),
        };
        (Breaker::new("x", &c, &t), t)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_backs_off() {
        let (b, t) = breaker();
        b.fault();
        b.fault();
        assert!(!b.is_open());
        b.success();
        b.fault();
        b.fault();
        assert!(!b.is_open(), "success resets the run");
        b.fault();
        assert!(b.is_open());
        let start = Instant::now();
        b.ready().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        b.fault(); // failed probe: reopen for twice as long
        let start = Instant::now();
        b.ready().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        b.fault();
        let start = Instant::now();
        b.ready().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3), "capped");
        b.success();
        assert!(!b.is_open());
        assert!(
            t.render()
                .contains("ferry_exporter_circuit_opened_total{exporter=\"x\"} 3")
        );
        assert!(
            t.render()
                .contains("ferry_exporter_circuit_open{exporter=\"x\"} 0")
        );
    }
}
