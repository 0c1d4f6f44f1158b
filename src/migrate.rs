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
    let mut done = Vec::new();
    for (name, sql) in MIGRATIONS {
        conn.simple_query(sql)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{name}: {e}"))?;
        done.push(*name);
    }
    for role in grant_to {
        let sql = format!("GRANT rowgate_user TO {}", quote_ident(role));
        conn.simple_query(&sql)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("granting rowgate_user to {role}: {e}"))?;
    }
    Ok(done)
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
