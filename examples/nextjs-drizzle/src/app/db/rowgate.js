// Where the Neon driver sends its queries: rowgate instead of Neon.
// ROWGATE_HTTP is rowgate's [http] address (host:port); ROWGATE_TLS=1 when
// it serves HTTPS/WSS. The connection string names only the user and the
// database: the password is the signed-in user's Clerk session token.
import { neonConfig } from '@neondatabase/serverless';
import ws from 'ws';

const address = process.env.ROWGATE_HTTP ?? '127.0.0.1:8080';
const tls = process.env.ROWGATE_TLS === '1';

neonConfig.fetchEndpoint = () => `${tls ? 'https' : 'http'}://${address}/sql`;
neonConfig.wsProxy = (host, port) => `${address}/v2?address=${host}:${port}`;
neonConfig.useSecureWebSocket = tls;
// Node before 22 has no global WebSocket; Edge runtimes and browsers do.
if (typeof WebSocket === 'undefined') neonConfig.webSocketConstructor = ws;

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgresql://authenticated@rowgate.localhost/app';

/** The connection string with `token` as the password (WebSocket mode). */
export function urlWithToken(token) {
  const url = new URL(DATABASE_URL);
  url.password = token;
  return url.toString();
}
