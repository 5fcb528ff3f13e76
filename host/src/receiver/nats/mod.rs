//! NATS JetStream receiver: the gateways' end of the bus the `nats` exporter publishes to.
//!
//! It consumes the stream through durable pull consumers and hands each message (one OTLP
//! export request; the signal is the subject's second token) to the pipeline like any received
//! request. A message is acknowledged only once the pipeline owns it (in durable mode: once it
//! is on disk); a refusal (queue full, storage, a refusing processor) answers `nak` with a delay,
//! so JetStream redelivers it later, and at most `max_ack_pending` messages wait unacknowledged.
//! A message that is not a valid request is terminated (never redelivered) and counted.
//!
//! - `work_queue`: every gateway pulls from one shared consumer.
//! - `by_trace`: one consumer per shard, and each shard consumed by one gateway at a time, by
//!   leases in a JetStream key-value bucket ([`shards`]).

mod consume;
mod shards;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plugin::secrets::SecretSource;
use crate::receiver::ingest::Launch;
use crate::units::{de_bytes, de_duration};

/// How the stream's subjects are laid out (the `nats` exporter's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `PREFIX.SIGNAL`: one consumer shared by every gateway.
    #[default]
    WorkQueue,
    /// `PREFIX.SIGNAL.SHARD`: a consumer per shard, each shard owned by one gateway.
    ByTrace,
}

/// `[receivers.nats]`: consume a JetStream stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsReceiverConfig {
    /// `nats://host:port` of the cluster's servers.
    pub endpoints: Vec<String>,
    /// The stream the agents publish to.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The subjects' first token(s).
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// How the subjects are laid out; must match the agents' exporters.
    #[serde(default)]
    pub mode: Mode,
    /// Shards per signal in `by_trace` mode; must match the agents' exporters.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Name of the durable consumer (`by_trace`: `NAME-SHARD` for each shard).
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Messages handed out and not yet acknowledged, per consumer.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// Messages fetched at once.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long JetStream waits for an acknowledgement before it redelivers.
    #[serde(default = "default_ack_wait", deserialize_with = "de_duration")]
    pub ack_wait: Duration,
    /// How long a message the pipeline refused waits before it is delivered again.
    #[serde(default = "default_nak_delay", deserialize_with = "de_duration")]
    pub nak_delay: Duration,
    /// `by_trace`: how soon the shards of a gateway that died are taken over.
    #[serde(default = "default_takeover", deserialize_with = "de_duration")]
    pub takeover: Duration,
    /// `by_trace`: this gateway's name in the leases (default: a random one per start).
    #[serde(default)]
    pub gateway_id: Option<String>,
    /// `by_trace`: replicas of the lease bucket (like the stream's, up to 5).
    #[serde(default = "one")]
    pub lease_replicas: usize,
    /// Largest message accepted.
    #[serde(
        default = "crate::receiver::default_max_request",
        deserialize_with = "de_bytes"
    )]
    pub max_request_bytes: usize,
    /// User name, with `password`, when the servers require them.
    #[serde(default)]
    pub user: Option<String>,
    /// The user's password, from the environment or a file.
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// A token, instead of user and password.
    #[serde(default)]
    pub token: Option<SecretSource>,
}

/// Credentials as read when connecting.
enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
}

