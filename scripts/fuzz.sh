#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 20 s each): engine.io query / open-packet
# parsing and the affinity cookie verifier must never panic.
#   scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly-only compiler flags; this machine has one stable toolchain, so
# RUSTC_BOOTSTRAP=1 unlocks them for the fuzz build only (no sanitizer: libFuzzer's coverage
# guidance and the panics are what matter here).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
cd fuzz
log=$(mktemp)
for target in engineio cookie; do
  echo "fuzz: $target for ${SECS}s"
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
      -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (crash input in fuzz/artifacts/$target/)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$log" | tail -2
done
rm -f "$log"
