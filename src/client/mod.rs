//! The client side: the listener, the startup phase ([`startup`]), and the
//! per-client transaction-pooling state machine ([`session`]).

mod cancel;
mod expect;
mod from_client;
mod from_server;
mod params;
mod service_login;
mod session;
pub use service_login::Login;
mod inband;
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
    if let Some(maddr) = &config.metrics.addr {
        crate::metrics::serve(maddr)
            .await
            .map_err(|source| StartError::Bind {
                addr: maddr.clone(),
                source,
            })?;
    }
    let pins = &config.session_state;
    let guard = crate::guard::Guard::new(&config.guard)
        .map_err(|e| StartError::Config(format!("[guard] {e}")))?
        .with_session_pins(
            pins.temp_tables == crate::config::StatePolicy::Pin,
            pins.hold_cursors == crate::config::StatePolicy::Pin,
        );
    let sealer = crate::guard::Sealer::new(&config.seal)
        .map_err(|e| StartError::Config(format!("[seal] {e}")))?;
    let mut setting_names = auth.setting_names().to_vec();
    if sealer.is_some() {
        setting_names.push(crate::guard::Sealer::SETTING.to_string());
    }
    let services = crate::auth::Services::new(&config.services, &config.auth)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let shared = Arc::new(Shared {
        services,
        identity_spec: identity_spec(),
        setting_names,
        guard,
        sealer,
        config,
        auth,
        pool,
        tls,
        cancels: CancelRegistry::default(),
    });
    let (stop, mut stopped) = watch::channel(false);
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
    tracing::info!(%addr, upstream = %shared.pool.target().display_addr(), "rowgate listening");
    Ok(Server {
        addr,
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
                    tokio::spawn(serve_client(Stream::Unix(unix), peer, shared.clone()));
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
    serve_client(Stream::Plain(tcp), peer, shared).await
}

async fn serve_client(stream: Stream, peer: SocketAddr, shared: Arc<Shared>) {
    metrics::add("rowgate_clients_connected", "", 1);
    match startup::handshake(stream, peer, &shared).await {
        Ok(ok) => {
            let (key, cancel_slot) = shared.cancels.register();
            let session = session::Session::new(shared.clone(), ok, key, cancel_slot);
            session.run().await;
            shared.cancels.unregister(key);
        }
        Err((Some(mut stream), startup::StartupEnd::Refuse { code, message })) => {
            startup::send_fatal(&mut stream, code, &message).await;
        }
        Err(_) => {}
    }
    metrics::add("rowgate_clients_connected", "", -1);
}
