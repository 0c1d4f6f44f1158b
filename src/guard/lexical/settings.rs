//! Session-level setting changes in statement text (`SET`, `RESET`,
//! `set_config(.., false)`), which rowgate keeps with the client.

use super::{Lexer, Token, Word};

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
    /// Whether the last of these changes to touch setting `name` (any case)
    /// resets it: its own `RESET`, or `RESET ALL`. A `SET` after the reset
    /// wins over it.
    pub fn resets(&self, name: &str) -> bool {
        let last = self.ops.iter().rev().find(|op| match op {
            SessionOp::ResetAll => true,
            SessionOp::Reset(n) | SessionOp::Set(n) => n.eq_ignore_ascii_case(name),
            SessionOp::Unknown => false,
        });
        matches!(last, Some(SessionOp::ResetAll | SessionOp::Reset(_)))
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
/// session change of its literal name, or of an unknown one, and so does
/// `set_config` where the lexer cannot see it as a call (inside a
/// dollar-quoted `DO` body, say) or a `U&` identifier that might spell it.
/// Changes made inside functions are not seen.
pub fn session_effects(sql: &[u8]) -> SessionEffects {
    session_effects_of(sql, super::Mentions::of(sql))
}

/// [`session_effects`] for a text whose [`super::Mentions`] the caller
/// read already.
pub fn session_effects_of(sql: &[u8], mentions: super::Mentions) -> SessionEffects {
    let mut fx = SessionEffects::default();
    // Every form needs one of these words: SET, RESET and set_config hold
    // `set` (which can be neither quoted away nor escaped but with `U&`),
    // DISCARD ALL holds `discard`. Most statements hold none.
    if !mentions.session_words() {
        return fx;
    }
    let escaped = mentions.escape();
    let calls = scan(sql, &mut fx);
    if escaped || count_ignore_case(sql, b"set_config") > calls {
        fx.ops.push(SessionOp::Unknown);
    }
    fx
}

/// How often `hay` holds `needle` (lower case), ASCII case aside.
fn count_ignore_case(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}

/// The statement-by-statement reading of [`session_effects`]; returns the
/// number of `set_config` calls it read.
fn scan(sql: &[u8], fx: &mut SessionEffects) -> usize {
    let mut calls = 0;
    let mut lx = Lexer { s: sql, i: 0 };
    let mut at_start = true;
    let mut prev_word = Word::default();
    while let Some(tok) = lx.next_token() {
        match tok {
            Token::Semicolon => {
                at_start = true;
                prev_word = Word::default();
            }
            Token::Word(w) if at_start => {
                at_start = false;
                match w.as_str() {
                    "set" => set_statement(&mut lx, fx),
                    "reset" => match lx.next_token() {
                        Some(Token::Word(n)) if n == "all" => fx.ops.push(SessionOp::ResetAll),
                        Some(Token::Word(n)) if n == "role" || n == "session" => {
                            fx.ops.push(SessionOp::Unknown)
                        }
                        Some(Token::Word(n)) => {
                            let name = setting_name(&mut lx, n.to_string());
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
                    calls += 1;
                    lx.skip_blank();
                    match lx.quoted_literal() {
                        Some(name) => fx.ops.push(SessionOp::Set(name.to_ascii_lowercase())),
                        None => fx.ops.push(SessionOp::Unknown),
                    }
                }
                prev_word = Word::default();
            }
        }
    }
    calls
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // set_config the lexer cannot read as a call still counts.
        assert_eq!(
            ops("do $$ begin perform set_config('work_mem', '1MB', false); end $$"),
            [Unknown]
        );
        assert_eq!(
            ops("select U&\"\\0073et_config\"('work_mem', '1MB', false)"),
            [Unknown]
        );
        assert_eq!(
            ops("select set_config('a.b', 'x', false), 'set_config'"),
            [set("a.b"), Unknown]
        );
        assert_eq!(ops("select 1 from pgbench_accounts where aid = 7"), []);
        let fx = session_effects(b"reset all; set datestyle = german; reset timezone");
        assert!(!fx.resets("DateStyle"), "the SET after RESET ALL wins");
        assert!(fx.resets("TimeZone") && fx.resets("IntervalStyle"));
        assert!(!session_effects(b"set timezone = utc").resets("TimeZone"));
        assert!(!session_effects(b"select 1").any());
    }
}
