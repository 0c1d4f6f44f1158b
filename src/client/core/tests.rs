//! The core without sockets: unit tests of what the issue-level behaviours
//! look like on the wire, and a property test (the project's protocol
//! fuzzer) that drives the core with random interleavings of client frames
//! (valid, malformed, every message type) and the replies of a small
//! simulated PostgreSQL backend, checking after every step that
//! - nothing panics;
//! - a connection is given back only when the server has answered
//!   everything sent on it, is not skipping to a Sync, and is idle;
//! - every client statement that reads data runs with the identity set in
//!   its transaction;
//! - the client's statements reach the server in the order it sent them.
//!
//! The simulated backend is deliberately small: it knows the statements
//! the generator produces, the extended protocol's skip-to-Sync rule and
//! the transaction states `I`, `T`, `E`. Real PostgreSQL behaviour is
//! checked by the integration tests (`tests/core_fuzz.rs`, `tests/proxy.rs`).

use super::statements::query_of;
use super::*;
use crate::wire::frontend as fe;
use crate::wire::{next_frame, MAX_MESSAGE_LEN};
use proptest::prelude::*;
use std::collections::HashMap;

/// A Shared for tests: HS256 auth, a pool that never connects (the core
/// does not use it), the default guard.
fn shared() -> Arc<Shared> {
    let toml = r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
url = "postgres://u:p@127.0.0.1:1/db"
pool_size = 1
[auth]
issuer = "https://issuer.test"
hs256_secret = "0123456789abcdef0123456789abcdef"
"#;
    let config = crate::config::Config::from_toml(toml).expect("test config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    Arc::new(rt.block_on(Shared::new(config)).expect("shared"))
}

fn identity() -> Identity {
    Identity {
        subject: "user_a".into(),
        values: vec!["user_a".to_string(), "{}".to_string(), String::new()].into(),
        expires_at: None,
        token_id: "t".into(),
        issuer: String::new(),
    }
}

fn core(shared: &Arc<Shared>) -> Core {
    let database = shared.databases.resolve("db").expect("the test database");
    let mut c = Core::new(
        shared.clone(),
        database,
        (7, 8),
        identity(),
        crate::client::Login::User,
        ClientParams::default(),
        Arc::new(Vec::new()),
    );
    c.client_out().clear();
    c
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = next_frame(&mut buf, MAX_MESSAGE_LEN) {
        out.push(f);
    }
    out
}

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut b = BytesMut::new();
    crate::wire::put_frame(&mut b, tag, |o| o.extend_from_slice(body));
    frames(&b).remove(0)
}

fn query(sql: &str) -> Frame {
    let mut b = BytesMut::new();
    fe::put_query(&mut b, sql);
    frames(&b).remove(0)
}

/// A small PostgreSQL backend: enough of the extended and simple protocol
/// for the statements the generator produces.
#[derive(Default)]
struct SimServer {
    pending: BytesMut,
    replies: BytesMut,
    status: u8,
    /// A transaction block is open (`T` or `E`), not just an implicit one.
    block: bool,
    /// An implicit transaction of the current batch is open.
    implicit: bool,
    skipping: bool,
    identity: bool,
    /// Whether the identity was set when each open savepoint was made.
    savepoints: Vec<bool>,
    statements: HashMap<Vec<u8>, Vec<u8>>,
    portals: HashMap<Vec<u8>, (Vec<u8>, usize)>,
    /// Client SQL executed by simple queries, in order.
    executed: Vec<String>,
    violations: Vec<String>,
}

