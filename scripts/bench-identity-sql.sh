#!/usr/bin/env bash
# What rowgate's identity statement costs PostgreSQL itself, without rowgate:
# pgbench pipelines sent straight to a throwaway PostgreSQL, each one
# transaction shaped as rowgate makes it (a Bind/Execute of the identity
# statement, then the client's query, one Sync), against the query alone and
# against a trivial extra statement. Prints PostgreSQL's CPU per transaction
# (postmaster, reaped children and live backends, from /proc) per variant,
# median over rounds whose order rotates.
#
#   scripts/bench-identity-sql.sh                  # 5 rounds x 5 s, 4 clients
#   ROUNDS=9 SECONDS_PER_RUN=10 CLIENTS=8 scripts/bench-identity-sql.sh
#
# Several clients keep the cores busy: on an idle virtual machine a lone
# client's every wake-up costs several times more CPU (16 against 50 µs per
# transaction for the same query here), and the figures would measure that.
#
# Needs PostgreSQL's server binaries and pgbench (scripts/ensure-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
BIN=${ROWGATE_PG_BIN:-$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -1)")}
PGBENCH=$BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)
CLIENTS=${CLIENTS:-4}
PORT=${PORT:-55433}

DIR=$(mktemp -d /tmp/rowgate-identity-sql.XXXXXX)
# PostgreSQL refuses to run as root: run it as the postgres user then.
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$DIR"
cleanup() { as_pg "'$BIN/pg_ctl' -D '$DIR/data' -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
as_pg "'$BIN/initdb' -D '$DIR/data' -A trust -U postgres" >/dev/null
as_pg "'$BIN/pg_ctl' -D '$DIR/data' -l '$DIR/log' -w -o \"-p $PORT -k '$DIR' -c listen_addresses=127.0.0.1\" start" >/dev/null

QUERY="select repeat('x', 2000);"
CLEAR_EACH="coalesce(CASE WHEN current_setting(:n1, true) NOT IN ('', '') THEN set_config(:n1, '', false) END, '') || set_config(:n1, :v1, true) || coalesce(CASE WHEN current_setting(:n2, true) NOT IN ('', '') THEN set_config(:n2, '', false) END, '') || set_config(:n2, :v2, true) || coalesce(CASE WHEN current_setting(:n3, true) NOT IN ('', '') THEN set_config(:n3, '', false) END, '') || set_config(:n3, :v3, true)"
# One check for all the names: clear them all when any holds a value.
CLEAR_ONCE="coalesce(CASE WHEN concat(current_setting(:n1, true), current_setting(:n2, true), current_setting(:n3, true)) <> '' THEN set_config(:n1, '', false) || set_config(:n2, '', false) || set_config(:n3, '', false) END, '') || set_config(:n1, :v1, true) || set_config(:n2, :v2, true) || set_config(:n3, :v3, true)"
declare -A SQL=(
    [query-alone]="$QUERY"
    [trivial-extra]="select where false; $QUERY"
    [settings-only]="SELECT WHERE (set_config(:n1, :v1, true) || set_config(:n2, :v2, true) || set_config(:n3, :v3, true)) IS NULL; $QUERY"
    [clear-each]="SELECT WHERE ($CLEAR_EACH) IS NULL; $QUERY"
    [clear-once]="SELECT WHERE ($CLEAR_ONCE) IS NULL; $QUERY"
)
ORDER=(query-alone trivial-extra settings-only clear-each clear-once)
for v in "${ORDER[@]}"; do
    printf '\\startpipeline\n%s\n\\endpipeline\n' "${SQL[$v]//; /;$'\n'}" >"$DIR/$v.sql"
done

pg_cpu_micros() {
    python3 - "$DIR/data/postmaster.pid" <<'EOF'
import os, sys
pm = int(open(sys.argv[1]).readline())
def stat(pid):
    s = open(f"/proc/{pid}/stat").read()
    r = s[s.rindex(")") + 2:].split()
    return int(r[1]), int(r[11]) + int(r[12]), int(r[13]) + int(r[14])
_, own, reaped = stat(pm)
ticks = own + reaped
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            ppid, t, _ = stat(int(d))
        except OSError:
            continue
        if ppid == pm:
            ticks += t
print(ticks * 1_000_000 // os.sysconf("SC_CLK_TCK"))
EOF
}

VARS=(-D n1=app.user_id -D v1=user_bench -D n2=request.jwt.claims
    -D 'v2={"sub":"user_bench","iss":"https://clerk.example.com","exp":1900000000}'
    -D n3=app.org_id -D v3=org_bench)
RESULTS="$DIR/results"
echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'), $ROUNDS rounds x ${SECONDS_PER_RUN} s, $CLIENTS clients, pgbench -M prepared pipelines"
for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < ${#ORDER[@]}; k++)); do
        v=${ORDER[$(((k + r) % ${#ORDER[@]}))]}
        before=$(pg_cpu_micros)
        out=$("$PGBENCH" -h 127.0.0.1 -p "$PORT" -U postgres -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" "${VARS[@]}" -f "$DIR/$v.sql" postgres 2>&1)
        after=$(pg_cpu_micros)
        n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
        [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "pgbench failed for $v: $(tail -2 <<<"$out")" >&2; exit 1; }
        echo "$v $(((after - before) * 10 / n))" >>"$RESULTS"
    done
done
echo "| transaction | PostgreSQL CPU µs/txn (median) | over the query alone |"
echo "| --- | ---: | ---: |"
python3 - "$RESULTS" "${ORDER[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {v: statistics.median(int(t) / 10 for name, t in rows if name == v) for v in sys.argv[2:]}
base = med[sys.argv[2]]
for v in sys.argv[2:]:
    print(f"| {v} | {med[v]:.1f} | {med[v] - base:+.1f} |")
EOF
