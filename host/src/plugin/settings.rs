//! The `[plugins]` section: where plugins and their compiled code are found, and the limits
//! shared by every plugin (the host's HTTP sender, what plugins may log).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{de_bytes, de_duration};

/// `[plugins]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// Directory searched for `NAME.wasm` before the built-in plugins.
    pub dir: Option<PathBuf>,
    /// Where compiled plugin code is cached; `""` turns the cache off. Default:
    /// `$FERRY_CACHE_DIR`, `$XDG_CACHE_HOME/ferry` or `~/.cache/ferry`.
    pub cache_dir: Option<PathBuf>,
    /// Limits of the host's HTTP sender, which sends every plugin request.
    #[serde(default)]
    pub http: HttpLimits,
    /// What plugins may write to the log.
    #[serde(default)]
    pub log: PluginLog,
}

/// `[plugins.log]`: how much of what plugins say reaches the log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLog {
    /// Longest plugin text (log message, error message, stderr) in one log line, after
    /// escaping; the rest is cut and its length noted.
    #[serde(default = "default_max_message_bytes", deserialize_with = "de_bytes")]
    pub max_message_bytes: usize,
    /// `host.log` messages per second each exporter may write; the rest are dropped,
    /// counted and summarised.
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
}

fn default_max_message_bytes() -> usize {
    super::text::DEFAULT_MAX_MESSAGE_BYTES
}

fn default_messages_per_second() -> u32 {
    super::text::DEFAULT_MESSAGES_PER_SECOND
}

impl Default for PluginLog {
    fn default() -> Self {
        PluginLog {
            max_message_bytes: default_max_message_bytes(),
            messages_per_second: default_messages_per_second(),
        }
    }
}

impl PluginLog {
    /// The policy the plugin runtime applies.
    pub fn policy(&self) -> super::text::LogPolicy {
        super::text::LogPolicy {
            max_message_bytes: self.max_message_bytes,
            messages_per_second: self.messages_per_second,
        }
    }
}

/// `[plugins.http]`: limits on plugin HTTP requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// TCP/TLS connect timeout.
    #[serde(default = "default_connect", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Time until the response head arrives.
    #[serde(default = "default_first_byte", deserialize_with = "de_duration")]
    pub first_byte_timeout: Duration,
    /// Time until the whole response has arrived.
    #[serde(default = "default_total", deserialize_with = "de_duration")]
    pub total_timeout: Duration,
    /// Largest response body handed to a plugin.
    #[serde(default = "default_response_cap", deserialize_with = "de_bytes")]
    pub max_response_bytes: usize,
}

fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_first_byte() -> Duration {
    Duration::from_secs(30)
}
fn default_total() -> Duration {
    Duration::from_secs(60)
}
fn default_response_cap() -> usize {
    16 << 20
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: default_connect(),
            first_byte_timeout: default_first_byte(),
            total_timeout: default_total(),
            max_response_bytes: default_response_cap(),
        }
    }
}

impl Plugins {
    /// The compiled-code cache directory in effect, if any.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(d) if d.as_os_str().is_empty() => None,
            Some(d) => Some(d.clone()),
            None => super::engine::default_cache_dir(),
        }
    }
}

impl Plugins {
    /// Adds what is wrong with `[plugins]` to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        let log = &self.log;
        if log.max_message_bytes < 256 {
            errors.push("plugins.log.max_message_bytes: must be at least 256B".into());
        }
        if log.messages_per_second == 0 {
            errors.push("plugins.log.messages_per_second: must be at least 1".into());
        }
    }
}
