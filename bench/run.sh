#!/usr/bin/env bash
# Ferry beside Rotel under identical OTLP load, one scenario at a time, on this machine.
#
#   bench/run.sh                 # every scenario, 20 s of measured load each
#   DURATION=5 bench/run.sh grpc_blackhole
#   RATE=80000 bench/run.sh grpc_otlp_http   # both daemons at the same offered load
#   FERRY=$PWD/my-bundle DAEMONS=ferry bench/run.sh grpc_otlp_http   # another ferry (a bundle)
#   DAEMONS=ferry bench/run.sh grpc_chain grpc_chain_wasm   # processors (Ferry only)
#   WORKER_THREADS=1 RATE=80000 DAEMONS=ferry bench/run.sh grpc_chain   # Ferry on one thread
#   RATE=20000 DAEMONS=ferry bench/run.sh grpc_blackhole grpc_tail   # tail sampling (10 s wait)
#   TAIL_MAX_TRACES=5000 RATE=20000 DAEMONS=ferry bench/run.sh grpc_tail   # held traces capped
#   TAP=exporter:a DAEMONS=ferry bench/run.sh grpc_blackhole   # with `ferry tap` reading a point
#
# Each run starts a fresh daemon (and fresh sinks), drives it with `ferry-loadgen` (pre-encoded
# OTLP, 100 spans of 10 attributes per request, 4 concurrent senders unless overridden),
# waits until the sinks have everything the daemon acknowledged, then reads the daemon's CPU
# time (utime + stime) and peak RSS (VmHWM) from /proc. Results go to stdout and to
# target/bench/results.md. Rotel comes from PyPI (`pip download --no-deps rotel`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
mkdir -p "$OUT"
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONCURRENCY=${CONCURRENCY:-4}
ITEMS=${ITEMS:-100}
ATTRS=${ATTRS:-10}
ROTEL_VERSION=${ROTEL_VERSION:-0.0.1a15}
RATE=${RATE:-}   # items/s offered in all; empty = as fast as the daemon acknowledges
WORKER_THREADS=${WORKER_THREADS:-}   # Ferry's [runtime] worker_threads; empty = one per core
SCENARIOS=${*:-grpc_blackhole grpc_otlp_http http_otlp_http grpc_fanout}
TAP=${TAP:-}                           # Ferry: a point `ferry tap` reads during the load
TAIL_WAIT=${TAIL_WAIT:-10s}             # grpc_tail: decision_wait
TAIL_MAX_TRACES=${TAIL_MAX_TRACES:-50000}
TAIL_MAX_BYTES=${TAIL_MAX_BYTES:-256MiB}
TICKS=$(getconf CLK_TCK)

echo "building ferry and the bench tools (release)..." >&2
cargo build --release -q -p ferry -p ferry-bench
FERRY=${FERRY:-$ROOT/target/release/ferry}
LOADGEN=$ROOT/target/release/ferry-loadgen
SINK=$ROOT/target/release/ferry-sink

ROTEL=$OUT/rotel-$ROTEL_VERSION/rotel/rotel-agent
if [ ! -x "$ROTEL" ]; then
  echo "fetching rotel $ROTEL_VERSION from PyPI..." >&2
  rm -rf "$OUT/rotel-dl" && mkdir -p "$OUT/rotel-dl"
  python3 -m pip download -q --no-deps "rotel==$ROTEL_VERSION" -d "$OUT/rotel-dl"
  python3 -m zipfile -e "$OUT"/rotel-dl/rotel-*.whl "$OUT/rotel-$ROTEL_VERSION"
  chmod +x "$ROTEL"
fi

source bench/lib.sh
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}
http_get() { curl -sf "http://127.0.0.1:$1$2"; }

# Starts a sink and stores its port in the variable named $1 (no subshell, so the sink's pid
# stays in PIDS and is stopped by cleanup).
start_sink() {
  local port; port=$(free_port)
  "$SINK" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_port "$port"
  printf -v "$1" '%s' "$port"
}

# Starts DAEMON (ferry|rotel) for SCENARIO with sinks on $SINK_A/$SINK_B; sets DPID, GRPC, HTTP.
start_daemon() {
  local daemon=$1 scenario=$2
  GRPC=$(free_port); HTTP=$(free_port); ADMIN=$(free_port)
  local dir; dir=$(mktemp -d "$OUT/run.XXXXXX")
  if [ "$daemon" = ferry ]; then
    {
      echo "[receivers.otlp]"
      echo "grpc = \"127.0.0.1:$GRPC\""
      echo "http = \"127.0.0.1:$HTTP\""
      echo "[admin]"
      echo "listen = \"127.0.0.1:$ADMIN\""
      if [ -n "$WORKER_THREADS" ]; then printf '[runtime]\nworker_threads = %s\n' "$WORKER_THREADS"; fi
      case $scenario in
        grpc_blackhole)
          printf '[exporters.a]\nplugin = "blackhole"\n' ;;
        grpc_chain)
          # resource upsert + attributes delete + filter (2 of 16 span names) + sample 50%
          cat <<'TOML'
