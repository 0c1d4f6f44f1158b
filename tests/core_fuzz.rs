//! Fuzzed sessions against a real PostgreSQL through a pool of ONE
//! connection: every session sends a random mix of protocol messages
//! (valid, malformed, truncated, with lying lengths, of every type) and
//! leaves abruptly or politely; after each, a well-behaved client must be
//! served, with its own identity, within a deadline. A connection handed
//! on out of step (an error nobody owned, a batch left open, a
//! discard-until-Sync in progress) shows up as that client hanging or
//! failing.
//!
//! CI runs a bounded number of sessions; for a long run:
//! `ROWGATE_FUZZ_SESSIONS=100000 cargo test --release --test core_fuzz -- --nocapture`
//! (`ROWGATE_FUZZ_SEED` picks another sequence). Each session draws from
//! its own generator, seeded from the seed and its number, so a failing
//! session replays alone: `ROWGATE_FUZZ_FROM=<n> ROWGATE_FUZZ_SESSIONS=1`.

mod support;

use bytes::{BufMut, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use support::{pg, proxy_config, rowgate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

const SQL: &[&str] = &[
    "select 1",
    "select auth.user_id()",
    "select 1/0",
    "begin",
    "commit",
    "rollback",
    "savepoint a",
    "rollback to savepoint a",
    "set application_name = 'fuzz'",
    "set work_mem = '8MB'",
    "reset all",
    "select pg_sleep(0.01)",
    "begin; select 1",
    "select 1; commit",
    "set app.user_id = 'victim'",
    "copy (select 1) to stdout",
    "discard all",
];

/// One random message (or garbage) for a fuzzed session.
fn message(rng: &mut StdRng, out: &mut BytesMut) {
    let sql = SQL[rng.gen_range(0..SQL.len())];
    let name = ["", "s1", "s2"][rng.gen_range(0..3)];
    match rng.gen_range(0..20) {
        0..=4 => frame(out, b'Q', &cstr(sql)),
        5..=6 => {
            let mut b = cstr(name);
            b.extend(cstr(sql));
            b.extend([0, 0]);
            frame(out, b'P', &b);
        }
        7..=8 => {
            let mut b = cstr("");
            b.extend(cstr(name));
            b.extend([0, 0, 0, 0, 0, 0]);
            frame(out, b'B', &b);
        }
        9..=10 => {
            let mut b = cstr("");
            b.extend(0i32.to_be_bytes());
            frame(out, b'E', &b);
        }
        11 => {
            let mut b = vec![b'S'];
            b.extend(cstr(name));
            frame(out, b'D', &b);
        }
        12 => {
            let mut b = vec![if rng.gen() { b'S' } else { b'P' }];
            b.extend(cstr(name));
            frame(out, b'C', &b);
        }
        13..=14 => frame(out, b'S', b""),
        15 => frame(out, b'H', b""),
        // Malformed: a body where none belongs, copy messages out of place.
        16 => {
            let tag = [b'H', b'S', b'c', b'd', b'f'][rng.gen_range(0..5)];
            frame(out, tag, b"junk");
        }
        // Any tag at all.
        17 => frame(out, rng.gen(), b""),
        // A length that lies (the rest of the stream is garbage).
        18 => {
            out.put_u8(b'Q');
            out.put_i32(rng.gen_range(-8..4));
        }
        _ => {
            let n = rng.gen_range(1..16);
            for _ in 0..n {
                out.put_u8(rng.gen());
            }
        }
    }
}

/// A fuzzed session: connect, authenticate, send random batches while
/// reading whatever comes back, then leave.
async fn fuzzed_session(addr: std::net::SocketAddr, dbname: &str, tok: &str, rng: &mut StdRng) {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut hello =
        rowgate::wire::frontend::startup_message(&[("user", "fuzz"), ("database", dbname)])
            .to_vec();
    let mut pw = BytesMut::new();
    frame(&mut pw, b'p', &cstr(tok));
    hello.extend_from_slice(&pw);
    if tcp.write_all(&hello).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..rng.gen_range(1..6) {
        let mut out = BytesMut::new();
        for _ in 0..rng.gen_range(1..8) {
            message(rng, &mut out);
        }
        if tcp.write_all(&out).await.is_err() {
            return;
        }
        // Sometimes read what has come back, sometimes not at all.
        if rng.gen_bool(0.7) {
            let wait = Duration::from_millis(rng.gen_range(0..30));
            match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    }
    if rng.gen() {
        let mut x = BytesMut::new();
        frame(&mut x, b'X', b"");
        let _ = tcp.write_all(&x).await;
    }
    // Dropped: the socket closes, maybe mid-transaction.
}

#[tokio::test]
async fn after_every_fuzzed_session_the_next_client_is_served() {
    let db = pg().new_database();
    let config = proxy_config(&db, 1, "acquire_timeout = \"20s\"");
    let proxy = rowgate(&config).await;
    let sessions: usize = std::env::var("ROWGATE_FUZZ_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("ROWGATE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let from: usize = std::env::var("ROWGATE_FUZZ_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Long runs outlast a test token's ten minutes: these live a day.
    let day = |sub: &str| {
        let mut claims = support::clerk_claims(sub);
        claims["exp"] = (claims["iat"].as_u64().unwrap_or(0) + 86_400).into();
        support::token_with(claims)
    };
    let fuzzer = day("user_fuzzer");
    let good = day("user_good");
    let client = proxy
        .connect(&good)
        .await
        .expect("well-behaved client connects");
    for i in from..from + sessions {
        // Its own generator: what one session draws (which depends on when
        // the server closes it) does not shift the sessions after it.
        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        fuzzed_session(proxy.addr(), proxy.dbname(), &fuzzer, &mut rng).await;
        // The well-behaved client, on the one pooled connection.
        let served = tokio::time::timeout(Duration::from_secs(15), async {
            client
                .query_one(
                    "select auth.user_id(), current_setting('app.user_id', true)",
                    &[],
                )
                .await
        })
        .await;
        let row = match served {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => panic!(
                "session {i} (seed {seed}): the next client failed: {e} {:?}",
                e.as_db_error().map(|d| (d.code().code(), d.message()))
            ),
            Err(_) => {
                panic!("session {i} (seed {seed}): the next client was not served within 15 s")
            }
        };
        let who: Option<String> = row.get(0);
        assert_eq!(
            who.as_deref(),
            Some("user_good"),
            "session {i} (seed {seed})"
        );
        if sessions >= 1000 && (i + 1 - from) % 1000 == 0 {
            eprintln!(
                "{} fuzzed sessions, next client served after each",
                i + 1 - from
            );
        }
    }
}