impl SimServer {
    fn new() -> SimServer {
        SimServer {
            status: b'I',
            ..Default::default()
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Ok(Some(f)) = next_frame(&mut self.pending, MAX_MESSAGE_LEN) {
            self.message(f);
        }
    }

    fn error(&mut self, code: &str) {
        self.replies.extend_from_slice(&backend::error_response(
            backend::Severity::Error,
            code,
            "simulated error",
        ));
        if self.block {
            // Local settings stay until the block ends or a savepoint
            // before them is rolled back to.
            self.status = b'E';
        } else {
            self.implicit = false;
            self.identity = false;
        }
    }

    fn message(&mut self, f: Frame) {
        let tag = f.tag();
        if self.skipping && tag != b'S' {
            return;
        }
        let body = f.body();
        match tag {
            b'P' => {
                let Ok(p) = fe::parse_parts(body) else {
                    return self.extended_error("08P01");
                };
                let sql = query_of(p.spec).to_vec();
                if sql.starts_with(b"rowgate refused") {
                    return self.extended_error("42601");
                }
                if !p.name.is_empty() && self.statements.contains_key(p.name) {
                    return self.extended_error("42P05");
                }
                self.statements.insert(p.name.to_vec(), sql);
                self.replies.extend_from_slice(&backend::parse_complete());
            }
            b'B' => {
                let Ok(b) = fe::bind_parts(body) else {
                    return self.extended_error("08P01");
                };
                let Some(sql) = self.statements.get(b.statement).cloned() else {
                    return self.extended_error("26000");
                };
                let names = b.rest.iter().filter(|&&c| c == b',').count() + 1;
                self.portals.insert(b.portal.to_vec(), (sql, names));
                crate::wire::put_frame(&mut self.replies, b'2', |_| {});
            }
            b'E' => {
                let Ok(t) = std::str::from_utf8(&body[..body.len().saturating_sub(5)]) else {
                    return;
                };
                let Some((sql, names)) = self.portals.get(t.as_bytes()).cloned() else {
                    return self.extended_error("34000");
                };
                self.run(&String::from_utf8_lossy(&sql), names, true);
            }
            b'D' => {
                crate::wire::put_frame(&mut self.replies, b't', |b| {
                    b.extend_from_slice(&0i16.to_be_bytes())
                });
                crate::wire::put_frame(&mut self.replies, b'n', |_| {});
            }
            b'C' => {
                if let Ok(t) = fe::target(body, "Close") {
                    if t.kind == b'S' {
                        self.statements.remove(t.name);
                    } else {
                        self.portals.remove(t.name);
                    }
                }
                self.replies.extend_from_slice(&backend::close_complete());
            }
            b'H' if !body.is_empty() => self.extended_error("08P01"),
            b'H' => {}
            b'S' => {
                self.skipping = false;
                if !body.is_empty() {
                    // pq_getmsgend: an error, and still a ReadyForQuery.
                    self.error("08P01");
                }
                self.end_implicit();
                self.ready();
            }
            b'Q' => {
                let sql =
                    String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body)).into_owned();
                for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    if !self.run(stmt, 1, false) {
                        break;
                    }
                }
                self.end_implicit();
                self.ready();
            }
            // Outside COPY, copy messages are accepted and ignored.
            b'd' | b'f' | b'c' => {}
            b'X' => {}
            other => self
                .violations
                .push(format!("server got message {:?}", other as char)),
        }
    }

    fn extended_error(&mut self, code: &str) {
        self.error(code);
        self.skipping = true;
    }

    fn end_implicit(&mut self) {
        if !self.block {
            self.implicit = false;
            self.identity = false;
            self.status = b'I';
            // Portals end with their transaction.
            self.portals.clear();
        }
    }

    fn ready(&mut self) {
        self.replies
            .extend_from_slice(&backend::ready_for_query(self.status));
    }

    /// Runs one statement; false on error.
    fn run(&mut self, sql: &str, names: usize, extended: bool) -> bool {
        let lower = sql.to_ascii_lowercase();
        let tag = |s: &mut SimServer, t: &str| {
            crate::wire::put_frame(&mut s.replies, b'C', |b| {
                b.extend_from_slice(t.as_bytes());
                b.extend_from_slice(&[0]);
            });
        };
        if self.status == b'E' {
            if lower.starts_with("rollback") || lower.starts_with("commit") {
                if lower.starts_with("rollback to") {
                    let Some(&id) = self.savepoints.last() else {
                        self.error("3B001");
                        if extended {
                            self.skipping = true;
                        }
                        return false;
                    };
                    self.identity = id;
                    self.status = b'T';
                } else {
                    self.savepoints.clear();
                    self.status = b'I';
                    self.block = false;
                    self.identity = false;
                }
                tag(self, "ROLLBACK");
                return true;
            }
            self.error("25P02");
            if extended {
                self.skipping = true;
            }
            return false;
        }
        if !self.block {
            self.implicit = true;
        }
        let fail = |s: &mut SimServer| {
            s.error("22012");
            if extended {
                s.skipping = true;
            }
            false
        };
        if lower.contains("set_config(n, v, true)") || lower.contains("set_config($") {
            self.identity = true;
            tag(self, "SELECT 0");
        } else if lower.starts_with("select current_setting") {
            for _ in 0..names {
                crate::wire::put_frame(&mut self.replies, b'D', |b| {
                    b.extend_from_slice(&2i16.to_be_bytes());
                    for v in ["x", "t"] {
                        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        b.extend_from_slice(v.as_bytes());
                    }
                });
            }
            tag(self, "SELECT 1");
        } else if lower.starts_with("begin") {
            self.block = true;
            self.status = b'T';
            tag(self, "BEGIN");
        } else if lower.starts_with("commit")
            || (lower.starts_with("rollback") && !lower.contains(" to "))
        {
            self.block = false;
            self.status = b'I';
            self.identity = false;
            self.implicit = false;
            self.portals.clear();
            self.savepoints.clear();
            tag(
                self,
                if lower.starts_with("commit") {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                },
            );
        } else if lower.starts_with("savepoint") {
            if !self.block {
                return fail(self);
            }
            if !self.identity {
                self.violations
                    .push("a savepoint was made before the identity".into());
            }
            self.savepoints.push(self.identity);
            tag(self, "SAVEPOINT");
        } else if lower.starts_with("release") {
            if !self.block || self.savepoints.pop().is_none() {
                return fail(self);
            }
            tag(self, "RELEASE");
        } else if lower.starts_with("rollback to") {
            let Some(&id) = self.savepoints.last().filter(|_| self.block) else {
                return fail(self);
            };
            self.identity = id;
            tag(self, "ROLLBACK");
        } else if lower.starts_with("reset") || lower.starts_with("discard") {
            tag(self, "RESET");
        } else if lower.starts_with("set ") || lower.starts_with("select") {
            if !self.identity {
                self.violations
                    .push(format!("{sql:?} ran without identity"));
            }
            if !extended {
                self.executed.push(sql.to_owned());
            }
            if lower.contains("1/0") {
                return fail(self);
            }
            tag(
                self,
                if lower.starts_with("set") {
                    "SET"
                } else {
                    "SELECT 1"
                },
            );
        } else {
            return fail(self);
        }
        true
    }
}

