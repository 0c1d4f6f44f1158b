//! The leak benchmark's outputs: a terminal table, a JSON file and an SVG
//! chart the README can show.

use super::common::{quantile, xml_escape};
use super::workload::{Stats, OPS};
use serde_json::{json, Value};
use std::time::Duration;

/// Everything measured against one target.
pub struct TargetResult {
    pub name: String,
    pub via: &'static str,
    pub statements: &'static str,
    pub stats: Stats,
    pub wall: Duration,
    /// False when the time limit stopped the run before its transaction count.
    pub completed: bool,
    latency_sorted: Vec<u64>,
}

impl TargetResult {
    pub fn new(
        name: String,
        via: &'static str,
        statements: &'static str,
        mut stats: Stats,
        wall: Duration,
        completed: bool,
    ) -> TargetResult {
        let mut latency_sorted = std::mem::take(&mut stats.read_latency_us);
        latency_sorted.sort_unstable();
        TargetResult {
            name,
            via,
            statements,
            stats,
            wall,
            completed,
            latency_sorted,
        }
    }

    pub fn leak_rate(&self) -> f64 {
        ratio(self.stats.leaks, self.stats.reads)
    }

    pub fn tps(&self) -> f64 {
        self.stats.transactions as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn p50_ms(&self) -> f64 {
        quantile(&self.latency_sorted, 0.50) as f64 / 1000.0
    }

    fn p99_ms(&self) -> f64 {
        quantile(&self.latency_sorted, 0.99) as f64 / 1000.0
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The table on the terminal, then one example of each kind of finding.
pub fn print_table(results: &[TargetResult]) {
    println!();
    println!(
        "{:<30} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8}",
        "target",
        "txns",
        "reads",
        "leaks",
        "leak rate",
        "no ident",
        "errors",
        "tps",
        "p50 ms",
        "p99 ms"
    );
    println!("{}", "-".repeat(113));
    for r in results {
        let s = &r.stats;
        println!(
            "{:<30} {:>9} {:>9} {:>8} {:>8.3}% {:>9} {:>7} {:>8.0} {:>8.2} {:>8.2}{}",
            r.name,
            s.transactions,
            s.reads,
            s.leaks,
            r.leak_rate() * 100.0,
            s.no_identity,
            s.errors,
            r.tps(),
            r.p50_ms(),
            r.p99_ms(),
            if r.completed { "" } else { "  (time limit)" }
        );
    }
    println!();
    println!("p50/p99: latency of a plain \"read my rows\" request, identity set-up included.");
    for r in results {
        let s = &r.stats;
        println!("{} (via {}; {} statements):", r.name, r.via, r.statements);
        if let Some(l) = &s.first_leak {
            println!("  leak example: {l}");
        }
        if let Some(n) = &s.first_no_identity {
            println!(
                "  no identity ({} reads; RLS showed nothing): {n}",
                s.no_identity
            );
        }
        if let Some(e) = &s.first_error {
            println!("  first error ({} in all): {e}", s.errors);
            let mut kinds: Vec<_> = s.error_kinds.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = kinds
                .iter()
                .take(6)
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            println!("  errors by kind: {}", top.join(", "));
        }
        if s.app_name_bleed > 0 {
            println!(
                "  another client's SET application_name seen in {} reads ({:.2}%)",
                s.app_name_bleed,
                ratio(s.app_name_bleed, s.reads) * 100.0
            );
        }
        println!(
            "  reconnects {}, wall {:.1} s",
            s.reconnects,
            r.wall.as_secs_f64()
        );
    }
}

/// The JSON report.
pub fn to_json(results: &[TargetResult], params: Value) -> Value {
    let targets: Vec<Value> = results
        .iter()
        .map(|r| {
            let s = &r.stats;
            let ops: serde_json::Map<String, Value> = OPS
                .iter()
                .zip(s.ops)
                .map(|((op, _, _), n)| (format!("{op:?}"), json!(n)))
                .collect();
            json!({
                "target": r.name,
                "via": r.via,
                "statements": r.statements,
                "transactions": s.transactions,
                "reads_checked": s.reads,
                "leaks": s.leaks,
                "leak_rate": r.leak_rate(),
                "reads_without_identity": s.no_identity,
                "reads_seeing_another_clients_application_name": s.app_name_bleed,
                "errors": s.errors,
                "reconnects": s.reconnects,
                "wall_seconds": r.wall.as_secs_f64(),
                "tps": r.tps(),
                "read_latency_ms": {"p50": r.p50_ms(), "p99": r.p99_ms()},
                "completed": r.completed,
                "first_leak": s.first_leak,
                "first_no_identity": s.first_no_identity,
                "first_error": s.first_error,
                "errors_by_kind": s.error_kinds,
                "operations": ops,
            })
        })
        .collect();
    json!({ "params": params, "targets": targets })
}

/// A bar chart of leak rates, hand-written SVG (no plotting dependency).
pub fn to_svg(results: &[TargetResult], subtitle: &str) -> String {
    const W: f64 = 760.0;
    const LABEL_W: f64 = 250.0;
    const BAR_W: f64 = 300.0;
    const ROW_H: f64 = 58.0;
    const TOP: f64 = 74.0;
    let h = TOP + ROW_H * results.len() as f64 + 40.0;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="20" y="30" font-size="18" font-weight="bold" fill="#111">Identity leaks per checked read</text>
<text x="20" y="52" font-size="12" fill="#555">{}</text>
"##,
        xml_escape(subtitle)
    );
    for (i, r) in results.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let rate = r.leak_rate();
        let len = (BAR_W * rate).max(if r.stats.leaks > 0 { 2.0 } else { 0.0 });
        let color = if r.stats.leaks == 0 {
            "#2e7d32"
        } else {
            "#c62828"
        };
        out.push_str(&format!(
            r##"<text x="20" y="{ty}" font-size="14" fill="#111">{name}</text>
<text x="20" y="{ty2}" font-size="11" fill="#666">{via}</text>
<rect x="{LABEL_W}" y="{by}" width="{BAR_W}" height="22" fill="#eeeeee"/>
<rect x="{LABEL_W}" y="{by}" width="{len:.1}" height="22" fill="{color}"/>
<text x="{tx}" y="{ty}" font-size="13" font-weight="bold" fill="{color}">{pct}</text>
<text x="{tx}" y="{ty2}" font-size="11" fill="#666">{leaks} of {reads} reads</text>
"##,
            ty = y + 16.0,
            ty2 = y + 32.0,
            by = y + 2.0,
            tx = LABEL_W + BAR_W + 12.0,
            name = xml_escape(&r.name),
            via = xml_escape(r.via),
            pct = format_pct(rate),
            leaks = group(r.stats.leaks),
            reads = group(r.stats.reads),
        ));
    }
    out.push_str(&format!(
        r##"<text x="20" y="{y}" font-size="11" fill="#666">A leak: a row of another user, or another user's value in app.user_id, request.jwt.claims or app.org_id.</text>
</svg>
"##,
        y = h - 16.0
    ));
    out
}

fn format_pct(rate: f64) -> String {
    if rate == 0.0 {
        "0 %".into()
    } else {
        format!("{:.1} %", rate * 100.0)
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
