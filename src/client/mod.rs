//! The client side: the listener, the startup phase ([`startup`]), the
//! per-client transaction-pooling state machine (`core`, socket-free) and
//! the async driver that moves its bytes (`driver`).

mod cancel;
mod core;
mod driver;
mod params;
pub mod peers;
mod service_login;
pub use service_login::Login;
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
    /// Client-side TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Cancel keys.
    pub cancels: CancelRegistry,
    /// Refuses statements a client must not send.
    pub guard: crate::guard::Guard,
    /// Seals the identity, when sealed mode is on.
    pub sealer: Option<crate::guard::Sealer>,
    /// `[[services]]`: service logins and their in-band identities.
    pub services: crate::auth::Services,
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
    stop: watch::Sender<bool>,
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
}

impl Shared {
    /// Everything a session needs, from the configuration: the databases
    /// (pools not connected yet, token verifiers with their keys), the
    /// guard, the seal, TLS and the cancel registry.
    pub async fn new(config: Config) -> Result<Shared, StartError> {
        let peers = config.peers.peers().map_err(StartError::Config)?;
        let tls = match (&config.listen.tls_cert_file, &config.listen.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(tls::acceptor("[listen]", cert, key).map_err(StartError::Config)?)
            }
            _ => None,
        };
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
        Ok(Shared {
            services,
            guard,
            sealer,
            config,
            databases,
            tls,
            cancels: CancelRegistry::new(peers),
        })
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
    if let Some(maddr) = &config.metrics.addr {
        crate::metrics::serve(maddr)
            .await
            .map_err(|source| StartError::Bind {
                addr: maddr.clone(),
                source,
            })?;
    }
    let (stop, mut stopped) = watch::channel(false);
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
pub async fn serve_stream(stream: Stream, peer: SocketAddr, secure: bool, shared: Arc<Shared>) {
    metrics::add("rowgate_clients_connected", "", 1);
    match startup::handshake(stream, peer, secure, &shared).await {
        Ok(ok) => {
            let (key, cancel_slot) = shared.cancels.register(ok.database.clone());
            driver::run(shared.clone(), ok, key, cancel_slot).await;
            shared.cancels.unregister(key);
        }
        Err((Some(mut stream), startup::StartupEnd::Refuse { code, message })) => {
            startup::send_fatal(&mut stream, code, &message).await;
        }
        Err(_) => {}
    }
    metrics::add("rowgate_clients_connected", "", -1);
}
