//! The admin console: a client that logs in to database `rowgate` as user
//! `admin` with the `[admin]` password (SCRAM-SHA-256) gets PgBouncer's
//! commands over the simple query protocol, every column as text, so psql
//! and any driver can read it. Columns are documented in
//! docs/operations.md.

use super::lifecycle::{Phase, ShutdownMode};
use super::registry::StopRequest;
use crate::client::startup::StartupEnd;
use crate::client::Shared;
use crate::wire::backend::{self, Severity};
use crate::wire::stream::Stream;
use crate::wire::{next_frame, put_cstr, put_frame, Reader, MAX_PREAUTH_LEN};
use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// The database name that selects the console (with user [`ADMIN_USER`]).
pub const ADMIN_DATABASE: &str = "rowgate";
/// The user name that selects the console.
pub const ADMIN_USER: &str = "admin";

/// How long the console login may take, and how long a console may sit
/// idle: it is an operator's tool, not a pooled client.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// One reply to a console command.
struct Reply {
    out: BytesMut,
}

impl Reply {
    fn new() -> Reply {
        Reply {
            out: BytesMut::new(),
        }
    }

    fn table(&mut self, columns: &[&str], rows: &[Vec<String>], tag: &str) {
        put_frame(&mut self.out, b'T', |b| {
            b.put_i16(columns.len() as i16);
            for c in columns {
                put_cstr(b, c.as_bytes());
                b.put_i32(0); // table oid
                b.put_i16(0); // column
                b.put_i32(25); // text
                b.put_i16(-1);
                b.put_i32(-1);
                b.put_i16(0); // text format
            }
        });
        for row in rows {
            put_frame(&mut self.out, b'D', |b| {
                b.put_i16(row.len() as i16);
                for v in row {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
            });
        }
        self.complete(&format!("{tag} {}", rows.len()));
    }

    fn complete(&mut self, tag: &str) {
        put_frame(&mut self.out, b'C', |b| put_cstr(b, tag.as_bytes()));
    }

    fn notice(&mut self, message: &str) {
        put_frame(&mut self.out, b'N', |b| {
            for (k, v) in [
                (b'S', "NOTICE"),
                (b'V', "NOTICE"),
                (b'C', "00000"),
                (b'M', message),
            ] {
                b.put_u8(k);
                put_cstr(b, v.as_bytes());
            }
            b.put_u8(0);
        });
    }

    fn error(&mut self, code: &str, message: &str) {
        self.out
            .extend_from_slice(&backend::error_response(Severity::Error, code, message));
    }
}

/// Serves one console client: `pending` holds what it sent after its
/// startup packet.
pub async fn serve(
    mut stream: Stream,
    mut pending: BytesMut,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let Some(password) = shared.ops.admin_password() else {
        crate::metrics::incr("rowgate_admin_logins_total", "disabled");
        fatal(
            &mut stream,
            "28000",
            "the rowgate admin console is off; set [admin] password or password_file",
        )
        .await;
        return;
    };
    // The same SCRAM-SHA-256 exchange as a service login.
    let verifier = crate::auth::scram::Verifier::from_password(&password);
    let login = crate::client::scram(&mut stream, &mut pending, &[], ADMIN_USER, true, verifier);
    match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
        Ok(Ok(())) => {}
        Ok(Err(StartupEnd::Refuse { code, message })) => {
            crate::metrics::incr("rowgate_admin_logins_total", "refused");
            tracing::info!(%peer, "admin console login refused: {message}");
            fatal(&mut stream, code, &message).await;
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            crate::metrics::incr("rowgate_admin_logins_total", "timeout");
            fatal(&mut stream, "08006", "admin console login timed out").await;
            return;
        }
    }
    crate::metrics::incr("rowgate_admin_logins_total", "ok");
    tracing::info!(%peer, "admin console login");
    let mut out = BytesMut::new();
    out.extend_from_slice(&backend::authentication_ok());
    for (k, v) in [
        ("server_version", "16.0 (rowgate admin console)"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        out.extend_from_slice(&backend::parameter_status(k, v));
    }
    out.extend_from_slice(&backend::backend_key_data(0, 0));
    out.extend_from_slice(&backend::ready_for_query(b'I'));
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let mut skipping = false;
    loop {
        let frame = match next_frame(&mut pending, MAX_PREAUTH_LEN) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let read = tokio::select! {
                    r = tokio::time::timeout(IDLE_TIMEOUT, stream.read_more(&mut pending)) => Some(r),
                    _ = shared.ops.lifecycle().reached(Phase::Stopped) => None,
                };
                match read {
                    Some(Ok(Ok(n))) if n > 0 => continue,
                    Some(_) => return,
                    None => {
                        fatal(&mut stream, "57P01", super::hook::SHUTDOWN_MESSAGE).await;
                        return;
                    }
                }
            }
            Err(e) => {
                fatal(&mut stream, "08P01", &format!("protocol violation: {e}")).await;
                return;
            }
        };
        let mut reply = Reply::new();
        match frame.tag() {
            b'X' => return,
            b'Q' => {
                skipping = false;
                let sql = Reader::new(frame.body(), "Query")
                    .cstr()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default();
                run(&sql, &shared, &mut reply).await;
                reply.out.extend_from_slice(&backend::ready_for_query(b'I'));
            }
            b'S' => {
                skipping = false;
                reply.out.extend_from_slice(&backend::ready_for_query(b'I'));
            }
            _ if skipping => {}
            _ => {
                skipping = true;
                reply.error("0A000", "the rowgate admin console speaks the simple query protocol only (psql, or simple_query in a driver)");
            }
        }
        if stream.write_all(&reply.out).await.is_err() {
            return;
        }
    }
}

