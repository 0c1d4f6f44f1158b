//! rowgate: a PostgreSQL wire-protocol proxy that verifies a JWT sent as the
//! password and injects the verified identity into every client transaction
//! as transaction-local settings, so Row-Level Security sees a real user on a
//! pooled connection without leaking it to the next one.

pub mod auth;
pub mod metrics;
