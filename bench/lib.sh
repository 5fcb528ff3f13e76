# Shared by the bench scripts (sourced): free loopback ports, a process's CPU time and peak
# memory from /proc, the sink's trace count, and the processes stopped when the script exits.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
sink_count() { curl -sf "http://127.0.0.1:$1/count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["traces"])'; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); }
trap cleanup EXIT
