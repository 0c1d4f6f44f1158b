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

mod bind;
mod lexer;
mod recognize;
pub mod reply;
#[cfg(test)]
mod tests;
mod tracker;

use bind::TEXT_OID;
pub use bind::{bind_first_param, bind_result_format, parse_first_param_type};
use lexer::Lexer;
pub use recognize::{ends_transaction, recognize};
pub use tracker::{Portal, Prepared, Switch, Tracker};

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
