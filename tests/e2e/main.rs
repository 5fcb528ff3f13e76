//! End-to-end tests: the real `ferry` binary, real clients, real (or scripted) backends.

mod harness;
mod load;
mod nats;

mod backend;
mod bundle;
mod cli;
mod contract;
mod export_clickhouse;
mod export_file;
mod export_otlp_grpc;
mod export_prometheus;
mod export_zipkin;
mod guests;
mod ingest_errors;
mod jaeger;
mod opencensus;
mod otel_sdk;
mod plugin_cli;
mod processors;
mod processors_under_load;
mod processors_wasm;
mod reliability;
mod sandbox;
mod sandbox_limits;
mod sandbox_sockets;
mod scale_out;
mod scale_out_auth;
mod scale_out_gateways;
mod sdks;
mod servers;
mod status_page;
mod tail_sample;
mod tap;
mod zipkin;
