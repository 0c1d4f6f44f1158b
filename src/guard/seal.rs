//! Sealed identity: rowgate signs the identity it injects with a key it
//! shares with the database, and `auth.user_id()` & co. (see
//! `migrations/003_sealed_identity.sql`) recompute the signature and return
//! NULL when it does not match. A client that sets `app.user_id` itself, by
//! whatever route, cannot produce a matching seal without the key.
//!
//! The format is documented in `docs/security.md` ("Seal format"); the SQL
//! in the migration recomputes exactly what [`Sealer::seal`] computes here.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Smallest key accepted, in bytes (the HMAC-SHA256 block is 64; its output 32).
pub const MIN_KEY_BYTES: usize = 32;

/// Domain-separation prefix of every sealed message (format version 1).
const DOMAIN: &[u8] = b"rowgate.seal.v1\n";

/// `[seal]`: the key shared with the database for sealed identity. Sealing
/// is off when neither `key_file` nor `key` is set.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// File holding the key as hex (at least 64 hex digits, i.e. 32 bytes;
    /// white space ignored). Create one with `openssl rand -hex 32`.
    pub key_file: Option<PathBuf>,
    /// The key as hex, normally from the environment:
    /// `ROWGATE_SEAL_KEY=...`. Prefer `key_file` or the environment over
    /// writing the key into the config file.
    pub key: Option<String>,
}

impl std::fmt::Debug for SealConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealConfig")
            .field("key_file", &self.key_file)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Computes the seal rowgate adds to each transaction's identity.
pub struct Sealer {
    /// HMAC state with the key already absorbed; cloned per seal.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: <redacted> }")
    }
}

impl Sealer {
    /// Name of the setting that carries the seal.
    pub const SETTING: &'static str = "rowgate.seal";

    /// Builds the sealer, or `None` when sealing is off.
    pub fn new(cfg: &SealConfig) -> Result<Option<Sealer>, String> {
        let key = match (&cfg.key_file, &cfg.key) {
            (Some(_), Some(_)) => {
                return Err("set either key_file or key (ROWGATE_SEAL_KEY), not both".to_string())
            }
            (None, None) => return Ok(None),
            (Some(path), None) => read_key_file(path)?,
            (None, Some(hex)) => parse_key(hex).map_err(|e| format!("key: {e}"))?,
        };
        Ok(Some(Sealer::from_key(&key)?))
    }

    /// A sealer for raw key bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_key(key: &[u8]) -> Result<Sealer, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes; use at least {MIN_KEY_BYTES} (openssl rand -hex 32)",
                key.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
        Ok(Sealer { mac })
    }

    /// The seal over `names`/`values` for the upstream backend `pid`:
    /// `v1:<names joined by ,>:<hex HMAC-SHA256>`, where the HMAC covers
    ///
    /// ```text
    /// "rowgate.seal.v1\n" || decimal(pid) || "\n" || ns(name1) || ns(value1) || ns(name2) || ...
    /// ns(x) = decimal(byte length of x) || ":" || x || ","      (a netstring; x in UTF-8)
    /// ```
    ///
    /// Names are custom setting names (letters, digits, `_` and dots) or
    /// `role`, so they never contain `,` or `:`.
    pub fn seal(&self, pid: i32, names: &[String], values: &[String]) -> String {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(pid.to_string().as_bytes());
        mac.update(b"\n");
        for (name, value) in names.iter().zip(values) {
            netstring(&mut mac, name.as_bytes());
            netstring(&mut mac, value.as_bytes());
        }
        let tag = hex::encode(mac.finalize().into_bytes());
        format!("v1:{}:{tag}", names.join(","))
    }
}

fn netstring(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(bytes.len().to_string().as_bytes());
    mac.update(b":");
    mac.update(bytes);
    mac.update(b",");
}

