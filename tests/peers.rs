//! Three rowgate instances behind HAProxy (Debian's package, `mode tcp`,
//! round robin) on loopback: clients through the balancer get their own
//! identity and rows whichever instance serves them, and a cancel request,
//! which the balancer sends to whichever instance is next, reaches the
//! instance running the query every time (`[peers]`: the key names its
//! instance, the others forward it).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{keys, pg, token, try_rowgate, RunningProxy, ISSUER};
use tokio_postgres::error::SqlState;

const INSTANCES: u16 = 3;

/// A port free on 127.0.0.1 right now (the instances must know each
/// other's addresses before any of them starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn haproxy_bin() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("haproxy"))
}

/// HAProxy in the foreground, killed when dropped.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Haproxy {
    /// Like the instances, HAProxy binds a port chosen before it runs and
    /// can lose it; if it exits without listening, try a fresh port.
    fn start(backends: &[u16]) -> Haproxy {
        const TRIES: usize = 5;
        for _ in 1..TRIES {
            if let Some(lb) = Haproxy::try_start(backends) {
                return lb;
            }
            eprintln!("haproxy exited without listening; trying a fresh port");
        }
        Haproxy::try_start(backends).expect("haproxy listens on one of five ports")
    }

    fn try_start(backends: &[u16]) -> Option<Haproxy> {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("rowgate-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    server rowgate{} 127.0.0.1:{p}\n", i + 1))
            .collect();
        let cfg = format!(
            "global\n    maxconn 512\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             frontend clients\n    bind 127.0.0.1:{port}\n    default_backend rowgates\n\
             backend rowgates\n    balance roundrobin\n{servers}"
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run haproxy (scripts/ensure-deps.sh installs it): {e}")
            });
        let mut lb = Haproxy {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if matches!(lb.child.try_wait(), Ok(Some(_))) {
                return None; // dropping `lb` removes its directory
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(lb)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Three instances of one config, differing only in `[peers] id`.
///
/// Each instance must know every peer's address before any of them
/// starts, so the ports are picked first and bound later; in between,
/// another process on a busy CI machine can take one (this happened). A
/// lost port stops the whole set, which is tried again on fresh ports.
async fn instances(db: &support::TestDb) -> Vec<RunningProxy> {
    const TRIES: usize = 5;
    for attempt in 1..=TRIES {
        match try_instances(db).await {
            Ok(set) => return set,
            Err(e) if attempt < TRIES => eprintln!("instances: {e}; trying fresh ports"),
            Err(e) => panic!("rowgate instances could not start in {TRIES} tries: {e}"),
        }
    }
    unreachable!("the last try returns or panics")
}

async fn try_instances(
    db: &support::TestDb,
) -> Result<Vec<RunningProxy>, rowgate::client::StartError> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < usize::from(INSTANCES) {
        // Probes close at once, so the kernel may hand out a port twice.
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let addresses: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} = \"127.0.0.1:{p}\"\n", i + 1))
        .collect();
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let config = format!(
            "[listen]\naddr = \"127.0.0.1:{port}\"\n\
             [upstream]\nurl = \"{}\"\npool_size = 2\n\
             [auth]\nissuer = \"{ISSUER}\"\npublic_key_file = \"{}\"\n\
             [peers]\nid = {}\n[peers.addresses]\n{addresses}",
            db.authenticator_url(),
            keys().public_pem_path.display(),
            i + 1
        );
        // Dropping `out` on error stops the instances already started.
        out.push(try_rowgate(&config).await?);
    }
    Ok(out)
}

async fn through(lb: &Haproxy, dbname: &str, user: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(lb.port)
        .user("anyone")
        .dbname(dbname)
        .password(token(user))
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_through_haproxy_keep_identity_and_cancels_find_their_instance() {
    let db = pg().new_database();
    db.admin_client()
        .await
        .batch_execute(
            "INSERT INTO user_messages (user_id, message) VALUES
             ('user_0', 'm0'), ('user_1', 'm1'), ('user_2', 'm2'),
             ('user_3', 'm3'), ('user_4', 'm4'), ('user_5', 'm5')",
        )
        .await
        .unwrap();
    let rowgates = instances(&db).await;
    let backends: Vec<u16> = rowgates.iter().map(|r| r.port()).collect();
    let lb = tokio::task::spawn_blocking(move || Haproxy::start(&backends))
        .await
        .unwrap();
    let dbname = rowgates[0].dbname().to_owned();

    // Six clients, two per instance (round robin), each its own identity
    // and only its own rows.
    let mut clients = Vec::new();
    for n in 0..6 {
        clients.push((n, through(&lb, &dbname, &format!("user_{n}")).await));
    }
    for (n, c) in &clients {
        let rows = c
            .query("select auth.user_id(), message from user_messages", &[])
            .await
            .unwrap();
        let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, [(format!("user_{n}"), format!("m{n}"))]);
    }
    // A connection goes back to its pool just after the reply reaches the
    // client, so the last client's may still be on its way back: wait for
    // it (HAProxy's readiness probe above took a round-robin turn too, so
    // which instance served the last client varies).
    for (i, r) in rowgates.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.idle_upstream() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(r.idle_upstream() > 0, "instance {} served no client", i + 1);
    }
    drop(clients);

    // Cancels: the balancer sends each to the next instance, never the one
    // running the query; it must be forwarded there, every time.
    let forwarded = rowgate::metrics::get("rowgate_cancels_forwarded_total", "peer");
    const ROUNDS: i64 = 6;
    for round in 0..ROUNDS {
        let c = through(&lb, &dbname, "user_1").await;
        let cancel = c.cancel_token();
        let started = Instant::now();
        let sleeper = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
        support::wait_until_running("select pg_sleep(30)").await;
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the cancel did not reach the query"))
            .unwrap();
        let err = result.expect_err("the query was cancelled");
        assert_eq!(
            err.code(),
            Some(&SqlState::QUERY_CANCELED),
            "round {round}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let now = rowgate::metrics::get("rowgate_cancels_forwarded_total", "peer");
    assert!(
        now >= forwarded + ROUNDS,
        "expected every cancel forwarded to a peer ({forwarded} -> {now})"
    );
}
