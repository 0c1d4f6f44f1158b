//! Where a statement stands relative to the transaction: the first words of
//! its text, read by [`Lexer`].

use super::{Lexer, Token, Word};

/// How a statement relates to the transaction around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnEffect {
    /// Ordinary statement: it may read data, so the identity must be set first.
    Plain,
    /// BEGIN, START TRANSACTION, SET TRANSACTION: must come before any query
    /// of the transaction (isolation level, snapshot), so rowgate sets the
    /// identity after it, before the next statement. Carries the modes it
    /// sets, which the client's session characteristics must not override.
    Starts(TxnModes),
    /// COMMIT, ROLLBACK, END, ABORT, PREPARE TRANSACTION: ends the
    /// transaction; reads nothing.
    Ends,
    /// `ROLLBACK TO SAVEPOINT`, `RELEASE SAVEPOINT`: reads nothing, and must
    /// never have rowgate's identity statement in front of it, which would
    /// fail in an aborted transaction and make the server skip the very
    /// statement that recovers it. (`SAVEPOINT` itself is `Plain`: the
    /// identity goes in before it, outside every savepoint, so no `ROLLBACK
    /// TO` can undo it.)
    Savepoint,
    /// Refuses to run inside a transaction block or pipeline (VACUUM,
    /// CREATE DATABASE, CREATE INDEX CONCURRENTLY, DISCARD ALL, ...): runs
    /// bare, without identity.
    Outside,
}

/// The transaction modes a BEGIN, START TRANSACTION or SET TRANSACTION
/// sets explicitly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnModes {
    /// `ISOLATION LEVEL ...`.
    pub isolation: bool,
    /// `READ ONLY` / `READ WRITE`.
    pub access: bool,
    /// `[NOT] DEFERRABLE`.
    pub deferrable: bool,
}

impl TxnModes {
    /// Every mode: after `SET TRANSACTION SNAPSHOT` none may change.
    pub const ALL: TxnModes = TxnModes {
        isolation: true,
        access: true,
        deferrable: true,
    };

    /// Both sets of modes.
    pub fn union(self, other: TxnModes) -> TxnModes {
        TxnModes {
            isolation: self.isolation || other.isolation,
            access: self.access || other.access,
            deferrable: self.deferrable || other.deferrable,
        }
    }

    /// Which modes `set` sets; every one after a snapshot import.
    fn of(set: ModeSettings, snapshot: bool) -> TxnModes {
        if snapshot {
            return TxnModes::ALL;
        }
        TxnModes {
            isolation: set.isolation.is_some(),
            access: set.read_only.is_some(),
            deferrable: set.deferrable.is_some(),
        }
    }
}

/// Transaction modes with their values, as a `SET TRANSACTION` would set
/// them. Built from fixed words only, so its text never carries a
/// client's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeSettings {
    /// `ISOLATION LEVEL ...`, as its `SET TRANSACTION` words.
    pub isolation: Option<&'static str>,
    /// `READ ONLY` (true) or `READ WRITE`.
    pub read_only: Option<bool>,
    /// `DEFERRABLE` (true) or `NOT DEFERRABLE`.
    pub deferrable: Option<bool>,
}

/// The isolation levels, as `default_transaction_isolation` spells them
/// and as `SET TRANSACTION` takes them.
pub const ISOLATION_LEVELS: &[(&str, &str)] = &[
    ("serializable", "ISOLATION LEVEL SERIALIZABLE"),
    ("repeatable read", "ISOLATION LEVEL REPEATABLE READ"),
    ("read committed", "ISOLATION LEVEL READ COMMITTED"),
    ("read uncommitted", "ISOLATION LEVEL READ UNCOMMITTED"),
];

impl ModeSettings {
    /// These, with `over`'s where it has them.
    pub fn overlay(self, over: ModeSettings) -> ModeSettings {
        ModeSettings {
            isolation: over.isolation.or(self.isolation),
            read_only: over.read_only.or(self.read_only),
            deferrable: over.deferrable.or(self.deferrable),
        }
    }

