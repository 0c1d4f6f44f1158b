//! `POST /sql`: Neon's SQL over HTTP. Each request logs in through the pipe
//! client ([`super::pgconn`]) with its token, runs its statement (or its
//! batch, in one transaction), and answers in the driver's JSON shapes.

use super::json::{self, RowFormat};
use super::pgconn::{Budget, DbError, PgConn, SqlError};
use super::request::{self, Body, SqlRequest, Statement};
use super::{App, Peer};
use crate::metrics;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// The handler.
pub async fn handle(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    metrics::incr("rowgate_http_requests_total", "sql");
    let limit = app.config.max_request_bytes;
    let deadline = app.config.request_timeout;
    // Reading the body counts against the deadline too: a client that
    // sends it slowly holds nothing upstream, but must not hold a task.
    let work = async {
        let bytes = match read_body(&headers, body, limit).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let req = match request::parse(&headers, &bytes) {
            Ok(r) => r,
            Err(e) => {
                metrics::incr("rowgate_http_errors_total", "bad_request");
                return db_error(&DbError::new(e.code, format!("rowgate: {}", e.message)));
            }
        };
        match run(&app, peer, req).await {
            Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
            Err(e) => sql_error(e),
        }
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => {
            // The pipe client was dropped with its statement running: it
            // cancels the statement and rowgate rolls the transaction back.
            metrics::incr("rowgate_http_errors_total", "timeout");
            db_error(&DbError::new(
                "57014",
                format!(
                    "rowgate: canceling the request: it ran longer than [http] request_timeout ({:?})",
                    deadline
                ),
            ))
        }
    }
}

/// The body, at most `limit` bytes; past it HTTP 413.
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Vec<u8>, Response> {
    let too_large = || {
        metrics::incr("rowgate_http_errors_total", "request_too_large");
        status_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            "54000",
            format!(
                "rowgate: the request body is larger than [http] max_request_bytes ({limit} bytes)"
            ),
        )
    };
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(announced.map_or(1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            status_json(
                StatusCode::BAD_REQUEST,
                "08P01",
                "rowgate: the request body could not be read".into(),
            )
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn run(app: &App, peer: Peer, req: SqlRequest) -> Result<Value, SqlError> {
    let login = &req.login;
    let mut startup = vec![
        ("user", login.user.as_str()),
        ("database", login.database.as_str()),
        ("client_encoding", "UTF8"),
    ];
    if let Some(name) = &login.application_name {
        startup.push(("application_name", name.as_str()));
    }
    let mut conn = PgConn::connect(
        app.shared.clone(),
        peer.addr,
        peer.secure,
        &startup,
        &login.token,
    )
    .await?;
    let mut budget = Budget::new(app.config.max_response_bytes, app.config.max_response_rows);
    let format = |s: &Statement| RowFormat {
        array_mode: s.array_mode.unwrap_or(req.format.array_mode),
        raw_text: req.format.raw_text,
    };
    let answer = match &req.body {
        Body::Single(s) => {
            let r = conn.query(&s.sql, &s.params, &mut budget).await?;
            json::result(&r, format(s))
        }
        Body::Batch(statements) => {
            conn.simple(&req.modes.begin()).await?;
            let mut results = Vec::with_capacity(statements.len());
            for s in statements {
                match conn.query(&s.sql, &s.params, &mut budget).await {
                    Ok(r) => results.push(json::result(&r, format(s))),
                    Err(SqlError::Db(e)) => {
                        // The session is waiting for the end of a failed
                        // transaction; end it here rather than by
                        // disconnecting, so the pooled connection is reused.
                        let _ = conn.simple("ROLLBACK").await;
                        conn.close().await;
                        return Err(SqlError::Db(e));
                    }
                    Err(other) => return Err(other),
                }
            }
            conn.simple("COMMIT").await?;
            json!({ "results": results })
        }
    };
    conn.close().await;
    Ok(answer)
}

fn sql_error(e: SqlError) -> Response {
    match e {
        SqlError::Db(e) => {
            let code = e.get(b'C').unwrap_or_default();
            let label = if code.starts_with("28") { "auth" } else { "db" };
            metrics::incr("rowgate_http_errors_total", label);
            db_error(&e)
        }
        SqlError::TooLarge { .. } => {
            metrics::incr("rowgate_http_errors_total", "response_too_large");
            // 507, as Neon answers; the driver shows the text.
            status_json(
                StatusCode::INSUFFICIENT_STORAGE,
                "54000",
                format!("rowgate: {e}"),
            )
        }
        SqlError::Closed | SqlError::Protocol(_) => {
            metrics::incr("rowgate_http_errors_total", "internal");
            tracing::warn!("/sql request failed: {e}");
            status_json(StatusCode::BAD_GATEWAY, "08006", format!("rowgate: {e}"))
        }
    }
}

/// HTTP 400 with the error's JSON: the one status the driver reads error
/// fields from (it then throws a `NeonDbError` with `.code` and the rest).
fn db_error(e: &DbError) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json::error(e))).into_response()
}

fn status_json(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "message": message, "code": code })),
    )
        .into_response()
}
