#![no_main]
//! Fuzzes the `zipkin_v2_json` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("zipkin_v2_json").expect("decoder zipkin_v2_json");
    decode(data);
});
