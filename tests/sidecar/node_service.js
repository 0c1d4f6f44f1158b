// A legacy-style node-postgres service: one pg.Pool of 4 connections, logged
// in to rowgate as the service "legacy", and an Express-style handler
// (req, res) that names the request's user in-band from its
// `Authorization: Bearer <token>` header at the start of its transaction.
//
// Usage: node node_service.js HOST PORT DBNAME SERVICE PASSWORD TOKENS_FILE ROUNDS
// Prints "OK requests=N" when every request saw exactly its user's rows and
// every request without a token saw none; exits 1 otherwise.
'use strict';
const fs = require('fs');
const path = require('path');
const { Pool } = require(path.join(__dirname, '..', 'drivers', 'node', 'node_modules', 'pg'));

const [host, port, database, user, password, tokensFile, rounds] = process.argv.slice(2);
const tokens = new Map();
for (const line of fs.readFileSync(tokensFile, 'utf8').split('\n')) {
  const parts = line.trim().split(' ');
  if (parts.length === 2) tokens.set(parts[0], parts[1]);
}

const pool = new Pool({ host, port: Number(port), database, user, password, max: 4, ssl: false });

// The handler, as it would sit in an Express app: app.get('/notes', handler).
async function handler(req, res) {
  const auth = req.headers.authorization || '';
  const token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    if (token) {
      await client.query("select set_config('rowgate.token', $1, true)", [token]);
    }
    const notes = await client.query('select auth.user_id() as uid, owner, body from notes order by body');
    const me = await client.query('select auth.user_id() as uid');
    await client.query('COMMIT');
    res.json({ uid: me.rows[0].uid, notes: notes.rows });
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    res.status(500).json({ error: e.message });
  } finally {
    client.release();
  }
}

// What Express would do for one request: a req with headers, a res whose
// json() resolves the response.
function call(headers) {
  return new Promise((resolve) => {
    const res = {
      code: 200,
      status(c) { this.code = c; return this; },
      json(body) { resolve({ code: this.code, body }); },
    };
    handler({ headers }, res).catch((e) => resolve({ code: 500, body: { error: e.message } }));
  });
}

async function check(userId, token) {
  const r = await call(token ? { authorization: `Bearer ${token}` } : {});
  if (r.code !== 200) return `request of ${userId} failed: ${r.body.error}`;
  const owners = r.body.notes.map((n) => n.owner);
  if (userId === null) {
    return owners.length || r.body.uid !== null ? `request without a token saw ${owners.length} rows as ${r.body.uid}` : null;
  }
  if (owners.length !== 2 || r.body.uid !== userId || owners.some((o) => o !== userId)) {
    return `request of ${userId} saw ${owners} as ${r.body.uid}`;
  }
  return null;
}

(async () => {
  const jobs = [];
  for (let i = 0; i < Number(rounds); i++) {
    for (const [u, t] of tokens) jobs.push(check(u, t));
    jobs.push(check(null, null));
  }
  const failures = (await Promise.all(jobs)).filter((f) => f);
  await pool.end();
  if (failures.length) {
    console.log(`FAILED ${failures.length} of ${jobs.length}: ${failures.slice(0, 5)}`);
    process.exit(1);
  }
  console.log(`OK requests=${jobs.length}`);
})();
