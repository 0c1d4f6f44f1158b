//! Process-wide metrics, on the `metrics` crate and rendered by
//! `metrics-exporter-prometheus` in the Prometheus text format.
//!
//! Every name and label is a `&'static str`, so no caller can ever put a
//! token, a user id or SQL (or any other peer-controlled string) into a
//! metric. Names ending in `_total` are counters, other names given to
//! [`incr`]/[`add`]/[`set`] are gauges, and [`observe`] feeds histograms
//! (seconds).
//!
//! The recorder is rowgate's own (not installed globally): a host process
//! embedding rowgate (the tests, a bench) may install its own recorder, and
//! rowgate's `/metrics` still shows exactly rowgate's metrics. Each metric
//! also keeps an atomic mirror so [`get`] and the admin console can read a
//! value without parsing the text format.

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

type Name = (&'static str, &'static str);

/// Where a `(name, label)` pair's bytes are: the key of each thread's
/// cache of handles. Every name and label is a `&'static str`, so its
/// address and length identify it without reading (or hashing) its bytes;
/// two copies of one literal at different addresses are two entries that
/// lead to the same metric, found by content in the process-wide registry.
type Site = (usize, usize, usize, usize);

fn site(name: &'static str, label: &'static str) -> Site {
    (
        name.as_ptr() as usize,
        name.len(),
        label.as_ptr() as usize,
        label.len(),
    )
}

/// The threads' caches are looked up on every counted event; their keys
/// are addresses, which need no protection against chosen collisions.
type SiteMap<V> = HashMap<Site, V, foldhash::fast::FixedState>;

/// Histogram buckets in seconds: from 100 µs (a cached JWT, an idle pooled
/// connection) to 30 s (a Neon cold start behind a long acquire timeout).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static METADATA: Metadata<'static> =
    Metadata::new("rowgate", metrics::Level::INFO, Some(module_path!()));

fn recorder() -> &'static PrometheusRecorder {
    static REC: OnceLock<PrometheusRecorder> = OnceLock::new();
    REC.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // set_buckets only fails on an empty list.
        let builder = match builder.set_buckets(BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        start_upkeep(recorder.handle());
        recorder
    })
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Drains the histograms every [`UPKEEP_EVERY`] on a thread of its own.
///
/// The exporter keeps each histogram sample in a queue until upkeep folds
/// it into the buckets, and `build_recorder` (unlike `install`) starts no
/// upkeep: without it, a rowgate nobody scrapes grew by about 50 bytes per
/// transaction (0.8 MB/s at 15k tps). A thread rather than a task, so the
/// drain runs whatever the runtime (or none, in a test) is doing.
fn start_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("rowgate-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        // Scrapes still drain the queues; say why memory may grow.
        tracing::warn!("metrics upkeep thread not started ({e}): histograms are drained only when /metrics is scraped");
    }
}

/// A counter or gauge and its mirror.
struct Scalar {
    mirror: AtomicI64,
    handle: ScalarHandle,
}

enum ScalarHandle {
    Counter(Counter),
    Gauge(Gauge),
}

/// A histogram and the mirrors the admin console reads (count, sum).
struct Hist {
    count: AtomicU64,
    sum_micros: AtomicU64,
    handle: Histogram,
}

/// Metrics whose label is a database (its configured name, `*` for the
/// wildcard's): their label key is `database`. Other counters and gauges
/// say `reason`, other histograms `kind`.
const BY_DATABASE: &[&str] = &[
    "rowgate_upstream_connections",
    "rowgate_upstream_connects_total",
    "rowgate_upstream_connect_failures_total",
    "rowgate_pool_acquire_timeouts_total",
    "rowgate_pool_acquire_seconds",
    "rowgate_transaction_duration_seconds",
    "rowgate_cancels_forwarded_total",
];

fn label_key(name: &'static str, otherwise: &'static str) -> &'static str {
    match name {
        n if BY_DATABASE.contains(&n) => "database",
        "rowgate_server_errors_total" => "class",
        "rowgate_bytes_total" => "direction",
        _ => otherwise,
    }
}

fn key(name: &'static str, label_key: &'static str, label: &'static str) -> Key {
    if label.is_empty() {
        Key::from_static_name(name)
    } else {
        Key::from_parts(name, vec![Label::from_static_parts(label_key, label)])
    }
}

fn scalars() -> &'static Mutex<BTreeMap<Name, &'static Scalar>> {
    static REG: OnceLock<Mutex<BTreeMap<Name, &'static Scalar>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn hists() -> &'static Mutex<BTreeMap<Name, &'static Hist>> {
    static REG: OnceLock<Mutex<BTreeMap<Name, &'static Hist>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The counter or gauge `name{reason="label"}` (label may be empty),
/// created on first use; it lives for the whole process.
///
/// Hot paths count every transaction, so each thread keeps its own map of
/// metrics it has used: after the first use, no lock is taken.
fn scalar(name: &'static str, label: &'static str) -> &'static Scalar {
    thread_local! {
        static SEEN: std::cell::RefCell<SiteMap<&'static Scalar>> =
            std::cell::RefCell::new(SiteMap::default());
    }
    if let Some(s) = SEEN.with(|s| s.borrow().get(&site(name, label)).copied()) {
        return s;
    }
    let s = {
        let mut reg = scalars().lock().unwrap_or_else(|p| p.into_inner());
        *reg.entry((name, label)).or_insert_with(|| {
            let k = key(name, label_key(name, "reason"), label);
            let handle = if name.ends_with("_total") {
                ScalarHandle::Counter(recorder().register_counter(&k, &METADATA))
            } else {
                ScalarHandle::Gauge(recorder().register_gauge(&k, &METADATA))
            };
            Box::leak(Box::new(Scalar {
                mirror: AtomicI64::new(0),
                handle,
            }))
        })
    };
    SEEN.with(|m| m.borrow_mut().insert(site(name, label), s));
    s
}

