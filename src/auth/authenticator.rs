//! [`Authenticator`]: the one object the proxy holds. It picks the issuer
//! from `iss`, the key from `kid` (the key, not the header, decides the
//! algorithm), verifies the signature, applies the claim policy and caches
//! the result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};

use super::cache::TokenCache;
use super::claims::str_claim;
use super::config::{AuthConfig, IssuerSpec, KeySourceSpec, OnExpiry, UserPolicy};
use super::error::{quoted, AuthConfigError, AuthError};
use super::identity::{check_times, identity_for, verify_claims, Identity, Verified};
use super::jwks::{spawn_refresh, JwksSource};
use super::keys::{load_static, KeySet, Pick, VerifyKey};
use super::settings::{cross_check, IdentityConfig, IdentitySpec};
use super::token::{self, Parsed};
use crate::metrics;

/// Verified tokens kept at most; beyond it expired, then oldest, go.
const CACHE_CAPACITY: usize = 10_000;

enum Keys {
    Static(Arc<KeySet>),
    Jwks(Arc<JwksSource>),
}

struct Issuer {
    spec: IssuerSpec,
    keys: Keys,
}

/// One generation of the configuration: issuers, keys, identity mapping
/// and the token cache. A reload builds a new one and swaps it in whole, so
/// a verification in flight finishes on the generation it started with.
struct Verifier {
    issuers: Vec<Issuer>,
    by_name: HashMap<String, usize>,
    identity: IdentitySpec,
    setting_names: Vec<String>,
    with_role: bool,
    leeway: u64,
    on_expiry: OnExpiry,
    cache: TokenCache<Verified>,
    refresh_tasks: Vec<tokio::task::AbortHandle>,
    /// Signature verifications done (not cache hits); tests read it.
    verifications: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.by_name.keys().collect::<Vec<_>>())
            .field("setting_names", &self.setting_names)
            .finish_non_exhaustive()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        for t in &self.refresh_tasks {
            t.abort();
        }
    }
}

/// The short hex sha256 prefix by which a token may be logged.
pub fn token_id(token: &str) -> String {
    hex::encode(&Sha256::digest(token.trim().as_bytes())[..6])
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies client tokens. `Send + Sync`; share it as `Arc<Authenticator>`.
///
/// Its issuers, keys and identity mapping can be replaced while clients are
/// connected ([`Authenticator::reload`]); the names of the injected settings
/// cannot, since every connected session has encoded them.
pub struct Authenticator {
    current: arc_swap::ArcSwap<Verifier>,
    setting_names: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.current.load().fmt(f)
    }
}

/// A configuration checked and loaded for [`Authenticator::install`].
pub struct Prepared(Verifier);

/// One verification key, as the admin console's `SHOW KEYS` lists it.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// The issuer (`iss`).
    pub issuer: String,
    /// Where its keys come from: `jwks_url`, `jwks_file`, `pem`, `hmac`.
    pub source: &'static str,
    /// The key's `kid` (empty when it has none).
    pub kid: String,
    /// Key type (`RSA`, `EC`, ...).
    pub kind: String,
    /// When the key set was last fetched (JWKS URLs only).
    pub fetched_at: Option<std::time::SystemTime>,
}

impl Authenticator {
    /// Loads keys (PEM files, JWKS files, JWKS URLs fetched once at start)
    /// and spawns the JWKS refresh tasks; must be called inside a tokio
    /// runtime. A JWKS URL that cannot be fetched at start is logged and
    /// fetched again on first use; it does not stop the start.
    pub async fn new(
        auth: &AuthConfig,
        identity: &IdentityConfig,
    ) -> Result<Arc<Self>, AuthConfigError> {
        let v = Verifier::new(auth, identity).await?;
        Ok(Arc::new(Authenticator {
            setting_names: v.setting_names.clone(),
            current: arc_swap::ArcSwap::from_pointee(v),
        }))
    }

    /// Builds what a reload would put in force (keys loaded, JWKS fetched)
    /// without changing anything yet: [`Authenticator::install`] does. Refused
    /// when the config is invalid or would change the names of the injected
    /// settings.
    pub async fn prepare(
        &self,
        auth: &AuthConfig,
        identity: &IdentityConfig,
    ) -> Result<Prepared, AuthConfigError> {
        let v = Verifier::new(auth, identity).await?;
        if v.setting_names != self.setting_names {
            return Err(AuthConfigError::invalid(
                "[identity]",
                format!(
                    "a reload cannot change the injected setting names ({:?} -> {:?}); restart rowgate for that",
                    self.setting_names, v.setting_names
                ),
            ));
        }
        Ok(Prepared(v))
    }

