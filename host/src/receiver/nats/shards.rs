//! `by_trace` mode: each shard consumed by exactly one gateway at a time, spread evenly over the
//! live gateways, with leases in a JetStream key-value bucket (`STREAM_leases`) whose entries
//! expire `takeover × 3/4` after their last write:
//!
//! - `member.ID`: a gateway's heartbeat, written every tick (`takeover / 8`).
//! - `shard.N`: the gateway consuming shard `N`: created (only if absent: compare-and-set) to
//!   take it, updated against its last revision to keep it, deleted to hand it back.
//!
//! Each tick a gateway lists the live members, sorted by id; with `G` of them and its rank `r`,
//! its share is `S / G` rounded down, plus one if `r < S mod G`. It hands back shards above its
//! share and takes free ones below it. A gateway that dies stops writing: its leases expire and
//! the others take its shards over within `takeover`; when it returns, the others' shares
//! shrink and it gets its share back. JetStream keeps each shard's consumer (`CONSUMER-N`)
//! durable, so a new owner continues where the last one acknowledged; what the last one had
//! fetched and not acknowledged is redelivered after `ack_wait`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, Store};
use futures::TryStreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::NatsReceiverConfig;
use super::consume::{self, Counters};
use crate::receiver::ingest::Ingest;

/// A shard this gateway holds: its lease's revision and the task consuming it.
struct Held {
    revision: u64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The share of `shards` of the member at `rank` among `members`.
fn share(shards: u32, members: usize, rank: usize) -> usize {
    let (s, g) = (shards as usize, members.max(1));
    s / g + usize::from(rank < s % g)
}

/// Runs the leases and the consumers of the shards held, for as long as the daemon.
pub async fn run(
    config: NatsReceiverConfig,
    ingest: Arc<Ingest>,
    counters: Counters,
) -> anyhow::Result<()> {
    let js = consume::connect(&config).await;
    let leases = bucket(&js, &config).await;
    let id = config
        .gateway_id
        .clone()
        .unwrap_or_else(|| format!("gw-{:016x}", rand::random::<u64>()));
    tracing::info!(receiver = "nats", gateway = %id, shards = config.shards, "taking part in the shard leases");
    let tick = config.takeover / 8;
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    loop {
        // Leases first: nothing may hold them up past their expiry.
        renew(&leases, &id, &mut held, tick).await;
        let beat = leases.put(format!("member.{id}"), id.clone().into());
        match tokio::time::timeout(tick, beat).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(receiver = "nats", "heartbeat: {e}"),
            Err(_) => tracing::warn!(receiver = "nats", "heartbeat: no answer within {tick:?}"),
        }
        match tokio::time::timeout(tick, members(&leases)).await {
            Ok(Ok(mut live)) => {
                if !live.contains(&id) {
                    live.push(id.clone());
                    live.sort();
                }
                let rank = live.iter().position(|m| *m == id).unwrap_or(0);
                let mine = share(config.shards, live.len(), rank);
                while held.len() > mine {
                    let (n, h) = held.pop_last().expect("more held than the share");
                    release(&leases, n, h).await;
                }
                if held.len() < mine {
                    take(
                        &js, &leases, &config, &id, &ingest, &counters, &mut held, mine,
                    )
                    .await;
                }
            }
            Ok(Err(e)) => tracing::warn!(receiver = "nats", "listing the gateways: {e}"),
            Err(_) => tracing::warn!(
                receiver = "nats",
                "listing the gateways: no answer within {tick:?}"
            ),
        }
        counters.shards.set(held.len() as i64);
        tokio::time::sleep(tick).await;
    }
}

