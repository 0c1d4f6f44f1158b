//! Reload (SIGHUP, admin `RELOAD`): keys and issuers, identity mapping,
//! guard rules, pool sizes and timeouts, limits, service and admin
//! passwords, and the client TLS certificate (read again from its files)
//! change while clients stay connected. Everything is checked before
//! anything changes: a bad configuration keeps the old one, and says why.

use crate::client::Shared;
use crate::config::Config;

/// Re-reads the config file rowgate was started with and applies it.
pub async fn from_file(shared: &Shared) -> Result<String, String> {
    let Some(path) = shared.ops.config_path() else {
        return Err("rowgate was started without a config file; nothing to reload".into());
    };
    let config = Config::load_or_env(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    apply(shared, config).await
}

/// Applies `new`; returns what it changed, or why nothing changed.
pub async fn apply(shared: &Shared, new: Config) -> Result<String, String> {
    let _one_at_a_time = shared.ops.inner.reloading.lock().await;
    let result = apply_locked(shared, &new).await;
    match &result {
        Ok(summary) => {
            crate::metrics::incr("rowgate_reloads_total", "ok");
            tracing::info!(%summary, "configuration reloaded");
        }
        Err(why) => {
            crate::metrics::incr("rowgate_reloads_total", "failed");
            tracing::warn!(error = %why, "reload refused; the configuration in force stays");
        }
    }
    result
}

async fn apply_locked(shared: &Shared, new: &Config) -> Result<String, String> {
    let old = shared.ops.config();
    new.validate().map_err(|e| e.to_string())?;
    let password = new
        .admin
        .load_password()
        .map_err(|e| format!("[admin] {e}"))?;
    crate::guard::Guard::new(&new.guard).map_err(|e| format!("[guard] {e}"))?;
    let services = crate::auth::Services::new(&new.services, &new.auth)
        .map_err(|e| format!("[[services]] {e}"))?;
    let tls = crate::client::listen_tls(&new.listen)?;
    let http_tls = crate::client::http_tls(new.http.as_ref())?;
    // The last fallible step, and the slowest (JWKS fetches): it checks
    // everything before it changes anything.
    shared.databases.reload(&old, new).await?;
    shared.guard.reload(&new.guard)?;
    shared.services.store(std::sync::Arc::new(services));
    shared.tls.store(tls.map(std::sync::Arc::new));
    shared.http_tls.store(http_tls.map(std::sync::Arc::new));
    shared.ops.install(new, password);
    let sizes = |c: &Config| {
        let mut v: Vec<String> = c.upstream.iter().map(|u| u.pool_size.to_string()).collect();
        v.extend(
            c.databases
                .iter()
                .map(|(n, d)| format!("{n}={}", d.pool.pool_size)),
        );
        v.join(",")
    };
    let mut notes = vec![format!("pool_size {} -> {}", sizes(&old), sizes(new))];
    let restart_only = [
        ("[listen] addr", old.listen.addr != new.listen.addr),
        (
            "[http] addr (or [http] turned on or off)",
            old.http.as_ref().map(|h| &h.addr) != new.http.as_ref().map(|h| &h.addr),
        ),
        ("[metrics] addr", old.metrics.addr != new.metrics.addr),
        (
            "[session_state]",
            format!("{:?}", old.session_state) != format!("{:?}", new.session_state),
        ),
    ];
    for (what, changed) in restart_only {
        if changed {
            notes.push(format!(
                "{what} changed but takes effect only after a restart"
            ));
        }
    }
    Ok(format!("configuration reloaded ({})", notes.join("; ")))
}
