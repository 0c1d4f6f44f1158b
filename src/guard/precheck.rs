//! The lexical pre-check: a scan of the raw bytes that proves, for most
//! statements, that no guard rule can fire, so the full parse is skipped.
//!
//! # Why it is conservative
//!
//! Every rule of [`super::rules`] fires only on a parse tree that holds one
//! of these, and each needs certain bytes in the statement text:
//!
//! - `SET`/`RESET` in any form (plain, `LOCAL`, `SESSION`, `ROLE`,
//!   `SESSION AUTHORIZATION`, `NAMES`, `ALL`, or nested in `ALTER ROLE`,
//!   `ALTER DATABASE`, `ALTER SYSTEM`, `CREATE`/`ALTER FUNCTION ... SET`):
//!   the keyword `SET` or `RESET`, which contain `set`.
//! - A call of, or reference to, `set_config`, a function that executes
//!   SQL text (`query_to_xml`, `dblink`, `ts_stat`, ...) or a configured
//!   `deny_functions` name: that identifier. Written unquoted, its bytes
//!   are in the text, case aside (unquoted identifiers are folded to lower
//!   case, and only ASCII letters fold in a UTF-8 database). Written quoted
//!   it needs `"`; written with Unicode escapes it needs `U&` (which must
//!   touch its quote).
//! - `DO`, `CREATE FUNCTION`/`PROCEDURE`, `PREPARE`, `EXECUTE`,
//!   `DEALLOCATE`, `DECLARE ... WITH HOLD`, `TEMP`/`TEMPORARY`: keywords
//!   (or the schema name `pg_temp`, written unquoted), which can be neither
//!   quoted nor escaped. `DO` is only a keyword as a whole token, so it is
//!   matched only where the bytes around it cannot continue an identifier
//!   (letters, digits, `_`, `$`, bytes >= 0x80).
//!
//! Keywords and identifiers cannot be split by comments or white space
//! (`S/**/ET` is two tokens), so case-folded substrings suffice. The scan
//! looks at raw bytes, independently of how strings and comments are
//! lexed, so neither `standard_conforming_strings` nor dollar quoting can
//! hide a token from it. The server reads the text in the client encoding
//! after converting it to the server encoding; every client encoding
//! PostgreSQL supports keeps ASCII characters as the same single bytes, so
//! an ASCII token the server sees is also in the raw bytes. (A NUL ends
//! the server's text early: it then sees a prefix, which holds less.)
//!
//! A double-quoted identifier hides nothing from the scan: its name is
//! the bytes between the quotes (a doubled `""` stands for one `"`, which
//! joins no two pieces into a trigger), never case-folded, and truncated
//! at 63 bytes only from the end. So the quotes ORMs put around every
//! column (`select "v" from "kv" where "k" = 42`) need no parse; a quoted
//! `"set_config"` or `"pg_temp"` still holds its trigger.
//!
//! Backslashes (escapes) and `U&` are sent to the full parse too, as extra
//! margin. A false alarm only costs a parse, which is then cached.

/// Case-folded substrings that send a statement to the full check.
const TRIGGERS: &[&str] = &[
    "set", // SET, RESET, set_config, SESSION AUTHORIZATION follows SET
    "role",
    "session",
    "discard",
    "function",
    "procedure",
    "prepare",
    "execute",
    "deallocate",
    "declare",
    "hold",
    "temp", // TEMP, TEMPORARY, pg_temp
    "xml",
    "dblink",
    "ts_stat",
    "ts_rewrite",
    "xpath",
    "crosstab",
    "connectby",
    "lo_",
    "\\",
    "u&",
];

/// Triggers that count only as a whole token.
const WORD_TRIGGERS: &[&str] = &["do"];

/// The pre-check for one guard configuration.
#[derive(Debug, Clone)]
pub struct PreCheck {
    /// Triggers by their first (lower-case) byte.
    by_first: Vec<Vec<Trigger>>,
    /// One-byte triggers.
    single: [bool; 256],
    /// Bit `a << 8 | b` set when some trigger starts with the (lower-case)
    /// bytes `a`, `b`: most positions are ruled out by one lookup.
    pairs: Box<[u64; 1024]>,
}

#[derive(Debug, Clone)]
struct Trigger {
    bytes: Box<[u8]>,
    word: bool,
}

impl PreCheck {
    /// A pre-check for the built-in triggers plus `extra` names (configured
    /// denied functions), which are matched as case-folded substrings.
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> PreCheck {
        Self::build(extra, true)
    }

