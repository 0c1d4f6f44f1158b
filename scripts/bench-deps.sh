#!/usr/bin/env bash
# Installs PgBouncer (for the benchmarks' baselines) when missing, if
# apt-get can. Exits non-zero when it is still missing; callers go on
# without it.
set -euo pipefail
if command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "no apt-get: cannot install pgbouncer" >&2; exit 1; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: pgbouncer" >&2
$SUDO apt-get update -qq || exit 1
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pgbouncer >/dev/null || exit 1
# The package starts a system service on some systems; the benchmarks run
# their own instance on a free port and need nothing else listening.
[ -x /usr/sbin/pgbouncer ]
