//! Performance benchmark: pgbench side by side against PostgreSQL directly,
//! PgBouncer (transaction mode) and rowgate (JWT auth, identity injected in
//! every transaction), on one machine and one database; upstream round trips
//! from rowgate's own counters; and connection scale (idle clients' memory,
//! a connect storm with fresh tokens).
//!
//! `scripts/bench-perf.sh` (or `cargo bench --bench perf -- --help`).
//! See docs/benchmarks.md for what it measures and the last results.

#[path = "../common/mod.rs"]
mod common;
mod pgbench;
mod proc;
mod scale;

use clap::Parser;
use common::{quantile, Cluster, PgBouncer, Signer};
use pgbench::{Conn, Outcome, Run, Workload};
use proc::RowgateProcess;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Performance benchmark (see docs/benchmarks.md).
#[derive(Parser, Debug)]
struct Args {
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Rounds of the whole matrix; each round rotates the order of the
    /// targets, and every figure reported is the median over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// SVG chart of the ratios.
    #[arg(long, default_value_os_t = common::crate_root().join("docs/img/perf.svg"))]
    svg: PathBuf,
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<u32>,
    /// Upstream connections of rowgate and of PgBouncer.
    #[arg(long, default_value_t = 16)]
    pool: usize,
    /// pgbench scale factor.
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Idle authenticated clients to hold open against rowgate.
    #[arg(long, default_value_t = 10_000)]
    idle_clients: usize,
    /// New connections, each with a fresh token, in the connect storm.
    #[arg(long, default_value_t = 1_000)]
    storm: usize,
    /// Handshakes in flight at once during the storm.
    #[arg(long, default_value_t = 32)]
    storm_concurrency: usize,
    /// Which pgbench cases to run: select-simple, select-extended,
    /// select-prepared, orm-simple (the select as ORMs write it: quoted
    /// identifiers, a literal key), tpcb, safe-simple, safe-extended.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "select-simple,select-extended,select-prepared,orm-simple,tpcb,safe-simple,safe-extended"
    )]
    cases: Vec<String>,
    /// Skip the pgbench matrix.
    #[arg(long)]
    skip_pgbench: bool,
    /// Skip the connection-scale tests.
    #[arg(long)]
    skip_scale: bool,
    /// Do not use PgBouncer even if installed.
    #[arg(long)]
    no_pgbouncer: bool,
    /// JSON report.
    #[arg(long, default_value_os_t = common::report_dir().join("perf.json"))]
    json: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    match common::block_on("perf bench", run(Args::parse())) {
        Some(()) => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    }
}

/// Who is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Direct,
    PgBouncer,
    Rowgate,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Direct => "direct",
            Who::PgBouncer => "pgbouncer",
            Who::Rowgate => "rowgate",
        }
    }
}

/// One pgbench run's result.
struct Row {
    workload: Workload,
    mode: &'static str,
    clients: u32,
    who: Who,
    outcome: Outcome,
    /// rowgate only: upstream writes and injected identities during the run.
    upstream_writes: Option<f64>,
    identities: Option<f64>,
    /// CPU time the proxy process used per transaction (µs), when there is
    /// a proxy: where the shared 2 cores went.
    proxy_cpu_us_per_txn: Option<f64>,
    /// CPU time PostgreSQL used per transaction (µs): the postmaster, its
    /// reaped children and every live backend.
    pg_cpu_us_per_txn: Option<f64>,
}

impl Row {
    fn writes_per_txn(&self) -> Option<f64> {
        let t = self.outcome.transactions as f64;
        self.upstream_writes.filter(|_| t > 0.0).map(|w| w / t)
    }
}

