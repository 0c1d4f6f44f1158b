//! The client side: the listener, the startup phase ([`startup`]), and the
//! per-client transaction-pooling state machine ([`session`]).

mod cancel;
mod expect;
mod from_client;
mod from_server;
mod params;
mod session;
pub mod startup;
mod tls;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics;
use crate::upstream::Pool;
use crate::wire::stream::Stream;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use cancel::CancelRegistry;

/// What every client task shares.
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Verifies tokens.
    pub auth: Arc<Authenticator>,
    /// Upstream connections.
    pub pool: Pool,
    /// Client-side TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Cancel keys.
    pub cancels: CancelRegistry,
    /// Parse payload of the identity statement.
    pub identity_spec: Bytes,
    /// Setting names of the identity statement (the seal last, if on).
    pub setting_names: Vec<String>,
    /// Refuses statements a client must not send.
    pub guard: crate::guard::Guard,
    /// Seals the identity, when sealed mode is on.
    pub sealer: Option<crate::guard::Sealer>,
    /// Operations: client registry, limits, lifecycle, admin console.
    pub ops: crate::admin::Ops,
}

/// Why rowgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running rowgate: its address, and a way to stop it.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Server {
    /// Address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Stops accepting clients (running sessions finish on their own).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
    /// Waits until the accept loop has ended.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
    /// Upstream connections idle in the pool.
    pub fn idle_upstream_connections(&self) -> usize {
        self.shared.pool.idle_count()
    }
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
    /// Clients connected now (the admin console's own connections aside).
    pub fn client_count(&self) -> usize {
        self.shared.ops.clients().len()
    }
    /// Shuts down (SIGTERM: graceful, SIGINT: fast; see
    /// [`crate::admin::shutdown`]) and returns once every client is gone.
    pub async fn shutdown(&self, mode: crate::admin::ShutdownMode) {
        crate::admin::shutdown(self.shared.clone(), mode).await;
    }
    /// Starts [`Server::shutdown`] in the background.
    pub fn spawn_shutdown(&self, mode: crate::admin::ShutdownMode) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::admin::shutdown(self.shared.clone(), mode))
    }
    /// Where `RELOAD` and SIGHUP re-read the configuration.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        self.shared.ops.set_config_path(path);
    }
    /// Re-reads the config file (SIGHUP); the old config stays on error.
    pub async fn reload_from_file(&self) -> Result<String, String> {
        crate::admin::reload::from_file(&self.shared).await
    }
    /// Applies `config` while clients stay connected; on error nothing
    /// changes and the error says why.
    pub async fn reload(&self, config: Config) -> Result<String, String> {
        crate::admin::reload::apply(&self.shared, config).await
    }
}

/// The identity statement: every setting of the transaction (the client's
/// own session parameters first, the identity last so it always wins) as
/// two bound `text[]` parameters, names and values, applied in order with
/// `set_config(name, value, true)`. Values are never spliced into SQL.
///
/// `$3` counts the client's own settings at the front; for the rest (the
/// identity), a session-level value someone left on the pooled connection
/// is first cleared, so it cannot surface after this transaction either.
///
/// Rows are applied in order (a function scan in a plain SELECT), so the
/// identity, last, wins over a client setting of the same name.
fn identity_spec() -> Bytes {
    // No rows come back: concat() evaluates both calls for every setting
    // (a function's arguments are all evaluated; AND/OR could skip one)
    // and is never NULL, so the WHERE drops every row. The values, the
    // claims JSON among them, then do not travel back on every transaction.
    let sql =
        "SELECT FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(n, v, o) \
         WHERE concat(CASE WHEN o > $3::int THEN set_config(n, CASE n WHEN 'role' THEN 'none' ELSE '' END, false) END, \
                      set_config(n, v, true)) IS NULL";
    crate::wire::frontend::parse_spec(sql.as_bytes())
}

