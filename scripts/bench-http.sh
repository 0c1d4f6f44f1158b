#!/usr/bin/env bash
# The HTTP front door's cost (issue 12): POST /sql against the same query
# over TCP through rowgate and directly, in one run, side by side, and the
# cold path (a token never seen before) against the warm one (benches/http.rs).
# Writes target/bench/http.md.
#
#   scripts/bench-http.sh                                  # 2000 requests, 8 clients x 5 s
#   scripts/bench-http.sh --requests 5000 --clients 16 --seconds 10
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo bench --locked --bench http -- "$@"