/// One step of a fuzzed session.
#[derive(Clone, Debug)]
enum Step {
    Client(Vec<u8>),
    /// Deliver up to this many whole server messages.
    Server(usize),
    /// The pool lends a connection now, or fails to.
    Lend(bool),
}

const SQL: &[&str] = &[
    "select 1",
    "select 1/0",
    "begin",
    "commit",
    "rollback",
    "savepoint a",
    "rollback to savepoint a",
    "release savepoint a",
    "set application_name = 'x'",
    "select 2; select 3",
    "begin; select 4",
    "select 5; commit",
];

fn client_message() -> impl Strategy<Value = Vec<u8>> {
    let sql = proptest::sample::select(SQL);
    let names = proptest::sample::select(&["", "s1", "s2"][..]);
    prop_oneof![
        4 => sql.clone().prop_map(|s| { let mut b = BytesMut::new(); fe::put_query(&mut b, s); b.to_vec() }),
        3 => (names.clone(), sql.clone()).prop_map(|(n, s)| {
            let mut b = BytesMut::new();
            fe::put_parse(&mut b, n.as_bytes(), &fe::parse_spec(s.as_bytes()));
            b.to_vec()
        }),
        3 => names.clone().prop_map(|n| { let mut b = BytesMut::new(); fe::put_bind(&mut b, b"", n.as_bytes(), &[0, 0, 0, 0, 0, 0]); b.to_vec() }),
        3 => Just({ let mut b = BytesMut::new(); fe::put_execute(&mut b, b""); b.to_vec() }),
        1 => names.clone().prop_map(|n| { let mut b = BytesMut::new(); fe::put_target(&mut b, b'D', b'S', n.as_bytes()); b.to_vec() }),
        1 => names.prop_map(|n| { let mut b = BytesMut::new(); fe::put_target(&mut b, b'C', b'S', n.as_bytes()); b.to_vec() }),
        3 => Just({ let mut b = BytesMut::new(); fe::put_sync(&mut b); b.to_vec() }),
        1 => Just({ let mut b = BytesMut::new(); fe::put_flush(&mut b); b.to_vec() }),
        // Malformed or out of place.
        1 => proptest::sample::select(&[b'H', b'S', b'c', b'd', b'f'][..]).prop_map(|t| frame(t, b"junk").as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|t| frame(t, b"").as_bytes().to_vec()),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => client_message().prop_map(Step::Client),
        4 => (1usize..6).prop_map(Step::Server),
        1 => Just(Step::Lend(true)),
        1 => Just(Step::Lend(false)),
    ]
}

