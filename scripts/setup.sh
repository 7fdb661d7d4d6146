#!/usr/bin/env bash
# Install what a fresh Debian machine lacks for building and testing rtsup:
# cmake (pingora's zlib-ng build), a C toolchain, Node.js (fixture and interop workers),
# redis-server (adapter tests), Chromium (demo page test), systemd (`systemd-analyze verify`
# of the unit), tmux (`rtsup monit` test), dpkg-dev (the .deb test), wrk, curl and openssl
# (the release build's training load) and the npm packages of the interop tests (official
# socket.io server and client, playwright-core to drive Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v redis-server >/dev/null || need+=(redis-server)
# The demo-page test drives Debian's Chromium (no browser download).
[[ -x /usr/bin/chromium ]] || need+=(chromium)
# tests/systemd.rs checks the unit with `systemd-analyze verify`.
command -v systemd-analyze >/dev/null || need+=(systemd)
# tests/pm2.rs drives `rtsup monit` in tmux.
command -v tmux >/dev/null || need+=(tmux)
# scripts/deb-test.sh: cargo-deb fills Depends with dpkg-shlibdeps and strips with binutils.
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
# The release build's training load (bench/pgo_train.py, checked by scripts/test.sh).
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ -f tests/interop/package.json ]]; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