async fn run(args: Args) -> Result<(), String> {
    let nofile = common::raise_nofile(65_536);
    println!(
        "perf bench: {} s per run, clients {:?}, pool {}, scale {}, open-file limit {nofile}",
        args.seconds, args.clients, args.pool, args.scale
    );
    let cluster = Cluster::start(300, "perfbench").await?;
    let signer = Signer::new()?;
    let mut report = json!({
        "date": common::today(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "seconds_per_run": args.seconds,
        "pool": args.pool,
        "scale": args.scale,
    });
    if !args.skip_pgbench {
        let all = pgbench_matrix(&args, &cluster, &signer, &mut report).await?;
        report["pgbench_rounds"] = Value::Array(all.iter().map(row_json).collect());
        let rows = medians(all);
        report["pgbench"] = Value::Array(rows.iter().map(row_json).collect());
        print_cells(&rows, &args.clients, &mut report);
        print_ratios(&rows, &args.clients, &mut report);
        if let Err(e) = write_svg(&args.svg, &report) {
            println!("no chart: {e}");
        }
        print_round_trips(&rows, &mut report);
    }
    if !args.skip_scale {
        report["scale"] = connection_scale(&args, &cluster, &signer).await?;
    }
    print_targets(&report);
    common::write_json(&args.json, &report)?;
    println!("\nwrote {}", args.json.display());
    Ok(())
}

/// Every workload x client count x target, interleaved so that noise on the
/// shared machine hits all targets alike.
async fn pgbench_matrix(
    args: &Args,
    cluster: &Cluster,
    signer: &Signer,
    report: &mut Value,
) -> Result<Vec<Row>, String> {
    let bin = pgbench::binary()?;
    pgbench::setup_tables(&bin, cluster, args.scale, "SELECT, INSERT, UPDATE, DELETE").await?;

    let rowgate = RowgateProcess::start(
        &cluster.authenticator_url(),
        args.pool,
        signer.public_pem_path(),
    )?;
    let bouncer = if args.no_pgbouncer {
        Err("disabled with --no-pgbouncer".to_string())
    } else {
        PgBouncer::start(cluster, args.pool)
    };
    report["pgbouncer"] = match &bouncer {
        Ok(_) => json!(PgBouncer::version().unwrap_or_else(|| "PgBouncer".into())),
        Err(e) => {
            println!("PgBouncer skipped: {e}");
            json!(format!("skipped: {e}"))
        }
    };
    let token = signer.sign(&signer.claims("user_pgbench", "org_pgbench"));
    let direct = Conn {
        port: cluster.port(),
        user: common::AUTHENTICATOR.into(),
        password: common::AUTHENTICATOR_PASSWORD.into(),
        dbname: cluster.db.clone(),
    };
    let via_bouncer = bouncer.as_ref().ok().map(|b| Conn {
        port: b.port(),
        dbname: "bench".into(),
        ..direct.clone()
    });
    let via_rowgate = Conn {
        port: rowgate.port,
        user: "pgbench".into(),
        password: token,
        dbname: cluster.db.clone(),
    };
    let dir = common::TempDir::new("rowgate-bench-pgbench")?;
    let script = dir.path().join("safe_identity.sql");
    std::fs::write(&script, pgbench::SAFE_IDENTITY_SCRIPT)
        .map_err(|e| format!("write {}: {e}", script.display()))?;
    let orm_script = dir.path().join("orm_select.sql");
    std::fs::write(&orm_script, pgbench::ORM_SELECT_SCRIPT)
        .map_err(|e| format!("write {}: {e}", orm_script.display()))?;

    const ALL3: &[Who] = &[Who::Direct, Who::PgBouncer, Who::Rowgate];
    const NO_ROWGATE: &[Who] = &[Who::Direct, Who::PgBouncer];
    let all: [(&str, Workload, &'static str, &[Who]); 7] = [
        ("select-simple", Workload::SelectOnly, "simple", ALL3),
        // The guard's cost on text that differs every time (issue 15).
        ("orm-simple", Workload::OrmSelect, "simple", ALL3),
        ("select-extended", Workload::SelectOnly, "extended", ALL3),
        ("select-prepared", Workload::SelectOnly, "prepared", ALL3),
        ("tpcb", Workload::TpcB, "simple", ALL3),
        // Through rowgate this script would carry two identities; it is
        // the baseline rowgate's select-only is compared with.
        ("safe-simple", Workload::SafeIdentity, "simple", NO_ROWGATE),
        (
            "safe-extended",
            Workload::SafeIdentity,
            "extended",
            NO_ROWGATE,
        ),
    ];
    let cases = all
        .into_iter()
        .filter(|(name, ..)| args.cases.iter().any(|c| c == name));
    println!(
        "\n{:<22} {:<9} {:>4} {:<10} {:>10} {:>10} {:>12} {:>14} {:>12}",
        "workload",
        "mode",
        "-c",
        "target",
        "tps",
        "lat ms",
        "writes/txn",
        "proxy cpu us/tx",
        "pg cpu us/tx"
    );
    let cases: Vec<_> = cases.collect();
    let data_dir = cluster.pg.data_dir().to_path_buf();
    let mut rows = Vec::new();
    for round in 0..args.rounds.max(1) {
        println!("round {} of {}", round + 1, args.rounds.max(1));
        for &(_, workload, mode, whos) in &cases {
            for &clients in &args.clients {
                // Each round starts with another target, so that drift on the
                // shared machine does not always favour the same one.
                let mut order = whos.to_vec();
                let n = order.len();
                order.rotate_left(round as usize % n);
                for who in order {
                    let conn = match who {
                        Who::Direct => &direct,
                        Who::Rowgate => &via_rowgate,
                        Who::PgBouncer => match &via_bouncer {
                            Some(c) => c,
                            None => continue,
                        },
                    };
                    let proxy_pid = match who {
                        Who::Direct => None,
                        Who::Rowgate => Some(rowgate.pid()),
                        Who::PgBouncer => bouncer.as_ref().ok().map(|b| b.pid()),
                    };
                    let cpu_before = proxy_pid.and_then(proc::cpu_micros);
                    let pg_before = proc::postgres_cpu_micros(&data_dir);
                    let before = counters(who, &rowgate);
                    let run = Run {
                        bin: &bin,
                        conn,
                        workload,
                        mode,
                        clients,
                        seconds: args.seconds,
                        script: Some(match workload {
                            Workload::OrmSelect => &orm_script,
                            _ => &script,
                        }),
                    };
                    let outcome = tokio::task::block_in_place(|| run.execute());
                    let pg_after = proc::postgres_cpu_micros(&data_dir);
                    let after = counters(who, &rowgate);
                    let cpu = cpu_before
                        .zip(proxy_pid.and_then(proc::cpu_micros))
                        .map(|(b, a)| (a - b) as f64 / outcome.transactions.max(1) as f64);
                    let row = Row {
                        workload,
                        mode,
                        clients,
                        who,
                        upstream_writes: before.zip(after).map(|(b, a)| a.0 - b.0),
                        identities: before.zip(after).map(|(b, a)| a.1 - b.1),
                        proxy_cpu_us_per_txn: cpu,
                        pg_cpu_us_per_txn: pg_before.zip(pg_after).map(|(b, a)| {
                            a.saturating_sub(b) as f64 / outcome.transactions.max(1) as f64
                        }),
                        outcome,
                    };
                    print_row(&row);
                    rows.push(row);
                }
            }
        }
    }
    Ok(rows)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// One row per cell (workload, mode, clients, target): tps, latency and
/// CPU figures are medians over the rounds that ran cleanly; counts are
/// totals, so per-transaction ratios of them stay exact.
fn medians(all: Vec<Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in &all {
        if out.iter().any(|o| {
            o.workload == r.workload && o.mode == r.mode && o.clients == r.clients && o.who == r.who
        }) {
            continue;
        }
        let same: Vec<&Row> = all
            .iter()
            .filter(|o| {
                o.workload == r.workload
                    && o.mode == r.mode
                    && o.clients == r.clients
                    && o.who == r.who
            })
            .collect();
        let clean: Vec<&&Row> = same.iter().filter(|o| o.outcome.error.is_none()).collect();
        let med =
            |f: &dyn Fn(&Row) -> Option<f64>| median(clean.iter().filter_map(|o| f(o)).collect());
        let sum = |f: &dyn Fn(&Row) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = clean.iter().filter_map(|o| f(o)).collect();
            (!v.is_empty()).then(|| v.iter().sum())
        };
        out.push(Row {
            workload: r.workload,
            mode: r.mode,
            clients: r.clients,
            who: r.who,
            outcome: Outcome {
                tps: med(&|o| Some(o.outcome.tps)).unwrap_or(0.0),
                latency_ms: med(&|o| Some(o.outcome.latency_ms)).unwrap_or(0.0),
                transactions: clean.iter().map(|o| o.outcome.transactions).sum(),
                failed: same.iter().map(|o| o.outcome.failed).sum(),
                error: same.iter().find_map(|o| o.outcome.error.clone()),
            },
            upstream_writes: sum(&|o| o.upstream_writes),
            identities: sum(&|o| o.identities),
            proxy_cpu_us_per_txn: med(&|o| o.proxy_cpu_us_per_txn),
            pg_cpu_us_per_txn: med(&|o| o.pg_cpu_us_per_txn),
        });
    }
    out
}

/// The workload and mode of every reported cell (per client count).
const REPORTED_CELLS: &[(Workload, &str)] = &[
    (Workload::SelectOnly, "simple"),
    (Workload::SelectOnly, "extended"),
    (Workload::SelectOnly, "prepared"),
    (Workload::OrmSelect, "simple"),
    (Workload::TpcB, "simple"),
];

/// The median row of one cell.
fn cell<'a>(rows: &'a [Row], w: Workload, mode: &str, c: u32, who: Who) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload == w && r.mode == mode && r.clients == c && r.who == who)
}

