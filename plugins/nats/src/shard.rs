//! Cutting a batch into messages: by shard (`by_trace`: spans by their trace id, logs by
//! theirs, metrics by their resource) and by size (a message must fit the server's
//! `max_payload`). Each piece keeps its items' resource and scope. Batches are cut on the
//! wire: items are copied as they are, never decoded.

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_BASIS, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
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

/// A batch's content hash: two independent 64-bit FNV-1a hashes, the second of the batch
/// behind a salt byte, in one pass.
pub fn batch_hash(batch: &[u8]) -> u128 {
    let (mut a, mut b) = (FNV_BASIS, fnv1a(&[0x5a]));
    for byte in batch {
        a = (a ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
        b = (b ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
    }
    u128::from(a) << 64 | u128::from(b)
}

/// A message's de-duplication id: a batch's retry, cut the same way with the same `nonce`,
/// gets the same ids, so JetStream drops what it already stored instead of storing it twice.
pub fn message_id(hash: u128, nonce: u64, shard: u32, part: usize) -> String {
    format!("{hash:032x}-{nonce:016x}-{shard}-{part}")
}

/// Where an item's shard key comes from, per signal.
#[derive(Clone, Copy, Debug)]
pub enum Keyed {
    /// The trace id, at this field number of the item (if set), else the resource.
    TraceId(u32),
    /// The resource alone.
    Resource,
}

/// Spans go by their trace id (`Span.trace_id` is field 1).
pub const TRACES: Keyed = Keyed::TraceId(1);
/// Log records go by their trace id when they have one (`LogRecord.trace_id` is field 9).
pub const LOGS: Keyed = Keyed::TraceId(9);
/// Metrics go by their resource.
pub const METRICS: Keyed = Keyed::Resource;

/// A trace id that is set: 16 bytes, not all zero.
fn trace_id(id: &[u8]) -> Option<&[u8; 16]> {
    let id: &[u8; 16] = id.try_into().ok()?;
    id.iter().any(|b| *b != 0).then_some(id)
}

/// The batch as (shard, request) pieces, each at most `max_bytes` encoded. With one shard the
/// batch is cut between its top-level entries, as they are (the concatenation of requests is
/// their merge), and only an entry alone over the limit is cut further. An item alone over
/// `max_bytes` is an error.
pub fn cut(
    batch: &[u8],
    keyed: Keyed,
    shards: u32,
    max_bytes: usize,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    if shards > 1 {
        return regroup(batch, keyed, shards, max_bytes);
    }
    if batch.len() <= max_bytes {
        return Ok(vec![(0, batch.to_vec())]);
    }
    let mut out = Vec::new();
    let mut run = 0..0;
    let mut pos = 0;
    while pos < batch.len() {
        let start = pos;
        next_field(batch, &mut pos)?;
        let entry = start..pos;
        if entry.len() > max_bytes {
            if !run.is_empty() {
                out.push((0, batch[run.clone()].to_vec()));
            }
            out.extend(regroup(&batch[entry.clone()], keyed, 1, max_bytes)?);
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

/// One protobuf field: its number, wire type, its bytes with tag and length, and (for a
/// length-delimited field) its payload.
struct Field<'a> {
    num: u64,
    wire: u64,
    whole: &'a [u8],
    body: &'a [u8],
}

impl Field<'_> {
    /// Whether it is the length-delimited field `num` (a message, bytes or a string).
    fn is(&self, num: u64) -> bool {
        self.num == num && self.wire == 2
    }
}

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

/// The field at `pos`, which it moves past it.
fn next_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Field<'a>, String> {
    let start = *pos;
    let tag = varint(buf, pos)?;
    let (num, wire) = (tag >> 3, tag & 7);
    let len = match wire {
        0 => varint(buf, pos).map(|_| 0)?,
        1 => 8,
        5 => 4,
        2 => usize::try_from(varint(buf, pos)?).map_err(|e| e.to_string())?,
        w => return Err(format!("the batch has a field of wire type {w}")),
    };
    let body_start = *pos;
    *pos = pos
        .checked_add(len)
        .filter(|p| *p <= buf.len())
        .ok_or("the batch is truncated")?;
    Ok(Field {
        num,
        wire,
        whole: &buf[start..*pos],
        body: &buf[body_start..*pos],
    })
}

/// The payload of the first length-delimited field `num` of a message, if any.
fn find(msg: &[u8], num: u64) -> Result<Option<&[u8]>, String> {
    let mut pos = 0;
    while pos < msg.len() {
        let f = next_field(msg, &mut pos)?;
        if f.is(num) {
            return Ok(Some(f.body));
        }
    }
    Ok(None)
}

/// The fields of a resource's or a scope's entry other than its children (the resource or
/// scope itself, its schema URL), copied into every piece that holds some of its items.
#[derive(Default)]
struct Head<'a> {
    fields: Vec<&'a [u8]>,
    len: usize,
}

impl<'a> Head<'a> {
    fn push(&mut self, field: &'a [u8]) {
        self.len += field.len();
        self.fields.push(field);
    }
}

/// A resource's entry (`ResourceSpans`, `ResourceLogs`, `ResourceMetrics`): its head, and
/// the head of each of its scopes' entries.
struct Group<'a> {
    head: Head<'a>,
    scopes: Vec<Head<'a>>,
}

