//! What rowgate expects back from the upstream server, in order.
//!
//! The server answers extended-protocol messages strictly in order, so a
//! queue with one entry per message that produces a reply tells rowgate,
//! for every server message, whether it belongs to the client (forward) or
//! to something rowgate slipped in (swallow): the identity statement, a
//! re-prepare of a client's statement on a new connection. Entries can also
//! carry a reply rowgate makes itself (`Emit`), released in its turn.

use super::session::Statement;
use bytes::Bytes;
use std::sync::Arc;

/// One expected reply.
#[derive(Debug)]
pub struct Expect {
    /// Which message it answers.
    pub kind: Kind,
    /// Whether the client must not see the reply (rowgate sent the message).
    pub swallow: bool,
    /// How to rewrite the server's ErrorResponse to this message, if it
    /// fails, before the client sees it.
    pub on_error: Option<ErrorRewrite>,
}

/// A rewrite of the server's ErrorResponse.
#[derive(Debug)]
pub enum ErrorRewrite {
    /// Send this ErrorResponse instead (a statement the guard refused was
    /// replaced by one that fails on purpose).
    Replace(Bytes),
    /// The message names rowgate's upstream statement (`from`); name the
    /// client's (`to`) instead, keeping every other field as PostgreSQL
    /// sent it.
    Rename {
        /// Upstream statement name.
        from: String,
        /// Client's statement name.
        to: String,
    },
}

impl ErrorRewrite {
    /// The ErrorResponse frame the client gets for the server's `frame`.
    pub fn apply(&self, frame: &[u8]) -> Bytes {
        match self {
            ErrorRewrite::Replace(b) => b.clone(),
            ErrorRewrite::Rename { from, to } => crate::wire::backend::rename_in_error(
                frame,
                &format!("\"{from}\""),
                &format!("\"{to}\""),
            ),
        }
    }
}

/// The message an [`Expect`] answers.
#[derive(Debug)]
pub enum Kind {
    /// Parse → ParseComplete.
    Parse(ParseNote),
    /// Bind → BindComplete.
    Bind,
    /// Describe → [ParameterDescription] RowDescription/NoData.
    Describe(Shape),
    /// Execute → rows, then CommandComplete/EmptyQueryResponse/PortalSuspended.
    Execute,
    /// Close → CloseComplete.
    Close,
    /// Sync → ReadyForQuery.
    Sync,
    /// Query → any replies, then ReadyForQuery.
    Query,
    /// FunctionCall → FunctionCallResponse, ReadyForQuery.
    FunctionCall,
    /// A reply rowgate makes itself, sent when everything before it is done.
    Emit(Bytes),
}

impl Kind {
    /// Whether ReadyForQuery ends this entry.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Kind::Sync | Kind::Query | Kind::FunctionCall)
    }
}

/// What a Describe's RowDescription/NoData is for, besides its reader.
#[derive(Debug)]
pub enum Shape {
    /// Nothing more.
    Pass,
    /// The client describes its statement: remember the result shape it
    /// learns, if it is the first.
    Record(Arc<Statement>),
    /// rowgate prepared the statement again on another connection: does
    /// the result still have the shape the client learnt?
    Check(Arc<Statement>),
}

/// What to undo if a Parse fails or is skipped.
#[derive(Debug, Default)]
pub struct ParseNote {
    /// Upstream statement name rowgate recorded as prepared.
    pub upstream: Option<Arc<str>>,
    /// The client's name for it.
    pub client: Option<Box<[u8]>>,
    /// This is rowgate's identity statement.
    pub identity: bool,
}

impl Expect {
    /// An entry whose reply goes to the client.
    pub fn forward(kind: Kind) -> Self {
        Expect {
            kind,
            swallow: false,
            on_error: None,
        }
    }
    /// An entry whose reply rowgate swallows.
    pub fn swallow(kind: Kind) -> Self {
        Expect {
            kind,
            swallow: true,
            on_error: None,
        }
    }
    /// An entry for a refused statement: the server's error is replaced.
    pub fn refused(kind: Kind, error: Bytes) -> Self {
        Expect {
            kind,
            swallow: false,
            on_error: Some(ErrorRewrite::Replace(error)),
        }
    }
    /// An entry whose error, if any, names `from` where the client knows `to`.
    pub fn renamed(kind: Kind, from: &str, to: &[u8]) -> Self {
        Expect {
            kind,
            swallow: false,
            on_error: Some(ErrorRewrite::Rename {
                from: from.to_owned(),
                to: String::from_utf8_lossy(to).into_owned(),
            }),
        }
    }
}
