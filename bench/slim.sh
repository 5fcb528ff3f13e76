#!/usr/bin/env bash
# Slim daemons: binary sizes, start to first accepted request, and idle RSS of the full ferry,
# a bundle of three plugins on the runtime-only build (profile slim), and Rotel (fetched by
# bench/run.sh into target/bench). Usage: bench/slim.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -p ferry 2>/dev/null
cargo build --profile slim -p ferry --no-default-features --target-dir target/runtime-only 2>/dev/null
full=$PWD/target/release/ferry
slim=$PWD/target/runtime-only/slim/ferry
rotel=$PWD/target/bench/rotel-0.0.1a15/rotel/rotel-agent
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(port); HTTP=$(port); ADMIN=$(port)
cat > "$work/ferry.toml" <<TOML
[receivers.otlp]
grpc = "127.0.0.1:$GRPC"
http = "127.0.0.1:$HTTP"
[admin]
listen = "127.0.0.1:$ADMIN"
[exporters.http]
plugin = "otlp-http"
config = { endpoint = "http://127.0.0.1:9" }
[exporters.grpc]
plugin = "otlp-grpc"
config = { endpoint = "http://127.0.0.1:9" }
[exporters.sink]
plugin = "blackhole"
TOML
"$full" bundle --runtime "$slim" --plugin otlp-http --plugin otlp-grpc --plugin blackhole \
  --receivers otlp --config "$work/ferry.toml" -o "$work/ferry-bundle" >/dev/null
"$work/ferry-bundle" bundle --list "$work/ferry-bundle"
span='{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"probe","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}'

# Milliseconds from exec to the first OTLP/HTTP request answered 200, then RSS after 1 s idle.
measure() {
  local start pid code=000
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1 &
  pid=$!
  until [ "$code" = 200 ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
      --data "$span" "http://127.0.0.1:$HTTP/v1/traces" || true)
  done
  local ms=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 1
  local rss; rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  echo "${ms} ms to the first accepted request, idle RSS $((rss / 1024)) MiB"
}

echo "sizes (bytes): ferry $(stat -c %s "$full"), runtime-only $(stat -c %s "$slim"), bundle of three $(stat -c %s "$work/ferry-bundle"), rotel-agent $(stat -c %s "$rotel" 2>/dev/null || echo '-')"
for i in $(seq "$runs"); do
  rm -rf "$work/cache"
  echo "ferry, empty cache:   $(FERRY_CACHE_DIR=$work/cache measure "$full" run --config "$work/ferry.toml")"
  echo "ferry, warm cache:    $(FERRY_CACHE_DIR=$work/cache measure "$full" run --config "$work/ferry.toml")"
  echo "bundle (runtime-only): $(FERRY_CACHE_DIR=$work/none measure "$work/ferry-bundle" run)"
  if [ -x "$rotel" ]; then
    echo "rotel (blackhole):    $(measure "$rotel" start --otlp-grpc-endpoint "127.0.0.1:$GRPC" --otlp-http-endpoint "127.0.0.1:$HTTP" --exporter blackhole)"
  fi
done
