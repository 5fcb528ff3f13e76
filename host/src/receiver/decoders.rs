//! Every wire decoder by name, so the fuzz targets (`fuzz/`) and the corpus replay test run
//! exactly the code the receivers run. Each takes untrusted bytes and must never panic.

use crate::signal::Signal;

/// A decoder: bytes in, anything out (errors are fine, panics are bugs).
pub type Decoder = fn(&[u8]);

/// `(name, decoder)` for every decoder built into this ferry.
pub fn all() -> Vec<(&'static str, Decoder)> {
    #[allow(unused_mut, reason = "receivers behind cargo features push more")]
    let mut out: Vec<(&'static str, Decoder)> = vec![
        ("otlp_traces", |b| {
            let _ = super::wire::inspect(Signal::Traces, b);
        }),
        ("otlp_metrics", |b| {
            let _ = super::wire::inspect(Signal::Metrics, b);
        }),
        ("otlp_logs", |b| {
            let _ = super::wire::inspect(Signal::Logs, b);
        }),
    ];
    #[cfg(feature = "zipkin")]
    {
        use super::zipkin::{Format, decode};
        out.push(("zipkin_v1_json", |b| {
            let _ = decode(Format::V1Json, b);
        }));
        out.push(("zipkin_v2_json", |b| {
            let _ = decode(Format::V2Json, b);
        }));
        out.push(("zipkin_v2_proto", |b| {
            let _ = decode(Format::V2Proto, b);
        }));
    }
    #[cfg(feature = "jaeger")]
    {
        use super::jaeger::{batch_to_otlp, decode_datagram, thrift};
        out.push(("jaeger_compact", |b| {
            let _ = decode_datagram(thrift::Protocol::Compact, b);
        }));
        out.push(("jaeger_binary", |b| {
            let _ = decode_datagram(thrift::Protocol::Binary, b);
        }));
        out.push(("jaeger_grpc", |b| {
            let _ = super::jaeger::decode_post_spans(b);
        }));
        out.push(("jaeger_http", |b| {
            if let Ok(batch) = thrift::decode_struct(thrift::Protocol::Binary, b) {
                let _ = batch_to_otlp(&batch);
            }
        }));
    }
    #[cfg(feature = "opencensus")]
    {
        use super::opencensus::{Metrics, Traces, decode_stream};
        // An input is tried as the first message of a stream and, to reach the translation of
        // the node-less messages that follow, after a first message with an (empty) node.
        const FIRST: &[u8] = b"\x0a\x00";
        out.push(("opencensus_traces", |b| {
            let _ = decode_stream::<Traces>(&[b]);
            let _ = decode_stream::<Traces>(&[FIRST, b]);
        }));
        out.push(("opencensus_metrics", |b| {
            let _ = decode_stream::<Metrics>(&[b]);
            let _ = decode_stream::<Metrics>(&[FIRST, b]);
        }));
    }
    out
}

/// The decoder called `name`.
pub fn by_name(name: &str) -> Option<Decoder> {
    all().into_iter().find(|(n, _)| *n == name).map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays the committed fuzz corpus and every crasher ever found through each decoder.
    #[test]
    fn committed_corpus_and_crashers_replay_cleanly() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for (name, decode) in super::all() {
            let mut seen_for_target = 0;
            for kind in ["corpus", "artifacts"] {
                let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let bytes = std::fs::read(&path).unwrap();
                    decode(&bytes);
                    // Every input also goes through every other decoder: a valid input of
                    // one format is an adversarial input for the others.
                    for (_, other) in super::all() {
                        other(&bytes);
                    }
                    seen_for_target += 1;
                }
            }
            assert!(
                seen_for_target > 0,
                "no committed corpus for decoder {name}"
            );
            replayed += seen_for_target;
        }
        assert!(replayed >= 10);
    }
}
