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
    /// A PostgreSQL database behind rowgate and its pool: serves the
    /// startup `database` named in its URL. Optional when `[databases]`
    /// entries exist.
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    /// More databases by startup `database` name (`[databases.NAME]`), and
    /// the wildcard `[databases."*"]` whose URL holds `{dbname}`.
    #[serde(default)]
    pub databases: std::collections::BTreeMap<String, crate::upstream::databases::DatabaseConfig>,
    /// This instance's id and the other instances it forwards cancel
    /// requests to.
    #[serde(default)]
    pub peers: crate::client::peers::PeersConfig,
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
    /// The HTTP front door (Neon serverless driver: `/sql`, `/v2`); off
    /// unless present.
    #[serde(default)]
    pub http: Option<crate::http::HttpConfig>,
    /// `[[services]]`: legacy services that log in with a password and
    /// name each transaction's user in-band (docs/sidecar.md).
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// The admin console (`psql dbname=rowgate user=admin`).
    #[serde(default)]
    pub admin: crate::admin::AdminConfig,
}

/// One `[[services]]` entry: a service that logs in with a static password
/// (SCRAM-SHA-256) and switches the user identity per transaction with a
/// verified token (`SET LOCAL rowgate.token = '<jwt>'`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The startup `user` the service logs in as; also its name in logs.
    pub name: String,
    /// The password, in the config (or `ROWGATE_SERVICES_<NAME>_PASSWORD`).
    pub password: Option<crate::auth::Secret>,
    /// A file holding the password (one line; surrounding whitespace dropped).
    pub password_file: Option<PathBuf>,
    /// A SCRAM-SHA-256 verifier, as in `pg_authid`:
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub scram_verifier: Option<String>,
    /// Issuers whose tokens this service may present; default: every
    /// configured issuer.
    pub allowed_issuers: Option<Vec<String>>,
    /// Claims used as the identity of a transaction that names no user
    /// (e.g. a service account); without it such transactions run with no
    /// user identity at all, so RLS shows nothing.
    pub default_identity: Option<serde_json::Map<String, serde_json::Value>>,
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
    /// Also listen on a Unix-domain socket in this directory, named as
    /// PostgreSQL names its own (`.s.PGSQL.<port of addr>`), so libpq's
    /// `host=/that/dir` reaches rowgate. Such clients count as loopback.
    pub unix_socket_dir: Option<PathBuf>,
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
            unix_socket_dir: None,
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
    /// Builds the configuration from `ROWGATE_*` environment variables
    /// alone, for containers that have no config file.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_toml_with_env("", std::env::vars())
    }

    /// [`Config::load`] when `path` exists; otherwise the configuration
    /// from `ROWGATE_*` variables alone (a container without a file).
    pub fn load_or_env(path: &Path) -> Result<Config, ConfigError> {
        if path.exists() {
            return Self::load(path);
        }
        Self::from_env().map_err(|e| {
            ConfigError::Invalid(format!(
                "{} does not exist, and the ROWGATE_* environment variables alone do not make a configuration: {e}",
                path.display()
            ))
        })
    }

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
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        // Sorted, so several variables for one service apply in a fixed order.
        env.sort();
        for (name, value) in &env {
            apply_env_override(&mut doc, name, value)?;
        }
        crate::upstream::databases::inherit_overrides(&mut doc);
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
        crate::upstream::databases::validate(self).map_err(ConfigError::Invalid)?;
        self.peers.validate().map_err(ConfigError::Invalid)?;
        crate::auth::validate(&self.auth, &self.identity)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        crate::guard::Guard::new(&self.guard)
            .map_err(|e| ConfigError::Invalid(format!("[guard] {e}")))?;
        crate::guard::Sealer::new(&self.seal)
            .map_err(|e| ConfigError::Invalid(format!("[seal] {e}")))?;
        if let Some(http) = &self.http {
            http.validate().map_err(ConfigError::Invalid)?;
        }
        crate::auth::Services::new(&self.services, &self.auth)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
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
    "peers",
    "auth",
    "identity",
    "metrics",
    "guard",
    "seal",
    "session_state",
    "http",
    "admin",
];

/// Keys of a `[[services]]` entry settable as `ROWGATE_SERVICES_<NAME>_<KEY>`
/// (longest first, so `_PASSWORD_FILE` is not read as `_PASSWORD`).
const SERVICE_KEYS: &[&str] = &[
    "default_identity",
    "allowed_issuers",
    "scram_verifier",
    "password_file",
    "password",
];

/// An environment value as TOML: an integer, a boolean, an inline array or
/// table (`["a","b"]`, `{sub = "x"}`), else a string.
fn env_value(value: &str) -> Result<toml::Value, String> {
    if let Ok(i) = value.parse::<i64>() {
        return Ok(toml::Value::Integer(i));
    }
    if let Ok(b) = value.parse::<bool>() {
        return Ok(toml::Value::Boolean(b));
    }
    let trimmed = value.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let doc: toml::Table = format!("v = {value}")
            .parse()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        if let Some(v) = doc.get("v") {
            return Ok(v.clone());
        }
    }
    Ok(toml::Value::String(value.to_owned()))
}