    /// The `SET TRANSACTION` statement, or None when nothing is set.
    pub fn sql(&self) -> Option<String> {
        let mut modes: Vec<&str> = Vec::new();
        modes.extend(self.isolation);
        modes.extend(
            self.read_only
                .map(|ro| if ro { "READ ONLY" } else { "READ WRITE" }),
        );
        modes.extend(
            self.deferrable
                .map(|d| if d { "DEFERRABLE" } else { "NOT DEFERRABLE" }),
        );
        (!modes.is_empty()).then(|| format!("SET TRANSACTION {}", modes.join(", ")))
    }

    /// The modes of one transaction-starting statement, read to its end,
    /// and whether it imports a snapshot (`SET TRANSACTION SNAPSHOT`).
    /// `READ COMMITTED` and friends are isolation levels, so only `READ
    /// ONLY` and `READ WRITE` are access modes.
    fn read(lx: &mut Lexer<'_>) -> (ModeSettings, bool) {
        let mut m = ModeSettings::default();
        let mut snapshot = false;
        let mut prev = Word::default();
        let mut level = String::new();
        while let Some(tok) = lx.next_token() {
            let Token::Word(w) = tok else {
                if matches!(tok, Token::Semicolon) {
                    break;
                }
                prev = Word::default();
                continue;
            };
            match (prev.as_str(), w.as_str()) {
                ("level", _) => level = w.to_string(),
                ("repeatable" | "read", "read" | "committed" | "uncommitted")
                    if !level.is_empty() =>
                {
                    level = format!("{level} {w}");
                }
                ("read", "only") => m.read_only = Some(true),
                ("read", "write") => m.read_only = Some(false),
                ("not", "deferrable") => m.deferrable = Some(false),
                (_, "deferrable") => m.deferrable = Some(true),
                (_, "snapshot") => snapshot = true,
                _ => {}
            }
            if let Some((_, words)) = ISOLATION_LEVELS.iter().find(|(l, _)| *l == level) {
                m.isolation = Some(words);
                level.clear();
            }
            prev = w;
        }
        (m, snapshot)
    }
}

/// For a text whose first statement starts a transaction block and more
/// statements follow (`BEGIN ISOLATION LEVEL ...; SELECT ...`, as `psql -c`
/// sends it): the modes that first statement sets. rowgate sets the
/// identity before the whole text, and the isolation level must be set
/// before that statement takes a snapshot.
pub fn leading_modes(sql: &[u8]) -> Option<ModeSettings> {
    let mut lx = Lexer { s: sql, i: 0 };
    match lx.next_token() {
        Some(Token::Word(w)) if w == "begin" || w == "start" => {}
        _ => return None,
    }
    let (modes, _) = ModeSettings::read(&mut lx);
    (modes != ModeSettings::default() && lx.next_token().is_some()).then_some(modes)
}

