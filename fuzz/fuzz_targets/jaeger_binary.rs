#![no_main]
//! Fuzzes the `jaeger_binary` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("jaeger_binary").expect("decoder jaeger_binary");
    decode(data);
});
