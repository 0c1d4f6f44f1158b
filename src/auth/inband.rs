//! In-band identity for service logins, as pure code: recognising the
//! statements by which a pooled legacy service names the user of a
//! transaction, tracking them through the extended protocol, and building
//! the replies PostgreSQL would send for them. No sockets, no async: the
//! session calls these, verifies the token with
//! [`super::Authenticator::verify_inband`], and never forwards the
//! statement (so the token is in no upstream log and not in
//! `pg_stat_activity`).
//!
//! The forms recognised (keywords in any case, any whitespace or comments
//! between tokens, `pg_catalog.` optional, the name unquoted or quoted):
//! - `SET LOCAL rowgate.token = '<jwt>'` (or `TO`), alone or first in a
//!   multi-statement simple query (the rest's offset is returned);
//! - `SELECT set_config('rowgate.token', $1, true)` (the token is Bind
//!   parameter 1, text or binary) or with a `'<jwt>'` literal;
//! - the session-level forms, to refuse: `SET rowgate.token`, `SET SESSION
//!   rowgate.token`, `set_config('rowgate.token', .., false)`, `RESET
//!   rowgate.token`.
//!
//! Anything else that names `rowgate.token` is left to the statement
//! guard, which refuses every `rowgate.*` setting: unrecognised means
//! refused, never forwarded with effect.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{build, put_cstr};

/// The setting a service uses to name a transaction's user.
pub const SETTING: &str = "rowgate.token";

/// Where the token of a recognised statement is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAt {
    /// In the text, as a string literal (already unescaped).
    Literal(String),
    /// Bind parameter `$1`.
    Param,
}

/// What a statement text is, as far as in-band identity goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inband {
    /// Nothing to do with `rowgate.token` (as far as these forms go).
    None,
    /// A session-level or otherwise refused form: answer 42501 with
    /// [`session_level_message`].
    SessionLevel,
    /// `SET LOCAL rowgate.token = '<jwt>'`: answered with `SET`.
    SetLocal {
        /// The token.
        token: String,
        /// Byte offset of what follows the statement's `;` (the text's
        /// length when nothing follows but whitespace and comments).
        rest: usize,
    },
    /// `SELECT set_config('rowgate.token', <token>, true)`: answered with
    /// one row, the token, in a column `set_config` of type text.
    SetConfig {
        /// Where the token is.
        token: TokenAt,
        /// As for [`Inband::SetLocal`].
        rest: usize,
    },
}

impl Inband {
    /// The offset of the statements after this one, if any follow.
    pub fn rest<'a>(&self, sql: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            Inband::SetLocal { rest, .. } | Inband::SetConfig { rest, .. } => {
                let tail = sql.get(*rest..)?;
                let mut lx = Lexer { s: tail, i: 0 };
                lx.skip_blank_and_semicolons();
                (lx.i < tail.len()).then_some(tail)
            }
            _ => None,
        }
    }
}

/// Why the session-level forms are refused.
pub fn session_level_message() -> &'static str {
    "rowgate: rowgate.token can only be set for the current transaction (SET LOCAL rowgate.token = '...', or set_config('rowgate.token', $1, true)): on a pooled service connection a session-level identity would outlive the request"
}

/// Why a client that logged in with a JWT password cannot use it.
pub fn not_a_service_message() -> &'static str {
    "rowgate: rowgate.token is only for service logins ([[services]]); this connection is already authenticated by its own token"
}

/// Why a second, different token in one transaction is refused.
pub fn second_token_message() -> &'static str {
    "rowgate: this transaction already runs as the user of another rowgate.token; the identity of a transaction cannot change (start a new transaction)"
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    /// A keyword or unquoted identifier, lower-cased.
    Word(String),
    /// A double-quoted identifier, as written.
    Quoted(String),
    /// A string literal, unescaped.
    Str(String),
    /// `$n`.
    Param(u32),
    /// One punctuation byte.
    Punct(u8),
    /// Something else (a number, an operator): no form of ours.
    Other,
    End,
}

