//! Recognising the in-band statements in SQL text.

use super::lexer::{Lexer, Tok};
use super::{Inband, TokenAt, SETTING};

/// Recognises the in-band forms at the start of `sql` (a simple Query's
/// text or a Parse's query).
pub fn recognize(sql: &[u8]) -> Inband {
    // Every form names the setting, so its last word is in the text (as a
    // word in any case, or quoted as written): most statements, which run
    // through here on every simple query, are ruled out without a lexer.
    // A first-letter test per byte: five-byte windows compared in full
    // cost more than everything else this function does.
    let names_it = (0..sql.len()).any(|i| {
        (sql[i] | 0x20) == b't'
            && sql.len() - i >= 5
            && sql[i..i + 5].eq_ignore_ascii_case(b"token")
    });
    if !names_it {
        return Inband::None;
    }
    let mut lx = Lexer { s: sql, i: 0 };
    match lx.next() {
        Tok::Word(w) if w == "set" => set_statement(&mut lx),
        Tok::Word(w) if w == "reset" => match lx.setting_name() {
            Some(n) if n == SETTING => Inband::SessionLevel,
            _ => Inband::None,
        },
        Tok::Word(w) if w == "select" => select_set_config(&mut lx),
        _ => Inband::None,
    }
}

fn set_statement(lx: &mut Lexer<'_>) -> Inband {
    let local = if lx.word("local") {
        true
    } else {
        lx.word("session");
        false
    };
    match lx.setting_name() {
        Some(n) if n == SETTING => {}
        _ => return Inband::None,
    }
    if !local {
        return Inband::SessionLevel;
    }
    if !(lx.punct(b'=') || lx.word("to")) {
        return Inband::SessionLevel;
    }
    // Only a literal names a user; DEFAULT or a list is refused.
    let Tok::Str(token) = lx.next() else {
        return Inband::SessionLevel;
    };
    match lx.statement_end() {
        Some(rest) => Inband::SetLocal { token, rest },
        None => Inband::SessionLevel,
    }
}

fn select_set_config(lx: &mut Lexer<'_>) -> Inband {
    let mut name = match lx.next() {
        Tok::Word(w) => w,
        _ => return Inband::None,
    };
    if name == "pg_catalog" {
        if !lx.punct(b'.') {
            return Inband::None;
        }
        name = match lx.next() {
            Tok::Word(w) => w,
            _ => return Inband::None,
        };
    }
    if name != "set_config" {
        return Inband::None;
    }
    if !lx.punct(b'(') {
        return Inband::None;
    }
    match lx.next() {
        Tok::Str(n) if n == SETTING => {}
        _ => return Inband::None,
    }
    if !lx.punct(b',') {
        return Inband::SessionLevel;
    }
    let token = match lx.next() {
        Tok::Str(s) => TokenAt::Literal(s),
        Tok::Param(1) => TokenAt::Param,
        _ => return Inband::SessionLevel,
    };
    if !lx.punct(b',') {
        return Inband::SessionLevel;
    }
    let is_local = match lx.next() {
        Tok::Word(w) if w == "true" => true,
        Tok::Str(s)
            if matches!(
                s.to_ascii_lowercase().as_str(),
                "t" | "true" | "on" | "yes" | "1"
            ) =>
        {
            true
        }
        _ => false,
    };
    if !is_local || !lx.punct(b')') {
        return Inband::SessionLevel;
    }
    match lx.statement_end() {
        Some(rest) => Inband::SetConfig { token, rest },
        None => Inband::SessionLevel,
    }
}

/// Whether any statement in `sql` (the rest of a multi-statement query)
/// ends or starts a transaction. Conservative: a word that merely looks
/// like one at a statement's start counts (then the query is refused, and
/// the service sends COMMIT on its own), never the other way round.
pub fn ends_transaction(sql: &[u8]) -> bool {
    let mut lx = Lexer { s: sql, i: 0 };
    let mut at_start = true;
    loop {
        match lx.next() {
            Tok::End => return false,
            Tok::Punct(b';') => at_start = true,
            Tok::Word(w) if at_start => {
                if matches!(
                    w.as_str(),
                    "commit" | "rollback" | "abort" | "end" | "begin" | "start" | "prepare"
                ) {
                    return true;
                }
                at_start = false;
            }
            _ => at_start = false,
        }
    }
}
