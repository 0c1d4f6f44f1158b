// drizzle-orm/neon-http: one HTTP request per query (or per batch), the
// fastest mode for serverless and Edge functions. The token goes in the
// Authorization header; rowgate verifies it and runs the query as that
// user, in a transaction of its own.
//
// In the Next.js app: const db = dbForToken(await (await auth()).getToken())
import { neon } from '@neondatabase/serverless';
import { drizzle } from 'drizzle-orm/neon-http';
import { DATABASE_URL } from './rowgate.js';
import * as schema from './schema.js';

/** A Drizzle instance that queries as the user whose token this is. */
export function dbForToken(token) {
  return drizzle({ client: neon(DATABASE_URL, { authToken: token }), schema });
}
