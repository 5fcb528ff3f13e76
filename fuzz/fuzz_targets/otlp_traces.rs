#![no_main]
//! Fuzzes the `otlp_traces` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("otlp_traces").expect("decoder otlp_traces");
    decode(data);
});
