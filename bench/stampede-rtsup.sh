#!/usr/bin/env bash
# Reconnect stampede through the real rtsup: N WebSocket clients on one worker, then
# `rtsup reload` replaces it (drain_timeout 1s) and the remaining connections are closed
# spread over close_window (or at once with close_window = "0s"). Prints the JSON line of
# bench/stampede.js (closes and reconnects per 100 ms) for each window given.
#   bench/stampede-rtsup.sh [CLIENTS] [WINDOW...]      e.g. bench/stampede-rtsup.sh 2000 0s 5s
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-2000}; shift || true
windows=("${@:-0s 5s}")
[[ $# -eq 0 ]] && windows=(0s 5s)
bin=${RTSUP_BIN:-target/release/rtsup}
[[ -x $bin ]] || bin=target/debug/rtsup
export NODE_PATH=$PWD/tests/interop/node_modules
for window in "${windows[@]}"; do
  dir=$(mktemp -d)
  cat >"$dir/rtsup.toml" <<TOML
[supervisor]
control_socket = "$dir/rtsup.sock"
log_dir = "$dir/logs"

[[app]]
name = "io"
command = "sh"
args = ["-c", "exec node $PWD/bench/stampede.js --worker \$PORT"]
port = 24100
drain_timeout = "1s"
close_window = "$window"
kill_timeout = "3s"

[balancer]
listen = "127.0.0.1:24190"
TOML
  "$bin" start -c "$dir/rtsup.toml" 2>"$dir/daemon.log" &
  daemon=$!
  for _ in $(seq 100); do "$bin" status --socket "$dir/rtsup.sock" --json 2>/dev/null | grep -q '"ready"' && break; sleep 0.1; done
  mkfifo "$dir/enter"
  node bench/stampede.js --url http://127.0.0.1:24190 --mode external --clients "$clients" \
    <"$dir/enter" >"$dir/result.json" 2>"$dir/clients.log" &
  clients_pid=$!
  exec 3>"$dir/enter"
  for _ in $(seq 600); do grep -q "press Enter" "$dir/clients.log" 2>/dev/null && break; sleep 0.1; done
  echo >&3
  "$bin" reload --socket "$dir/rtsup.sock" >/dev/null
  wait "$clients_pid" || true
  exec 3>&-
  echo "close_window=$window $(cat "$dir/result.json")"
  "$bin" stop --socket "$dir/rtsup.sock" >/dev/null || kill "$daemon"
  wait "$daemon" || true
  rm -rf "$dir"
done
