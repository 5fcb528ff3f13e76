//! `nats`: publishes each batch to a NATS JetStream stream, and reports success only once
//! JetStream has acknowledged every message of it (a `PubAck`: stored on the stream's
//! replicas). The bus between agents and gateways; a `nats` receiver is the other end.
//!
//! Modes:
//! - `work_queue`: one message per batch (more if it is over the server's `max_payload`) on
//!   `PREFIX.SIGNAL`; any gateway may take any message.
//! - `by_trace`: spans cut by a hash of their trace id into `shards` subjects
//!   `PREFIX.SIGNAL.N`, each keeping its resource and scope; logs with a trace id follow
//!   their trace, other logs and metrics go by a hash of their resource.
//!
//! Every message carries a `Nats-Msg-Id`: the batch's content hash, a nonce drawn for the
//! batch's first attempt, its shard and its part. A retry of a batch that failed reuses the
//! nonce (the instance remembers it), so what JetStream already stored from the failed attempt
//! is dropped by its de-duplication window instead of stored twice; a new batch with the very
//! same bytes gets a nonce of its own and is stored.

mod client;
mod config;
mod shard;

use std::collections::VecDeque;

use client::{Conn, NatsError, Outgoing};
use config::{Config, Mode};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

/// Room kept in each message for its headers.
const HEADER_ROOM: usize = 256;

struct Nats {
    config: Config,
    conn: Option<Conn>,
    /// The endpoint to try first on the next connection (they are tried in turn).
    next_endpoint: usize,
    /// Batches that failed, newest last: content hash and the nonce of their ids.
    failed: VecDeque<(u128, u64)>,
}

/// Failed batches remembered for their retries (the host holds at most a few in flight).
const REMEMBERED: usize = 256;

fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "traces",
        Signal::Metrics => "metrics",
        Signal::Logs => "logs",
    }
}

#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    duplicate: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// JetStream's error code for a stream that does not exist.
const STREAM_NOT_FOUND: u32 = 10059;
/// ... and for a stream created meanwhile by someone else.
const STREAM_NAME_IN_USE: u32 = 10058;