/// An item where it was: its resource's and its scope's index, and its field, whole.
type Placed<'a> = (usize, usize, &'a [u8]);

/// Regroups the batch's items by shard on the wire, copying their bytes, never decoding them:
/// a request is resources (field 1), a resource's entry holds scopes (field 2), a scope's
/// entry holds items (field 2), alike for the three signals. Each shard's items go out in
/// pieces that fit.
fn regroup(
    batch: &[u8],
    keyed: Keyed,
    shards: u32,
    max_bytes: usize,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let shards = shards.max(1);
    let mut groups = Vec::new();
    let mut by_shard: Vec<Vec<Placed>> = (0..shards).map(|_| Vec::new()).collect();
    let mut pos = 0;
    while pos < batch.len() {
        let entry = next_field(batch, &mut pos)?;
        // Nothing else is defined at the top; a decoder would skip it as well.
        if !entry.is(1) {
            continue;
        }
        let gi = groups.len();
        let mut head = Head::default();
        let mut scopes = Vec::new();
        let mut resource: &[u8] = &[];
        let mut p = 0;
        while p < entry.body.len() {
            let f = next_field(entry.body, &mut p)?;
            if f.is(2) {
                scopes.push(f.body);
                continue;
            }
            if f.is(1) {
                resource = f.body;
            }
            head.push(f.whole);
        }
        let resource_key = resource_key(resource);
        let mut group = Group {
            head,
            scopes: Vec::with_capacity(scopes.len()),
        };
        for (si, scope) in scopes.into_iter().enumerate() {
            let mut head = Head::default();
            let mut q = 0;
            while q < scope.len() {
                let f = next_field(scope, &mut q)?;
                if !f.is(2) {
                    head.push(f.whole);
                    continue;
                }
                let key = match keyed {
                    Keyed::TraceId(num) => find(f.body, u64::from(num))?
                        .and_then(trace_id)
                        .map_or(resource_key, trace_key),
                    Keyed::Resource => resource_key,
                };
                by_shard[(key % u64::from(shards)) as usize].push((gi, si, f.whole));
            }
            group.scopes.push(head);
        }
        groups.push(group);
    }
    let mut out = Vec::new();
    for (shard, items) in by_shard.into_iter().enumerate() {
        fit(&groups, &items, max_bytes, shard as u32, &mut out)?;
    }
    Ok(out)
}

/// A field's tag and length prefix take at most this many bytes (for sizes below 4 GiB).
const PREFIX: usize = 6;

/// Cuts `items` into requests in one pass, each within `max_bytes`: a piece's size is bounded
/// from above by its items' sizes plus the heads it repeats, each with its prefix.
fn fit(
    groups: &[Group],
    items: &[Placed],
    max_bytes: usize,
    shard: u32,
    out: &mut Vec<(u32, Vec<u8>)>,
) -> Result<(), String> {
    let cost = |at: Option<(usize, usize)>, (gi, si, item): &Placed| {
        let mut n = item.len();
        if at.map(|(g, _)| g) != Some(*gi) {
            n += groups[*gi].head.len + PREFIX;
        }
        if at != Some((*gi, *si)) {
            n += groups[*gi].scopes[*si].len + PREFIX;
        }
        n
    };
    let (mut from, mut size, mut at) = (0, 0, None);
    for (i, placed) in items.iter().enumerate() {
        let mut n = cost(at, placed);
        if i > from && size + n > max_bytes {
            out.push((shard, encode(groups, &items[from..i])));
            (from, size) = (i, 0);
            n = cost(None, placed);
        }
        if n > max_bytes {
            return Err(format!(
                "one item takes {} bytes, over the server's message limit of {max_bytes}",
                placed.2.len()
            ));
        }
        size += n;
        at = Some((placed.0, placed.1));
    }
    if from < items.len() {
        out.push((shard, encode(groups, &items[from..])));
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: usize) -> usize {
    (usize::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize
}

/// A request of `items` (in batch order), each under its resource's and scope's heads;
/// consecutive items of one scope share one entry.
fn encode(groups: &[Group], items: &[Placed]) -> Vec<u8> {
    const ENTRY: u8 = 1 << 3 | 2;
    const CHILD: u8 = 2 << 3 | 2;
    let mut out = Vec::with_capacity(items.iter().map(|i| i.2.len()).sum::<usize>() + 64);
    for resource in items.chunk_by(|a, b| a.0 == b.0) {
        let group = &groups[resource[0].0];
        let scopes: Vec<(&Head, &[Placed], usize)> = resource
            .chunk_by(|a, b| a.1 == b.1)
            .map(|run| {
                let head = &group.scopes[run[0].1];
                let len = head.len + run.iter().map(|i| i.2.len()).sum::<usize>();
                (head, run, len)
            })
            .collect();
        let len = group.head.len
            + scopes
                .iter()
                .map(|(_, _, n)| 1 + varint_len(*n) + n)
                .sum::<usize>();
        out.push(ENTRY);
        put_varint(&mut out, len);
        group
            .head
            .fields
            .iter()
            .for_each(|f| out.extend_from_slice(f));
        for (head, run, n) in scopes {
            out.push(CHILD);
            put_varint(&mut out, n);
            head.fields.iter().for_each(|f| out.extend_from_slice(f));
            run.iter().for_each(|i| out.extend_from_slice(i.2));
        }
    }
    out
}

#[cfg(test)]
mod tests;