[pipeline]
processors = ["env", "scrub", "drop", "half"]
[processors.env]
kind = "resource"
actions = [{ key = "deployment.environment", action = "upsert", value = "bench" }]
[processors.scrub]
kind = "attributes"
apply_to = ["spans"]
actions = [{ key = "bench.attr.9", action = "delete" }]
[processors.drop]
kind = "filter"
spans = { any = [{ name = "bench-op-3" }, { name = "bench-op-7" }] }
[processors.half]
kind = "sample"
percentage = 50
[exporters.a]
plugin = "blackhole"
TOML
          ;;
        grpc_tail)
          # Every trace held for TAIL_WAIT, then all errors (the load has none: the policy
          # is evaluated on every trace) and 10% of the rest kept. The memory queue holds what
          # the sampler holds, so its budget is raised to a wait's worth of load.
          cat <<TOML
[pipeline]
queue_max_bytes = "2GiB"
[processors.tail]
kind = "tail_sample"
decision_wait = "$TAIL_WAIT"
max_traces = $TAIL_MAX_TRACES
max_bytes = "$TAIL_MAX_BYTES"
policies = [
  { name = "errors", spans = { any = [{ status = "error" }] } },
  { name = "tenth", percentage = 10 },
]
[exporters.a]
plugin = "blackhole"
processors = ["tail"]
TOML
          ;;
        grpc_chain_wasm)
          mkdir -p "$dir/plugins"
          cp "$ROOT/target/plugins/wasm32-wasip2/plugin/ferry_test_bench_chain.wasm" "$dir/plugins/bench-chain.wasm"
          printf '[plugins]\ndir = "%s"\n[pipeline]\nprocessors = ["chain"]\n' "$dir/plugins"
          printf '[processors.chain]\nkind = "wasm"\nplugin = "bench-chain"\n'
          printf '[exporters.a]\nplugin = "blackhole"\n' ;;
        grpc_otlp_http|http_otlp_http)
          printf '[exporters.a]\nplugin = "otlp-http"\nconfig = { endpoint = "http://127.0.0.1:%s" }\n' "$SINK_A" ;;
        grpc_fanout)
          printf '[exporters.a]\nplugin = "otlp-http"\nconfig = { endpoint = "http://127.0.0.1:%s" }\n' "$SINK_A"
          printf '[exporters.b]\nplugin = "otlp-http"\nconfig = { endpoint = "http://127.0.0.1:%s" }\n' "$SINK_B" ;;
      esac
    } > "$dir/ferry.toml"
    # The first start after a build compiles the plugins into the compiled-code cache, and
    # the compiler's memory would count in the peak RSS: start once to fill the cache (plugins
    # load before the receivers listen), then start the daemon that is measured.
    FERRY_LOG=warn "$FERRY" run --config "$dir/ferry.toml" 2>"$dir/ferry-warm.log" &
    local warm=$!
    wait_port "$GRPC" || true
    kill "$warm" 2>/dev/null || true
    wait "$warm" 2>/dev/null || true
    FERRY_LOG=warn "$FERRY" run --config "$dir/ferry.toml" 2>"$dir/ferry.log" &
  else
    local args=(start --otlp-grpc-endpoint "127.0.0.1:$GRPC" --otlp-http-endpoint "127.0.0.1:$HTTP")
    case $scenario in
      grpc_blackhole|grpc_chain|grpc_chain_wasm|grpc_tail)
        # Rotel has no equivalent chain: its row is its pass-through.
        args+=(--exporter blackhole) ;;
      grpc_otlp_http|http_otlp_http)
        args+=(--exporter otlp --otlp-exporter-endpoint "http://127.0.0.1:$SINK_A"
               --otlp-exporter-protocol http --otlp-exporter-compression none) ;;
      grpc_fanout)
        export ROTEL_EXPORTERS="a:otlp,b:otlp" ROTEL_EXPORTERS_TRACES="a,b"
        export ROTEL_EXPORTER_A_ENDPOINT="http://127.0.0.1:$SINK_A" ROTEL_EXPORTER_A_PROTOCOL=http ROTEL_EXPORTER_A_COMPRESSION=none
        export ROTEL_EXPORTER_B_ENDPOINT="http://127.0.0.1:$SINK_B" ROTEL_EXPORTER_B_PROTOCOL=http ROTEL_EXPORTER_B_COMPRESSION=none ;;
    esac
    "$ROTEL" "${args[@]}" >"$dir/rotel.log" 2>&1 &
  fi
  DPID=$!
  PIDS+=("$DPID")
  DLOG=$dir/$daemon.log
  STARTED=yes
  if ! { wait_port "$GRPC" && wait_port "$HTTP"; }; then STARTED=no; fi
  unset ROTEL_EXPORTERS ROTEL_EXPORTERS_TRACES ROTEL_EXPORTER_A_ENDPOINT ROTEL_EXPORTER_A_PROTOCOL \
    ROTEL_EXPORTER_A_COMPRESSION ROTEL_EXPORTER_B_ENDPOINT ROTEL_EXPORTER_B_PROTOCOL ROTEL_EXPORTER_B_COMPRESSION
}