/// `ROWGATE_SERVICES_BILLING_PASSWORD=...` sets `password` of the service
/// named `billing` (the name lower-cased), adding the service if the file
/// has none of that name. `DEFAULT_IDENTITY` may be JSON or a TOML inline
/// table; `ALLOWED_ISSUERS` a comma-separated list or an array.
fn apply_service_override(
    doc: &mut toml::Table,
    rest: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let bad = |why: String| {
        ConfigError::Invalid(format!(
            "ROWGATE_SERVICES_{}: {why}",
            rest.to_ascii_uppercase()
        ))
    };
    let Some((name, key)) = SERVICE_KEYS.iter().find_map(|k| {
        rest.strip_suffix(k)
            .and_then(|n| n.strip_suffix('_'))
            .filter(|n| !n.is_empty())
            .map(|n| (n, *k))
    }) else {
        return Err(bad(format!(
            "expected ROWGATE_SERVICES_<NAME>_<KEY> with KEY one of {}",
            SERVICE_KEYS.join(", ").to_ascii_uppercase()
        )));
    };
    let parsed = match key {
        "default_identity" if value.trim_start().starts_with('{') => {
            match serde_json::from_str::<serde_json::Value>(value) {
                Ok(json) => toml::Value::try_from(json).map_err(|e| bad(e.to_string()))?,
                Err(_) => env_value(value).map_err(bad)?,
            }
        }
        "allowed_issuers" if !value.trim_start().starts_with('[') => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        // Passwords and paths stay strings even when they look like numbers.
        "password" | "password_file" | "scram_verifier" => toml::Value::String(value.to_owned()),
        _ => env_value(value).map_err(bad)?,
    };
    let services = doc
        .entry("services")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(list) = services else {
        return Err(bad("services must be an array of tables".into()));
    };
    let existing = list.iter_mut().find_map(|s| match s {
        toml::Value::Table(t)
            if t.get("name")
                .and_then(|n| n.as_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
                == Some(name) =>
        {
            Some(t)
        }
        _ => None,
    });
    let table = match existing {
        Some(t) => t,
        None => {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String(name.to_owned()));
            list.push(toml::Value::Table(t));
            match list.last_mut() {
                Some(toml::Value::Table(t)) => t,
                _ => return Err(bad("internal error".into())),
            }
        }
    };
    table.insert(key.to_owned(), parsed);
    Ok(())
}

fn apply_env_override(doc: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix("ROWGATE_") else {
        return Ok(());
    };
    let lower = rest.to_ascii_lowercase();
    if let Some(service) = lower.strip_prefix("services_") {
        return apply_service_override(doc, service, value);
    }
    let Some((section, key)) = SECTIONS.iter().find_map(|s| {
        lower
            .strip_prefix(s)
            .and_then(|k| k.strip_prefix('_'))
            .map(|k| (*s, k))
    }) else {
        return Ok(());
    };
    let value = env_value(value).map_err(|why| ConfigError::Invalid(format!("{name}: {why}")))?;
    let table = doc
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = table {
        t.insert(key.to_owned(), value);
    }
    Ok(())
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
        let upstream = c.upstream.as_ref().unwrap();
        assert_eq!(upstream.pool_size, 10);
        assert_eq!(upstream.acquire_timeout, Duration::from_secs(5));
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
        assert_eq!(c.upstream.as_ref().unwrap().pool_size, 3);
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
    fn a_whole_config_with_services_comes_from_the_environment() {
        let env = [
            ("ROWGATE_UPSTREAM_URL", "postgres://a:b@127.0.0.1:5432/app"),
            ("ROWGATE_AUTH_ISSUER", "https://clerk.example.com"),
            ("ROWGATE_AUTH_HS256_SECRET", "dev-secret-dev-secret-dev-secret!"),
            ("ROWGATE_AUTH_AUTHORIZED_PARTIES", "[\"https://app.example.com\"]"),
            ("ROWGATE_LISTEN_UNIX_SOCKET_DIR", "/tmp/rg"),
            ("ROWGATE_SERVICES_ORDER_API_PASSWORD", "12345"),
            ("ROWGATE_SERVICES_ORDER_API_ALLOWED_ISSUERS", "https://clerk.example.com"),
            ("ROWGATE_SERVICES_ORDER_API_DEFAULT_IDENTITY", "{\"sub\": \"svc\"}"),
            ("ROWGATE_SERVICES_BILLING_SCRAM_VERIFIER", "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::from_toml_with_env("", env).unwrap();
        assert_eq!(
            c.listen.unix_socket_dir.as_deref(),
            Some(Path::new("/tmp/rg"))
        );
        let order = c.services.iter().find(|s| s.name == "order_api").unwrap();
        assert_eq!(
            order.password.as_ref().map(|p| p.0.as_str()),
            Some("12345"),
            "a password stays a string"
        );
        assert_eq!(
            order.allowed_issuers.as_deref(),
            Some(&["https://clerk.example.com".to_string()][..])
        );
        assert_eq!(
            order.default_identity.as_ref().and_then(|d| d.get("sub")),
            Some(&serde_json::json!("svc"))
        );
        assert!(c
            .services
            .iter()
            .any(|s| s.name == "billing" && s.scram_verifier.is_some()));
        let bad = [("ROWGATE_SERVICES_X_PASWORD".to_string(), "p".to_string())];
        let err = Config::from_toml_with_env(MINIMAL, bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROWGATE_SERVICES_<NAME>_<KEY>"), "{err}");
    }

    #[test]
    fn services_in_the_file_are_checked() {
        let with = format!("{MINIMAL}\n[[services]]\nname = \"billing\"\npassword = \"pw\"\n");
        let c = Config::from_toml(&with).unwrap();
        assert_eq!(c.services[0].name, "billing");
        assert!(
            !format!("{c:?}").contains("\"pw\""),
            "the password is not in Debug"
        );
        let err = Config::from_toml(&with.replace("password = \"pw\"", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of password"), "{err}");
        // An env override changes the file's service of that name.
        let env = [(
            "ROWGATE_SERVICES_BILLING_PASSWORD".to_string(),
            "new".to_string(),
        )];
        let c = Config::from_toml_with_env(&with, env).unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!(
            c.services[0].password.as_ref().map(|p| p.0.as_str()),
            Some("new")
        );
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