    /// Puts a prepared configuration in force. Verifications already
    /// running finish on the old one.
    pub fn install(&self, prepared: Prepared) {
        self.current.store(Arc::new(prepared.0));
    }

    /// [`Authenticator::prepare`] then [`Authenticator::install`].
    pub async fn reload(
        &self,
        auth: &AuthConfig,
        identity: &IdentityConfig,
    ) -> Result<(), AuthConfigError> {
        let prepared = self.prepare(auth, identity).await?;
        self.install(prepared);
        Ok(())
    }

    /// Names of the settings injected in every transaction, in a fixed
    /// order; "role" comes last when a role switch is configured.
    pub fn setting_names(&self) -> &[String] {
        &self.setting_names
    }

    /// Whether some issuer could accept `startup_user` as a JWT user: any
    /// issuer whose `user_policy` is not `map`, or one whose map has it.
    pub fn may_be_user(&self, startup_user: &str) -> bool {
        self.current.load().may_be_user(startup_user)
    }

    /// What to do when a connected client's token expires.
    pub fn on_expiry(&self) -> OnExpiry {
        self.current.load().on_expiry
    }

    /// Verifies the password a client sent. `startup_user` is the `user`
    /// from the client's StartupMessage. Every refusal is counted in
    /// `rowgate_auth_failures_total{reason}`; the time taken goes to
    /// `rowgate_jwt_verify_seconds{kind="hit"|"miss"|"refused"}`.
    pub async fn authenticate(
        &self,
        token: &str,
        startup_user: &str,
    ) -> Result<Identity, AuthError> {
        let v = self.current.load_full();
        v.authenticate(token, startup_user).await
    }

    /// Verifies a token a service presented in-band (`SET LOCAL
    /// rowgate.token`) with exactly the policy of the password path (issuer,
    /// key, `aud`, `azp`, `sid`, `sts`, times with leeway) and the same
    /// cache, plus the service's `allowed_issuers`. The startup user is the
    /// service's name, so `user_policy` does not apply; a role comes from the
    /// token or `[identity] role` only. Timed like [`Self::authenticate`].
    pub async fn verify_inband(
        &self,
        token: &str,
        service: &super::service::Service,
    ) -> Result<Identity, AuthError> {
        let v = self.current.load_full();
        v.verify_inband(token, service).await
    }

    /// The identity of a transaction with no user: every setting empty (the
    /// SQL helpers read that as NULL, so RLS shows nothing), no role switch.
    pub fn no_identity(&self) -> Identity {
        self.current.load().no_identity()
    }

    /// The identity a service's `default_identity` claims give, mapped by
    /// `[identity]` like a token's claims (no signature: the operator wrote
    /// them). Its `sub` may be absent.
    pub fn identity_from_claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, AuthError> {
        self.current.load().identity_from_claims(claims)
    }

    /// Whether every issuer has keys to verify with (for `/readyz`).
    pub fn keys_loaded(&self) -> bool {
        self.current.load().issuers.iter().all(|i| match &i.keys {
            Keys::Static(set) => !set.keys.is_empty(),
            Keys::Jwks(src) => !src.current().0.keys.is_empty(),
        })
    }

    /// Every key in force, issuer by issuer (no key material).
    pub fn keys(&self) -> Vec<KeyInfo> {
        let v = self.current.load();
        let mut out = Vec::new();
        for i in &v.issuers {
            let (set, source, fetched_at) = match &i.keys {
                Keys::Static(set) => (set.clone(), static_source(&i.spec.source), None),
                Keys::Jwks(src) => (src.current().0, "jwks_url", src.fetched_at()),
            };
            for k in &set.keys {
                out.push(KeyInfo {
                    issuer: i.spec.issuer.clone(),
                    source,
                    kid: k.kid.clone().unwrap_or_default(),
                    kind: format!("{:?}", k.kind),
                    fetched_at,
                });
            }
        }
        out
    }

