#!/usr/bin/env bash
# Installs what rowgate's tests and demo need on Debian/Ubuntu, only when
# missing: PostgreSQL server binaries (initdb, postgres, pgbench) and psql.
set -euo pipefail

have_pg_server() {
    [ -n "${ROWGATE_PG_BIN:-}" ] && [ -x "$ROWGATE_PG_BIN/initdb" ] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

need=()
have_pg_server || need+=(postgresql postgresql-contrib)
command -v psql >/dev/null || need+=(postgresql-client)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