/// Drives a core and a simulated server through `steps`, with one pooled
/// connection (the simulated server keeps its state across lends, as a
/// pooled backend does). Returns the violations found.
fn drive(shared: &Arc<Shared>, steps: &[Step]) -> Vec<String> {
    let mut c = core(shared);
    let mut sim = SimServer::new();
    let mut held = false;
    let mut acquiring = false;
    let mut sent_sql: Vec<String> = Vec::new();
    let mut violations = Vec::new();
    let mut conn_state = Some(ConnState::default());
    let process_actions = |c: &mut Core,
                           sim: &mut SimServer,
                           held: &mut bool,
                           acquiring: &mut bool,
                           conn_state: &mut Option<ConnState>,
                           violations: &mut Vec<String>| {
        while let Some(a) = c.next_action() {
            match a {
                Action::Acquire => *acquiring = true,
                // A user login: in-band tokens are refused, never verified.
                Action::Verify(_) => violations.push("a user login asked to verify a token".into()),
                Action::Release(state) => {
                    if !sim.replies.is_empty()
                        || sim.skipping
                        || sim.status != b'I'
                        || !sim.pending.is_empty()
                    {
                        violations.push(format!(
                            "released out of sync: {} reply bytes unread, skipping {}, status {}",
                            sim.replies.len(),
                            sim.skipping,
                            sim.status as char
                        ));
                    }
                    *held = false;
                    *conn_state = Some(state);
                }
                Action::Close => {
                    // A closed connection's backend ends; the pool makes a new one.
                    *held = false;
                    *sim = SimServer::new();
                    *conn_state = Some(ConnState::default());
                }
            }
        }
    };
    for s in steps {
        match s {
            Step::Client(bytes) => {
                if !c.wants_client() {
                    continue;
                }
                for f in frames(bytes) {
                    if f.tag() == b'Q' {
                        let body = f.body();
                        let sql = String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body))
                            .into_owned();
                        sent_sql.extend(
                            sql.split(';')
                                .map(|x| x.trim().to_owned())
                                .filter(|x| !x.is_empty()),
                        );
                    }
                    c.on_client(f);
                }
            }
            Step::Server(n) => {
                for _ in 0..*n {
                    let Ok(Some(f)) = next_frame(&mut sim.replies, MAX_MESSAGE_LEN) else {
                        break;
                    };
                    if held {
                        c.on_server(f);
                    }
                }
            }
            Step::Lend(ok) => {
                if acquiring {
                    acquiring = false;
                    if *ok {
                        held = true;
                        c.attach(conn_state.take().unwrap_or_default());
                    } else {
                        c.attach_failed("53300", "no connection");
                    }
                }
            }
        }
        process_actions(
            &mut c,
            &mut sim,
            &mut held,
            &mut acquiring,
            &mut conn_state,
            &mut violations,
        );
        let out = std::mem::take(c.server_out());
        if held {
            sim.feed(&out);
        } else if !out.is_empty() {
            violations.push("bytes for the server with no connection".into());
        }
        c.client_out().clear();
        if c.finished() {
            break;
        }
    }
    // The client leaves; what it left is rolled back or closed.
    c.client_gone(End::ClientGone);
    for _ in 0..100 {
        process_actions(
            &mut c,
            &mut sim,
            &mut held,
            &mut acquiring,
            &mut conn_state,
            &mut violations,
        );
        let out = std::mem::take(c.server_out());
        if held {
            sim.feed(&out);
        }
        match next_frame(&mut sim.replies, MAX_MESSAGE_LEN) {
            Ok(Some(f)) if held => c.on_server(f),
            _ => break,
        }
    }
    process_actions(
        &mut c,
        &mut sim,
        &mut held,
        &mut acquiring,
        &mut conn_state,
        &mut violations,
    );
    violations.extend(sim.violations);
    // Order: what ran is a subsequence of what the client sent.
    let mut it = sent_sql.iter();
    for ran in &sim.executed {
        if !it.any(|s| s == ran) {
            violations.push(format!("{ran:?} ran out of order"));
            break;
        }
    }
    violations
}

proptest! {
    // A fixed seed unless ROWGATE_FUZZ_SEED says otherwise, so that CI runs
    // the same sessions every time (long runs pick their own seeds).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("ROWGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("ROWGATE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed),
        ),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn fuzzed_sessions_keep_the_connection_in_sync(steps in proptest::collection::vec(step(), 1..60)) {
        let shared = SHARED.with(|s| s.clone());
        let v = drive(&shared, &steps);
        prop_assert!(v.is_empty(), "{v:?}");
    }
}

thread_local! {
    static SHARED: Arc<Shared> = shared();
}

#[test]
fn a_malformed_flush_between_transactions_is_answered_without_a_connection() {
    let s = shared();
    let mut c = core(&s);
    c.on_client(frame(b'H', b"x"));
    assert!(
        c.next_action().is_none(),
        "no connection for a malformed Flush"
    );
    assert!(c.server_out().is_empty());
    let reply = std::mem::take(c.client_out());
    let f = frames(&reply);
    assert_eq!(f[0].tag(), b'E');
    assert!(String::from_utf8_lossy(f[0].body()).contains("08P01"));
    // Like PostgreSQL: discarded until Sync, which gets ReadyForQuery.
    c.on_client(query("select 1"));
    assert!(c.client_out().is_empty() && c.next_action().is_none());
    c.on_client(frame(b'S', b""));
    assert_eq!(frames(c.client_out())[0].tag(), b'Z');
}

