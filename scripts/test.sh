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

# Other PostgreSQL majors (binaries from scripts/ensure-deps.sh), besides the
# system's 15 above: the tests pick the server from ROWGATE_PG_BIN. The
# whole suite on 13 and 18, a smoke run on the others (about 7 minutes on a
# busy 2-core machine for all of it: 13 about 3, 18 about 4, the smoke
# runs under half a minute each; ROWGATE_PG_VERSIONS=none skips it, a list
# such as "13 18" narrows it).
versions_run() {
    local major=$1
    shift
    local bin
    if ! bin="$(scripts/pg-versions.sh bin "$major")"; then
        [ "$(uname -m)" = x86_64 ] && return 1
        echo "skipping PostgreSQL $major: no binaries for $(uname -m)" >&2
        return 0
    fi
    local started=$SECONDS
    echo "=== PostgreSQL $major ($bin): $*" >&2
    ROWGATE_PG_BIN="$bin" cargo test --locked "$@"
    echo "=== PostgreSQL $major took $((SECONDS - started)) s" >&2
}
wanted="${ROWGATE_PG_VERSIONS:-13 18 14 16 17}"
for major in $wanted; do
    case "$major" in
    none) ;;
    13)
        # The whole suite; three conformance steps where 13's own reporting
        # of ParameterStatus differs are listed in tests/conformance.rs
        # (VERSION_DIFFERS).
        versions_run 13 --lib --bins --tests
        ;;
    18)
        # The whole suite. PostgreSQL 18 commits nothing when a single
        # simple Query follows a completed Execute before the Sync (rowgate's
        # identity statement in front of a client's Query): rowgate restarts
        # the transaction command with an empty Parse before its Sync
        # (src/client/core/inject.rs, trailing_sync). One conformance step
        # where 18's own pipelining semantics show is listed in
        # tests/conformance.rs (VERSION_DIFFERS).
        versions_run 18 --lib --bins --tests
        ;;
    *)
        # A smoke run on the other majors: startup, routing, identity,
        # cancel.
        versions_run "$major" --test databases
        ;;
    esac
done
