//! The differential conformance runner (tests/conformance.rs): each case
//! file runs directly against PostgreSQL and through rowgate, and the two
//! transcripts must agree. [`case`] reads the case files, [`wire`] encodes
//! hand-written protocol steps and decodes what the server sent, and this
//! file runs a case on both sides and compares them.
//!
//! Included only by tests/conformance.rs (`#[path]`), so the other test
//! binaries do not compile it.

pub mod case;
pub mod wire;

use crate::support::{pg, proxy_config, rowgate, token, RunningProxy, TestDb};
use bytes::{Bytes, BytesMut};
use case::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};
use wire::*;

pub(crate) fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

// ---------------------------------------------------------------------------
// Running a case on both sides.
// ---------------------------------------------------------------------------

pub(crate) async fn run_case(name: &str, profile: Option<&str>) {
    let path = case_dir().join(format!("{name}.sql"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let case = parse_case(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let wire = case.steps.iter().any(|s| matches!(s.kind, Kind::Wire(_)));
    if wire {
        if let Some(s) = case
            .steps
            .iter()
            .find(|s| !matches!(s.kind, Kind::Wire(_) | Kind::Simple))
        {
            panic!(
                "{name}: a case with wire steps may only have simple SQL besides: {}",
                s.sql
            );
        }
    }
    // The cases check parity with PostgreSQL, DO blocks and functions
    // included, which the default (strict) guard refuses: run them under
    // the standard profile unless they say otherwise.
    // tests/guard_adversarial.rs covers the guard.
    let guard = match profile {
        // A case that needs the guard off says so; strict would refuse it.
        Some(p) if case.guard != "off" => p,
        _ => case.guard.as_str(),
    };
    // The two sides run at once, each in its own database: nothing one
    // does can reach the other, and a case takes half the time.
    let direct_side = async {
        let db = database().await;
        let mut direct = Side::direct(&db, wire).await;
        let want = direct.run(&case.steps, case.pool).await;
        (db, want)
    };
    let proxied_side = async {
        let db = database().await;
        let config =
            proxy_config(&db, case.pool, "") + &format!("[guard]\nprofile = \"{guard}\"\n");
        let proxy = rowgate(&config).await;
        let mut proxied = Side::proxied(&proxy, wire).await;
        let got = proxied.run(&case.steps, case.pool).await;
        drop(proxied);
        (db, proxy, got)
    };
    let ((direct_db, want), (_proxied_db, _proxy, got)) = tokio::join!(direct_side, proxied_side);

    let (want, mut got) = if case.rowgate_answers {
        (without_source_fields(want), without_source_fields(got))
    } else {
        (want, got)
    };
    let major = server_major(&direct_db).await;
    let listed = crate::VERSION_DIFFERS
        .iter()
        .filter(|(on, n, ..)| *n == name && on.includes(major));
    for &(_, _, step, why) in listed {
        assert_ne!(
            want[step - 1], got[step - 1],
            "case {name}, step {step} is listed as differing on PostgreSQL {major} ({why}), but it no longer does: take it off VERSION_DIFFERS"
        );
        got[step - 1] = want[step - 1].clone();
    }
    let refuses = crate::STRICT_REFUSES.iter().find(|(n, _)| *n == name);
    match refuses {
        Some((_, why)) if guard == "strict" => compare_refused(name, why, &want, &got),
        _ => compare(name, &case.steps, &want, &got),
    }
}

/// The server's major version (13, ..., 18).
async fn server_major(db: &TestDb) -> i32 {
    db.admin_client()
        .await
        .query_one(
            "select current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Transcripts with the F (file) and R (routine) fields of errors left out.
pub(crate) fn without_source_fields(t: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let strip = |line: &String| -> String {
        if !line.starts_with("E ") {
            return line.clone();
        }
        line.split(" F=\"")
            .next()
            .map(|head| head.to_string())
            .unwrap_or_else(|| line.clone())
    };
    t.iter()
        .map(|step| step.iter().map(strip).collect())
        .collect()
}

/// For a case the strict guard refuses by design: identical to PostgreSQL
/// up to the first difference, which is the guard's refusal.
pub(crate) fn compare_refused(name: &str, why: &str, want: &[Vec<String>], got: &[Vec<String>]) {
    let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) else {
        panic!("case {name} is listed as refused by the strict guard ({why}), but nothing differs: take it off the list");
    };
    assert!(
        got[i].iter().any(|l| l.contains("42501")),
        "case {name}, step {}: the first difference under the strict guard is not its refusal ({why}): {:?}",
        i + 1,
        got[i]
    );
}

/// A fresh database where `authenticator` may create objects (PostgreSQL 15
/// no longer lets every role create in `public`).
pub(crate) async fn database() -> TestDb {
    // psql runs off the runtime, so the other side of a case goes on.
    let db = tokio::task::spawn_blocking(|| pg().new_database())
        .await
        .expect("CREATE DATABASE ran");
    db.admin_client()
        .await
        .batch_execute(&format!(
            "grant create on schema public to {}",
            crate::support::AUTHENTICATOR
        ))
        .await
        .unwrap();
    db
}

/// Panics with the first difference, readably. `CONFORMANCE_DUMP=1` prints
/// both transcripts in full first.
pub(crate) fn compare(name: &str, steps: &[Step], want: &[Vec<String>], got: &[Vec<String>]) {
    if std::env::var_os("CONFORMANCE_DUMP").is_some() {
        for (i, step) in steps.iter().enumerate() {
            eprintln!(
                "--- step {}: {}",
                i + 1,
                clip(&step.sql.replace('\n', " "), 200)
            );
            for (side, lines) in [("direct", &want[i]), ("rowgate", &got[i])] {
                for l in lines.iter().take(40) {
                    eprintln!("  {side:7} {}", clip(l, 200));
                }
            }
        }
    }
    let differing: Vec<usize> = (0..steps.len()).filter(|&i| want[i] != got[i]).collect();
    let Some(&i) = differing.first() else {
        return;
    };
    let (w, g, step) = (&want[i], &got[i], &steps[i]);
    let at = w
        .iter()
        .zip(g.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    let from = at.saturating_sub(3);
    let show = |lines: &[String]| {
        lines
            .iter()
            .enumerate()
            .skip(from)
            .take(10)
            .map(|(n, l)| format!("    {n:>5} {}", clip(l, 300)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "case {name}, step {} differs at message {at} (steps differing: {:?}):\n  SQL: {}\n  directly ({} messages):\n{}\n  through rowgate ({} messages):\n{}",
        i + 1,
        differing.iter().map(|i| i + 1).collect::<Vec<_>>(),
        clip(&step.sql.replace('\n', " "), 300),
        w.len(),
        show(w),
        g.len(),
        show(g),
    );
}

pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// One side of the comparison: a tapped tokio-postgres session, plus (through
/// rowgate) a second client that uses the pool between steps.
pub(crate) struct Side<'a> {
    pub(crate) s: AnySession,
    pub(crate) other: Option<(Client, &'a RunningProxy)>,
}

pub(crate) enum AnySession {
    Driver(Session),
    Wire(RawSession),
}

pub(crate) const IDENTITY_SQL: &str = "select set_config('app.user_id', 'user_a', false)";

impl<'a> Side<'a> {
    async fn direct(db: &TestDb, wire: bool) -> Side<'static> {
        let (label, port, user, password, dbname) = (
            "directly",
            db.port(),
            crate::support::AUTHENTICATOR,
            crate::support::AUTHENTICATOR_PASSWORD,
            db.name(),
        );
        let s = if wire {
            let mut s = RawSession::open(label, port, user, password, dbname).await;
            s.send_and_read(&[format!("query {IDENTITY_SQL}")]).await;
            AnySession::Wire(s)
        } else {
            let s = Session::open(label, port, user, password, dbname).await;
            s.client.simple_query(IDENTITY_SQL).await.unwrap();
            s.wait_ready(1, "set_config").await;
            s.take();
            AnySession::Driver(s)
        };
        Side { s, other: None }
    }

    async fn proxied(proxy: &'a RunningProxy, wire: bool) -> Side<'a> {
        let (label, port, tok) = ("through rowgate", proxy.port(), token("user_a"));
        let s = if wire {
            AnySession::Wire(RawSession::open(label, port, "anyone", &tok, proxy.dbname()).await)
        } else {
            AnySession::Driver(Session::open(label, port, "anyone", &tok, proxy.dbname()).await)
        };
        let other = proxy.connect(&token("user_b")).await.unwrap();
        Side {
            s,
            other: Some((other, proxy)),
        }
    }

    async fn run(&mut self, steps: &[Step], pool: usize) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            // With a pool of 2 or more, the second client holds the most
            // recently used connection during every other step, so the
            // case's client alternates between two upstream connections.
            let hold = pool >= 2 && i % 2 == 0;
            if let (true, Some((other, _))) = (hold, &self.other) {
                other.batch_execute("begin").await.unwrap();
                check_other(other).await;
            }
            let lines = match &mut self.s {
                AnySession::Driver(s) => s.run(step).await,
                AnySession::Wire(s) => s.run(step).await,
            };
            let idle = lines.iter().rev().find(|l| l.starts_with("Z ")) == Some(&"Z I".into());
            match (&self.other, hold) {
                (Some((other, _)), true) => other.batch_execute("commit").await.unwrap(),
                // With a pool of 1, the second client can only use the
                // connection between the case's transactions.
                (Some((other, _)), false) if idle => check_other(other).await,
                _ => {}
            }
            out.push(lines);
        }
        out
    }
}

/// The second client's identity is its own, always.
pub(crate) async fn check_other(other: &Client) {
    let r = other
        .query_one("select auth.user_id()", &[])
        .await
        .expect("the second client's transaction");
    assert_eq!(
        r.get::<_, Option<String>>(0).as_deref(),
        Some("user_b"),
        "the second client saw another identity"
    );
}

// ---------------------------------------------------------------------------
// A tokio-postgres session whose socket records what the server sends.
// ---------------------------------------------------------------------------

/// A TCP stream that keeps a copy of every byte read from the server.
pub(crate) struct Tap {
    pub(crate) tcp: TcpStream,
    pub(crate) seen: Arc<Mutex<BytesMut>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.tcp).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        self.seen.lock().unwrap().extend_from_slice(new);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) seen: Arc<Mutex<BytesMut>>,
    /// Prepared statements of `-- extended` steps, by text and types.
    pub(crate) statements: HashMap<(String, Vec<u32>), Statement>,
    /// `directly` or `through rowgate`, for messages.
    pub(crate) label: &'static str,
}

impl Session {
    async fn open(
        label: &'static str,
        port: u16,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Session {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let seen = Arc::new(Mutex::new(BytesMut::new()));
        let tap = Tap {
            tcp,
            seen: seen.clone(),
        };
        let (client, conn) = tokio_postgres::Config::new()
            .user(user)
            .password(password)
            .dbname(dbname)
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_raw(tap, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("could not connect on port {port}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let s = Session {
            client,
            seen,
            statements: HashMap::new(),
            label,
        };
        s.take(); // the startup exchange differs by design
        s
    }

    /// Takes the transcript so far.
    fn take(&self) -> BytesMut {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Waits until the transcript holds `n` ReadyForQuery messages and ends
    /// with one (an API call may return on an ErrorResponse before its
    /// ReadyForQuery arrived).
    async fn wait_ready(&self, n: usize, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (count, last) = count_ready(&self.seen.lock().unwrap());
            if count >= n && last {
                return;
            }
            if Instant::now() > deadline {
                let seen = decode_transcript(self.take());
                panic!(
                    "{}: {count} of {n} ReadyForQuery after 30 s, running {}\nreceived: {:#?}",
                    self.label,
                    clip(sql, 200),
                    seen.iter().map(|l| clip(l, 200)).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn run(&mut self, step: &Step) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..step.repeat {
            let _ = self.take();
            let Ok((readies, result)) =
                tokio::time::timeout(Duration::from_secs(30), self.execute(step)).await
            else {
                let seen = decode_transcript(self.take());
                panic!(
                    "{}: no reply after 30 s to {}\nreceived: {:#?}",
                    self.label,
                    clip(&step.sql, 200),
                    seen.iter().map(|l| clip(l, 200)).collect::<Vec<_>>()
                );
            };
            let outcome = match result {
                Ok(()) => "=> ok".to_string(),
                Err(e) => match e.as_db_error() {
                    Some(db) => format!("=> error {}", db.code().code()),
                    None => format!("=> client error {e}"),
                },
            };
            if outcome.starts_with("=> client error") {
                // tokio-postgres refused before sending everything: fewer
                // ReadyForQuery may come. Give them a moment.
                tokio::time::sleep(Duration::from_millis(300)).await;
            } else {
                self.wait_ready(readies, &step.sql).await;
            }
            let bytes = self.take();
            // tokio-postgres names statements `s<N>` and portals `p<N>` from
            // a process-wide counter, so the two sides' names differ.
            lines.extend(decode_transcript(bytes).into_iter().map(|l| {
                if l.starts_with("E ") || l.starts_with("N ") {
                    generic_names(&l)
                } else {
                    l
                }
            }));
            lines.push(outcome);
        }
        lines
    }

    /// Runs one repetition of `step`; returns how many ReadyForQuery
    /// messages it produces and what tokio-postgres said.
    async fn execute(&mut self, step: &Step) -> (usize, Result<(), tokio_postgres::Error>) {
        match &step.kind {
            Kind::Simple => (1, self.client.simple_query(&step.sql).await.map(drop)),
            Kind::Extended => {
                let types: Vec<Type> = step.params.iter().map(|p| p.declared.clone()).collect();
                let (mut readies, stmt) = match self.prepared(&step.sql, &types).await {
                    (n, Ok(s)) => (n, s),
                    (n, Err(e)) => return (n, Err(e)),
                };
                readies += 1;
                let params: Vec<&(dyn ToSql + Sync)> = step
                    .params
                    .iter()
                    .map(|p| p as &(dyn ToSql + Sync))
                    .collect();
                let c = &self.client;
                (readies, drain_rows(c.query_raw(&stmt, params).await).await)
            }
            Kind::Unnamed => {
                let c = &self.client;
                let params = step
                    .params
                    .iter()
                    .map(|p| (p as &(dyn ToSql + Sync), p.declared.clone()));
                (
                    1,
                    drain_rows(c.query_typed_raw(&step.sql, params).await).await,
                )
            }
            Kind::CopyIn(data) => {
                // Prepared here and kept: a Statement dropped by
                // tokio-postgres closes itself later, and its replies would
                // land in the next step's transcript.
                let (readies, stmt) = match self.prepared(&step.sql, &[]).await {
                    (n, Ok(s)) => (n, s),
                    (n, Err(e)) => return (n, Err(e)),
                };
                let c = &self.client;
                let result = async {
                    let sink = c.copy_in::<_, Bytes>(&stmt).await?;
                    let mut sink = std::pin::pin!(sink);
                    match data {
                        CopyData::Inline(text) => sink.send(Bytes::from(text.clone())).await?,
                        CopyData::Rows(n) => {
                            let mut chunk = String::new();
                            for i in 1..=*n {
                                chunk.push_str(&format!("{i}\trow {i}\n"));
                                if chunk.len() > 64 * 1024 {
                                    sink.send(Bytes::from(std::mem::take(&mut chunk))).await?;
                                }
                            }
                            sink.send(Bytes::from(chunk)).await?;
                        }
                    }
                    sink.as_mut().finish().await.map(drop)
                }
                .await;
                (readies + 1, result)
            }
            Kind::Wire(_) => unreachable!("wire steps run on a RawSession"),
            Kind::CopyOut => {
                let (readies, stmt) = match self.prepared(&step.sql, &[]).await {
                    (n, Ok(s)) => (n, s),
                    (n, Err(e)) => return (n, Err(e)),
                };
                let c = &self.client;
                let result = async {
                    let stream = c.copy_out(&stmt).await?;
                    let mut stream = std::pin::pin!(stream);
                    while let Some(chunk) = stream.next().await {
                        chunk?;
                    }
                    Ok(())
                }
                .await;
                (readies + 1, result)
            }
        }
    }
}

impl Session {
    /// The session's named statement for `sql` and `types`, prepared on
    /// first use (one ReadyForQuery) and kept for the whole case.
    async fn prepared(
        &mut self,
        sql: &str,
        types: &[Type],
    ) -> (usize, Result<Statement, tokio_postgres::Error>) {
        let key = (sql.to_string(), types.iter().map(|t| t.oid()).collect());
        if let Some(s) = self.statements.get(&key) {
            return (0, Ok(s.clone()));
        }
        match self.client.prepare_typed(sql, types).await {
            Ok(s) => {
                self.statements.insert(key, s.clone());
                (1, Ok(s))
            }
            Err(e) => (1, Err(e)),
        }
    }
}

pub(crate) async fn drain_rows(
    stream: Result<tokio_postgres::RowStream, tokio_postgres::Error>,
) -> Result<(), tokio_postgres::Error> {
    let stream = stream?;
    let mut stream = std::pin::pin!(stream);
    while let Some(row) = stream.next().await {
        row?;
    }
    Ok(())
}

pub(crate) struct RawSession {
    pub(crate) tcp: TcpStream,
    pub(crate) buf: BytesMut,
    pub(crate) label: &'static str,
}

impl RawSession {
    async fn open(
        label: &'static str,
        port: u16,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> RawSession {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use postgres_protocol::message::frontend;
        use tokio::io::AsyncWriteExt;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut s = RawSession {
            tcp,
            buf: BytesMut::new(),
            label,
        };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", dbname)], &mut out).unwrap();
        s.tcp.write_all(&out).await.unwrap();
        let mut scram = None;
        loop {
            let (tag, body) = s.next_message().await.expect("startup reply");
            let mut out = BytesMut::new();
            match tag {
                b'R' => match i32::from_be_bytes(body[..4].try_into().unwrap()) {
                    0 => continue,
                    3 => frontend::password_message(password.as_bytes(), &mut out).unwrap(),
                    10 => {
                        let sc =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        frontend::sasl_initial_response("SCRAM-SHA-256", sc.message(), &mut out)
                            .unwrap();
                        scram = Some(sc);
                    }
                    11 => {
                        let sc = scram.as_mut().unwrap();
                        sc.update(&body[4..]).unwrap();
                        frontend::sasl_response(sc.message(), &mut out).unwrap();
                    }
                    12 => {
                        scram.as_mut().unwrap().finish(&body[4..]).unwrap();
                        continue;
                    }
                    n => panic!("{label}: unexpected authentication request {n}"),
                },
                b'E' => panic!("{label}: startup failed: {}", decode_message(tag, &body)),
                b'Z' => return s,
                _ => continue,
            }
            s.tcp.write_all(&out).await.unwrap();
        }
    }

    /// The next message, or None after 5 s of silence or at EOF.
    async fn next_message(&mut self) -> Option<(u8, Bytes)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let frame = self.buf.split_to(1 + len).freeze();
                    return Some((frame[0], frame.slice(5..)));
                }
            }
            match tokio::time::timeout(Duration::from_secs(5), self.tcp.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Sends the messages of `lines` in one write and decodes the replies
    /// up to the last ReadyForQuery they are owed.
    async fn send_and_read(&mut self, lines: &[String]) -> Vec<String> {
        use tokio::io::AsyncWriteExt;
        let (out, mut readies) = encode_wire(lines);
        let mut seen = Vec::new();
        if let Err(e) = self.tcp.write_all(&out).await {
            seen.push(format!("write failed: {e}"));
            return seen;
        }
        while readies > 0 {
            match self.next_message().await {
                Some((tag, body)) => {
                    readies -= (tag == b'Z') as usize;
                    seen.push(decode_message(tag, &body));
                }
                None => {
                    seen.push(format!(
                        "no reply for 5 s ({readies} ReadyForQuery missing)"
                    ));
                    break;
                }
            }
        }
        seen
    }

    async fn run(&mut self, step: &Step) -> Vec<String> {
        let lines = match &step.kind {
            Kind::Wire(lines) => lines.clone(),
            Kind::Simple => vec![format!("query {}", step.sql)],
            _ => unreachable!("checked in run_case"),
        };
        let _ = self.label;
        let mut out = Vec::new();
        for _ in 0..step.repeat {
            out.extend(self.send_and_read(&lines).await);
        }
        out
    }
}
