#![no_main]
//! Fuzzes the `jaeger_http` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("jaeger_http").expect("decoder jaeger_http");
    decode(data);
});
