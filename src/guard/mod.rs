//! Statement checks. Today: where in a transaction a statement may run,
//! which decides where rowgate puts the identity. The full statement guard
//! on the real PostgreSQL parser comes later (issue 5).

mod lexical;

pub use lexical::{classify, TxnEffect};