impl Lexer<'_> {
    fn skip_blank(&mut self) {
        loop {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            let rest = &self.s[self.i..];
            if rest.starts_with(b"--") {
                while self.i < self.s.len() && self.s[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if rest.starts_with(b"/*") {
                // Comments nest in PostgreSQL.
                let mut depth = 0usize;
                while self.i < self.s.len() {
                    if self.s[self.i..].starts_with(b"/*") {
                        depth += 1;
                        self.i += 2;
                    } else if self.s[self.i..].starts_with(b"*/") {
                        depth -= 1;
                        self.i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.i += 1;
                    }
                }
            } else {
                return;
            }
        }
    }

    fn skip_blank_and_semicolons(&mut self) {
        loop {
            self.skip_blank();
            if self.s.get(self.i) == Some(&b';') {
                self.i += 1;
            } else {
                return;
            }
        }
    }

    fn next(&mut self) -> Tok {
        self.skip_blank();
        let Some(&c) = self.s.get(self.i) else {
            return Tok::End;
        };
        let start = self.i;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            // E'...' strings: only when the literal needs no escape
            // processing (no backslash) is it read; otherwise Other.
            if (c == b'e' || c == b'E') && self.s.get(self.i + 1) == Some(&b'\'') {
                self.i += 1;
                return match self.string() {
                    Some(s) if !s.contains('\\') => Tok::Str(s),
                    _ => Tok::Other,
                };
            }
            while self.i < self.s.len()
                && (self.s[self.i].is_ascii_alphanumeric()
                    || self.s[self.i] == b'_'
                    || self.s[self.i] == b'$'
                    || self.s[self.i] >= 0x80)
            {
                self.i += 1;
            }
            return match std::str::from_utf8(&self.s[start..self.i]) {
                Ok(w) => Tok::Word(w.to_ascii_lowercase()),
                Err(_) => Tok::Other,
            };
        }
        match c {
            b'\'' => match self.string() {
                Some(s) => Tok::Str(s),
                None => Tok::Other,
            },
            b'"' => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Tok::Other,
                        Some(b'"') if self.s.get(self.i + 1) == Some(&b'"') => {
                            out.push(b'"');
                            self.i += 2;
                        }
                        Some(b'"') => {
                            self.i += 1;
                            break;
                        }
                        Some(&b) => {
                            out.push(b);
                            self.i += 1;
                        }
                    }
                }
                match String::from_utf8(out) {
                    Ok(s) => Tok::Quoted(s),
                    Err(_) => Tok::Other,
                }
            }
            b'$' => {
                self.i += 1;
                let digits = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[digits..self.i])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .map_or(Tok::Other, Tok::Param)
            }
            b'(' | b')' | b',' | b'.' | b';' | b'=' => {
                self.i += 1;
                Tok::Punct(c)
            }
            _ => {
                self.i += 1;
                Tok::Other
            }
        }
    }

    /// A '...' literal at `self.i` (`''` is a quote), standard-conforming.
    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return None,
                Some(b'\'') if self.s.get(self.i + 1) == Some(&b'\'') => {
                    out.push(b'\'');
                    self.i += 2;
                }
                Some(b'\'') => {
                    self.i += 1;
                    return String::from_utf8(out).ok();
                }
                Some(&b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }

    fn word(&mut self, w: &str) -> bool {
        let save = self.i;
        if self.next() == Tok::Word(w.into()) {
            true
        } else {
            self.i = save;
            false
        }
    }

    fn punct(&mut self, p: u8) -> bool {
        let save = self.i;
        if self.next() == Tok::Punct(p) {
            true
        } else {
            self.i = save;
            false
        }
    }

    /// A setting name (`a.b`, `"a"."b"`, `"a.b"`), as PostgreSQL folds it.
    fn setting_name(&mut self) -> Option<String> {
        let part = |t: Tok| match t {
            Tok::Word(w) => Some(w),
            Tok::Quoted(q) => Some(q),
            _ => None,
        };
        let mut name = part(self.next())?;
        while self.punct(b'.') {
            name.push('.');
            name.push_str(&part(self.next())?);
        }
        Some(name)
    }

    /// The end of a statement: `;` or the end of the text. Returns the
    /// offset after it.
    fn statement_end(&mut self) -> Option<usize> {
        match self.next() {
            Tok::End => Some(self.s.len()),
            Tok::Punct(b';') => Some(self.i),
            _ => None,
        }
    }
}

