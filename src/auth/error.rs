//! Refusal and configuration errors.
//!
//! `AuthError` is what a client (and an operator reading logs) sees when a
//! token is refused. It is never built from the token's text: it carries at
//! most short, escaped claim values (an issuer, a kid, an azp) so that a
//! person can tell which check failed, and never the JWT itself.

use std::path::PathBuf;

/// Why a token was refused. `Display` says which check failed in words a
/// person understands; [`AuthError::reason`] is the matching metric label.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token could not be decoded at all (not three base64url parts,
    /// not JSON, too large, a claim of the wrong type).
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is `none`, unknown, outside the issuer's allowlist,
    /// or does not fit the key (RS/HS confusion).
    #[error("algorithm {alg} is not allowed: {why}")]
    AlgNotAllowed {
        /// The header's `alg`, escaped and shortened.
        alg: String,
        /// Which rule refused it.
        why: String,
    },
    /// The signature does not verify with the selected key.
    #[error("signature invalid")]
    BadSignature,
    /// The header names a key id that the issuer's key set does not hold,
    /// even after a (rate-limited) JWKS refetch.
    #[error("unknown key id {kid} for issuer {issuer}")]
    UnknownKid {
        /// The header's `kid`, escaped and shortened.
        kid: String,
        /// The issuer whose keys were searched.
        issuer: String,
    },
    /// The header has no `kid` and the issuer has several keys.
    #[error("token has no kid and issuer {issuer} has {keys} keys, so the key cannot be chosen")]
    MissingKid {
        /// The issuer whose keys were searched.
        issuer: String,
        /// How many keys that issuer has.
        keys: usize,
    },
    /// The issuer has no usable key (its JWKS was never fetched successfully).
    #[error("no keys available for issuer {issuer}: {detail}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// The last fetch error, or why the set is empty.
        detail: String,
    },
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {} (now {}, leeway {leeway}s)", rfc3339(*.exp), rfc3339(*.now))]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The proxy's clock.
        now: u64,
        /// The configured leeway.
        leeway: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid before {} (now {}, leeway {leeway}s)", rfc3339(*.nbf), rfc3339(*.now))]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The proxy's clock.
        now: u64,
        /// The configured leeway.
        leeway: u64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("token was issued in the future at {} (now {}, leeway {leeway}s)", rfc3339(*.iat), rfc3339(*.now))]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The proxy's clock.
        now: u64,
        /// The configured leeway.
        leeway: u64,
    },
    /// A claim that rowgate needs is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim is present but unusable (wrong type, NUL byte).
    #[error("claim {claim} is unusable: {why}")]
    BadClaim {
        /// The claim (or setting) concerned.
        claim: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `iss` does not name a configured issuer.
    #[error("issuer {0} is not configured")]
    BadIssuer(String),
    /// The token has no `iss` claim, so no issuer can be chosen.
    #[error("token has no iss claim, so no issuer can be chosen")]
    MissingIssuer,
    /// `aud` does not include any configured audience.
    #[error("audience {got} does not include any of {expected}")]
    BadAudience {
        /// The token's `aud`, escaped and shortened (`(none)` if absent).
        got: String,
        /// The issuer's configured audiences.
        expected: String,
    },
    /// `azp` is absent or not in the issuer's `authorized_parties`.
    #[error("azp {0} is not an authorized party")]
    BadAzp(String),
    /// Clerk session status is `pending` and the issuer refuses pending sessions.
    #[error("session is pending (sts = \"pending\"): the user has not finished signing in")]
    PendingSession,
    /// `require_sid = true` and the token has no `sid` (not a session token).
    #[error("token has no sid claim, but issuer {0} accepts session tokens only")]
    MissingSid(String),
    /// `require_sid = false` and the token has a `sid` (a session token).
    #[error("token has a sid claim, but issuer {0} refuses session tokens")]
    UnexpectedSid(String),
    /// The StartupMessage user does not fit the issuer's `user_policy`.
    #[error("database user {startup_user} {why}")]
    UserMismatch {
        /// The StartupMessage `user`, escaped and shortened.
        startup_user: String,
        /// Why it does not fit.
        why: String,
    },
    /// The role from the token (or the user map) is not in `allowed_roles`.
    #[error("role {0} is not in [identity] allowed_roles")]
    RoleNotAllowed(String),
    /// An in-band token from an issuer the service may not present.
    #[error("issuer {issuer} is not in the allowed_issuers of service {service}")]
    IssuerNotAllowed {
        /// The token's issuer, escaped and shortened.
        issuer: String,
        /// The service, escaped.
        service: String,
    },
}