/// Parses a key written as hex (white space ignored).
pub fn parse_key(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let key = hex::decode(&compact)
        .map_err(|_| "expected the key as hex digits, e.g. from `openssl rand -hex 32`")?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "the key has {} bytes; use at least {MIN_KEY_BYTES} (64 hex digits, `openssl rand -hex 32`)",
            key.len()
        ));
    }
    Ok(key)
}

/// Reads a key file: hex, at least 32 bytes (see [`parse_key`]).
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key_file {}: {e}", path.display()))?;
    parse_key(&text).map_err(|e| format!("key_file {}: {e}", path.display()))
}

/// Installs (or replaces) the seal key in the database at `admin_url`,
/// whose `migrations/003_sealed_identity.sql` must already be applied, then
/// checks end to end that the database accepts a seal made here: in a
/// rolled-back transaction it sets a sealed test identity and expects
/// `auth.user_id()` to return it, and to return NULL for a forged one.
///
/// The key travels as a bind parameter, so it is in no statement text (and
/// so in no `pg_stat_statements` entry or statement log line).
///
/// For `rowgate migrate --seal-key-file FILE` (read the file with
/// [`read_key_file`]).
pub async fn install_seal_key(admin_url: &str, key: &[u8]) -> Result<(), String> {
    use crate::upstream::{tls, ServerConn, Target};
    let sealer = Sealer::from_key(key)?;
    let target = Target::from_url(admin_url)?;
    let tls = tls::client_config(target.sslmode, None)?;
    let mut conn = ServerConn::connect(&target, tls.as_ref(), Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let sql = "INSERT INTO rowgate_private.seal_key (id, key) VALUES (true, decode($1, 'hex')) \
               ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, installed_at = now()";
    extended_query(&mut conn, sql, &[hex::encode(key).as_bytes()])
        .await
        .map_err(|e| {
            format!("installing the seal key (was 003_sealed_identity.sql applied?): {e}")
        })?;

    // Self-check: what rowgate seals, the database must verify.
    let names = ["app.user_id".to_string()];
    let values = ["rowgate-self-check".to_string()];
    let seal = sealer.seal(conn.pid, &names, &values);
    let forged = sealer.seal(conn.pid, &names, &["someone-else".to_string()]);
    let check = format!(
        "BEGIN;
         SELECT set_config('app.user_id', 'rowgate-self-check', true), set_config('rowgate.seal', '{seal}', true);
         DO $$ BEGIN
           IF auth.user_id() IS DISTINCT FROM 'rowgate-self-check' THEN
             RAISE EXCEPTION 'the database did not accept a seal made with this key';
           END IF;
         END $$;
         SELECT set_config('rowgate.seal', '{forged}', true);
         DO $$ BEGIN
           IF auth.user_id() IS NOT NULL THEN
             RAISE EXCEPTION 'the database accepted a seal over other values';
           END IF;
         END $$;
         ROLLBACK;"
    );
    let outcome = conn.simple_query(&check).await.map_err(|e| e.to_string())?;
    if let Err(e) = outcome {
        let _ = conn.simple_query("ROLLBACK").await;
        return Err(format!("seal self-check failed: {e}"));
    }
    Ok(())
}

/// Runs one statement with text parameters over the extended protocol and
/// waits for ReadyForQuery; returns the server's error message, if any.
async fn extended_query(
    conn: &mut crate::upstream::ServerConn,
    sql: &str,
    params: &[&[u8]],
) -> Result<(), String> {
    use crate::wire::frontend;
    let mut out = bytes::BytesMut::new();
    let mut spec = bytes::BytesMut::new();
    crate::wire::put_cstr(&mut spec, sql.as_bytes());
    spec.extend_from_slice(&0i16.to_be_bytes());
    frontend::put_parse(&mut out, b"", &spec);
    frontend::put_bind_text(&mut out, b"", b"", params);
    frontend::put_execute(&mut out, b"");
    frontend::put_sync(&mut out);
    conn.write(&out).await.map_err(|e| e.to_string())?;
    let mut error = None;
    loop {
        let frame = conn.read_frame().await.map_err(|e| e.to_string())?;
        match frame.tag() {
            b'E' if error.is_none() => {
                let fields = crate::wire::backend::parse_error_fields(frame.body())
                    .map_err(|e| e.to_string())?;
                error = Some(fields.to_string());
            }
            b'Z' => break,
            _ => {}
        }
    }
    error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        (0u8..32).collect()
    }

    #[test]
    fn seal_matches_the_documented_format() {
        let s = Sealer::from_key(&key()).unwrap();
        let names = vec!["app.user_id".to_string(), "app.org_id".to_string()];
        let values = vec!["user_a".to_string(), "".to_string()];
        let seal = s.seal(4242, &names, &values);
        // Recompute from the documented message, independently.
        let msg = b"rowgate.seal.v1\n4242\n11:app.user_id,6:user_a,10:app.org_id,0:,";
        let mut mac = Hmac::<Sha256>::new_from_slice(&key()).unwrap();
        mac.update(msg);
        let want = format!(
            "v1:app.user_id,app.org_id:{}",
            hex::encode(mac.finalize().into_bytes())
        );
        assert_eq!(seal, want);
    }

    #[test]
    fn seal_depends_on_pid_values_and_boundaries() {
        let s = Sealer::from_key(&key()).unwrap();
        let n = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let base = s.seal(1, &n(&["a.b", "c.d"]), &n(&["x", "y"]));
        assert_ne!(base, s.seal(2, &n(&["a.b", "c.d"]), &n(&["x", "y"])));
        assert_ne!(base, s.seal(1, &n(&["a.b", "c.d"]), &n(&["x", "z"])));
        // Moving bytes across a boundary changes the seal (netstrings).
        let tag = |seal: &str| seal.rsplit(':').next().unwrap().to_string();
        assert_ne!(
            tag(&s.seal(1, &n(&["a.b", "c.d"]), &n(&["xy", ""]))),
            tag(&s.seal(1, &n(&["a.b", "c.d"]), &n(&["x", "y"])))
        );
        // Multi-byte values are measured in bytes.
        let utf8 = s.seal(1, &n(&["a.b"]), &n(&["é"]));
        let mut mac = Hmac::<Sha256>::new_from_slice(&key()).unwrap();
        mac.update("rowgate.seal.v1\n1\n3:a.b,2:é,".as_bytes());
        assert!(utf8.ends_with(&hex::encode(mac.finalize().into_bytes())));
    }

    #[test]
    fn config_turns_sealing_on_and_checks_the_key() {
        assert!(Sealer::new(&SealConfig::default()).unwrap().is_none());
        let hex = hex::encode(key());
        let on = SealConfig {
            key: Some(hex.clone()),
            ..Default::default()
        };
        assert!(Sealer::new(&on).unwrap().is_some());
        let short = SealConfig {
            key: Some("abcd".into()),
            ..Default::default()
        };
        assert!(Sealer::new(&short).unwrap_err().contains("at least 32"));
        let not_hex = SealConfig {
            key: Some("not hex at all".into()),
            ..Default::default()
        };
        assert!(Sealer::new(&not_hex).unwrap_err().contains("hex"));
        let dir = std::env::temp_dir().join(format!("rowgate-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("seal.key");
        std::fs::write(&file, format!("{hex}\n")).unwrap();
        let from_file = SealConfig {
            key_file: Some(file.clone()),
            ..Default::default()
        };
        let a = Sealer::new(&from_file).unwrap().unwrap();
        let b = Sealer::new(&on).unwrap().unwrap();
        let names = vec!["app.user_id".to_string()];
        let values = vec!["u".to_string()];
        assert_eq!(a.seal(7, &names, &values), b.seal(7, &names, &values));
        let both = SealConfig {
            key_file: Some(file),
            key: Some(hex),
        };
        assert!(Sealer::new(&both).unwrap_err().contains("not both"));
        assert!(!format!("{:?}{:?}", on, a).contains("0001020304"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
