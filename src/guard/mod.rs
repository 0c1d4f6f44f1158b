//! Statement checks: where in a transaction a statement may run
//! ([`classify`]), which statements a client may send at all ([`Guard`]),
//! and the seal that lets the database verify the identity ([`Sealer`]).

mod lexical;

pub use lexical::{
    classify, deallocate, session_effects, session_state, Deallocate, SessionEffects, SessionOp,
    SessionState, TxnEffect,
};
use serde::Deserialize;

/// `[guard]`: which client statements are refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {}

/// A statement the guard refuses, with the rule that refused it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rowgate refused this statement ({rule}): {message}")]
pub struct GuardViolation {
    /// Short rule name, e.g. `set_protected_setting`.
    pub rule: &'static str,
    /// What was refused and what to do instead.
    pub message: String,
}

/// Checks client statements before they reach the upstream.
#[derive(Debug, Default)]
pub struct Guard {}

impl Guard {
    /// Builds the guard from its config.
    pub fn new(_cfg: &GuardConfig) -> Result<Guard, String> {
        Ok(Guard {})
    }
    /// Checks the SQL text of a simple Query or a Parse.
    pub fn check(&self, _sql: &[u8]) -> Result<(), GuardViolation> {
        Ok(())
    }
    /// Checks a FunctionCall (fast-path call by function OID).
    pub fn check_function_call(&self, _oid: u32) -> Result<(), GuardViolation> {
        Ok(())
    }
}

/// `[seal]`: the key shared with the database for sealed identity.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {}

/// Computes the seal rowgate adds to each transaction's identity.
#[derive(Debug)]
pub struct Sealer {}

impl Sealer {
    /// Name of the setting that carries the seal.
    pub const SETTING: &'static str = "rowgate.seal";
    /// Builds the sealer, or `None` when sealing is off.
    pub fn new(_cfg: &SealConfig) -> Result<Option<Sealer>, String> {
        Ok(None)
    }
    /// The seal over `names`/`values` for the upstream backend `pid`.
    pub fn seal(&self, _pid: i32, _names: &[String], _values: &[String]) -> String {
        String::new()
    }
}