    /// The same without the backslash trigger: for text whose backslashes
    /// are already accounted for.
    pub fn without_backslash<'a>(extra: impl IntoIterator<Item = &'a str>) -> PreCheck {
        Self::build(extra, false)
    }

    /// A pre-check for `triggers` alone (substrings, none of the built-in
    /// ones).
    pub fn only(triggers: &[&str]) -> PreCheck {
        Self::from_triggers(triggers.iter().map(|t| (*t, false)))
    }

    fn build<'a>(extra: impl IntoIterator<Item = &'a str>, backslash: bool) -> PreCheck {
        let builtin = TRIGGERS.iter().filter(|t| backslash || **t != "\\");
        Self::from_triggers(
            builtin
                .map(|t| (*t, false))
                .chain(WORD_TRIGGERS.iter().map(|t| (*t, true)))
                .chain(extra.into_iter().map(|t| (t, false))),
        )
    }

    /// From `(trigger, whole word only)` pairs.
    fn from_triggers<'a>(triggers: impl IntoIterator<Item = (&'a str, bool)>) -> PreCheck {
        let mut by_first: Vec<Vec<Trigger>> = vec![Vec::new(); 256];
        for (s, word) in triggers {
            let bytes: Box<[u8]> = s.to_ascii_lowercase().into_bytes().into();
            if let Some(&first) = bytes.first() {
                by_first[first as usize].push(Trigger { bytes, word });
            }
        }
        // Both tables hold every case variant, so the scan folds nothing.
        let mut single = [false; 256];
        let mut pairs = Box::new([0u64; 1024]);
        let variants = |c: u8| [c.to_ascii_lowercase(), c.to_ascii_uppercase()];
        for t in by_first.iter().flatten() {
            match *t.bytes {
                [a] => variants(a).iter().for_each(|&v| single[v as usize] = true),
                [a, b, ..] => {
                    for x in variants(a) {
                        for y in variants(b) {
                            let bit = (x as usize) << 8 | y as usize;
                            pairs[bit / 64] |= 1 << (bit % 64);
                        }
                    }
                }
                [] => {}
            }
        }
        PreCheck {
            by_first,
            single,
            pairs,
        }
    }

    /// True when the text provably trips no guard rule; false means "parse
    /// it" (which usually finds nothing either).
    pub fn harmless(&self, sql: &[u8]) -> bool {
        let Some(&first) = sql.first() else {
            return true;
        };
        if self.single[first as usize] {
            return false;
        }
        let mut prev = first;
        for (i, &b) in sql.iter().enumerate().skip(1) {
            if self.single[b as usize] {
                return false;
            }
            let bit = (prev as usize) << 8 | b as usize;
            if self.pairs[bit / 64] & (1 << (bit % 64)) != 0 && self.starts_trigger(sql, i - 1) {
                return false;
            }
            prev = b;
        }
        true
    }

    /// Whether a trigger starts at `sql[i]` (the slow path, after the pair
    /// table said one may).
    fn starts_trigger(&self, sql: &[u8], i: usize) -> bool {
        let first = sql[i].to_ascii_lowercase();
        self.by_first[first as usize].iter().any(|t| {
            let end = i + t.bytes.len();
            end <= sql.len()
                && sql[i..end].eq_ignore_ascii_case(&t.bytes)
                && (!t.word || !(i > 0 && ident_inner(sql[i - 1]) || continues(sql, end)))
        })
    }
}

/// Whether the byte at `end` continues an identifier.
fn continues(sql: &[u8], end: usize) -> bool {
    sql.get(end).is_some_and(|&b| ident_byte(b))
}

/// Bytes before a word that surely make it part of a longer identifier.
/// Not `$` or digits: `$a$$a$do` ends a dollar-quoted string before `do`,
/// and PostgreSQL 15 reads `1do` as a number then `do`.
fn ident_inner(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Bytes that can continue an identifier or keyword in PostgreSQL's lexer.
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_statements_pass() {
        let p = PreCheck::new([]);
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "select * from user_messages where id = $1",
            "insert into t (a, b) values (1, 'x')",
            "select random(), window_x, double_it from t order by 1",
            "BEGIN",
            "COMMIT",
            "select 'don''t'",
            // What ORMs and query builders send: quoted identifiers.
            r#"select "v" from "kv" where "k" = 42"#,
            r#"select "users"."id", "users"."name" from "users" where "users"."id" = 'u_1' limit 1"#,
            r#"insert into "orders" ("id", "total") values (7, 19.5) returning "id""#,
            r#"delete from "carts" where "expires_at" < now()"#,
        ] {
            assert!(p.harmless(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn triggers_are_found_in_any_case() {
        let p = PreCheck::new(["exec_sql"]);
        for sql in [
            "SET app.user_id = 'x'",
            "reset all",
            "select SeT_CoNfIg('a', 'b', true)",
            "DO $$ begin end $$",
            "select 1; do 'x'",
            "/**/DO/**/'begin end'",
            "select \"set_config\"()",
            "select \"SET_CONFIG\"('a', 'b', true)",
            "select \"pg_catalog\".\"set_config\"('a', 'b', true)",
            "select * from \"pg_temp\".\"t\"",
            "select \"dblink\"('x')",
            "select \"public\".\"Exec_Sql\"('x')",
            "update \"users\" set \"name\" = 'x' where \"id\" = 1",
            "select U&\"\\0073et_config\"()",
            "create function f() returns int as 'select 1' language sql",
            "PREPARE p AS select 1",
            "execute rowgate_identity",
            "DEALLOCATE rg_x",
            "declare c cursor with hold for select 1",
            "select query_to_xml('select 1', true, true, '')",
            "select dblink('x')",
            "select ts_stat('select 1')",
            "select xpath_table('a')",
            "select lo_import('/etc/passwd')",
            "select E'\\x41'",
            "select Exec_Sql('x')",
            "select crosstab('select 1')",
        ] {
            assert!(!p.harmless(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn do_counts_only_as_a_word() {
        let p = PreCheck::new([]);
        assert!(p.harmless(b"select random(), done, pseudo, do_x, x_do, do$ from t"));
        assert!(!p.harmless(b"do 'begin end'"));
        // `$` continues an identifier: this is one (unknown) word, not DO.
        assert!(p.harmless(b"do$$x$$"));
        assert!(pg_query::parse("do$$x$$", 0).is_err());
        assert!(!p.harmless(b"x;do'begin end'"));
        // After a dollar-quoted string or a number, `do` may be a word.
        assert!(!p.harmless(b"$a$$a$do "));
        assert!(!p.harmless(b"select 1do"));
        assert!(!p.harmless(b"insert into t values (1) on conflict do nothing"));
    }
}
