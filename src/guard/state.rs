//! Session state a statement leaves on its upstream connection, found in
//! the real parse tree (the same one the rules check), for
//! `[session_state]`.
//!
//! Only what a statement says is seen: a function that takes an advisory
//! lock or creates a temporary table inside its body, or a `DO` block that
//! does, is not. The strict guard profile refuses `DO` and `CREATE
//! FUNCTION`, so in that profile only functions the database owner created
//! can hide such state (docs/security.md).

use super::rules::{int, node, str_field, typed_field, CURSOR_OPT_HOLD, ON_COMMIT_DROP};
use super::tree::Tree;

/// Session state that cannot follow a client from one pooled connection to
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// A temporary table, view, sequence or other object in `pg_temp`
    /// (`CREATE TEMP TABLE`, `SELECT ... INTO TEMP`), unless `ON COMMIT
    /// DROP`.
    TempTable,
    /// `LISTEN`: notifications would go to whoever holds the connection.
    Listen,
    /// Session-level advisory locks (`pg_advisory_lock` and friends).
    AdvisoryLock,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// SQL-level `PREPARE name AS ...`.
    SqlPrepare,
}

impl SessionState {
    /// Name used in config and messages.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::TempTable => "temp_tables",
            SessionState::Listen => "listen",
            SessionState::AdvisoryLock => "advisory_locks",
            SessionState::HoldCursor => "hold_cursors",
            SessionState::SqlPrepare => "sql_prepare",
        }
    }
}

/// Case-folded substrings without which a text can create none of the
/// states above, for the guard's pre-check: the keywords `LISTEN`,
/// `PREPARE`, `HOLD`, `TEMP`/`TEMPORARY` (which cannot be quoted), the
/// schema `pg_temp` and the advisory-lock function names (which, quoted or
/// not, keep their letters unless written with `U&` escapes).
pub const TRIGGERS: &[&str] = &["listen", "prepare", "hold", "temp", "advisory", "u&"];

/// The session-level advisory-lock functions (the `_xact_` ones end with
/// the transaction and are harmless).
const ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// The first session state any statement of a parse tree creates.
pub fn in_tree(tree: &Tree) -> Option<SessionState> {
    walk(tree)
}

fn walk(v: &Tree) -> Option<SessionState> {
    match v {
        // A RangeVar (tagged or in a field typed RangeVar) of a temporary
        // relation, or one in pg_temp.
        Tree::Map(_)
            if str_field(v, "relpersistence") == "t" || is_pg_temp(str_field(v, "schemaname")) =>
        {
            Some(SessionState::TempTable)
        }
        Tree::Map(map) => map.iter().find_map(|(key, child)| {
            if key.starts_with(|c: char| c.is_ascii_uppercase()) {
                visit(key, child)
            } else if let Some(tag) = typed_field(key) {
                visit(tag, child)
            } else {
                walk(child)
            }
        }),
        Tree::Seq(items) => pg_temp_name(items).or_else(|| items.iter().find_map(walk)),
        _ => None,
    }
}

fn visit(tag: &str, body: &Tree) -> Option<SessionState> {
    use SessionState::*;
    let on_commit_drop = |key| int(body, key) == ON_COMMIT_DROP;
    match tag {
        "ListenStmt" => Some(Listen),
        "PrepareStmt" => Some(SqlPrepare),
        "DeclareCursorStmt" if int(body, "options") & CURSOR_OPT_HOLD != 0 => Some(HoldCursor),
        "FuncCall" if is_advisory_lock(body) => Some(AdvisoryLock),
        // Gone at commit: nothing inside (its own name included) lingers.
        "CreateStmt" if on_commit_drop("oncommit") => None,
        "IntoClause" if on_commit_drop("on_commit") => None,
        _ => walk(body),
    }
}

/// A qualified name in `pg_temp` (`CREATE FUNCTION pg_temp.f()`, `CREATE
/// TYPE pg_temp.t`): a list of `String` nodes whose first is the schema.
/// Naming one outside a creation is flagged too, which costs nothing: it
/// only works after a creation, which was refused or pinned.
fn pg_temp_name(items: &[Tree]) -> Option<SessionState> {
    match (items.len(), items.first().and_then(node)) {
        (2.., Some(("String", s))) if is_pg_temp(str_field(s, "sval")) => {
            Some(SessionState::TempTable)
        }
        _ => None,
    }
}

fn is_pg_temp(schema: &str) -> bool {
    schema.to_ascii_lowercase().starts_with("pg_temp")
}

fn is_advisory_lock(call: &Tree) -> bool {
    let name = call
        .field("funcname")
        .as_slice()
        .and_then(|n| n.last())
        .and_then(node);
    matches!(name, Some(("String", s)) if ADVISORY_LOCKS.contains(&str_field(s, "sval")))
}

