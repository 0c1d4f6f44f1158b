// drizzle-orm/neon-serverless: a Pool over WebSockets, for interactive
// transactions and session features. Each pool belongs to one user (the
// token is the password); rowgate pools the database connections behind
// all of them.
import { Pool } from '@neondatabase/serverless';
import { drizzle } from 'drizzle-orm/neon-serverless';
import { urlWithToken } from './rowgate.js';
import * as schema from './schema.js';

/** A Drizzle instance and its pool; end the pool when the request is done. */
export function poolForToken(token) {
  const pool = new Pool({ connectionString: urlWithToken(token), max: 1 });
  return { db: drizzle({ client: pool, schema }), pool };
}
