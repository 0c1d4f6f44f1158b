//! `[http]`: the HTTP front door for the Neon serverless driver
//! (`POST /sql` and the `/v2` WebSocket), off unless the section is present.

use crate::config::duration;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[http]` in the configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub addr: String,
    /// PEM certificate chain: with `tls_key_file`, HTTPS and WSS on `addr`
    /// (plain HTTP is then refused by the TLS handshake).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Browser origins (`https://app.example.com`) allowed to call `/sql`
    /// and `/v2`. A request from any other origin is refused; requests
    /// without an `Origin` header (servers, not browsers) are not affected.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// Largest `/sql` request body accepted (HTTP 413 beyond it).
    #[serde(default = "default_max_bytes")]
    pub max_request_bytes: usize,
    /// Largest `/sql` response: the row data of one request, counted as it
    /// arrives (HTTP 507 beyond it, and the query is cancelled).
    #[serde(default = "default_max_bytes")]
    pub max_response_bytes: usize,
    /// Most rows one `/sql` request may return, all queries of a batch
    /// together (`0` = no limit but `max_response_bytes`).
    #[serde(default)]
    pub max_response_rows: usize,
    /// Longest a `/sql` request may take, from its first byte to its
    /// answer; past it the query is cancelled and the request fails with
    /// SQLSTATE 57014.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
}

/// Neon's proxy uses 10 MiB for both limits; the same, so an application
/// that works on Neon works here.
fn default_max_bytes() -> usize {
    10 << 20
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

impl HttpConfig {
    /// Checks values that parse but cannot work, with advice.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("[http] tls_cert_file and tls_key_file must be set together".into());
        }
        if self.max_request_bytes == 0 || self.max_response_bytes == 0 {
            return Err("[http] max_request_bytes and max_response_bytes must be above 0".into());
        }
        if self.request_timeout.is_zero() {
            return Err(
                "[http] request_timeout must be above 0 (every request has a deadline)".into(),
            );
        }
        for origin in &self.cors_allowed_origins {
            check_origin(origin)?;
        }
        Ok(())
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), String> {
    let advice = "write it as a browser sends it, e.g. \"https://app.example.com\" (scheme, host, optional port; no path, no trailing slash, no wildcard)";
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(format!(
            "[http] cors_allowed_origins: {origin:?} is not an origin; {advice}"
        ));
    };
    let ok = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '*', '?', '#', ' ']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "[http] cors_allowed_origins: {origin:?} is not an origin; {advice}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<HttpConfig, String> {
        let c: HttpConfig = toml::from_str(&format!("addr = \"127.0.0.1:0\"\n{extra}"))
            .map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn defaults_match_neons_limits() {
        let c = config("").unwrap();
        assert_eq!(c.max_request_bytes, 10 << 20);
        assert_eq!(c.max_response_bytes, 10 << 20);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert!(c.cors_allowed_origins.is_empty());
    }

    #[test]
    fn origins_must_be_origins() {
        assert!(config(
            "cors_allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]"
        )
        .is_ok());
        for bad in [
            "*",
            "https://app.example.com/",
            "app.example.com",
            "https://*.example.com",
        ] {
            let err = config(&format!("cors_allowed_origins = [{bad:?}]")).unwrap_err();
            assert!(err.contains("is not an origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn tls_files_come_in_pairs_and_timeouts_are_required() {
        let err = config("tls_cert_file = \"c.pem\"").unwrap_err();
        assert!(err.contains("set together"), "{err}");
        let err = config("request_timeout = \"0s\"").unwrap_err();
        assert!(err.contains("deadline"), "{err}");
    }
}
