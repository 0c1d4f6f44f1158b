//! The HTTP front door, for the Neon serverless driver
//! (`@neondatabase/serverless`, Drizzle's `neon-http` and
//! `neon-serverless`), on one port, HTTP or HTTPS:
//!
//! - `POST /sql` ([`sql`]): SQL over HTTP, one transaction per request;
//! - `GET /v2` ([`ws`]): the WebSocket tunnel that carries the protocol.
//!
//! Neither decides anything about identity: both end in
//! [`crate::client::serve_stream`] through an in-process pipe, the same
//! startup and session as a TCP client (token verification and its cache,
//! guard, identity injection, pooling). `[http]` configures it
//! ([`HttpConfig`]); CORS is in [`cors`].

mod config;
pub mod cors;
pub mod json;
pub mod pgconn;
pub mod request;
mod sql;
mod ws;

pub use config::HttpConfig;

use crate::client::{Shared, StartError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler shares.
pub struct App {
    /// rowgate's shared state: the same as the TCP listener's.
    pub shared: Arc<Shared>,
    /// `[http]`.
    pub config: HttpConfig,
}

/// Where a request came from, for the session's plaintext-password rule.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// Whether it came over TLS (HTTPS, WSS).
    pub secure: bool,
}

/// Binds `[http] addr` and serves in the background until `stopped`
/// changes; returns the bound address.
pub async fn start(
    config: &HttpConfig,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let for_accept = shared.clone();
    let bind_err = |source| StartError::Bind {
        addr: config.addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.addr).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let app = Arc::new(App {
        shared,
        config: config.clone(),
    });
    let on = for_accept.http_tls.load().is_some();
    tracing::info!(%addr, tls = on, "rowgate HTTP listening (POST /sql, WebSocket /v2)");
    tokio::spawn(accept_loop(listener, for_accept, router(app), stopped));
    Ok(addr)
}

/// The routes, behind the CORS check.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/sql", post(sql::handle).options(options_without_origin))
        .route("/v2", get(ws::handle))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            cors::layer,
        ))
        .with_state(app)
}

/// `OPTIONS /sql` that is no browser's preflight (preflights are answered
/// by [`cors::layer`]).
async fn options_without_origin() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(axum::http::header::ALLOW, "POST, OPTIONS")],
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "message": "rowgate serves POST /sql (SQL over HTTP) and /v2 (WebSocket) here",
        })),
    )
        .into_response()
}

/// Accepts connections; each gets the TLS in force when it arrives
/// (`shared.http_tls`, replaced on reload).
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    router: Router,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    let tls = shared.http_tls.load_full().map(|t| (*t).clone());
                    tokio::spawn(serve_connection(tcp, addr, tls, router.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // instead of spinning.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped.changed() => break,
        }
    }
}

/// One HTTP/1.1 connection (keep-alive, WebSocket upgrades).
async fn serve_connection(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
) {
    let peer = Peer {
        addr,
        secure: tls.is_some(),
    };
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            router.clone().oneshot(req)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let result = match tls {
        None => {
            builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await
        }
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
                _ => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%addr, "HTTP connection ended: {e}");
    }
}
