//! Leak-prevention benchmark: the same seeded, concurrent mix of app
//! requests against rowgate and against the two app-side patterns people
//! use on a transaction pool, counting every read that sees another user's
//! identity or rows.
//!
//! `scripts/bench-leak.sh` (or `cargo bench --bench leak -- --help`).
//! See docs/benchmarks.md for what it measures and the last results.

#[path = "../common/mod.rs"]
mod common;
mod report;
mod target;
mod workload;

use clap::Parser;
use common::{Cluster, PgBouncer, Signer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use report::TargetResult;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{BenchPool, Endpoint, Link, Pattern, Slot, Style, Target, Via};
use workload::{Stats, User, Vu};

/// Leak-prevention benchmark (see docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Client transactions to run through rowgate.
    #[arg(long, default_value_t = 100_000)]
    transactions: u64,
    /// Client transactions to run against each baseline.
    #[arg(long, default_value_t = 25_000)]
    baseline_transactions: u64,
    /// Virtual users, each with their own token and connection.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Upstream connections (rowgate pool_size, PgBouncer default_pool_size).
    #[arg(long, default_value_t = 8)]
    pool: usize,
    /// Seed of every user's sequence of requests.
    #[arg(long, default_value_t = 20261123)]
    seed: u64,
    /// Time limit per target; a run stops there even if short of its count.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// A short run: 5,000 transactions through rowgate, 2,000 per baseline.
    #[arg(long)]
    quick: bool,
    /// Do not use PgBouncer even if installed (naive shared pool instead).
    #[arg(long)]
    no_pgbouncer: bool,
    /// Send named prepared statements through PgBouncer too (PgBouncer
    /// before 1.21 cannot pool them: expect errors).
    #[arg(long)]
    pgbouncer_named_statements: bool,
    /// Send client cancel requests to PgBouncer too (PgBouncer 1.18.0
    /// crashes on them: "bad client state: 0"); by default its runs cancel
    /// with a server-side statement_timeout instead.
    #[arg(long)]
    pgbouncer_cancels: bool,
    /// Which targets to run, comma-separated: rowgate, inband, naive, safe.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rowgate,inband,naive,safe"
    )]
    targets: Vec<String>,
    /// JSON report.
    #[arg(long, default_value_os_t = common::report_dir().join("leak.json"))]
    json: PathBuf,
    /// SVG chart.
    #[arg(long, default_value_os_t = common::crate_root().join("docs/img/leak.svg"))]
    svg: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    match common::block_on("leak bench", run(Args::parse())) {
        Some(true) => ExitCode::SUCCESS,
        Some(false) => {
            eprintln!("leak bench: rowgate leaked or failed to finish; see above");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

/// Rows each user owns before the run.
const SEED_ROWS_PER_USER: usize = 20;

async fn run(args: Args) -> Result<bool, String> {
    let (rowgate_txns, baseline_txns) = if args.quick {
        (5_000, 2_000)
    } else {
        (args.transactions, args.baseline_transactions)
    };
    let max = Duration::from_secs(args.max_seconds);
    println!(
        "leak bench: {} users, pool {}, seed {}, {} transactions through rowgate, {} per baseline",
        args.users, args.pool, args.seed, rowgate_txns, baseline_txns
    );
    let cluster = Cluster::start(300, "leakbench").await?;
    seed_rows(&cluster, args.users).await?;
    let signer = Signer::new()?;
    let users = make_users(&signer, args.users);

    let wants = |name: &str| args.targets.iter().any(|t| t == name);
    let mut results = Vec::new();
    let mut rowgate_clean = true;
    if wants("rowgate") {
        let r = run_rowgate(&cluster, &signer, &users, &args, rowgate_txns, max).await?;
        rowgate_clean = r.stats.leaks == 0 && r.completed;
        results.push(r);
    }
    if wants("inband") {
        reset_rows(&cluster).await?;
        let r = run_inband(&cluster, &signer, &users, &args, rowgate_txns, max).await?;
        rowgate_clean &= r.stats.leaks == 0 && r.completed;
        results.push(r);
    }

    let bouncer = if args.no_pgbouncer {
        Err("disabled with --no-pgbouncer".to_string())
    } else {
        PgBouncer::start(&cluster, args.pool)
    };
    let pgbouncer_note = match &bouncer {
        Ok(_) => PgBouncer::version().unwrap_or_else(|| "PgBouncer".into()),
        Err(e) => {
            println!(
                "PgBouncer skipped: {e}. Baselines use a naive shared pool / direct connections."
            );
            format!("skipped: {e}")
        }
    };
    for (key, pattern) in [
        ("naive", Pattern::NaiveSet),
        ("safe", Pattern::SafeSetConfig),
    ] {
        if !wants(key) {
            continue;
        }
        reset_rows(&cluster).await?;
        let target = baseline_target(pattern, bouncer.as_ref().ok(), &cluster, &args);
        println!("running {} ...", target.name);
        results.push(run_target(Arc::new(target), &users, baseline_txns, args.seed, max).await?);
    }
    drop(bouncer);

    report::print_table(&results);
    {
        let g = target::CONNECTION_ERRORS
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if g.0 > 0 {
            println!(
                "connections that ended with an error: {} (first: {:?})",
                g.0, g.1
            );
        }
    }
    let params = json!({
        "date": common::today(),
        "users": args.users,
        "pool": args.pool,
        "seed": args.seed,
        "rowgate_transactions": rowgate_txns,
        "baseline_transactions": baseline_txns,
        "pgbouncer": pgbouncer_note,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "operations": workload::OPS.iter().map(|(op, w, what)| json!({"op": format!("{op:?}"), "weight": w, "what": what})).collect::<Vec<_>>(),
    });
    common::write_json(&args.json, &report::to_json(&results, params))?;
    let subtitle = format!(
        "{} users with their own tokens, pool of {}, seeded mix of {} kinds of request; lower is better",
        args.users,
        args.pool,
        workload::OPS.len()
    );
    if let Some(dir) = args.svg.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(&args.svg, report::to_svg(&results, &subtitle))
        .map_err(|e| format!("write {}: {e}", args.svg.display()))?;
    println!("\nwrote {} and {}", args.json.display(), args.svg.display());
    Ok(rowgate_clean)
}

/// rowgate in-process, in front of the cluster, the token as password.
async fn run_rowgate(
    cluster: &Cluster,
    signer: &Signer,
    users: &[Arc<User>],
    args: &Args,
    txns: u64,
    max: Duration,
) -> Result<TargetResult, String> {
    let toml = common::rowgate_toml(
        "127.0.0.1:0",
        &cluster.authenticator_url(),
        args.pool,
        signer.public_pem_path(),
        None,
    );
    let config = rowgate::Config::from_toml(&toml).map_err(|e| e.to_string())?;
    let server = rowgate::start(config).await.map_err(|e| e.to_string())?;
    let target = Target {
        name: "rowgate".into(),
        pattern: Pattern::Rowgate,
        via: Via::Rowgate,
        style: Style::Named,
        endpoint: Endpoint {
            port: server.local_addr().port(),
            dbname: cluster.db.clone(),
            user: "bench".into(),
            password: None,
        },
        shared_pool_size: 0,
        client_cancels: true,
    };
    println!("running rowgate ...");
    let result = run_target(Arc::new(target), users, txns, args.seed, max).await;
    server.stop();
    result
}

/// A legacy service's shared pool (the bench's naive pool, `--pool`
/// connections) logged in to rowgate as a service, naming each
/// transaction's user with its token in-band.
async fn run_inband(
    cluster: &Cluster,
    signer: &Signer,
    users: &[Arc<User>],
    args: &Args,
    txns: u64,
    max: Duration,
) -> Result<TargetResult, String> {
    const PASSWORD: &str = "bench-service-secret";
    let toml = format!(
        "{}\n[[services]]\nname = \"legacy\"\npassword = \"{PASSWORD}\"\n",
        common::rowgate_toml(
            "127.0.0.1:0",
            &cluster.authenticator_url(),
            args.pool,
            signer.public_pem_path(),
            None,
        )
    );
    let config = rowgate::Config::from_toml(&toml).map_err(|e| e.to_string())?;
    let server = rowgate::start(config).await.map_err(|e| e.to_string())?;
    let target = Target {
        name: "legacy service pool through rowgate (in-band tokens)".into(),
        pattern: Pattern::InbandToken,
        via: Via::BenchPool,
        style: Style::Named,
        endpoint: Endpoint {
            port: server.local_addr().port(),
            dbname: cluster.db.clone(),
            user: "legacy".into(),
            password: Some(PASSWORD.into()),
        },
        shared_pool_size: args.pool,
        client_cancels: true,
    };
    println!("running {} ...", target.name);
    let result = run_target(Arc::new(target), users, txns, args.seed, max).await;
    server.stop();
    result
}

/// A baseline: the pattern through PgBouncer when it runs, else the naive
/// pattern through the bench's own shared pool and the safe one directly.
fn baseline_target(
    pattern: Pattern,
    bouncer: Option<&PgBouncer>,
    cluster: &Cluster,
    args: &Args,
) -> Target {
    let name = match pattern {
        Pattern::NaiveSet => "naive SET (anti-pattern)",
        _ => "BEGIN + set_config(.., true)",
    };
    let direct = Endpoint {
        port: cluster.port(),
        dbname: cluster.db.clone(),
        user: common::AUTHENTICATOR.into(),
        password: Some(common::AUTHENTICATOR_PASSWORD.into()),
    };
    let (via, endpoint, style) = match (bouncer, pattern) {
        (Some(b), _) => (
            Via::PgBouncer,
            Endpoint {
                port: b.port(),
                dbname: "bench".into(),
                ..direct
            },
            if args.pgbouncer_named_statements {
                Style::Named
            } else {
                Style::Unnamed
            },
        ),
        (None, Pattern::NaiveSet) => (Via::BenchPool, direct, Style::Named),
        (None, _) => (Via::Direct, direct, Style::Named),
    };
    Target {
        name: name.into(),
        pattern,
        via,
        style,
        endpoint,
        shared_pool_size: args.pool,
        client_cancels: via != Via::PgBouncer || args.pgbouncer_cancels,
    }
}

/// Runs `txns` client transactions (or until `max`) with every user at
/// once, and gathers what they saw.
async fn run_target(
    target: Arc<Target>,
    users: &[Arc<User>],
    txns: u64,
    seed: u64,
    max: Duration,
) -> Result<TargetResult, String> {
    let shared = match target.via {
        Via::BenchPool => Some(Arc::new(
            BenchPool::open(&target.endpoint, target.shared_pool_size, target.style).await?,
        )),
        _ => None,
    };
    let mut vus = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let link = match &shared {
            Some(pool) => Link::Shared(pool.clone()),
            None => {
                let pw = target
                    .endpoint
                    .password
                    .clone()
                    .unwrap_or_else(|| user.token.clone());
                let slot = Slot::open(&target.endpoint, &pw, target.style, &user.app_name)
                    .await
                    .map_err(|e| {
                        format!(
                            "{}: user {i} cannot connect: {}",
                            target.name,
                            common::pg_error(&e)
                        )
                    })?;
                Link::Own(slot)
            }
        };
        vus.push(Vu {
            user: user.clone(),
            target: target.clone(),
            link,
            rng: StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            stats: Stats::default(),
        });
    }
    let remaining = Arc::new(AtomicI64::new(txns as i64));
    let start = Instant::now();
    let deadline = start + max;
    let tasks: Vec<_> = vus
        .into_iter()
        .map(|vu| tokio::spawn(drive(vu, remaining.clone(), deadline)))
        .collect();
    let mut stats = Stats::default();
    for t in tasks {
        stats.merge(
            t.await
                .map_err(|e| format!("a virtual user panicked: {e}"))?,
        );
    }
    let wall = start.elapsed();
    let completed = remaining.load(Ordering::Relaxed) <= 0;
    let statements = match target.style {
        Style::Named => "named prepared",
        Style::Unnamed => "unnamed extended-protocol",
    };
    Ok(TargetResult::new(
        target.name.clone(),
        target.via.label(),
        statements,
        stats,
        wall,
        completed,
    ))
}

/// How long one request may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// One virtual user's loop: requests until the shared count or the time
/// runs out.
async fn drive(mut vu: Vu, remaining: Arc<AtomicI64>, deadline: Instant) -> Stats {
    while remaining.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        let op = workload::pick(&mut vu.rng);
        let n = match tokio::time::timeout(OP_TIMEOUT, vu.run(op)).await {
            Ok(n) => n,
            Err(_) => vu.timed_out().await,
        };
        remaining.fetch_sub(n as i64, Ordering::Relaxed);
    }
    vu.stats
}

