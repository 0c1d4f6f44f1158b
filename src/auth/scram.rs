//! A socket-free SCRAM-SHA-256 server (RFC 5802 / RFC 7677, as PostgreSQL
//! speaks it) for service logins: rowgate holds only a verifier
//! (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, the format of
//! `pg_authid.rolpassword`), never has to see the password on the wire,
//! and proves to the client that it knows the verifier too.
//!
//! The caller moves the bytes: [`ServerFirst::start`] takes the client's
//! first message and gives the server-first message; [`ServerFirst::finish`]
//! takes the client-final message and gives the server-final message, or
//! [`ScramError`]. Channel binding (`SCRAM-SHA-256-PLUS`) is not offered.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The SASL mechanism name rowgate offers.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// A parsed SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output: a verifier allows offline guessing.
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Why a SCRAM exchange or a verifier was refused. The `Display` text is
/// for logs and config errors; a client only ever sees one fixed message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// The verifier string is not `SCRAM-SHA-256$iter:salt$stored:server`.
    #[error("invalid SCRAM-SHA-256 verifier: {0}")]
    BadVerifier(&'static str),
    /// The client's message does not follow the protocol.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which rowgate does not offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// The proof does not match: a wrong password (or an unknown service).
    #[error("password authentication failed")]
    BadProof,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn key32(b64: &str) -> Result<[u8; 32], ScramError> {
    B64.decode(b64)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or(ScramError::BadVerifier("keys must be 32 bytes of base64"))
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Verifier, ScramError> {
        let rest = text
            .trim()
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::BadVerifier("must start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::BadVerifier("expected iter:salt$stored:server"))?;
        let (iter, salt) = params
            .split_once(':')
            .ok_or(ScramError::BadVerifier("expected iter:salt"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or(ScramError::BadVerifier("expected StoredKey:ServerKey"))?;
        let iterations: u32 =
            iter.parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(ScramError::BadVerifier(
                    "iterations must be a positive integer",
                ))?;
        let salt = B64
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::BadVerifier("salt must be base64"))?;
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
        })
    }

    /// A verifier for `password` with a fresh random salt (what PostgreSQL
    /// stores for `ALTER ROLE .. PASSWORD`), 4096 iterations.
    pub fn from_password(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The library writes exactly the format parse() reads.
        Verifier::parse(&text).expect("postgres-protocol writes valid verifiers")
    }

    /// A verifier no password matches, with a salt that depends only on
    /// `name` and a per-process secret: an unknown service gets the same
    /// exchange (and the same salt every time) as a known one, so a client
    /// cannot tell the two apart.
    pub fn dummy(name: &str, secret: &[u8; 32]) -> Verifier {
        let salt = hmac(secret, name.as_bytes())[..16].to_vec();
        Verifier {
            iterations: 4096,
            salt,
            stored_key: hmac(secret, b"stored"),
            server_key: hmac(secret, b"server"),
        }
    }
}

/// After the server-first message: what the server needs to check the
/// client's proof.
pub struct ServerFirst {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl ServerFirst {
    /// Reads the client-first message and answers with server-first
    /// (returned as the second value, to send in AuthenticationSASLContinue).
    pub fn start(
        verifier: Verifier,
        client_first: &[u8],
    ) -> Result<(ServerFirst, String), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let gs2_header = format!("{flag},{authzid},");
        // PostgreSQL ignores the SCRAM user name (the startup user counts),
        // and so does rowgate; but the nonce is required.
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        if bare.split(',').any(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed("unsupported mandatory extension"));
        }
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            ServerFirst {
                verifier,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
                gs2_header,
            },
            server_first,
        ))
    }

    /// Checks the client-final message's proof; on success returns the
    /// server-final message (`v=<ServerSignature>`) for
    /// AuthenticationSASLFinal.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let expected_channel = B64.encode(self.gs2_header.as_bytes());
        if channel != Some(expected_channel.as_str()) {
            return Err(ScramError::Malformed("channel binding data does not match"));
        }
        if !nonce.is_some_and(|n| constant_time_eq(n.as_bytes(), self.nonce.as_bytes())) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        let proof_ok_len = proof.len() == 32;
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = proof.get(i).copied().unwrap_or(0) ^ signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Both checks always run; only their combined result is looked at.
        let keys_ok = constant_time_eq(&stored, &self.verifier.stored_key);
        if !(keys_ok & proof_ok_len) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs a whole exchange with postgres-protocol's client (the one
    /// tokio-postgres uses); returns the server's verdict and whether the
    /// client accepted the server's signature.
    fn exchange(
        verifier: &Verifier,
        password: &str,
        binding: ChannelBinding,
    ) -> Result<(), String> {
        let mut client = ScramSha256::new(password.as_bytes(), binding);
        let (server, first) =
            ServerFirst::start(verifier.clone(), client.message()).map_err(|e| e.to_string())?;
        client.update(first.as_bytes()).map_err(|e| e.to_string())?;
        let fin = server.finish(client.message()).map_err(|e| e.to_string())?;
        client
            .finish(fin.as_bytes())
            .map_err(|e| format!("client refused server: {e}"))
    }

    #[test]
    fn the_right_password_logs_in_and_the_server_proves_itself() {
        let v = Verifier::from_password("billing-secret");
        exchange(&v, "billing-secret", ChannelBinding::unsupported()).unwrap();
        exchange(&v, "billing-secret", ChannelBinding::unrequested()).unwrap();
    }

    #[test]
    fn a_wrong_password_is_refused() {
        let v = Verifier::from_password("billing-secret");
        let err = exchange(&v, "billing-secreT", ChannelBinding::unsupported()).unwrap_err();
        assert_eq!(err, ScramError::BadProof.to_string());
    }

    #[test]
    fn a_dummy_verifier_refuses_everything_the_same_way() {
        let secret = [7u8; 32];
        let v = Verifier::dummy("nobody", &secret);
        assert_eq!(
            v,
            Verifier::dummy("nobody", &secret),
            "stable salt per name"
        );
        let err = exchange(&v, "", ChannelBinding::unsupported()).unwrap_err();
        assert_eq!(err, ScramError::BadProof.to_string());
    }

    #[test]
    fn verifiers_in_postgres_format_parse() {
        let text = postgres_protocol::password::scram_sha_256(b"pw");
        let v = Verifier::parse(&text).unwrap();
        exchange(&v, "pw", ChannelBinding::unsupported()).unwrap();
        for bad in [
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ==",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{v:?}").contains(&text[30..]), "no keys in Debug");
    }

    #[test]
    fn malformed_client_messages_are_errors_not_panics() {
        let v = Verifier::from_password("pw");
        for first in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=,r=abc",
            b"n,,n=,r=",
            b"\xff\xfe",
        ] {
            assert!(ServerFirst::start(v.clone(), first).is_err());
        }
        assert_eq!(
            ServerFirst::start(v.clone(), b"p=tls-server-end-point,,n=,r=abc").err(),
            Some(ScramError::ChannelBinding)
        );
        let (s, _) = ServerFirst::start(v.clone(), b"n,,n=,r=abc").unwrap();
        assert!(
            s.finish(b"c=biws,r=abc,p=AAAA").is_err(),
            "nonce must be the server's"
        );
        let (s, first) = ServerFirst::start(v, b"n,,n=,r=abc").unwrap();
        let nonce = first.split(',').next().unwrap();
        assert_eq!(
            s.finish(format!("c=biws,{nonce},p=AAAA").as_bytes()).err(),
            Some(ScramError::BadProof)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_client_bytes_never_panic(a in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
                                              b in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let v = Verifier::dummy("x", &[1; 32]);
            if let Ok((s, _)) = ServerFirst::start(v, &a) {
                proptest::prop_assert!(s.finish(&b).is_err());
            }
        }
    }
}