async fn fatal(stream: &mut Stream, code: &str, message: &str) {
    crate::client::startup::send_fatal(stream, code, message).await;
}

/// The commands, for errors and `SHOW HELP`.
const COMMANDS: &str = "SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, SHOW STATS, SHOW CONFIG, SHOW KEYS, SHOW HELP, RELOAD, PAUSE, RESUME, KILL <client id>, SHUTDOWN [FAST]";

async fn run(sql: &str, shared: &Arc<Shared>, reply: &mut Reply) {
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    tracing::info!(command = %words.join(" "), "admin console command");
    match words.as_slice() {
        [] => put_frame(&mut reply.out, b'I', |_| {}),
        ["SHOW", "POOLS"] => show_pools(shared, reply),
        ["SHOW", "CLIENTS"] => show_clients(shared, reply),
        ["SHOW", "SERVERS"] => show_servers(shared, reply),
        ["SHOW", "STATS"] => show_stats(shared, reply),
        ["SHOW", "CONFIG"] => show_config(shared, reply),
        ["SHOW", "KEYS"] => show_keys(shared, reply),
        ["SHOW", "HELP"] => {
            reply.notice(&format!("commands: {COMMANDS}"));
            reply.complete("SHOW");
        }
        ["RELOAD"] => match super::reload::from_file(shared).await {
            Ok(summary) => {
                reply.notice(&summary);
                reply.complete("RELOAD");
            }
            Err(why) => reply.error(
                "F0000",
                &format!("reload refused, the configuration in force stays: {why}"),
            ),
        },
        ["PAUSE"] => pause(shared, reply).await,
        ["RESUME"] => {
            for db in shared.databases.all() {
                db.pool().resume();
            }
            tracing::info!("pools resumed");
            reply.complete("RESUME");
        }
        ["KILL", id] => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| shared.ops.clients().get(id))
        {
            Some(entry) => {
                tracing::info!(client = entry.id, "client killed from the admin console");
                entry.request_stop(StopRequest::Kill);
                reply.complete("KILL");
            }
            None => reply.error(
                "42704",
                &format!("no client with id {id} (see SHOW CLIENTS)"),
            ),
        },
        ["SHUTDOWN"] | ["SHUTDOWN", "FAST"] => {
            let mode = if words.len() == 2 {
                ShutdownMode::Fast
            } else {
                ShutdownMode::Graceful
            };
            tokio::spawn(super::shutdown(shared.clone(), mode));
            reply.complete("SHUTDOWN");
        }
        _ => reply.error(
            "42601",
            &format!("unknown admin console command {text:?}; commands: {COMMANDS}"),
        ),
    }
}

