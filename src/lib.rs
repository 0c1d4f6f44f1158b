//! rowgate: a PostgreSQL wire-protocol proxy that verifies a JWT sent as the
//! password and injects the verified identity into every client transaction
//! as transaction-local settings, so Row-Level Security sees a real user on a
//! pooled connection without leaking it to the next one.
//!
//! Data flows client → [`client`] (startup, [`auth`], session state machine)
//! → [`upstream`] (pool, connections) → PostgreSQL; [`wire`] frames bytes on
//! both sides.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod devtools;
pub mod embedded;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod migrate;
pub mod upstream;
pub mod wire;

pub use client::{start, Server};
pub use config::Config;
