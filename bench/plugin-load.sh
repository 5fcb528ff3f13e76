#!/usr/bin/env bash
# Load time and memory of the Python and JavaScript example plugins, in the release `ferry`:
# compile vs compiled-code cache (`ferry plugin inspect`), daemon start to "ferry ready" with a
# cold and a warm cache, and each plugin's peak instance memory over the sample batches
# (`ferry plugin test`). Builds the examples first; needs componentize-py and componentize-js
# on PATH (the e2e tests install them in target/e2e-componentize-py and target/e2e-componentize-js).
# Usage: bench/plugin-load.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
export PATH="$PWD/target/e2e-componentize-py/bin:$PWD/target/e2e-componentize-js/node_modules/.bin:$PATH"
cargo build --release -p ferry >/dev/null
ferry=$PWD/target/release/ferry
work=$(mktemp -d)
trap 'pkill -f "ferry run --config $work" || true; rm -rf "$work"' EXIT
examples/python-webhook/build.sh "$work/python-webhook.wasm" >/dev/null
(cd examples/js-hec && npm run --silent build >/dev/null && mv js-hec.wasm "$work/")

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
for p in python-webhook js-hec; do
  wasm=$work/$p.wasm
  echo "$p: $(stat -c %s "$wasm") bytes"
  for i in $(seq "$runs"); do
    rm -rf "$work/cache"
    cold=$(FERRY_CACHE_DIR=$work/cache "$ferry" plugin inspect --json "$wasm" | field "['compile_ms']")
    warm=$(FERRY_CACHE_DIR=$work/cache "$ferry" plugin inspect --json "$wasm" | field "['compile_ms']")
    echo "  compile ${cold} ms, from the cache ${warm} ms"
  done
  mem=$(FERRY_CACHE_DIR=$work/cache "$ferry" plugin inspect --json "$wasm" | field "['memory_after_describe']")
  peak=$(FERRY_CACHE_DIR=$work/cache "$ferry" plugin test --json --memory 128MiB "$wasm" \
    --config '{"endpoint": "${capture}/hook"}' 2>/dev/null | field "['memory_peak']")
  echo "  instance memory: ${mem} bytes after loading, ${peak} bytes peak over the sample batches"
done

cat > "$work/ferry.toml" <<TOML
[receivers.otlp]
grpc = "127.0.0.1:0"
http = "127.0.0.1:0"
[plugins]
dir = "$work"
[exporters.webhook]
plugin = "python-webhook"
memory = "128MiB"
config = { endpoint = "http://127.0.0.1:9/hook" }
[exporters.hec]
plugin = "js-hec"
memory = "128MiB"
config = { endpoint = "http://127.0.0.1:9" }
TOML
start_to_ready() {
  local start end
  start=$(date +%s%N)
  FERRY_CACHE_DIR=$work/cache2 "$ferry" run --config "$work/ferry.toml" 2>&1 | while read -r line; do
    case "$line" in *"ferry ready"*)
      end=$(date +%s%N)
      echo "$(( (end - start) / 1000000 )) ms"
      pkill -f "ferry run --config $work" || true
      break;;
    esac
  done
}
for i in $(seq "$runs"); do
  rm -rf "$work/cache2"
  echo "daemon with both plugins, start to ready: cold cache $(start_to_ready), warm cache $(start_to_ready)"
done