/// The same for text the grammar rejects (see `Rules::unparseable`), from
/// the server's own tokens, broadly: any `LISTEN`, `PREPARE` but `PREPARE
/// TRANSACTION`, `HOLD`, `TEMP` or advisory-lock name counts.
pub fn in_tokens(sql: &str) -> Option<SessionState> {
    use pg_query::protobuf::Token as T;
    let scanned = pg_query::scan(sql).ok()?;
    let kinds: Vec<T> = scanned
        .tokens
        .iter()
        .map(|t| T::try_from(t.token).unwrap_or(T::Nul))
        .collect();
    scanned.tokens.iter().enumerate().find_map(|(i, t)| {
        let text = sql
            .get(t.start as usize..t.end as usize)
            .unwrap_or_default();
        match kinds[i] {
            T::Listen => Some(SessionState::Listen),
            T::Prepare if kinds.get(i + 1) != Some(&T::Transaction) => {
                Some(SessionState::SqlPrepare)
            }
            T::Hold => Some(SessionState::HoldCursor),
            T::Temp | T::Temporary => Some(SessionState::TempTable),
            T::Ident | T::Uident => {
                let name = text.trim_matches('"').to_ascii_lowercase();
                if ADVISORY_LOCKS.contains(&name.as_str()) || kinds[i] == T::Uident {
                    Some(SessionState::AdvisoryLock)
                } else {
                    is_pg_temp(&name).then_some(SessionState::TempTable)
                }
            }
            _ => None,
        }
    })
}

/// The last resort, for text no reading of the parser accepts: the first
/// trigger in the raw bytes. A false alarm refuses text the server most
/// likely rejects anyway.
pub fn in_bytes(sql: &[u8]) -> Option<SessionState> {
    use SessionState::*;
    let lower = sql.to_ascii_lowercase();
    let has = |t: &str| lower.windows(t.len()).any(|w| w == t.as_bytes());
    [
        ("listen", Listen),
        ("prepare", SqlPrepare),
        ("hold", HoldCursor),
        ("temp", TempTable),
        ("advisory", AdvisoryLock),
        ("u&", AdvisoryLock),
    ]
    .into_iter()
    .find_map(|(t, state)| has(t).then_some(state))
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::*;

    fn found(sql: &str) -> Option<SessionState> {
        let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).expect(sql);
        in_tree(&Tree::of(&parsed.protobuf))
    }

    #[test]
    fn session_state_is_found_in_the_tree() {
        let cases: &[(&str, Option<SessionState>)] = &[
            ("LISTEN chan", Some(Listen)),
            ("select 1; listen x", Some(Listen)),
            ("CREATE TEMP TABLE t (a int)", Some(TempTable)),
            ("create global temporary table t (a int)", Some(TempTable)),
            ("create table pg_temp.t (a int)", Some(TempTable)),
            ("create temp view v as select 1", Some(TempTable)),
            ("create temp sequence s", Some(TempTable)),
            ("create type pg_temp.ty as (a int)", Some(TempTable)),
            (
                "create function pg_temp.f() returns int language sql as 'select 1'",
                Some(TempTable),
            ),
            ("create temp table t (a int) on commit drop", None),
            ("create temp table t on commit drop as select 1", None),
            (
                "create temp table t (a int) on commit drop; create temp table u (a int)",
                Some(TempTable),
            ),
            ("select * into temp t from x", Some(TempTable)),
            ("create temp table t as select 1", Some(TempTable)),
            (
                "create temp table t (a int) on commit delete rows",
                Some(TempTable),
            ),
            ("select pg_advisory_lock(1)", Some(AdvisoryLock)),
            (
                "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1, 2)",
                Some(AdvisoryLock),
            ),
            (
                "select x from t where pg_catalog.pg_advisory_lock(id) is not null",
                Some(AdvisoryLock),
            ),
            ("select * from pg_advisory_lock(7)", Some(AdvisoryLock)),
            (
                "with l as (select pg_advisory_lock_shared(1)) select 1",
                Some(AdvisoryLock),
            ),
            ("select pg_advisory_xact_lock(1)", None),
            ("select pg_advisory_unlock(1)", None),
            ("DECLARE c CURSOR WITH HOLD FOR select 1", Some(HoldCursor)),
            ("declare c cursor without hold for select 1", None),
            ("declare c cursor for select 1", None),
            ("PREPARE q AS select 1", Some(SqlPrepare)),
            ("PREPARE TRANSACTION 'x'", None),
            ("select 'listen', 'pg_advisory_lock(1)', 'pg_temp.t'", None),
            ("select temp, hold from t", None),
            ("select \"pg_advisory_lock\" from t", None), // a column
            ("notify chan", None),
            ("unlisten *", None),
        ];
        for (sql, want) in cases {
            assert_eq!(found(sql), *want, "{sql}");
        }
    }

    #[test]
    fn tokens_are_read_broadly_when_the_grammar_refuses() {
        assert_eq!(in_tokens("listen x x x"), Some(Listen));
        assert_eq!(
            in_tokens("select pg_advisory_lock(1) from"),
            Some(AdvisoryLock)
        );
        assert_eq!(in_tokens("prepare transaction 'x' garbage"), None);
        assert_eq!(in_tokens("create temp garbage"), Some(TempTable));
        assert_eq!(in_tokens("select from from"), None);
    }

    #[test]
    fn every_trigger_is_in_the_texts_that_create_state() {
        let hits = |sql: &str| {
            let lower = sql.to_ascii_lowercase();
            TRIGGERS.iter().any(|t| lower.contains(t))
        };
        for sql in [
            "LISTEN chan",
            "create temporary table t (a int)",
            "create table pg_temp.t (a int)",
            "select pg_try_advisory_lock(1)",
            "declare c cursor with hold for select 1",
            "prepare q as select 1",
            "select U&\"pg_adv\\0069sory_lock\"(1)",
        ] {
            assert!(hits(sql), "{sql}");
            assert!(in_tokens(sql).is_some() || found(sql).is_some(), "{sql}");
        }
    }
}
