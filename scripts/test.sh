#!/usr/bin/env bash
# The whole test suite: formatting, lints (host and plugin targets), unit and end-to-end tests.
# Needs only rustup, cargo, python3 and node/npm; everything else (the wasm32-wasip2 target,
# the OpenTelemetry Python SDK in target/e2e-venv, componentize-py and componentize-js for the
# Python and JavaScript plugins) is installed here or by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The runtime-only daemon (no compiler, no optional receivers): the runtime of slim bundles.
cargo clippy -p ferry --no-default-features -- -D warnings
cargo clippy --target wasm32-wasip2 --target-dir target/plugins \
  -p ferry-sdk -p ferry-plugin-debug -p ferry-plugin-otlp-http -p ferry-plugin-otlp-grpc -p ferry-plugin-zipkin -p ferry-plugin-file -p ferry-plugin-prometheus-remote-write -p ferry-plugin-clickhouse -p ferry-plugin-blackhole -p ferry-example-minimal -p ferry-test-hostile \
  -- -D warnings
cargo test --workspace
