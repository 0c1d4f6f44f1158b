//! The SQL rowgate ships in `migrations/` (compiled in, so the binary alone
//! can install it), and `rowgate migrate`, which applies it.

use crate::upstream::{tls, ServerConn, Target};
use std::time::Duration;

/// Every migration, in order: (file name, SQL). Each file is idempotent.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("001_auth.sql", include_str!("../migrations/001_auth.sql")),
    (
        "002_example_user_messages.sql",
        include_str!("../migrations/002_example_user_messages.sql"),
    ),
    (
        "003_sealed_identity.sql",
        include_str!("../migrations/003_sealed_identity.sql"),
    ),
];

/// Applies every migration to the database at `url` (an administrator's
/// URL), then grants `rowgate_user` to each role in `grant_to` (rowgate's
/// login role). Returns the names applied.
pub async fn apply(url: &str, grant_to: &[String]) -> Result<Vec<&'static str>, String> {
    let target = Target::from_url(url)?;
    let tls = tls::client_config(target.sslmode, None)?;
    let mut conn = ServerConn::connect(&target, tls.as_ref(), Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    // One transaction: re-running 001 redefines auth.* unsealed until 003
    // runs again, and nobody may see that in between.
    let mut done = Vec::new();
    run(&mut conn, "BEGIN").await?;
    for (name, sql) in MIGRATIONS {
        if let Err(e) = run(&mut conn, sql).await {
            let _ = conn.simple_query("ROLLBACK").await;
            return Err(format!("{name}: {e}"));
        }
        done.push(*name);
    }
    run(&mut conn, "COMMIT").await?;
    for role in grant_to {
        let sql = format!("GRANT rowgate_user TO {}", quote_ident(role));
        conn.simple_query(&sql)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("granting rowgate_user to {role}: {e}"))?;
    }
    Ok(done)
}

/// Runs SQL, turning both kinds of failure into a message.
async fn run(conn: &mut ServerConn, sql: &str) -> Result<(), String> {
    conn.simple_query(sql)
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