/// For every cell: tps of each target, the ratios, and CPU per transaction
/// of the proxies and of PostgreSQL behind each target (medians).
fn print_cells(rows: &[Row], clients: &[u32], report: &mut Value) {
    println!(
        "\n{:<12} {:<9} {:>3} | {:>8} {:>8} {:>8} | {:>7} {:>7} | {:>13} | {:>20}",
        "workload",
        "mode",
        "-c",
        "direct",
        "pgb",
        "rowgate",
        "rg/dir",
        "rg/pgb",
        "proxy us pgb/rg",
        "postgres us dir/pgb/rg"
    );
    let f = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
    let f1 = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    let mut out = Vec::new();
    for &(w, mode) in REPORTED_CELLS {
        for &c in clients {
            let get = |who| cell(rows, w, mode, c, who);
            let t = |who| tps(rows, w, mode, c, who);
            let (d, b, g) = (get(Who::Direct), get(Who::PgBouncer), get(Who::Rowgate));
            if d.is_none() && g.is_none() {
                continue;
            }
            let pcpu = |r: Option<&Row>| r.and_then(|r| r.proxy_cpu_us_per_txn);
            let gcpu = |r: Option<&Row>| r.and_then(|r| r.pg_cpu_us_per_txn);
            println!(
                "{:<12} {:<9} {:>3} | {:>8} {:>8} {:>8} | {:>7} {:>7} | {:>6}/{:<6} | {:>6}/{:>6}/{:>6}",
                w.label(),
                mode,
                c,
                f(t(Who::Direct)),
                f(t(Who::PgBouncer)),
                f(t(Who::Rowgate)),
                fmt_ratio(ratio(t(Who::Rowgate), t(Who::Direct))),
                fmt_ratio(ratio(t(Who::Rowgate), t(Who::PgBouncer))),
                f1(pcpu(b)),
                f1(pcpu(g)),
                f1(gcpu(d)),
                f1(gcpu(b)),
                f1(gcpu(g)),
            );
            out.push(json!({"workload": w.label(), "mode": mode, "clients": c,
                "tps": {"direct": t(Who::Direct), "pgbouncer": t(Who::PgBouncer), "rowgate": t(Who::Rowgate)},
                "proxy_cpu_us_per_txn": {"pgbouncer": pcpu(b), "rowgate": pcpu(g)},
                "postgres_cpu_us_per_txn": {"direct": gcpu(d), "pgbouncer": gcpu(b), "rowgate": gcpu(g)}}));
        }
    }
    report["cells"] = Value::Array(out);
}

