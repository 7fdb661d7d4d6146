#!/usr/bin/env bash
# Room fan-out through rtsup: N official socket.io clients in one room, spread over 4 workers,
# K broadcasts; prints delivery latency per adapter (and for Node socket.io workers with
# @socket.io/redis-adapter), same machine, same run.
#   bench/fanout.sh [CLIENTS] [BROADCASTS]
# Needs: cargo build --release, node + tests/interop/node_modules, Redis on 127.0.0.1:6379.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-1000}
BROADCASTS=${2:-10}
BIN=$PWD/target/release/rtsup
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

run_case() { # name, [[app]] body
  local name=$1 app=$2 base lb
  # Below the ephemeral range: 1000 client sockets take ephemeral ports.
  base=$(( 20000 + RANDOM % 12000 )); lb=$(( base + 10 ))
  cat > "$WORK/rtsup.toml" <<TOML
[supervisor]
control_socket = "$WORK/rtsup.sock"
log_dir = "$WORK/logs"
$(printf "$app" "$base")
[balancer]
listen = "127.0.0.1:$lb"
threads = 2
TOML
  "$BIN" start -c "$WORK/rtsup.toml" 2>"$WORK/daemon.log" &
  local pid=$!
  local tries=0
  until "$BIN" status --json --socket "$WORK/rtsup.sock" 2>/dev/null | python3 -c 'import json,sys; ws=json.load(sys.stdin)["apps"][0]["workers"]; sys.exit(0 if all(w["state"]=="ready" for w in ws) else 1)' 2>/dev/null; do
    (( ++tries < 300 )) || { echo "workers not ready; daemon log:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
    sleep 0.1
  done
  local extra=(); [[ $name == node* ]] || extra=(--app reference)
  node tests/interop/clients.js "http://127.0.0.1:$lb" --clients "$CLIENTS" --broadcasts "$BROADCASTS" \
    --transports default --timeout-ms 120000 "${extra[@]}" > "$WORK/$name.json" || true
  kill -TERM $pid; wait $pid || true
  python3 - "$name" "$WORK/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))
per = "/".join(str(v) for _, v in sorted(s["perWorker"].items()))
print(f"| {name:<34} | {s['connected']:>5} | {per:<15} | {s['delivered']:>6}/{s['expected']:<6} | {s['latencyMs']['p50']!s:>5} | {s['latencyMs']['p99']!s:>5} | {s['connectErrors']:>4} | {s['sessionUnknown']:>4} |")
PY
}

REF="[[app]]\nname = \"ref\"\ncommand = \"$BIN\"\nargs = [\"worker\"]\ninstances = 4\nport = %s\nready = \"http:/health\"\nenv = { RTSUP_RATE_LIMIT = \"1000\", RTSUP_ADAPTER_PREFIX = \"bench-$$\" %s}\n"
echo "room fan-out: $CLIENTS clients (one process, default transports) in one room over 4 workers, $BROADCASTS broadcasts; latency = send→receive, ms"
echo "| case                               | conn. | per worker      | delivered     |   p50 |   p99 | cerr | 400s |"
echo "|------------------------------------|-------|-----------------|---------------|-------|-------|------|------|"
run_case "rtsup-worker, embedded hub" "$(printf "$REF" %s "")"
run_case "rtsup-worker, Redis (fred)" "$(printf "$REF" %s ', REDIS_URL = "redis://127.0.0.1:6379" ')"
run_case "node socket.io + redis-adapter" "[[app]]\nname = \"io\"\ncommand = \"node\"\nargs = [\"$PWD/tests/interop/server.js\"]\ninstances = 4\nport = %s\nenv = { ADAPTER_KEY = \"bench-$$\" }\n"
