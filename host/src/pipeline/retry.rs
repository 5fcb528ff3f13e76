//! Exponential backoff with jitter, bounded by a total elapsed time.

use std::time::Duration;

use rand::Rng;

use serde::{Deserialize, Serialize};

use crate::units::de_duration;

/// Exponential backoff with jitter, bounded in total time (as the Collector's exporterhelper).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before the first retry.
    #[serde(default = "default_initial", deserialize_with = "de_duration")]
    pub initial_interval: Duration,
    /// Largest delay between two tries.
    #[serde(default = "default_max_interval", deserialize_with = "de_duration")]
    pub max_interval: Duration,
    /// Give up (drop and count) once a batch has been retried for this long.
    #[serde(default = "default_max_elapsed", deserialize_with = "de_duration")]
    pub max_elapsed: Duration,
}

fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_max_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_elapsed() -> Duration {
    Duration::from_secs(300)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_interval: default_initial(),
            max_interval: default_max_interval(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

/// Backoff state for one batch.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at the policy's initial interval.
    pub fn new(policy: &RetryConfig) -> Self {
        Backoff {
            next: policy.initial_interval,
            max: policy.max_interval,
        }
    }

    /// The next delay: the current interval ±50% jitter; the interval then doubles up to max.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.5..1.5);
        base.mul_f64(jitter).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let policy = RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            max_elapsed: Duration::from_secs(1),
        };
        let mut b = Backoff::new(&policy);
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(150));
        assert!(d[1] >= Duration::from_millis(100) && d[1] <= Duration::from_millis(300));
        assert!(d.iter().all(|x| *x <= Duration::from_millis(400)));
        assert!(d[5] >= Duration::from_millis(200));
    }
}
