//! TLS on both sides: clients to rowgate (psql with sslmode=require and
//! verify-full), and rowgate to an upstream with ssl=on (require,
//! verify-full with a CA file, and a clear error when verification fails).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{pg, token};

/// A self-signed certificate for `localhost`/127.0.0.1, readable by the
/// postgres server (which refuses a key others can read).
fn make_cert(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rowgate-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A CA, and a server certificate it signs (webpki refuses a CA
    // certificate used as the server's own).
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rowgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    if unsafe { libc::geteuid() } == 0 {
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
    Command::new("chmod").arg("755").arg(&dir).status().unwrap();
    Command::new("chmod")
        .arg("600")
        .arg(dir.join("key.pem"))
        .status()
        .unwrap();
    Command::new("chmod")
        .arg("644")
        .arg(dir.join("cert.pem"))
        .status()
        .unwrap();
    dir
}

async fn enable_server_ssl(dir: &Path) {
    let admin = support::connect(&pg().superuser_url("postgres")).await;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    // The reload is asynchronous; wait until new connections get TLS.
    for _ in 0..50 {
        let on: String = admin.query_one("show ssl", &[]).await.unwrap().get(0);
        if on == "on" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("ssl did not turn on");
}

fn config(db: &support::TestDb, upstream_url: &str, dir: &Path, extra_upstream: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
[upstream]
url = "{upstream_url}"
pool_size = 2
{extra_upstream}
[auth]
issuer = "{iss}"
public_key_file = "{pem}"
"#,
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
        iss = support::ISSUER,
        pem = support::keys().public_pem_path.display(),
    )
    .replace("{db}", db.name())
}

fn psql_ok(conninfo: String, sql: &'static str) -> String {
    let out = support::psql(&conninfo, &token("user_alice"), sql);
    assert!(
        out.status.success(),
        "{conninfo}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides() {
    let dir = make_cert("both");
    enable_server_ssl(&dir).await;
    let db = pg().new_database();
    let url = format!(
        "postgres://authenticator:{}@localhost:{}/{}?sslmode=require",
        support::AUTHENTICATOR_PASSWORD,
        pg().port(),
        db.name()
    );
    let proxy = support::rowgate(&config(&db, &url, &dir, "")).await;
    let port = proxy.port();
    let dbname = proxy.dbname().to_owned();
    let dbname2 = dbname.clone();

    // Client side: encrypted with sslmode=require, and verified with
    // verify-full against the certificate.
    let ssl_used = tokio::task::spawn_blocking(move || {
        psql_ok(
            format!("host=127.0.0.1 port={port} dbname={dbname} user=u sslmode=require"),
            "select auth.user_id()",
        )
    })
    .await
    .unwrap();
    assert_eq!(ssl_used, "user_alice");
    let root = dir.join("ca.pem");
    let verified = tokio::task::spawn_blocking(move || {
        psql_ok(
            format!(
                "host=localhost port={port} dbname={dbname2} user=u sslmode=verify-full sslrootcert={}",
                root.display()
            ),
            "select auth.user_id()",
        )
    })
    .await
    .unwrap();
    assert_eq!(verified, "user_alice");

    // Upstream side: the server sees rowgate's connection encrypted.
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let row = alice
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "upstream connection is not encrypted"
    );

    // verify-full with the right CA works; with the web roots it fails with
    // a clear error instead of connecting unverified.
    let good = url
        .to_string()
        .replace("sslmode=require", "sslmode=verify-full");
    let ca = format!("tls_ca_file = \"{}\"", dir.join("ca.pem").display());
    let verified_proxy = support::rowgate(&config(&db, &good, &dir, &ca)).await;
    let c = verified_proxy.connect(&token("user_bob")).await.unwrap();
    let who: Option<String> = c
        .query_one("select auth.user_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who.as_deref(), Some("user_bob"));
    let unverified_proxy = support::rowgate(&config(&db, &good, &dir, "")).await;
    let err = unverified_proxy
        .connect(&token("user_bob"))
        .await
        .unwrap_err();
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("upstream") && msg.contains("certificate"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// psql's sslmode=verify-full against `ca`: Ok(user id) or the error.
fn psql_verified(port: u16, dbname: &str, ca: &Path) -> Result<String, String> {
    let conninfo = format!(
        "host=localhost port={port} dbname={dbname} user=u sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    let out = support::psql(&conninfo, &token("user_alice"), "select auth.user_id()");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_a_renewed_certificate_while_clients_stay() {
    let (dir, renewed) = (make_cert("old"), make_cert("renewed"));
    let db = pg().new_database();
    let url = format!(
        "postgres://authenticator:{}@127.0.0.1:{}/{}",
        support::AUTHENTICATOR_PASSWORD,
        pg().port(),
        db.name()
    );
    let text = config(&db, &url, &dir, "");
    let proxy = support::rowgate(&text).await;
    let (port, dbname) = (proxy.port(), proxy.dbname().to_owned());
    let connected = proxy.connect(&token("user_bob")).await.unwrap();
    let (d, c) = (dbname.clone(), renewed.join("ca.pem"));
    let before = tokio::task::spawn_blocking(move || psql_verified(port, &d, &c))
        .await
        .unwrap();
    assert!(
        before.is_err(),
        "the renewed CA verified the old certificate"
    );

    // The certificate is renewed in place (as cert-manager or certbot do),
    // then rowgate is told to reload.
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(renewed.join(f), dir.join(f)).unwrap();
    }
    let summary = proxy
        .server()
        .reload(rowgate::Config::from_toml(&text).unwrap())
        .await
        .expect("reload accepted");
    assert!(summary.contains("reloaded"), "{summary}");
    let (d, c) = (dbname.clone(), renewed.join("ca.pem"));
    let after = tokio::task::spawn_blocking(move || psql_verified(port, &d, &c))
        .await
        .unwrap();
    assert_eq!(
        after.as_deref(),
        Ok("user_alice"),
        "new clients get the renewed certificate"
    );
    connected
        .simple_query("SELECT 1")
        .await
        .expect("a client connected before the reload stays");

    // A broken certificate file keeps the one in force, and says why.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let e = proxy
        .server()
        .reload(rowgate::Config::from_toml(&text).unwrap())
        .await
        .unwrap_err();
    assert!(e.contains("cert"), "{e}");
    let (d, c) = (dbname, renewed.join("ca.pem"));
    let still = tokio::task::spawn_blocking(move || psql_verified(port, &d, &c))
        .await
        .unwrap();
    assert_eq!(still.as_deref(), Ok("user_alice"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&renewed);
}
