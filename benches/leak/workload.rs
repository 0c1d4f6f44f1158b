//! The randomized mix of what real apps do, and the check of every read.
//!
//! Each operation is one app "request". It returns how many client
//! transactions it ran, so every target runs the same count. Every read
//! goes through [`classify`]: a row of another user, or an identity setting
//! holding another user's value, is a leak.

use super::target::{
    heal, reopen, Link, Pattern, Slot, Stmts, Style, Target, CHECK_SQL, INSERT_SQL,
    SET_IDENTITY_SQL,
};
use futures_util::future::{join_all, BoxFuture, FutureExt};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// A virtual user: who they are, as the app knows it.
pub struct User {
    pub sub: String,
    pub org: String,
    /// Their Clerk session token (the password through rowgate).
    pub token: String,
    /// The claims JSON the app-side patterns put in `request.jwt.claims`.
    pub claims_json: String,
    /// The `application_name` this user sets, to spot session settings that
    /// bleed from one client to another.
    pub app_name: String,
}

/// What one virtual user saw.
#[derive(Default)]
pub struct Stats {
    pub transactions: u64,
    pub reads: u64,
    pub leaks: u64,
    pub no_identity: u64,
    pub app_name_bleed: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub first_leak: Option<String>,
    pub first_error: Option<String>,
    pub first_no_identity: Option<String>,
    /// Errors by request kind and SQLSTATE (or client-side cause).
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// Latency of plain "read my rows" requests, microseconds.
    pub read_latency_us: Vec<u64>,
    pub ops: [u64; OPS.len()],
}

impl Stats {
    pub fn merge(&mut self, o: Stats) {
        self.transactions += o.transactions;
        self.reads += o.reads;
        self.leaks += o.leaks;
        self.no_identity += o.no_identity;
        self.app_name_bleed += o.app_name_bleed;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.first_leak = self.first_leak.take().or(o.first_leak);
        self.first_error = self.first_error.take().or(o.first_error);
        self.first_no_identity = self.first_no_identity.take().or(o.first_no_identity);
        self.read_latency_us.extend(o.read_latency_us);
        for (k, n) in o.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        for (a, b) in self.ops.iter_mut().zip(o.ops) {
            *a += b;
        }
    }
}

/// One virtual user running against one target.
pub struct Vu {
    pub user: Arc<User>,
    pub target: Arc<Target>,
    pub link: Link,
    pub rng: StdRng,
    pub stats: Stats,
}

/// The operations and their weights (out of 100).
#[derive(Clone, Copy, Debug)]
pub enum Op {
    ReadSimple,
    ReadExtended,
    ShortTxn,
    LongTxn,
    Pipeline,
    Failing,
    Rollback,
    Cancel,
    ClientSet,
    Disconnect,
    Insert,
}

pub const OPS: [(Op, u32, &str); 11] = [
    (Op::ReadSimple, 20, "autocommit read, simple protocol"),
    (Op::ReadExtended, 18, "autocommit read, extended protocol"),
    (Op::ShortTxn, 12, "short transaction: read, insert, read"),
    (
        Op::LongTxn,
        4,
        "long transaction: reads around 5-25 ms of pg_sleep",
    ),
    (
        Op::Pipeline,
        10,
        "pipelined batch of 2-6 queries (half in BEGIN..COMMIT)",
    ),
    (
        Op::Failing,
        8,
        "failing statement (1/0), autocommit or mid-transaction + ROLLBACK",
    ),
    (Op::Rollback, 6, "transaction with an insert, rolled back"),
    (
        Op::Cancel,
        4,
        "pg_sleep(0.1) cancelled after 2-15 ms via cancel_token",
    ),
    (
        Op::ClientSet,
        8,
        "client SET application_name / statement_timeout",
    ),
    (
        Op::Disconnect,
        4,
        "socket dropped mid-transaction, then reconnect",
    ),
    (Op::Insert, 6, "autocommit insert ... returning user_id"),
];

