//! The operations listener (`[metrics] addr`): `/metrics` in the
//! Prometheus text format, `/healthz` (the process answers) and `/readyz`
//! (it should get traffic). Probes never touch the database.

use super::registry::ClientState;
use super::Phase;
use crate::client::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Weak;

/// Binds `addr` and serves in the background until shutdown completes.
pub async fn serve(addr: &str, shared: Weak<Shared>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let ops = shared.upgrade().map(|s| s.ops.clone());
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared);
    tokio::spawn(async move {
        let stopped = async move {
            match ops {
                Some(ops) => ops.lifecycle().reached(Phase::Stopped).await,
                None => std::future::pending().await,
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::warn!("metrics listener failed: {e}");
        }
    });
    Ok(local)
}

/// Gauges computed when scraped: clients by state, connections by state,
/// pool size, paused and ready flags.
pub(crate) fn update_gauges(shared: &Shared) {
    use crate::metrics::set_labeled as set;
    let counts = shared.ops.clients().counts();
    for s in ClientState::ALL {
        set(
            "rowgate_clients",
            "state",
            s.name(),
            counts[s as usize] as i64,
        );
    }
    // Wildcard databases share one label: sum per label.
    let mut by_label: std::collections::BTreeMap<&'static str, [i64; 3]> = Default::default();
    let (mut active, mut idle, mut paused) = (0, 0, false);
    for db in shared.databases.all() {
        let p = db.pool();
        let e = by_label.entry(db.label()).or_default();
        e[0] += p.lent() as i64;
        e[1] += p.idle_count() as i64;
        e[2] += p.size() as i64;
        active += p.lent() as i64;
        idle += p.idle_count() as i64;
        paused |= p.is_paused();
    }
    set(
        "rowgate_upstream_connections_by_state",
        "state",
        "active",
        active,
    );
    set(
        "rowgate_upstream_connections_by_state",
        "state",
        "idle",
        idle,
    );
    for (label, [_, _, size]) in by_label {
        set("rowgate_pool_size", "database", label, size);
    }
    set("rowgate_pool_paused", "", "", paused as i64);
    set("rowgate_ready", "", "", not_ready(shared).is_none() as i64);
}

/// Why rowgate should not get new clients now, if it should not.
pub(crate) fn not_ready(shared: &Shared) -> Option<&'static str> {
    if shared.ops.lifecycle().phase() != Phase::Running {
        Some("shutting down")
    } else if shared
        .databases
        .all()
        .iter()
        .any(|d| !d.auth().keys_loaded())
    {
        Some("no verification keys loaded for some issuer")
    } else if shared.databases.all().iter().any(|d| d.pool().is_paused()) {
        Some("pool paused")
    } else if shared.databases.all().iter().any(|d| d.pool().exhausted()) {
        Some("pool exhausted")
    } else {
        None
    }
}

async fn metrics(State(shared): State<Weak<Shared>>) -> impl IntoResponse {
    if let Some(s) = shared.upgrade() {
        update_gauges(&s);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

async fn healthz() -> impl IntoResponse {
    "ok\n"
}

async fn readyz(State(shared): State<Weak<Shared>>) -> impl IntoResponse {
    let Some(s) = shared.upgrade() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopped\n".to_string());
    };
    match not_ready(&s) {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