/// Recognises the in-band forms at the start of `sql` (a simple Query's
/// text or a Parse's query).
pub fn recognize(sql: &[u8]) -> Inband {
    // Every form names the setting, so its last word is in the text (as a
    // word in any case, or quoted as written): most statements, which run
    // through here on every simple query, are ruled out without a lexer.
    if !sql.windows(5).any(|w| w.eq_ignore_ascii_case(b"token")) {
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

/// A value of Bind parameter `$1` from a Bind's parameter part (`rest` of
/// [`crate::wire::frontend::BindParts`]): the bytes in text or binary
/// format (the same for `text`/`varchar`), `None` for NULL.
pub fn bind_first_param(rest: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut r = Cursor { b: rest, i: 0 };
    let nformats = r.i16()?;
    r.skip(2 * usize::try_from(nformats).map_err(|_| "negative format count")?)?;
    let nparams = r.i16()?;
    if nparams < 1 {
        return Err("rowgate.token needs its value as parameter $1");
    }
    let len = r.i32()?;
    if len < 0 {
        return Ok(None);
    }
    r.take(len as usize).map(Some)
}

/// The result format a Bind asks for column 1 (0 text, 1 binary).
pub fn bind_result_format(rest: &[u8]) -> Result<i16, &'static str> {
    let mut r = Cursor { b: rest, i: 0 };
    let nformats = r.i16()?;
    r.skip(2 * usize::try_from(nformats).map_err(|_| "negative format count")?)?;
    let nparams = r.i16()?;
    for _ in 0..nparams.max(0) {
        let len = r.i32()?;
        if len > 0 {
            r.skip(len as usize)?;
        }
    }
    let nresults = r.i16()?;
    if nresults >= 1 {
        r.i16()
    } else {
        Ok(0)
    }
}

/// The declared type of parameter 1 in a Parse payload (query, then
/// parameter types), 0 when not given.
pub fn parse_first_param_type(spec: &[u8]) -> u32 {
    let Some(nul) = spec.iter().position(|&b| b == 0) else {
        return 0;
    };
    let mut r = Cursor {
        b: &spec[nul + 1..],
        i: 0,
    };
    match (r.i16(), r.i32()) {
        (Ok(n), Ok(oid)) if n >= 1 => oid as u32,
        _ => 0,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.i.checked_add(n).ok_or("message too short")?;
        let out = self.b.get(self.i..end).ok_or("message too short")?;
        self.i = end;
        Ok(out)
    }
    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        self.take(n).map(|_| ())
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The OID of `text`.
const TEXT_OID: u32 = 25;

/// Replies PostgreSQL sends for the in-band statements.
pub mod reply {
    use super::*;

    /// CommandComplete with `tag`.
    pub fn command_complete(tag: &str) -> Bytes {
        build(b'C', |b| put_cstr(b, tag.as_bytes()))
    }
    /// BindComplete.
    pub fn bind_complete() -> Bytes {
        build(b'2', |_| {})
    }
    /// NoData (Describe of a statement without result rows).
    pub fn no_data() -> Bytes {
        build(b'n', |_| {})
    }
    /// ParameterDescription with the given parameter types.
    pub fn parameter_description(types: &[u32]) -> Bytes {
        build(b't', |b| {
            b.put_i16(types.len() as i16);
            for t in types {
                b.put_u32(*t);
            }
        })
    }
    /// RowDescription of `set_config(...)`: one text column `set_config`.
    pub fn set_config_row_description(format: i16) -> Bytes {
        build(b'T', |b| {
            b.put_i16(1);
            put_cstr(b, b"set_config");
            b.put_u32(0); // not a table column
            b.put_i16(0);
            b.put_u32(TEXT_OID);
            b.put_i16(-1); // varlena
            b.put_i32(-1); // no typmod
            b.put_i16(format);
        })
    }
    /// DataRow with one value: what set_config returns (the new value).
    pub fn data_row(value: &[u8]) -> Bytes {
        build(b'D', |b| {
            b.put_i16(1);
            b.put_i32(value.len() as i32);
            b.put_slice(value);
        })
    }
    /// A WARNING notice, as for `SET LOCAL` outside a transaction block.
    pub fn warning(code: &str, message: &str) -> Bytes {
        build(b'N', |b| {
            for (f, v) in [
                (b'S', "WARNING"),
                (b'V', "WARNING"),
                (b'C', code),
                (b'M', message),
            ] {
                b.put_u8(f);
                put_cstr(b, v.as_bytes());
            }
            b.put_u8(0);
        })
    }
    /// PostgreSQL's warning for `SET LOCAL` outside a transaction block.
    pub fn set_local_outside_transaction() -> Bytes {
        warning("25P01", "SET LOCAL can only be used in transaction blocks")
    }

    /// The whole simple-query reply (without ReadyForQuery) for a
    /// recognised statement whose token was accepted.
    pub fn simple(form: &Inband, token: &str) -> BytesMut {
        let mut out = BytesMut::new();
        match form {
            Inband::SetConfig { .. } => {
                out.extend_from_slice(&set_config_row_description(0));
                out.extend_from_slice(&data_row(token.as_bytes()));
                out.extend_from_slice(&command_complete("SELECT 1"));
            }
            _ => out.extend_from_slice(&command_complete("SET")),
        }
        out
    }
}

/// A client's prepared in-band statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// What it is (never [`Inband::None`] or [`Inband::SessionLevel`]).
    pub form: Inband,
    /// Declared type of `$1` (0 = inferred, text).
    pub param_type: u32,
}

impl Prepared {
    /// The ParameterDescription + RowDescription/NoData of a Describe of
    /// this statement.
    pub fn describe_statement(&self) -> BytesMut {
        let mut out = BytesMut::new();
        match &self.form {
            Inband::SetConfig {
                token: TokenAt::Param,
                ..
            } => {
                let t = if self.param_type == 0 {
                    TEXT_OID
                } else {
                    self.param_type
                };
                out.extend_from_slice(&reply::parameter_description(&[t]));
                out.extend_from_slice(&reply::set_config_row_description(0));
            }
            Inband::SetConfig { .. } => {
                out.extend_from_slice(&reply::parameter_description(&[]));
                out.extend_from_slice(&reply::set_config_row_description(0));
            }
            _ => {
                out.extend_from_slice(&reply::parameter_description(&[]));
                out.extend_from_slice(&reply::no_data());
            }
        }
        out
    }
}

/// A bound in-band portal: what Describe and Execute of it answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    /// The statement's form.
    pub form: Inband,
    /// The token (verified at Bind).
    pub token: String,
    /// Result format of column 1.
    pub format: i16,
}

