//! rowgate's configuration: one TOML file, with `ROWGATE_SECTION_KEY`
//! environment variables overriding single values (for containers and
//! secrets). Each section belongs to the module that uses it; this file
//! only assembles them and explains mistakes.

use crate::auth::{AuthConfig, IdentityConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The one PostgreSQL server behind rowgate and its pool.
    pub upstream: UpstreamConfig,
    /// How client passwords (JWTs) are verified.
    pub auth: AuthConfig,
    /// Which verified claims become which transaction-local settings.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Which client statements are refused.
    #[serde(default)]
    pub guard: crate::guard::GuardConfig,
    /// Sealed identity that the database verifies.
    #[serde(default)]
    pub seal: crate::guard::SealConfig,
    /// Session state that cannot follow a client between pooled connections.
    #[serde(default)]
    pub session_state: SessionStateConfig,
    /// The admin console (`psql dbname=rowgate user=admin`).
    #[serde(default)]
    pub admin: crate::admin::AdminConfig,
}

/// What to do with a statement that creates session state.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StatePolicy {
    /// Refuse it (SQLSTATE 0A000) with advice.
    #[default]
    Reject,
    /// Let it run and keep the client on its connection until it
    /// disconnects; the connection is then reset with DISCARD ALL.
    Pin,
}

/// `[session_state]`: temporary tables, LISTEN, session advisory locks,
/// WITH HOLD cursors and SQL-level PREPARE live on the database connection,
/// which rowgate shares between clients transaction by transaction.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStateConfig {
    /// `CREATE TEMP TABLE`, `SELECT ... INTO TEMP`.
    #[serde(default)]
    pub temp_tables: StatePolicy,
    /// `LISTEN`.
    #[serde(default)]
    pub listen: StatePolicy,
    /// `pg_advisory_lock` and the other session-level advisory locks.
    #[serde(default)]
    pub advisory_locks: StatePolicy,
    /// `DECLARE ... WITH HOLD`.
    #[serde(default)]
    pub hold_cursors: StatePolicy,
    /// SQL-level `PREPARE`/`EXECUTE`.
    #[serde(default)]
    pub sql_prepare: StatePolicy,
}

impl SessionStateConfig {
    /// The policy for one kind of session state.
    pub fn policy(&self, state: crate::guard::SessionState) -> StatePolicy {
        use crate::guard::SessionState::*;
        match state {
            TempTable => self.temp_tables,
            Listen => self.listen,
            AdvisoryLock => self.advisory_locks,
            HoldCursor => self.hold_cursors,
            SqlPrepare => self.sql_prepare,
        }
    }
}

/// `[listen]`: the client-facing side.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to listen on, e.g. `127.0.0.1:6432`.
    #[serde(default = "default_listen_addr")]
    pub addr: String,
    /// PEM certificate chain for client TLS; with `tls_key_file`, SSLRequest
    /// is answered with `S`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for client TLS.
    pub tls_key_file: Option<PathBuf>,
    /// Accept a JWT over unencrypted TCP from non-loopback peers. Off by
    /// default: a bearer token on the wire in clear text can be replayed.
    #[serde(default)]
    pub allow_plaintext_password: bool,
    /// Close clients that hold no transaction and send nothing for this
    /// long (`0s` = never).
    #[serde(default, with = "duration")]
    pub client_idle_timeout: Duration,
    /// Close clients that keep a transaction open without sending anything
    /// for this long, rolling the transaction back (`0s` = never). A client
    /// idle in a transaction holds a pooled connection away from everyone.
    #[serde(default, with = "duration")]
    pub idle_in_transaction_timeout: Duration,
    /// Most client connections open at once; more are refused with
    /// `53300 too many connections`.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// How long the startup phase (TLS, startup packet, password and its
    /// verification) may take before the connection is closed.
    #[serde(default = "default_login_timeout", with = "duration")]
    pub login_timeout: Duration,
    /// Largest message a client may send after authentication (bytes).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Most connections one user (`sub`) may hold at once (`0` = no cap).
    #[serde(default)]
    pub max_connections_per_user: usize,
    /// Transactions one user (`sub`) may start per second, as a token
    /// bucket with a burst of the same size (`0` = no limit).
    #[serde(default)]
    pub max_transactions_per_second_per_user: u32,
    /// After SIGTERM, how long rowgate keeps accepting clients (while
    /// `/readyz` already says unready) before it stops: Kubernetes keeps
    /// routing to a terminating pod for a few seconds.
    #[serde(default, with = "duration")]
    pub shutdown_accept_delay: Duration,
    /// After SIGTERM, how long running transactions may take to finish
    /// before the clients still connected are closed.
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            addr: default_listen_addr(),
            tls_cert_file: None,
            tls_key_file: None,
            allow_plaintext_password: false,
            client_idle_timeout: Duration::ZERO,
            idle_in_transaction_timeout: Duration::ZERO,
            max_client_connections: default_max_client_connections(),
            login_timeout: default_login_timeout(),
            max_message_size: default_max_message_size(),
            max_connections_per_user: 0,
            max_transactions_per_second_per_user: 0,
            shutdown_accept_delay: Duration::ZERO,
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_max_client_connections() -> usize {
    10_000
}
fn default_login_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_message_size() -> usize {
    64 << 20
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_listen_addr() -> String {
    "127.0.0.1:6432".into()
}

/// `[upstream]`: the PostgreSQL server and the pool of connections to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `postgres://user:password@host:port/dbname?sslmode=...`.
    pub url: String,
    /// Most upstream connections open at once, shared by all clients.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a client waits for a free connection before an error.
    #[serde(default = "default_acquire_timeout", with = "duration")]
    pub acquire_timeout: Duration,
    /// How long opening one upstream connection may take (Neon cold starts
    /// take a few seconds).
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Idle pooled connections older than this are closed (`0s` = never).
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Pooled connections are closed after this age (`0s` = never).
    #[serde(default = "default_max_lifetime", with = "duration")]
    pub max_lifetime: Duration,
    /// PEM CA bundle for `sslmode=verify-ca`/`verify-full` instead of the
    /// built-in web roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Connections kept open even when idle, so the first clients after a
    /// quiet period do not pay for connecting (Neon cold starts).
    #[serde(default)]
    pub min_idle: usize,
    /// Prepared statements kept per upstream connection (least recently
    /// used are closed beyond this).
    #[serde(default = "default_max_prepared")]
    pub max_prepared_statements: usize,
}

