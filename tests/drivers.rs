//! Real drivers through rowgate: each runs the same concurrent workload
//! (6 clients, each its own user) once directly against PostgreSQL and once
//! through a rowgate pool of 2, as a subprocess. Both runs must succeed and
//! print exactly the same lines, and no client may ever see another's
//! identity or rows.
//!
//! The driver programs are under `tests/drivers/`: Python (psycopg 3 with
//! and without server-side prepare, asyncpg), Node (`pg`), Java (JDBC). They
//! take `HOST PORT DBNAME ITERATIONS MODE ... user_id:login:password...`;
//! in `direct` mode each client sets `app.user_id` itself, in `proxy` mode
//! its password is a token and rowgate sets it. pgbench runs in all three
//! query modes and must process every transaction with none failed.
//!
//! What they need is installed by `scripts/ensure-deps.sh`; a missing
//! runtime fails the test with that advice rather than skipping it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::{pg, proxy_config, rowgate, token, TestDb};

/// Concurrent clients per run; the pool is smaller on purpose.
const CLIENTS: usize = 6;
const POOL: usize = 2;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn missing(what: &str) -> ! {
    panic!("{what} is missing: run scripts/ensure-deps.sh (it installs what the driver tests need)")
}

fn venv_python() -> PathBuf {
    let py = root().join("target/driver-venv/bin/python");
    if !py.is_file() {
        missing(&format!("{} (psycopg and asyncpg)", py.display()));
    }
    py
}

fn on_path(cmd: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| missing(cmd))
}

/// A database with the workload's tables: `items` under RLS (one owner per
/// row, seeded with rows of every client and of a user no client is), and
/// one plain table per client for COPY (COPY FROM refuses RLS tables).
async fn workload_db() -> TestDb {
    let db = pg().new_database();
    let mut sql = String::from(
        "create table items (
             id bigint generated always as identity primary key,
             owner text not null default auth.user_id(),
             n int not null,
             label text not null,
             data bytea,
             price numeric(10, 2),
             meta jsonb,
             created date);
         alter table items enable row level security;
         alter table items force row level security;
         create policy own on items using (owner = (select auth.user_id()))
             with check (owner = (select auth.user_id()));
         grant select, insert, update, delete on items to rowgate_user;
         insert into items (owner, n, label) values ('user_zz', -1, 'nobody may see this');
         create table shape (id int, v text);
         insert into shape values (1, 'one'), (2, 'three');
         grant select on shape to rowgate_user;
         alter table shape owner to rowgate_user;",
    );
    for k in 0..CLIENTS {
        sql.push_str(&format!(
            "insert into items (owner, n, label, price) values ('user_c{k}', -100, 'seed', 1.5);
             create table copy_c{k} (n int, label text);
             grant select, insert, update, delete, truncate on copy_c{k} to rowgate_user;"
        ));
    }
    db.admin_client().await.batch_execute(&sql).await.unwrap();
    db
}

/// `user_id:login:password` for each client.
fn clients(direct: bool) -> Vec<String> {
    (0..CLIENTS)
        .map(|k| {
            let user = format!("user_c{k}");
            if direct {
                format!(
                    "{user}:{}:{}",
                    support::AUTHENTICATOR,
                    support::AUTHENTICATOR_PASSWORD
                )
            } else {
                format!("{user}:anyone:{}", token(&user))
            }
        })
        .collect()
}

/// Runs a driver program with a time limit; the child is killed if the
/// limit passes or the test panics.
async fn run(cmd: tokio::process::Command, what: &str) -> Output {
    let started = std::time::Instant::now();
    let out = run_inner(cmd, what).await;
    eprintln!("{what}: {:?}", started.elapsed());
    out
}

async fn run_inner(mut cmd: tokio::process::Command, what: &str) -> Output {
    cmd.kill_on_drop(true);
    let child = cmd.output();
    match tokio::time::timeout(Duration::from_secs(120), child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{what}: could not start: {e}"),
        Err(_) => panic!("{what}: no result after 120 s (a hang through rowgate?)"),
    }
}

