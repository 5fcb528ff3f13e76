//! The chain `bench/run.sh` measures natively (resource upsert, attribute delete, filter by
//! span name, consistent 50% sampling), as one Rust Wasm processor: BENCHMARKS.md compares the
//! two. Same decisions as the built-ins: the sampler keeps a span when its trace id's low 56
//! bits are at least 2^55 and records `ot=th:8`. It rewrites the batch in its wire form in one
//! walk, item after item, as a run of built-ins does.

use ferry_processor_sdk::wire::bytes::Bytes;
use ferry_processor_sdk::wire::items::{RESOURCE_ATTRS, edit_attrs, kv, span, string_any};
use ferry_processor_sdk::wire::msg::{Edit, Msg};
use ferry_processor_sdk::wire::rewrite::Rewrite;
use ferry_processor_sdk::{
    Batch, Encoding, Manifest, Outcome, ProcessMeta, Processor, Signal, rewrite_wire,
};

struct BenchChain {
    /// The `deployment.environment = "bench"` attribute, encoded once.
    env: Bytes,
}

const ENV: &str = "deployment.environment";
const HALF: u64 = 1 << 55;

fn randomness(trace_id: &[u8]) -> u64 {
    trace_id
        .get(9..16)
        .map_or(0, |b| b.iter().fold(0u64, |r, x| (r << 8) | u64::from(*x)))
}

impl Processor for BenchChain {
    fn manifest() -> Manifest {
        Manifest::new(
            "bench-chain",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(_config: &str) -> Result<Self, String> {
        Ok(BenchChain {
            env: kv(ENV, &string_any("bench")),
        })
    }

    fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String> {
        if meta.signal != Signal::Traces {
            return Ok(Outcome::Keep);
        }
        rewrite_wire(batch, self)
    }
}

impl Rewrite for BenchChain {
    fn resource(&mut self, resource: &mut Msg) {
        let mut found = false;
        edit_attrs(resource, RESOURCE_ATTRS, |k, _| {
            if k.is(ENV) {
                found = true;
                Edit::Replace(self.env.clone())
            } else {
                Edit::Keep
            }
        });
        if !found {
            resource.push(RESOURCE_ATTRS, self.env.clone());
        }
    }

    fn item(&mut self, _resource: &Msg, _scope: &Msg, s: &mut Msg) -> bool {
        let v = s.view();
        let name = v.raw(span::NAME);
        if name == b"bench-op-3"
            || name == b"bench-op-7"
            || randomness(v.raw(span::TRACE_ID)) < HALF
        {
            return false;
        }
        edit_attrs(s, span::ATTRS, |k, _| {
            if k.is("bench.attr.9") {
                Edit::Remove
            } else {
                Edit::Keep
            }
        });
        s.set_bytes(span::TRACE_STATE, Bytes::from_static(b"ot=th:8"));
        true
    }
}

ferry_processor_sdk::export!(BenchChain);