impl Portal {
    /// RowDescription or NoData.
    pub fn describe(&self) -> Bytes {
        match self.form {
            Inband::SetConfig { .. } => reply::set_config_row_description(self.format),
            _ => reply::no_data(),
        }
    }
    /// What Execute answers: the row and `SELECT 1`, or `SET`.
    pub fn execute(&self) -> BytesMut {
        let mut out = BytesMut::new();
        match self.form {
            Inband::SetConfig { .. } => {
                out.extend_from_slice(&reply::data_row(self.token.as_bytes()));
                out.extend_from_slice(&reply::command_complete("SELECT 1"));
            }
            _ => out.extend_from_slice(&reply::command_complete("SET")),
        }
        out
    }
}

/// Per-client bookkeeping of in-band statements and portals, and of the
/// token of the current transaction.
#[derive(Debug, Default)]
pub struct Tracker {
    statements: HashMap<Box<[u8]>, Prepared>,
    portals: HashMap<Box<[u8]>, Portal>,
    /// sha256 of the token the current transaction runs as.
    current: Option<[u8; 32]>,
}

/// Whether a verified token may become the transaction's identity.
#[derive(Debug, PartialEq, Eq)]
pub enum Switch {
    /// The first token of the transaction: switch to its user.
    First,
    /// The token already in force: nothing changes.
    Same,
    /// Another token in the same transaction: refuse.
    Different,
}