fn default_pool_size() -> usize {
    10
}
fn default_acquire_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_prepared() -> usize {
    1000
}

/// `[metrics]`: where Prometheus can scrape counters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for a plain HTTP `/metrics` endpoint; none by default.
    pub addr: Option<String>,
}

/// A configuration that could not be loaded, explained for a person.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong shape.
    #[error("{0}")]
    Parse(String),
    /// A value that parses but cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path`, applies `ROWGATE_*` overrides from the environment and
    /// checks the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, std::env::vars())
    }

    /// Parses TOML text without looking at the environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, std::iter::empty())
    }

    /// Parses TOML text, then applies overrides named `ROWGATE_<SECTION>_<KEY>`
    /// (e.g. `ROWGATE_UPSTREAM_URL`, `ROWGATE_UPSTREAM_POOL_SIZE`,
    /// `ROWGATE_AUTH_HS256_SECRET`). Values that parse as integers or
    /// booleans become those; everything else is a string.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        for (name, value) in env {
            apply_env_override(&mut doc, &name, &value);
        }
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work, with advice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.tls_cert_file.is_some() != self.listen.tls_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "[listen] tls_cert_file and tls_key_file must be set together".into(),
            ));
        }
        if self.upstream.min_idle > self.upstream.pool_size {
            return Err(ConfigError::Invalid(
                "[upstream] min_idle cannot be larger than pool_size".into(),
            ));
        }
        if self.upstream.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "[upstream] pool_size must be at least 1".into(),
            ));
        }
        crate::upstream::Target::from_url(&self.upstream.url)
            .map_err(|e| ConfigError::Invalid(format!("[upstream] url: {e}")))?;
        crate::auth::validate(&self.auth, &self.identity)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        crate::guard::Guard::new(&self.guard)
            .map_err(|e| ConfigError::Invalid(format!("[guard] {e}")))?;
        crate::guard::Sealer::new(&self.seal)
            .map_err(|e| ConfigError::Invalid(format!("[seal] {e}")))?;
        self.admin
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[admin] {e}")))?;
        if self.listen.max_client_connections == 0 {
            return Err(ConfigError::Invalid(
                "[listen] max_client_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

const SECTIONS: &[&str] = &[
    "listen",
    "upstream",
    "auth",
    "identity",
    "metrics",
    "guard",
    "seal",
    "session_state",
    "admin",
];

fn apply_env_override(doc: &mut toml::Table, name: &str, value: &str) {
    let Some(rest) = name.strip_prefix("ROWGATE_") else {
        return;
    };
    let lower = rest.to_ascii_lowercase();
    let Some((section, key)) = SECTIONS.iter().find_map(|s| {
        lower
            .strip_prefix(s)
            .and_then(|k| k.strip_prefix('_'))
            .map(|k| (*s, k))
    }) else {
        return;
    };
    let value = if let Ok(i) = value.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = value.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(value.to_owned())
    };
    let table = doc
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = table {
        t.insert(key.to_owned(), value);
    }
}

/// Serde helpers for durations written as `"5s"`, `"250ms"`, `"2m"`, `"1h"`
/// or a bare number of seconds.
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"` or `"5"` (seconds).
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"5s\" or \"250ms\""))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            other => return Err(format!("invalid duration unit {other:?} in {s:?}")),
        };
        Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
    }

    /// Deserializes a duration from a string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
addr = "127.0.0.1:6432"
[upstream]
url = "postgres://authenticator:secret@127.0.0.1:5432/app"
pool_size = 10
[auth]
issuer = "https://clerk.example.com"
hs256_secret = "dev-secret-dev-secret-dev-secret!"
leeway_secs = 5
"#;

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.listen.addr, "127.0.0.1:6432");
        assert_eq!(c.upstream.pool_size, 10);
        assert_eq!(c.upstream.acquire_timeout, Duration::from_secs(5));
    }

    #[test]
    fn environment_overrides_file_values() {
        let env = vec![
            ("ROWGATE_UPSTREAM_POOL_SIZE".to_string(), "3".to_string()),
            (
                "ROWGATE_LISTEN_ADDR".to_string(),
                "127.0.0.1:7000".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::from_toml_with_env(MINIMAL, env).unwrap();
        assert_eq!(c.upstream.pool_size, 3);
        assert_eq!(c.listen.addr, "127.0.0.1:7000");
    }

    #[test]
    fn mistakes_are_explained() {
        let err = Config::from_toml(&MINIMAL.replace("pool_size = 10", "pool_size = 0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_size must be at least 1"), "{err}");
        let err = Config::from_toml(&MINIMAL.replace("pool_size", "pool_sise"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_sise"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration::parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration::parse("5").unwrap(), Duration::from_secs(5));
        assert!(duration::parse("5 parsecs").is_err());
    }
}
