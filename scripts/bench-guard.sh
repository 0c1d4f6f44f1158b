#!/usr/bin/env bash
# What the statement guard costs (issue 5's target: under 5 % of select-only
# throughput). Runs the perf benchmark's select-only pgbench cases twice, back
# to back on the same machine and PostgreSQL setup: rowgate with the guard
# on (strict, the default) and off. Each run also measures PostgreSQL
# directly, so the comparison is of rowgate/direct ratios, which cancels
# most of the drift of a shared, noisy machine between the two runs.
#
#   scripts/bench-guard.sh                 # 16 clients, 10 s per run
#   scripts/bench-guard.sh 20 16,64        # seconds per run, client counts
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
clients="${2:-16}"
scripts/ensure-deps.sh
cargo build --release --locked
run() {
    ROWGATE_GUARD_PROFILE="$1" cargo bench --locked --bench perf -- \
        --seconds "$seconds" --clients "$clients" --no-pgbouncer \
        --cases select-simple,select-extended --skip-scale \
        --json "target/bench/guard-$1.json" >/dev/null
}
run strict
run off
python3 - "$clients" <<'PY'
import json, sys
rows = {}
for profile in ("strict", "off"):
    report = json.load(open(f"target/bench/guard-{profile}.json"))
    for r in report["pgbench"]:
        key = (r["workload"], r["mode"], r["clients"])
        rows.setdefault(key, {})[(profile, r["target"])] = r.get("tps")
print(f"{'workload':<14}{'mode':<10}{'-c':>4}{'on/direct':>11}{'off/direct':>12}{'on vs off':>11}")
for (w, m, c), v in sorted(rows.items()):
    on = v.get(("strict", "rowgate")) / v.get(("strict", "direct"))
    off = v.get(("off", "rowgate")) / v.get(("off", "direct"))
    print(f"{w:<14}{m:<10}{c:>4}{on:>11.2f}{off:>12.2f}{(on / off - 1) * 100:>+10.1f}%")
PY
