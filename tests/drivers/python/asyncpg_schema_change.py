"""asyncpg and a schema change under its statement cache, for tests/drivers.rs.

usage: asyncpg_schema_change.py HOST PORT DBNAME MODE CLIENT_X CLIENT_Y
  MODE     direct (set app.user_id ourselves) or proxy (rowgate does)
  CLIENT   user_id:login:password

Y caches a statement on one server connection; X holds that connection in
a transaction; Y changes the column's type on another connection and runs
the cached statement again. PostgreSQL answers 0A000 (cached plan must not
change result type) and asyncpg re-prepares and retries, so Y reads the new
type. Prints what Y read.
"""

import asyncio
import sys

import asyncpg

HOST, PORT, DBNAME, MODE = sys.argv[1:5]
X, Y = (c.split(":", 2) for c in sys.argv[5:7])


async def connect(user_id, login, password):
    conn = await asyncpg.connect(host=HOST, port=int(PORT), database=DBNAME, user=login,
                                 password=password, ssl=False)
    if MODE == "direct":
        await conn.execute(f"select set_config('app.user_id', '{user_id}', false)")
    return conn


async def main():
    y = await connect(*Y)
    print("before", [tuple(r) for r in await y.fetch("select * from shape order by id")])
    x = await connect(*X)
    tr = x.transaction()
    await tr.start()
    await x.fetchval("select 1")
    await y.execute("alter table shape alter column v type int using length(v)")
    try:
        rows = await y.fetch("select * from shape order by id")
        print("after", [tuple(r) for r in rows])
    except Exception as e:  # what a broken result decodes to varies
        print("after failed", type(e).__name__, e)
    await tr.rollback()


asyncio.run(main())
