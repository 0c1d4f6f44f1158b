#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs unit and
# integration tests against real PostgreSQL servers the tests start
# themselves (loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --locked --all-targets "$@"
