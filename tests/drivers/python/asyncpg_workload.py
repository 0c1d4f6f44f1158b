"""asyncpg workload for tests/drivers.rs.

usage: asyncpg_workload.py HOST PORT DBNAME ITERATIONS MODE CLIENT...
  MODE     direct (set app.user_id ourselves) or proxy (rowgate does)
  CLIENT   user_id:login:password, one per concurrent client (a task each)

asyncpg prepares a named statement for every query it runs with
arguments and keeps them in a per-connection cache, binds with binary
formats, pipelines executemany, and reads cursors through portals with row
limits. Prints deterministic lines "c<k> <seq> ..." and "ERROR ..." on
anything unexpected; exits non-zero then.
"""

import asyncio
import datetime
import json
import sys
import traceback
from decimal import Decimal

import asyncpg

HOST, PORT, DBNAME, ITERATIONS, MODE = sys.argv[1:6]
CLIENTS = [c.split(":", 2) for c in sys.argv[6:]]
ITERATIONS = int(ITERATIONS)

out = []
failed = []


async def run_client(k, user_id, login, password):
    seq = 0

    def emit(*parts):
        nonlocal seq
        seq += 1
        out.append(f"c{k} {seq:05d} " + " ".join(str(p) for p in parts))

    def check(who, what):
        if who != user_id:
            failed.append(f"LEAK client {k} ({user_id}) saw {who!r} in {what}")

    conn = await asyncpg.connect(
        host=HOST, port=int(PORT), database=DBNAME, user=login, password=password,  # ssl: prefer
    )
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if MODE == "direct":
        await conn.execute(f"select set_config('app.user_id', '{user_id}', false)")
    notices = []
    conn.add_log_listener(lambda c, m: notices.append(m.message))
    copy_table = f"copy_c{k}"
    insert = await conn.prepare(
        "insert into items (n, label, data, price, meta, created) "
        "values ($1, $2, $3, $4, $5, $6) returning owner, n, label, data, price, meta, created"
    )

    for i in range(ITERATIONS):
        who = await conn.fetchval("select auth.user_id()")
        check(who, "fetchval")
        emit("who", who)
        row = await insert.fetchrow(
            i, f"{user_id}-{i}", bytes([i, 0, 255]), Decimal("12.50") + i,
            {"i": i, "who": user_id}, datetime.date(2024, 1, i % 28 + 1),
        )
        check(row["owner"], "insert returning")
        emit("inserted", tuple(row))

        async with conn.transaction():
            await conn.execute("update items set n = n + 1000 where n = $1", i)
            try:
                async with conn.transaction():
                    await conn.execute("insert into items (n, label) values ($1, null)", -1)
            except asyncpg.NotNullViolationError as e:
                emit("savepoint error", e.sqlstate)
            r = await conn.fetchrow("select count(*), sum(n), auth.user_id() from items")
            check(r[2], "transaction")
            emit("txn", tuple(r))

        try:
            async with conn.transaction():
                await conn.fetchval("select 1 / $1", 0)
        except asyncpg.DivisionByZeroError as e:
            emit("error", e.sqlstate)

        # Statement cache churn: distinct texts, reused across iterations.
        for j in range(4):
            r = await conn.fetchrow(f"select {j} + $1::int, auth.user_id()", i)
            check(r[1], "cache")
            emit("cached", j, r[0])

        await conn.executemany(
            "insert into items (n, label) values ($1, $2)",
            [(10000 + i * 10 + j, f"many-{j}") for j in range(3)],
        )

        # A cursor: a portal read with row limits inside a transaction.
        async with conn.transaction():
            total, count = 0, 0
            async for r in conn.cursor("select owner, n from items order by n", prefetch=3):
                check(r["owner"], "cursor")
                total += r["n"]
                count += 1
            emit("cursor rows", count, total)
            cur = await conn.cursor("select n from items order by n")
            first = await cur.fetch(2)
            emit("cursor fetch", [r[0] for r in first])

        await conn.execute("do $$ begin raise notice 'iteration %', " + str(i) + "; end $$")

        # COPY in (binary, from records) and out, on a table without RLS.
        await conn.copy_records_to_table(
            copy_table, records=[(i * 100 + j, f"copied {j}") for j in range(5)], columns=["n", "label"]
        )
        lines = []

        async def sink(data):
            lines.append(bytes(data))

        await conn.copy_from_query(f"select n, label from {copy_table} order by n", output=sink)
        data = b"".join(lines)
        emit("copy out", len(data), data.count(b"\n"))

        # Explicit prepared statement reused, with a type the server infers.
        stmt = await conn.prepare("select $1::numeric * 2, $2::text[]")
        for j in range(3):
            emit("prepared", tuple(await stmt.fetchrow(Decimal(j) / 4, [f"a{j}", None])))

    if k == 0:
        # A query timeout: asyncpg sends a CancelRequest on a new connection
        # with the key it got at startup, then goes on with the session.
        sleep = await conn.prepare("select pg_sleep($1)")
        try:
            await sleep.fetchval(10, timeout=0.5)
        except asyncio.TimeoutError:
            emit("timed out")
        who = await conn.fetchval("select auth.user_id()")
        check(who, "after a cancel")
        emit("after cancel", who)

    rows = await conn.fetch("select owner, n, label, data, price, meta, created from items order by n, label")
    for r in rows:
        check(r["owner"], "final listing")
        emit("final", tuple(r))
    await asyncio.sleep(0.05)  # notices are delivered asynchronously
    emit("notices", notices)
    await conn.close()


async def guarded(k, *args):
    try:
        await run_client(k, *args)
    except Exception:
        failed.append(f"client {k} failed:\n{traceback.format_exc()}")


async def main():
    await asyncio.gather(*(guarded(k, *c) for k, c in enumerate(CLIENTS)))


asyncio.run(main())
for line in sorted(out):
    print(line)
for f in failed:
    print("ERROR " + f)
sys.exit(1 if failed else 0)
