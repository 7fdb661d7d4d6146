#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install what is missing, then every unit and
# integration test of the workspace (the integration tests run the real rtsup binary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-targets --locked
