//! The chain `bench/run.sh` measures natively (resource upsert, attribute delete, filter by
//! span name, consistent 50% sampling), as one Rust Wasm processor: BENCHMARKS.md compares the
//! two. Same decisions as the built-ins: the sampler keeps a span when its trace id's low 56
//! bits are at least 2^55 and records `ot=th:8`.

use ferry_processor_sdk::proto::common::{AnyValue, KeyValue, any_value};
use ferry_processor_sdk::{
    Batch, Encoding, Manifest, Outcome, ProcessMeta, Processor, Request, Signal,
};

struct BenchChain;

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
        Ok(BenchChain)
    }

    fn process(&mut self, meta: ProcessMeta, batch: Batch<'_>) -> Result<Outcome, String> {
        let Request::Traces(mut req) = Request::decode(meta.signal, &batch.to_vec())? else {
            return Ok(Outcome::Keep);
        };
        for rs in &mut req.resource_spans {
            let resource = rs.resource.get_or_insert_with(Default::default);
            let env = Some(AnyValue {
                value: Some(any_value::Value::StringValue("bench".into())),
            });
            match resource
                .attributes
                .iter_mut()
                .find(|kv| kv.key == "deployment.environment")
            {
                Some(kv) => kv.value = env,
                None => resource.attributes.push(KeyValue {
                    key: "deployment.environment".into(),
                    value: env,
                    ..Default::default()
                }),
            }
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|s| {
                    s.name != "bench-op-3"
                        && s.name != "bench-op-7"
                        && randomness(&s.trace_id) >= HALF
                });
                for s in &mut ss.spans {
                    s.attributes.retain(|kv| kv.key != "bench.attr.9");
                    s.trace_state = "ot=th:8".into();
                }
            }
        }
        Ok(Outcome::Replace(Request::Traces(req).encode()))
    }
}

ferry_processor_sdk::export!(BenchChain);
