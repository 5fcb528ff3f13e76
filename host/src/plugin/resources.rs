//! Host memory a plugin causes: what its live resources (header fields, requests and their
//! body buffers, responses, streams) hold on the host side, outside its linear memory.
//!
//! The resource table is weighed, not each allocation traced: header fields by their
//! content, and a request body by the most its buffer can hold (what the body writes into
//! waits there until the request is sent, and the host cannot see how full it is). Every
//! operation grows what a resource holds by a bounded step (one header, one body chunk), and
//! the table is weighed before every WASI and `wasi:http` call, so an instance that went over
//! its limit is stopped at its next call (see [`super::ctx::PluginCtx`]).

use std::any::Any;

use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::body::HostIncomingBody;
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
};

/// Default host bytes one instance may hold.
pub const DEFAULT_HOST_MEMORY: usize = 16 << 20;

/// Default live resources one instance may hold.
pub const DEFAULT_MAX_RESOURCES: usize = 1024;

/// Largest write into a request body (wasi:http's check-write permit).
pub const BODY_CHUNK: usize = 256 << 10;

/// Body writes that may wait for the connection at once. With wasmtime's default of one,
/// every write of a large body waited for the previous one to reach the socket; a batch
/// written by the host (`batch.write-to`) is slices of memory already held, so queueing a few
/// costs nothing.
pub const BODY_BUFFER_CHUNKS: usize = 4;

/// What one request body's buffer can hold (its channel keeps one slot more than the chunks).
pub const BODY_RESERVE: usize = (BODY_BUFFER_CHUNKS + 1) * BODY_CHUNK;

/// Largest header map a plugin may build (wasi:http counts names, values and their overhead).
pub const FIELDS_LIMIT: usize = 64 << 10;

/// What a response body may hold in the host before the plugin reads it (an estimate: one
/// read buffer of the connection).
const INCOMING_BODY_ESTIMATE: usize = 64 << 10;

/// A table entry's own cost: its slot, box and bookkeeping.
const ENTRY: usize = 256;

/// Host bytes an idle instance may keep between calls; past it, the instance is discarded
/// after the call instead of going back to the pool.
pub const IDLE_ALLOWANCE: usize = 64 << 10;

/// Limits on the host memory of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct HostLimits {
    /// Host bytes held at once.
    pub bytes: usize,
    /// Live resources at once.
    pub resources: usize,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            bytes: DEFAULT_HOST_MEMORY,
            resources: DEFAULT_MAX_RESOURCES,
        }
    }
}

/// Host memory held by an instance at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostUsage {
    /// Host bytes, as weighed.
    pub bytes: usize,
    /// Live resources.
    pub resources: usize,
}

impl HostUsage {
    /// Whether this is past `limits`.
    pub fn exceeds(&self, limits: &HostLimits) -> bool {
        self.bytes > limits.bytes || self.resources > limits.resources
    }
}

/// Weighs every live resource in `table`.
pub fn measure(table: &mut ResourceTable) -> HostUsage {
    let mut usage = HostUsage::default();
    for entry in table.iter_mut() {
        usage.resources += 1;
        usage.bytes += ENTRY + weigh(entry);
    }
    usage
}

fn fields_bytes(f: &FieldMap) -> usize {
    // Each entry also costs a bucket and index in the map.
    f.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum()
}

fn weigh(entry: &(dyn Any + Send)) -> usize {
    if let Some(f) = entry.downcast_ref::<FieldMap>() {
        fields_bytes(f)
    } else if let Some(r) = entry.downcast_ref::<HostOutgoingRequest>() {
        fields_bytes(&r.headers)
            + r.path_with_query.as_ref().map_or(0, String::len)
            + r.authority.as_ref().map_or(0, String::len)
            + r.body.as_ref().map_or(0, |_| BODY_RESERVE)
    } else if let Some(r) = entry.downcast_ref::<HostOutgoingResponse>() {
        fields_bytes(&r.headers) + r.body.as_ref().map_or(0, |_| BODY_RESERVE)
    } else if let Some(r) = entry.downcast_ref::<HostFutureIncomingResponse>() {
        match r {
            // The request (and its body buffer) is on its way out.
            HostFutureIncomingResponse::Pending(_) => BODY_RESERVE,
            _ => INCOMING_BODY_ESTIMATE,
        }
    } else if let Some(r) = entry.downcast_ref::<HostIncomingResponse>() {
        fields_bytes(&r.headers) + r.body.as_ref().map_or(0, |_| INCOMING_BODY_ESTIMATE)
    } else if entry.downcast_ref::<HostIncomingBody>().is_some() {
        INCOMING_BODY_ESTIMATE
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_weigh_their_content_and_every_entry_counts() {
        let mut table = ResourceTable::new();
        assert_eq!(measure(&mut table), HostUsage::default());
        let mut fields = FieldMap::new_mutable(FIELDS_LIMIT);
        fields
            .append_raw(
                http::HeaderName::from_static("x-big"),
                http::HeaderValue::from_bytes(&[b'a'; 1000]).unwrap(),
            )
            .unwrap();
        table.push(fields).unwrap();
        table.push(0u32).unwrap();
        let u = measure(&mut table);
        assert_eq!(u.resources, 2);
        assert_eq!(u.bytes, 2 * ENTRY + 5 + 1000 + 32);
        let limits = HostLimits {
            bytes: 1024,
            resources: 8,
        };
        assert!(u.exceeds(&limits));
        assert!(!u.exceeds(&HostLimits::default()));
    }
}