/// A bar chart of rowgate/PgBouncer and rowgate/direct per cell.
fn write_svg(path: &std::path::Path, report: &Value) -> Result<(), String> {
    let ratios = report["ratios"].as_array().ok_or("no ratios")?;
    let bars: Vec<(String, Option<f64>, Option<f64>)> = ratios
        .iter()
        .map(|r| {
            (
                format!(
                    "{} {} -c {}",
                    r["workload"].as_str().unwrap_or("?"),
                    r["mode"].as_str().unwrap_or("?"),
                    r["clients"]
                ),
                r["rowgate_over_pgbouncer"].as_f64(),
                r["rowgate_over_direct"].as_f64(),
            )
        })
        .collect();
    let (row_h, left, width) = (26.0, 230.0, 760.0);
    let scale = 300.0; // px per 1.0x
    let height = 70.0 + row_h * bars.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">rowgate throughput as a ratio (pgbench, medians over rounds, {})</text>\n\
         <rect x=\"{left}\" y=\"30\" width=\"12\" height=\"10\" fill=\"#2b6cb0\"/><text x=\"{}\" y=\"39\">rowgate / PgBouncer</text>\n\
         <rect x=\"{}\" y=\"30\" width=\"12\" height=\"10\" fill=\"#a0aec0\"/><text x=\"{}\" y=\"39\">rowgate / PostgreSQL directly</text>\n",
        common::xml_escape(report["date"].as_str().unwrap_or("")),
        left + 16.0,
        left + 170.0,
        left + 186.0,
    );
    let one = left + scale;
    svg += &format!(
        "<line x1=\"{one}\" y1=\"48\" x2=\"{one}\" y2=\"{}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n<text x=\"{}\" y=\"{}\">1.0x</text>\n",
        height - 10.0,
        one - 10.0,
        height - 1.0
    );
    for (i, (label, pgb, direct)) in bars.iter().enumerate() {
        let y = 52.0 + row_h * i as f64;
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            y + 14.0,
            common::xml_escape(label)
        );
        for (k, (v, color)) in [(pgb, "#2b6cb0"), (direct, "#a0aec0")]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = v {
                let w = (v * scale).min(width - left - 50.0);
                let yy = y + 2.0 + 10.0 * k as f64;
                svg += &format!(
                    "<rect x=\"{left}\" y=\"{yy}\" width=\"{w:.1}\" height=\"9\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{v:.2}x</text>\n",
                    left + w + 4.0,
                    yy + 8.0
                );
            }
        }
    }
    svg += "</svg>\n";
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))
}