impl Tracker {
    /// A Parse of `name` with `spec`: records or forgets an in-band
    /// statement; returns what the statement is.
    pub fn parse(&mut self, name: &[u8], spec: &[u8]) -> Inband {
        let query = spec.split(|&b| b == 0).next().unwrap_or_default();
        let form = recognize(query);
        // Multi-statement strings cannot be prepared; treat as not ours
        // only when nothing follows (PostgreSQL would refuse the others).
        let form = match form {
            f @ (Inband::SetLocal { .. } | Inband::SetConfig { .. }) if f.rest(query).is_some() => {
                Inband::None
            }
            f => f,
        };
        match &form {
            Inband::SetLocal { .. } | Inband::SetConfig { .. } => {
                self.statements.insert(
                    name.into(),
                    Prepared {
                        form: form.clone(),
                        param_type: parse_first_param_type(spec),
                    },
                );
            }
            _ => {
                self.statements.remove(name);
            }
        }
        form
    }

    /// The in-band statement `name`, if it is one.
    pub fn statement(&self, name: &[u8]) -> Option<&Prepared> {
        self.statements.get(name)
    }

    /// Records a bound in-band portal (or forgets `portal` when a Bind of
    /// another statement reuses the name).
    pub fn bind(&mut self, portal: &[u8], bound: Option<Portal>) {
        match bound {
            Some(p) => {
                self.portals.insert(portal.into(), p);
            }
            None => {
                self.portals.remove(portal);
            }
        }
    }

    /// The in-band portal `name`, if it is one.
    pub fn portal(&self, name: &[u8]) -> Option<&Portal> {
        self.portals.get(name)
    }

    /// Close of a statement (`S`) or portal (`P`). Returns whether it was
    /// an in-band one (then rowgate answers CloseComplete itself).
    pub fn close(&mut self, kind: u8, name: &[u8]) -> bool {
        match kind {
            b'S' => self.statements.remove(name).is_some(),
            _ => self.portals.remove(name).is_some(),
        }
    }

    /// Decides whether the verified token with sha256 `digest` may be the
    /// transaction's identity, and records it.
    pub fn switch(&mut self, digest: [u8; 32]) -> Switch {
        match self.current {
            None => {
                self.current = Some(digest);
                Switch::First
            }
            Some(d) if d == digest => Switch::Same,
            Some(_) => Switch::Different,
        }
    }

