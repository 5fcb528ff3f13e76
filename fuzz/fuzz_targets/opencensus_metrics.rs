#![no_main]
//! Fuzzes the `opencensus_metrics` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("opencensus_metrics").expect("decoder opencensus_metrics");
    decode(data);
});