/// rowgate's (upstream writes, injected identities) counters, for rowgate.
fn counters(who: Who, rowgate: &RowgateProcess) -> Option<(f64, f64)> {
    if who != Who::Rowgate {
        return None;
    }
    let w = rowgate.metric("rowgate_upstream_writes_total").ok()?;
    let t = rowgate.metric("rowgate_transactions_total").ok()?;
    Some((w, t))
}

fn print_row(r: &Row) {
    let writes = r
        .writes_per_txn()
        .map(|w| format!("{w:.3}"))
        .unwrap_or_default();
    let cpu = r
        .proxy_cpu_us_per_txn
        .map(|c| format!("{c:.1}"))
        .unwrap_or_default();
    let pg = r
        .pg_cpu_us_per_txn
        .map(|c| format!("{c:.1}"))
        .unwrap_or_default();
    let failed = match &r.outcome.error {
        Some(e) => format!("  FAILED: {e}"),
        None => String::new(),
    };
    println!(
        "{:<22} {:<9} {:>4} {:<10} {:>10.0} {:>10.3} {:>12} {:>14} {:>12}{failed}",
        r.workload.label(),
        r.mode,
        r.clients,
        r.who.label(),
        r.outcome.tps,
        r.outcome.latency_ms,
        writes,
        cpu,
        pg
    );
}

fn row_json(r: &Row) -> Value {
    json!({
        "workload": r.workload.label(),
        "mode": r.mode,
        "clients": r.clients,
        "target": r.who.label(),
        "tps": r.outcome.tps,
        "latency_avg_ms": r.outcome.latency_ms,
        "transactions": r.outcome.transactions,
        "failed_transactions": r.outcome.failed,
        "error": r.outcome.error,
        "upstream_writes": r.upstream_writes,
        "identities_injected": r.identities,
        "upstream_writes_per_transaction": r.writes_per_txn(),
        "proxy_cpu_us_per_transaction": r.proxy_cpu_us_per_txn,
        "postgres_cpu_us_per_transaction": r.pg_cpu_us_per_txn,
    })
}

