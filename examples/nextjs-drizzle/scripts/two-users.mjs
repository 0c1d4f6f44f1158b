// Runs the example's actions for two users against rowgate (`rowgate dev`
// prints this command with fresh tokens), through both Neon driver modes,
// and shows that each user sees only their own quote.
//
//   ROWGATE_HTTP=127.0.0.1:8080 ALICE_TOKEN=... BOB_TOKEN=... node scripts/two-users.mjs
import { dbForToken } from '../src/app/db/http.js';
import { poolForToken } from '../src/app/db/ws.js';
import { createUserMessage, deleteUserMessage, getUserMessage, visibleMessages } from '../src/app/actions.js';

const users = { alice: process.env.ALICE_TOKEN, bob: process.env.BOB_TOKEN };
for (const [name, token] of Object.entries(users)) {
  if (!token) {
    console.error(`set ${name.toUpperCase()}_TOKEN (rowgate dev prints it)`);
    process.exit(2);
  }
}

let failures = 0;
function check(what, ok) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

async function run(mode, dbFor) {
  console.log(`\n== ${mode}`);
  const quotes = { alice: `To infinity and beyond! (alice, ${mode})`, bob: `Hello there. (bob, ${mode})` };
  const dbs = {};
  for (const name of Object.keys(users)) dbs[name] = await dbFor(users[name]);
  for (const name of Object.keys(users)) await createUserMessage(dbs[name].db, quotes[name]);
  for (const name of Object.keys(users)) {
    const mine = await getUserMessage(dbs[name].db);
    const all = await visibleMessages(dbs[name].db);
    console.log(`${name} sees: ${JSON.stringify(all)}`);
    check(`${name} reads their own quote`, mine?.message === quotes[name]);
    check(`${name} sees no one else's rows`, all.every((r) => r.userId === `user_${name}`));
  }
  // Bob deletes "everything": RLS limits it to his own row.
  await deleteUserMessage(dbs.bob.db);
  check("bob's delete left alice's quote", (await getUserMessage(dbs.alice.db))?.message === quotes.alice);
  check("bob's quote is gone", (await getUserMessage(dbs.bob.db)) === null);
  for (const d of Object.values(dbs)) await d.end?.();
}

await run('drizzle-orm/neon-http', (token) => ({ db: dbForToken(token) }));
await run('drizzle-orm/neon-serverless', (token) => {
  const { db, pool } = poolForToken(token);
  return { db, end: () => pool.end() };
});
console.log(failures === 0 ? '\neach user saw only their own quote, in both modes' : `\n${failures} checks failed`);
process.exit(failures === 0 ? 0 : 1);
