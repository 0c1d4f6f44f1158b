//! The pool of upstream connections. A client holds one only while a
//! transaction runs; `pool_size` bounds how many exist, and waiting clients
//! are served first come, first served (tokio's semaphore is fair).

use super::conn::{ServerConn, UpstreamError};
use super::{tls, Target};
use crate::config::UpstreamConfig;
use crate::metrics;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Why no connection could be lent to a client.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole `acquire_timeout`.
    #[error("no upstream connection became free within {waited:?} (pool_size {pool_size}); raise [upstream] pool_size or acquire_timeout, or shorten transactions")]
    Timeout {
        /// How long the client waited.
        waited: Duration,
        /// The configured pool size.
        pool_size: usize,
    },
    /// Opening a new upstream connection failed.
    #[error("could not connect to the upstream server: {0}")]
    Connect(#[from] UpstreamError),
    /// An operator paused the pool (admin `PAUSE`) for longer than the
    /// client may wait.
    #[error("the pool is paused by an administrator (PAUSE) and was not resumed within {waited:?}; try again later")]
    Paused {
        /// How long the client waited.
        waited: Duration,
    },
}

impl PoolError {
    /// SQLSTATE to report to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PoolError::Timeout { .. } => "53300",
            PoolError::Connect(UpstreamError::Server(e)) if !e.code.is_empty() => "08004",
            PoolError::Connect(_) => "08006",
            PoolError::Paused { .. } => "57P03",
        }
    }
}

/// The parameters the server reports at startup (name, value).
pub type ServerParams = Arc<Vec<(String, String)>>;

struct Inner {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Swapped whole on reload: an acquire runs on the settings it read.
    cfg: arc_swap::ArcSwap<UpstreamConfig>,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
    server_params: Mutex<Option<ServerParams>>,
    /// Metrics label: the database's configured name.
    label: &'static str,
    /// Connections lent to clients right now.
    lent: AtomicUsize,
    /// `PAUSE`d: no connection is lent until `RESUME`; the value is how
    /// long a client may wait for that.
    paused: watch::Sender<Option<Duration>>,
}

/// One upstream connection, as `SHOW SERVERS` lists it.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// The backend's process id.
    pub pid: i32,
    /// How long ago it was opened.
    pub age: Duration,
    /// How long it has been idle.
    pub idle_for: Duration,
}

