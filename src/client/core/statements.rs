//! A client's prepared statements, kept with the client (not the pooled
//! connection) so they can be prepared again on whichever connection the
//! client lands on next.

use crate::guard::{classify, session_effects, SessionEffects, TxnEffect};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// A client's prepared statement: its upstream name (content-addressed, so
/// clients preparing the same text share it) and its Parse payload.
#[derive(Debug)]
pub struct Statement {
    /// Name on every upstream connection.
    pub upstream: Arc<str>,
    /// Parse payload (query, parameter types).
    pub spec: Bytes,
    /// Where the statement may run relative to the identity.
    pub effect: TxnEffect,
    /// What executing it does to session-level settings.
    pub session: SessionEffects,
    /// The result shape (RowDescription or NoData) the client first learnt
    /// by describing it. PostgreSQL refuses to run a protocol-level
    /// statement whose result shape changed since (0A000); a re-prepare on
    /// another connection is checked against this.
    pub shape: OnceLock<Bytes>,
    /// A re-prepare found the shape changed: every Bind fails with 0A000,
    /// as on PostgreSQL, until the client prepares it anew.
    pub stale: AtomicBool,
    /// The guard judges each Bind with its values (`set_config($1, ..)`).
    pub judged_at_bind: bool,
}

impl Statement {
    /// A statement from a Parse payload.
    pub fn new(spec: &[u8]) -> Statement {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(spec);
        let query = query_of(spec);
        Statement {
            upstream: format!("rg_{}", hex::encode(&digest[..12])).into(),
            spec: Bytes::copy_from_slice(spec),
            effect: classify(query),
            session: session_effects(query),
            shape: OnceLock::new(),
            stale: AtomicBool::new(false),
            judged_at_bind: false,
        }
    }

    /// The same statement, its Binds judged by the guard with their values.
    pub fn judged_at_bind(mut self, yes: bool) -> Statement {
        self.judged_at_bind = yes;
        self
    }
}

/// The query text of a Parse payload.
pub fn query_of(spec: &[u8]) -> &[u8] {
    spec.split(|&b| b == 0).next().unwrap_or_default()
}

/// Every statement the client prepared, by its own names, and its unnamed
/// one.
#[derive(Debug, Default)]
pub struct Statements {
    // Seeded foldhash, not SipHash: looked up on every Bind, where SipHash
    // showed in the profile.
    named: HashMap<Box<[u8]>, Arc<Statement>, foldhash::fast::RandomState>,
    unnamed: Option<Arc<Statement>>,
}

impl Statements {
    /// The statement a Bind or Describe names (`""` is the unnamed one).
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }
    /// A named statement.
    pub fn named(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.named.get(name)
    }
    /// Records a named statement.
    pub fn insert(&mut self, name: Box<[u8]>, stmt: Arc<Statement>) {
        self.named.insert(name, stmt);
    }
    /// Forgets a named statement.
    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.named.remove(name)
    }
    /// Forgets the client's name `name` if it still means `upstream`.
    pub fn remove_if(&mut self, name: &[u8], upstream: &str) {
        if self
            .named
            .get(name)
            .is_some_and(|s| &*s.upstream == upstream)
        {
            self.named.remove(name);
        }
    }
    /// Replaces the unnamed statement.
    pub fn set_unnamed(&mut self, stmt: Option<Arc<Statement>>) {
        self.unnamed = stmt;
    }
    /// The unnamed statement.
    pub fn unnamed(&self) -> Option<&Arc<Statement>> {
        self.unnamed.as_ref()
    }
    /// Forgets every named statement (`DEALLOCATE ALL`).
    pub fn clear_named(&mut self) {
        self.named.clear();
    }
    /// Forgets everything (`DISCARD ALL`).
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }
    /// How the statement a Bind names relates to the transaction.
    pub fn effect_of(&self, name: &[u8]) -> TxnEffect {
        self.get(name).map_or(TxnEffect::Plain, |s| s.effect)
    }
}
