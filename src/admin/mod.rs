//! Operating rowgate (docs/operations.md): the client registry, the
//! lifecycle (graceful shutdown), limits, the `/metrics` `/healthz`
//! `/readyz` listener, reload and the admin console.
//!
//! Sessions reach this module through [`Ops`] (one field of
//! [`crate::client::Shared`]) and the small calls in [`hook`].

mod config;
mod console;
pub mod hook;
mod http;
pub mod lifecycle;
pub mod limits;
pub mod registry;
pub mod reload;
mod shutdown;

pub use config::AdminConfig;
pub use console::{serve as serve_console, ADMIN_DATABASE, ADMIN_USER};
pub use http::serve as serve_http;
pub use lifecycle::{Lifecycle, Phase, ShutdownMode};
pub use registry::{ClientEntry, ClientRegistry, ClientState, LimitError, Registration};
pub use shutdown::shutdown;

use crate::config::{Config, ListenConfig};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What operating rowgate needs, shared by every client task.
#[derive(Clone)]
pub struct Ops {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Arc<ClientRegistry>,
    lifecycle: Lifecycle,
    rate: limits::TransactionRate,
    config: ArcSwap<Config>,
    admin_password: ArcSwap<Option<String>>,
    max_message_size: AtomicUsize,
    config_path: Mutex<Option<PathBuf>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    shutdown_started: std::sync::atomic::AtomicBool,
}

impl Ops {
    /// Builds the operations state for `config`.
    pub fn new(config: &Config) -> Result<Ops, String> {
        let password = config.admin.load_password()?;
        Ok(Ops {
            inner: Arc::new(Inner {
                clients: Arc::new(ClientRegistry::default()),
                lifecycle: Lifecycle::default(),
                rate: limits::TransactionRate::default(),
                config: ArcSwap::from_pointee(config.clone()),
                admin_password: ArcSwap::from_pointee(password),
                max_message_size: AtomicUsize::new(config.listen.max_message_size),
                config_path: Mutex::new(None),
                reloading: tokio::sync::Mutex::new(()),
                shutdown_started: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Every connected client.
    pub fn clients(&self) -> &ClientRegistry {
        &self.inner.clients
    }

    /// The process phase.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    /// The configuration in force (the last one loaded or reloaded).
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// `[listen]` as in force.
    pub fn listen(&self) -> ListenConfig {
        self.inner.config.load().listen.clone()
    }

    /// Largest client message after authentication; the session core
    /// reads it for every message (`[listen] max_message_size`).
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size.load(Ordering::Relaxed)
    }

    /// `[listen] login_timeout`.
    pub fn login_timeout(&self) -> Duration {
        self.inner.config.load().listen.login_timeout
    }

    /// The admin console password, when the console is on.
    pub fn admin_password(&self) -> Option<String> {
        (**self.inner.admin_password.load()).clone()
    }

    /// Registers a client that just connected, unless
    /// `[listen] max_client_connections` are connected.
    pub fn register(&self, peer: SocketAddr) -> Result<Registration, LimitError> {
        let max = self.inner.config.load().listen.max_client_connections;
        self.inner.clients.register(peer, max).inspect_err(|e| {
            crate::metrics::incr("rowgate_refusals_total", e.reason());
        })
    }

    /// Records the verified `sub` of `entry`, unless the user already holds
    /// `[listen] max_connections_per_user` connections.
    pub fn authenticated(&self, entry: &ClientEntry, sub: &str) -> Result<(), LimitError> {
        let max = self.inner.config.load().listen.max_connections_per_user;
        self.inner
            .clients
            .authenticated(entry, sub, max)
            .inspect_err(|e| crate::metrics::incr("rowgate_refusals_total", e.reason()))
    }

    /// Whether `sub` may start a transaction now
    /// (`[listen] max_transactions_per_second_per_user`). The session core
    /// calls it when a transaction starts; a refusal is SQLSTATE 53400.
    pub fn allow_transaction(&self, sub: &str) -> Result<(), limits::RateLimited> {
        let rate = self
            .inner
            .config
            .load()
            .listen
            .max_transactions_per_second_per_user;
        self.inner.rate.allow(sub, rate).inspect_err(|_| {
            crate::metrics::incr("rowgate_refusals_total", "transaction_rate");
        })
    }

    /// Where `RELOAD` reads the configuration from.
    pub fn set_config_path(&self, path: PathBuf) {
        *self
            .inner
            .config_path
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    fn config_path(&self) -> Option<PathBuf> {
        self.inner
            .config_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs what a reload changed in this module.
    fn install(&self, config: &Config, password: Option<String>) {
        self.inner
            .max_message_size
            .store(config.listen.max_message_size, Ordering::Relaxed);
        self.inner.admin_password.store(Arc::new(password));
        self.inner.config.store(Arc::new(config.clone()));
    }
}

/// Records one finished client transaction of `elapsed` on `database` (its
/// metrics label) in `rowgate_transaction_duration_seconds`, through
/// [`hook::released`].
fn observe_transaction(database: &'static str, elapsed: Duration) {
    crate::metrics::observe("rowgate_transaction_duration_seconds", database, elapsed);
}
