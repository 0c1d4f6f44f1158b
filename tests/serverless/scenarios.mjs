// The Neon serverless driver (and Drizzle) against rowgate's /sql and /v2,
// as an application would use them. tests/serverless.rs runs one scenario
// per call and checks what it prints: one JSON line of observations.
//
//   node scenarios.mjs SCENARIO
//   env: ROWGATE_HTTP = 127.0.0.1:PORT of rowgate's [http] listener
//        ROWGATE_TOKENS = {"name": "token", ...}
import { neon, neonConfig, Pool, Client, NeonDbError } from '@neondatabase/serverless';
import { drizzle as drizzleHttp } from 'drizzle-orm/neon-http';
import { drizzle as drizzleWs } from 'drizzle-orm/neon-serverless';
import { pgTable, text, bigint, timestamp } from 'drizzle-orm/pg-core';
import { eq, sql as dsql } from 'drizzle-orm';
import ws from 'ws';

const HTTP = process.env.ROWGATE_HTTP;
const TOKENS = JSON.parse(process.env.ROWGATE_TOKENS ?? '{}');

// Where the driver sends its requests: rowgate instead of Neon.
neonConfig.fetchEndpoint = () => `http://${HTTP}/sql`;
neonConfig.wsProxy = (host, port) => `${HTTP}/v2?address=${host}:${port}`;
neonConfig.useSecureWebSocket = false;
neonConfig.webSocketConstructor = ws;
// pipelineConnect stays at its default, "password": StartupMessage,
// password and the first query go out in one frame before any reply.

// The host is never contacted: fetchEndpoint and wsProxy point at rowgate.
const DB = process.env.ROWGATE_DBNAME || 'app';
const URL_NO_PASSWORD = `postgresql://authenticated@db.rowgate.test/${DB}`;
const urlWithToken = (token) => `postgresql://anyone:${token}@db.rowgate.test/${DB}`;
const httpSql = (token) => neon(URL_NO_PASSWORD, { authToken: async () => token });

function describe(e) {
  return {
    neon: e instanceof NeonDbError,
    code: e.code ?? null,
    message: String(e.message),
    position: e.position ?? null,
    detail: e.detail ?? null,
  };
}
async function attempt(f) {
  try {
    return { ok: await f() };
  } catch (e) {
    return { error: describe(e) };
  }
}

