#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind (the same binary and load
# count the same whatever else the machine does, so changes can be compared on a noisy box).
#   bench/instructions.sh PORT COMMAND...
# Starts COMMAND (a proxy listening on 127.0.0.1:PORT, in front of a running backend) under
# valgrind, warms it with `wrk -t1 -c8 -d3s`, zeroes the counters, loads it for 5 s, dumps
# and prints instructions per request: all of the process's, and the request path's (what
# pingora's accept loop runs, without the supervisor's once-a-second work; 0 when the build
# inlined the loop away) and the connection tasks' (what runs under rtsup's admission of each
# connection). Needs valgrind
# and wrk (Debian packages). With LOAD=poll the load is engine.io polling handshakes instead
# (`bench/poll_rate.js`, 8 loops, each session a GET, a POST and a GET; needs node and
# tests/interop's packages) and the figures are per session. URL_PATH (default /) is the path
# wrk asks for (not used with LOAD=poll); a load that gets answers other than 2xx/3xx fails.
# Examples:
#   bench/instructions.sh 21004 target/release/examples/minimal_proxy 127.0.0.1:21004 1 127.0.0.1:21000
#   bench/instructions.sh 21015 target/release/rtsup start -c rtsup.toml
#   LOAD=poll bench/instructions.sh 21030 target/release/rtsup start -c rtsup-workers.toml
#   URL_PATH=/health bench/instructions.sh 21030 target/release/rtsup start -c rtsup-workers.toml
# `callgrind_annotate --inclusive=yes target/bench/callgrind.out.*` then shows where they go.
set -euo pipefail
PORT=$1
shift
mkdir -p target/bench
out="target/bench/callgrind.out.$PORT"
rm -f "$out"*
valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" >target/bench/callgrind.log 2>&1 &
vg=$!
# SIGTERM first (rtsup stops its workers), SIGKILL after 5 s (pingora's own shutdown waits
# out a long grace period).
stop() {
  kill "$vg" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$vg" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$vg" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 150); do
  (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  sleep 0.2
done
sleep 2
if [[ ${LOAD:-wrk} == poll ]]; then
  unit=session
  export NODE_PATH=$PWD/tests/interop/node_modules
  node bench/poll_rate.js "http://127.0.0.1:$PORT" 8 3000 >/dev/null
  callgrind_control --zero "$vg" >/dev/null 2>&1
  count=$(node bench/poll_rate.js "http://127.0.0.1:$PORT" 8 8000 | sed -E 's/.*"sessions":([0-9]+).*/\1/')
else
  unit=request
  url_path=${URL_PATH:-/}
  url="http://127.0.0.1:$PORT/${url_path#/}"
  wrk -t1 -c8 -d3s "$url" >/dev/null
  callgrind_control --zero "$vg" >/dev/null 2>&1
  load=$(wrk -t1 -c8 -d5s "$url")
  if grep -q Non-2xx <<<"$load"; then
    echo "$url answered other than 2xx/3xx: $(grep Non-2xx <<<"$load")" >&2
    exit 1
  fi
  count=$(awk "/requests in/ {print \$1}" <<<"$load")
fi
callgrind_control --dump "$vg" >/dev/null 2>&1
sleep 1
dump=$(ls -t "$out".*.1 | head -1)
report=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null)
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' <<<"$report")
inclusive() { awk -v f="$1" 'index($0, f) {gsub(",", "", $1); print $1; exit}' <<<"$report"; }
path=$(inclusive 'run_endpoint::{{closure}}::{{closure}} ')
# The connections' tasks (rtsup's admission and everything under it): the request path
# without the accept loop. A profile-guided build (scripts/release.sh) inlines the accept
# loop's closures, so only this figure is there to compare builds by.
conns=$(inclusive '<balancer::admission::Admission<A> as pingora_core::apps::ServerApp>::process_new::{{closure}} ')
echo "$count ${unit}s, $total instructions: $((total / count)) per $unit, request path $((${path:-0} / count)), connection tasks $((${conns:-0} / count)) ($dump)"
