//! Operating rowgate from a test: the admin console, `/metrics` and the
//! probes over HTTP, and clients whose FATAL error the test can see.

use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The admin console password in [`ops_config`].
pub const ADMIN_PASSWORD: &str = "console-pw";

/// `[admin]` and `[metrics]` sections for a proxy config.
pub fn ops_config() -> String {
    format!("[admin]\npassword = \"{ADMIN_PASSWORD}\"\n[metrics]\naddr = \"127.0.0.1:0\"\n")
}

/// `GET path` on `addr`; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics listener");
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut raw),
    )
    .await
    .expect("HTTP reply within 10 s")
    .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// Logs in to the admin console with tokio-postgres.
pub async fn console(
    port: u16,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("admin")
        .dbname("rowgate")
        .password(password)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Rows of a console command, each a column -> value map.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<HashMap<String, String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// A client whose connection's end (the FATAL error rowgate sent, if
/// any) the test can await.
pub struct Watched {
    /// The client.
    pub client: tokio_postgres::Client,
    /// The SQLSTATE and message the connection ended with.
    pub ended: tokio::sync::oneshot::Receiver<Option<(String, String)>>,
}

/// Connects to rowgate on `port` and database `dbname` with `token`,
/// watching how the connection ends.
pub async fn connect_watched(
    port: u16,
    dbname: &str,
    token: &str,
) -> Result<Watched, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("anyone")
        .dbname(dbname)
        .password(token)
        .connect(tokio_postgres::NoTls)
        .await?;
    let (tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let end = conn.await.err().and_then(|e| {
            e.as_db_error()
                .map(|d| (d.code().code().to_string(), d.message().to_string()))
        });
        let _ = tx.send(end);
    });
    Ok(Watched { client, ended })
}

/// The SQLSTATE of a failed statement or connect.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The server's message of a failed statement or connect (tokio-postgres
/// prints only "db error" for it).
pub fn text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}
