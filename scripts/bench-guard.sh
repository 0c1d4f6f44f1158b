#!/usr/bin/env bash
# What the statement guard costs (issue 5's target: under 5 % of select-only
# throughput). Two rowgate processes on one PostgreSQL, guard on (strict,
# the default) and off, measured in short pgbench runs that alternate
# between them round after round, with PostgreSQL directly in each round
# (benches/guard_ab). Prints every round, then the median on/off ratio per
# pgbench protocol and the CPU time each rowgate spent per transaction.
#
#   scripts/bench-guard.sh                          # 5 rounds x 5 s, 16 clients
#   scripts/bench-guard.sh --rounds 9 --seconds 10  # tighter medians
#   scripts/bench-guard.sh --help                   # every option
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked
cargo bench --locked --bench guard_ab -- "$@"
