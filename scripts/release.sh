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
# rare options) is optimized for size instead; it still works the same, which the test suite
# checks on every build. Takes about twice a plain release build, plus a minute of training.
# Needs what the training needs: wrk, curl, openssl, node and tests/interop's packages
# (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x $profdata ]]; then
  rustup component add llvm-tools
fi
pgo="$PWD/target/pgo"
rm -rf "$pgo/raw" "$pgo/rtsup.profdata"

echo "release: 1/4 instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$pgo/raw" CARGO_TARGET_DIR="$pgo/instrumented" \
  cargo build --release --locked --bin rtsup
# Build scripts ran instrumented too and left profiles of their own: not rtsup's.
rm -rf "$pgo/raw"

echo "release: 2/4 training" >&2
python3 bench/pgo_train.py "$pgo/instrumented/release/rtsup"

echo "release: 3/4 profile" >&2
"$profdata" merge -o "$pgo/rtsup.profdata" "$pgo/raw"

echo "release: 4/4 optimized build" >&2
RUSTFLAGS="-Cprofile-use=$pgo/rtsup.profdata" cargo build --release --locked --bin rtsup
echo "release: target/release/rtsup (profile: $pgo/rtsup.profdata)" >&2