    /// Whether the current transaction runs as an in-band user.
    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    /// The transaction ended: its identity is gone. Unnamed portals end
    /// with the transaction too; named ones also (PostgreSQL drops every
    /// portal at commit or rollback).
    pub fn transaction_over(&mut self) {
        self.current = None;
        self.portals.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_local(token: &str, rest: usize) -> Inband {
        Inband::SetLocal {
            token: token.into(),
            rest,
        }
    }

    #[test]
    fn set_local_forms_are_recognised() {
        let q = b"SET LOCAL rowgate.token = 'eyJ.a.b'";
        assert_eq!(recognize(q), set_local("eyJ.a.b", q.len()));
        for q in [
            &b"set local rowgate.token to 'eyJ.a.b'"[..],
            b"  /* hi /* nested */ */ SET\n\tLOCAL   \"rowgate\".\"token\"='eyJ.a.b' ; ",
            b"Set Local \"rowgate.token\" = E'eyJ.a.b';",
            b"-- c\nset local rowgate . token = 'eyJ.a.b'",
        ] {
            assert!(
                matches!(recognize(q), Inband::SetLocal { ref token, .. } if token == "eyJ.a.b"),
                "{}",
                String::from_utf8_lossy(q)
            );
            assert_eq!(recognize(q).rest(q), None, "nothing follows");
        }
    }

    #[test]
    fn a_multi_statement_query_gives_the_rest() {
        let q = b"SET LOCAL rowgate.token = 'tok'; select * from notes";
        let form = recognize(q);
        assert!(matches!(form, Inband::SetLocal { ref token, .. } if token == "tok"));
        assert_eq!(form.rest(q), Some(&b" select * from notes"[..]));
        let q = b"select set_config('rowgate.token', 'tok', true);select 1";
        let form = recognize(q);
        assert_eq!(form.rest(q), Some(&b"select 1"[..]));
    }

    #[test]
    fn a_rest_that_ends_the_transaction_is_noticed() {
        assert!(ends_transaction(b" select 1; COMMIT"));
        assert!(ends_transaction(b"rollback"));
        assert!(ends_transaction(b"select 1;/* x */ end;"));
        assert!(!ends_transaction(
            b"select case when true then 1 end from t"
        ));
        assert!(!ends_transaction(b"select 'commit'; select 2"));
    }

    #[test]
    fn session_level_forms_are_refused() {
        for q in [
            &b"SET rowgate.token = 'x'"[..],
            b"SET SESSION rowgate.token = 'x'",
            b"set rowgate.token to default",
            b"SET LOCAL rowgate.token TO DEFAULT",
            b"SET LOCAL rowgate.token = 'x' 'y'",
            b"RESET rowgate.token",
            b"select set_config('rowgate.token', $1, false)",
            b"select set_config('rowgate.token', 'x', 'off')",
            b"select set_config('rowgate.token', $2, true)",
            b"select set_config('rowgate.token', $1, $2)",
        ] {
            assert_eq!(
                recognize(q),
                Inband::SessionLevel,
                "{}",
                String::from_utf8_lossy(q)
            );
        }
    }

    #[test]
    fn other_statements_are_not_ours() {
        for q in [
            &b"select 1"[..],
            b"SET LOCAL app.user_id = 'x'",
            b"SET LOCAL rowgate.tokens = 'x'",
            b"select set_config('app.user_id', $1, true)",
            b"select 'SET LOCAL rowgate.token = 1'",
            b"",
            b"set",
            b"select pg_catalog",
        ] {
            assert_eq!(recognize(q), Inband::None, "{}", String::from_utf8_lossy(q));
        }
    }

    #[test]
    fn the_extended_form_is_recognised_in_its_variants() {
        for q in [
            &b"select set_config('rowgate.token', $1, true)"[..],
            b"SELECT SET_CONFIG ( 'rowgate.token' , $1 , TRUE ) ;",
            b"select pg_catalog.set_config('rowgate.token',$1,'t')",
            b"select\nset_config('rowgate.token', $1, true) -- why",
        ] {
            assert_eq!(
                recognize(q),
                Inband::SetConfig {
                    token: TokenAt::Param,
                    rest: q.len()
                },
                "{}",
                String::from_utf8_lossy(q)
            );
        }
    }

    fn bind_rest(formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&(results.len() as i16).to_be_bytes());
        for r in results {
            b.extend_from_slice(&r.to_be_bytes());
        }
        b
    }

