//! Tracking a client's in-band statements and portals through the extended
//! protocol.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::{parse_first_param_type, recognize, reply, Inband, TokenAt, TEXT_OID};

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
///
/// Empty until the client first uses an in-band statement: every session
/// carries one (a JWT login's too, to refuse in-band tokens with a clear
/// message), and most never use it. Empty it is one pointer; in use, it was
/// 136 bytes in every idle client's task.
#[derive(Debug, Default)]
pub struct Tracker {
    used: Option<Box<Used>>,
}

#[derive(Debug, Default)]
struct Used {
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
                self.used().statements.insert(
                    name.into(),
                    Prepared {
                        form: form.clone(),
                        param_type: parse_first_param_type(spec),
                    },
                );
            }
            _ => {
                if let Some(u) = &mut self.used {
                    u.statements.remove(name);
                }
            }
        }
        form
    }

    /// The bookkeeping, made on first use.
    fn used(&mut self) -> &mut Used {
        self.used.get_or_insert_with(Box::default)
    }

    /// The in-band statement `name`, if it is one.
    pub fn statement(&self, name: &[u8]) -> Option<&Prepared> {
        self.used.as_ref()?.statements.get(name)
    }

    /// Records a bound in-band portal (or forgets `portal` when a Bind of
    /// another statement reuses the name).
    pub fn bind(&mut self, portal: &[u8], bound: Option<Portal>) {
        match bound {
            Some(p) => {
                self.used().portals.insert(portal.into(), p);
            }
            None => {
                if let Some(u) = &mut self.used {
                    u.portals.remove(portal);
                }
            }
        }
    }

    /// The in-band portal `name`, if it is one.
    pub fn portal(&self, name: &[u8]) -> Option<&Portal> {
        self.used.as_ref()?.portals.get(name)
    }

    /// Close of a statement (`S`) or portal (`P`). Returns whether it was
    /// an in-band one (then rowgate answers CloseComplete itself).
    pub fn close(&mut self, kind: u8, name: &[u8]) -> bool {
        let Some(u) = &mut self.used else {
            return false;
        };
        match kind {
            b'S' => u.statements.remove(name).is_some(),
            _ => u.portals.remove(name).is_some(),
        }
    }

    /// Decides whether the verified token with sha256 `digest` may be the
    /// transaction's identity, and records it.
    pub fn switch(&mut self, digest: [u8; 32]) -> Switch {
        let u = self.used();
        match u.current {
            None => {
                u.current = Some(digest);
                Switch::First
            }
            Some(d) if d == digest => Switch::Same,
            Some(_) => Switch::Different,
        }
    }

    /// Whether the current transaction runs as an in-band user.
    pub fn active(&self) -> bool {
        self.used.as_ref().is_some_and(|u| u.current.is_some())
    }

    /// The transaction ended: its identity is gone. Unnamed portals end
    /// with the transaction too; named ones also (PostgreSQL drops every
    /// portal at commit or rollback).
    pub fn transaction_over(&mut self) {
        if let Some(u) = &mut self.used {
            u.current = None;
            u.portals.clear();
        }
    }
}
