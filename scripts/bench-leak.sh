#!/usr/bin/env bash
# Leak-prevention benchmark (docs/benchmarks.md): a seeded mix of app
# requests from 50 users through rowgate and through the two app-side
# patterns on a transaction pool, counting reads that see another user.
#
#   scripts/bench-leak.sh                 # 100,000 transactions via rowgate
#   scripts/bench-leak.sh --quick         # a short run
#   scripts/bench-leak.sh --help          # every option
#
# Installs PostgreSQL and PgBouncer when missing and it can (apt-get);
# without PgBouncer the baselines use the bench's own naive shared pool.
# Writes target/bench/leak.json and docs/img/leak.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
scripts/bench-deps.sh || echo "PgBouncer unavailable: the baselines will say it was skipped" >&2
cargo build --release --locked
exec cargo bench --locked --bench leak -- "$@"
