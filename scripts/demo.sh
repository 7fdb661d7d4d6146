#!/usr/bin/env bash
# The main job from a fresh machine: install the build needs (cmake for pingora's zlib-ng, a C
# toolchain), build, and run `rtsup start` on the embedded demo (2 reference Socket.IO workers
# + sticky balancer on http://127.0.0.1:8080/, admin on 127.0.0.1:9090). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
if ((${#need[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec cargo run --release --locked -- start "$@"
