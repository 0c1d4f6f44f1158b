#!/usr/bin/env bash
# Installs what rowgate's build, tests and demo need on Debian/Ubuntu, only
# when missing: PostgreSQL server binaries (initdb, postgres, pgbench) with
# contrib (pgcrypto, for sealed identity), psql, and libclang (the pg_query
# crate generates its bindings to libpg_query with bindgen at build time).
set -euo pipefail

have_pg_server() {
    [ -n "${ROWGATE_PG_BIN:-}" ] && [ -x "$ROWGATE_PG_BIN/initdb" ] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

need=()
have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    # libclang itself, not libclang-cpp (a different library).
    compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null ||
        compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null ||
        compgen -G "/usr/lib/*/libclang.so*" >/dev/null
}

have_pgcrypto() {
    compgen -G "/usr/share/postgresql/*/extension/pgcrypto.control" >/dev/null
}

have_pg_server || need+=(postgresql postgresql-contrib)
have_pg_server && ! have_pgcrypto && need+=(postgresql-contrib)
command -v psql >/dev/null || need+=(postgresql-client)
have_libclang || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
