//! A small lexer that reads the first words of SQL text, enough to classify
//! a statement by its effect on the transaction. It never decides security:
//! a misread statement only runs without identity (RLS then shows nothing)
//! or gets PostgreSQL's own error.

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

    /// The modes named in the rest of one transaction-starting statement.
    /// `READ COMMITTED` and friends are isolation levels, so only `ONLY`
    /// and `WRITE` mark the access mode.
    fn read(lx: &mut Lexer<'_>) -> TxnModes {
        let mut modes = TxnModes::default();
        while let Some(tok) = lx.next_token() {
            match tok {
                Token::Word(w) => match w.as_str() {
                    "isolation" => modes.isolation = true,
                    "only" | "write" => modes.access = true,
                    "deferrable" => modes.deferrable = true,
                    "snapshot" => return TxnModes::ALL,
                    _ => {}
                },
                Token::Semicolon => break,
                Token::Other => {}
            }
        }
        modes
    }
}

/// Classifies SQL text. Text holding several statements is `Plain` (the
/// identity goes before all of them) unless rowgate can tell otherwise.
pub fn classify(sql: &[u8]) -> TxnEffect {
    let mut lx = Lexer { s: sql, i: 0 };
    let mut words: Vec<String> = Vec::with_capacity(6);
    let mut ended = false;
    while words.len() < 6 {
        match lx.next_token() {
            Some(Token::Word(w)) => words.push(w),
            Some(Token::Semicolon) | None => {
                ended = true;
                break;
            }
            Some(Token::Other) => {
                if words.is_empty() {
                    return TxnEffect::Plain;
                }
                break;
            }
        }
    }
    let Some(first) = words.first() else {
        return TxnEffect::Plain;
    };
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let any = |set: &[&str]| words.iter().skip(1).any(|x| set.contains(&x.as_str()));
    let effect = match first.as_str() {
        "begin" | "start" => TxnEffect::Starts(TxnModes::default()),
        "set" if w(1) == "transaction" => TxnEffect::Starts(TxnModes::default()),
        "commit" | "rollback" if w(1) == "prepared" => TxnEffect::Outside,
        "rollback" | "abort" if any(&["to"]) => TxnEffect::Plain,
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
        TxnEffect::Starts(_) => TxnEffect::Starts(TxnModes::read(&mut Lexer { s: sql, i: 0 })),
        other => other,
    }
}

/// One session-level change a statement makes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOp {
    /// `SET x ...` or `set_config('x', .., false)` (name lower-cased).
    Set(String),
    /// `RESET x`: back to the client's startup value.
    Reset(String),
    /// `RESET ALL` or `DISCARD ALL`: back to the startup values.
    ResetAll,
    /// A change rowgate cannot name (e.g. `set_config` with a computed
    /// name): the connection is still reset, the client's value not kept.
    Unknown,
}

/// What statement texts do to session-level settings, in order, as far as
/// rowgate must know to keep them with the client and off the pooled
/// connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionEffects {
    /// The changes, in the order the statements make them.
    pub ops: Vec<SessionOp>,
}

impl SessionEffects {
    /// Whether anything session-level may have changed.
    pub fn any(&self) -> bool {
        !self.ops.is_empty()
    }
    /// Adds what a later statement does.
    pub fn merge(&mut self, other: &SessionEffects) {
        self.ops.extend(other.ops.iter().cloned());
    }
    /// Names set by some operation, each once, in first-seen order.
    pub fn set_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for op in &self.ops {
            if let SessionOp::Set(n) = op {
                if !out.contains(&n.as_str()) {
                    out.push(n);
                }
            }
        }
        out
    }
}

