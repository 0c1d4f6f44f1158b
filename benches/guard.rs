//! What the guard costs per statement, on each of its paths: the lexical
//! pre-check that lets most statements through, a cache hit, and the full
//! parse with libpg_query (plus, for comparison, libpg_query's parse alone).
//!
//! Run: `cargo bench --bench guard`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rowgate::guard::{Guard, GuardConfig, Path};

/// pgbench's select-only transaction, as its simple protocol sends it.
const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
/// pgbench's TPC-B update: contains SET, so the pre-check sends it on.
const PGBENCH_UPDATE: &str =
    "UPDATE pgbench_accounts SET abalance = abalance + -4211 WHERE aid = 48213;";
/// A 180-character select with a join, the size the brief measured.
const SELECT_180: &str = "SELECT a.aid, a.abalance, b.bbalance, t.tbalance FROM pgbench_accounts a \
     JOIN pgbench_branches b ON b.bid = a.bid JOIN pgbench_tellers t ON t.bid = b.bid WHERE a.aid = 48213";

fn bench(c: &mut Criterion) {
    let guard = Guard::new(&GuardConfig::default()).unwrap();
    assert_eq!(
        guard.check_path(PGBENCH_SELECT.as_bytes()).1,
        Path::PreCheck
    );
    assert_eq!(guard.check_path(SELECT_180.as_bytes()).1, Path::PreCheck);
    guard.check(PGBENCH_UPDATE.as_bytes()).unwrap();
    assert_eq!(guard.check_path(PGBENCH_UPDATE.as_bytes()).1, Path::Cached);

    let mut g = c.benchmark_group("guard");
    g.bench_function("precheck_pass/pgbench_select", |b| {
        b.iter(|| guard.check(black_box(PGBENCH_SELECT.as_bytes())))
    });
    g.bench_function("precheck_pass/select_180", |b| {
        b.iter(|| guard.check(black_box(SELECT_180.as_bytes())))
    });
    g.bench_function("cache_hit/pgbench_update", |b| {
        b.iter(|| guard.check(black_box(PGBENCH_UPDATE.as_bytes())))
    });
    g.bench_function("full_parse/pgbench_select", |b| {
        b.iter(|| guard.check_parsed(black_box(PGBENCH_SELECT.as_bytes())))
    });
    g.bench_function("full_parse/pgbench_update", |b| {
        b.iter(|| guard.check_parsed(black_box(PGBENCH_UPDATE.as_bytes())))
    });
    g.bench_function("full_parse/select_180", |b| {
        b.iter(|| guard.check_parsed(black_box(SELECT_180.as_bytes())))
    });
    g.bench_function("libpg_query_parse_only/select_180", |b| {
        b.iter(|| pg_query::parse(black_box(SELECT_180), 0).map(|_| ()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
