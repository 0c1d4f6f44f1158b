//! The systems under test, and how a virtual user reaches one: its own
//! connection (rowgate, PgBouncer, direct) or a checkout from the naive
//! shared pool that stands in for PgBouncer when it is not installed.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

/// How the application establishes who the user is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// The token is the password; rowgate injects the identity into every
    /// transaction. The app does nothing.
    Rowgate,
    /// The anti-pattern: `SET app.user_id = ...` (session level) at the
    /// start of each request, then the request's statements.
    NaiveSet,
    /// The app-side safe pattern: every unit of work is
    /// `BEGIN; SELECT set_config(.., true) x3; ...; COMMIT`.
    SafeSetConfig,
    /// A legacy service's shared pool logged in to rowgate as a service
    /// (`[[services]]`): every unit of work is `BEGIN; select
    /// set_config('rowgate.token', $1, true); ...; COMMIT`, and rowgate
    /// verifies the token and injects that user's identity.
    InbandToken,
}

impl Pattern {
    /// Whether the app names the user at the start of every transaction
    /// (and so wraps every unit of work in one).
    pub fn per_txn_identity(self) -> bool {
        matches!(self, Pattern::SafeSetConfig | Pattern::InbandToken)
    }
}

/// What sits between the app and PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Rowgate,
    PgBouncer,
    /// The bench's own naive pool (used when PgBouncer is absent): each
    /// statement or transaction checks out any free shared connection.
    BenchPool,
    Direct,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::Rowgate => "rowgate",
            Via::PgBouncer => "PgBouncer (transaction mode)",
            Via::BenchPool => "naive shared pool (no PgBouncer)",
            Via::Direct => "direct, one connection per user",
        }
    }
}

/// How extended-protocol statements are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Named prepared statements, prepared once per connection.
    Named,
    /// The unnamed statement (Parse/Bind/Execute in one round trip), what
    /// apps must use behind PgBouncer before 1.21.
    Unnamed,
}

/// Where to connect, and with which password.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// `None`: the virtual user's own token is the password (rowgate).
    pub password: Option<String>,
}

/// One system under test.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub pattern: Pattern,
    pub via: Via,
    pub style: Style,
    pub endpoint: Endpoint,
    /// Shared connections of the naive pool (only with [`Via::BenchPool`]).
    pub shared_pool_size: usize,
    /// Cancel slow statements with a CancelRequest from the client; when
    /// false, with a server-side `SET LOCAL statement_timeout` instead
    /// (PgBouncer 1.18.0 crashes on client cancels in this mix).
    pub client_cancels: bool,
}

/// The check query: every identity setting as the server sees it, the
/// client's own `application_name`, and the owners of every row RLS lets
/// through. One row, whatever the identity.
pub const CHECK_SQL: &str = "select coalesce(current_setting('app.user_id', true), ''), \
     coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb->>'sub', ''), \
     coalesce(current_setting('app.org_id', true), ''), \
     current_setting('application_name'), \
     coalesce(string_agg(distinct user_id, ','), '') \
     from user_messages";

/// A write whose RETURNING shows under which identity it was made
/// (`user_id` defaults to `auth.user_id()`).
pub const INSERT_SQL: &str = "insert into user_messages (message) values ($1) returning user_id";

/// The safe pattern's identity statement, values as parameters.
pub const SET_IDENTITY_SQL: &str = "select set_config('app.user_id', $1, true), \
     set_config('request.jwt.claims', $2, true), set_config('app.org_id', $3, true)";

/// The in-band identity statement of a service login: the user's token.
pub const SET_TOKEN_SQL: &str = "select set_config('rowgate.token', $1, true)";

/// Connections that ended with an error (a FATAL from the server, a
/// protocol error), and the first few of those errors.
pub static CONNECTION_ERRORS: std::sync::Mutex<(u64, Vec<String>)> =
    std::sync::Mutex::new((0, Vec::new()));

fn note_connection_error(e: &tokio_postgres::Error) {
    let mut g = CONNECTION_ERRORS.lock().unwrap_or_else(|p| p.into_inner());
    g.0 += 1;
    if g.1.len() < 3 {
        g.1.push(super::common::pg_error(e));
    }
}

/// Named statements prepared on a connection.
pub struct Stmts {
    pub check: Statement,
    pub insert: Statement,
    /// Only the app-side safe pattern uses it; through rowgate the guard
    /// refuses it (a client may not set the identity), so it is None there.
    pub set_identity: Option<Statement>,
    /// The in-band token statement; only a service login may prepare it.
    pub set_token: Option<Statement>,
}

/// One connection and, with [`Style::Named`], its prepared statements.
pub struct Slot {
    pub client: Client,
    task: JoinHandle<()>,
    pub stmts: Option<Stmts>,
}

