// The seed guide's user_messages table (src/app/db/schema.ts there), as
// rowgate's migration creates it: every row belongs to one user, and the
// RLS policy lets each user see and write only their own rows. user_id
// defaults to auth.user_id(), the identity rowgate injected, so the app
// never has to pass it (and cannot pass someone else's).
import { pgTable, text, bigint, timestamp } from 'drizzle-orm/pg-core';
import { sql } from 'drizzle-orm';

export const UserMessages = pgTable('user_messages', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
  userId: text('user_id').notNull().default(sql`auth.user_id()`),
  message: text('message').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});
