#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind (the same binary and load
# count the same whatever else the machine does, so changes can be compared on a noisy box).
#   bench/instructions.sh PORT COMMAND...
# Starts COMMAND (a proxy listening on 127.0.0.1:PORT, in front of a running backend) under
# valgrind, warms it with `wrk -t1 -c8 -d3s`, zeroes the counters, loads it for 5 s, dumps
# and prints instructions per request. Needs valgrind and wrk (Debian packages). Examples:
#   bench/instructions.sh 21004 target/release/examples/minimal_proxy 127.0.0.1:21004 1 127.0.0.1:21000
#   bench/instructions.sh 21015 target/release/rtsup start -c rtsup.toml
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
wrk -t1 -c8 -d3s "http://127.0.0.1:$PORT/" >/dev/null
callgrind_control --zero "$vg" >/dev/null 2>&1
requests=$(wrk -t1 -c8 -d5s "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
callgrind_control --dump "$vg" >/dev/null 2>&1
sleep 1
dump=$(ls -t "$out".*.1 | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$requests requests, $total instructions, $((total / requests)) per request ($dump)"
