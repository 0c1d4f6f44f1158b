#!/usr/bin/env bash
# The demo: installs what it needs, then runs `rowgate dev` (a throwaway
# PostgreSQL, migrations, a dev signing key, the proxy, and psql commands
# with tokens for two demo users).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo run --release --locked -- dev "$@"
