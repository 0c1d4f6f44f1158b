//! The client side: the listener, the startup phase ([`startup`]), the
//! per-client transaction-pooling state machine (`core`, socket-free) and
//! the async driver that moves its bytes (`driver`).

mod cancel;
mod core;
mod driver;
mod params;
pub mod peers;
mod service_login;
pub use service_login::{scram, Login};
pub mod startup;
pub(crate) mod tls;

use crate::config::Config;
use crate::metrics;
use crate::upstream::Databases;
use crate::wire::stream::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use cancel::CancelRegistry;

/// What every client task shares.
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// The databases clients can connect to: each with its pool, its token
    /// verifier and its identity statement.
    pub databases: Databases,
    /// Client-side TLS, when configured; replaced on reload (a renewed
    /// certificate is read again from its files).
    pub tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// The `[http]` listener's TLS (HTTPS, WSS), replaced on reload too.
    pub http_tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// Cancel keys.
    pub cancels: CancelRegistry,
    /// Refuses statements a client must not send.
    pub guard: crate::guard::Guard,
    /// Seals the identity, when sealed mode is on.
    pub sealer: Option<crate::guard::Sealer>,
    /// `[[services]]`: service logins and their in-band identities;
    /// replaced whole on reload (how service passwords rotate).
    pub services: arc_swap::ArcSwap<crate::auth::Services>,
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
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Server {
    /// Address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Address of the HTTP front door (`/sql`, `/v2`), when `[http]` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
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
        self.shared.databases.idle_count()
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

impl Shared {
    /// Everything a session needs, from the configuration: the databases
    /// (pools not connected yet, token verifiers with their keys), the
    /// guard, the seal, TLS and the cancel registry.
    pub async fn new(config: Config) -> Result<Shared, StartError> {
        let peers = config.peers.peers().map_err(StartError::Config)?;
        let tls = listen_tls(&config.listen).map_err(StartError::Config)?;
        let http_tls = http_tls(config.http.as_ref()).map_err(StartError::Config)?;
        let pins = &config.session_state;
        let guard = crate::guard::Guard::new(&config.guard)
            .map_err(|e| StartError::Config(format!("[guard] {e}")))?
            .with_session_pins(
                pins.temp_tables == crate::config::StatePolicy::Pin,
                pins.hold_cursors == crate::config::StatePolicy::Pin,
            );
        let sealer = crate::guard::Sealer::new(&config.seal)
            .map_err(|e| StartError::Config(format!("[seal] {e}")))?;
        let databases = Databases::new(&config, sealer.is_some())
            .await
            .map_err(StartError::Config)?;
        let services = crate::auth::Services::new(&config.services, &config.auth)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let ops = crate::admin::Ops::new(&config)
            .map_err(|e| StartError::Config(format!("[admin] {e}")))?;
        Ok(Shared {
            services: arc_swap::ArcSwap::from_pointee(services),
            ops,
            guard,
            sealer,
            config,
            databases,
            tls: arc_swap::ArcSwapOption::new(tls.map(Arc::new)),
            http_tls: arc_swap::ArcSwapOption::new(http_tls.map(Arc::new)),
            cancels: CancelRegistry::new(peers),
        })
    }
}

/// The client-side TLS of `[listen]`, read from its certificate and key
/// files (at start, and again on every reload).
pub fn listen_tls(
    listen: &crate::config::ListenConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match (&listen.tls_cert_file, &listen.tls_key_file) {
        (Some(cert), Some(key)) => tls::acceptor("[listen]", cert, key).map(Some),
        _ => Ok(None),
    }
}

/// The TLS of `[http]`, read from its certificate and key files (at start,
/// and again on every reload).
pub fn http_tls(
    http: Option<&crate::http::HttpConfig>,
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    match http.map(|h| (&h.tls_cert_file, &h.tls_key_file)) {
        Some((Some(cert), Some(key))) => tls::acceptor("[http]", cert, key).map(Some),
        _ => Ok(None),
    }
}

/// Binds the listener and starts serving clients in the background.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let shared = Arc::new(Shared::new(config).await?);
    let config = &shared.config;
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
    let metrics_addr = match &config.metrics.addr {
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
    let stop = Arc::new(stop);
    // A shutdown stops every listener (TCP, Unix, HTTP) when it stops
    // accepting.
    let (ops, stopper) = (shared.ops.clone(), stop.clone());
    tokio::spawn(async move {
        ops.lifecycle().reached(crate::admin::Phase::Stopping).await;
        let _ = stopper.send(true);
    });
    let http_addr = match &shared.config.http {
        Some(http) => Some(crate::http::start(http, shared.clone(), stopped.clone()).await?),
        None => None,
    };
    if let Some(dir) = &shared.config.listen.unix_socket_dir {
        let unix = bind_unix(dir, addr.port())?;
        tokio::spawn(serve_unix(unix, shared.clone(), stopped.clone()));
    }
    let loop_shared = shared.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tokio::spawn(handle_client(tcp, peer, loop_shared.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a
                        // moment instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = stopped.changed() => break,
            }
        }
    });
    tracing::info!(%addr, databases = %shared.databases.describe(), "rowgate listening");
    Ok(Server {
        addr,
        http_addr,
        metrics_addr,
        stop,
        task,
        shared,
    })
}

