#![no_main]
//! Fuzzes the `otlp_logs` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("otlp_logs").expect("decoder otlp_logs");
    decode(data);
});
