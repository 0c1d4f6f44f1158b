//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL
//! speaks it, for the admin console password: the password never crosses
//! the wire, and the client verifies the server too.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count.
const ITERATIONS: u32 = 4096;

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding was asked for; the console does not offer it.
    #[error("SCRAM channel binding is not supported by the admin console")]
    ChannelBinding,
    /// Wrong password.
    #[error("password authentication failed for the admin console")]
    BadProof,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// One exchange, after the client's first message.
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Exchange {
    /// Reads the client-first message and prepares the server-first
    /// message for `password`.
    pub fn start(client_first: &[u8], password: &str) -> Result<Exchange, ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (gs2_header, bare) = match text.as_bytes().first() {
            Some(b'n') | Some(b'y') => {
                let mut parts = text.splitn(3, ',');
                let flag = parts.next().unwrap_or_default();
                let authzid = parts.next().ok_or(ScramError::Malformed("gs2 header"))?;
                let bare = parts.next().ok_or(ScramError::Malformed("gs2 header"))?;
                (format!("{flag},{authzid},"), bare)
            }
            Some(b'p') => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("gs2 header")),
        };
        let cnonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("client nonce"))?;
        if cnonce.is_empty() {
            return Err(ScramError::Malformed("client nonce"));
        }
        let mut rnd = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut rnd);
        let nonce = format!("{cnonce}{}", B64.encode(rnd));
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let salted = salted_password(password.as_bytes(), &salt, ITERATIONS);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(salt));
        Ok(Exchange {
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            gs2_header,
            stored_key,
            server_key,
        })
    }

    /// The server-first message.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message; returns the server-final message.
    pub fn finish(&self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        if binding != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::Malformed("channel binding"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Constant time: a difference anywhere costs the same.
        let diff = stored
            .iter()
            .zip(self.stored_key.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(client_pw: &str, server_pw: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(client_pw.as_bytes(), ChannelBinding::unrequested());
        let ex = Exchange::start(client.message(), server_pw)?;
        client
            .update(ex.server_first().as_bytes())
            .map_err(|_| ScramError::Malformed("client refused server-first"))?;
        let last = ex.finish(client.message())?;
        client
            .finish(last.as_bytes())
            .map_err(|_| ScramError::Malformed("client refused server-final"))
    }

    #[test]
    fn the_postgres_client_implementation_logs_in_and_verifies_the_server() {
        run("s3cret", "s3cret").unwrap();
    }

    #[test]
    fn a_wrong_password_is_refused() {
        assert!(matches!(run("guess", "s3cret"), Err(ScramError::BadProof)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"x",
            b"n,,",
            b"p=tls-server-end-point,,n=,r=a",
            b"\xff",
        ] {
            assert!(Exchange::start(bad, "pw").is_err());
        }
        let ex = Exchange::start(b"n,,n=,r=abc", "pw").unwrap();
        for bad in [
            &b""[..],
            b"c=biws",
            b"c=biws,r=abc,p=!!",
            b"c=xx,r=abc,p=AAAA",
        ] {
            assert!(ex.finish(bad).is_err());
        }
    }
}
