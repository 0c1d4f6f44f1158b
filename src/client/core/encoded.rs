//! The identity statement, encoded once per change of the client's
//! settings and once per backend (the seal), so that each transaction only
//! copies a ready Bind message.
//!
//! The statement is flat, one per arity:
//!
//! ```sql
//! SELECT WHERE (set_config($1, $2, true) || ...) IS NULL
//! ```
//!
//! one `set_config(name, value, true)` per setting, the client's own
//! session parameters first and the identity last (so the identity wins
//! over a client setting of the same name). Names and values are bind
//! parameters, never spliced into SQL. No row comes back: `||` evaluates
//! every call (none is ever NULL) and the WHERE drops the one row, so the
//! values (the claims JSON among them) do not travel back on every
//! transaction. Without the seal, when any identity setting holds a value
//! at session level as the transaction starts, all of them are first
//! cleared there (`set_config(name, '', false)`; `role` to `none`), so a
//! session value someone left on the pooled connection cannot surface
//! after this transaction either; with the seal on, such a value carries
//! no valid seal, and the clearing is left out.

use crate::wire::frontend;
use crate::wire::put_frame;
use bytes::{BufMut, Bytes, BytesMut};

/// Flat statements whose preparation is remembered per connection (one bit
/// per client-settings count); more client settings re-prepare each time.
pub(super) const REMEMBERED_ARITIES: usize = 64;

/// What every transaction's identity statement binds, for one session.
#[derive(Default)]
pub(super) struct Encoded {
    /// How many of the settings are the client's own.
    client_count: usize,
    /// The statement's name (per arity) and its Parse payload.
    statement: Bytes,
    spec: Bytes,
    /// The Bind message's parameters but the seal: each as length + bytes.
    params: BytesMut,
    /// How many parameters `params` holds.
    n_params: usize,
    /// The whole Bind for one backend, the seal included when on.
    bind: Option<(i32, BytesMut)>,
    /// Whether the last parameter is the seal (computed per backend).
    sealed: bool,
}

/// The flat identity statement for `client` client settings followed by
/// the identity settings `names` (the seal last when on).
fn statement_sql(client: usize, names: &[String], clear: bool) -> String {
    let mut calls: Vec<String> = Vec::with_capacity(client + names.len() + 1);
    let mut p = 0;
    for _ in 0..client {
        calls.push(format!("set_config(${}, ${}, true)", p + 1, p + 2));
        p += 2;
    }
    let first_identity = p + 1;
    if clear && !names.is_empty() {
        calls.push(clearing(first_identity, names));
    }
    for _ in names {
        calls.push(format!("set_config(${}, ${}, true)", p + 1, p + 2));
        p += 2;
    }
    format!("SELECT WHERE ({}) IS NULL", calls.join(" || "))
}

/// Clears every identity setting at session level when any of them holds
/// a value there (`role` one other than `none`). One check for all: a
/// CASE per setting cost PostgreSQL about 1.5 µs more per transaction
/// (`scripts/bench-identity-sql.sh`), and a value is only ever there when
/// something went around the guard. Reading costs far less than setting at
/// session level inside a transaction, so the clearing itself is
/// conditional; `concat` skips the NULL of a setting never defined.
fn clearing(first: usize, names: &[String]) -> String {
    let (mut reads, mut clears) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        let n = first + 2 * i;
        if name == "role" {
            reads.push(format!("nullif(current_setting(${n}, true), 'none')"));
            clears.push(format!("set_config(${n}, 'none', false)"));
        } else {
            reads.push(format!("current_setting(${n}, true)"));
            clears.push(format!("set_config(${n}, '', false)"));
        }
    }
    format!(
        "coalesce(CASE WHEN concat({}) <> '' THEN {} END, '')",
        reads.join(", "),
        clears.join(" || ")
    )
}

