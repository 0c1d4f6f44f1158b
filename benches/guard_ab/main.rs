//! What the statement guard costs in throughput (issue 5: under 5 % of
//! select-only pgbench): two `rowgate serve` processes in front of one
//! PostgreSQL, one with the guard on (`strict`, the default) and one with it
//! off, measured in short pgbench runs that alternate between them, round
//! after round, with PostgreSQL directly in every round for scale.
//!
//! A shared 2-core machine drifts by more than 5 % within a minute, so two
//! long runs one after the other compare the drift, not the guard. Here each
//! round's on/off ratio is taken from runs seconds apart, the order rotates
//! every round, and the median over rounds is reported, with the CPU time
//! each rowgate process spent per transaction.
//!
//! `-M prepared` is the control: its transactions are Bind/Execute of a
//! statement parsed once per connection, so the guard never runs in them,
//! and its on/off ratio shows how far apart two identical setups measure
//! (the noise floor of the method on this machine).
//!
//! `scripts/bench-guard.sh` (or `cargo bench --bench guard_ab -- --help`).

#[path = "../common/mod.rs"]
mod common;
// Shared with the perf bench, which uses all of them.
#[allow(dead_code)]
#[path = "../perf/pgbench.rs"]
mod pgbench;
#[allow(dead_code)]
#[path = "../perf/proc.rs"]
mod proc;

use clap::Parser;
use common::{Cluster, Signer};
use pgbench::{Conn, Run, Workload};
use proc::RowgateProcess;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// Guard on vs off, alternating pgbench runs (see docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Rounds; each runs every mode against guard on, guard off and direct.
    #[arg(long, default_value_t = 8)]
    rounds: u32,
    /// pgbench clients.
    #[arg(long, default_value_t = 16)]
    clients: u32,
    /// pgbench protocols (-M), and `orm`: `-M simple` with the select
    /// written as ORMs write it (quoted identifiers, a literal key).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "simple,extended,prepared,orm"
    )]
    modes: Vec<String>,
    /// Upstream connections of each rowgate.
    #[arg(long, default_value_t = 16)]
    pool: usize,
    /// pgbench scale factor.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// JSON report.
    #[arg(long, default_value_os_t = common::report_dir().join("guard_ab.json"))]
    json: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    match common::block_on("guard_ab bench", run(Args::parse())) {
        Some(()) => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    }
}

/// The three targets of a round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    On,
    Off,
    Direct,
}

/// Totals of one mode x target over all rounds.
#[derive(Default)]
struct Tally {
    tps: Vec<f64>,
    transactions: u64,
    cpu_micros: u64,
}

