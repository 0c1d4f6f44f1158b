#!/usr/bin/env bash
# rowgate's user-space instructions per transaction, counted by valgrind's
# callgrind: the same number run after run, where CPU time on a shared
# machine moves by 20 % between runs minutes apart. Use it to decide whether
# a change to the hot path helps; the performance bench (scripts/bench-perf.sh)
# stays the measure of time, against PgBouncer.
#
# For each case it runs benches/perf (4 clients, no PgBouncer) with rowgate
# under callgrind, then prints the instructions of the whole run, less the
# upstream connects (SCRAM) and the client logins, divided by the
# transactions pgbench made. Kernel time (the system calls) is not counted.
#
#   scripts/bench-instructions.sh                           # select-simple, select-prepared
#   scripts/bench-instructions.sh --cases orm-simple
#   scripts/bench-instructions.sh --baseline /tmp/rowgate-old   # also another build
set -euo pipefail
cd "$(dirname "$0")/.."
cases=select-simple,select-prepared
baseline=""
seconds=8
while [ $# -gt 0 ]; do
    case "$1" in
    --cases) cases=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: $0 [--cases a,b] [--baseline /path/to/rowgate] [--seconds N]" >&2; exit 2 ;;
    esac
done
scripts/ensure-deps.sh
if ! command -v valgrind >/dev/null; then
    apt-get install -y -q valgrind >/dev/null
fi
cargo build --release --locked
out="$(mktemp -d /tmp/rowgate-instructions.XXXXXX)"
trap 'rm -rf "$out"' EXIT
current="$(pwd)/target/release/rowgate"
# benches/perf runs ROWGATE_BENCH_WRAPPER with its own rowgate's path
# appended; this wrapper runs another binary in its place.
cat >"$out/instead.sh" <<'EOF'
#!/bin/sh
bin=$1
shift 2
exec "$bin" "$@"
EOF
chmod +x "$out/instead.sh"

count() { # binary case -> instructions per transaction
    local bin=$1 case=$2 tag
    tag="$(basename "$bin")-$case"
    rm -f "$out"/cg-*.out
    ROWGATE_BENCH_WRAPPER="valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$out/cg-%p.out $out/instead.sh $bin" \
        cargo bench --locked --bench perf -- --cases "$case" --clients 4 --seconds "$seconds" \
        --rounds 1 --skip-scale --no-pgbouncer --svg "$out/perf.svg" --json "$out/$tag.json" \
        >"$out/$tag.log" 2>&1 || { tail -20 "$out/$tag.log" >&2; return 1; }
    python3 - "$out/$tag.json" "$(ls -S "$out"/cg-*.out | head -1)" <<'EOF'
import json, re, subprocess, sys
runs = [r for r in json.load(open(sys.argv[1]))["pgbench"] if r["target"] == "rowgate"]
txns = runs[0]["transactions"]
report = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", sys.argv[2]],
                        capture_output=True, text=True, check=True).stdout
def inclusive(name):
    m = re.search(r"^\s*([\d,]+) .*" + re.escape(name), report, re.M)
    return int(m.group(1).replace(",", "")) if m else 0
total = inclusive("PROGRAM TOTALS")
setup = inclusive("ServerConn::connect_inner") + inclusive("client::startup::authenticate")
print(f"{(total - setup) / txns:.0f} {txns}")
EOF
}

printf '%-18s %-40s %14s %12s\n' case binary "instr/txn" transactions
IFS=, read -r -a list <<<"$cases"
for case in "${list[@]}"; do
    for bin in "$current" ${baseline:+"$baseline"}; do
        read -r per txns < <(count "$bin" "$case")
        printf '%-18s %-40s %14s %12s\n' "$case" "$bin" "$per" "$txns"
    done
done