/// Runs `program` directly and through rowgate at once, and compares.
async fn differential(
    name: &str,
    iterations: usize,
    program: impl Fn(&str, u16, &str, &str, &[String]) -> tokio::process::Command,
) {
    let (direct_db, proxied_db) = (workload_db().await, workload_db().await);
    // Parity with PostgreSQL, DO blocks included: the strict guard refuses
    // those (tests/guard_adversarial.rs covers it), so run under standard.
    let config = proxy_config(&proxied_db, POOL, "") + "[guard]\nprofile = \"standard\"\n";
    let proxy = rowgate(&config).await;
    let iters = iterations.to_string();
    let mut direct = program(
        "direct",
        direct_db.port(),
        direct_db.name(),
        &iters,
        &clients(true),
    );
    let mut proxied = program(
        "proxy",
        proxy.port(),
        proxy.dbname(),
        &iters,
        &clients(false),
    );
    direct.current_dir(root());
    proxied.current_dir(root());
    let started = std::time::Instant::now();
    let (what_direct, what_proxied) = (
        format!("{name} directly"),
        format!("{name} through rowgate"),
    );
    let (want, got) = tokio::join!(run(direct, &what_direct), run(proxied, &what_proxied));
    eprintln!(
        "{name}: both runs took {:?}, {} lines of output",
        started.elapsed(),
        want.stdout.iter().filter(|&&b| b == b'\n').count()
    );
    if std::env::var_os("DRIVERS_DUMP").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&got.stdout));
    }
    for (side, out) in [("directly", &want), ("through rowgate", &got)] {
        assert!(
            out.status.success(),
            "{name} {side} failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stdout, 40),
            tail(&out.stderr, 40)
        );
    }
    let (want, got) = (
        String::from_utf8_lossy(&want.stdout),
        String::from_utf8_lossy(&got.stdout),
    );
    assert_isolated(name, &got);
    assert!(
        want.lines().count() > CLIENTS * iterations,
        "{name}: the workload printed too little:\n{want}"
    );
    if want != got {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
        let at = w
            .iter()
            .zip(&g)
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(g.len()));
        panic!(
            "{name}: through rowgate the output differs from PostgreSQL's at line {at}:\n  directly:        {}\n  through rowgate: {}",
            w.get(at).unwrap_or(&"<end>"),
            g.get(at).unwrap_or(&"<end>")
        );
    }
}