    #[test]
    fn the_token_is_bind_parameter_one_in_either_format() {
        let text = bind_rest(&[], &[Some(b"tok")], &[]);
        assert_eq!(bind_first_param(&text), Ok(Some(&b"tok"[..])));
        assert_eq!(bind_result_format(&text), Ok(0));
        let binary = bind_rest(&[1], &[Some(b"tok")], &[1]);
        assert_eq!(bind_first_param(&binary), Ok(Some(&b"tok"[..])));
        assert_eq!(bind_result_format(&binary), Ok(1));
        assert_eq!(bind_first_param(&bind_rest(&[], &[None], &[])), Ok(None));
        assert!(bind_first_param(&bind_rest(&[], &[], &[])).is_err());
        assert!(bind_first_param(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn replies_are_what_postgres_sends() {
        // PostgreSQL's layout: one field, no table, type text (25),
        // typlen -1, typmod -1, text format. (tests/sidecar.rs compares
        // the whole reply with a real server's.)
        let rd = reply::set_config_row_description(0);
        assert_eq!(
            &rd[..],
            b"T\0\0\0\x23\0\x01set_config\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0"
        );
        assert_eq!(
            &reply::data_row(b"tok")[..],
            b"D\0\0\0\x0d\0\x01\0\0\0\x03tok"
        );
        assert_eq!(
            &reply::command_complete("SELECT 1")[..],
            b"C\0\0\0\x0dSELECT 1\0"
        );
        assert_eq!(&reply::command_complete("SET")[..], b"C\0\0\0\x08SET\0");
        let p = Prepared {
            form: recognize(b"select set_config('rowgate.token', $1, true)"),
            param_type: 0,
        };
        let d = p.describe_statement();
        assert_eq!(&d[..11], b"t\0\0\0\x0a\0\x01\0\0\0\x19");
    }

    #[test]
    fn the_tracker_follows_statements_portals_and_transactions() {
        let mut t = Tracker::default();
        let spec = b"select set_config('rowgate.token', $1, true)\0\0\x01\0\0\x04\x13";
        assert!(matches!(t.parse(b"S_1", spec), Inband::SetConfig { .. }));
        assert_eq!(t.statement(b"S_1").map(|p| p.param_type), Some(1043));
        assert_eq!(t.parse(b"S_1", b"select 1\0\0\0"), Inband::None);
        assert!(
            t.statement(b"S_1").is_none(),
            "a re-Parse of the name forgets it"
        );
        assert_eq!(t.switch([1; 32]), Switch::First);
        assert_eq!(t.switch([1; 32]), Switch::Same);
        assert_eq!(t.switch([2; 32]), Switch::Different);
        t.transaction_over();
        assert!(!t.active());
        assert_eq!(t.switch([2; 32]), Switch::First);
        // A multi-statement Parse is not ours (PostgreSQL refuses it).
        assert_eq!(
            t.parse(b"", b"set local rowgate.token = 'x'; select 1\0\0\0"),
            Inband::None
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_rest_is_in_bounds(s in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let f = recognize(&s);
            if let Some(rest) = f.rest(&s) {
                proptest::prop_assert!(rest.len() <= s.len());
            }
            let _ = bind_first_param(&s);
            let _ = bind_result_format(&s);
            let _ = parse_first_param_type(&s);
        }

        #[test]
        fn any_token_literal_round_trips(tok in "[A-Za-z0-9_.'-]{1,80}", ws in "[ \t\n]{0,3}", local in proptest::bool::ANY) {
            let lit = tok.replace('\'', "''");
            let q = if local {
                format!("SET{ws} LOCAL rowgate.token{ws}={ws}'{lit}'{ws}")
            } else {
                format!("select{ws} set_config('rowgate.token',{ws}'{lit}', true){ws};")
            };
            let f = recognize(q.as_bytes());
            let got = match f {
                Inband::SetLocal { token, .. } => token,
                Inband::SetConfig { token: TokenAt::Literal(t), .. } => t,
                other => { return Err(proptest::test_runner::TestCaseError::fail(format!("{other:?} for {q}"))); }
            };
            proptest::prop_assert_eq!(got, tok);
        }

        #[test]
        fn prefixes_of_a_set_local_are_never_a_set_local(cut in 0usize..36) {
            let q = b"SET LOCAL rowgate.token = 'abc.def'";
            let f = recognize(&q[..cut.min(q.len() - 1)]);
            let is_set_local = matches!(f, Inband::SetLocal { .. });
            proptest::prop_assert!(!is_set_local);
        }
    }
}