/// Finds session-level setting changes in SQL text (every statement of it).
/// Conservative where it cannot tell: a `set_config` call counts as a
/// session change of its literal name, or of an unknown one.
pub fn session_effects(sql: &[u8]) -> SessionEffects {
    let mut fx = SessionEffects::default();
    let mut lx = Lexer { s: sql, i: 0 };
    let mut at_start = true;
    let mut prev_word = String::new();
    while let Some(tok) = lx.next_token() {
        match tok {
            Token::Semicolon => {
                at_start = true;
                prev_word.clear();
            }
            Token::Word(w) if at_start => {
                at_start = false;
                match w.as_str() {
                    "set" => set_statement(&mut lx, &mut fx),
                    "reset" => match lx.next_token() {
                        Some(Token::Word(n)) if n == "all" => fx.ops.push(SessionOp::ResetAll),
                        Some(Token::Word(n)) if n == "role" || n == "session" => {
                            fx.ops.push(SessionOp::Unknown)
                        }
                        Some(Token::Word(n)) => {
                            let name = setting_name(&mut lx, n);
                            fx.ops.push(SessionOp::Reset(name))
                        }
                        _ => fx.ops.push(SessionOp::Unknown),
                    },
                    "discard" => match lx.next_token() {
                        Some(Token::Word(n)) if n == "all" => fx.ops.push(SessionOp::ResetAll),
                        _ => {}
                    },
                    _ => {}
                }
                prev_word = w;
            }
            Token::Word(w) => prev_word = w,
            Token::Other => {
                // `set_config(` — the opening parenthesis right after the word.
                if prev_word == "set_config" && lx.s.get(lx.i - 1) == Some(&b'(') {
                    lx.skip_blank();
                    match lx.quoted_literal() {
                        Some(name) => fx.ops.push(SessionOp::Set(name.to_ascii_lowercase())),
                        None => fx.ops.push(SessionOp::Unknown),
                    }
                }
                prev_word.clear();
            }
        }
    }
    fx
}

/// After `SET`: which session setting the statement changes.
fn set_statement(lx: &mut Lexer<'_>, fx: &mut SessionEffects) {
    let mut first = match lx.next_token() {
        Some(Token::Word(w)) => w,
        Some(Token::Other) => {
            // A quoted name: SET "app"."x" = ...
            fx.ops.push(SessionOp::Unknown);
            return;
        }
        _ => return,
    };
    if first == "session" {
        first = match lx.next_token() {
            Some(Token::Word(w)) => w,
            _ => return,
        };
    }
    let name = match first.as_str() {
        // Transaction-scoped, or not a setting at all.
        "local" | "transaction" | "constraints" => return,
        "characteristics" => {
            for n in [
                "default_transaction_isolation",
                "default_transaction_read_only",
                "default_transaction_deferrable",
            ] {
                fx.ops.push(SessionOp::Set(n.into()));
            }
            return;
        }
        "time" => "timezone".to_string(),
        "names" => "client_encoding".to_string(),
        "schema" => "search_path".to_string(),
        "xml" => "xmloption".to_string(),
        // Guarded elsewhere; RESET ALL does not undo them, so name them.
        "role" => "role".to_string(),
        "authorization" => "session_authorization".to_string(),
        other => setting_name(lx, other.to_string()),
    };
    fx.ops.push(SessionOp::Set(name));
}

/// Reads the rest of a possibly dotted setting name (`app.user_id`).
fn setting_name(lx: &mut Lexer<'_>, mut name: String) -> String {
    while lx.peek(0) == Some(b'.') {
        lx.i += 1;
        match lx.next_token() {
            Some(Token::Word(w)) => {
                name.push('.');
                name.push_str(&w);
            }
            _ => break,
        }
    }
    name
}

/// What a lone `DEALLOCATE` statement names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deallocate {
    /// `DEALLOCATE [PREPARE] name` (name as written, lower-cased unless quoted).
    One(String),
    /// `DEALLOCATE [PREPARE] ALL`.
    All,
}

/// Recognises a text that is exactly one `DEALLOCATE` statement.
pub fn deallocate(sql: &[u8]) -> Option<Deallocate> {
    let mut lx = Lexer { s: sql, i: 0 };
    match lx.next_token() {
        Some(Token::Word(w)) if w == "deallocate" => {}
        _ => return None,
    }
    let mut target = lx.next_token();
    if matches!(&target, Some(Token::Word(w)) if w == "prepare") {
        target = lx.next_token();
    }
    let result = match target {
        Some(Token::Word(w)) if w == "all" => Deallocate::All,
        Some(Token::Word(w)) => Deallocate::One(w),
        Some(Token::Other) if sql.get(lx.i.checked_sub(1)?) == Some(&b'"') => {
            // A quoted name: the text between the quotes, as written.
            let end = lx.i - 1;
            let start = sql[..end].iter().rposition(|&c| c == b'"')? + 1;
            Deallocate::One(String::from_utf8_lossy(&sql[start..end]).into_owned())
        }
        _ => return None,
    };
    lx.only_this_statement(false).then_some(result)
}