async fn run(args: Args) -> Result<(), String> {
    println!(
        "guard_ab bench: {} rounds x {} s per run, {} clients, modes {:?}, pool {}",
        args.rounds, args.seconds, args.clients, args.modes, args.pool
    );
    let cluster = Cluster::start(200, "guardbench").await?;
    let signer = Signer::new()?;
    let bin = pgbench::binary()?;
    pgbench::setup_tables(&bin, &cluster, args.scale, "SELECT").await?;
    let url = cluster.authenticator_url();
    let pem = signer.public_pem_path();
    let on = RowgateProcess::start_with(&url, args.pool, pem, "[guard]\nprofile = \"strict\"\n")?;
    let off = RowgateProcess::start_with(&url, args.pool, pem, "[guard]\nprofile = \"off\"\n")?;
    let token = signer.sign(&signer.claims("user_pgbench", "org_pgbench"));
    let via = |port| Conn {
        port,
        user: "pgbench".into(),
        password: token.clone(),
        dbname: cluster.db.clone(),
    };
    let (conn_on, conn_off) = (via(on.port), via(off.port));
    let direct = Conn {
        port: cluster.port(),
        user: common::AUTHENTICATOR.into(),
        password: common::AUTHENTICATOR_PASSWORD.into(),
        dbname: cluster.db.clone(),
    };

    let dir = common::TempDir::new("rowgate-bench-guard")?;
    let orm_script = dir.path().join("orm_select.sql");
    std::fs::write(&orm_script, pgbench::ORM_SELECT_SCRIPT)
        .map_err(|e| format!("write {}: {e}", orm_script.display()))?;
    let workload_of = |mode| workload_of(mode, &orm_script);

    let mut tallies: Vec<[Tally; 3]> = args.modes.iter().map(|_| Default::default()).collect();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); args.modes.len()];
    println!(
        "\n{:>5} {:<9} {:>10} {:>10} {:>10} {:>8}",
        "round", "mode", "on tps", "off tps", "direct", "on/off"
    );
    // Warm up: both pools full, statements prepared, tables cached.
    for mode in &args.modes {
        for conn in [&conn_on, &conn_off, &direct] {
            let (workload, mode, script) = workload_of(mode);
            let warm = Run {
                bin: &bin,
                conn,
                workload,
                mode,
                clients: args.clients,
                seconds: 1,
                script,
            };
            tokio::task::block_in_place(|| warm.execute());
        }
    }
    const ORDERS: [[Target; 3]; 6] = [
        [Target::On, Target::Off, Target::Direct],
        [Target::Off, Target::Direct, Target::On],
        [Target::Direct, Target::On, Target::Off],
        [Target::Off, Target::On, Target::Direct],
        [Target::Direct, Target::Off, Target::On],
        [Target::On, Target::Direct, Target::Off],
    ];
    for round in 0..args.rounds {
        // Every order in turn: neither side always runs first, or right
        // after the direct run.
        let order = ORDERS[round as usize % ORDERS.len()];
        for (m, mode) in args.modes.iter().enumerate() {
            let mut tps = [0.0; 3];
            for target in order {
                let (conn, pid) = match target {
                    Target::On => (&conn_on, Some(on.pid())),
                    Target::Off => (&conn_off, Some(off.pid())),
                    Target::Direct => (&direct, None),
                };
                let cpu_before = pid.and_then(proc::cpu_micros);
                let (workload, pgbench_mode, script) = workload_of(mode);
                let outcome = tokio::task::block_in_place(|| {
                    Run {
                        bin: &bin,
                        conn,
                        workload,
                        mode: pgbench_mode,
                        clients: args.clients,
                        seconds: args.seconds,
                        script,
                    }
                    .execute()
                });
                if let Some(e) = outcome.error {
                    return Err(format!("pgbench -M {mode}: {e}"));
                }
                let tally = &mut tallies[m][target as usize];
                tally.tps.push(outcome.tps);
                tally.transactions += outcome.transactions;
                if let Some((before, after)) = cpu_before.zip(pid.and_then(proc::cpu_micros)) {
                    tally.cpu_micros += after - before;
                }
                tps[target as usize] = outcome.tps;
            }
            let ratio = tps[Target::On as usize] / tps[Target::Off as usize];
            ratios[m].push(ratio);
            println!(
                "{:>5} {:<9} {:>10.0} {:>10.0} {:>10.0} {:>8.3}",
                round + 1,
                mode,
                tps[0],
                tps[1],
                tps[2],
                ratio
            );
        }
    }

    println!(
        "\n{:<9} {:>13} {:>15} {:>13} {:>13} {:>15} {:>15}",
        "mode",
        "median on/off",
        "range",
        "on/direct",
        "off/direct",
        "cpu us/tx on",
        "cpu us/tx off"
    );
    let mut rows = Vec::new();
    for (m, mode) in args.modes.iter().enumerate() {
        let [t_on, t_off, t_direct] = &tallies[m];
        let mut r = ratios[m].clone();
        r.sort_by(f64::total_cmp);
        let median_ratio = median(&r);
        let cpu = |t: &Tally| t.cpu_micros as f64 / t.transactions.max(1) as f64;
        let (on_direct, off_direct) = (
            median(&sorted(&t_on.tps)) / median(&sorted(&t_direct.tps)),
            median(&sorted(&t_off.tps)) / median(&sorted(&t_direct.tps)),
        );
        println!(
            "{:<9} {:>13.3} {:>7.3}-{:<7.3} {:>13.2} {:>13.2} {:>15.1} {:>15.1}",
            mode,
            median_ratio,
            r.first().copied().unwrap_or_default(),
            r.last().copied().unwrap_or_default(),
            on_direct,
            off_direct,
            cpu(t_on),
            cpu(t_off)
        );
        rows.push(json!({
            "mode": mode,
            "median_on_off": median_ratio,
            "on_off_per_round": ratios[m],
            "tps_on": t_on.tps,
            "tps_off": t_off.tps,
            "tps_direct": t_direct.tps,
            "cpu_us_per_txn_on": cpu(t_on),
            "cpu_us_per_txn_off": cpu(t_off),
        }));
    }
    let median_of = |mode: &str| {
        rows.iter()
            .find(|r| r["mode"] == mode)
            .and_then(|r| r["median_on_off"].as_f64())
    };
    if let Some(control) = median_of("prepared") {
        println!(
            "\nnoise floor (-M prepared, where the guard never runs): on/off {:+.1} %",
            (control - 1.0) * 100.0
        );
    }
    let worst = ["simple", "extended"]
        .into_iter()
        .filter_map(median_of)
        .fold(f64::INFINITY, f64::min);
    if worst.is_finite() {
        println!(
            "guard cost (worst of simple/extended, median of rounds): {:+.1} % throughput; \
             target: under 5 %: {}",
            (worst - 1.0) * 100.0,
            if worst > 0.95 { "met" } else { "MISSED" }
        );
    }
    let report = json!({
        "date": common::today(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "clients": args.clients,
        "pool": args.pool,
        "modes": Value::Array(rows),
    });
    common::write_json(&args.json, &report)?;
    println!("wrote {}", args.json.display());
    Ok(())
}

/// A "mode" of the command line: the workload, pgbench's `-M`, the script.
fn workload_of<'a>(
    mode: &'a str,
    orm_script: &'a std::path::Path,
) -> (Workload, &'a str, Option<&'a std::path::Path>) {
    match mode {
        "orm" => (Workload::OrmSelect, "simple", Some(orm_script)),
        m => (Workload::SelectOnly, m, None),
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median of sorted values (0 when there are none).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