/// Whether the text holds at most one statement (blanks, comments and
/// semicolons aside). After a single statement rowgate knows where the
/// transaction stands without waiting for the server's ReadyForQuery.
pub fn is_single_statement(sql: &[u8]) -> bool {
    // Without a semicolon before the trailing ones there is one statement,
    // whatever the text holds; only then is it worth lexing (most texts,
    // such as `SELECT ... WHERE aid = 42;`, never are).
    let end = sql
        .iter()
        .rposition(|b| !matches!(b, b';' | b' ' | b'\t' | b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    if !sql[..end].contains(&b';') {
        return true;
    }
    Lexer { s: sql, i: 0 }.only_this_statement(false)
}

/// Whether any statement of the text ends a transaction (COMMIT, ROLLBACK
/// but not ROLLBACK TO, END, ABORT, PREPARE TRANSACTION). After a
/// multi-statement query without one, the identity rowgate set before it
/// is still in force in whatever transaction it left open.
pub fn ends_a_transaction(sql: &[u8]) -> bool {
    let mut lx = Lexer { s: sql, i: 0 };
    let mut first: Option<Word> = None;
    let mut at_start = true;
    while let Some(tok) = lx.next_token() {
        match tok {
            Token::Semicolon => {
                if first.take().is_some_and(|f| f != "prepare") {
                    return true;
                }
                at_start = true;
            }
            Token::Word(w) if at_start => {
                at_start = false;
                if matches!(
                    w.as_str(),
                    "commit" | "end" | "abort" | "rollback" | "prepare"
                ) {
                    first = Some(w);
                }
            }
            Token::Word(w) => {
                if let Some(f) = first.take() {
                    let ends = match f.as_str() {
                        "rollback" | "abort" => w != "to",
                        "prepare" => w == "transaction",
                        _ => true,
                    };
                    if ends {
                        return true;
                    }
                }
            }
            Token::Other => {
                at_start = false;
                if first.take().is_some_and(|f| f != "prepare") {
                    return true;
                }
            }
        }
    }
    first.is_some_and(|f| f != "prepare")
}

/// The first words [`classify`] reads further; every other is `Plain`.
const FIRST_WORDS: &[&str] = &[
    "begin", "start", "set", "commit", "rollback", "abort", "release", "end", "prepare", "vacuum",
    "reindex", "discard", "cluster", "create", "drop", "alter",
];

/// Classifies SQL text. Text holding several statements is `Plain` (the
/// identity goes before all of them) unless rowgate can tell otherwise.
pub fn classify(sql: &[u8]) -> TxnEffect {
    let mut lx = Lexer { s: sql, i: 0 };
    // The first six words, on the stack: this runs on every simple query.
    let mut words: [Word; 6] = Default::default();
    let mut n = 0;
    let mut ended = false;
    while n < words.len() {
        match lx.next_token() {
            Some(Token::Word(w)) => {
                // Most statements are plain by their first word: stop there.
                if n == 0 && !FIRST_WORDS.contains(&w.as_str()) {
                    return TxnEffect::Plain;
                }
                words[n] = w;
                n += 1;
            }
            Some(Token::Semicolon) | None => {
                ended = true;
                break;
            }
            Some(Token::Other) => {
                if n == 0 {
                    return TxnEffect::Plain;
                }
                break;
            }
        }
    }
    let words = &words[..n];
    let Some(first) = words.first() else {
        return TxnEffect::Plain;
    };
    let w = |i: usize| words.get(i).map(Word::as_str).unwrap_or("");
    let any = |set: &[&str]| words.iter().skip(1).any(|x| set.contains(&x.as_str()));
    let effect = match first.as_str() {
        "begin" | "start" => TxnEffect::Starts(TxnModes::default()),
        "set" if w(1) == "transaction" => TxnEffect::Starts(TxnModes::default()),
        "commit" | "rollback" if w(1) == "prepared" => TxnEffect::Outside,
        "rollback" | "abort" if any(&["to"]) => TxnEffect::Savepoint,
        "release" => TxnEffect::Savepoint,
        "commit" | "rollback" | "end" | "abort" => TxnEffect::Ends,
        "prepare" if w(1) == "transaction" => TxnEffect::Ends,
        "vacuum" | "reindex" | "discard" | "cluster" => TxnEffect::Outside,
        "create" | "drop" | "alter"
            if any(&[
                "database",
                "tablespace",
                "subscription",
                "system",
                "concurrently",
            ]) =>
        {
            TxnEffect::Outside
        }
        _ => TxnEffect::Plain,
    };
    if effect != TxnEffect::Plain && !lx.only_this_statement(ended) {
        return TxnEffect::Plain;
    }
    match effect {
        // The words past the first six may name modes too.
        TxnEffect::Starts(_) => {
            let (set, snapshot) = ModeSettings::read(&mut Lexer { s: sql, i: 0 });
            TxnEffect::Starts(TxnModes::of(set, snapshot))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::TxnEffect::*;
    use super::*;

    const NONE: TxnModes = TxnModes {
        isolation: false,
        access: false,
        deferrable: false,
    };

    #[test]
    fn transaction_ends_are_found_in_any_statement() {
        assert!(ends_a_transaction(b"begin; select 1; commit"));
        assert!(ends_a_transaction(b"select 1; rollback"));
        assert!(ends_a_transaction(b"commit; begin; select 1"));
        assert!(!ends_a_transaction(b"begin; set local x = 1"));
        assert!(!ends_a_transaction(
            b"select 1; rollback to savepoint a; select 'commit'"
        ));
        assert!(!ends_a_transaction(b"select 1; prepare p as select 1"));
        assert!(ends_a_transaction(b"select 1; prepare transaction 'x'"));
    }

    #[test]
    fn transaction_control_is_recognised() {
        let cases: &[(&str, TxnEffect)] = &[
            ("BEGIN", Starts(NONE)),
            (
                "  begin isolation level serializable;",
                Starts(TxnModes {
                    isolation: true,
                    ..NONE
                }),
            ),
            (
                "/* c */ START TRANSACTION READ ONLY, DEFERRABLE",
                Starts(TxnModes {
                    access: true,
                    deferrable: true,
                    ..NONE
                }),
            ),
            (
                "begin transaction isolation level read committed, read write, not deferrable",
                Starts(TxnModes::ALL),
            ),
            (
                "-- x\nSET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                Starts(TxnModes {
                    isolation: true,
                    ..NONE
                }),
            ),
            (
                "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
                Starts(TxnModes::ALL),
            ),
            ("commit", Ends),
            ("END", Ends),
            ("ROLLBACK", Ends),
            ("ROLLBACK TO SAVEPOINT a", Savepoint),
            ("release savepoint a", Savepoint),
            ("SAVEPOINT a", Plain),
            ("PREPARE TRANSACTION 'x'", Ends),
            ("COMMIT PREPARED 'x'", Outside),
            ("VACUUM ANALYZE t", Outside),
            ("discard all", Outside),
            ("CREATE DATABASE x", Outside),
            ("create unique index concurrently i on t(a)", Outside),
            ("DROP INDEX CONCURRENTLY i", Outside),
            ("ALTER SYSTEM SET work_mem = '1MB'", Outside),
            ("SELECT 1", Plain),
            (
                "set session characteristics as transaction isolation level serializable",
                Plain,
            ),
            ("SET search_path = x", Plain),
            ("create table t(a int)", Plain),
            ("", Plain),
            ("(select 1)", Plain),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql.as_bytes()), *want, "{sql}");
        }
    }

    #[test]
    fn several_statements_get_the_identity_first() {
        assert_eq!(classify(b"BEGIN; SELECT * FROM t"), Plain);
        assert_eq!(classify(b"COMMIT; select 1"), Plain);
        assert_eq!(classify(b"BEGIN;;  -- done\n"), Starts(NONE));
        assert_eq!(classify(b"vacuum; vacuum"), Plain);
        assert_eq!(
            classify(b"set transaction isolation level repeatable read;"),
            Starts(TxnModes {
                isolation: true,
                ..NONE
            })
        );
        assert_eq!(classify(b"begin;\n"), Starts(NONE));
    }

    #[test]
    fn a_leading_begin_gives_its_modes_as_fixed_words() {
        let modes = |sql: &str| leading_modes(sql.as_bytes()).and_then(|m| m.sql());
        assert_eq!(
            modes("begin transaction isolation level repeatable read; select 1").as_deref(),
            Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        );
        assert_eq!(
            modes("START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY, NOT DEFERRABLE; x")
                .as_deref(),
            Some("SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY, NOT DEFERRABLE")
        );
        assert_eq!(
            modes("begin read write isolation level serializable; select 1").as_deref(),
            Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE")
        );
        // A lone BEGIN is classified as Starts instead; no modes, no text.
        assert_eq!(modes("begin isolation level serializable"), None);
        assert_eq!(modes("begin; select 1"), None);
        assert_eq!(modes("select 1; begin isolation level serializable"), None);
        // Words it does not know are not copied anywhere.
        assert_eq!(modes("begin isolation level bogus'); select 1"), None);
    }

    #[test]
    fn quotes_and_comments_do_not_confuse_it() {
        assert_eq!(classify(b"begin /* ; select 1 */"), Starts(NONE));
        assert_eq!(
            classify(b"SET TRANSACTION SNAPSHOT ';select'"),
            Starts(TxnModes::ALL)
        );
        assert_eq!(classify(b"/* unterminated"), Plain);
        assert_eq!(classify(b"'unterminated"), Plain);
        assert_eq!(classify(b"$$"), Plain);
        assert_eq!(classify(b"select $a$ ; $a$"), Plain);
    }
}