enum Token {
    Word(String),
    Semicolon,
    Other,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    /// Skips white space and comments (`--` to end of line, nested `/* */`).
    fn skip_blank(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_ascii_whitespace() => self.i += 1,
                (Some(b'-'), Some(b'-')) => {
                    while let Some(c) = self.peek(0) {
                        self.i += 1;
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let mut depth = 0usize;
                    while self.i < self.s.len() {
                        match (self.peek(0), self.peek(1)) {
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.i += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.i += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => self.i += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn next_token(&mut self) -> Option<Token> {
        self.skip_blank();
        let c = self.peek(0)?;
        if c == b';' {
            self.i += 1;
            return Some(Token::Semicolon);
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.i;
            while matches!(self.peek(0), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
            {
                self.i += 1;
            }
            let word = String::from_utf8_lossy(&self.s[start..self.i]).to_ascii_lowercase();
            return Some(Token::Word(word));
        }
        self.skip_other();
        Some(Token::Other)
    }

    /// Skips one non-word token: a quoted string or identifier, a
    /// dollar-quoted string, or a single character.
    fn skip_other(&mut self) {
        match self.peek(0) {
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    if c == q {
                        if self.peek(0) == Some(q) {
                            self.i += 1; // doubled quote
                        } else {
                            return;
                        }
                    }
                }
            }
            Some(b'$') => {
                let start = self.i;
                let mut j = self.i + 1;
                while matches!(self.s.get(j), Some(c) if c.is_ascii_alphanumeric() || *c == b'_') {
                    j += 1;
                }
                if self.s.get(j) == Some(&b'$') {
                    let tag = &self.s[start..=j];
                    self.i = j + 1;
                    while self.i < self.s.len() {
                        if self.s[self.i..].starts_with(tag) {
                            self.i += tag.len();
                            return;
                        }
                        self.i += 1;
                    }
                } else {
                    self.i += 1;
                }
            }
            _ => self.i += 1,
        }
    }

    /// Reads a plain single-quoted literal at the cursor (no escapes), for
    /// `set_config('name', ...)`.
    fn quoted_literal(&mut self) -> Option<String> {
        if self.peek(0) != Some(b'\'') {
            return None;
        }
        let start = self.i + 1;
        let end = start + self.s[start..].iter().position(|&c| c == b'\'')?;
        if self.s.get(end + 1) == Some(&b'\'') {
            return None; // doubled quote: not a plain name
        }
        self.i = end + 1;
        Some(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }

    /// Whether nothing but blanks and semicolons follows the current
    /// statement (`ended`: its end was already read).
    fn only_this_statement(&mut self, ended: bool) -> bool {
        if !ended {
            loop {
                match self.next_token() {
                    None => return true,
                    Some(Token::Semicolon) => break,
                    Some(_) => {}
                }
            }
        }
        loop {
            match self.next_token() {
                None => return true,
                Some(Token::Semicolon) => {}
                Some(_) => return false,
            }
        }
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
            ("ROLLBACK TO SAVEPOINT a", Plain),
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
    fn session_setting_changes_are_found() {
        use SessionOp::*;
        let ops = |sql: &str| session_effects(sql.as_bytes()).ops;
        let set = |n: &str| Set(n.to_string());
        assert_eq!(ops("SET search_path = a, b"), [set("search_path")]);
        assert_eq!(
            ops("set session statement_timeout to '1s'"),
            [set("statement_timeout")]
        );
        assert_eq!(ops("SET TIME ZONE 'UTC'"), [set("timezone")]);
        assert_eq!(
            ops("SET app.tenant = 'x'; RESET DateStyle; RESET ALL"),
            [set("app.tenant"), Reset("datestyle".into()), ResetAll]
        );
        assert_eq!(
            ops("select set_config('search_path', 'x', false)"),
            [set("search_path")]
        );
        assert_eq!(ops("SET LOCAL statement_timeout = 5"), []);
        assert_eq!(ops("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), []);
        assert_eq!(ops("update t set a = 1"), []);
        assert_eq!(ops("select 'set x = 1'"), []);
        assert_eq!(ops("discard all"), [ResetAll]);
        assert_eq!(ops("select set_config($1, 'x', false)"), [Unknown]);
        assert_eq!(ops("SET \"app\".x = 1"), [Unknown]);
        assert!(!session_effects(b"select 1").any());
    }

    #[test]
    fn deallocate_is_recognised() {
        assert_eq!(
            deallocate(b"DEALLOCATE s1"),
            Some(Deallocate::One("s1".into()))
        );
        assert_eq!(
            deallocate(b"deallocate prepare \"S 1\";"),
            Some(Deallocate::One("S 1".into()))
        );
        assert_eq!(deallocate(b"DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(deallocate(b"DEALLOCATE s1; select 1"), None);
        assert_eq!(deallocate(b"select 1"), None);
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
