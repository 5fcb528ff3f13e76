#![no_main]
//! Fuzzes the `jaeger_grpc` decoder (see `host/src/receiver/decoders.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decode = ferry::receiver::decoders::by_name("jaeger_grpc").expect("decoder jaeger_grpc");
    decode(data);
});
