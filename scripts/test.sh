#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what is missing, then every unit and
# integration test of the workspace (the integration tests run the real rtsup binary), then
# `cargo install` from the repository, then the Debian package built from that binary
# (contents; installed and purged when root), then the release build's training load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-targets --locked
# `cargo install` from the repository works (reusing the build just made).
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cargo install --path . --locked --debug --target-dir target --root "$root" --quiet
"$root/bin/rtsup" --version
scripts/deb-test.sh
# The release build's training load (scripts/release.sh) runs clean: every load it drives
# through rtsup succeeds (checked here on the debug binary, one second per load).
target_dir=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
SECONDS_PER_LOAD=1 python3 bench/pgo_train.py "$target_dir/debug/rtsup"