impl Slot {
    /// Connects and prepares the named statements if the style wants them.
    pub async fn open(
        ep: &Endpoint,
        password: &str,
        style: Style,
        app_name: &str,
    ) -> Result<Slot, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(ep.port)
            .user(&ep.user)
            .dbname(&ep.dbname)
            .password(password)
            .application_name(app_name)
            .connect_timeout(Duration::from_secs(20))
            .connect(NoTls)
            .await?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                note_connection_error(&e);
            }
        });
        let mut slot = Slot {
            client,
            task,
            stmts: None,
        };
        if style == Style::Named {
            slot.stmts = Some(Stmts {
                check: slot.client.prepare(CHECK_SQL).await?,
                insert: slot.client.prepare(INSERT_SQL).await?,
                set_identity: slot.client.prepare(SET_IDENTITY_SQL).await.ok(),
                set_token: slot.client.prepare(SET_TOKEN_SQL).await.ok(),
            });
        }
        Ok(slot)
    }

    /// Drops the socket at once, without Terminate, as a crashed or killed
    /// client would.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The naive shared pool: a few connections any user may check out.
pub struct BenchPool {
    slots: Vec<Arc<Mutex<Slot>>>,
    endpoint: Endpoint,
    style: Style,
}

impl BenchPool {
    pub async fn open(ep: &Endpoint, size: usize, style: Style) -> Result<BenchPool, String> {
        let password = ep.password.clone().unwrap_or_default();
        let mut slots = Vec::with_capacity(size);
        for i in 0..size {
            let slot = Slot::open(ep, &password, style, &format!("bench_pool_{i}"))
                .await
                .map_err(|e| format!("naive pool connection {i}: {e}"))?;
            slots.push(Arc::new(Mutex::new(slot)));
        }
        Ok(BenchPool {
            slots,
            endpoint: ep.clone(),
            style,
        })
    }

    /// Any free connection, else waits for one chosen at random: a pool
    /// that knows nothing about who used a connection last.
    async fn checkout(&self, start: usize) -> OwnedMutexGuard<Slot> {
        let n = self.slots.len();
        for k in 0..n {
            if let Ok(g) = self.slots[(start + k) % n].clone().try_lock_owned() {
                return g;
            }
        }
        self.slots[start % n].clone().lock_owned().await
    }
}

/// How a virtual user reaches the target.
pub enum Link {
    Own(Slot),
    Shared(Arc<BenchPool>),
}

/// One checked-out connection: for the duration of one statement or one
/// transaction.
pub enum Unit<'a> {
    Own(&'a mut Slot),
    Shared(OwnedMutexGuard<Slot>),
}

impl std::ops::Deref for Unit<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        match self {
            Unit::Own(s) => s,
            Unit::Shared(g) => g,
        }
    }
}

impl std::ops::DerefMut for Unit<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        match self {
            Unit::Own(s) => s,
            Unit::Shared(g) => g,
        }
    }
}

impl Link {
    /// A connection for the next statement or transaction. `pick` spreads
    /// checkouts of the shared pool.
    pub async fn unit(&mut self, pick: usize) -> Unit<'_> {
        match self {
            Link::Own(s) => Unit::Own(s),
            Link::Shared(p) => Unit::Shared(p.checkout(pick).await),
        }
    }
}

/// Replaces a killed or broken connection with a fresh one.
pub async fn reopen(
    slot: &mut Slot,
    target: &Target,
    password: &str,
    app_name: &str,
) -> Result<(), tokio_postgres::Error> {
    slot.kill();
    *slot = Slot::open(&target.endpoint, password, target.style, app_name).await?;
    Ok(())
}

/// Reopens whatever connections of the link are closed.
pub async fn heal(
    link: &mut Link,
    target: &Target,
    password: &str,
    app_name: &str,
) -> Result<u64, tokio_postgres::Error> {
    let mut reopened = 0;
    match link {
        Link::Own(slot) => {
            if slot.client.is_closed() {
                reopen(slot, target, password, app_name).await?;
                reopened += 1;
            } else {
                // A request that failed mid-transaction may have left it
                // open (or aborted); end it as an app's error handler would.
                let _ = slot.client.simple_query("ROLLBACK").await;
            }
        }
        Link::Shared(pool) => {
            for (i, s) in pool.slots.iter().enumerate() {
                if let Ok(mut g) = s.clone().try_lock_owned() {
                    if g.client.is_closed() {
                        let pw = pool.endpoint.password.clone().unwrap_or_default();
                        *g =
                            Slot::open(&pool.endpoint, &pw, pool.style, &format!("bench_pool_{i}"))
                                .await?;
                        reopened += 1;
                    } else {
                        // A free connection must not hold a transaction.
                        let _ = g.client.simple_query("ROLLBACK").await;
                    }
                }
            }
        }
    }
    Ok(reopened)
}