/// A shared handle to the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// Creates an empty pool; connections open on demand.
    pub fn new(cfg: &UpstreamConfig) -> Result<Pool, String> {
        let target = Target::from_url(&cfg.url)?;
        let tls = tls::client_config(target.sslmode, cfg.tls_ca_file.as_deref())?;
        Ok(Pool {
            inner: Arc::new(Inner {
                target,
                tls,
                permits: Arc::new(Semaphore::new(cfg.pool_size)),
                cfg: arc_swap::ArcSwap::from_pointee(cfg.clone()),
                idle: Mutex::new(Vec::new()),
                server_params: Mutex::new(None),
                label: "",
                lent: AtomicUsize::new(0),
                paused: watch::channel(None).0,
            }),
        })
    }

    /// Labels this pool's metrics with `label` (the database's configured
    /// name); call before the pool is shared.
    pub fn with_label(mut self, label: &'static str) -> Pool {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.label = label;
        }
        self
    }

    /// The upstream this pool connects to.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Prepared statements kept per connection.
    pub fn max_prepared(&self) -> usize {
        self.inner.cfg.load().max_prepared_statements
    }

    /// Applies new sizes and timeouts. The server (url, CA file) cannot
    /// change while clients are connected to it; that is refused.
    /// Transactions running keep their connections; a smaller pool shrinks
    /// as they return them.
    pub fn reload(&self, new: &UpstreamConfig) -> Result<(), String> {
        self.check_reload(new)?;
        let old = self.inner.cfg.load_full();
        if new.pool_size > old.pool_size {
            self.inner
                .permits
                .add_permits(new.pool_size - old.pool_size);
        } else if new.pool_size < old.pool_size {
            let excess = (old.pool_size - new.pool_size) as u32;
            let permits = self.inner.permits.clone();
            // Retire permits as connections come back; never interrupts a
            // transaction.
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(excess).await {
                    p.forget();
                }
            });
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            while idle.len() > new.pool_size {
                idle.remove(0);
                metrics::add("rowgate_upstream_connections", self.inner.label, -1);
            }
        }
        self.inner.cfg.store(Arc::new(new.clone()));
        Ok(())
    }

    /// Whether [`Pool::reload`] would take `new`: the server (url, CA
    /// file) stays the same.
    pub fn check_reload(&self, new: &UpstreamConfig) -> Result<(), String> {
        let old = self.inner.cfg.load();
        if new.url != old.url || new.tls_ca_file != old.tls_ca_file {
            return Err("url and tls_ca_file cannot change on reload; restart rowgate".into());
        }
        Ok(())
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<UpstreamConfig> {
        self.inner.cfg.load_full()
    }

    /// The configured pool size.
    pub fn size(&self) -> usize {
        self.inner.cfg.load().pool_size
    }

    /// Connections lent to clients now.
    pub fn lent(&self) -> usize {
        self.inner.lent.load(Ordering::Relaxed)
    }

    /// Stops lending connections; clients that want one wait up to
    /// `max_wait` for [`Pool::resume`].
    pub fn pause(&self, max_wait: Duration) {
        self.inner.paused.send_replace(Some(max_wait));
    }

    /// Lends connections again.
    pub fn resume(&self) {
        self.inner.paused.send_replace(None);
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.paused.borrow().is_some()
    }

    /// Whether every connection is lent (nothing free for a new client).
    pub fn exhausted(&self) -> bool {
        self.inner.permits.available_permits() == 0
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        let closed =
            std::mem::take(&mut *self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()));
        metrics::add(
            "rowgate_upstream_connections",
            self.inner.label,
            -(closed.len() as i64),
        );
    }

    /// The idle connections.
    pub fn idle_servers(&self) -> Vec<ServerInfo> {
        let idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.iter()
            .map(|c| ServerInfo {
                pid: c.pid,
                age: c.created.elapsed(),
                idle_for: c.idle_since.elapsed(),
            })
            .collect()
    }

    fn lend(&self, conn: ServerConn, permit: OwnedSemaphorePermit) -> PooledConn {
        self.inner.lent.fetch_add(1, Ordering::Relaxed);
        PooledConn {
            conn: Some(conn),
            _permit: permit,
            pool: self.inner.clone(),
        }
    }

    /// Opens a connection outside the pool (for cancel requests and
    /// administrative commands).
    pub async fn connect_unpooled(&self) -> Result<ServerConn, UpstreamError> {
        let started = Instant::now();
        let result = ServerConn::connect(
            &self.inner.target,
            self.inner.tls.as_ref(),
            self.inner.cfg.load().connect_timeout,
        )
        .await;
        let kind = if result.is_ok() { "ok" } else { "failed" };
        metrics::observe("rowgate_upstream_connect_seconds", kind, started.elapsed());
        result
    }

    /// Lends a connection, waiting up to `acquire_timeout` for one to free up.
    pub async fn acquire(&self) -> Result<PooledConn, PoolError> {
        let cfg = self.inner.cfg.load_full();
        let started = Instant::now();
        let paused = *self.inner.paused.borrow();
        if let Some(max_wait) = paused {
            let mut rx = self.inner.paused.subscribe();
            let resumed = tokio::time::timeout(max_wait, rx.wait_for(|p| p.is_none())).await;
            if !matches!(resumed, Ok(Ok(_))) {
                metrics::incr("rowgate_pool_acquire_timeouts_total", self.inner.label);
                return Err(PoolError::Paused { waited: max_wait });
            }
        }
        let result = self.acquire_permitted(&cfg, started).await;
        metrics::observe(
            "rowgate_pool_acquire_seconds",
            self.inner.label,
            started.elapsed(),
        );
        result
    }

    async fn acquire_permitted(
        &self,
        cfg: &UpstreamConfig,
        started: Instant,
    ) -> Result<PooledConn, PoolError> {
        // A free permit is taken without the timeout's timer: that is the
        // common case, on every transaction. `try_acquire` never jumps the
        // queue: it fails while anyone waits.
        let permit = match self.inner.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(Ok(p)),
            Err(_) => {
                tokio::time::timeout(
                    cfg.acquire_timeout,
                    self.inner.permits.clone().acquire_owned(),
                )
                .await
            }
        };
        let permit = match permit {
            Ok(Ok(p)) => p,
            _ => {
                metrics::incr("rowgate_pool_acquire_timeouts_total", self.inner.label);
                return Err(PoolError::Timeout {
                    waited: cfg.acquire_timeout,
                    pool_size: cfg.pool_size,
                });
            }
        };
        if let Some(conn) = self.take_idle() {
            return Ok(self.lend(conn, permit));
        }
        // Boxed: connecting (TLS, SCRAM) is a large future, and inline it
        // would size every client's task, idle or not, for this rare path.
        let conn = Box::pin(self.connect_with_backoff(started)).await?;
        metrics::incr("rowgate_upstream_connects_total", self.inner.label);
        metrics::add("rowgate_upstream_connections", self.inner.label, 1);
        *self
            .inner
            .server_params
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(conn.params.clone()));
        Ok(self.lend(conn, permit))
    }

    /// Opens a connection, retrying with exponential backoff (50 ms doubling
    /// up to 2 s) while the client's `acquire_timeout` lasts, so a client
    /// rides out an upstream restart instead of failing at once; failures
    /// that retrying cannot fix (bad password, no such database) end at once.
    async fn connect_with_backoff(&self, started: Instant) -> Result<ServerConn, PoolError> {
        let deadline = started + self.inner.cfg.load().acquire_timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.connect_unpooled().await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    metrics::incr("rowgate_upstream_connect_failures_total", self.inner.label);
                    tracing::warn!(error = %e, "upstream connect failed");
                    let permanent = matches!(e, UpstreamError::Server(ref f) if f.code.starts_with("28") || f.code == "3D000");
                    if permanent || Instant::now() + delay >= deadline {
                        return Err(PoolError::Connect(e));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Most recent idle connection still within its lifetime limits.
    fn take_idle(&self) -> Option<ServerConn> {
        let cfg = self.inner.cfg.load();
        let now = Instant::now();
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut conn) = idle.pop() {
            let too_old = !cfg.max_lifetime.is_zero()
                && now.saturating_duration_since(conn.created) > cfg.max_lifetime;
            let too_idle = !cfg.idle_timeout.is_zero()
                && now.saturating_duration_since(conn.idle_since) > cfg.idle_timeout;
            // A connection the server closed (restart, idle timeout)
            // must not be lent: the client would lose its first statement.
            if too_old || too_idle || !conn.looks_alive() {
                metrics::add("rowgate_upstream_connections", self.inner.label, -1);
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// The server's ParameterStatus values (server_version, ...), opening a
    /// connection first if none was ever opened.
    pub async fn server_params(&self) -> Result<ServerParams, PoolError> {
        if let Some(p) = self
            .inner
            .server_params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(p);
        }
        let conn = self.acquire().await?;
        let params = Arc::new(conn.params.clone());
        conn.release();
        Ok(params)
    }

    /// Starts the background upkeep: every second, closes idle connections
    /// past `idle_timeout`/`max_lifetime` or closed by the server, and opens
    /// connections up to `min_idle`. Stops when the pool is dropped.
    pub fn spawn_maintenance(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let pool = Pool { inner };
                pool.prune_idle();
                while pool.idle_count() < pool.inner.cfg.load().min_idle {
                    let Ok(permit) = pool.inner.permits.clone().try_acquire_owned() else {
                        break;
                    };
                    match pool.connect_unpooled().await {
                        Ok(conn) => {
                            metrics::incr("rowgate_upstream_connects_total", pool.inner.label);
                            metrics::add("rowgate_upstream_connections", pool.inner.label, 1);
                            pool.lend(conn, permit).release();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "upstream connect for min_idle failed");
                            break;
                        }
                    }
                }
            }
        });
    }

    /// Closes idle connections that are expired or closed by the server.
    fn prune_idle(&self) {
        let mut kept = Vec::new();
        while let Some(conn) = self.take_idle() {
            kept.push(conn);
        }
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        // take_idle pops the most recent first; restore the original order.
        kept.reverse();
        idle.extend(kept);
    }

    /// Connections idle in the pool right now.
    pub fn idle_count(&self) -> usize {
        self.inner.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// A connection lent to one client. Dropping it closes the connection,
/// because rowgate cannot know it is clean; only [`PooledConn::release`],
/// called when the server said it is idle, returns it to the pool.
pub struct PooledConn {
    conn: Option<ServerConn>,
    _permit: OwnedSemaphorePermit,
    pool: Arc<Inner>,
}

impl PooledConn {
    /// Returns a connection that is idle (ReadyForQuery `I`, nothing in
    /// flight) to the pool.
    pub fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.idle_since = Instant::now();
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

impl Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        // Invariant: `conn` is only None inside `release`/`drop`.
        self.conn
            .as_ref()
            .expect("pooled connection present until released")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("pooled connection present until released")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        // `release` ends here too, having taken the connection.
        self.pool.lent.fetch_sub(1, Ordering::Relaxed);
        if self.conn.take().is_some() {
            metrics::add("rowgate_upstream_connections", self.pool.label, -1);
        }
    }
}