/// tps of one cell, when it ran cleanly.
fn tps(rows: &[Row], w: Workload, mode: &str, c: u32, who: Who) -> Option<f64> {
    rows.iter()
        .find(|r| r.workload == w && r.mode == mode && r.clients == c && r.who == who)
        .filter(|r| r.outcome.error.is_none() && r.outcome.tps > 0.0)
        .map(|r| r.outcome.tps)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x"))
        .unwrap_or_else(|| "n/a".into())
}

/// rowgate/direct and rowgate/PgBouncer per workload and client count, and
/// rowgate against the safe-identity script through PgBouncer and direct.
fn print_ratios(rows: &[Row], clients: &[u32], report: &mut Value) {
    println!(
        "\n{:<22} {:<9} {:>4} {:>16} {:>18}",
        "workload", "mode", "-c", "rowgate/direct", "rowgate/pgbouncer"
    );
    let mut out = Vec::new();
    for &(w, mode) in REPORTED_CELLS {
        for &c in clients {
            let rg = tps(rows, w, mode, c, Who::Rowgate);
            let d = ratio(rg, tps(rows, w, mode, c, Who::Direct));
            let b = ratio(rg, tps(rows, w, mode, c, Who::PgBouncer));
            println!(
                "{:<22} {:<9} {:>4} {:>16} {:>18}",
                w.label(),
                mode,
                c,
                fmt_ratio(d),
                fmt_ratio(b)
            );
            out.push(json!({"workload": w.label(), "mode": mode, "clients": c,
                "rowgate_over_direct": d, "rowgate_over_pgbouncer": b}));
        }
    }
    report["ratios"] = Value::Array(out);

    println!(
        "\nrowgate select-only (identity injected) vs the safe-identity script (BEGIN; set_config x3; SELECT; COMMIT):"
    );
    println!(
        "{:<9} {:>4} {:>26} {:>24}",
        "mode", "-c", "vs script via pgbouncer", "vs script direct"
    );
    let mut safe = Vec::new();
    for mode in ["simple", "extended"] {
        for &c in clients {
            let rg = tps(rows, Workload::SelectOnly, mode, c, Who::Rowgate);
            let b = ratio(
                rg,
                tps(rows, Workload::SafeIdentity, mode, c, Who::PgBouncer),
            );
            let d = ratio(rg, tps(rows, Workload::SafeIdentity, mode, c, Who::Direct));
            println!("{mode:<9} {c:>4} {:>26} {:>24}", fmt_ratio(b), fmt_ratio(d));
            safe.push(json!({"mode": mode, "clients": c,
                "rowgate_over_safe_via_pgbouncer": b, "rowgate_over_safe_direct": d}));
        }
    }
    report["rowgate_vs_safe_identity"] = Value::Array(safe);
}

/// Upstream writes per transaction through rowgate, against the client's
/// own round trips: the difference is what identity injection added.
fn print_round_trips(rows: &[Row], report: &mut Value) {
    println!("\nround trips through rowgate (from /metrics): upstream writes per transaction");
    println!(
        "{:<22} {:<9} {:>4} {:>12} {:>14} {:>10} {:>12}",
        "workload", "mode", "-c", "writes/txn", "client rt/txn", "extra", "identities"
    );
    let mut out = Vec::new();
    let mut worst: f64 = 0.0;
    for r in rows.iter().filter(|r| r.who == Who::Rowgate) {
        let Some(w) = r.writes_per_txn() else {
            continue;
        };
        let client = r.workload.round_trips();
        let extra = w - client;
        worst = worst.max(extra);
        let ids = r.identities.unwrap_or(0.0) / (r.outcome.transactions.max(1) as f64);
        println!(
            "{:<22} {:<9} {:>4} {:>12.3} {:>14.0} {:>10.3} {:>12.3}",
            r.workload.label(),
            r.mode,
            r.clients,
            w,
            client,
            extra,
            ids
        );
        out.push(
            json!({"workload": r.workload.label(), "mode": r.mode, "clients": r.clients,
            "upstream_writes_per_transaction": w, "client_round_trips_per_transaction": client,
            "extra": extra, "identities_per_transaction": ids}),
        );
    }
    report["round_trips"] = json!({"runs": out, "max_extra_per_transaction": worst});
}

