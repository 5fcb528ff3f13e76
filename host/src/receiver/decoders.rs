//! Every wire decoder by name, so the fuzz targets (`fuzz/`) and the corpus replay test run
//! exactly the code the receivers run. Each takes untrusted bytes and must never panic.

/// A decoder: bytes in, anything out (errors are fine, panics are bugs).
pub type Decoder = fn(&[u8]);

/// `(name, decoder)` for every decoder built into this ferry: each receiver's, from its entry
/// in the receiver table.
pub fn all() -> Vec<(&'static str, Decoder)> {
    super::KINDS
        .iter()
        .filter_map(|k| k.built.as_ref())
        .flat_map(|b| (b.decoders)())
        .collect()
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