impl AuthError {
    /// The SQLSTATE to send with the refusal: `28P01` (invalid_password) when
    /// the token is not a validly signed JWT, `28000`
    /// (invalid_authorization_specification) for every other refusal.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) | AuthError::BadSignature => "28P01",
            _ => "28000",
        }
    }

    /// A short, static label for `rowgate_auth_failures_total{reason=...}`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::AlgNotAllowed { .. } => "alg_not_allowed",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKid { .. } => "unknown_kid",
            AuthError::MissingKid { .. } => "missing_kid",
            AuthError::KeysUnavailable { .. } => "keys_unavailable",
            AuthError::Expired { .. } => "expired",
            AuthError::NotYetValid { .. } => "not_yet_valid",
            AuthError::IssuedInFuture { .. } => "iat_in_future",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::BadClaim { .. } => "bad_claim",
            AuthError::BadIssuer(_) | AuthError::MissingIssuer => "bad_issuer",
            AuthError::BadAudience { .. } => "bad_audience",
            AuthError::BadAzp(_) => "bad_azp",
            AuthError::PendingSession => "pending_session",
            AuthError::MissingSid(_) => "missing_sid",
            AuthError::UnexpectedSid(_) => "unexpected_sid",
            AuthError::UserMismatch { .. } => "user_mismatch",
            AuthError::RoleNotAllowed(_) => "role_not_allowed",
            AuthError::IssuerNotAllowed { .. } => "issuer_not_allowed",
        }
    }
}

/// A mistake in `[auth]` or `[identity]`, explained for `rowgate check`.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A setting is missing, contradictory or out of range.
    #[error("{at}: {problem}")]
    Invalid {
        /// Where: `[auth]`, `[auth] issuer "https://..."`, `[identity]`, ...
        at: String,
        /// What is wrong, and usually how to fix it.
        problem: String,
    },
    /// A key or JWKS file could not be read.
    #[error("{at}: cannot read {}: {source}", path.display())]
    ReadFile {
        /// Where the file was named.
        at: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AuthConfigError {
    pub(crate) fn invalid(at: impl Into<String>, problem: impl Into<String>) -> Self {
        AuthConfigError::Invalid {
            at: at.into(),
            problem: problem.into(),
        }
    }
}

/// Quotes and escapes a peer-controlled string for an error message, cut to
/// 64 characters so that a hostile claim cannot flood a log line or forge
/// one (control characters and quotes are escaped by `{:?}`).
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}...")
    }
}

/// Formats unix seconds as `2026-11-23T10:00:00Z` without a date library.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days, valid for any u64 day count we can
    // meet here (numbers are clamped when claims are read).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_428_000), "2026-11-23T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn quoted_escapes_and_cuts() {
        assert_eq!(quoted("a\"b\n"), "\"a\\\"b\\n\"");
        let long = "x".repeat(500);
        assert!(quoted(&long).len() < 80);
    }

    #[test]
    fn sqlstates() {
        assert_eq!(AuthError::BadSignature.sqlstate(), "28P01");
        assert_eq!(AuthError::Malformed("x").sqlstate(), "28P01");
        assert_eq!(AuthError::PendingSession.sqlstate(), "28000");
    }
}
