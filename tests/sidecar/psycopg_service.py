"""A legacy-style psycopg 3 service: one psycopg_pool.ConnectionPool of 4
connections, logged in to rowgate as the service "legacy", shared by every
user. Each request names its user in-band at the start of its transaction:

    with pool.connection() as conn:
        with conn.transaction():
            conn.execute("select set_config('rowgate.token', %s, true)", [token])

Usage: python psycopg_service.py HOST PORT DBNAME SERVICE PASSWORD TOKENS_FILE ROUNDS
Prints "OK requests=N" when every request saw exactly its user's rows and
every request without a token saw none; exits 1 otherwise.
"""
import sys
from concurrent.futures import ThreadPoolExecutor

from psycopg_pool import ConnectionPool

host, port, dbname, service, password, tokens_file, rounds = sys.argv[1:8]
tokens = {}
with open(tokens_file) as f:
    for line in f:
        parts = line.split()
        if len(parts) == 2:
            tokens[parts[0]] = parts[1]

pool = ConnectionPool(
    f"host={host} port={port} dbname={dbname} user={service} password={password} sslmode=disable",
    min_size=4,
    max_size=4,
    open=True,
    timeout=30,
)


def request(user, token):
    with pool.connection() as conn:
        with conn.transaction():
            if token is not None:
                conn.execute("select set_config('rowgate.token', %s, true)", [token])
            rows = conn.execute("select auth.user_id(), owner, body from notes order by body").fetchall()
            (uid,) = conn.execute("select auth.user_id()").fetchone()
    owners = [r[1] for r in rows]
    if user is None:
        if rows or uid is not None:
            return f"request without a token saw {len(rows)} rows as {uid}"
        return None
    if len(rows) != 2 or uid != user or any(o != user for o in owners):
        return f"request of {user} saw {owners} as {uid}"
    return None


jobs = []
with ThreadPoolExecutor(max_workers=16) as ex:
    for _ in range(int(rounds)):
        for user, token in tokens.items():
            jobs.append(ex.submit(request, user, token))
        jobs.append(ex.submit(request, None, None))
    failures = []
    for j in jobs:
        try:
            fail = j.result(timeout=60)
        except Exception as e:  # a failed request is a failure, not a crash
            fail = f"request failed: {type(e).__name__}: {e}"
        if fail:
            failures.append(fail)
pool.close()
if failures:
    print(f"FAILED {len(failures)} of {len(jobs)}: {failures[:5]}")
    sys.exit(1)
print(f"OK requests={len(jobs)}")
