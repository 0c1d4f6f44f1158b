// node-postgres (`pg`) workload for tests/drivers.rs.
//
// usage: node workload.js HOST PORT DBNAME ITERATIONS MODE CLIENT...
//   MODE     direct (set app.user_id ourselves) or proxy (rowgate does)
//   CLIENT   user_id:login:password, one per concurrent client
//
// Uses the three ways pg sends a query: simple (no values), unnamed
// extended (values), and named prepared statements ({name, text, values},
// prepared once per connection and reused). Prints deterministic lines
// "c<k> <seq> ..." and "ERROR ..." on anything unexpected; exits non-zero
// then.
'use strict';

const { Client } = require('pg');

const [HOST, PORT, DBNAME, ITERATIONS, MODE, ...SPECS] = process.argv.slice(2);
const CLIENTS = SPECS.map((s) => {
  const i = s.indexOf(':');
  const j = s.indexOf(':', i + 1);
  return [s.slice(0, i), s.slice(i + 1, j), s.slice(j + 1)];
});

const out = [];
const failed = [];

const show = (v) =>
  JSON.stringify(v, (_, x) => {
    if (x && x.type === 'Buffer' && Array.isArray(x.data)) return 'bytes:' + Buffer.from(x.data).toString('hex');
    return x;
  });

async function runClient(k, userId, login, password) {
  let seq = 0;
  const emit = (...parts) => {
    seq += 1;
    out.push(`c${k} ${String(seq).padStart(5, '0')} ` + parts.map((p) => (typeof p === 'string' ? p : show(p))).join(' '));
  };
  const check = (who, what) => {
    if (who !== userId) failed.push(`LEAK client ${k} (${userId}) saw ${JSON.stringify(who)} in ${what}`);
  };

  const client = new Client({
    host: HOST, port: Number(PORT), database: DBNAME, user: login, password, ssl: false,
    application_name: `node-${k}`,
  });
  const notices = [];
  client.on('notice', (n) => notices.push(n.message));
  await client.connect();
  if (MODE === 'direct') {
    await client.query('select set_config($1, $2, false)', ['app.user_id', userId]);
  }
  const copyTable = `copy_c${k}`;

  for (let i = 0; i < Number(ITERATIONS); i++) {
    // Simple protocol.
    let r = await client.query('select auth.user_id() as who');
    check(r.rows[0].who, 'simple');
    emit('who', r.rows[0].who);

    // Named statement, prepared on first use and reused every iteration.
    r = await client.query({
      name: 'insert-item',
      text: 'insert into items (n, label, data, price, meta, created) values ($1, $2, $3, $4, $5, $6) ' +
        'returning owner, n, label, data, price, meta, created::text',
      values: [i, `${userId}-${i}`, Buffer.from([i, 0, 255]), (12.5 + i).toFixed(2), { i, who: userId },
        `2024-01-${String((i % 28) + 1).padStart(2, '0')}`],
    });
    check(r.rows[0].owner, 'insert returning');
    emit('inserted', r.rows[0]);

    // Transaction with a savepoint that rolls back.
    await client.query('begin');
    await client.query('update items set n = n + 1000 where n = $1', [i]);
    await client.query('savepoint s1');
    try {
      await client.query('insert into items (n, label) values ($1, null)', [-1]);
    } catch (e) {
      emit('savepoint error', e.code);
      await client.query('rollback to savepoint s1');
    }
    r = await client.query({ name: 'count', text: 'select count(*)::int as c, sum(n)::int as s, auth.user_id() as who from items' });
    check(r.rows[0].who, 'transaction');
    emit('txn', r.rows[0]);
    await client.query('commit');

    // Errors: extended and simple, in and out of a transaction.
    try {
      await client.query('select 1 / $1', [0]);
    } catch (e) {
      emit('error', e.code, e.message);
    }
    await client.query('begin');
    try {
      await client.query('selec 1');
    } catch (e) {
      emit('syntax error', e.code, e.position);
    }
    try {
      await client.query({ name: 'count', text: 'select count(*)::int as c, sum(n)::int as s, auth.user_id() as who from items' });
    } catch (e) {
      emit('aborted', e.code);
    }
    await client.query('rollback');

    // Several named statements, reused, some with array rows.
    for (let j = 0; j < 4; j++) {
      r = await client.query({ name: `q${j}`, text: `select ${j} + $1::int as v, auth.user_id() as who`, values: [i], rowMode: 'array' });
      check(r.rows[0][1], 'named');
      emit('named', j, r.rows[0][0]);
    }

    // Several statements in one simple query.
    const results = await client.query('select auth.user_id() as who; select count(*)::int as c from items');
    check(results[0].rows[0].who, 'multi');
    emit('multi', results.map((x) => x.command), results[1].rows[0].c);

    // Notices.
    await client.query(`do $$ begin raise notice 'iteration %', ${i}; end $$`);

    // A table without RLS.
    await client.query(`insert into ${copyTable} (n, label) select g, 'row ' || g from generate_series($1::int, $1::int + 4) g`, [i * 100]);
    r = await client.query(`select count(*)::int as c, sum(n)::int as s from ${copyTable}`);
    emit('plain table', r.rows[0]);
  }

  const rows = await client.query('select owner, n, label, data, price, meta, created::text from items order by n, label');
  for (const row of rows.rows) {
    check(row.owner, 'final listing');
    emit('final', row);
  }
  emit('notices', notices);
  await client.end();
}

async function main() {
  await Promise.all(CLIENTS.map(async ([userId, login, password], k) => {
    try {
      await runClient(k, userId, login, password);
    } catch (e) {
      failed.push(`client ${k} failed: ${e && e.stack ? e.stack : e}`);
    }
  }));
  out.sort();
  for (const line of out) console.log(line);
  for (const f of failed) console.log('ERROR ' + f);
  process.exitCode = failed.length ? 1 : 0;
}

main();
