#![no_main]
//! Fuzzes the `jaeger_compact` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("jaeger_compact").expect("decoder jaeger_compact");
    decode(data);
});