/// Picks an operation by weight.
pub fn pick(rng: &mut StdRng) -> usize {
    let total: u32 = OPS.iter().map(|o| o.1).sum();
    let mut x = rng.gen_range(0..total);
    for (i, (_, w, _)) in OPS.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    0
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// What one check read returned.
#[derive(Debug)]
struct Seen {
    uid: String,
    sub: String,
    org: String,
    app: String,
    owners: String,
}

/// How a read is sent.
#[derive(Clone, Copy)]
enum Proto {
    Simple,
    Extended,
}

impl Vu {
    fn password(&self) -> String {
        self.target
            .endpoint
            .password
            .clone()
            .unwrap_or_else(|| self.user.token.clone())
    }

    /// Runs operation `i` of [`OPS`]; a failure is counted, the connection
    /// healed, and the run goes on.
    pub async fn run(&mut self, i: usize) -> u64 {
        self.stats.ops[i] += 1;
        let op = OPS[i].0;
        let result = match op {
            Op::ReadSimple => self.read_request(Proto::Simple).await,
            Op::ReadExtended => self.read_request(Proto::Extended).await,
            Op::ShortTxn => self.short_txn().await,
            Op::LongTxn => self.long_txn().await,
            Op::Pipeline => self.pipeline().await,
            Op::Failing => self.failing().await,
            Op::Rollback => self.rollback().await,
            Op::Cancel => self.cancel().await,
            Op::ClientSet => self.client_set().await,
            Op::Disconnect => self.disconnect().await,
            Op::Insert => self.insert_request().await,
        };
        match result {
            Ok(n) => {
                self.stats.transactions += n;
                n
            }
            Err(e) => {
                self.stats.errors += 1;
                let kind = match e.code() {
                    Some(code) => format!("{op:?} {}", code.code()),
                    None => format!("{op:?} {}", short(&e.to_string())),
                };
                *self.stats.error_kinds.entry(kind).or_default() += 1;
                if self.stats.first_error.is_none() {
                    self.stats.first_error =
                        Some(format!("{op:?}: {}", super::common::pg_error(&e)));
                }
                let (pw, app) = (self.password(), self.user.app_name.clone());
                if let Ok(n) = heal(&mut self.link, &self.target, &pw, &app).await {
                    self.stats.reconnects += n;
                }
                // The failed request still ran (at least) one transaction.
                self.stats.transactions += 1;
                1
            }
        }
    }

    /// A request that hung past its time limit: counted as an error, and a
    /// connection of its own is replaced (it may be mid-statement).
    pub async fn timed_out(&mut self) -> u64 {
        self.stats.errors += 1;
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some("a request timed out".into());
        }
        let (pw, app) = (self.password(), self.user.app_name.clone());
        if let Link::Own(slot) = &mut self.link {
            if reopen(slot, &self.target, &pw, &app).await.is_ok() {
                self.stats.reconnects += 1;
            }
        }
        self.stats.transactions += 1;
        1
    }

    fn safe(&self) -> bool {
        self.target.pattern.per_txn_identity()
    }

    /// The anti-pattern's start of request: session-level SETs, in their
    /// own round trip, before the request's statements.
    async fn naive_set(&mut self) -> PgResult<()> {
        if self.target.pattern != Pattern::NaiveSet {
            return Ok(());
        }
        let sql = format!(
            "SET app.user_id = '{}'; SET request.jwt.claims = '{}'; SET app.org_id = '{}'",
            self.user.sub,
            self.user.claims_json.replace('\'', "''"),
            self.user.org
        );
        let pick = self.rng.gen();
        let u = self.link.unit(pick).await;
        u.client.simple_query(&sql).await?;
        Ok(())
    }

    /// "Read my rows": the request every app makes most.
    async fn read_request(&mut self, proto: Proto) -> PgResult<u64> {
        let t0 = Instant::now();
        self.naive_set().await?;
        let pick = self.rng.gen();
        let Vu {
            user,
            target,
            link,
            stats,
            ..
        } = self;
        let u = link.unit(pick).await;
        let safe = target.pattern.per_txn_identity();
        if safe {
            begin(&u, target, user).await?;
        }
        let seen = read(&u, target.style, proto).await;
        let seen = finish(&u, safe, seen).await?;
        classify(user, seen, stats);
        stats.read_latency_us.push(t0.elapsed().as_micros() as u64);
        Ok(1)
    }

    async fn insert_request(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let Vu {
            user,
            target,
            link,
            stats,
            ..
        } = self;
        let u = link.unit(pick).await;
        let safe = target.pattern.per_txn_identity();
        if safe {
            begin(&u, target, user).await?;
        }
        let owner = insert(&u, target.style).await;
        let owner = finish(&u, safe, owner).await?;
        check_owner(user, &owner, stats);
        Ok(1)
    }

    async fn short_txn(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let Vu {
            user,
            target,
            link,
            stats,
            ..
        } = self;
        let u = link.unit(pick).await;
        begin(&u, target, user).await?;
        let body = async {
            classify(user, read(&u, target.style, Proto::Extended).await?, stats);
            check_owner(user, &insert(&u, target.style).await?, stats);
            classify(user, read(&u, target.style, Proto::Simple).await?, stats);
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        finish(&u, true, body).await?;
        Ok(1)
    }

    async fn long_txn(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let sleep_ms = self.rng.gen_range(5..=25);
        let Vu {
            user,
            target,
            link,
            stats,
            ..
        } = self;
        let u = link.unit(pick).await;
        begin(&u, target, user).await?;
        let body = async {
            classify(user, read(&u, target.style, Proto::Extended).await?, stats);
            u.client
                .simple_query(&format!("select pg_sleep({})", sleep_ms as f64 / 1000.0))
                .await?;
            classify(user, read(&u, target.style, Proto::Simple).await?, stats);
            classify(user, read(&u, target.style, Proto::Extended).await?, stats);
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        finish(&u, true, body).await?;
        Ok(1)
    }

    /// Several queries in flight at once on one connection
    /// (tokio-postgres pipelines concurrent requests).
    async fn pipeline(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let k = self.rng.gen_range(2..=6);
        let in_txn = self.safe() || self.rng.gen_bool(0.5);
        let Vu {
            user,
            target,
            link,
            stats,
            ..
        } = self;
        let u = link.unit(pick).await;
        let slot: &Slot = &u;
        let c = &slot.client;
        let user: &User = user;
        let style = target.style;
        let pattern = target.pattern;
        let mut futs: Vec<BoxFuture<'_, PgResult<Option<Seen>>>> = Vec::new();
        if in_txn {
            futs.push(async { c.simple_query("BEGIN").await.map(|_| None) }.boxed());
            if target.pattern.per_txn_identity() {
                futs.push(
                    async move { set_identity(slot, pattern, style, user).await.map(|_| None) }
                        .boxed(),
                );
            }
        }
        for i in 0..k {
            let proto = if i % 2 == 0 {
                Proto::Extended
            } else {
                Proto::Simple
            };
            futs.push(async move { read(slot, style, proto).await.map(Some) }.boxed());
        }
        if in_txn {
            futs.push(async { c.simple_query("COMMIT").await.map(|_| None) }.boxed());
        }
        let results = join_all(futs).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(Some(seen)) => classify(user, seen, stats),
                Ok(None) => {}
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let Some(e) = first_err {
            let _ = c.simple_query("ROLLBACK").await;
            return Err(e);
        }
        Ok(if in_txn { 1 } else { k as u64 })
    }

    /// A statement that fails: autocommit, or inside a transaction that
    /// the app then rolls back. Either way, a read follows.
    async fn failing(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let mid_txn = self.rng.gen_bool(0.5);
        {
            let Vu {
                user,
                target,
                link,
                stats,
                ..
            } = &mut *self;
            let u = link.unit(pick).await;
            if mid_txn || target.pattern.per_txn_identity() {
                begin(&u, target, user).await?;
                if mid_txn {
                    classify(user, read(&u, target.style, Proto::Extended).await?, stats);
                }
            }
            expect_error(
                u.client.simple_query("select 1/0").await,
                &SqlState::DIVISION_BY_ZERO,
            )?;
            if mid_txn || target.pattern.per_txn_identity() {
                u.client.simple_query("ROLLBACK").await?;
            }
        }
        self.read_request(Proto::Extended).await?;
        Ok(2)
    }

    async fn rollback(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        {
            let Vu {
                user,
                target,
                link,
                stats,
                ..
            } = &mut *self;
            let u = link.unit(pick).await;
            begin(&u, target, user).await?;
            let body = async {
                check_owner(user, &insert(&u, target.style).await?, stats);
                classify(user, read(&u, target.style, Proto::Simple).await?, stats);
                Ok::<(), tokio_postgres::Error>(())
            }
            .await;
            // ROLLBACK whether or not the body failed.
            let end = u.client.simple_query("ROLLBACK").await;
            body?;
            end?;
        }
        self.read_request(Proto::Simple).await?;
        Ok(2)
    }

    /// A slow statement cancelled from another connection, as a client
    /// library does on a timeout.
    async fn cancel(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let after = Duration::from_millis(self.rng.gen_range(2..=15));
        if !self.target.client_cancels {
            return self.timeout_cancel(pick, after).await;
        }
        {
            let Vu {
                user, target, link, ..
            } = &mut *self;
            let u = link.unit(pick).await;
            let safe = target.pattern.per_txn_identity();
            if safe {
                begin(&u, target, user).await?;
            }
            let token = u.client.cancel_token();
            let port = target.endpoint.port;
            let canceller = tokio::spawn(async move {
                tokio::time::sleep(after).await;
                cancel_like_libpq(&token, port).await
            });
            let r = u.client.simple_query("select pg_sleep(0.1)").await;
            let _ = canceller.await;
            let cancelled = expect_error_or_ok(r, &SqlState::QUERY_CANCELED)?;
            if safe {
                let end = if cancelled { "ROLLBACK" } else { "COMMIT" };
                u.client.simple_query(end).await?;
            }
        }
        self.read_request(Proto::Simple).await?;
        Ok(2)
    }

    /// The same slow statement, cancelled by the server's statement_timeout
    /// inside the transaction: what the PgBouncer runs do instead of a
    /// client cancel.
    async fn timeout_cancel(&mut self, pick: usize, after: Duration) -> PgResult<u64> {
        {
            let Vu {
                user, target, link, ..
            } = &mut *self;
            let u = link.unit(pick).await;
            begin(&u, target, user).await?;
            let sql = format!("SET LOCAL statement_timeout = '{}ms'", after.as_millis());
            let body = async {
                u.client.simple_query(&sql).await?;
                expect_error_or_ok(
                    u.client.simple_query("select pg_sleep(0.1)").await,
                    &SqlState::QUERY_CANCELED,
                )
            }
            .await;
            let end = u.client.simple_query("ROLLBACK").await;
            body?;
            end?;
        }
        self.read_request(Proto::Simple).await?;
        Ok(2)
    }

    /// Harmless session settings a client library or app sets.
    async fn client_set(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let sql = if self.rng.gen_bool(0.5) {
            format!("SET application_name = '{}'", self.user.app_name)
        } else {
            format!("SET statement_timeout = '{}s'", self.rng.gen_range(30..=90))
        };
        {
            let u = self.link.unit(pick).await;
            u.client.simple_query(&sql).await?;
        }
        self.read_request(Proto::Extended).await?;
        Ok(2)
    }

    /// The client vanishes mid-transaction (socket dropped, no Terminate),
    /// then comes back on a new connection.
    async fn disconnect(&mut self) -> PgResult<u64> {
        self.naive_set().await?;
        let pick = self.rng.gen();
        let password = self.password();
        {
            let Vu {
                user,
                target,
                link,
                stats,
                ..
            } = &mut *self;
            let mut u = link.unit(pick).await;
            begin(&u, target, user).await?;
            classify(user, read(&u, target.style, Proto::Extended).await?, stats);
            check_owner(user, &insert(&u, target.style).await?, stats);
            let app = match link_kind_shared(&u) {
                true => "bench_pool_reopened".to_string(),
                false => user.app_name.clone(),
            };
            reopen(&mut u, target, &password, &app).await?;
            stats.reconnects += 1;
        }
        self.read_request(Proto::Extended).await?;
        Ok(2)
    }
}

/// Sends the cancel request through `token`, then waits for the server to
/// close the connection, as libpq's PQcancel does. tokio-postgres's own
/// `cancel_query` closes at once, which crashes PgBouncer 1.18.0 (a cancel
/// client freed before its server link: pgbouncer/pgbouncer#801).
async fn cancel_like_libpq(token: &tokio_postgres::CancelToken, port: u16) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    token
        .cancel_query_raw(&mut tcp, NoTls)
        .await
        .map_err(std::io::Error::other)?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;
    Ok(())
}

/// Whether a unit came from the shared naive pool (its password is the
/// endpoint's, not the user's).
fn link_kind_shared(u: &super::target::Unit<'_>) -> bool {
    matches!(u, super::target::Unit::Shared(_))
}

/// BEGIN, plus the safe pattern's identity statement.
async fn begin(slot: &Slot, target: &Target, user: &User) -> PgResult<()> {
    slot.client.simple_query("BEGIN").await?;
    if target.pattern.per_txn_identity() {
        set_identity(slot, target.pattern, target.style, user).await?;
    }
    Ok(())
}

/// Ends a transaction the op opened: COMMIT when the body succeeded,
/// ROLLBACK (best effort) when it failed. With `txn` false, passes through.
async fn finish<T>(slot: &Slot, txn: bool, body: PgResult<T>) -> PgResult<T> {
    if !txn {
        return body;
    }
    match body {
        Ok(v) => {
            slot.client.simple_query("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            let _ = slot.client.simple_query("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn set_identity(slot: &Slot, pattern: Pattern, style: Style, user: &User) -> PgResult<()> {
    if pattern == Pattern::InbandToken {
        match (&slot.stmts, style) {
            (
                Some(Stmts {
                    set_token: Some(st),
                    ..
                }),
                Style::Named,
            ) => slot.client.query(st, &[&user.token]).await?,
            _ => {
                slot.client
                    .query_typed(super::target::SET_TOKEN_SQL, &[(&user.token, Type::TEXT)])
                    .await?
            }
        };
        return Ok(());
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&user.sub, &user.claims_json, &user.org];
    match (&slot.stmts, style) {
        (
            Some(Stmts {
                set_identity: Some(st),
                ..
            }),
            Style::Named,
        ) => slot.client.query(st, &params).await?,
        _ => {
            let typed = [
                (params[0], Type::TEXT),
                (params[1], Type::TEXT),
                (params[2], Type::TEXT),
            ];
            slot.client.query_typed(SET_IDENTITY_SQL, &typed).await?
        }
    };
    Ok(())
}

async fn read(slot: &Slot, style: Style, proto: Proto) -> PgResult<Seen> {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    match proto {
        Proto::Simple => {
            let msgs = slot.client.simple_query(CHECK_SQL).await?;
            let row = msgs.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            });
            Ok(match row {
                Some(r) => Seen {
                    uid: text(r.get(0)),
                    sub: text(r.get(1)),
                    org: text(r.get(2)),
                    app: text(r.get(3)),
                    owners: text(r.get(4)),
                },
                None => Seen::empty(),
            })
        }
        Proto::Extended => {
            let rows = match (&slot.stmts, style) {
                (Some(s), Style::Named) => slot.client.query(&s.check, &[]).await?,
                _ => slot.client.query_typed(CHECK_SQL, &[]).await?,
            };
            Ok(match rows.first() {
                Some(r) => Seen {
                    uid: r.try_get(0)?,
                    sub: r.try_get(1)?,
                    org: r.try_get(2)?,
                    app: r.try_get(3)?,
                    owners: r.try_get(4)?,
                },
                None => Seen::empty(),
            })
        }
    }
}

impl Seen {
    fn empty() -> Seen {
        Seen {
            uid: String::new(),
            sub: String::new(),
            org: String::new(),
            app: String::new(),
            owners: String::new(),
        }
    }
}

/// Inserts a row and returns the owner the server gave it.
async fn insert(slot: &Slot, style: Style) -> PgResult<String> {
    let msg = "ins:bench";
    let rows = match (&slot.stmts, style) {
        (Some(s), Style::Named) => slot.client.query(&s.insert, &[&msg]).await?,
        _ => {
            slot.client
                .query_typed(INSERT_SQL, &[(&msg, Type::TEXT)])
                .await?
        }
    };
    match rows.first() {
        Some(r) => r.try_get(0),
        None => Ok(String::new()),
    }
}

/// Judges one read: a leak if any identity setting or any row belongs to
/// someone else; "no identity" if the settings are empty (RLS then shows
/// nothing: it fails closed, which is wrong but not a leak).
fn classify(user: &User, seen: Seen, stats: &mut Stats) {
    stats.reads += 1;
    let foreign = |v: &str, mine: &str| !v.is_empty() && v != mine;
    let foreign_rows = seen.owners.split(',').any(|o| foreign(o, &user.sub));
    let leak = foreign(&seen.uid, &user.sub)
        || foreign(&seen.sub, &user.sub)
        || foreign(&seen.org, &user.org)
        || foreign_rows;
    if leak {
        stats.leaks += 1;
        if stats.first_leak.is_none() {
            stats.first_leak = Some(format!(
                "{} read app.user_id={:?} claims.sub={:?} app.org_id={:?}, rows of {:?}",
                user.sub, seen.uid, seen.sub, seen.org, seen.owners
            ));
        }
    } else if seen.uid.is_empty() {
        stats.no_identity += 1;
        if stats.first_no_identity.is_none() {
            stats.first_no_identity = Some(format!("{} read {seen:?}", user.sub));
        }
    }
    if seen.app.starts_with("bench_u") && seen.app != user.app_name {
        stats.app_name_bleed += 1;
    }
}

/// Judges a write: the row must be owned by the writer.
fn check_owner(user: &User, owner: &str, stats: &mut Stats) {
    let seen = Seen {
        uid: owner.to_string(),
        owners: owner.to_string(),
        ..Seen::empty()
    };
    classify(
        user,
        Seen {
            app: user.app_name.clone(),
            ..seen
        },
        stats,
    );
}

fn expect_error(r: PgResult<Vec<SimpleQueryMessage>>, code: &SqlState) -> PgResult<()> {
    match r {
        Err(e) if e.code() == Some(code) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// Ok(true) when the expected error came, Ok(false) when the statement
/// succeeded (the cancel arrived too late), Err otherwise.
fn expect_error_or_ok(r: PgResult<Vec<SimpleQueryMessage>>, code: &SqlState) -> PgResult<bool> {
    match r {
        Err(e) if e.code() == Some(code) => Ok(true),
        Err(e) => Err(e),
        Ok(_) => Ok(false),
    }
}

/// The first words of a client-side error, to group them.
fn short(msg: &str) -> String {
    msg.split(':')
        .next()
        .unwrap_or(msg)
        .chars()
        .take(40)
        .collect()
}