fn put_param(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

impl Encoded {
    /// Encodes `client` settings then the identity `names` = `values`;
    /// `sealed`: `names` ends with the seal's setting, whose value
    /// [`Encoded::bind_for`] adds per backend.
    pub(super) fn new<'a>(
        client: impl Iterator<Item = (&'a str, &'a str)>,
        names: &[String],
        values: &[String],
        sealed: bool,
    ) -> Encoded {
        let mut params = BytesMut::new();
        let mut client_count = 0;
        for (n, v) in client {
            put_param(&mut params, n.as_bytes());
            put_param(&mut params, v.as_bytes());
            client_count += 1;
        }
        for (i, n) in names.iter().enumerate() {
            put_param(&mut params, n.as_bytes());
            if let Some(v) = values.get(i) {
                put_param(&mut params, v.as_bytes());
            }
        }
        let statement = Bytes::from(format!("rowgate_identity_{client_count}"));
        let sql = statement_sql(client_count, names, !sealed);
        Encoded {
            client_count,
            statement,
            spec: frontend::parse_spec(sql.as_bytes()),
            n_params: 2 * (client_count + names.len()) - usize::from(sealed),
            params,
            bind: None,
            sealed,
        }
    }

    /// The statement's name and Parse payload.
    pub(super) fn statement(&self) -> (&[u8], &[u8]) {
        (&self.statement, &self.spec)
    }

    /// The bit that says, on a connection, that this arity is prepared
    /// there (`None`: too many client settings to remember).
    pub(super) fn prepared_bit(&self) -> Option<u64> {
        (self.client_count < REMEMBERED_ARITIES).then(|| 1u64 << self.client_count)
    }

    /// Whether the Bind for backend `pid` is ready (the seal is per backend).
    pub(super) fn has_bind_for(&self, pid: i32) -> bool {
        matches!(&self.bind, Some((p, _)) if *p == pid || !self.sealed)
    }

    /// Builds the Bind for backend `pid`, with `seal` its seal when sealed.
    pub(super) fn build_bind(&mut self, pid: i32, seal: Option<&str>) {
        let mut bind = BytesMut::with_capacity(self.params.len() + 64);
        let name: &[u8] = &self.statement;
        let n = self.n_params + usize::from(seal.is_some());
        put_frame(&mut bind, b'B', |b| {
            // The portal has the statement's name, closed after each run.
            crate::wire::put_cstr(b, name);
            crate::wire::put_cstr(b, name);
            b.put_i16(0);
            b.put_i16(n as i16);
            b.put_slice(&self.params);
            if let Some(seal) = seal {
                put_param(b, seal.as_bytes());
            }
            b.put_i16(0);
        });
        self.bind = Some((pid, bind));
    }

    /// The Bind built last ([`Encoded::build_bind`]).
    pub(super) fn bind(&self) -> &[u8] {
        self.bind.as_ref().map_or(&[][..], |(_, b)| &b[..])
    }

    /// The portal (and statement) name, for Execute and Close.
    pub(super) fn portal(&self) -> &[u8] {
        &self.statement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_is_flat_with_every_value_bound() {
        let names = vec!["app.user_id".to_string(), "role".to_string()];
        assert_eq!(
            statement_sql(1, &names, true),
            "SELECT WHERE (set_config($1, $2, true) || \
             coalesce(CASE WHEN concat(current_setting($3, true), \
             nullif(current_setting($5, true), 'none')) <> '' \
             THEN set_config($3, '', false) || set_config($5, 'none', false) END, '') || \
             set_config($3, $4, true) || set_config($5, $6, true)) IS NULL"
        );
        assert_eq!(
            statement_sql(0, &names[..1], false),
            "SELECT WHERE (set_config($1, $2, true)) IS NULL"
        );
    }

    #[test]
    fn the_bind_carries_every_parameter_and_the_seal_per_backend() {
        let names = vec!["app.user_id".to_string(), "rowgate.seal".to_string()];
        let values = vec!["user_a".to_string()];
        let mut e = Encoded::new(
            [("application_name", "x")].into_iter(),
            &names,
            &values,
            true,
        );
        assert_eq!(e.statement().0, b"rowgate_identity_1");
        assert!(!e.has_bind_for(7));
        e.build_bind(7, Some("sig"));
        assert!(e.has_bind_for(7) && !e.has_bind_for(8));
        let body = &e.bind()[5..];
        let parts = frontend::bind_parts(body).unwrap();
        let v = parts.values().unwrap();
        let v: Vec<&[u8]> = v.into_iter().map(|x| x.unwrap()).collect();
        assert_eq!(
            v,
            [
                &b"application_name"[..],
                b"x",
                b"app.user_id",
                b"user_a",
                b"rowgate.seal",
                b"sig"
            ]
        );
    }
}
