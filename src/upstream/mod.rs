//! The upstream side: where the PostgreSQL server is ([`Target`]), how one
//! connection to it is opened and authenticated ([`conn`]), TLS with SNI
//! ([`tls`]), and the pool that lends connections to client transactions
//! ([`pool`]).

pub mod conn;
pub mod databases;
pub mod pool;
pub mod tls;

pub use conn::{ServerConn, UpstreamError};
pub use databases::{Database, Databases};
pub use pool::{Pool, PoolError, PooledConn};

use percent_encoding::percent_decode_str;

/// How to use TLS to the upstream, with libpq's names and meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// TLS if the server offers it, without verification (libpq's default).
    Prefer,
    /// TLS always, without certificate verification.
    Require,
    /// TLS, certificate chain verified, host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified (use this for Neon).
    VerifyFull,
}

/// Where and as whom rowgate connects upstream, parsed from
/// `postgres://user:password@host:port/dbname?sslmode=...`.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name or IP address; also the TLS server name (SNI), which Neon
    /// uses to route to the right endpoint.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login role (an authenticator role, not a superuser).
    pub user: String,
    /// Password for SCRAM, md5 or cleartext authentication.
    pub password: Option<String>,
    /// Database name.
    pub dbname: String,
    /// TLS policy.
    pub sslmode: SslMode,
    /// `options` startup parameter passed through (e.g. Neon's
    /// `endpoint=...` when SNI is not available).
    pub options: Option<String>,
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn from_url(url: &str) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            return Err(format!(
                "scheme must be postgres:// or postgresql://, not {}://",
                u.scheme()
            ));
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = decode(u.username());
        if user.is_empty() {
            return Err("the URL has no user name (postgres://USER:password@host/db)".into());
        }
        let dbname = decode(u.path().trim_start_matches('/'));
        let mut t = Target {
            host,
            port: u.port().unwrap_or(5432),
            dbname: if dbname.is_empty() {
                user.clone()
            } else {
                dbname
            },
            user,
            password: u.password().map(decode),
            sslmode: SslMode::Prefer,
            options: None,
        };
        for (k, v) in u.query_pairs() {
            match &*k {
                "sslmode" => {
                    t.sslmode = match &*v {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => return Err(format!("unknown sslmode {other:?}")),
                    }
                }
                "options" => t.options = Some(v.into_owned()),
                // libpq parameters that change nothing for rowgate.
                "channel_binding" | "connect_timeout" | "application_name" => {}
                other => return Err(format!("unsupported URL parameter {other:?}")),
            }
        }
        Ok(t)
    }

    /// `host:port` for logs (never includes the password).
    pub fn display_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_like_libpq() {
        let t = Target::from_url(
            "postgres://authenticator:s%40cret@ep-x.eu.aws.neon.tech/app?sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(t.host, "ep-x.eu.aws.neon.tech");
        assert_eq!(t.port, 5432);
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.dbname, "app");
        assert_eq!(t.sslmode, SslMode::VerifyFull);
        let t = Target::from_url("postgresql://u@127.0.0.1:6543").unwrap();
        assert_eq!((t.port, t.dbname.as_str()), (6543, "u"));
        assert!(Target::from_url("mysql://u@h/db").is_err());
        assert!(Target::from_url("postgres://h/db").is_err());
        assert!(Target::from_url("postgres://u@h/db?sslmode=maybe").is_err());
    }
}