    /// Signature verifications done so far (cache hits do none).
    #[cfg(test)]
    pub(crate) fn verifications(&self) -> u64 {
        self.current.load().verifications()
    }

    #[cfg(test)]
    pub(crate) fn jwks_fetches(&self) -> u64 {
        self.current.load().jwks_fetches()
    }
}

fn static_source(s: &KeySourceSpec) -> &'static str {
    match s {
        KeySourceSpec::Hmac(_) => "hmac",
        KeySourceSpec::JwksUrl(_) => "jwks_url",
        KeySourceSpec::JwksFile(_) => "jwks_file",
        KeySourceSpec::PemFile(_) | KeySourceSpec::PemInline(_) => "pem",
    }
}

/// How a verification went, for `rowgate_jwt_verify_seconds{kind}`.
fn verify_kind<T>(result: &Result<T, AuthError>, hit: bool) -> &'static str {
    match (result, hit) {
        (Err(_), _) => "refused",
        (Ok(_), true) => "hit",
        (Ok(_), false) => "miss",
    }
}

impl Verifier {
    async fn new(auth: &AuthConfig, identity: &IdentityConfig) -> Result<Self, AuthConfigError> {
        let specs = auth.issuer_specs()?;
        let ident = identity.spec()?;
        cross_check(&specs, &ident)?;
        let mut issuers = Vec::with_capacity(specs.len());
        let mut remote = Vec::new();
        for spec in specs {
            let keys = match (load_static(&spec)?, &spec.source) {
                (Some(set), _) => Keys::Static(Arc::new(set)),
                (None, KeySourceSpec::JwksUrl(url)) => {
                    let src = JwksSource::new(auth, &spec.issuer, url.clone())?;
                    remote.push(src.clone());
                    Keys::Jwks(src)
                }
                (None, _) => {
                    return Err(AuthConfigError::invalid(
                        format!("[auth] issuer {:?}", spec.issuer),
                        "no keys could be loaded",
                    ))
                }
            };
            issuers.push(Issuer { spec, keys });
        }
        // First fetches run side by side, so N slow issuers cost one timeout.
        let firsts: Vec<_> = remote
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.refresh().await })
            })
            .collect();
        for f in firsts {
            let _ = f.await;
        }
        let every = Duration::from_secs(auth.jwks_refresh_secs);
        let refresh_tasks = remote.iter().map(|s| spawn_refresh(s, every)).collect();
        let with_role = ident.role.is_some()
            || issuers
                .iter()
                .any(|i| i.spec.user_policy == UserPolicy::Map);
        let mut setting_names: Vec<String> =
            ident.settings.iter().map(|(n, _)| n.clone()).collect();
        if with_role {
            setting_names.push("role".into());
        }
        let by_name = issuers
            .iter()
            .enumerate()
            .map(|(i, iss)| (iss.spec.issuer.clone(), i))
            .collect();
        Ok(Verifier {
            issuers,
            by_name,
            identity: ident,
            setting_names,
            with_role,
            leeway: auth.leeway_secs,
            on_expiry: auth.on_expiry,
            cache: TokenCache::new(CACHE_CAPACITY),
            refresh_tasks,
            verifications: AtomicU64::new(0),
        })
    }

    fn may_be_user(&self, startup_user: &str) -> bool {
        self.issuers.iter().any(|i| {
            i.spec.user_policy != UserPolicy::Map || i.spec.users.contains_key(startup_user)
        })
    }

    async fn authenticate(&self, token: &str, startup_user: &str) -> Result<Identity, AuthError> {
        let started = std::time::Instant::now();
        let token = token.trim();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let id = hex::encode(&digest[..6]);
        let mut hit = false;
        let result = self
            .authenticate_inner(token, &digest, startup_user, id.clone(), &mut hit)
            .await;
        let kind = verify_kind(&result, hit);
        metrics::observe("rowgate_jwt_verify_seconds", kind, started.elapsed());
        match &result {
            Ok(identity) => {
                tracing::debug!(token_id = %id, sub = %identity.subject, "token accepted")
            }
            Err(e) => {
                metrics::incr("rowgate_auth_failures_total", e.reason());
                tracing::debug!(token_id = %id, reason = e.reason(), "token refused: {e}");
            }
        }
        result
    }

    async fn authenticate_inner(
        &self,
        token: &str,
        digest: &[u8; 32],
        startup_user: &str,
        id: String,
        hit: &mut bool,
    ) -> Result<Identity, AuthError> {
        let v = self.verified(token, digest, hit).await?;
        self.finish(&v, startup_user, id)
    }

    /// The verified form of `token`, from the cache or by checking it
    /// (signature, claim policy), with its time claims checked now.
    async fn verified(
        &self,
        token: &str,
        digest: &[u8; 32],
        hit: &mut bool,
    ) -> Result<Arc<Verified>, AuthError> {
        let now = now_secs();
        if let Some(v) = self.cache.get(digest) {
            if self.key_still_trusted(&v) {
                *hit = true;
                check_times(&v, now, self.leeway)?;
                return Ok(v);
            }
            // Its key left the set: verify again from scratch.
            self.cache.remove(digest);
        }
        let parsed = token::parse(token)?;
        let iss = str_claim(&parsed.claims, "iss")?.ok_or(AuthError::MissingIssuer)?;
        let index = *self
            .by_name
            .get(iss)
            .ok_or_else(|| AuthError::BadIssuer(quoted(iss)))?;
        let issuer = &self.issuers[index];
        if let Some(list) = &issuer.spec.algorithms {
            if !list.contains(&parsed.alg) {
                return Err(AuthError::AlgNotAllowed {
                    alg: format!("{:?}", parsed.alg),
                    why: format!(
                        "issuer {} allows only {list:?}",
                        quoted(&issuer.spec.issuer)
                    ),
                });
            }
        }
        let hmac_alg = matches!(
            parsed.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if hmac_alg && !matches!(issuer.spec.source, KeySourceSpec::Hmac(_)) {
            // RS/HS confusion, refused before any key is even looked at.
            return Err(AuthError::AlgNotAllowed {
                alg: format!("{:?}", parsed.alg),
                why: format!(
                    "issuer {} verifies with public keys, never a shared secret",
                    quoted(&issuer.spec.issuer)
                ),
            });
        }
        let key = self.select_key(issuer, &parsed).await?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = jsonwebtoken::crypto::verify(
            parsed.signature,
            parsed.signing_input.as_bytes(),
            &key.key,
            parsed.alg,
        );
        if !matches!(ok, Ok(true)) {
            return Err(AuthError::BadSignature);
        }
        let verified = verify_claims(
            index,
            key.fingerprint,
            &parsed.claims,
            &issuer.spec,
            &self.identity,
        )?;
        check_times(&verified, now, self.leeway)?;
        let verified = Arc::new(verified);
        self.cache
            .insert(*digest, verified.clone(), verified.exp, now);
        Ok(verified)
    }

    /// A service's in-band token: see [`Authenticator::verify_inband`].
    async fn verify_inband(
        &self,
        token: &str,
        service: &super::service::Service,
    ) -> Result<Identity, AuthError> {
        let started = std::time::Instant::now();
        let token = token.trim();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let id = hex::encode(&digest[..6]);
        let mut hit = false;
        let result = self.verified(token, &digest, &mut hit).await.and_then(|v| {
            let issuer = &self.issuers[v.issuer].spec.issuer;
            if !service.allows_issuer(issuer) {
                return Err(AuthError::IssuerNotAllowed {
                    issuer: quoted(issuer),
                    service: quoted(&service.name),
                });
            }
            Ok(inband_identity(&v, self.with_role, id.clone(), issuer))
        });
        let kind = verify_kind(&result, hit);
        metrics::observe("rowgate_jwt_verify_seconds", kind, started.elapsed());
        match &result {
            Ok(identity) => {
                tracing::debug!(token_id = %id, service = %service.name, sub = %identity.subject, "in-band token accepted")
            }
            Err(e) => {
                metrics::incr("rowgate_auth_failures_total", e.reason());
                tracing::info!(token_id = %id, service = %service.name, reason = e.reason(), "in-band token refused: {e}");
            }
        }
        result
    }

    fn no_identity(&self) -> Identity {
        let mut values = vec![String::new(); self.identity.settings.len()];
        if self.with_role {
            values.push("none".into());
        }
        Identity {
            subject: String::new(),
            values: values.into(),
            expires_at: None,
            token_id: "-".into(),
            issuer: String::new(),
        }
    }

    fn identity_from_claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, AuthError> {
        let mut values = Vec::with_capacity(self.setting_names.len());
        for (name, path) in &self.identity.settings {
            let v = path.render(claims);
            if v.contains('\0') {
                return Err(AuthError::BadClaim {
                    claim: quoted(name),
                    why: "contains a NUL character",
                });
            }
            values.push(v);
        }
        if self.with_role {
            let role = match &self.identity.role {
                Some(super::settings::RoleSource::Fixed(r)) => r.clone(),
                Some(super::settings::RoleSource::Claim(path)) => match path.lookup(claims) {
                    Some(serde_json::Value::String(r)) => r.clone(),
                    _ => "none".into(),
                },
                None => "none".into(),
            };
            values.push(role);
        }
        Ok(Identity {
            subject: str_claim(claims, "sub")?.unwrap_or_default().to_owned(),
            values: values.into(),
            expires_at: None,
            token_id: "default_identity".into(),
            issuer: String::new(),
        })
    }

    fn finish(&self, v: &Verified, startup_user: &str, id: String) -> Result<Identity, AuthError> {
        let spec = &self.issuers[v.issuer].spec;
        identity_for(v, spec, &self.identity, self.with_role, startup_user, id)
    }

    fn key_still_trusted(&self, v: &Verified) -> bool {
        match &self.issuers[v.issuer].keys {
            Keys::Static(_) => true,
            Keys::Jwks(src) => src.current().0.contains(&v.key_fingerprint),
        }
    }

    async fn select_key(
        &self,
        issuer: &Issuer,
        parsed: &Parsed<'_>,
    ) -> Result<Arc<VerifyKey>, AuthError> {
        match &issuer.keys {
            Keys::Static(set) => pick(set, issuer, parsed, || "no key is configured".into()),
            Keys::Jwks(src) => {
                let (set, generation) = src.current();
                let first = pick(&set, issuer, parsed, || src.unavailable_reason());
                match first {
                    Err(AuthError::UnknownKid { .. }) | Err(AuthError::KeysUnavailable { .. }) => {
                        src.refetch_after_miss(generation).await;
                        let (set, _) = src.current();
                        pick(&set, issuer, parsed, || src.unavailable_reason())
                    }
                    other => other,
                }
            }
        }
    }

    #[cfg(test)]
    fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn jwks_fetches(&self) -> u64 {
        self.issuers
            .iter()
            .map(|i| match &i.keys {
                Keys::Jwks(s) => s.fetches.load(Ordering::Relaxed),
                Keys::Static(_) => 0,
            })
            .sum()
    }
}