RESULTS=$OUT/results.md
{
  echo "| scenario | daemon | spans/s | CPU s per 1M spans | peak RSS MiB | p50 ms | p99 ms | lost |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
} > "$RESULTS"

for scenario in $SCENARIOS; do
  for daemon in ${DAEMONS:-ferry rotel}; do
    SINK_A=""; SINK_B=""
    case $scenario in
      grpc_otlp_http|http_otlp_http) start_sink SINK_A ;;
      grpc_fanout) start_sink SINK_A; start_sink SINK_B ;;
    esac
    start_daemon "$daemon" "$scenario"
    if [ "$STARTED" = no ]; then
      why=$(grep -m1 -iE "error|failed" "$DLOG" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160)
      echo "| $scenario | $daemon | did not start: ${why:-see $DLOG} | | | | | |" | tee -a "$RESULTS"
      cleanup; continue
    fi
    case $scenario in http_*) proto=http; port=$HTTP ;; *) proto=grpc; port=$GRPC ;; esac
    if [ -n "$TAP" ] && [ "$daemon" = ferry ]; then
      # A reader at its default rate (10 batches a second), its output thrown away.
      "$FERRY" tap "$TAP" --admin "127.0.0.1:$ADMIN" >/dev/null 2>&1 &
      PIDS+=($!)
    fi
    cpu0=$(cpu_ticks "$DPID")
    unique=""; [ "$scenario" = grpc_tail ] && unique=--unique-traces
    summary=$("$LOADGEN" --target "127.0.0.1:$port" --protocol $proto --items "$ITEMS" \
      --attributes "$ATTRS" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
      ${RATE:+--rate "$RATE"} $unique \
      | sed -n 's/^SUMMARY //p')
    if [ "$scenario" = grpc_tail ] && [ "$daemon" = ferry ]; then
      # What the sampler holds at the end of the load: a wait's worth of traces.
      http_get "$ADMIN" /metrics | awk '/^ferry_tail_(traces|bytes)_held/ {printf "  %s %s\n", $1, $2}' >&2
    fi
    acked=$(echo "$summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["acked_items"])')
    # Everything acknowledged must come out: wait for the sinks (or the exporter's count).
    expected=$acked; copies=1
    [ "$scenario" = grpc_fanout ] && copies=2
    delivered=0
    for _ in $(seq 1 300); do
      case $scenario in
        grpc_blackhole|grpc_chain|grpc_chain_wasm|grpc_tail)
          if [ "$daemon" = ferry ]; then
            # Exported, or dropped by a processor (filtered, sampled out): every span accounted.
            delivered=$(http_get "$ADMIN" /metrics | awk '
              /^ferry_exporter_sent_items_total\{exporter="a",signal="traces"\}/ {n += $2}
              /^ferry_processor_items_total\{.*outcome="dropped"/ {n += $2}
              END {print n + 0}')
          else
            delivered=$acked   # Rotel's blackhole cannot be counted from outside
          fi ;;
        grpc_fanout) delivered=$(( $(sink_count "$SINK_A") + $(sink_count "$SINK_B") )) ;;
        *) delivered=$(sink_count "$SINK_A") ;;
      esac
      [ "${delivered:-0}" -ge $((expected * copies)) ] && break
      sleep 0.1
    done
    cpu1=$(cpu_ticks "$DPID")
    rss=$(peak_rss_kib "$DPID")
    lost=$((expected * copies - ${delivered:-0}))
    case $scenario in grpc_blackhole|grpc_chain*|grpc_tail) [ "$daemon" = rotel ] && lost="n/a" ;; esac
    if [ "$scenario" = grpc_tail ] && [ "$daemon" = ferry ]; then
      http_get "$ADMIN" /metrics | awk '/^ferry_tail_(traces_decided|early_decisions)_total/ {printf "  %s %s\n", $1, $2}' >&2
    fi
    row=$(python3 - "$summary" "$cpu0" "$cpu1" "$TICKS" "$rss" "$acked" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
acked = int(sys.argv[6])
print(f'{s["items_per_sec"]:.0f} | {cpu / acked * 1e6:.2f} | '
      f'{int(sys.argv[5]) / 1024:.1f} | {s["p50_ms"]:.2f} | {s["p99_ms"]:.2f}')
PY
)
    line="| $scenario | $daemon | $row | $lost |"
    echo "$line" | tee -a "$RESULTS"
    errors=$(echo "$summary" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["errors"], s["first_error"] or "")')
    [ "${errors%% *}" = 0 ] || echo "  ($daemon/$scenario: loadgen errors: $errors)" >&2
    cleanup
  done
done
echo >&2; echo "written to $RESULTS" >&2
