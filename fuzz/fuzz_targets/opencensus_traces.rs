#![no_main]
//! Fuzzes the `opencensus_traces` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("opencensus_traces").expect("decoder opencensus_traces");
    decode(data);
});