/// The identity of an in-band token: the settings of its claims, the role
/// from the token (or `[identity] role`), never a `user_policy` mapping.
fn inband_identity(v: &Verified, with_role: bool, token_id: String, issuer: &str) -> Identity {
    let mut values = v.values.clone();
    if with_role {
        values.push(v.role.clone().unwrap_or_else(|| "none".into()));
    }
    Identity {
        subject: v.subject.clone(),
        values: values.into(),
        expires_at: Some(v.exp),
        token_id,
        issuer: issuer.to_owned(),
    }
}

/// Chooses the key for `parsed` in `set`; the key must permit the alg.
fn pick(
    set: &KeySet,
    issuer: &Issuer,
    parsed: &Parsed<'_>,
    empty_reason: impl FnOnce() -> String,
) -> Result<Arc<VerifyKey>, AuthError> {
    let name = || quoted(&issuer.spec.issuer);
    match set.pick(parsed.kid.as_deref()) {
        Pick::Found(candidates) => {
            let mut why = String::new();
            for k in candidates {
                match k.permits(parsed.alg, issuer.spec.algorithms.as_deref()) {
                    Ok(()) => return Ok(k.clone()),
                    Err(w) if why.is_empty() => why = w,
                    Err(_) => {}
                }
            }
            Err(AuthError::AlgNotAllowed {
                alg: format!("{:?}", parsed.alg),
                why,
            })
        }
        Pick::UnknownKid => Err(AuthError::UnknownKid {
            kid: quoted(parsed.kid.as_deref().unwrap_or_default()),
            issuer: name(),
        }),
        Pick::Ambiguous(keys) => Err(AuthError::MissingKid {
            issuer: name(),
            keys,
        }),
        Pick::Empty => Err(AuthError::KeysUnavailable {
            issuer: name(),
            detail: empty_reason(),
        }),
    }
}
