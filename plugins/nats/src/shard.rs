//! Cutting a batch into messages: by shard (`by_trace`: spans by their trace id, logs by
//! theirs, metrics by their resource) and by size (a message must fit the server's
//! `max_payload`). Each piece keeps its items' resource and scope.

use ferry_sdk::proto::logs_service::ExportLogsServiceRequest;
use ferry_sdk::proto::metrics_service::ExportMetricsServiceRequest;
use ferry_sdk::proto::prost::Message;
use ferry_sdk::proto::trace_service::ExportTraceServiceRequest;

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard key of a trace: the last 8 bytes of its id, big-endian (the random part of a
/// W3C trace id). Every producer must place traces the same way (the README gives this
/// rule), so that spans of one trace sent by different agents meet on one shard.
pub fn trace_key(id: &[u8; 16]) -> u64 {
    u64::from_be_bytes(id[8..].try_into().expect("8 bytes"))
}

/// The shard key of a resource: FNV-1a of its encoding, mixed so that every bit counts.
fn resource_key(encoded: &[u8]) -> u64 {
    let mut z = fnv1a(encoded);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A batch's content hash: two independent 64-bit FNV-1a hashes.
pub fn batch_hash(batch: &[u8]) -> u128 {
    let mut salted = Vec::with_capacity(batch.len() + 1);
    salted.push(0x5a);
    salted.extend_from_slice(batch);
    u128::from(fnv1a(batch)) << 64 | u128::from(fnv1a(&salted))
}

/// A message's de-duplication id: a batch's retry, cut the same way with the same `nonce`,
/// gets the same ids, so JetStream drops what it already stored instead of storing it twice.
pub fn message_id(hash: u128, nonce: u64, shard: u32, part: usize) -> String {
    format!("{hash:032x}-{nonce:016x}-{shard}-{part}")
}

/// One of the export requests, seen as resources, their scopes and the items in them.
pub trait Request: Message + Default + Sized {
    /// The item (span, metric, log record).
    type Item: Message;
    /// Takes every item out, with the index of its resource and of its scope there; what is
    /// left is the skeleton [`Request::rebuild`] puts items back into.
    fn take_items(&mut self) -> Vec<(usize, usize, Self::Item)>;
    /// A request holding `items`, each under a copy of its resource and scope from `skeleton`
    /// (consecutive items of one scope share one).
    fn rebuild(skeleton: &Self, items: Vec<(usize, usize, Self::Item)>) -> Self;
    /// The shard of an item: `resource_key` is the hash of its resource.
    fn shard_key(item: &Self::Item, resource_key: u64) -> u64;
    /// The hash of each resource.
    fn resource_keys(&self) -> Vec<u64>;
    /// Of a skeleton: each resource's encoded size without its scopes, and each of its
    /// scopes' without their items.
    fn overheads(&self) -> Vec<(usize, Vec<usize>)>;
}

macro_rules! request {
    ($req:ty, $resources:ident, $scopes:ident, $items:ident, $item:ty, |$it:ident, $rk:ident| $key:expr) => {
        impl Request for $req {
            type Item = $item;

            fn take_items(&mut self) -> Vec<(usize, usize, $item)> {
                let mut out = Vec::new();
                for (ri, r) in self.$resources.iter_mut().enumerate() {
                    for (si, s) in r.$scopes.iter_mut().enumerate() {
                        out.extend(
                            std::mem::take(&mut s.$items)
                                .into_iter()
                                .map(|i| (ri, si, i)),
                        );
                    }
                }
                out
            }

            fn rebuild(skeleton: &Self, items: Vec<(usize, usize, $item)>) -> Self {
                let mut req = <$req>::default();
                let mut at: Option<(usize, usize)> = None;
                for (ri, si, item) in items {
                    if at.map(|(r, _)| r) != Some(ri) {
                        let mut r = skeleton.$resources[ri].clone();
                        r.$scopes.clear();
                        req.$resources.push(r);
                    }
                    let r = req.$resources.last_mut().expect("pushed above");
                    if at != Some((ri, si)) {
                        let mut s = skeleton.$resources[ri].$scopes[si].clone();
                        s.$items.clear();
                        r.$scopes.push(s);
                    }
                    r.$scopes
                        .last_mut()
                        .expect("pushed above")
                        .$items
                        .push(item);
                    at = Some((ri, si));
                }
                req
            }

            fn shard_key($it: &$item, $rk: u64) -> u64 {
                $key
            }

            fn overheads(&self) -> Vec<(usize, Vec<usize>)> {
                self.$resources
                    .iter()
                    .map(|r| {
                        let mut bare = r.clone();
                        bare.$scopes.clear();
                        (
                            bare.encoded_len(),
                            r.$scopes.iter().map(Message::encoded_len).collect(),
                        )
                    })
                    .collect()
            }

            fn resource_keys(&self) -> Vec<u64> {
                self.$resources
                    .iter()
                    .map(|r| {
                        resource_key(
                            &r.resource
                                .as_ref()
                                .map(Message::encode_to_vec)
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            }
        }
    };
}

/// A trace id that is set: 16 bytes, not all zero.
fn trace_id(id: &[u8]) -> Option<&[u8; 16]> {
    let id: &[u8; 16] = id.try_into().ok()?;
    id.iter().any(|b| *b != 0).then_some(id)
}

request!(
    ExportTraceServiceRequest,
    resource_spans,
    scope_spans,
    spans,
    ferry_sdk::proto::trace::Span,
    |span, rk| trace_id(&span.trace_id).map_or(rk, trace_key)
);
request!(
    ExportLogsServiceRequest,
    resource_logs,
    scope_logs,
    log_records,
    ferry_sdk::proto::logs::LogRecord,
    |log, rk| trace_id(&log.trace_id).map_or(rk, trace_key)
);
request!(
    ExportMetricsServiceRequest,
    resource_metrics,
    scope_metrics,
    metrics,
    ferry_sdk::proto::metrics::Metric,
    |_metric, rk| rk
);

/// The batch as (shard, request) pieces, each at most `max_bytes` encoded. With one shard the
/// batch is cut between its top-level entries, undecoded (the concatenation of requests is
/// their merge), and only an entry alone over the limit is decoded and cut further. An item
/// alone over `max_bytes` is an error.
pub fn cut<R: Request>(
    batch: &[u8],
    shards: u32,
    max_bytes: usize,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    if shards > 1 {
        return regroup::<R>(batch, shards, max_bytes);
    }
    if batch.len() <= max_bytes {
        return Ok(vec![(0, batch.to_vec())]);
    }
    let mut out = Vec::new();
    let mut run = 0..0;
    for entry in top_level(batch)? {
        if entry.len() > max_bytes {
            if !run.is_empty() {
                out.push((0, batch[run.clone()].to_vec()));
            }
            out.extend(regroup::<R>(&batch[entry.clone()], 1, max_bytes)?);
            run = entry.end..entry.end;
            continue;
        }
        if run.len() + entry.len() > max_bytes {
            out.push((0, batch[run.clone()].to_vec()));
            run = entry.start..entry.start;
        }
        run.end = entry.end;
    }
    if !run.is_empty() {
        out.push((0, batch[run].to_vec()));
    }
    Ok(out)
}

/// The byte ranges of a message's top-level fields.
fn top_level(buf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, String> {
    fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *buf.get(*pos).ok_or("the batch is truncated")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("the batch has a malformed varint".into())
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let skip = match tag & 7 {
            0 => varint(buf, &mut pos).map(|_| 0)?,
            1 => 8,
            5 => 4,
            2 => usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?,
            w => return Err(format!("the batch has a field of wire type {w}")),
        };
        pos = pos
            .checked_add(skip)
            .filter(|p| *p <= buf.len())
            .ok_or("the batch is truncated")?;
        out.push(start..pos);
    }
    Ok(out)
}

/// Decodes the batch and regroups its items by shard, each shard's in pieces that fit.
fn regroup<R: Request>(
    batch: &[u8],
    shards: u32,
    max_bytes: usize,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut skeleton = R::decode(batch).map_err(|e| format!("the batch does not decode: {e}"))?;
    let keys = skeleton.resource_keys();
    let items = skeleton.take_items();
    let overheads = skeleton.overheads();
    let mut by_shard: Vec<Vec<(usize, usize, R::Item)>> =
        (0..shards.max(1)).map(|_| Vec::new()).collect();
    for (ri, si, item) in items {
        let shard = R::shard_key(&item, keys[ri]) % u64::from(shards.max(1));
        by_shard[shard as usize].push((ri, si, item));
    }
    let mut out = Vec::new();
    for (shard, items) in by_shard.into_iter().enumerate() {
        if !items.is_empty() {
            fit(
                &skeleton,
                &overheads,
                items,
                max_bytes,
                shard as u32,
                &mut out,
            )?;
        }
    }
    Ok(out)
}

/// A field's tag and length prefix take at most this many bytes (for sizes below 4 GiB).
const PREFIX: usize = 6;

/// Cuts `items` into requests in one pass, each within `max_bytes`: a piece's size is bounded
/// from above by its items' sizes plus the resources and scopes it repeats, each with its
/// prefix, so no piece is encoded twice.
fn fit<R: Request>(
    skeleton: &R,
    overheads: &[(usize, Vec<usize>)],
    items: Vec<(usize, usize, R::Item)>,
    max_bytes: usize,
    shard: u32,
    out: &mut Vec<(u32, Vec<u8>)>,
) -> Result<(), String> {
    let cost = |at: Option<(usize, usize)>, ri: usize, si: usize, item: &R::Item| {
        let mut n = item.encoded_len() + PREFIX;
        if at.map(|(r, _)| r) != Some(ri) {
            n += overheads[ri].0 + PREFIX;
        }
        if at != Some((ri, si)) {
            n += overheads[ri].1[si] + PREFIX;
        }
        n
    };
    let mut piece = Vec::new();
    let (mut size, mut at) = (0, None);
    for (ri, si, item) in items {
        let mut n = cost(at, ri, si, &item);
        if !piece.is_empty() && size + n > max_bytes {
            out.push((
                shard,
                R::rebuild(skeleton, std::mem::take(&mut piece)).encode_to_vec(),
            ));
            size = 0;
            n = cost(None, ri, si, &item);
        }
        if n > max_bytes {
            return Err(format!(
                "one item takes {} bytes, over the server's message limit of {max_bytes}",
                item.encoded_len()
            ));
        }
        size += n;
        at = Some((ri, si));
        piece.push((ri, si, item));
    }
    if !piece.is_empty() {
        out.push((shard, R::rebuild(skeleton, piece).encode_to_vec()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::proto::common::{InstrumentationScope, KeyValue};
    use ferry_sdk::proto::resource::Resource;
    use ferry_sdk::proto::trace::{ResourceSpans, ScopeSpans, Span};

    fn span(trace: u8, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    fn service(name: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(ferry_sdk::proto::common::AnyValue {
                        value: Some(ferry_sdk::proto::common::any_value::Value::StringValue(
                            name.into(),
                        )),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("{name}-lib"),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// (shard, service, scope, span name) of every span in the pieces.
    fn placed(pieces: &[(u32, Vec<u8>)]) -> Vec<(u32, String, String, String)> {
        let mut out = Vec::new();
        for (shard, bytes) in pieces {
            let req = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            for rs in req.resource_spans {
                let svc = format!("{:?}", rs.resource.unwrap().attributes[0].value);
                for ss in rs.scope_spans {
                    let scope = ss.scope.unwrap().name;
                    for s in ss.spans {
                        out.push((*shard, svc.clone(), scope.clone(), s.name));
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn spans_of_a_trace_share_a_shard_and_keep_their_resource_and_scope() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                service(
                    "a",
                    (0..40).map(|i| span(i % 8 + 1, &format!("a{i}"))).collect(),
                ),
                service(
                    "b",
                    (0..40).map(|i| span(i % 8 + 1, &format!("b{i}"))).collect(),
                ),
            ],
        };
        let bytes = req.encode_to_vec();
        let pieces = cut::<ExportTraceServiceRequest>(&bytes, 4, 1 << 20).unwrap();
        let placed = placed(&pieces);
        assert_eq!(placed.len(), 80, "every span, once");
        for (shard, svc, scope, name) in &placed {
            let trace = name[1..].parse::<u8>().unwrap() % 8 + 1;
            assert_eq!(u64::from(*shard), trace_key(&[trace; 16]) % 4, "{name}");
            assert!(
                svc.contains(&name[..1]) && scope.starts_with(&name[..1]),
                "{name}"
            );
        }
        assert!(
            pieces
                .iter()
                .map(|p| p.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 1
        );
        // One shard, and the batch fits: it is sent as it is.
        assert_eq!(
            cut::<ExportTraceServiceRequest>(&bytes, 1, 1 << 20).unwrap(),
            [(0, bytes.clone())]
        );
        // The same batch is always cut the same way, with the same ids.
        assert_eq!(
            cut::<ExportTraceServiceRequest>(&bytes, 4, 1 << 20).unwrap(),
            pieces
        );
        let h = batch_hash(&bytes);
        assert_eq!(h, batch_hash(&bytes.clone()));
        assert_ne!(h, batch_hash(&bytes[1..]));
        assert_eq!(message_id(h, 7, 2, 1), message_id(h, 7, 2, 1));
        assert_ne!(message_id(h, 7, 2, 1), message_id(h, 7, 2, 2));
        assert_ne!(message_id(h, 7, 2, 1), message_id(h, 8, 2, 1));
    }

    #[test]
    fn a_batch_over_the_limit_is_cut_to_fit_and_an_item_that_cannot_fit_is_an_error() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![service(
                "a",
                (0..100).map(|i| span(1, &format!("a{i}"))).collect(),
            )],
        };
        let bytes = req.encode_to_vec();
        let pieces = cut::<ExportTraceServiceRequest>(&bytes, 1, bytes.len() / 3).unwrap();
        assert!(pieces.len() >= 3);
        assert!(pieces.iter().all(|(_, p)| p.len() <= bytes.len() / 3));
        assert_eq!(placed(&pieces).len(), 100);
        // Many requests in one batch: cut between them, undecoded.
        let batch = [bytes.clone(), bytes.clone(), bytes.clone()].concat();
        let pieces = cut::<ExportTraceServiceRequest>(&batch, 1, bytes.len() + 10).unwrap();
        assert_eq!(
            pieces,
            vec![(0, bytes.clone()), (0, bytes.clone()), (0, bytes.clone())]
        );
        // ... and an entry alone over the limit is decoded and cut further.
        let pieces = cut::<ExportTraceServiceRequest>(&batch, 1, bytes.len() / 2).unwrap();
        assert_eq!(placed(&pieces).len(), 300);
        assert!(pieces.iter().all(|(_, p)| p.len() <= bytes.len() / 2));
        assert!(cut::<ExportTraceServiceRequest>(&batch[..batch.len() - 1], 1, 100).is_err());
        let e = cut::<ExportTraceServiceRequest>(&bytes, 1, 20).unwrap_err();
        assert!(e.contains("over the server's message limit of 20"), "{e}");
    }
}
