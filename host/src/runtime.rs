//! The async runtime every command runs on, and its `[runtime]` config.

use serde::{Deserialize, Serialize};

/// The most worker threads `[runtime]` accepts: more than any machine Ferry runs on has cores.
const MAX_WORKER_THREADS: usize = 1024;

/// `[runtime]`: how the daemon's async runtime is built. Read once, at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads that receive, process and export; `None` (the default) starts one per CPU
    /// core. Fewer costs less CPU per item at a moderate load (fewer threads to wake between
    /// requests) and caps what the daemon can take from a shared host.
    pub worker_threads: Option<usize>,
}

impl RuntimeConfig {
    /// Adds what is wrong with `[runtime]` to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if let Some(n) = self.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&n)
        {
            errors.push(format!(
                "runtime.worker_threads: {n} is out of range (1 to {MAX_WORKER_THREADS}; leave it \
                 out for one per CPU core)"
            ));
        }
    }

    /// Builds the runtime this config describes.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if let Some(n) = self.worker_threads {
            builder.worker_threads(n);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(worker_threads: Option<usize>) -> Vec<String> {
        let mut errors = Vec::new();
        RuntimeConfig { worker_threads }.check(&mut errors);
        errors
    }

    #[test]
    fn worker_threads_is_checked_and_starts_that_many_workers() {
        assert!(errors(None).is_empty());
        assert!(errors(Some(1)).is_empty());
        let zero = errors(Some(0));
        assert!(
            zero[0].contains("runtime.worker_threads: 0 is out of range"),
            "{zero:?}"
        );
        assert_eq!(errors(Some(MAX_WORKER_THREADS + 1)).len(), 1);

        let runtime = RuntimeConfig {
            worker_threads: Some(3),
        }
        .build()
        .unwrap();
        assert_eq!(runtime.metrics().num_workers(), 3);
    }
}
