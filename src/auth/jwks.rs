//! A JWKS fetched from a configured URL: kept in memory, refreshed in the
//! background, refetched (rate-limited, single flight) when a token names an
//! unknown `kid`, and never replaced by a failed or broken fetch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use url::Url;

use super::config::AuthConfig;
use super::error::AuthConfigError;
use super::keys::{parse_jwks, KeySet};
use crate::metrics;

/// Largest JWKS body accepted. Real key sets are a few KiB.
pub(crate) const MAX_JWKS_BYTES: usize = 64 * 1024;

/// One issuer's remote key set.
pub(crate) struct JwksSource {
    issuer: String,
    url: Url,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped after every fetch attempt, so callers that waited on an
    /// in-flight fetch know not to start another.
    generation: AtomicU64,
    loaded: AtomicBool,
    min_refetch: Duration,
    /// The client's total timeout, kept to word the timeout error.
    timeout_ms: u64,
    /// Held for the whole fetch: this is the single flight.
    flight: tokio::sync::Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// When keys were last fetched successfully (for `SHOW KEYS`).
    fetched_at: Mutex<Option<std::time::SystemTime>>,
    #[cfg(test)]
    pub(crate) fetches: AtomicU64,
}

/// Builds the HTTP client for one JWKS URL: rustls with the ring provider
/// and webpki roots, no redirects, connect and total timeouts.
fn http_client(cfg: &AuthConfig, url: &Url) -> Result<reqwest::Client, AuthConfigError> {
    let bad = |e: String| {
        AuthConfigError::invalid("[auth]", format!("cannot set up the JWKS HTTP client: {e}"))
    };
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(cfg.jwks_connect_timeout_ms))
        .timeout(Duration::from_millis(cfg.jwks_timeout_ms))
        .https_only(!cfg.allow_http_jwks)
        .user_agent(concat!("rowgate/", env!("CARGO_PKG_VERSION")));
    if url.scheme() == "http" {
        // Only loopback is allowed over http (checked by config); an
        // environment proxy must not see or alter that traffic.
        b = b.no_proxy();
    }
    b.build().map_err(|e| bad(e.to_string()))
}

/// Renders a reqwest error with its causes ("connection refused", ...).
fn describe(e: &reqwest::Error, cfg_timeout_ms: u64) -> String {
    if e.is_timeout() {
        return format!("timed out (limit {cfg_timeout_ms} ms)");
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// GETs the JWKS body, enforcing status, no redirect and the size cap.
async fn fetch_body(
    client: &reqwest::Client,
    url: &Url,
    timeout_ms: u64,
) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| describe(&e, timeout_ms))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(format!(
            "server answered {status}; redirects are not followed, configure the final URL"
        ));
    }
    if !status.is_success() {
        return Err(format!("server answered {status}"));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err("response is larger than 64 KiB".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, timeout_ms))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err("response is larger than 64 KiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl JwksSource {
    pub(crate) fn new(
        cfg: &AuthConfig,
        issuer: &str,
        url: Url,
    ) -> Result<Arc<Self>, AuthConfigError> {
        Ok(Arc::new(JwksSource {
            issuer: issuer.to_owned(),
            client: http_client(cfg, &url)?,
            url,
            keys: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            min_refetch: Duration::from_secs(cfg.jwks_min_refetch_secs),
            timeout_ms: cfg.jwks_timeout_ms,
            flight: tokio::sync::Mutex::new(None),
            last_error: Mutex::new(None),
            fetched_at: Mutex::new(None),
            #[cfg(test)]
            fetches: AtomicU64::new(0),
        }))
    }

    /// The current keys and the generation they belong to. The generation
    /// is read first: a fetch that lands in between only makes it stale,
    /// which costs at most a wait on the lock, never a second fetch.
    /// When keys were last fetched successfully.
    pub(crate) fn fetched_at(&self) -> Option<std::time::SystemTime> {
        *self.fetched_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn current(&self) -> (Arc<KeySet>, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        (keys, generation)
    }

    /// Why the keys are unavailable, for the error a client sees.
    pub(crate) fn unavailable_reason(&self) -> String {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match last {
            Some(e) => format!("JWKS fetch from {} failed: {e}", self.url),
            None => format!("the JWKS at {} has no usable key", self.url),
        }
    }

    fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Minimum gap between fetches. Before the first success it is at most
    /// one second, so the service recovers quickly once the issuer is back.
    fn gap(&self) -> Duration {
        if self.loaded() {
            self.min_refetch
        } else {
            self.min_refetch.min(Duration::from_secs(1))
        }
    }

    /// Called when a token's kid is not in the keys of generation `seen`.
    /// Concurrent callers share one fetch; at most one fetch per `gap`.
    pub(crate) async fn refetch_after_miss(&self, seen: u64) {
        let mut last = self.flight.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return; // someone fetched while we waited: use their result
        }
        if last.is_some_and(|t| t.elapsed() < self.gap()) {
            return;
        }
        self.fetch_locked(&mut last).await;
    }

    /// Periodic refresh; skipped if a fetch happened very recently.
    pub(crate) async fn refresh(&self) {
        let mut last = self.flight.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.gap()) {
            return;
        }
        self.fetch_locked(&mut last).await;
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) {
        *last = Some(Instant::now());
        metrics::incr("rowgate_jwks_fetches_total", "");
        #[cfg(test)]
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = fetch_body(&self.client, &self.url, self.timeout_ms)
            .await
            .and_then(|body| parse_jwks(&body));
        match result {
            Ok((set, broken)) => {
                for b in &broken {
                    tracing::warn!(issuer = %self.issuer, url = %self.url, "JWKS {b}; skipped");
                }
                tracing::debug!(issuer = %self.issuer, keys = set.keys.len(), "JWKS loaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                *self.fetched_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(std::time::SystemTime::now());
                self.loaded.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(
                    issuer = %self.issuer, url = %self.url,
                    "JWKS fetch failed, keeping the last good keys: {e}"
                );
                metrics::incr("rowgate_jwks_refresh_failures_total", "");
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Starts the background refresh for `src`. The task holds only a weak
/// reference, so it ends by itself once the authenticator is dropped.
pub(crate) fn spawn_refresh(src: &Arc<JwksSource>, every: Duration) -> tokio::task::AbortHandle {
    let weak: Weak<JwksSource> = Arc::downgrade(src);
    tokio::spawn(async move {
        loop {
            let wait = match weak.upgrade() {
                Some(s) if s.loaded() => every,
                Some(s) => s.gap().max(Duration::from_secs(1)).min(every),
                None => return,
            };
            tokio::time::sleep(wait).await;
            match weak.upgrade() {
                Some(s) => s.refresh().await,
                None => return,
            }
        }
    })
    .abort_handle()
}
