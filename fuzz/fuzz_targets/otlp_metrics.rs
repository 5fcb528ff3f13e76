#![no_main]
//! Fuzzes the `otlp_metrics` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("otlp_metrics").expect("decoder otlp_metrics");
    decode(data);
});