impl Nats {
    /// The connection, made (and the stream checked or created) if there is none.
    fn connection(&mut self) -> Result<&mut Conn, ExportError> {
        if self.conn.is_none() {
            let conn = self.connect()?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    fn connect(&mut self) -> Result<Conn, ExportError> {
        let n = self.config.servers.len();
        let mut errors = Vec::new();
        for k in 0..n {
            let i = (self.next_endpoint + k) % n;
            let inbox = format!(
                "_INBOX.ferry.{:016x}",
                wasip2::random::random::get_random_u64()
            );
            match Conn::connect(
                &self.config.servers[i],
                inbox,
                self.config.ack_timeout,
                self.config.auth.as_ref(),
            ) {
                Ok(mut conn) => {
                    self.next_endpoint = (i + 1) % n;
                    match self.ensure_stream(&mut conn) {
                        Ok(()) => return Ok(conn),
                        Err(NatsError::Connection(e)) => errors.push(e),
                        Err(NatsError::Refused(e)) => return Err(ExportError::Retryable(e)),
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(ExportError::Retryable(format!(
            "no NATS server reachable: {}",
            errors.join("; ")
        )))
    }

    /// Checks that the stream exists and takes this exporter's subjects; creates it if the
    /// config says so.
    fn ensure_stream(&self, conn: &mut Conn) -> Result<(), NatsError> {
        let c = &self.config;
        let info = conn.request(&format!("$JS.API.STREAM.INFO.{}", c.stream), b"")?;
        let missing = api_error(&info).is_some_and(|e| e.err_code == STREAM_NOT_FOUND);
        if let Some(e) = api_error(&info).filter(|_| !missing) {
            return Err(NatsError::Refused(format!(
                "stream {}: {}",
                c.stream, e.description
            )));
        }
        if missing {
            let Some(create) = &c.create_stream else {
                return Err(NatsError::Refused(format!(
                    "JetStream stream {} does not exist: create it with subjects [\"{}.>\"], or set create_stream",
                    c.stream, c.subject_prefix
                )));
            };
            let body = create.request(&c.stream, &c.subject_prefix).to_string();
            let made = conn.request(
                &format!("$JS.API.STREAM.CREATE.{}", c.stream),
                body.as_bytes(),
            )?;
            return match api_error(&made) {
                Some(e) if e.err_code != STREAM_NAME_IN_USE => Err(NatsError::Refused(format!(
                    "creating stream {}: {}",
                    c.stream, e.description
                ))),
                _ => Ok(()),
            };
        }
        let sample = self.subject(Signal::Traces, 0);
        let subjects: Vec<String> = info["config"]["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !subjects.iter().any(|p| config::subject_matches(p, &sample)) {
            return Err(NatsError::Refused(format!(
                "stream {} does not take subject {sample} (its subjects: {subjects:?})",
                c.stream
            )));
        }
        Ok(())
    }

    /// Publishes the batch's messages (`hash` is its [`shard::batch_hash`]) and waits for
    /// JetStream's acknowledgement of each.
    fn publish(
        &mut self,
        signal: Signal,
        bytes: &[u8],
        hash: u128,
        nonce: u64,
    ) -> Result<(), ExportError> {
        let max = self.connection()?.max_payload.saturating_sub(HEADER_ROOM);
        let msgs = self
            .messages(signal, bytes, max, hash, nonce)
            .map_err(ExportError::Permanent)?;
        let conn = self.connection()?;
        let answers = match conn.publish_all(&msgs) {
            Ok(a) => a,
            Err(e) => {
                if let NatsError::Connection(_) = e {
                    self.conn = None;
                }
                return Err(ExportError::Retryable(e.to_string()));
            }
        };
        let mut failed = Vec::new();
        let mut duplicates = 0;
        for (msg, answer) in msgs.iter().zip(answers) {
            let ack = answer.and_then(|json| {
                serde_json::from_slice::<PubAck>(&json)
                    .map_err(|e| format!("unreadable PubAck: {e}"))
            });
            match ack {
                Ok(PubAck { error: Some(e), .. }) => {
                    failed.push(format!("{}: {}", msg.subject, e.description))
                }
                Ok(a) if a.stream != self.config.stream => failed.push(format!(
                    "{} was stored by stream {:?}, not {}",
                    msg.subject, a.stream, self.config.stream
                )),
                Ok(a) => duplicates += usize::from(a.duplicate),
                Err(e) => failed.push(format!("{}: {e}", msg.subject)),
            }
        }
        if duplicates > 0 {
            ferry_sdk::log::debug(&format!(
                "{duplicates} of {} messages were already in the stream (a retry)",
                msgs.len()
            ));
        }
        if failed.is_empty() {
            return Ok(());
        }
        // What was stored is dropped as a duplicate when the batch comes again.
        Err(ExportError::Retryable(format!(
            "{} of {} messages not acknowledged by JetStream: {}",
            failed.len(),
            msgs.len(),
            failed.join("; ")
        )))
    }

    fn subject(&self, signal: Signal, shard: u32) -> String {
        let c = &self.config;
        match c.mode {
            Mode::WorkQueue => format!("{}.{}", c.subject_prefix, signal_name(signal)),
            Mode::ByTrace => format!("{}.{}.{shard}", c.subject_prefix, signal_name(signal)),
        }
    }

    /// The nonce of a batch's ids: the one its failed attempt used, for a retry.
    fn nonce(&mut self, hash: u128, attempt: u32) -> u64 {
        let earlier = self.failed.iter().rposition(|(h, _)| *h == hash);
        match earlier {
            Some(i) if attempt > 0 => self.failed.remove(i).expect("found above").1,
            _ => wasip2::random::random::get_random_u64(),
        }
    }

    fn remember_failed(&mut self, hash: u128, nonce: u64) {
        if self.failed.len() == REMEMBERED {
            self.failed.pop_front();
        }
        self.failed.push_back((hash, nonce));
    }

    fn messages(
        &self,
        signal: Signal,
        batch: &[u8],
        max: usize,
        hash: u128,
        nonce: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let shards = match self.config.mode {
            Mode::WorkQueue => 1,
            Mode::ByTrace => self.config.shards,
        };
        let pieces = match signal {
            Signal::Traces => shard::cut(batch, shard::TRACES, shards, max),
            Signal::Metrics => shard::cut(batch, shard::METRICS, shards, max),
            Signal::Logs => shard::cut(batch, shard::LOGS, shards, max),
        }?;
        let mut parts = vec![0usize; shards as usize];
        Ok(pieces
            .into_iter()
            .map(|(shard, payload)| {
                let part = &mut parts[shard as usize];
                *part += 1;
                Outgoing {
                    subject: self.subject(signal, shard),
                    id: shard::message_id(hash, nonce, shard, *part),
                    payload,
                }
            })
            .collect())
    }
}

fn api_error(reply: &serde_json::Value) -> Option<ApiError> {
    serde_json::from_value(reply.get("error")?.clone()).ok()
}

impl Exporter for Nats {
    fn manifest() -> Manifest {
        Manifest::new(
            "nats",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        Ok(Nats {
            config: Config::parse(config)?,
            conn: None,
            next_endpoint: 0,
            failed: VecDeque::new(),
        })
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let bytes = batch.to_vec();
        let hash = shard::batch_hash(&bytes);
        let nonce = self.nonce(hash, meta.attempt);
        let result = self.publish(meta.signal, &bytes, hash, nonce);
        if let Err(ExportError::Retryable(_)) = &result {
            self.remember_failed(hash, nonce);
        }
        result
    }

    fn shutdown(&mut self) {
        self.conn = None;
    }
}

ferry_sdk::export!(Nats);