/// Binds the listener and starts serving clients in the background.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let auth = Authenticator::new(&config.auth, &config.identity)
        .await
        .map_err(|e| StartError::Config(format!("[auth] {e}")))?;
    let pool =
        Pool::new(&config.upstream).map_err(|e| StartError::Config(format!("[upstream] {e}")))?;
    pool.spawn_maintenance();
    let tls = match (&config.listen.tls_cert_file, &config.listen.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key).map_err(StartError::Config)?),
        _ => None,
    };
    let listener = TcpListener::bind(&config.listen.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen.addr.clone(),
        source,
    })?;
    let pins = &config.session_state;
    let guard = crate::guard::Guard::new(&config.guard)
        .map_err(|e| StartError::Config(format!("[guard] {e}")))?
        .with_session_pins(
            pins.temp_tables == crate::config::StatePolicy::Pin,
            pins.hold_cursors == crate::config::StatePolicy::Pin,
        );
    let sealer = crate::guard::Sealer::new(&config.seal)
        .map_err(|e| StartError::Config(format!("[seal] {e}")))?;
    let ops =
        crate::admin::Ops::new(&config).map_err(|e| StartError::Config(format!("[admin] {e}")))?;
    let mut setting_names = auth.setting_names().to_vec();
    if sealer.is_some() {
        setting_names.push(crate::guard::Sealer::SETTING.to_string());
    }
    let shared = Arc::new(Shared {
        identity_spec: identity_spec(),
        setting_names,
        guard,
        sealer,
        config,
        auth,
        pool,
        tls,
        cancels: CancelRegistry::default(),
        ops,
    });
    let metrics_addr = match &shared.config.metrics.addr {
        Some(maddr) => Some(
            crate::admin::serve_http(maddr, Arc::downgrade(&shared))
                .await
                .map_err(|source| StartError::Bind {
                    addr: maddr.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let (stop, mut stopped) = watch::channel(false);
    let loop_shared = shared.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => match loop_shared.ops.register(peer) {
                        Ok(reg) => {
                            tokio::spawn(handle_client(tcp, peer, loop_shared.clone(), reg));
                        }
                        Err(e) => {
                            tracing::warn!(%peer, reason = e.reason(), "client refused: {e}");
                            tokio::spawn(refuse_tcp(tcp, e.sqlstate(), e.to_string()));
                        }
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // moment instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = stopped.changed() => break,
                _ = loop_shared.ops.lifecycle().reached(crate::admin::Phase::Stopping) => break,
            }
        }
    });
    tracing::info!(%addr, upstream = %shared.pool.target().display_addr(), "rowgate listening");
    Ok(Server {
        addr,
        metrics_addr,
        stop,
        task,
        shared,
    })
}

/// Refuses a client before its startup phase (too many clients), best
/// effort and briefly.
async fn refuse_tcp(tcp: TcpStream, code: &'static str, message: String) {
    let mut stream = Stream::Plain(tcp);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        startup::send_fatal(&mut stream, code, &message),
    )
    .await;
}

async fn handle_client(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    reg: crate::admin::Registration,
) {
    let _ = tcp.set_nodelay(true);
    let entry = reg.entry.clone();
    metrics::add("rowgate_clients_connected", "", 1);
    tracing::info!(client = entry.id, %peer, "client connected");
    let ops = shared.ops.clone();
    let console =
        crate::admin::hook::scope(entry.clone(), ops, serve_client(tcp, peer, &shared, &entry))
            .await;
    // The console is an operator's, not a pooled client: it does not count
    // against the limits or hold up a shutdown.
    drop(reg);
    if let Some((stream, pending)) = console {
        crate::admin::serve_console(stream, pending, peer, shared.clone()).await;
    }
    metrics::add("rowgate_clients_connected", "", -1);
    tracing::info!(
        client = entry.id,
        %peer,
        sub = entry.sub(),
        duration_secs = entry.connected_for().as_secs_f64(),
        transactions = entry.transactions(),
        "client disconnected"
    );
}

/// Startup (within `[listen] login_timeout`), limits, then the session;
/// returns the stream when the client asked for the admin console.
async fn serve_client(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    entry: &crate::admin::ClientEntry,
) -> Option<(Stream, bytes::BytesMut)> {
    let limit = shared.ops.login_timeout();
    let handshake = startup::handshake(Stream::Plain(tcp), peer, shared);
    let Ok(result) = tokio::time::timeout(limit, handshake).await else {
        metrics::incr("rowgate_refusals_total", "login_timeout");
        tracing::info!(client = entry.id, %peer, "client closed: login not completed within [listen] login_timeout ({limit:?})");
        return None;
    };
    match result {
        Ok(mut ok) => {
            tracing::info!(client = entry.id, %peer, sub = %ok.identity.subject, token_id = %ok.identity.token_id, "client authenticated");
            if let Err(e) = shared.ops.authenticated(entry, &ok.identity.subject) {
                tracing::info!(client = entry.id, %peer, reason = e.reason(), "client refused: {e}");
                startup::send_fatal(&mut ok.stream, e.sqlstate(), &format!("rowgate: {e}")).await;
                return None;
            }
            let (key, cancel_slot) = shared.cancels.register();
            let session = session::Session::new(shared.clone(), ok, key, cancel_slot);
            session.run().await;
            shared.cancels.unregister(key);
        }
        Err((Some(stream), startup::StartupEnd::AdminConsole { pending })) => {
            return Some((stream, pending));
        }
        Err((Some(mut stream), startup::StartupEnd::Refuse { code, message })) => {
            startup::send_fatal(&mut stream, code, &message).await;
        }
        Err(_) => {}
    }
    None
}
