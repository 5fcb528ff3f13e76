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
# Every guest crate, found by folder as the workspace and host/build.rs find them.
guests=(-p ferry-sdk -p ferry-processor-sdk -p ferry-wire)
for manifest in plugins/*/Cargo.toml examples/*/Cargo.toml tests/plugins/*/Cargo.toml; do
  guests+=(-p "$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -1)")
done
cargo clippy --target wasm32-wasip2 --target-dir target/plugins "${guests[@]}" -- -D warnings
cargo test --workspace