fn default_stream() -> String {
    "FERRY".into()
}
fn default_prefix() -> String {
    "ferry".into()
}
fn default_shards() -> u32 {
    16
}
fn default_consumer() -> String {
    "ferry-gateway".into()
}
fn default_max_ack_pending() -> i64 {
    1000
}
fn default_batch() -> usize {
    64
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_nak_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_takeover() -> Duration {
    Duration::from_secs(10)
}
fn one() -> usize {
    1
}

fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NatsReceiverConfig {
    /// `host:port` of each endpoint.
    fn servers(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .filter_map(|u| u.strip_prefix("nats://"))
            .map(str::to_string)
            .collect()
    }

    /// Whether the credentials given make one of the two kinds.
    fn credentials_given(&self, key: &str) -> Result<(), String> {
        match (&self.user, &self.password, &self.token) {
            (None, None, _) | (Some(_), Some(_), None) => Ok(()),
            (_, _, Some(_)) => Err(format!(
                "{key}.token: set either user and password, or token, not both"
            )),
            (Some(_), None, None) => Err(format!("{key}.password: user is set, password is not")),
            (None, Some(_), None) => Err(format!("{key}.user: password is set, user is not")),
        }
    }

    /// Reads the credentials; the error names the key and what is missing, never a value.
    fn credentials(&self, key: &str) -> Result<Credentials, String> {
        self.credentials_given(key)?;
        let read =
            |name: &str, src: &SecretSource| src.read().map_err(|e| format!("{key}.{name}: {e}"));
        Ok(match (&self.user, &self.password, &self.token) {
            (Some(user), Some(pw), _) => {
                Credentials::UserPassword(user.clone(), read("password", pw)?)
            }
            (_, _, Some(token)) => Credentials::Token(read("token", token)?),
            _ => Credentials::None,
        })
    }

    /// Connection options with the credentials in.
    fn connect_options(&self) -> Result<async_nats::ConnectOptions, String> {
        let options = async_nats::ConnectOptions::new().name("ferry-nats-receiver");
        Ok(match self.credentials("receivers.nats")? {
            Credentials::None => options,
            Credentials::UserPassword(user, pw) => options.user_and_password(user, pw),
            Credentials::Token(token) => options.token(token),
        })
    }
}

impl crate::receiver::Receiver for NatsReceiverConfig {
    fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    fn check(&self, key: &str, errors: &mut Vec<String>) {
        if self.endpoints.is_empty() {
            errors.push(format!(
                "{key}.endpoints: at least one nats://host:port is needed"
            ));
        }
        for (i, u) in self.endpoints.iter().enumerate() {
            let ok = u
                .strip_prefix("nats://")
                .and_then(|hp| hp.rsplit_once(':'))
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                errors.push(format!(
                    "{key}.endpoints[{i}]: {u:?} is not nats://host:port"
                ));
            }
        }
        if !token_ok(&self.stream) {
            errors.push(format!(
                "{key}.stream: {:?} is not a stream name",
                self.stream
            ));
        }
        if !self.subject_prefix.split('.').all(token_ok) {
            errors.push(format!(
                "{key}.subject_prefix: {:?} is not a subject",
                self.subject_prefix
            ));
        }
        if !token_ok(&self.consumer) {
            errors.push(format!(
                "{key}.consumer: {:?} is not a consumer name",
                self.consumer
            ));
        }
        if !(1..=1024).contains(&self.shards) {
            errors.push(format!(
                "{key}.shards: {} is not between 1 and 1024",
                self.shards
            ));
        }
        if !(1..=1_000_000).contains(&self.max_ack_pending) {
            errors.push(format!(
                "{key}.max_ack_pending: {} is not between 1 and 1000000",
                self.max_ack_pending
            ));
        }
        if !(1..=4096).contains(&self.batch) {
            errors.push(format!(
                "{key}.batch: {} is not between 1 and 4096",
                self.batch
            ));
        }
        if self.takeover < Duration::from_secs(1) {
            errors.push(format!("{key}.takeover: at least 1s"));
        }
        if !(1..=5).contains(&self.lease_replicas) {
            errors.push(format!(
                "{key}.lease_replicas: {} is not between 1 and 5",
                self.lease_replicas
            ));
        }
        let sources = [("password", &self.password), ("token", &self.token)];
        for (name, src) in sources {
            if let Some(e) = src.as_ref().and_then(SecretSource::check) {
                errors.push(format!("{key}.{name}: {e}"));
            }
        }
        if let Err(e) = self.credentials_given(key) {
            errors.push(e);
        }
        if let Some(id) = &self.gateway_id
            && !token_ok(id)
        {
            errors.push(format!(
                "{key}.gateway_id: {id:?} is not a name (letters, digits, - and _)"
            ));
        }
    }

    async fn start(&self, launch: &mut Launch<'_>) -> anyhow::Result<()> {
        // Read now, so that a missing secret stops the start with its name.
        self.connect_options().map_err(anyhow::Error::msg)?;
        let ingest = launch.ingest("nats", self.max_request_bytes);
        let counters = consume::Counters::new(launch.telemetry);
        let config = self.clone();
        tracing::info!(
            receiver = "nats",
            stream = %config.stream,
            mode = ?config.mode,
            "consuming from {}",
            config.endpoints.join(", ")
        );
        launch.spawn(async move {
            match config.mode {
                Mode::WorkQueue => consume::work_queue(config, ingest, counters).await,
                Mode::ByTrace => shards::run(config, ingest, counters).await,
            }
        });
        Ok(())
    }
}

/// The NATS receiver has no wire decoder of its own: its messages are OTLP requests.
pub fn decoders() -> Vec<(&'static str, crate::receiver::decoders::Decoder)> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::Receiver;

    fn parse(extra: &str) -> NatsReceiverConfig {
        toml::from_str(&format!("endpoints = [\"nats://127.0.0.1:4222\"]\n{extra}")).unwrap()
    }

    fn errors(extra: &str) -> String {
        let mut errors = Vec::new();
        parse(extra).check("receivers.nats", &mut errors);
        errors.join("\n")
    }

    #[test]
    fn credentials_are_user_and_password_or_a_token_read_from_outside_the_config() {
        assert_eq!(errors("user = \"u\"\npassword = { env = \"X\" }"), "");
        assert!(errors("user = \"u\"").contains("receivers.nats.password: user is set"));
        assert!(errors("password = { env = \"X\" }").contains("receivers.nats.user"));
        let both = errors("user = \"u\"\npassword = { env = \"X\" }\ntoken = { file = \"/t\" }");
        assert!(both.contains("receivers.nats.token: set either"), "{both}");
        let neither = errors("token = { env = \"X\", file = \"/t\" }");
        assert!(
            neither.contains("receivers.nats.token: set exactly one"),
            "{neither}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "tok\n").unwrap();
        let c = parse(&format!(
            "token = {{ file = {:?} }}",
            file.display().to_string()
        ));
        assert!(matches!(c.credentials("k"), Ok(Credentials::Token(t)) if t == "tok"));
        let missing = parse("user = \"u\"\npassword = { env = \"FERRY_SURELY_UNSET\" }");
        let Err(e) = missing.credentials("receivers.nats") else {
            panic!("read a password from nowhere")
        };
        assert!(
            e.starts_with("receivers.nats.password: environment variable"),
            "{e}"
        );
    }
}
