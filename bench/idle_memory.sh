#!/usr/bin/env bash
# RSS per idle engine.io WebSocket through one rtsup balancer thread (2 reference workers):
# the baseline is taken after a jemalloc purge (gdb), the figure 3 s after the last of N opened.
#   bench/idle_memory.sh [BIN] [N]     (default: target/release/rtsup, 3000; needs gdb, node)
# Compare two builds by running it on each binary in turn.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/rtsup}; N=${2:-3000}
WORK=$(mktemp -d /tmp/rtsup-idle-XXXX)
BASE=$((33000 + RANDOM % 5000)); LB=$((BASE + 10))
cat > "$WORK/rtsup.toml" <<EOC
[supervisor]
control_socket = "$WORK/rtsup.sock"
log_dir = "$WORK/logs"
[[app]]
name = "ref"
command = "$(realpath "$BIN")"
args = ["worker"]
instances = 2
port = $BASE
ready = "http:/health"
[balancer]
listen = "127.0.0.1:$LB"
threads = 1
session_rate = 0
max_connections_per_address = 0
access_log = "off"
EOC
"$BIN" start -c "$WORK/rtsup.toml" 2>"$WORK/rtsup.log" &
PID=$!
trap 'kill $PID 2>/dev/null; kill ${NODE:-} 2>/dev/null; true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$LB/health" >/dev/null && break; sleep 0.2; done
sleep 2
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
gdb -p "$PID" -batch -ex 'p (int)_rjem_mallctl("arena.4096.purge", 0, 0, 0, 0)' >/dev/null 2>&1 || true
sleep 1
BEFORE=$(rss)
NODE_PATH=tests/interop/node_modules node bench/idle_ws.js "ws://127.0.0.1:$LB" "$N" 900000 >"$WORK/node.log" 2>&1 </dev/null &
NODE=$!
until grep -qs open "$WORK/node.log"; do sleep 0.5; done
sleep 3
AFTER=$(rss)
echo "| $BIN | $N | $(cat "$WORK/node.log") | $BEFORE kB | $AFTER kB | $(( (AFTER - BEFORE) * 1024 / N )) B per WebSocket |"
