// The seed guide's server actions (src/app/actions.ts there). In the guide
// each action asks Clerk for the user id and filters by it; through
// rowgate the database knows the user already (auth.user_id(), from the
// verified token), and RLS does the filtering, so the same code cannot
// touch another user's rows even when it forgets a WHERE.
//
// In the Next.js app these are 'use server' functions that build `db` from
// the session token:
//   const db = dbForToken(await (await auth()).getToken());
import { UserMessages } from './db/schema.js';

/** Saves the user's quote (one per user: the old one is replaced). */
export async function createUserMessage(db, message) {
  await db.delete(UserMessages);
  await db.insert(UserMessages).values({ message });
}

/** Deletes the user's quote. Without a WHERE: RLS limits it to theirs. */
export async function deleteUserMessage(db) {
  await db.delete(UserMessages);
}

/** The user's quote, or null (the page's read). */
export async function getUserMessage(db) {
  const rows = await db
    .select({ userId: UserMessages.userId, message: UserMessages.message })
    .from(UserMessages);
  return rows[0] ?? null;
}

/** Every row the user can see: only their own. */
export async function visibleMessages(db) {
  return db.select({ userId: UserMessages.userId, message: UserMessages.message }).from(UserMessages);
}
