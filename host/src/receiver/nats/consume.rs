//! One durable pull consumer, fetched in a loop: each message to the pipeline, then
//! acknowledged, nak'ed (refused for now: redelivered after `nak_delay`) or terminated (not a
//! valid request: never redelivered).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, Context, Message};
use futures::StreamExt;
use tokio::sync::watch;

use super::NatsReceiverConfig;
use crate::receiver::ingest::{Ingest, IngestError};
use crate::signal::Signal;
use crate::telemetry::{Counter, Gauge, Telemetry};

/// How long a fetch waits for messages before it asks again.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// The pause after a failed fetch or a failed setup step.
const BACKOFF: Duration = Duration::from_secs(1);

/// The receiver's own counters (what `Ingest` counts is per receiver and signal already).
#[derive(Clone)]
pub struct Counters {
    /// Messages delivered more than once.
    pub redelivered: Counter,
    /// Messages refused by the pipeline for now and handed back.
    pub naks: Counter,
    /// Messages that are not a request of a known signal, dropped for good.
    pub terminated: Counter,
    /// `by_trace`: shards this gateway consumes.
    pub shards: Gauge,
}

impl Counters {
    /// Registers the receiver's metrics.
    pub fn new(t: &Telemetry) -> Counters {
        Counters {
            redelivered: t.counter(
                "ferry_receiver_nats_redelivered_total",
                "Messages JetStream delivered again (an earlier delivery was not acknowledged).",
                &[],
            ),
            naks: t.counter(
                "ferry_receiver_nats_naks_total",
                "Messages the pipeline refused for now (queue full, storage, processors), handed back for redelivery.",
                &[],
            ),
            terminated: t.counter(
                "ferry_receiver_nats_terminated_total",
                "Messages that are not an OTLP request of a known signal, dropped for good.",
                &[],
            ),
            shards: t.gauge(
                "ferry_receiver_nats_shards_owned",
                "Shards this gateway consumes (by_trace mode).",
                &[],
            ),
        }
    }
}

/// A JetStream context on a client that reconnects by itself (from its first connection on).
pub async fn connect(config: &NatsReceiverConfig) -> Context {
    loop {
        let options = config.connect_options().map_err(anyhow::Error::msg);
        let connected = match options {
            Ok(options) => options
                .retry_on_initial_connect()
                .connect(config.servers())
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match connected {
            Ok(client) => return jetstream::new(client),
            Err(e) => {
                tracing::warn!(receiver = "nats", "cannot connect: {e}; trying again");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// The durable consumer `name` over `filter`, made once the stream exists.
pub async fn consumer(
    js: &Context,
    config: &NatsReceiverConfig,
    name: &str,
    filter: String,
) -> PullConsumer {
    let mut logged = false;
    loop {
        let made = async {
            let stream = js.get_stream(&config.stream).await?;
            let consumer = stream
                .get_or_create_consumer(
                    name,
                    pull::Config {
                        durable_name: Some(name.to_string()),
                        filter_subject: filter.clone(),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: config.ack_wait,
                        max_ack_pending: config.max_ack_pending,
                        max_deliver: -1,
                        ..Default::default()
                    },
                )
                .await?;
            Ok::<_, async_nats::Error>(consumer)
        };
        match made.await {
            Ok(c) => return c,
            Err(e) => {
                if !logged {
                    tracing::warn!(
                        receiver = "nats",
                        "consumer {name} on stream {}: {e}; trying again every {BACKOFF:?}",
                        config.stream
                    );
                    logged = true;
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// `work_queue` mode: every gateway pulls from one consumer over `PREFIX.>`.
pub async fn work_queue(
    config: NatsReceiverConfig,
    ingest: Arc<Ingest>,
    counters: Counters,
) -> anyhow::Result<()> {
    let js = connect(&config).await;
    let filter = format!("{}.>", config.subject_prefix);
    let consumer = consumer(&js, &config, &config.consumer, filter).await;
    let (_keep, stop) = watch::channel(false);
    run(&consumer, &config, &ingest, &counters, stop).await;
    Ok(())
}

/// Fetches and handles messages until `stop` turns true (checked between fetches).
pub async fn run(
    consumer: &PullConsumer,
    config: &NatsReceiverConfig,
    ingest: &Ingest,
    counters: &Counters,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let fetched = consumer
            .fetch()
            .max_messages(config.batch)
            .expires(FETCH_WAIT)
            .messages()
            .await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(receiver = "nats", "fetch: {e}");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        while let Some(next) = batch.next().await {
            match next {
                Ok(msg) => handle(msg, config, ingest, counters).await,
                Err(e) => {
                    tracing::warn!(receiver = "nats", "fetch: {e}");
                    break;
                }
            }
        }
    }
}

/// The signal of a subject `PREFIX.SIGNAL[.SHARD]`.
fn signal_of(prefix: &str, subject: &str) -> Option<Signal> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    match rest.split('.').next()? {
        "traces" => Some(Signal::Traces),
        "metrics" => Some(Signal::Metrics),
        "logs" => Some(Signal::Logs),
        _ => None,
    }
}

async fn handle(msg: Message, config: &NatsReceiverConfig, ingest: &Ingest, counters: &Counters) {
    if msg.info().is_ok_and(|i| i.delivered > 1) {
        counters.redelivered.inc();
    }
    let Some(signal) = signal_of(&config.subject_prefix, &msg.subject) else {
        counters.terminated.inc();
        tracing::warn!(
            receiver = "nats",
            "dropping a message on {}: not PREFIX.traces, .metrics or .logs",
            crate::plugin::text::escape(&msg.subject, 256)
        );
        return settle(&msg, AckKind::Term).await;
    };
    let kind = match ingest.otlp(signal, msg.payload.clone()).await {
        Ok(_) => AckKind::Ack,
        // Counted by `Ingest` as refused; it will never be valid, so never redelivered.
        Err(e @ (IngestError::Invalid { .. } | IngestError::TooLarge { .. })) => {
            counters.terminated.inc();
            tracing::warn!(
                receiver = "nats",
                "dropping a message on {}: {e}",
                msg.subject
            );
            AckKind::Term
        }
        Err(e) => {
            counters.naks.inc();
            tracing::debug!(receiver = "nats", "handing a message back for later: {e}");
            AckKind::Nak(Some(config.nak_delay))
        }
    };
    settle(&msg, kind).await;
}

/// Answers JetStream; a lost answer only means a redelivery (a duplicate, never a loss).
async fn settle(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(receiver = "nats", "acknowledging a message: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_is_the_token_after_the_prefix() {
        assert_eq!(signal_of("ferry", "ferry.traces"), Some(Signal::Traces));
        assert_eq!(signal_of("ferry", "ferry.logs.7"), Some(Signal::Logs));
        assert_eq!(signal_of("a.b", "a.b.metrics.0"), Some(Signal::Metrics));
        assert_eq!(signal_of("ferry", "ferry.spans"), None);
        assert_eq!(signal_of("ferry", "ferryx.traces"), None);
        assert_eq!(signal_of("ferry", "other.traces"), None);
    }
}
