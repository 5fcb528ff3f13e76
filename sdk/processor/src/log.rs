//! Logging into the daemon's log; each line is tagged with the processor's name by the host.

use crate::LogLevel;
use crate::bindings::ferry::plugin0_3_0::host;

/// Logs `message` at `level`.
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}
