//! Issue 5, spoof-proof identity: a table of 50 attacks by user A on user B,
//! each run through rowgate against a real PostgreSQL, under each layer on
//! its own and both together:
//!
//! - `guard`: the guard (strict), no seal;
//! - `seal`: the guard off, sealed identity on (the database verifies);
//! - `standard+seal`: the guard without its code-running rules, seal on;
//! - `both`: strict guard and seal, as deployed.
//!
//! For every attempt, with a pool of one upstream connection (so A's
//! connection is B's next): A never sees B's rows, `auth.user_id()` never
//! says B to A, and afterwards B sees exactly B's identity and rows (also
//! between transactions), and A again exactly A's.
//!
//! To add an attack, add an [`Attempt`] to [`ATTEMPTS`].

mod support;

use std::time::Duration;
use support::{pg, proxy_config, rowgate, token, RunningProxy, TestDb};
use tokio_postgres::{Client, SimpleQueryMessage};

const A: &str = "user_a";
const B: &str = "user_b";

/// One thing the attacker sends.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A simple-protocol Query (may hold several statements).
    Simple(&'static str),
    /// Parse/Bind/Execute of one statement (tokio-postgres `query`).
    Extended(&'static str),
    /// Extended, with text parameters.
    ExtendedParams(&'static str, &'static [&'static str]),
    /// A named prepared statement, prepared once and executed twice.
    Prepared(&'static str),
    /// A FunctionCall (fast-path) message: function OID and text arguments.
    FunctionCall(u32, &'static [&'static str]),
}

use Step::*;

/// Which layer must stop the attempt on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stops {
    /// Either layer alone.
    Either,
    /// Only the guard: it leaves no identity to seal (session state, or a
    /// client encoding), so it is run with the guard on only.
    GuardOnly,
}

struct Attempt {
    name: &'static str,
    /// Sent by A; errors (refusals) are expected and ignored.
    steps: &'static [Step],
    /// Then sent by B on the same upstream connection.
    then_b: &'static [Step],
    /// Then sent by A again.
    then_a: &'static [Step],
    stops: Stops,
}

const fn attempt(name: &'static str, steps: &'static [Step]) -> Attempt {
    Attempt {
        name,
        steps,
        then_b: &[],
        then_a: &[],
        stops: Stops::Either,
    }
}

const fn guard_only(name: &'static str, steps: &'static [Step]) -> Attempt {
    Attempt {
        name,
        steps,
        then_b: &[],
        then_a: &[],
        stops: Stops::GuardOnly,
    }
}

/// Selects that show what the attacker gained: B's rows carry the marker
/// `SECRET-OF-B`, and `probe:<id>` cells say what `auth.user_id()` returned.
const LOOK: &str = "select 'probe:' || coalesce(auth.user_id(), 'null'), \
                    (select string_agg(message, ',') from user_messages)";

const ATTEMPTS: &[Attempt] = &[
    // --- set_config, direct and nested -----------------------------------
    attempt(
        "set_config local, then read",
        &[Simple(
            "select set_config('app.user_id', 'user_b', true); \
             select 'probe:' || coalesce(auth.user_id(), 'null'), (select string_agg(message, ',') from user_messages)",
        )],
    ),
    attempt(
        "set_config at session level, read in a later transaction",
        &[Simple("select set_config('app.user_id', 'user_b', false)"), Simple(LOOK)],
    ),
    attempt(
        "set_config in a subquery of the WHERE clause",
        &[Simple(
            "select message from user_messages where (select set_config('app.user_id', 'user_b', true)) is not null",
        )],
    ),
    attempt(
        "set_config in a CTE",
        &[Simple(
            "with s as (select set_config('app.user_id', 'user_b', true) x) \
             select m.message from s, user_messages m",
        )],
    ),
    attempt(
        "set_config as a function argument",
        &[Simple(
            "select upper(set_config('app.user_id', 'user_b', true)), \
             (select string_agg(message, ',') from user_messages)",
        )],
    ),
    attempt(
        "pg_catalog.SET_CONFIG in upper case",
        &[Simple("SELECT PG_CATALOG.SET_CONFIG('APP.USER_ID', 'user_b', true); SELECT message FROM user_messages")],
    ),
    attempt(
        "quoted \"set_config\"",
        &[Simple("select \"set_config\"('app.user_id', 'user_b', false)"), Simple(LOOK)],
    ),
    attempt(
        "set_config with a computed name",
        &[Simple(
            "select set_config('app.' || 'user_id', 'user_b', true), \
             (select string_agg(message, ',') from user_messages)",
        )],
    ),
    attempt(
        "set_config with an escaped name",
        &[Simple("select set_config(E'app.user\\x5fid', 'user_b', false)"), Simple(LOOK)],
    ),
    attempt(
        "set_config of request.jwt.claims",
        &[Simple(
            "select set_config('request.jwt.claims', '{\"sub\":\"user_b\"}', true), \
             'probe:' || coalesce(auth.claims()->>'sub', 'null')",
        )],
    ),
    attempt(
        "set_config in an INSERT ... SELECT forging B's row",
        &[Simple(
            "insert into user_messages (user_id, message) \
             select set_config('app.user_id', 'user_b', true), 'FORGED-BY-A'",
        )],
    ),
    // --- SET / SET LOCAL / RESET ------------------------------------------
    attempt(
        "SET, then read",
        &[Simple("set app.user_id = 'user_b'"), Simple(LOOK)],
    ),
    attempt(
        "SET LOCAL inside BEGIN ... COMMIT",
        &[Simple("begin; set local app.user_id = 'user_b'; select message from user_messages; commit")],
    ),
    attempt(
        "SET \"app\".\"user_id\"",
        &[Simple("SET \"app\".\"user_id\" = 'user_b'"), Simple(LOOK)],
    ),
    attempt(
        "SET APP.USER_ID in upper case",
        &[Simple("SET APP.USER_ID TO 'user_b'"), Simple(LOOK)],
    ),
    attempt(
        "SET U&\"...\" with a Unicode escape",
        &[Simple("SET U&\"app.user\\005fid\" = 'user_b'"), Simple(LOOK)],
    ),
    attempt(
        "SET with comments around the dot",
        &[Simple("SET /* x */ app /* y */ . /* z */ user_id = 'user_b'"), Simple(LOOK)],
    ),
    attempt(
        "SET request.jwt.claims",
        &[Simple("set request.jwt.claims = '{\"sub\":\"user_b\"}'"), Simple(LOOK)],
    ),
    attempt(
        "RESET app.user_id, then read",
        &[Simple("reset app.user_id; select message from user_messages")],
    ),
    attempt(
        "RESET ALL, then read",
        &[Simple("reset all; select message from user_messages")],
    ),
    attempt(
        "SET rowgate.seal to a made-up seal",
        &[Simple(
            "begin; set local app.user_id = 'user_b'; set local rowgate.seal = 'v1:app.user_id:00'; \
             select 'probe:' || coalesce(auth.user_id(), 'null'); commit",
        )],
    ),
    attempt(
        "grammar skew: valid for this server, not for the guard's parser",
        &[Simple(
            "select set_config('app.user_id', 'user_b', true), \
             (select string_agg(message, ',') from user_messages) from user_messages system_user",
        )],
    ),
    // --- role switching ---------------------------------------------------
    attempt("SET ROLE", &[Simple("set role rowgate_user"), Simple(LOOK)]),
    attempt(
        "SET SESSION AUTHORIZATION",
        &[Simple("set session authorization postgres"), Simple(LOOK)],
    ),
    attempt("RESET ROLE", &[Simple("reset role"), Simple(LOOK)]),
    attempt(
        "set_config('role')",
        &[Simple("select set_config('role', 'rowgate_user', false)"), Simple(LOOK)],
    ),
    // --- several statements with COMMIT in the middle ---------------------
    attempt(
        "COMMIT, then SET in the same string",
        &[Simple("select 1; commit; set app.user_id = 'user_b'; select message from user_messages")],
    ),
    attempt(
        "COMMIT, session-level set_config, COMMIT, read",
        &[Simple(
            "commit; select set_config('app.user_id', 'user_b', false); commit; \
             select message from user_messages",
        )],
    ),
    attempt(
        "BEGIN; COMMIT; BEGIN; SET LOCAL; probe",
        &[Simple(
            "begin; commit; begin; set local app.user_id = 'user_b'; \
             select 'probe:' || coalesce(auth.user_id(), 'null'); commit",
        )],
    ),
    // --- extended protocol ------------------------------------------------
    attempt(
        "extended: set_config, then extended read",
        &[
            Extended("select set_config('app.user_id', 'user_b', false)"),
            Extended("select message from user_messages"),
        ],
    ),
    attempt(
        "extended: SET LOCAL inside a transaction",
        &[
            Simple("begin"),
            Extended("set local app.user_id = 'user_b'"),
            Extended("select message from user_messages"),
            Simple("commit"),
        ],
    ),
    attempt(
        "extended: set_config with the name as a parameter",
        &[
            ExtendedParams("select set_config($1, $2, false)", &["app.user_id", "user_b"]),
            Extended(LOOK),
        ],
    ),
    // --- prepared statements ----------------------------------------------
    attempt(
        "named prepared statement calling set_config",
        &[
            Prepared("select set_config('app.user_id', 'user_b', false)"),
            Prepared(LOOK),
        ],
    ),
    attempt(
        "SQL PREPARE/EXECUTE of set_config",
        &[Simple(
            "prepare p as select set_config('app.user_id', 'user_b', true); execute p; \
             select message from user_messages",
        )],
    ),
    attempt(
        "EXECUTE rowgate_identity with B's values (unsealed arity)",
        &[Simple(
            "execute rowgate_identity('app.user_id', 'user_b', 'request.jwt.claims', '{\"sub\":\"user_b\"}', 'app.org_id', ''); \
             select message from user_messages",
        )],
    ),
    attempt(
        "EXECUTE rowgate_identity with B's values and a made-up seal",
        &[Simple(
            "execute rowgate_identity('app.user_id', 'user_b', 'request.jwt.claims', '{\"sub\":\"user_b\"}', 'app.org_id', '', 'rowgate.seal', 'v1:app.user_id:00'); \
             select message from user_messages",
        )],
    ),
    Attempt {
        name: "replace rowgate_identity with A's own statement for B",
        steps: &[Simple(
            "deallocate rowgate_identity; \
             prepare rowgate_identity(text, text, text, text, text, text) as \
             select set_config('app.user_id', 'user_a', true), set_config('request.jwt.claims', '{}', true), set_config('app.org_id', '', true)",
        )],
        then_b: &[Simple(LOOK)],
        then_a: &[],
        stops: Stops::Either,
    },
    attempt(
        "DEALLOCATE ALL, then read",
        &[Simple("deallocate all"), Simple(LOOK)],
    ),
    // --- settings left behind for the next user ---------------------------
    attempt(
        "session-level SET of B's id left for B's connection",
        &[Simple("set app.user_id = 'user_b'")],
    ),
    attempt(
        "role default for new connections",
        &[Simple("alter role current_user in database {db} set app.user_id = 'user_b'"), Simple(LOOK)],
    ),
    Attempt {
        name: "A's sealed identity copied to session level, for B's gaps",
        steps: &[Simple(
            "select set_config('app.user_id', current_setting('app.user_id'), false), \
                    set_config('request.jwt.claims', current_setting('request.jwt.claims'), false), \
                    set_config('app.org_id', current_setting('app.org_id'), false), \
                    set_config('rowgate.seal', coalesce(current_setting('rowgate.seal', true), ''), false)",
        )],
        then_b: &[],
        then_a: &[],
        // Every transaction clears session-level identity values before it
        // sets its own, so even after a COMMIT inside B's query string
        // (which runs without identity) nothing of A's is left.
        stops: Stops::Either,
    },
    Attempt {
        name: "WITH HOLD cursor of A's rows, fetched by B",
        steps: &[Simple("declare c cursor with hold for select message from user_messages")],
        then_b: &[Simple("fetch all from c")],
        then_a: &[],
        stops: Stops::GuardOnly,
    },
    Attempt {
        name: "temporary table shadowing user_messages, catching B's insert",
        steps: &[Simple(
            "create temp table user_messages (id int, user_id text default 'user_b', message text, created_at timestamptz)",
        )],
        then_b: &[Simple("insert into user_messages (message) values ('SECRET-OF-B new')")],
        then_a: &[Simple("select message from user_messages"), Simple("select message from pg_temp.user_messages")],
        stops: Stops::GuardOnly,
    },
    guard_only(
        "client encoding SJIS left for B",
        &[Simple("set client_encoding = 'SJIS'")],
    ),
    // --- code the guard cannot see (stopped by strict, else by the seal) --
    attempt(
        "DO block calling set_config",
        &[Simple(
            "do $$ begin perform set_config('app.user_id', 'user_b', false); end $$; \
             select message from user_messages",
        )],
    ),
    attempt(
        "temporary function calling set_config",
        &[Simple(
            "create function pg_temp.evil() returns text language sql \
             as $$ select set_config('app.user_id', 'user_b', true) $$; \
             select pg_temp.evil(), (select string_agg(message, ',') from user_messages)",
        )],
    ),
    attempt(
        "query_to_xml running set_config",
        &[Simple(
            "select query_to_xml('select set_config(''app.user_id'', ''user_b'', false)', true, true, '')",
        ), Simple(LOOK)],
    ),
    attempt(
        "ts_stat running set_config",
        &[Simple(
            "select * from ts_stat('select to_tsvector(set_config(''app.user_id'', ''user_b'', false))')",
        ), Simple(LOOK)],
    ),
    attempt(
        "aggregate built on set_config",
        &[Simple(
            "create aggregate pg_temp.setagg(text, boolean) (sfunc = set_config, stype = text, initcond = 'app.user_id'); \
             select pg_temp.setagg('user_b', false)",
        ), Simple(LOOK)],
    ),
    // --- fast path --------------------------------------------------------
    attempt(
        "FunctionCall of set_config (OID 2078)",
        &[FunctionCall(2078, &["app.user_id", "user_b", "false"]), Simple(LOOK)],
    ),
];

/// A deployment of rowgate to attack.
#[derive(Clone, Copy, Debug)]
struct Layers {
    name: &'static str,
    /// `[guard] profile`.
    profile: &'static str,
    /// Whether `[seal]` is on (and the key installed in the database).
    seal: bool,
}

const GUARD: Layers = Layers {
    name: "guard",
    profile: "strict",
    seal: false,
};
const SEAL: Layers = Layers {
    name: "seal",
    profile: "off",
    seal: true,
};
const STANDARD_SEAL: Layers = Layers {
    name: "standard+seal",
    profile: "standard",
    seal: true,
};
const BOTH: Layers = Layers {
    name: "both",
    profile: "strict",
    seal: true,
};

fn applies(layers: Layers, a: &Attempt) -> bool {
    match a.stops {
        Stops::Either => true,
        Stops::GuardOnly => layers.profile != "off",
    }
}

#[tokio::test]
async fn attacks_fail_with_the_guard_alone() {
    run_all(GUARD).await;
}

#[tokio::test]
async fn attacks_fail_with_the_seal_alone() {
    run_all(SEAL).await;
}

#[tokio::test]
async fn attacks_fail_with_the_standard_guard_and_the_seal() {
    run_all(STANDARD_SEAL).await;
}

#[tokio::test]
async fn attacks_fail_with_both_layers() {
    run_all(BOTH).await;
}

/// The attacks are real. With neither layer (guard off, no seal) each one
/// gets through rowgate, or, for those that rowgate's per-transaction
/// clearing of session-level identity stops even then (a value left at
/// session level for a later transaction), it gets through on a plain
/// connection to PostgreSQL that identifies its user with a session `SET`,
/// as an application behind a pooler without rowgate would.
#[tokio::test]
async fn without_either_layer_every_attack_succeeds() {
    let none = Layers {
        name: "none",
        profile: "off",
        seal: false,
    };
    let attempts: Vec<&Attempt> = ATTEMPTS.iter().collect();
    let failures = run(none, &attempts).await;
    let db = pg().new_database();
    seed(&db).await;
    let mut harmless = Vec::new();
    for a in attempts {
        let through_rowgate = failures
            .iter()
            .any(|f| f.contains(&format!("[none] {}:", a.name)));
        if !through_rowgate && !works_directly(&db, a).await {
            harmless.push(a.name);
        }
    }
    assert!(
        harmless.is_empty(),
        "{} attempts do nothing even without the guard and the seal, so they test nothing: {harmless:?}",
        harmless.len()
    );
}

/// Whether A's attempt reads B's rows or identity on a direct connection
/// whose identity the application set with a session-level `SET`.
async fn works_directly(db: &TestDb, a: &Attempt) -> bool {
    let (c, conn) = tokio_postgres::connect(&db.authenticator_url(), tokio_postgres::NoTls)
        .await
        .expect("direct connection");
    tokio::spawn(conn);
    c.batch_execute(&format!("set app.user_id = '{A}'"))
        .await
        .expect("the naive identity");
    let mut out = Vec::new();
    for step in a.steps {
        let sql = match *step {
            Simple(sql) | Extended(sql) | ExtendedParams(sql, _) | Prepared(sql) => sql,
            FunctionCall(..) => continue,
        };
        if let Ok(msgs) = c.simple_query(&sql.replace("{db}", db.name())).await {
            for m in msgs {
                if let SimpleQueryMessage::Row(row) = m {
                    out.extend((0..row.len()).filter_map(|i| row.get(i).map(str::to_string)));
                }
            }
        }
    }
    out.iter()
        .any(|cell| cell.contains("SECRET-OF-B") || cell == "probe:user_b")
}

/// B's and A's secrets in `user_messages`.
async fn seed(db: &TestDb) {
    db.admin_client()
        .await
        .batch_execute(
            "INSERT INTO user_messages (user_id, message) VALUES
             ('user_a', 'SECRET-OF-A 1'), ('user_b', 'SECRET-OF-B 1')",
        )
        .await
        .unwrap();
}

async fn run_all(layers: Layers) {
    let attempts: Vec<&Attempt> = ATTEMPTS.iter().filter(|a| applies(layers, a)).collect();
    assert!(attempts.len() >= 40 || layers.profile == "off" || layers.profile == "standard");
    let failures = run(layers, &attempts).await;
    assert!(
        failures.is_empty(),
        "{} of {} attempts got through [{}]:\n{}",
        failures.len(),
        attempts.len(),
        layers.name,
        failures.join("\n")
    );
}

/// Runs `attempts` against one rowgate; returns what went wrong.
async fn run(layers: Layers, attempts: &[&Attempt]) -> Vec<String> {
    let db = pg().new_database();
    seed(&db).await;
    let mut config = proxy_config(&db, 1, "acquire_timeout = \"3s\"");
    config.push_str(&format!("\n[guard]\nprofile = \"{}\"\n", layers.profile));
    if layers.seal {
        let key: [u8; 32] = rand::random();
        rowgate::guard::install_seal_key(&db.admin_url(), &key)
            .await
            .expect("seal key installs and self-checks");
        config.push_str(&format!("[seal]\nkey = \"{}\"\n", hex::encode(key)));
    }
    let proxy = rowgate(&config).await;
    let mut failures = Vec::new();
    for a in attempts {
        let found = tokio::time::timeout(Duration::from_secs(60), run_attempt(&proxy, &db, a))
            .await
            .unwrap_or_else(|_| vec!["timed out".to_string()]);
        failures.extend(
            found
                .into_iter()
                .map(|f| format!("  [{}] {}: {f}", layers.name, a.name)),
        );
    }
    failures
}

/// Everything one attempt's outputs and the checks after it reveal.
async fn run_attempt(proxy: &RunningProxy, db: &TestDb, a: &Attempt) -> Vec<String> {
    let mut bad = Vec::new();
    let alice = proxy.connect(&token(A)).await.expect("A connects");
    for step in a.steps {
        let out = exec(proxy, &alice, *step, db).await;
        leaks(&out, "SECRET-OF-B", "A's attack", &mut bad);
        for cell in &out {
            if cell == "probe:user_b" {
                bad.push(format!("auth.user_id() said B to A: {cell}"));
            }
        }
    }
    // A's own session: still A, never B.
    check_user(&alice, A, &mut bad, "A after the attack").await;

    // B on the same (only) upstream connection.
    let bob = proxy.connect(&token(B)).await.expect("B connects");
    check_user(&bob, B, &mut bad, "B after A").await;
    for step in a.then_b {
        let out = exec(proxy, &bob, *step, db).await;
        leaks(&out, "SECRET-OF-A", "B's statements", &mut bad);
    }
    check_gap(&bob, &mut bad).await;
    check_user(&bob, B, &mut bad, "B again").await;

    // A again, in the same session and a new one.
    for step in a.then_a {
        let out = exec(proxy, &alice, *step, db).await;
        leaks(&out, "SECRET-OF-B", "A's later statements", &mut bad);
    }
    check_user(&alice, A, &mut bad, "A again").await;
    let fresh = proxy.connect(&token(A)).await.expect("A reconnects");
    check_user(&fresh, A, &mut bad, "A in a new session").await;
    bad
}

fn leaks(out: &[String], marker: &str, what: &str, bad: &mut Vec<String>) {
    if let Some(cell) = out.iter().find(|c| c.contains(marker)) {
        bad.push(format!("{what} returned {marker}: {cell}"));
    }
}

/// In a transaction of its own: `auth.user_id()` is `user`, `user`'s seeded
/// row is visible, and no row of anyone else, nor any forged row.
async fn check_user(c: &Client, user: &str, bad: &mut Vec<String>, when: &str) {
    let _ = c.simple_query("rollback").await;
    let (me, other) = if user == A { ("A", "B") } else { ("B", "A") };
    let sql = format!(
        "select coalesce(auth.user_id(), 'null'), \
         (count(*) filter (where user_id <> '{user}' or message like '%SECRET-OF-{other}%' \
                           or message like 'FORGED%'))::text, \
         (count(*) filter (where message = 'SECRET-OF-{me} 1'))::text \
         from user_messages"
    );
    for protocol in ["simple", "extended"] {
        let got = match protocol {
            "simple" => first_row(c.simple_query(&sql).await),
            _ => c
                .query_one(&sql, &[])
                .await
                .map(|r| (0..3).map(|i| r.get::<_, String>(i)).collect())
                .map_err(|e| e.to_string()),
        };
        let want = vec![user.to_string(), "0".to_string(), "1".to_string()];
        if got.as_ref() != Ok(&want) {
            bad.push(format!(
                "{when} ({protocol}): want [id, others' rows, own row] = {want:?}, got {got:?}"
            ));
        }
    }
}

/// Between transactions (after a COMMIT inside one query string, where
/// rowgate injects nothing) B must have no identity at all, not A's.
async fn check_gap(c: &Client, bad: &mut Vec<String>) {
    let sql = "commit; select coalesce(auth.user_id(), 'null'), count(*)::text from user_messages";
    let got = first_row(c.simple_query(sql).await);
    let want = vec!["null".to_string(), "0".to_string()];
    if got.as_ref() != Ok(&want) {
        bad.push(format!(
            "B between transactions: want {want:?}, got {got:?}"
        ));
    }
}

fn first_row(
    r: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>,
) -> Result<Vec<String>, String> {
    let msgs = r.map_err(|e| e.to_string())?;
    msgs.into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .ok_or_else(|| "no row".to_string())
}

/// Runs one step; returns every text cell it produced (errors give none).
async fn exec(proxy: &RunningProxy, c: &Client, step: Step, db: &TestDb) -> Vec<String> {
    let sql_of = |s: &str| s.replace("{db}", db.name());
    match step {
        Simple(sql) => match c.simple_query(&sql_of(sql)).await {
            Ok(msgs) => msgs
                .into_iter()
                .flat_map(|m| match m {
                    SimpleQueryMessage::Row(row) => (0..row.len())
                        .filter_map(|i| row.get(i).map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                })
                .collect(),
            Err(_) => Vec::new(),
        },
        Extended(sql) => cells(c.query(&sql_of(sql), &[]).await),
        ExtendedParams(sql, params) => {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            cells(c.query(&sql_of(sql), &params).await)
        }
        Prepared(sql) => match c.prepare(&sql_of(sql)).await {
            Ok(stmt) => {
                let mut out = cells(c.query(&stmt, &[]).await);
                out.extend(cells(c.query(&stmt, &[]).await));
                out
            }
            Err(_) => Vec::new(),
        },
        FunctionCall(oid, args) => raw_function_call(proxy, oid, args).await,
    }
}

fn cells(r: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> Vec<String> {
    let Ok(rows) = r else {
        return Vec::new();
    };
    rows.iter()
        .flat_map(|row| {
            (0..row.len())
                .filter_map(|i| row.try_get::<_, Option<String>>(i).ok().flatten())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Sends a FunctionCall as A over a raw connection (no driver sends one by
/// OID on request), then reads what `auth.user_id()` and the table show on
/// that same connection. Returns the text cells of that read.
async fn raw_function_call(proxy: &RunningProxy, oid: u32, args: &[&str]) -> Vec<String> {
    use bytes::BufMut;
    use rowgate::wire::{frontend, next_frame, put_cstr, put_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&frontend::startup_message(&[
        ("user", "anyone"),
        ("database", proxy.dbname()),
    ]));
    let tok = token(A);
    put_frame(&mut out, b'p', |b| put_cstr(b, tok.as_bytes()));
    put_frame(&mut out, b'F', |b| {
        b.put_u32(oid);
        b.put_i16(1);
        b.put_i16(0); // text arguments
        b.put_i16(args.len() as i16);
        for a in args {
            b.put_i32(a.len() as i32);
            b.put_slice(a.as_bytes());
        }
        b.put_i16(0); // text result
    });
    frontend::put_query(&mut out, LOOK);
    frontend::put_query(&mut out, "");
    tcp.write_all(&out).await.unwrap();
    // Replies: startup's ReadyForQuery, the FunctionCall's, the LOOK
    // query's, the empty query's.
    let mut buf = bytes::BytesMut::new();
    let mut ready = 0;
    let mut cells = Vec::new();
    while ready < 4 {
        if tcp.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            break;
        }
        while let Some(f) = next_frame(&mut buf, 1 << 24).unwrap() {
            match f.tag() {
                b'Z' => ready += 1,
                b'D' if ready == 2 => {
                    let body = f.body();
                    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2;
                    for _ in 0..n {
                        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                        at += 4;
                        if len >= 0 {
                            let len = len as usize;
                            cells.push(String::from_utf8_lossy(&body[at..at + len]).into_owned());
                            at += len;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut bye = bytes::BytesMut::new();
    put_frame(&mut bye, b'X', |_| {});
    let _ = tcp.write_all(&bye).await;
    cells
}