fn make_users(signer: &Signer, n: usize) -> Vec<Arc<User>> {
    (0..n)
        .map(|i| {
            let sub = format!("user_bench_{i:03}");
            let org = format!("org_bench_{i:03}");
            let claims = signer.claims(&sub, &org);
            Arc::new(User {
                token: signer.sign(&claims),
                claims_json: claims.to_string(),
                app_name: format!("bench_u{i:03}"),
                sub,
                org,
            })
        })
        .collect()
}

/// Every user owns a few rows; an index on the owner keeps RLS reads cheap
/// however many rows the run inserts.
async fn seed_rows(cluster: &Cluster, users: usize) -> Result<(), String> {
    let admin = cluster.admin().await?;
    admin
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS user_messages_user_id ON user_messages (user_id);
             INSERT INTO user_messages (user_id, message)
             SELECT 'user_bench_' || lpad(u::text, 3, '0'), 'seed ' || n
             FROM generate_series(0, {last}) u, generate_series(1, {SEED_ROWS_PER_USER}) n;
             ANALYZE user_messages;",
            last = users.saturating_sub(1)
        ))
        .await
        .map_err(|e| format!("seeding user_messages: {}", common::pg_error(&e)))
}

/// Removes the rows a run inserted, so each target starts alike.
async fn reset_rows(cluster: &Cluster) -> Result<(), String> {
    let admin = cluster.admin().await?;
    // VACUUM refuses a transaction block, so one statement at a time.
    for sql in [
        "DELETE FROM user_messages WHERE message LIKE 'ins:%'",
        "VACUUM ANALYZE user_messages",
    ] {
        admin
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{sql}: {}", common::pg_error(&e)))?;
    }
    Ok(())
}