/// Idle clients' memory and a connect storm, against a fresh `rowgate
/// serve` so its RSS is only theirs.
async fn connection_scale(
    args: &Args,
    cluster: &Cluster,
    signer: &Signer,
) -> Result<Value, String> {
    let rowgate = RowgateProcess::start(
        &cluster.authenticator_url(),
        args.pool,
        signer.public_pem_path(),
    )?;
    println!(
        "\nsigning {} tokens for the idle clients and {} for the storm ...",
        args.idle_clients, args.storm
    );
    let idle_tokens = sign_many(signer, "user_idle", args.idle_clients);
    let storm_tokens = sign_many(signer, "user_storm", args.storm);

    // One client first, so the pool's first connection and the runtime's
    // threads exist before the baseline is taken.
    let warm = scale::handshake(rowgate.port, &cluster.db, &idle_tokens[0]).await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = rowgate.pid();
    let rss_before = proc::proc_status_bytes(pid, "VmRSS")?;

    println!("opening {} idle clients ...", args.idle_clients);
    let mut idle = scale::open_many(rowgate.port, &cluster.db, &idle_tokens, 256).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc::proc_status_bytes(pid, "VmRSS")?;
    let hwm = proc::proc_status_bytes(pid, "VmHWM")?;
    let mut alive = 0;
    let sample = idle.streams.len().min(20);
    let step = (idle.streams.len() / sample.max(1)).max(1);
    for i in (0..idle.streams.len()).step_by(step).take(sample) {
        if scale::still_alive(&mut idle.streams[i]).await {
            alive += 1;
        }
    }
    let held = idle.streams.len();
    let per_client = (rss_idle.saturating_sub(rss_before)) as f64 / held.max(1) as f64;
    println!(
        "idle clients: {held} held ({} failed{}), {alive}/{sample} sampled still answer; rowgate RSS {:.1} MB before, {:.1} MB with them (peak {:.1} MB): {:.1} KB per client",
        idle.failures,
        idle.first_failure.as_deref().map(|f| format!(", first: {f}")).unwrap_or_default(),
        mb(rss_before),
        mb(rss_idle),
        mb(hwm),
        per_client / 1024.0
    );
    drop(idle.streams);
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!(
        "connect storm: {} new connections, fresh tokens, {} at a time ...",
        args.storm, args.storm_concurrency
    );
    let storm = scale::open_many(
        rowgate.port,
        &cluster.db,
        &storm_tokens,
        args.storm_concurrency,
    )
    .await;
    let ok = storm.streams.len();
    let cps = ok as f64 / storm.wall.as_secs_f64().max(1e-9);
    println!(
        "connect storm: {ok} connected ({} failed{}) in {:.2} s: {:.0} connects/s, handshake p50 {:.2} ms, p99 {:.2} ms",
        storm.failures,
        storm.first_failure.as_deref().map(|f| format!(", first: {f}")).unwrap_or_default(),
        storm.wall.as_secs_f64(),
        cps,
        quantile(&storm.latency_us, 0.5) as f64 / 1000.0,
        quantile(&storm.latency_us, 0.99) as f64 / 1000.0
    );
    Ok(json!({
        "idle": {
            "requested": args.idle_clients,
            "held": held,
            "failed": idle.failures,
            "first_failure": idle.first_failure,
            "sampled_alive": alive,
            "sampled": sample,
            "rss_before_bytes": rss_before,
            "rss_with_idle_bytes": rss_idle,
            "rss_peak_bytes": hwm,
            "rss_per_client_bytes": per_client,
            "open_seconds": idle.wall.as_secs_f64(),
        },
        "storm": {
            "connections": args.storm,
            "concurrency": args.storm_concurrency,
            "connected": ok,
            "failed": storm.failures,
            "first_failure": storm.first_failure,
            "seconds": storm.wall.as_secs_f64(),
            "connects_per_second": cps,
            "handshake_p50_ms": quantile(&storm.latency_us, 0.5) as f64 / 1000.0,
            "handshake_p99_ms": quantile(&storm.latency_us, 0.99) as f64 / 1000.0,
        }
    }))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `n` tokens for distinct users, signed on every core.
fn sign_many(signer: &Signer, prefix: &str, n: usize) -> Vec<String> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .collect::<Vec<_>>()
            .chunks(chunk)
            .map(|ids| {
                let ids = ids.to_vec();
                s.spawn(move || {
                    ids.into_iter()
                        .map(|i| {
                            signer.sign(&signer.claims(&format!("{prefix}_{i:05}"), "org_scale"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Issue 15's targets, each MET or MISSED with the number behind it.
fn print_targets(report: &Value) {
    println!("\ntargets:");
    let line = |what: String, value: Option<f64>, ok: &dyn Fn(f64) -> bool, unit: &str| {
        let verdict = match value {
            Some(v) if ok(v) => "MET",
            Some(_) => "MISSED",
            None => "n/a",
        };
        let v = value
            .map(|v| format!("{v:.2}{unit}"))
            .unwrap_or_else(|| "n/a".into());
        println!("  {verdict:<7} {what}: {v}");
    };
    if let Some(cells) = report["cells"].as_array() {
        for c in cells.iter().filter(|c| c["workload"] == "select-only") {
            let at = format!(
                "select-only -M {} @{}",
                c["mode"].as_str().unwrap_or("?"),
                c["clients"]
            );
            let t = &c["tps"];
            let r = t["rowgate"]
                .as_f64()
                .zip(t["pgbouncer"].as_f64())
                .map(|(a, b)| a / b);
            line(
                format!("{at}: rowgate/pgbouncer >= 1.0"),
                r,
                &|v| v >= 1.0,
                "x",
            );
            let p = &c["proxy_cpu_us_per_txn"];
            let r = p["rowgate"]
                .as_f64()
                .zip(p["pgbouncer"].as_f64())
                .map(|(a, b)| a / b);
            line(
                format!("{at}: rowgate CPU/txn <= pgbouncer's (ratio)"),
                r,
                &|v| v <= 1.0,
                "x",
            );
            let g = &c["postgres_cpu_us_per_txn"];
            let r = g["rowgate"]
                .as_f64()
                .zip(g["pgbouncer"].as_f64())
                .map(|(a, b)| a / b);
            line(
                format!("{at}: PostgreSQL CPU/txn via rowgate <= 1.1x via pgbouncer"),
                r,
                &|v| v <= 1.1,
                "x",
            );
        }
    }
    if report.get("ratios").is_some() {
        if let Some(a) = report["rowgate_vs_safe_identity"].as_array() {
            for r in a {
                line(
                    format!(
                        "rowgate >= 3x safe-identity via pgbouncer (-M {} @{})",
                        r["mode"].as_str().unwrap_or("?"),
                        r["clients"]
                    ),
                    r["rowgate_over_safe_via_pgbouncer"].as_f64(),
                    &|v| v >= 3.0,
                    "x",
                );
            }
        }
        line(
            "extra upstream round trips per transaction = 0 (max over runs)".into(),
            report["round_trips"]["max_extra_per_transaction"].as_f64(),
            &|v| v < 0.01,
            "",
        );
    }
    if report.get("scale").is_some() {
        let idle = &report["scale"]["idle"];
        let held = idle["held"].as_u64().unwrap_or(0);
        let rss = idle["rss_with_idle_bytes"].as_f64().map(|b| b / 1048576.0);
        line(
            format!("{held} idle clients in <= 30 MB RSS (<= 2 KB each over the base)"),
            rss.filter(|_| held >= idle["requested"].as_u64().unwrap_or(0)),
            &|v| v <= 30.0,
            " MB",
        );
    }
}
