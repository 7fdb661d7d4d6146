#!/usr/bin/env bash
# The release build: rtsup optimized with a profile of its own hot paths (PGO).
#
#   scripts/release.sh          → target/release/rtsup (then `cargo deb --no-build` packages it)
#
# 1. builds rtsup instrumented (`-Cprofile-generate`, in target/pgo/instrumented);
# 2. runs it under bench/pgo_train.py: supervisor, balancer and reference workers serving
#    keep-alive and one-shot HTTP/1.1, engine.io polling, WebSockets, HTTPS and HTTP/2;
# 3. merges the profile (llvm-profdata, from rustup's llvm-tools component, added if missing);
# 4. builds the release binary with it (`-Cprofile-use`), in the usual place.
#
# With the profile LLVM lays out and inlines the code the traffic runs: the proxy executes
# about a quarter fewer instructions per request than a plain `cargo build --release`
# (docs/BENCHMARKS.md, "Profile-guided build"). Code the training never ran (error paths,
# rare options) is optimized for size instead; it behaves the same, only slower. The test
# suite runs the debug build; this script ends by running the training load once more, short,
# against the binary it built. Takes about twice a plain release build, plus a minute of
# training. Needs what the training needs: wrk, curl, openssl, node and tests/interop's
# packages (scripts/setup.sh installs them; checked before the builds start).
# RUSTFLAGS or CARGO_ENCODED_RUSTFLAGS of your own are kept and the profile flags added.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in wrk curl openssl node; do
  command -v "$tool" >/dev/null || { echo "release: $tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[[ -d tests/interop/node_modules ]] || { echo "release: tests/interop's packages missing (scripts/setup.sh)" >&2; exit 1; }
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x $profdata ]]; then
  rustup component add llvm-tools
  [[ -x $profdata ]] || { echo "release: no $profdata after adding llvm-tools" >&2; exit 1; }
fi
target=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
pgo="$target/pgo"
rm -rf "$pgo/raw" "$pgo/rtsup.profdata"

# The caller's own flags, then ours, one per \x1f-separated field (paths with spaces stay whole).
own=${CARGO_ENCODED_RUSTFLAGS:-}
if [[ -z $own && -n ${RUSTFLAGS:-} ]]; then
  read -ra words <<<"$RUSTFLAGS"
  own=$(IFS=$'\x1f'; echo "${words[*]}")
fi
unset RUSTFLAGS
with() { if [[ -n $own ]]; then printf '%s\x1f%s' "$own" "$1"; else printf '%s' "$1"; fi; }

echo "release: 1/4 instrumented build" >&2
CARGO_ENCODED_RUSTFLAGS=$(with "-Cprofile-generate=$pgo/raw") CARGO_TARGET_DIR="$pgo/instrumented" \
  cargo build --release --locked --bin rtsup
# Build scripts ran instrumented too and left profiles of their own: not rtsup's.
rm -rf "$pgo/raw"

echo "release: 2/4 training" >&2
SECONDS_PER_LOAD=4 python3 bench/pgo_train.py "$pgo/instrumented/release/rtsup"

echo "release: 3/4 profile" >&2
"$profdata" merge -o "$pgo/rtsup.profdata" "$pgo/raw"

echo "release: 4/4 optimized build" >&2
CARGO_ENCODED_RUSTFLAGS=$(with "-Cprofile-use=$pgo/rtsup.profdata") cargo build --release --locked --bin rtsup
# The binary that ships serves the training's loads too (a short run).
SECONDS_PER_LOAD=1 python3 bench/pgo_train.py "$target/release/rtsup"
echo "release: $target/release/rtsup (profile: $pgo/rtsup.profdata)" >&2
