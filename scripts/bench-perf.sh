#!/usr/bin/env bash
# Performance benchmark (docs/benchmarks.md): pgbench against PostgreSQL
# directly, PgBouncer (transaction mode) and rowgate (JWT auth, identity
# injected in every transaction), side by side on one PostgreSQL; upstream
# round trips from rowgate's /metrics; 10,000 idle clients' RSS and a
# connect storm; then the criterion micro-benchmarks.
#
#   scripts/bench-perf.sh                      # the whole run (~15 min)
#   scripts/bench-perf.sh --seconds 5          # shorter pgbench runs
#   scripts/bench-perf.sh --help               # every option
#
# Installs PostgreSQL and PgBouncer when missing and it can (apt-get).
# Writes target/bench/perf.json (and criterion's target/criterion).
# Set ROWGATE_BENCH_SKIP_MICRO=1 to leave the micro-benchmarks out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
scripts/bench-deps.sh || echo "PgBouncer unavailable: its columns will say it was skipped" >&2
# 10,000 idle clients need as many sockets in rowgate and in the bench.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked
cargo bench --locked --bench perf -- "$@"
if [ -z "${ROWGATE_BENCH_SKIP_MICRO:-}" ]; then
    cargo bench --locked --bench micro -- --noplot 2>&1 | grep -E "^(wire|jwt)/|time:|thrpt:"
fi