async fn pause(shared: &Arc<Shared>, reply: &mut Reply) {
    let limit = shared.ops.config().admin.pause_timeout();
    let dbs = shared.databases.all();
    for db in &dbs {
        db.pool().pause(limit);
    }
    tracing::info!("pools paused; waiting for running transactions");
    let lent = || dbs.iter().map(|d| d.pool().lent()).sum::<usize>();
    let deadline = tokio::time::Instant::now() + limit;
    while lent() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lent = lent();
    if lent == 0 {
        reply.complete("PAUSE");
    } else {
        reply.error(
            "57014",
            &format!("the pool is paused, but {lent} connections were still in transactions after {limit:?} (pause_timeout)"),
        );
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn timestamp(t: SystemTime) -> String {
    let s = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((s / 86_400) as i64, s % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn show_pools(shared: &Shared, reply: &mut Reply) {
    let clients = shared.ops.clients().snapshot();
    let rows: Vec<Vec<String>> = databases(shared)
        .iter()
        .map(|db| {
            let mut c = [0usize; 4];
            for e in clients.iter().filter(|e| e.database() == db.name()) {
                c[e.state() as usize] += 1;
            }
            let p = db.pool();
            vec![
                db.name().to_string(),
                p.target().user.clone(),
                c[super::ClientState::InTransaction as usize].to_string(),
                c[super::ClientState::Waiting as usize].to_string(),
                c[super::ClientState::Idle as usize].to_string(),
                c[super::ClientState::Authenticating as usize].to_string(),
                p.lent().to_string(),
                p.idle_count().to_string(),
                p.size().to_string(),
                if p.is_paused() { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    reply.table(
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_idle",
            "cl_authenticating",
            "sv_active",
            "sv_idle",
            "pool_size",
            "paused",
        ],
        &rows,
        "SHOW",
    );
}

fn show_clients(shared: &Shared, reply: &mut Reply) {
    let rows: Vec<Vec<String>> = shared
        .ops
        .clients()
        .snapshot()
        .iter()
        .map(|e| {
            let pid = e.upstream_pid();
            vec![
                e.id.to_string(),
                e.database().to_string(),
                e.sub().to_string(),
                e.peer.ip().to_string(),
                e.peer.port().to_string(),
                e.state().name().to_string(),
                timestamp(e.connected_at),
                secs(e.connected_for()),
                secs(e.in_state_for()),
                e.transactions().to_string(),
                if pid == 0 {
                    String::new()
                } else {
                    pid.to_string()
                },
            ]
        })
        .collect();
    reply.table(
        &[
            "id",
            "database",
            "sub",
            "addr",
            "port",
            "state",
            "connect_time",
            "connected_secs",
            "state_secs",
            "transactions",
            "server_pid",
        ],
        &rows,
        "SHOW",
    );
}

fn show_servers(shared: &Shared, reply: &mut Reply) {
    let mut rows: Vec<Vec<String>> = shared
        .ops
        .clients()
        .snapshot()
        .iter()
        .filter(|e| e.upstream_pid() != 0)
        .map(|e| {
            vec![
                e.upstream_pid().to_string(),
                "active".into(),
                e.id.to_string(),
                String::new(),
                secs(e.in_state_for()),
                e.database().to_string(),
            ]
        })
        .collect();
    for db in databases(shared) {
        rows.extend(db.pool().idle_servers().iter().map(|s| {
            vec![
                s.pid.to_string(),
                "idle".into(),
                String::new(),
                secs(s.age),
                secs(s.idle_for),
                db.name().to_string(),
            ]
        }));
    }
    reply.table(
        &[
            "pid",
            "state",
            "client_id",
            "age_secs",
            "state_secs",
            "database",
        ],
        &rows,
        "SHOW",
    );
}

fn show_stats(shared: &Shared, reply: &mut Reply) {
    use crate::metrics::{get, observed};
    let avg = |total: Duration, n: u64| (total.as_micros() as u64).checked_div(n).unwrap_or(0);
    // Per metrics label: every database of the wildcard shares `*`.
    let mut labels: Vec<&'static str> = databases(shared).iter().map(|d| d.label()).collect();
    labels.dedup();
    let rows: Vec<Vec<String>> = labels
        .into_iter()
        .map(|label| {
            let (xacts, xact_time) = observed("rowgate_transaction_duration_seconds", label);
            let (waits, wait_time) = observed("rowgate_pool_acquire_seconds", label);
            vec![
                label.to_string(),
                xacts.to_string(),
                xact_time.as_micros().to_string(),
                avg(xact_time, xacts).to_string(),
                waits.to_string(),
                wait_time.as_micros().to_string(),
                avg(wait_time, waits).to_string(),
                get("rowgate_pool_acquire_timeouts_total", label).to_string(),
                get("rowgate_upstream_connects_total", label).to_string(),
                get("rowgate_upstream_connect_failures_total", label).to_string(),
            ]
        })
        .collect();
    reply.table(
        &[
            "database",
            "total_xact_count",
            "total_xact_time",
            "avg_xact_time",
            "total_wait_count",
            "total_wait_time",
            "avg_wait_time",
            "acquire_timeouts",
            "server_connects",
            "server_connect_failures",
        ],
        &rows,
        "SHOW",
    );
}

fn show_config(shared: &Shared, reply: &mut Reply) {
    let c = shared.ops.config();
    let d = |v: Duration| format!("{v:?}");
    let yes = "yes";
    let no = "no";
    let rows: Vec<[String; 3]> = vec![
        ["listen.addr".into(), c.listen.addr.clone(), no.into()],
        [
            "listen.tls".into(),
            c.listen.tls_cert_file.is_some().to_string(),
            yes.into(),
        ],
        [
            "listen.max_client_connections".into(),
            c.listen.max_client_connections.to_string(),
            yes.into(),
        ],
        [
            "listen.max_connections_per_user".into(),
            c.listen.max_connections_per_user.to_string(),
            yes.into(),
        ],
        [
            "listen.max_transactions_per_second_per_user".into(),
            c.listen.max_transactions_per_second_per_user.to_string(),
            yes.into(),
        ],
        [
            "listen.login_timeout".into(),
            d(c.listen.login_timeout),
            yes.into(),
        ],
        [
            "listen.max_message_size".into(),
            c.listen.max_message_size.to_string(),
            yes.into(),
        ],
        [
            "listen.shutdown_accept_delay".into(),
            d(c.listen.shutdown_accept_delay),
            yes.into(),
        ],
        [
            "listen.shutdown_timeout".into(),
            d(c.listen.shutdown_timeout),
            yes.into(),
        ],
        [
            "listen.client_idle_timeout".into(),
            d(c.listen.client_idle_timeout),
            no.into(),
        ],
        [
            "listen.idle_in_transaction_timeout".into(),
            d(c.listen.idle_in_transaction_timeout),
            no.into(),
        ],
        [
            "auth.issuers".into(),
            keys(shared)
                .iter()
                .map(|k| k.issuer.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
            yes.into(),
        ],
        [
            "guard.profile".into(),
            format!("{:?}", shared.guard.profile()).to_lowercase(),
            yes.into(),
        ],
        [
            "guard.max_statement_size".into(),
            c.guard.max_statement_size.to_string(),
            yes.into(),
        ],
        [
            "metrics.addr".into(),
            c.metrics.addr.clone().unwrap_or_default(),
            no.into(),
        ],
        [
            "admin.pause_timeout".into(),
            d(c.admin.pause_timeout()),
            yes.into(),
        ],
        [
            "phase".into(),
            shared.ops.lifecycle().phase().name().into(),
            no.into(),
        ],
    ];
    let mut rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    for db in databases(shared) {
        let cfg = db.pool().config();
        let at = |key: &str| format!("databases.{}.{key}", db.name());
        rows.extend([
            vec![at("server"), db.pool().target().display_addr(), no.into()],
            vec![at("pool_size"), cfg.pool_size.to_string(), yes.into()],
            vec![at("min_idle"), cfg.min_idle.to_string(), yes.into()],
            vec![at("acquire_timeout"), d(cfg.acquire_timeout), yes.into()],
            vec![at("connect_timeout"), d(cfg.connect_timeout), yes.into()],
            vec![at("idle_timeout"), d(cfg.idle_timeout), yes.into()],
            vec![at("max_lifetime"), d(cfg.max_lifetime), yes.into()],
        ]);
    }
    reply.table(&["key", "value", "reloadable"], &rows, "SHOW");
}

/// Every database opened so far, by name.
fn databases(shared: &Shared) -> Vec<Arc<crate::upstream::Database>> {
    let mut dbs = shared.databases.all();
    dbs.sort_by(|a, b| a.name().cmp(b.name()));
    dbs
}

/// The keys of every verifier (databases may share one, or have their own).
fn keys(shared: &Shared) -> Vec<crate::auth::KeyInfo> {
    let mut seen: Vec<Arc<crate::auth::Authenticator>> = Vec::new();
    let mut out = Vec::new();
    for db in databases(shared) {
        if !seen.iter().any(|a| Arc::ptr_eq(a, db.auth())) {
            seen.push(db.auth().clone());
            out.extend(db.auth().keys());
        }
    }
    out
}

fn show_keys(shared: &Shared, reply: &mut Reply) {
    let rows: Vec<Vec<String>> = keys(shared)
        .into_iter()
        .map(|k| {
            vec![
                k.issuer,
                k.source.to_string(),
                k.kid,
                k.kind,
                k.fetched_at.map(timestamp).unwrap_or_default(),
            ]
        })
        .collect();
    reply.table(
        &["issuer", "source", "kid", "kind", "fetched_at"],
        &rows,
        "SHOW",
    );
}

#[cfg(test)]
mod tests {
    use super::timestamp;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // leap year
        assert_eq!(timestamp(t), "2024-02-29 12:34:56 UTC");
    }
}
