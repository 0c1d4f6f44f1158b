//! The pool of upstream connections. A client holds one only while a
//! transaction runs; `pool_size` bounds how many exist, and waiting clients
//! are served first come, first served (tokio's semaphore is fair).

use super::conn::{ServerConn, UpstreamError};
use super::{tls, Target};
use crate::config::UpstreamConfig;
use crate::metrics;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
}

impl PoolError {
    /// SQLSTATE to report to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PoolError::Timeout { .. } => "53300",
            PoolError::Connect(UpstreamError::Server(e)) if !e.code.is_empty() => "08004",
            PoolError::Connect(_) => "08006",
        }
    }
}

/// The parameters the server reports at startup (name, value).
pub type ServerParams = Arc<Vec<(String, String)>>;

struct Inner {
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    cfg: UpstreamConfig,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
    server_params: Mutex<Option<ServerParams>>,
    /// Metrics label: the database's configured name.
    label: &'static str,
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
                cfg: cfg.clone(),
                idle: Mutex::new(Vec::new()),
                server_params: Mutex::new(None),
                label: "",
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
        self.inner.cfg.max_prepared_statements
    }

    /// Opens a connection outside the pool (for cancel requests and
    /// administrative commands).
    pub async fn connect_unpooled(&self) -> Result<ServerConn, UpstreamError> {
        ServerConn::connect(
            &self.inner.target,
            self.inner.tls.as_ref(),
            self.inner.cfg.connect_timeout,
        )
        .await
    }

    /// Lends a connection, waiting up to `acquire_timeout` for one to free up.
    pub async fn acquire(&self) -> Result<PooledConn, PoolError> {
        let cfg = &self.inner.cfg;
        let started = Instant::now();
        let permit = match tokio::time::timeout(
            cfg.acquire_timeout,
            self.inner.permits.clone().acquire_owned(),
        )
        .await
        {
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
            return Ok(PooledConn {
                conn: Some(conn),
                _permit: permit,
                pool: self.inner.clone(),
            });
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
        Ok(PooledConn {
            conn: Some(conn),
            _permit: permit,
            pool: self.inner.clone(),
        })
    }

    /// Opens a connection, retrying with exponential backoff (50 ms doubling
    /// up to 2 s) while the client's `acquire_timeout` lasts, so a client
    /// rides out an upstream restart instead of failing at once; failures
    /// that retrying cannot fix (bad password, no such database) end at once.
    async fn connect_with_backoff(&self, started: Instant) -> Result<ServerConn, PoolError> {
        let deadline = started + self.inner.cfg.acquire_timeout;
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
        let cfg = &self.inner.cfg;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut conn) = idle.pop() {
            let too_old = !cfg.max_lifetime.is_zero() && conn.created.elapsed() > cfg.max_lifetime;
            let too_idle =
                !cfg.idle_timeout.is_zero() && conn.idle_since.elapsed() > cfg.idle_timeout;
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
                while pool.idle_count() < pool.inner.cfg.min_idle {
                    let Ok(permit) = pool.inner.permits.clone().try_acquire_owned() else {
                        break;
                    };
                    match pool.connect_unpooled().await {
                        Ok(conn) => {
                            metrics::incr("rowgate_upstream_connects_total", pool.inner.label);
                            metrics::add("rowgate_upstream_connections", pool.inner.label, 1);
                            PooledConn {
                                conn: Some(conn),
                                _permit: permit,
                                pool: pool.inner.clone(),
                            }
                            .release();
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
        if self.conn.take().is_some() {
            metrics::add("rowgate_upstream_connections", self.pool.label, -1);
        }
    }
}