/// Every line a client printed names no other client's user.
fn assert_isolated(name: &str, out: &str) {
    for line in out.lines() {
        let Some(k) = line
            .strip_prefix('c')
            .and_then(|l| l.split(' ').next())
            .and_then(|k| k.parse::<usize>().ok())
        else {
            continue;
        };
        for j in (0..CLIENTS).filter(|&j| j != k) {
            assert!(
                !line.contains(&format!("user_c{j}")),
                "{name}: client {k} saw user_c{j}: {line}"
            );
        }
        assert!(
            !line.contains("user_zz"),
            "{name}: client {k} saw user_zz's row: {line}"
        );
    }
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn python(script: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(venv_python());
    cmd.arg(root().join("tests/drivers/python").join(script));
    cmd
}

/// psycopg with its bundled libpq (17: statements are closed with Close
/// messages), or with `PSYCOPG_IMPL=python` and the system's libpq (15 on
/// Debian bookworm: psycopg closes them with `DEALLOCATE name`).
fn psycopg(
    prepare: &'static str,
    system_libpq: bool,
) -> impl Fn(&str, u16, &str, &str, &[String]) -> tokio::process::Command {
    move |mode, port, db, iters, clients| {
        let mut cmd = python("psycopg_workload.py");
        cmd.args(["127.0.0.1", &port.to_string(), db, iters, mode, prepare])
            .args(clients);
        if system_libpq {
            cmd.env("PSYCOPG_IMPL", "python");
        }
        cmd
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_simple() {
    differential(
        "psycopg (no server-side prepare)",
        20,
        psycopg("simple", false),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared() {
    differential(
        "psycopg (prepare_threshold=0)",
        20,
        psycopg("prepare", false),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_system_libpq() {
    differential(
        "psycopg (prepare_threshold=0, system libpq)",
        8,
        psycopg("prepare", true),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    differential("asyncpg", 20, |mode, port, db, iters, clients| {
        let mut cmd = python("asyncpg_workload.py");
        cmd.args(["127.0.0.1", &port.to_string(), db, iters, mode])
            .args(clients);
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let node = on_path("node");
    let dir = root().join("tests/drivers/node");
    if !dir.join("node_modules/pg/package.json").is_file() {
        missing("node-postgres (tests/drivers/node/node_modules/pg)");
    }
    differential("node-postgres", 20, |mode, port, db, iters, clients| {
        let mut cmd = tokio::process::Command::new(&node);
        cmd.arg(dir.join("workload.js"))
            .args(["127.0.0.1", &port.to_string(), db, iters, mode])
            .args(clients);
        cmd
    })
    .await;
}

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc() {
    let java = on_path("java");
    if !Path::new(JDBC_JAR).is_file() {
        missing(&format!("{JDBC_JAR} (libpostgresql-jdbc-java)"));
    }
    let program = root().join("tests/drivers/java/JdbcWorkload.java");
    differential("JDBC", 15, |mode, port, db, iters, clients| {
        let mut cmd = tokio::process::Command::new(&java);
        cmd.args([
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            JDBC_JAR,
        ])
        .arg(&program)
        .args(["127.0.0.1", &port.to_string(), db, iters, mode])
        .args(clients);
        cmd
    })
    .await;
}

// ---------------------------------------------------------------------------
// pgbench
// ---------------------------------------------------------------------------

const PGBENCH_TRANSACTIONS: usize = 200;

/// `pgbench -i` directly as the superuser, then the tables opened to the
/// role rowgate logs in as.
async fn pgbench_db() -> TestDb {
    let db = pg().new_database();
    let pgbench = pgbench_path();
    let url = db.admin_url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(pgbench)
            .args(["-i", "-q", "-s", "1", &url])
            .output()
    })
    .await
    .unwrap()
    .expect("pgbench -i runs");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        tail(&out.stderr, 20)
    );
    db.admin_client()
        .await
        .batch_execute(
            "grant select, insert, update, delete on all tables in schema public to rowgate_user",
        )
        .await
        .unwrap();
    db
}

fn pgbench_path() -> PathBuf {
    // The server's own, else the system's: the npm builds of other
    // versions (scripts/pg-versions.sh) ship no pgbench, and any pgbench
    // speaks to any server.
    let own = pg().bin_dir().join("pgbench");
    if own.is_file() {
        return own;
    }
    let system = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("pgbench")),
        )
        .find(|p| p.is_file());
    system.unwrap_or_else(|| missing(&format!("{} (PostgreSQL's pgbench)", own.display())))
}

/// Runs pgbench with `-M mode`; returns (transactions processed, failed).
async fn pgbench_run(
    mode: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    what: &str,
) -> String {
    let mut cmd = tokio::process::Command::new(pgbench_path());
    cmd.args([
        "-n",
        "-M",
        mode,
        "-c",
        &CLIENTS.to_string(),
        "-j",
        &CLIENTS.to_string(),
    ])
    .args(["-t", &PGBENCH_TRANSACTIONS.to_string()])
    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, db])
    .env("PGPASSWORD", password)
    .env("PGSSLMODE", "disable");
    let out = run(cmd, what).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        tail(&out.stderr, 30)
    );
    let processed = stdout
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .unwrap_or_else(|| panic!("{what}: no transaction count in:\n{stdout}"));
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or("number of failed transactions: 0");
    format!("{processed}\n{failed}")
}

/// The TPC-B-like invariant: every delta was applied once to an account,
/// its teller and its branch, and logged once in history.
async fn pgbench_invariant(db: &TestDb) -> (i64, i64, i64, i64, i64) {
    let r = db
        .admin_client()
        .await
        .query_one(
            "select (select sum(abalance) from pgbench_accounts)::int8, \
                    (select sum(tbalance) from pgbench_tellers)::int8, \
                    (select sum(bbalance) from pgbench_branches)::int8, \
                    (select coalesce(sum(delta), 0) from pgbench_history)::int8, \
                    (select count(*) from pgbench_history)",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

async fn pgbench(mode: &str) {
    let (direct_db, proxied_db) = (pgbench_db().await, pgbench_db().await);
    // Parity with PostgreSQL, DO blocks included: the strict guard refuses
    // those (tests/guard_adversarial.rs covers it), so run under standard.
    let config = proxy_config(&proxied_db, POOL, "") + "[guard]\nprofile = \"standard\"\n";
    let proxy = rowgate(&config).await;
    let tok = token("user_bench");
    let started = std::time::Instant::now();
    let (what_direct, what_proxied) = (
        format!("pgbench -M {mode} directly"),
        format!("pgbench -M {mode} through rowgate"),
    );
    let (direct, proxied) = tokio::join!(
        pgbench_run(
            mode,
            direct_db.port(),
            support::AUTHENTICATOR,
            support::AUTHENTICATOR_PASSWORD,
            direct_db.name(),
            &what_direct,
        ),
        pgbench_run(
            mode,
            proxy.port(),
            "anyone",
            &tok,
            proxy.dbname(),
            &what_proxied
        ),
    );
    eprintln!("pgbench -M {mode}: both runs took {:?}", started.elapsed());
    let expected = CLIENTS * PGBENCH_TRANSACTIONS;
    assert!(
        direct.contains(&format!("{expected}/{expected}")),
        "pgbench -M {mode} directly:\n{direct}"
    );
    assert_eq!(
        proxied, direct,
        "pgbench -M {mode}: through rowgate vs directly"
    );
    for db in [&direct_db, &proxied_db] {
        let (a, t, b, h, n) = pgbench_invariant(db).await;
        assert_eq!(
            (a, t, b, n),
            (h, h, h, expected as i64),
            "pgbench -M {mode}: balances"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple() {
    pgbench("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended() {
    pgbench("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared() {
    pgbench("prepared").await;
}

/// asyncpg caches statements; after a column changes type PostgreSQL makes
/// it re-prepare (0A000, recognised by its routine). Through rowgate the
/// statement may run on a connection where rowgate prepares it afresh:
/// rowgate checks the result shape there and answers the same 0A000, so
/// asyncpg re-prepares instead of decoding the new type with the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_schema_change() {
    let (direct_db, proxied_db) = (workload_db().await, workload_db().await);
    // Parity with PostgreSQL, DO blocks included: the strict guard refuses
    // those (tests/guard_adversarial.rs covers it), so run under standard.
    let config = proxy_config(&proxied_db, POOL, "") + "[guard]\nprofile = \"standard\"\n";
    let proxy = rowgate(&config).await;
    let mut outputs = Vec::new();
    for (mode, port, db) in [
        ("direct", direct_db.port(), direct_db.name()),
        ("proxy", proxy.port(), proxy.dbname()),
    ] {
        let mut cmd = python("asyncpg_schema_change.py");
        cmd.args(["127.0.0.1", &port.to_string(), db, mode])
            .args(&clients(mode == "direct")[..2]);
        let out = run(cmd, &format!("asyncpg schema change {mode}")).await;
        assert!(out.status.success(), "{mode}: {}", tail(&out.stderr, 30));
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(
        outputs[0].contains("after [(1, 3), (2, 5)]"),
        "directly: {}",
        outputs[0]
    );
    assert_eq!(outputs[1], outputs[0], "through rowgate vs directly");
}
