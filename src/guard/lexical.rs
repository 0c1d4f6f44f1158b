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
    /// identity after it, before the next statement.
    Starts,
    /// COMMIT, ROLLBACK, END, ABORT, PREPARE TRANSACTION: ends the
    /// transaction; reads nothing.
    Ends,
    /// Refuses to run inside a transaction block or pipeline (VACUUM,
    /// CREATE DATABASE, CREATE INDEX CONCURRENTLY, DISCARD ALL, ...): runs
    /// bare, without identity.
    Outside,
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
        "begin" | "start" => TxnEffect::Starts,
        "set" if w(1) == "transaction" => TxnEffect::Starts,
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
    effect
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

    #[test]
    fn transaction_control_is_recognised() {
        let cases: &[(&str, TxnEffect)] = &[
            ("BEGIN", Starts),
            ("  begin isolation level serializable;", Starts),
            ("/* c */ START TRANSACTION READ ONLY, DEFERRABLE", Starts),
            (
                "-- x\nSET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                Starts,
            ),
            ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", Starts),
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
        assert_eq!(classify(b"BEGIN;;  -- done\n"), Starts);
        assert_eq!(classify(b"vacuum; vacuum"), Plain);
        assert_eq!(
            classify(b"set transaction isolation level repeatable read;"),
            Starts
        );
        assert_eq!(classify(b"begin;\n"), Starts);
    }

    #[test]
    fn quotes_and_comments_do_not_confuse_it() {
        assert_eq!(classify(b"begin /* ; select 1 */"), Starts);
        assert_eq!(classify(b"SET TRANSACTION SNAPSHOT ';select'"), Starts);
        assert_eq!(classify(b"/* unterminated"), Plain);
        assert_eq!(classify(b"'unterminated"), Plain);
        assert_eq!(classify(b"$$"), Plain);
        assert_eq!(classify(b"select $a$ ; $a$"), Plain);
    }
}
