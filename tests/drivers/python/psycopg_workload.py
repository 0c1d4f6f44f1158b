"""psycopg 3 workload for tests/drivers.rs.

usage: psycopg_workload.py HOST PORT DBNAME ITERATIONS MODE PREPARE CLIENT...
  MODE     direct (set app.user_id ourselves) or proxy (rowgate does)
  PREPARE  simple (prepare_threshold=None: never prepare) or
           prepare (prepare_threshold=0: every statement server-prepared,
           with a cache of 3 so psycopg also closes statements)
  CLIENT   user_id:login:password, one per concurrent client (a thread each)

Prints deterministic lines "c<k> <seq> ..." (the same directly and through
rowgate) and "ERROR ..." on anything unexpected; exits non-zero then.
"""

import sys
import threading
import traceback
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb
from psycopg import errors

HOST, PORT, DBNAME, ITERATIONS, MODE, PREPARE = sys.argv[1:7]
CLIENTS = [c.split(":", 2) for c in sys.argv[7:]]
ITERATIONS = int(ITERATIONS)

lock = threading.Lock()
out = []
failed = []


def run_client(k, user_id, login, password):
    seq = 0

    def emit(*parts):
        nonlocal seq
        seq += 1
        with lock:
            out.append(f"c{k} {seq:05d} " + " ".join(str(p) for p in parts))

    def check(who, what):
        if who != user_id:
            with lock:
                failed.append(f"LEAK client {k} ({user_id}) saw {who!r} in {what}")

    conn = psycopg.connect(
        host=HOST, port=PORT, dbname=DBNAME, user=login, password=password,
        application_name=f"psycopg-{k}",  # sslmode: libpq's default, prefer
    )
    if PREPARE == "prepare":
        conn.prepare_threshold = 0
        conn.prepared_max = 3
    else:
        conn.prepare_threshold = None
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    if MODE == "direct":
        conn.execute("select set_config('app.user_id', %s, false)", [user_id])
        conn.commit()
    copy_table = f"copy_c{k}"

    for i in range(ITERATIONS):
        # Autocommit off (psycopg's default): the first statement opens a
        # transaction that lasts until commit().
        who = conn.execute("select auth.user_id()").fetchone()[0]
        check(who, "select")
        emit("who", who)
        row = conn.execute(
            "insert into items (n, label, data, price, meta, created) "
            "values (%s, %s, %s, %s, %s, %s) returning owner, n, label, data, price, meta, created",
            [i, f"{user_id}-{i}", bytes([i, 0, 255]), Decimal("12.50") + i,
             Jsonb({"i": i, "who": user_id}), f"2024-01-{i % 28 + 1:02d}"],
        ).fetchone()
        check(row[0], "insert returning")
        emit("inserted", row)
        conn.commit()

        # Explicit transaction block with a savepoint that rolls back.
        with conn.transaction():
            conn.execute("update items set n = n + 1000 where n = %s", [i])
            try:
                with conn.transaction():
                    conn.execute("insert into items (n, label) values (%s, null)", [-1])
            except errors.NotNullViolation as e:
                emit("savepoint error", e.sqlstate)
            r = conn.execute("select count(*), sum(n), auth.user_id() from items").fetchone()
            check(r[2], "transaction")
            emit("txn", r)

        # An error aborts the transaction; rollback brings the session back.
        try:
            conn.execute("select 1 / %s", [0])
        except errors.DivisionByZero as e:
            emit("error", e.sqlstate)
        try:
            conn.execute("select 1")
        except errors.InFailedSqlTransaction as e:
            emit("aborted", e.sqlstate)
        conn.rollback()

        # Distinct texts so the prepared cache (3) evicts and closes some.
        for j in range(4):
            r = conn.execute(f"select {j} + %s::int, auth.user_id()", [i]).fetchone()
            check(r[1], "cache churn")
            emit("churn", j, r[0])
        conn.commit()

        # Pipeline mode: several statements before one Sync.
        with conn.pipeline():
            cur1 = conn.execute("select auth.user_id(), %s::text", [f"p{i}"])
            conn.execute("update items set label = label || '+' where n = %s", [i + 1000])
            cur2 = conn.execute("select count(*) from items where label like %s", ["%+"])
        who, tag = cur1.fetchone()
        check(who, "pipeline")
        emit("pipeline", who, tag, cur2.fetchone()[0])
        conn.commit()

        # executemany (pipelined by psycopg).
        with conn.cursor() as cur:
            cur.executemany(
                "insert into items (n, label) values (%s, %s)",
                [(10000 + i * 10 + j, f"many-{j}") for j in range(3)],
            )
        conn.commit()

        # A server-side (named) cursor, fetched in batches.
        with conn.transaction():
            with conn.cursor(name=f"cur_{k}") as cur:
                cur.itersize = 4
                cur.execute("select owner, n from items order by n")
                rows = list(cur)
            for owner, _ in rows:
                check(owner, "server cursor")
            emit("cursor rows", len(rows), sum(n for _, n in rows))

        # Notices.
        conn.execute("do $$ begin raise notice 'iteration %', " + str(i) + "; end $$")
        conn.commit()

        # COPY in and out (simple protocol) on a table without RLS.
        with conn.cursor() as cur:
            with cur.copy(f"copy {copy_table} (n, label) from stdin") as copy:
                for j in range(5):
                    copy.write_row((i * 100 + j, f"copied {j}"))
            conn.commit()
            buf = bytearray()
            with cur.copy(f"copy (select n, label from {copy_table} order by n) to stdout") as copy:
                for data in copy:
                    buf += data
            emit("copy out", len(buf), buf.count(b"\n"))
        conn.commit()

    rows = conn.execute("select owner, n, label, data, price, meta, created from items order by n, label").fetchall()
    for r in rows:
        check(r[0], "final listing")
        emit("final", r)
    emit("notices", notices)
    conn.commit()
    conn.close()


def guarded(*args):
    try:
        run_client(*args)
    except Exception:
        with lock:
            failed.append(f"client {args[0]} failed:\n{traceback.format_exc()}")


threads = [threading.Thread(target=guarded, args=(k, *c)) for k, c in enumerate(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for line in sorted(out):
    print(line)
for f in failed:
    print("ERROR " + f)
sys.exit(1 if failed else 0)
