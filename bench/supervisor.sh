#!/usr/bin/env bash
# Supervisor figures: idle RSS of the rtsup process with 4 workers (without and with the
# balancer), and crash-to-Ready time of a kill -9'd fixture worker (5 runs).
#   bench/supervisor.sh      (needs cargo build --release and node)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/rtsup
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
status() { "$BIN" status --json --socket "$WORK/rtsup.sock" 2>/dev/null; }
all_ready() { status | python3 -c 'import json,sys; ws=json.load(sys.stdin)["apps"][0]["workers"]; sys.exit(0 if all(w["state"]=="ready" for w in ws) else 1)' 2>/dev/null; }

start() { # balancer section or empty
  local base=$(( 20000 + RANDOM % 12000 ))
  cat > "$WORK/rtsup.toml" <<TOML
[supervisor]
control_socket = "$WORK/rtsup.sock"
log_dir = "$WORK/logs"
[[app]]
name = "fx"
command = "node"
args = ["$PWD/tests/fixtures/worker.js"]
instances = 4
port = $base
restart_delay = "0ms"
$1
TOML
  "$BIN" start -c "$WORK/rtsup.toml" 2>"$WORK/daemon.log" &
  DAEMON=$!
  until all_ready; do sleep 0.05; done
}

echo "| measure | value |"
echo "|---|---|"
start ""
sleep 3
echo "| rtsup RSS, 4 workers, supervisor only (idle 3 s) | $(ps -o rss= -p $DAEMON | awk '{printf "%.1f MB", $1/1024}') |"
for run in 1 2 3 4 5; do
  pid=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["apps"][0]["workers"][1]["pid"])')
  t0=$(date +%s%N)
  kill -9 "$pid"
  until status | python3 -c "import json,sys; w=json.load(sys.stdin)['apps'][0]['workers'][1]; sys.exit(0 if w['state']=='ready' and w['pid']!=$pid else 1)" 2>/dev/null; do sleep 0.01; done
  t1=$(date +%s%N)
  echo "| crash-to-Ready, kill -9 run $run (restart_delay 0, node fixture, tcp probe) | $(( (t1 - t0) / 1000000 )) ms |"
  sleep 1.2  # past min_uptime, so every run starts from a clean crash count
done
kill -TERM $DAEMON; wait $DAEMON || true
start "[balancer]
listen = \"127.0.0.1:$(( 20000 + RANDOM % 9000 ))\"
threads = 2"
sleep 3
echo "| rtsup RSS, 4 workers + balancer (2 proxy threads, idle 3 s) | $(ps -o rss= -p $DAEMON | awk '{printf "%.1f MB", $1/1024}') |"
kill -TERM $DAEMON; wait $DAEMON || true