/// The path of the Unix socket for `port` in `dir`, as PostgreSQL names it.
pub fn unix_socket_path(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

fn bind_unix(dir: &std::path::Path, port: u16) -> Result<tokio::net::UnixListener, StartError> {
    let path = unix_socket_path(dir, port);
    let bind_err = |source| StartError::Bind {
        addr: path.display().to_string(),
        source,
    };
    // A socket file left by an earlier run would make bind fail; it is a
    // socket (not a regular file someone cares about) or we leave it.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(&path).map_err(bind_err)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(bind_err)?;
    tracing::info!(path = %path.display(), "rowgate listening on a Unix socket");
    Ok(listener)
}

async fn serve_unix(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    // The peer of a Unix socket is local: it counts as loopback for the
    // plaintext-password rule.
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((unix, _)) => {
                    tokio::spawn(serve_stream(Stream::Unix(unix), peer, false, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept on the Unix socket failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stopped.changed() => break,
        }
    }
}

async fn handle_client(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    serve_stream(Stream::Plain(tcp), peer, false, shared).await;
}

/// Runs startup and the session for one client stream, exactly as for a
/// TCP client, until the client goes away. Other front doors (WebSocket,
/// SQL over HTTP) hand their in-process pipe ([`Stream::Duplex`]) here, so
/// authentication, identity injection, the guard and pooling are the same
/// code for every client. `secure` says the transport was TLS (HTTPS/WSS),
/// for the rule that a token crosses plain networks only from loopback.
///
/// Every client counts against `[listen] max_client_connections` and is
/// listed in the admin console; beyond the limit it gets `53300` before
/// its startup packet is read.
pub async fn serve_stream(mut stream: Stream, peer: SocketAddr, secure: bool, shared: Arc<Shared>) {
    let reg = match shared.ops.register(peer) {
        Ok(reg) => reg,
        Err(e) => {
            tracing::warn!(%peer, reason = e.reason(), "client refused: {e}");
            let message = e.to_string();
            let refuse = startup::send_fatal(&mut stream, e.sqlstate(), &message);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), refuse).await;
            return;
        }
    };
    let entry = reg.entry.clone();
    metrics::add("rowgate_clients_connected", "", 1);
    tracing::info!(client = entry.id, %peer, "client connected");
    let session = serve_client(stream, peer, secure, &shared, &entry);
    let console = crate::admin::hook::scope(entry.clone(), shared.ops.clone(), session).await;
    // The console is an operator's, not a pooled client: it does not count
    // against the limits or hold up a shutdown.
    drop(reg);
    if let Some((stream, pending)) = console {
        // Boxed: an operator's console must not size every client's task.
        Box::pin(crate::admin::serve_console(
            stream,
            pending,
            peer,
            shared.clone(),
        ))
        .await;
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

/// Startup (within `[listen] login_timeout`), the per-user limit, then the
/// session; returns the stream when the client asked for the admin console.
async fn serve_client(
    stream: Stream,
    peer: SocketAddr,
    secure: bool,
    shared: &Arc<Shared>,
    entry: &crate::admin::ClientEntry,
) -> Option<(Stream, bytes::BytesMut)> {
    let limit = shared.ops.login_timeout();
    // Boxed, and so freed once the client is in: inline, the startup's
    // state (TLS, SCRAM, token checks) would size every idle client's task.
    let handshake = Box::pin(startup::handshake(stream, peer, secure, shared));
    // The handshake's result is matched where it is made, so it is gone
    // before the session starts: kept in a variable, it would stay in every
    // idle client's task beside the `Authenticated` taken out of it.
    let mut ok = match tokio::time::timeout(limit, handshake).await {
        Err(_) => {
            metrics::incr("rowgate_refusals_total", "login_timeout");
            tracing::info!(client = entry.id, %peer, "client closed: login not completed within [listen] login_timeout ({limit:?})");
            return None;
        }
        Ok(Ok(ok)) => ok,
        Ok(Err((Some(stream), startup::StartupEnd::AdminConsole { pending }))) => {
            return Some((stream, pending));
        }
        Ok(Err((Some(mut stream), startup::StartupEnd::Refuse { code, message }))) => {
            startup::send_fatal(&mut stream, code, &message).await;
            return None;
        }
        Ok(Err(_)) => return None,
    };
    tracing::info!(client = entry.id, %peer, issuer = %ok.identity.issuer, sub = %ok.identity.subject, token_id = %ok.identity.token_id, "client authenticated");
    if let Err(e) = shared.ops.authenticated(entry, &ok.identity.subject) {
        tracing::info!(client = entry.id, %peer, reason = e.reason(), "client refused: {e}");
        startup::send_fatal(&mut ok.stream, e.sqlstate(), &format!("rowgate: {e}")).await;
        return None;
    }
    let (key, cancel_slot) = shared.cancels.register(ok.database.clone());
    driver::run(shared.clone(), ok, key, cancel_slot).await;
    shared.cancels.unregister(key);
    None
}
