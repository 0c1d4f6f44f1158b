//! rowgate itself, started in-process inside the calling test's runtime.

use super::{keys, TestDb, ISSUER};
use std::net::SocketAddr;

/// A rowgate listening on 127.0.0.1, stopped when dropped.
pub struct RunningProxy {
    server: rowgate::Server,
    /// The startup database name that reaches the configured upstream.
    dbname: String,
}

impl RunningProxy {
    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The database name clients give to reach the (first) configured
    /// database: rowgate serves only configured names.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// A libpq conninfo string for psql (password passed separately).
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={} user=anyone sslmode=disable",
            self.port(),
            self.dbname
        )
    }

    /// Connects with tokio-postgres, `token` as the password.
    pub async fn connect(
        &self,
        token: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_as("anyone", token).await
    }

    /// Connects with tokio-postgres as `user` (a service's name, say) with
    /// `password`.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port())
            .user(user)
            .dbname(&self.dbname)
            .password(password)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// `127.0.0.1:PORT` of the `[http]` listener (`/sql`, `/v2`); panics
    /// when the config has no `[http]`.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.server
            .http_addr()
            .expect("the test config has an [http] section")
    }

    /// The server itself (shutdown, reload, metrics address).
    pub fn server(&self) -> &rowgate::Server {
        &self.server
    }

    /// Upstream connections idle in the pool.
    pub fn idle_upstream(&self) -> usize {
        self.server.idle_upstream_connections()
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.server.stop();
    }
}

/// A config for `db` verifying the test keys' tokens (PEM file), with extra
/// TOML lines appended to the `[upstream]` table.
pub fn proxy_config(db: &TestDb, pool_size: usize, upstream_extra: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
url = "{url}"
pool_size = {pool_size}
{upstream_extra}
[auth]
issuer = "{ISSUER}"
public_key_file = "{pem}"
leeway_secs = 5
"#,
        url = db.authenticator_url(),
        pem = keys().public_pem_path.display(),
    )
}

/// Starts rowgate with `config_toml`.
pub async fn rowgate(config_toml: &str) -> RunningProxy {
    try_rowgate(config_toml).await.expect("rowgate starts")
}

/// Starts rowgate with `config_toml`, or says why it could not: for tests
/// that must choose their ports before starting (peers that name each
/// other) and so can lose a port to another process in between.
pub async fn try_rowgate(config_toml: &str) -> Result<RunningProxy, rowgate::client::StartError> {
    if let Ok(filter) = std::env::var("ROWGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let config = rowgate::Config::from_toml(config_toml).expect("test config is valid");
    let dbname = config
        .upstream
        .as_ref()
        .and_then(|u| rowgate::upstream::Target::from_url(&u.url).ok())
        .map(|t| t.dbname)
        .or_else(|| config.databases.keys().find(|k| *k != "*").cloned())
        .unwrap_or_else(|| "app".into());
    let server = rowgate::start(config).await?;
    Ok(RunningProxy { server, dbname })
}
