//! From verified claims to the values injected in every transaction: the
//! per-issuer claim policy (aud, azp, sid, sts), the settings, the role
//! switch, and the `user_policy` check against the StartupMessage user.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::claims::{check_audience, date_claim, str_claim};
use super::config::{IssuerSpec, UserPolicy};
use super::error::{quoted, AuthError};
use super::settings::{IdentitySpec, RoleSource};

/// The verified identity of a client, handed to the proxy.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: String,
    /// One value per [`super::Authenticator::setting_names`], same order.
    /// Absent claims give `""` (never omitted, so the injected statement
    /// text is constant).
    pub values: Arc<[String]>,
    /// The token's `exp`, unix seconds.
    pub expires_at: Option<u64>,
    /// Short hex sha256 prefix of the token: the only form in which a token
    /// may be logged.
    pub token_id: String,
    /// The issuer that signed it (`iss`; empty when no token did), for logs.
    pub issuer: String,
}

/// A token whose signature and non-time claims have been checked; what the
/// cache holds. Time claims and the user policy are checked on every use.
#[derive(Debug)]
pub(crate) struct Verified {
    pub issuer: usize,
    pub key_fingerprint: [u8; 32],
    pub subject: String,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    /// Setting values without the role.
    pub values: Vec<String>,
    /// The role from `role_claim` or `role`, already allowlist-checked.
    pub role: Option<String>,
}

fn no_nul(name: &str, value: &str) -> Result<(), AuthError> {
    // A NUL cannot be stored in a Postgres text value and would cut a
    // simple-query string short; refuse rather than inject something else.
    if value.contains('\0') {
        return Err(AuthError::BadClaim {
            claim: quoted(name),
            why: "contains a NUL character",
        });
    }
    Ok(())
}

/// Applies the issuer's claim policy and computes the setting values.
pub(crate) fn verify_claims(
    issuer_index: usize,
    key_fingerprint: [u8; 32],
    claims: &Map<String, Value>,
    spec: &IssuerSpec,
    ident: &IdentitySpec,
) -> Result<Verified, AuthError> {
    let exp = date_claim(claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
    let nbf = date_claim(claims, "nbf")?;
    let iat = date_claim(claims, "iat")?;
    let subject = match str_claim(claims, "sub")? {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => return Err(AuthError::MissingClaim("sub")),
    };
    check_audience(claims, &spec.audience)?;
    if !spec.authorized_parties.is_empty() {
        match str_claim(claims, "azp")? {
            Some(azp) if spec.authorized_parties.iter().any(|p| p == azp) => {}
            Some(azp) => return Err(AuthError::BadAzp(quoted(azp))),
            None => return Err(AuthError::BadAzp("(none)".into())),
        }
    }
    let sid = str_claim(claims, "sid")?;
    match (spec.require_sid, sid) {
        (Some(true), None) => return Err(AuthError::MissingSid(quoted(&spec.issuer))),
        (Some(false), Some(_)) => return Err(AuthError::UnexpectedSid(quoted(&spec.issuer))),
        _ => {}
    }
    if spec.reject_pending && str_claim(claims, "sts")? == Some("pending") {
        return Err(AuthError::PendingSession);
    }
    let mut values = Vec::with_capacity(ident.settings.len());
    for (name, path) in &ident.settings {
        let v = path.render(claims);
        no_nul(name, &v)?;
        values.push(v);
    }
    let role = match &ident.role {
        None => None,
        Some(RoleSource::Fixed(r)) => Some(r.clone()),
        Some(RoleSource::Claim(path)) if spec.user_policy != UserPolicy::Map => {
            let r = match path.lookup(claims) {
                Some(Value::String(r)) => r.clone(),
                Some(_) => {
                    return Err(AuthError::BadClaim {
                        claim: "role_claim".into(),
                        why: "must be a string",
                    })
                }
                None => {
                    return Err(AuthError::BadClaim {
                        claim: "role_claim".into(),
                        why: "is missing, and a role is required",
                    })
                }
            };
            check_role(&r, ident)?;
            Some(r)
        }
        // With user_policy = "map" the map decides the role.
        Some(RoleSource::Claim(_)) => None,
    };
    Ok(Verified {
        issuer: issuer_index,
        key_fingerprint,
        subject,
        exp,
        nbf,
        iat,
        values,
        role,
    })
}

fn check_role(role: &str, ident: &IdentitySpec) -> Result<(), AuthError> {
    if !ident.allowed_roles.is_empty() && !ident.allowed_roles.iter().any(|a| a == role) {
        return Err(AuthError::RoleNotAllowed(quoted(role)));
    }
    no_nul("role", role)
}

/// Checks `exp`, `nbf` and `iat` against `now` with `leeway`.
pub(crate) fn check_times(v: &Verified, now: u64, leeway: u64) -> Result<(), AuthError> {
    if now >= v.exp.saturating_add(leeway) {
        return Err(AuthError::Expired {
            exp: v.exp,
            now,
            leeway,
        });
    }
    if let Some(nbf) = v.nbf {
        if now.saturating_add(leeway) < nbf {
            return Err(AuthError::NotYetValid { nbf, now, leeway });
        }
    }
    if let Some(iat) = v.iat {
        if iat > now.saturating_add(leeway) {
            return Err(AuthError::IssuedInFuture { iat, now, leeway });
        }
    }
    Ok(())
}

/// Applies the user policy and builds the [`Identity`]. `with_role` says
/// whether "role" is one of the setting names.
pub(crate) fn identity_for(
    v: &Verified,
    spec: &IssuerSpec,
    ident: &IdentitySpec,
    with_role: bool,
    startup_user: &str,
    token_id: String,
) -> Result<Identity, AuthError> {
    let mismatch = |why: String| AuthError::UserMismatch {
        startup_user: quoted(startup_user),
        why,
    };
    let mapped = match spec.user_policy {
        UserPolicy::Ignore => None,
        UserPolicy::MatchSub => {
            if startup_user != v.subject {
                return Err(mismatch(format!(
                    "must equal the token's sub {}",
                    quoted(&v.subject)
                )));
            }
            None
        }
        UserPolicy::Map => match spec.users.get(startup_user) {
            Some(role) => {
                check_role(role, ident)?;
                Some(role.clone())
            }
            None => {
                return Err(mismatch(format!(
                    "is not in the users table of issuer {}",
                    quoted(&spec.issuer)
                )))
            }
        },
    };
    let mut values = v.values.clone();
    if with_role {
        // "none" is what SET ROLE NONE sets: the session user, no switch.
        values.push(
            mapped
                .or_else(|| v.role.clone())
                .unwrap_or_else(|| "none".into()),
        );
    }
    Ok(Identity {
        subject: v.subject.clone(),
        values: values.into(),
        expires_at: Some(v.exp),
        token_id,
        issuer: spec.issuer.clone(),
    })
}