const userMessages = pgTable('user_messages', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
  userId: text('user_id').notNull().default(dsql`auth.user_id()`),
  message: text('message').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

const scenarios = {
  // Queries, parameters of several types, full results, errors.
  async http_basics() {
    const sql = httpSql(TOKENS.alice);
    const out = {};
    out.tagged = await sql`select auth.user_id() as me, ${41}::int + 1 as n`;
    out.typed = await sql.query(
      'select $1::text as t, $2::int[] as arr, $3::jsonb as j, $4::text as nul, $5::bool as b, $6::numeric as num, now() < now() + interval \'1 s\' as later',
      ['a "quoted", text', [1, 2, 3], JSON.stringify({ k: [1, 'x'] }), null, true, '12.50'],
    );
    out.insert = await sql.query(
      'insert into user_messages (message) values ($1), ($2) returning user_id, message',
      ['one from alice', 'two from alice'],
      { fullResults: true },
    ).then((r) => ({ command: r.command, rowCount: r.rowCount, fields: r.fields.map((f) => [f.name, f.dataTypeID]), rows: r.rows }));
    out.mine = await sql`select user_id, message from user_messages order by id`;
    out.division = await attempt(() => sql`select 1/0`);
    out.syntax = await attempt(() => sql`select frm where`);
    out.guard = await attempt(() => sql`select set_config('app.user_id', 'user_bob', false)`);
    out.arrayMode = await sql.query('select 1 as a, 2 as b', [], { arrayMode: true });
    return out;
  },

  // sql.transaction([...]) with its options; a failing batch rolls back.
  async http_transactions() {
    const sql = httpSql(TOKENS.alice);
    const out = {};
    out.modes = await sql.transaction(
      [
        sql`select current_setting('transaction_isolation') as iso`,
        sql`select current_setting('transaction_read_only') as ro`,
        sql`select current_setting('transaction_deferrable') as def`,
        sql`select auth.user_id() as me`,
      ],
      { isolationLevel: 'Serializable', readOnly: true, deferrable: true },
    );
    out.defaults = await sql.transaction([
      sql`select current_setting('transaction_isolation') as iso`,
      sql`select txid_current() as a`,
      sql`select txid_current() as b`,
    ]);
    out.readOnlyWrite = await attempt(() =>
      sql.transaction([sql`insert into user_messages (message) values ('no')`], { readOnly: true }),
    );
    out.failing = await attempt(() =>
      sql.transaction([
        sql`insert into user_messages (message) values ('rolled back')`,
        sql`select 1/0`,
      ]),
    );
    out.committed = await sql.transaction((tx) => [
      tx`insert into user_messages (message) values ('kept')`,
      tx`select count(*)::int as n from user_messages`,
    ]);
    out.after = await sql`select message from user_messages order by id`;
    out.badIsolation = await attempt(() =>
      sql.transaction([sql`select 1`], { isolationLevel: 'Chaotic' }),
    );
    return out;
  },

  // Tokens rowgate must refuse, over HTTP and over the WebSocket.
  async refused_tokens() {
    const out = {};
    for (const name of ['expired', 'unknown_key', 'garbage']) {
      out[`http_${name}`] = await attempt(() => httpSql(TOKENS[name])`select message from user_messages`);
    }
    out.http_none = await attempt(() => neon(URL_NO_PASSWORD)`select 1`);
    out.http_password = await attempt(() => neon(urlWithToken(TOKENS.alice))`select auth.user_id() as me`);
    const pool = new Pool({ connectionString: urlWithToken(TOKENS.expired) });
    pool.on('error', () => {});
    out.ws_expired = await attempt(() => pool.query('select message from user_messages'));
    await pool.end();
    return out;
  },

  // Several users at once through rowgate's small pool.
  async concurrent_users() {
    const users = Object.keys(TOKENS);
    const rounds = 10;
    const results = await Promise.all(
      users.map(async (name) => {
        const sql = httpSql(TOKENS[name]);
        const seen = new Set();
        for (let i = 0; i < rounds; i++) {
          await sql`insert into user_messages (message) values (${`${name} #${i}`})`;
          const rows = await sql`select user_id, message from user_messages`;
          for (const r of rows) seen.add(r.user_id);
        }
        const pool = new Pool({ connectionString: urlWithToken(TOKENS[name]), max: 2 });
        const viaWs = await Promise.all(
          [0, 1, 2].map(() => pool.query('select auth.user_id() as me, count(*)::int as n from user_messages')),
        );
        await pool.end();
        return { name, seen: [...seen], ws: viaWs.map((r) => r.rows[0]) };
      }),
    );
    return results;
  },

  // The WebSocket path: Pool and Client, pipelined startup, a transaction,
  // named statements, errors, cancellation-free disconnect.
  async websocket() {
    const out = {};
    const client = new Client(urlWithToken(TOKENS.alice));
    await client.connect();
    out.first = (await client.query('select auth.user_id() as me')).rows;
    await client.query('begin');
    await client.query("insert into user_messages (message) values ('in a ws transaction')");
    out.inside = (await client.query('select count(*)::int as n from user_messages')).rows[0].n;
    await client.query('rollback');
    out.afterRollback = (await client.query('select count(*)::int as n from user_messages')).rows[0].n;
    const named = { name: 'mine_by_text', text: 'select auth.user_id() as me, $1::text as echo' };
    out.named = [];
    for (const v of ['a', 'b', 'c']) {
      out.named.push((await client.query({ ...named, values: [v] })).rows[0]);
    }
    out.error = await attempt(() => client.query('select * from no_such_table'));
    out.afterError = (await client.query('select 1 as one')).rows;
    out.big = (await client.query('select repeat($1, 200000) as s', ['x'])).rows[0].s.length;
    await client.end();

    const pool = new Pool({ connectionString: urlWithToken(TOKENS.bob), max: 3 });
    const tx = await pool.connect();
    try {
      await tx.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await tx.query("insert into user_messages (message) values ('bob via ws')");
      out.poolIso = (await tx.query("select current_setting('transaction_isolation') as iso")).rows[0].iso;
      await tx.query('COMMIT');
    } finally {
      tx.release();
    }
    out.poolRows = (await pool.query('select user_id, message from user_messages')).rows;
    await pool.end();
    return out;
  },

  // Drizzle over both driver modes, as an app's data layer.
  async drizzle() {
    const out = {};
    const dbHttp = drizzleHttp({ client: httpSql(TOKENS.alice) });
    await dbHttp.insert(userMessages).values({ message: 'drizzle http' });
    out.http = await dbHttp.select({ userId: userMessages.userId, message: userMessages.message }).from(userMessages);
    out.httpBatch = await dbHttp.batch([
      dbHttp.insert(userMessages).values({ message: 'batched' }).returning({ message: userMessages.message }),
      dbHttp.select({ n: dsql`count(*)::int` }).from(userMessages),
    ]);
    const pool = new Pool({ connectionString: urlWithToken(TOKENS.bob) });
    const dbWs = drizzleWs({ client: pool });
    await dbWs.transaction(async (tx) => {
      await tx.insert(userMessages).values({ message: 'drizzle ws' });
    });
    out.ws = await dbWs.select({ userId: userMessages.userId, message: userMessages.message }).from(userMessages);
    out.wsDelete = (await dbWs.delete(userMessages).where(eq(userMessages.userId, 'user_alice')).returning()).length;
    await pool.end();
    out.aliceAfterBobsDelete = (await dbHttp.select().from(userMessages)).length;
    return out;
  },
};

const name = process.argv[2];
const scenario = scenarios[name];
if (!scenario) {
  console.error(`unknown scenario ${name}; one of ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
try {
  const result = await scenario();
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(e);
  process.exit(1);
}
