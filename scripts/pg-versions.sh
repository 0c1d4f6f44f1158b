#!/usr/bin/env bash
# Where the other PostgreSQL majors of the suite live (scripts/ensure-deps.sh
# installs them from tests/pg-versions/package-lock.json).
#   scripts/pg-versions.sh dir     the install directory
#   scripts/pg-versions.sh bin 18  the bin directory of a major, for
#                                  ROWGATE_PG_BIN (exit 1 if not installed)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${ROWGATE_PG_VERSIONS_DIR:-}" ]; then
    dir="$ROWGATE_PG_VERSIONS_DIR"
elif [ "$(id -u)" -eq 0 ]; then
    # Reachable by the `postgres` user the servers run as.
    dir=/usr/local/lib/rowgate-pg-versions
else
    dir="$PWD/target/pg-versions"
fi
case "${1:-}" in
    dir) echo "$dir" ;;
    bin)
        bin="$dir/node_modules/pg${2:?major version}/native/bin"
        [ -x "$bin/postgres" ] || { echo "PostgreSQL ${2} is not installed in $dir (run scripts/ensure-deps.sh)" >&2; exit 1; }
        echo "$bin"
        ;;
    *) echo "usage: $0 dir | bin MAJOR" >&2; exit 2 ;;
esac
