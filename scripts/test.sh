#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs unit and
# integration tests against real PostgreSQL servers the tests start
# themselves (loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
# Build every target (benchmarks included, so they cannot rot), then run the
# tests. Benchmarks are programs that run for minutes: not part of the suite.
cargo test --locked --all-targets --no-run
cargo test --locked --lib --bins --tests "$@"