fn hist(name: &'static str, label: &'static str) -> &'static Hist {
    thread_local! {
        static SEEN: std::cell::RefCell<SiteMap<&'static Hist>> =
            std::cell::RefCell::new(SiteMap::default());
    }
    if let Some(h) = SEEN.with(|s| s.borrow().get(&site(name, label)).copied()) {
        return h;
    }
    let h = {
        let mut reg = hists().lock().unwrap_or_else(|p| p.into_inner());
        *reg.entry((name, label)).or_insert_with(|| {
            let handle = recorder()
                .register_histogram(&key(name, label_key(name, "kind"), label), &METADATA);
            Box::leak(Box::new(Hist {
                count: AtomicU64::new(0),
                sum_micros: AtomicU64::new(0),
                handle,
            }))
        })
    };
    SEEN.with(|m| m.borrow_mut().insert(site(name, label), h));
    h
}

/// Adds one to `name{reason="label"}`.
pub fn incr(name: &'static str, label: &'static str) {
    add(name, label, 1);
}

/// Adds `delta` (may be negative, for gauges) to `name{reason="label"}`.
pub fn add(name: &'static str, label: &'static str, delta: i64) {
    let s = scalar(name, label);
    s.mirror.fetch_add(delta, Ordering::Relaxed);
    match &s.handle {
        // A counter never goes down; a negative delta on one is a bug in
        // the caller, shown in the mirror but not exported.
        ScalarHandle::Counter(c) if delta > 0 => c.increment(delta as u64),
        ScalarHandle::Counter(_) => {}
        ScalarHandle::Gauge(g) => g.increment(delta as f64),
    }
}

/// Sets the gauge `name{reason="label"}` to `value` (for values computed
/// when scraped, such as clients by state).
pub fn set(name: &'static str, label: &'static str, value: i64) {
    let s = scalar(name, label);
    s.mirror.store(value, Ordering::Relaxed);
    if let ScalarHandle::Gauge(g) = &s.handle {
        g.set(value as f64);
    }
}

/// Sets the gauge `name{key="label"}` (both may be empty) to `value`; for
/// gauges computed when scraped, such as clients by state.
pub fn set_labeled(name: &'static str, key: &'static str, label: &'static str, value: i64) {
    static REG: OnceLock<Mutex<HashMap<(Name, &'static str), Gauge>>> = OnceLock::new();
    let mut reg = REG
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    reg.entry(((name, key), label))
        .or_insert_with(|| recorder().register_gauge(&self::key(name, key, label), &METADATA))
        .set(value as f64);
}

/// Current value of `name{reason="label"}` (0 if never touched).
pub fn get(name: &'static str, label: &'static str) -> i64 {
    scalar(name, label).mirror.load(Ordering::Relaxed)
}

/// Records one duration in the histogram `name{kind="label"}` (label may
/// be empty), in seconds.
pub fn observe(name: &'static str, label: &'static str, elapsed: Duration) {
    let h = hist(name, label);
    h.count.fetch_add(1, Ordering::Relaxed);
    h.sum_micros
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    h.handle.record(elapsed.as_secs_f64());
}

/// How many durations `name{kind="label"}` has recorded, and their sum.
pub fn observed(name: &'static str, label: &'static str) -> (u64, Duration) {
    let h = hist(name, label);
    (
        h.count.load(Ordering::Relaxed),
        Duration::from_micros(h.sum_micros.load(Ordering::Relaxed)),
    )
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render() -> String {
    let handle = recorder().handle();
    // Histograms are drained into their buckets on upkeep; scrapes are
    // rare enough to do it here rather than on a timer thread.
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render() {
        incr("rowgate_test_total", "");
        incr("rowgate_test_refused_total", "expired");
        incr("rowgate_test_refused_total", "expired");
        add("rowgate_test_gauge", "", 5);
        add("rowgate_test_gauge", "", -2);
        observe("rowgate_test_seconds", "hit", Duration::from_millis(3));
        let text = render();
        assert!(text.contains("rowgate_test_total 1\n"), "{text}");
        assert!(
            text.contains("rowgate_test_refused_total{reason=\"expired\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("rowgate_test_gauge 3\n"), "{text}");
        assert!(
            text.contains("rowgate_test_seconds_count{kind=\"hit\"} 1\n"),
            "{text}"
        );
        assert_eq!(get("rowgate_test_refused_total", "expired"), 2);
        assert_eq!(observed("rowgate_test_seconds", "hit").0, 1);
    }
}