#[test]
fn an_error_with_nothing_in_flight_closes_the_connection() {
    let s = shared();
    let mut c = core(&s);
    let mut sim = SimServer::new();
    c.on_client(query("select 1"));
    assert!(matches!(c.next_action(), Some(Action::Acquire)));
    c.attach(ConnState::default());
    sim.feed(&std::mem::take(c.server_out()));
    while let Ok(Some(f)) = next_frame(&mut sim.replies, MAX_MESSAGE_LEN) {
        c.on_server(f);
    }
    assert!(matches!(c.next_action(), Some(Action::Release(_))));
    // The same connection, lent again and then sent a stray error.
    c.on_client(query("begin"));
    assert!(matches!(c.next_action(), Some(Action::Acquire)));
    c.attach(ConnState::default());
    sim.feed(&std::mem::take(c.server_out()));
    while let Ok(Some(f)) = next_frame(&mut sim.replies, MAX_MESSAGE_LEN) {
        c.on_server(f);
    }
    c.on_server(frame(b'E', b"SERROR\0C57P01\0Mgone\0\0"));
    assert!(matches!(c.next_action(), Some(Action::Close)));
    assert!(
        c.ended().is_some(),
        "a client inside a transaction loses it"
    );
}

#[test]
fn pipelined_autocommit_queries_go_out_without_waiting() {
    let s = shared();
    let mut c = core(&s);
    c.on_client(query("select 1"));
    assert!(matches!(c.next_action(), Some(Action::Acquire)));
    c.attach(ConnState::default());
    for _ in 0..3 {
        assert!(c.wants_client());
        c.on_client(query("select 1"));
    }
    let out = std::mem::take(c.server_out());
    let sent = frames(&out);
    let queries = sent.iter().filter(|f| f.tag() == b'Q').count();
    let identities = sent.iter().filter(|f| f.tag() == b'E').count();
    assert_eq!(queries, 4);
    assert_eq!(identities, 4, "each autocommit query has its own identity");
    let mut sim = SimServer::new();
    sim.feed(&out);
    while let Ok(Some(f)) = next_frame(&mut sim.replies, MAX_MESSAGE_LEN) {
        c.on_server(f);
    }
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(matches!(c.next_action(), Some(Action::Release(_))));
    let replies = std::mem::take(c.client_out());
    assert_eq!(
        frames(&replies).iter().filter(|f| f.tag() == b'Z').count(),
        4
    );
}

#[test]
fn a_session_set_holds_the_next_batch_until_it_is_read_back() {
    let s = shared();
    let mut c = core(&s);
    c.on_client(query("set application_name = 'x'"));
    c.next_action();
    c.attach(ConnState::default());
    assert!(!c.wants_client(), "the SET's outcome must be known first");
}

#[test]
fn a_query_after_a_bound_but_unexecuted_begin_gets_its_identity() {
    // Found by the fuzzer (seed 1, 50,000 cases): BEGIN is bound but never
    // executed, so the simple query in the same unsynced batch ends the
    // implicit transaction; the next query is a transaction of its own.
    let raw = |tag: u8, body: &[u8]| frame(tag, body).as_bytes().to_vec();
    let steps = [
        Step::Client(raw(b'Q', b"select 1\0")),
        Step::Lend(false),
        Step::Client(raw(b'P', b"s2\0begin\0\0\0")),
        Step::Lend(true),
        Step::Client(raw(b'B', b"\0s2\0\0\0\0\0\0\0")),
        Step::Client(raw(b'Q', b"select 1\0")),
        Step::Client(raw(b'Q', b"set application_name = 'x'\0")),
        Step::Server(3),
        Step::Server(2),
        Step::Server(3),
        Step::Server(4),
    ];
    let violations = drive(&shared(), &steps);
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
#[ignore = "a measurement: cargo test --lib task_sizes -- --ignored --nocapture"]
fn task_sizes() {
    let s = shared();
    let (a, _b) = tokio::io::duplex(64);
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let whole = crate::client::serve_stream(
        crate::wire::stream::Stream::Duplex(a),
        peer,
        false,
        s.clone(),
    );
    eprintln!(
        "client task future: {} bytes",
        std::mem::size_of_val(&whole)
    );
    eprintln!("Core: {} bytes", std::mem::size_of::<Core>());
}
