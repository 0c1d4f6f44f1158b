//! Pipelining benchmark: one client writes N autocommit queries back to
//! back while it reads the replies (what asyncpg's executemany, psycopg's
//! pipeline mode, JDBC batches and the Neon serverless driver do), through
//! PostgreSQL directly, PgBouncer (transaction mode) and rowgate (identity
//! injected in each of the N transactions), in alternating rounds on one
//! PostgreSQL. Prints the median wall time of each and the ratios.
//!
//! `cargo bench --bench pipeline -- --queries 40000 --rounds 5`

#[path = "../common/mod.rs"]
mod common;
#[path = "../perf/proc.rs"]
#[allow(dead_code)]
mod proc;

use clap::Parser;
use common::{Cluster, PgBouncer, Signer};
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::process::ExitCode;
use std::time::Instant;

/// Pipelining benchmark (see docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Queries per run, all in flight at once.
    #[arg(long, default_value_t = 40_000)]
    queries: usize,
    /// Alternating rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The query each one runs.
    #[arg(long, default_value = "select repeat('x', 2000)")]
    sql: String,
    /// Do not use PgBouncer even if installed.
    #[arg(long)]
    no_pgbouncer: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    match common::block_on("pipeline bench", run(Args::parse())) {
        Some(()) => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    }
}

/// Connects and runs `n` simple queries concurrently (tokio-postgres
/// writes them back to back); returns the seconds until the last reply.
async fn pipelined(url: &str, n: usize, sql: &str) -> Result<f64, String> {
    let client = common::connect(url).await?;
    let start = Instant::now();
    let mut inflight: FuturesOrdered<_> = (0..n).map(|_| client.simple_query(sql)).collect();
    while let Some(r) = inflight.next().await {
        r.map_err(|e| common::pg_error(&e))?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(args: Args) -> Result<(), String> {
    let cluster = Cluster::start(100, "bench").await?;
    let signer = Signer::new()?;
    let rowgate =
        proc::RowgateProcess::start(&cluster.authenticator_url(), 4, signer.public_pem_path())?;
    let token = signer.sign(&signer.claims("user_pipeline", ""));
    let rowgate_url = format!(
        "postgres://pipeline:{token}@127.0.0.1:{}/bench?sslmode=disable",
        rowgate.port
    );
    let bouncer = if args.no_pgbouncer {
        None
    } else {
        PgBouncer::start(&cluster, 4).ok()
    };
    let mut targets: Vec<(&str, String)> = vec![
        ("direct", cluster.authenticator_url()),
        ("rowgate", rowgate_url),
    ];
    if let Some(b) = &bouncer {
        targets.push(("pgbouncer", b.url()));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    // CPU per query, summed over rounds: the proxy's and PostgreSQL's.
    let mut proxy_cpu = vec![0u64; targets.len()];
    let mut pg_cpu = vec![0u64; targets.len()];
    let data_dir = cluster.pg.data_dir().to_path_buf();
    // Warm-up, then rounds whose order rotates.
    for (_, url) in &targets {
        pipelined(url, args.queries.min(2_000), &args.sql).await?;
    }
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let (name, url) = &targets[i];
            let proxy = match *name {
                "rowgate" => Some(rowgate.pid()),
                "pgbouncer" => bouncer.as_ref().map(|b| b.pid()),
                _ => None,
            };
            let cpu_before = proxy.and_then(proc::cpu_micros);
            let pg_before = proc::postgres_cpu_micros(&data_dir);
            let t = pipelined(url, args.queries, &args.sql).await?;
            let pg = proc::postgres_cpu_micros(&data_dir)
                .zip(pg_before)
                .map(|(a, b)| a.saturating_sub(b));
            let cpu = proxy
                .and_then(proc::cpu_micros)
                .zip(cpu_before)
                .map(|(a, b)| a - b);
            let per_query = |c: u64| c as f64 / args.queries as f64;
            eprintln!(
                "round {}: {name:9} {t:.3} s, CPU µs/query: proxy {}, PostgreSQL {}",
                round + 1,
                cpu.map(|c| format!("{:.2}", per_query(c)))
                    .unwrap_or_else(|| "-".into()),
                pg.map(|c| format!("{:.2}", per_query(c)))
                    .unwrap_or_else(|| "-".into()),
            );
            proxy_cpu[i] += cpu.unwrap_or(0);
            pg_cpu[i] += pg.unwrap_or(0);
            times[i].push(t);
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let direct = medians[0];
    println!(
        "\n{} pipelined autocommit queries ({}), median of {} alternating rounds, {}:",
        args.queries,
        args.sql,
        args.rounds,
        common::today()
    );
    println!("| target | seconds | / direct | proxy CPU µs/query | PostgreSQL CPU µs/query |");
    println!("| --- | --- | --- | --- | --- |");
    let all_queries = (args.queries * args.rounds.max(1)) as f64;
    for (i, ((name, _), m)) in targets.iter().zip(&medians).enumerate() {
        let proxy = match *name {
            "direct" => "-".to_string(),
            _ => format!("{:.1}", proxy_cpu[i] as f64 / all_queries),
        };
        println!(
            "| {name} | {m:.3} | {:.2}x | {proxy} | {:.1} |",
            m / direct,
            pg_cpu[i] as f64 / all_queries
        );
    }
    if let Some(b) = medians.get(2) {
        println!("\nrowgate / PgBouncer: {:.2}x the time", medians[1] / b);
    }
    Ok(())
}