/// The lease bucket, created if it does not exist yet.
async fn bucket(js: &Context, config: &NatsReceiverConfig) -> Store {
    let name = format!("{}_leases", config.stream);
    loop {
        let store = match js.get_key_value(&name).await {
            Ok(s) => Ok(s),
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.clone(),
                    history: 1,
                    max_age: config.takeover * 3 / 4,
                    num_replicas: config.lease_replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
        };
        match store {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!(receiver = "nats", "lease bucket {name}: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The live gateways: the `member.*` keys of the bucket, read from the stream's subjects in
/// one request (a key watcher would wait out an idle timeout on an empty bucket).
async fn members(leases: &Store) -> Result<Vec<String>, async_nats::Error> {
    let filter = format!("{}member.*", leases.prefix);
    let subjects: Vec<(String, usize)> = leases
        .stream
        .info_with_subjects(&filter)
        .await?
        .try_collect()
        .await?;
    let prefix = format!("{}member.", leases.prefix);
    let mut live: Vec<String> = subjects
        .into_iter()
        .filter_map(|(subject, _)| subject.strip_prefix(&prefix).map(str::to_string))
        .collect();
    live.sort();
    Ok(live)
}

/// Keeps every lease held; a lease that is not ours any more (it expired and another gateway
/// took it) stops its consumer at once.
async fn renew(leases: &Store, id: &str, held: &mut BTreeMap<u32, Held>, tick: Duration) {
    let mut lost = Vec::new();
    for (n, h) in held.iter_mut() {
        let update = leases.update(format!("shard.{n}"), id.to_string().into(), h.revision);
        match tokio::time::timeout(tick, update).await {
            Ok(Ok(revision)) => h.revision = revision,
            Ok(Err(e)) => {
                tracing::warn!(receiver = "nats", shard = n, "lease lost: {e}");
                lost.push(*n);
            }
            // Unknown: keep consuming and try again next tick (a lease outlives several).
            Err(_) => tracing::warn!(
                receiver = "nats",
                shard = n,
                "renewing the lease: no answer"
            ),
        }
    }
    for n in lost {
        if let Some(h) = held.remove(&n) {
            stop(h).await;
        }
    }
}

/// Stops consuming shard `n`, then hands its lease back.
async fn release(leases: &Store, n: u32, h: Held) {
    let revision = h.revision;
    stop(h).await;
    if let Err(e) = leases
        .delete_expect_revision(format!("shard.{n}"), Some(revision))
        .await
    {
        tracing::warn!(receiver = "nats", shard = n, "handing the lease back: {e}");
    }
    tracing::info!(receiver = "nats", shard = n, "shard handed back");
}

/// Stops a consumer task: it finishes the messages it fetched (each acknowledged or handed
/// back), then ends; one that does not end in time is cut off (its messages are redelivered).
async fn stop(h: Held) {
    let _ = h.stop.send(true);
    let mut task = h.task;
    if tokio::time::timeout(Duration::from_secs(10), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}

/// Takes free shards until `mine` are held.
#[allow(clippy::too_many_arguments)]
async fn take(
    js: &Context,
    leases: &Store,
    config: &NatsReceiverConfig,
    id: &str,
    ingest: &Arc<Ingest>,
    counters: &Counters,
    held: &mut BTreeMap<u32, Held>,
    mine: usize,
) {
    for n in 0..config.shards {
        if held.len() >= mine {
            return;
        }
        if held.contains_key(&n) {
            continue;
        }
        // Fails when another gateway holds it: compare-and-set on absence.
        let Ok(revision) = leases
            .create(format!("shard.{n}"), id.to_string().into())
            .await
        else {
            continue;
        };
        let (tx, rx) = watch::channel(false);
        let (js, config, ingest, counters) =
            (js.clone(), config.clone(), ingest.clone(), counters.clone());
        let task = tokio::spawn(async move {
            let name = format!("{}-{n}", config.consumer);
            let filter = format!("{}.*.{n}", config.subject_prefix);
            let mut stopped = rx.clone();
            let consumer = tokio::select! {
                c = consume::consumer(&js, &config, &name, filter) => c,
                _ = stopped.changed() => return,
            };
            consume::run(&consumer, &config, &ingest, &counters, rx).await;
        });
        tracing::info!(receiver = "nats", shard = n, "shard taken");
        held.insert(
            n,
            Held {
                revision,
                stop: tx,
                task,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_differ_by_one_at_most_and_cover_every_shard() {
        for shards in [1u32, 4, 16, 17, 1024] {
            for g in 1..=7usize {
                let all: Vec<usize> = (0..g).map(|r| share(shards, g, r)).collect();
                assert_eq!(all.iter().sum::<usize>(), shards as usize);
                assert!(all.iter().max().unwrap() - all.iter().min().unwrap() <= 1);
            }
        }
    }
}
