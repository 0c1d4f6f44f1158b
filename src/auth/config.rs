//! `[auth]`: what the operator writes about issuers and keys, and the checks
//! that turn it into something the verifier can trust (`validate`, no
//! network). `[identity]` lives in `settings.rs`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer};
use url::{Host, Url};

use super::error::AuthConfigError;

/// A secret read from the config file. `Debug` never shows it, so a config
/// dumped with `{:?}` cannot leak a shared HMAC secret into a log.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// What to do with a connected client whose token has expired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// Refuse new transactions (SQLSTATE 28000) once `exp` has passed, so the
    /// client reconnects with a fresh token. The safe default.
    #[default]
    RejectTransactions,
    /// Keep serving the connection with the identity it logged in with.
    Allow,
}

/// How the StartupMessage `user` must relate to the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserPolicy {
    /// Any database user name is accepted; only the token counts.
    #[default]
    Ignore,
    /// The database user name must equal the token's `sub`.
    MatchSub,
    /// The database user name must be a key of `users`; its value becomes
    /// the `role` setting.
    Map,
}

/// One trusted token issuer (`[[auth.issuers]]`, or the top-level shorthand).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value of this issuer's tokens.
    pub issuer: String,
    /// HTTPS URL of the issuer's JWKS, fetched at start and refreshed.
    pub jwks_url: Option<String>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// A PEM public key on disk (Clerk's CLERK_JWT_KEY saved to a file).
    pub public_key_file: Option<PathBuf>,
    /// A PEM public key inline (for example CLERK_JWT_KEY pasted in).
    pub public_key: Option<String>,
    /// Shared HS256 secret (UTF-8 bytes).
    pub hs256_secret: Option<Secret>,
    /// Shared HMAC secret (UTF-8 bytes), with `hmac_algorithms`.
    pub hmac_secret: Option<Secret>,
    /// Algorithms allowed with `hmac_secret` (default `["HS256"]`).
    pub hmac_algorithms: Option<Vec<String>>,
    /// Algorithm allowlist. Default: RS256 for RSA keys, from the key type
    /// otherwise (ES256/ES384/EdDSA), HS256 for secrets.
    pub algorithms: Option<Vec<String>>,
    /// Accepted audiences; when set, the token's `aud` must contain one.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Accepted `azp` values; checked only when non-empty.
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    /// `true`: session tokens (with `sid`) only; `false`: refuse session
    /// tokens; unset: either.
    pub require_sid: Option<bool>,
    /// Refuse Clerk sessions whose `sts` is `pending` (default true).
    pub reject_pending: Option<bool>,
    /// How the database user must relate to the token (default `ignore`).
    pub user_policy: Option<UserPolicy>,
    /// With `user_policy = "map"`: database user -> upstream role.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
}

/// `[auth]`: trusted issuers and verification knobs.
///
/// The top-level `issuer`/`jwks_url`/... fields are shorthand for a single
/// `[[auth.issuers]]` entry; both forms may be combined.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Shorthand: the single issuer's `iss`.
    pub issuer: Option<String>,
    /// Shorthand: see [`IssuerConfig::jwks_url`].
    pub jwks_url: Option<String>,
    /// Shorthand: see [`IssuerConfig::jwks_file`].
    pub jwks_file: Option<PathBuf>,
    /// Shorthand: see [`IssuerConfig::public_key_file`].
    pub public_key_file: Option<PathBuf>,
    /// Shorthand: see [`IssuerConfig::public_key`].
    pub public_key: Option<String>,
    /// Shorthand: see [`IssuerConfig::hs256_secret`].
    pub hs256_secret: Option<Secret>,
    /// Shorthand: see [`IssuerConfig::hmac_secret`].
    pub hmac_secret: Option<Secret>,
    /// Shorthand: see [`IssuerConfig::hmac_algorithms`].
    pub hmac_algorithms: Option<Vec<String>>,
    /// Shorthand: see [`IssuerConfig::algorithms`].
    pub algorithms: Option<Vec<String>>,
    /// Shorthand: see [`IssuerConfig::audience`].
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Shorthand: see [`IssuerConfig::authorized_parties`].
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    /// Shorthand: see [`IssuerConfig::require_sid`].
    pub require_sid: Option<bool>,
    /// Shorthand: see [`IssuerConfig::reject_pending`].
    pub reject_pending: Option<bool>,
    /// Shorthand: see [`IssuerConfig::user_policy`].
    pub user_policy: Option<UserPolicy>,
    /// Shorthand: see [`IssuerConfig::users`].
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Further issuers; the token's `iss` picks one.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Clock leeway for `exp`, `nbf` and `iat` (default 5 s).
    #[serde(default = "d_leeway")]
    pub leeway_secs: u64,
    /// What happens when a connected client's token expires.
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// Background JWKS refresh period (default 300 s).
    #[serde(default = "d_refresh")]
    pub jwks_refresh_secs: u64,
    /// At most one unknown-kid refetch per this many seconds (default 30;
    /// 0 disables the limit, meant for tests).
    #[serde(default = "d_min_refetch")]
    pub jwks_min_refetch_secs: u64,
    /// JWKS connect timeout (default 2000 ms).
    #[serde(default = "d_connect_ms")]
    pub jwks_connect_timeout_ms: u64,
    /// JWKS total request timeout (default 5000 ms).
    #[serde(default = "d_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// Allow `http://` JWKS URLs, for loopback hosts only (tests, sidecars).
    #[serde(default)]
    pub allow_http_jwks: bool,
}

fn d_leeway() -> u64 {
    5
}
fn d_refresh() -> u64 {
    300
}
fn d_min_refetch() -> u64 {
    30
}
fn d_connect_ms() -> u64 {
    2000
}
fn d_timeout_ms() -> u64 {
    5000
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: None,
            jwks_url: None,
            jwks_file: None,
            public_key_file: None,
            public_key: None,
            hs256_secret: None,
            hmac_secret: None,
            hmac_algorithms: None,
            algorithms: None,
            audience: Vec::new(),
            authorized_parties: Vec::new(),
            require_sid: None,
            reject_pending: None,
            user_policy: None,
            users: BTreeMap::new(),
            issuers: Vec::new(),
            leeway_secs: d_leeway(),
            on_expiry: OnExpiry::default(),
            jwks_refresh_secs: d_refresh(),
            jwks_min_refetch_secs: d_min_refetch(),
            jwks_connect_timeout_ms: d_connect_ms(),
            jwks_timeout_ms: d_timeout_ms(),
            allow_http_jwks: false,
        }
    }
}

/// Accepts `audience = "x"` as well as `audience = ["x", "y"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Where an issuer's keys come from, after validation.
#[derive(Clone, Debug)]
pub(crate) enum KeySourceSpec {
    JwksUrl(Url),
    JwksFile(PathBuf),
    PemFile(PathBuf),
    PemInline(String),
    Hmac(Secret),
}

/// One issuer after validation: the form the verifier works with.
#[derive(Clone, Debug)]
pub(crate) struct IssuerSpec {
    pub issuer: String,
    pub source: KeySourceSpec,
    /// `None` = default from the key type.
    pub algorithms: Option<Vec<Algorithm>>,
    pub audience: Vec<String>,
    pub authorized_parties: Vec<String>,
    pub require_sid: Option<bool>,
    pub reject_pending: bool,
    pub user_policy: UserPolicy,
    pub users: BTreeMap<String, String>,
}

impl AuthConfig {
    /// Checks the whole `[auth]` table without touching the network: every
    /// issuer, key source, URL, algorithm and limit, and reads and parses
    /// key and JWKS files. What `rowgate check` reports.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        for spec in self.issuer_specs()? {
            super::keys::load_static(&spec)?;
        }
        Ok(())
    }

    /// Returns the configured issuers (shorthand first), or what is wrong.
    pub(crate) fn issuer_specs(&self) -> Result<Vec<IssuerSpec>, AuthConfigError> {
        self.check_limits()?;
        let mut all = Vec::new();
        if let Some(one) = self.shorthand()? {
            all.push(one);
        }
        all.extend(self.issuers.iter().cloned());
        if all.is_empty() {
            return Err(AuthConfigError::invalid(
                "[auth]",
                "no issuer is configured: set issuer and jwks_url (or jwks_file, public_key_file, \
                 public_key, hs256_secret), or add [[auth.issuers]] tables",
            ));
        }
        let mut seen = HashSet::new();
        let mut specs = Vec::with_capacity(all.len());
        for ic in &all {
            if !seen.insert(ic.issuer.clone()) {
                return Err(AuthConfigError::invalid(
                    "[auth]",
                    format!("issuer {:?} is configured twice", ic.issuer),
                ));
            }
            specs.push(self.spec(ic)?);
        }
        Ok(specs)
    }

    fn check_limits(&self) -> Result<(), AuthConfigError> {
        let bad = |problem: &str| Err(AuthConfigError::invalid("[auth]", problem));
        if self.leeway_secs > 3600 {
            return bad("leeway_secs is above 3600; clock skew that large means a broken clock");
        }
        if self.jwks_refresh_secs == 0 {
            return bad("jwks_refresh_secs must be at least 1");
        }
        if self.jwks_connect_timeout_ms == 0 || self.jwks_timeout_ms == 0 {
            return bad("jwks_connect_timeout_ms and jwks_timeout_ms must be at least 1");
        }
        if self.jwks_timeout_ms > 60_000 {
            return bad(
                "jwks_timeout_ms is above 60000; a JWKS fetch that slow would stall logins",
            );
        }
        Ok(())
    }

    /// The top-level single-issuer form, if used.
    fn shorthand(&self) -> Result<Option<IssuerConfig>, AuthConfigError> {
        let ic = IssuerConfig {
            issuer: self.issuer.clone().unwrap_or_default(),
            jwks_url: self.jwks_url.clone(),
            jwks_file: self.jwks_file.clone(),
            public_key_file: self.public_key_file.clone(),
            public_key: self.public_key.clone(),
            hs256_secret: self.hs256_secret.clone(),
            hmac_secret: self.hmac_secret.clone(),
            hmac_algorithms: self.hmac_algorithms.clone(),
            algorithms: self.algorithms.clone(),
            audience: self.audience.clone(),
            authorized_parties: self.authorized_parties.clone(),
            require_sid: self.require_sid,
            reject_pending: self.reject_pending,
            user_policy: self.user_policy,
            users: self.users.clone(),
        };
        if self.issuer.is_some() {
            return Ok(Some(ic));
        }
        let stray = ic.jwks_url.is_some()
            || ic.jwks_file.is_some()
            || ic.public_key_file.is_some()
            || ic.public_key.is_some()
            || ic.hs256_secret.is_some()
            || ic.hmac_secret.is_some()
            || ic.hmac_algorithms.is_some()
            || ic.algorithms.is_some()
            || !ic.audience.is_empty()
            || !ic.authorized_parties.is_empty()
            || ic.require_sid.is_some()
            || ic.reject_pending.is_some()
            || ic.user_policy.is_some()
            || !ic.users.is_empty();
        if stray {
            return Err(AuthConfigError::invalid(
                "[auth]",
                "per-issuer settings (jwks_url, audience, ...) are set at the top level without \
                 `issuer`; add `issuer = \"...\"`, or move them into each [[auth.issuers]] table",
            ));
        }
        Ok(None)
    }

    fn spec(&self, ic: &IssuerConfig) -> Result<IssuerSpec, AuthConfigError> {
        let at = format!("[auth] issuer {:?}", ic.issuer);
        let bad = |problem: String| AuthConfigError::invalid(at.clone(), problem);
        if ic.issuer.trim().is_empty() {
            return Err(AuthConfigError::invalid(
                "[auth]",
                "an issuer has an empty `issuer`; it must be the exact iss of its tokens",
            ));
        }
        let mut sources = Vec::new();
        let mut source = None;
        if let Some(u) = &ic.jwks_url {
            sources.push("jwks_url");
            source = Some(KeySourceSpec::JwksUrl(self.jwks_url_ok(u).map_err(bad)?));
        }
        if let Some(p) = &ic.jwks_file {
            sources.push("jwks_file");
            source = Some(KeySourceSpec::JwksFile(p.clone()));
        }
        if let Some(p) = &ic.public_key_file {
            sources.push("public_key_file");
            source = Some(KeySourceSpec::PemFile(p.clone()));
        }
        if let Some(p) = &ic.public_key {
            sources.push("public_key");
            source = Some(KeySourceSpec::PemInline(p.clone()));
        }
        if let Some(s) = &ic.hs256_secret {
            sources.push("hs256_secret");
            source = Some(KeySourceSpec::Hmac(s.clone()));
        }
        if let Some(s) = &ic.hmac_secret {
            sources.push("hmac_secret");
            source = Some(KeySourceSpec::Hmac(s.clone()));
        }
        let source = match (sources.len(), source) {
            (1, Some(s)) => s,
            (0, _) => {
                return Err(bad(
                    "no key source: set one of jwks_url, jwks_file, public_key_file, \
                     public_key, hs256_secret, hmac_secret"
                        .into(),
                ))
            }
            _ => {
                return Err(bad(format!(
                    "set exactly one key source, found {}",
                    sources.join(", ")
                )))
            }
        };
        let is_secret = matches!(source, KeySourceSpec::Hmac(_));
        if let KeySourceSpec::Hmac(s) = &source {
            if s.0.is_empty() {
                return Err(bad("the HMAC secret is empty".into()));
            }
        }
        if ic.hmac_algorithms.is_some() && ic.hmac_secret.is_none() {
            return Err(bad("hmac_algorithms only applies with hmac_secret".into()));
        }
        if ic.hmac_algorithms.is_some() && ic.algorithms.is_some() {
            return Err(bad(
                "set either algorithms or hmac_algorithms, not both".into()
            ));
        }
        let names = ic.algorithms.as_ref().or(ic.hmac_algorithms.as_ref());
        let mut algorithms = match names {
            None => None,
            Some(list) => Some(parse_algorithms(list).map_err(bad)?),
        };
        if ic.hs256_secret.is_some() && algorithms.is_none() {
            algorithms = Some(vec![Algorithm::HS256]);
        }
        if ic.hmac_secret.is_some() && algorithms.is_none() {
            algorithms = Some(vec![Algorithm::HS256]);
        }
        if let Some(list) = &algorithms {
            for alg in list {
                let hs = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
                if hs && !is_secret {
                    return Err(bad(format!(
                        "{alg:?} needs a shared secret (hs256_secret or hmac_secret); allowing it \
                         with public keys would invite RS/HS confusion"
                    )));
                }
                if !hs && is_secret {
                    return Err(bad(format!(
                        "{alg:?} needs a public key; a shared secret only verifies HS256/HS384/HS512"
                    )));
                }
                if ic.hs256_secret.is_some() && *alg != Algorithm::HS256 {
                    return Err(bad(format!(
                        "hs256_secret only allows HS256; use hmac_secret with hmac_algorithms \
                         for {alg:?}"
                    )));
                }
            }
        }
        let user_policy = ic.user_policy.unwrap_or_default();
        match user_policy {
            UserPolicy::Map if ic.users.is_empty() => {
                return Err(bad("user_policy = \"map\" needs a `users` table, e.g. \
                     users = { app = \"app_user\" }"
                    .into()))
            }
            UserPolicy::Ignore | UserPolicy::MatchSub if !ic.users.is_empty() => {
                return Err(bad("`users` only applies with user_policy = \"map\"".into()))
            }
            _ => {}
        }
        if ic.audience.iter().any(|a| a.is_empty()) {
            return Err(bad("audience contains an empty string".into()));
        }
        if ic.authorized_parties.iter().any(|a| a.is_empty()) {
            return Err(bad("authorized_parties contains an empty string".into()));
        }
        Ok(IssuerSpec {
            issuer: ic.issuer.clone(),
            source,
            algorithms,
            audience: ic.audience.clone(),
            authorized_parties: ic.authorized_parties.clone(),
            require_sid: ic.require_sid,
            reject_pending: ic.reject_pending.unwrap_or(true),
            user_policy,
            users: ic.users.clone(),
        })
    }

    fn jwks_url_ok(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|e| format!("jwks_url {raw:?} is not a URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                if !self.allow_http_jwks {
                    return Err(format!(
                        "jwks_url {raw:?} is plain http; keys fetched without TLS can be \
                         replaced in transit. Use https (allow_http_jwks = true permits http \
                         for loopback hosts only)"
                    ));
                }
                if !is_loopback(&url) {
                    return Err(format!(
                        "jwks_url {raw:?} is plain http to a non-loopback host; allow_http_jwks \
                         only permits 127.0.0.0/8, ::1 and localhost"
                    ));
                }
            }
            other => return Err(format!("jwks_url {raw:?} has scheme {other:?}; use https")),
        }
        if url.host().is_none() {
            return Err(format!("jwks_url {raw:?} has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("jwks_url {raw:?} must not carry credentials"));
        }
        Ok(url)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn parse_algorithms(list: &[String]) -> Result<Vec<Algorithm>, String> {
    if list.is_empty() {
        return Err("algorithms is empty; leave it out to use the key type's default".into());
    }
    list.iter()
        .map(|name| {
            super::keys::parse_alg(name).ok_or_else(|| {
                if name.eq_ignore_ascii_case("none") {
                    "algorithm \"none\" can never be allowed".to_string()
                } else {
                    format!(
                        "unknown algorithm {name:?}; supported: RS256 RS384 RS512 PS256 PS384 \
                         PS512 ES256 ES384 EdDSA HS256 HS384 HS512"
                    )
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(toml_text: &str) -> AuthConfig {
        #[derive(Deserialize)]
        struct W {
            auth: AuthConfig,
        }
        toml::from_str::<W>(toml_text).map(|w| w.auth).unwrap()
    }

    #[test]
    fn minimal_form_parses_and_gives_one_issuer() {
        let a = auth(
            r#"[auth]
issuer = "https://clerk.example.com"
jwks_url = "https://clerk.example.com/.well-known/jwks.json"
leeway_secs = 5
"#,
        );
        let specs = a.issuer_specs().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].issuer, "https://clerk.example.com");
        assert!(matches!(specs[0].source, KeySourceSpec::JwksUrl(_)));
        assert!(specs[0].reject_pending);
        assert_eq!(a.on_expiry, OnExpiry::RejectTransactions);
        assert_eq!(a.jwks_refresh_secs, 300);
    }

    #[test]
    fn several_issuers_and_audience_forms() {
        let a = auth(
            r#"[auth]
on_expiry = "allow"
[[auth.issuers]]
issuer = "a"
hs256_secret = "0123456789abcdef0123456789abcdef"
audience = "one"
[[auth.issuers]]
issuer = "b"
jwks_url = "https://b.example/jwks"
audience = ["x", "y"]
require_sid = true
user_policy = "map"
users = { app = "app_user" }
"#,
        );
        let specs = a.issuer_specs().unwrap();
        assert_eq!(specs[0].audience, vec!["one"]);
        assert_eq!(specs[1].audience, vec!["x", "y"]);
        assert_eq!(specs[0].algorithms, Some(vec![Algorithm::HS256]));
        assert_eq!(specs[1].user_policy, UserPolicy::Map);
        assert_eq!(a.on_expiry, OnExpiry::Allow);
        assert!(
            !format!("{a:?}").contains("0123456789abcdef"),
            "secret leaked in Debug"
        );
    }

    fn err(toml_text: &str) -> String {
        #[derive(Deserialize)]
        struct W {
            auth: AuthConfig,
        }
        match toml::from_str::<W>(toml_text) {
            Err(e) => e.to_string(),
            Ok(w) => match w.auth.issuer_specs() {
                Err(e) => e.to_string(),
                Ok(_) => panic!("config accepted: {toml_text}"),
            },
        }
    }

    #[test]
    fn config_mistakes_are_explained() {
        let cases = [
            ("[auth]\nissuer = \"a\"\n", "no key source"),
            ("[auth]\n", "no issuer is configured"),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nhs256_secret = \"s\"\n",
                "exactly one key source",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"http://a.example/j\"\n",
                "plain http",
            ),
            (
                "[auth]\nallow_http_jwks = true\nissuer = \"a\"\njwks_url = \"http://10.0.0.1/j\"\n",
                "non-loopback",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nalgorithms = [\"HS256\"]\n",
                "RS/HS confusion",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nalgorithms = [\"none\"]\n",
                "can never be allowed",
            ),
            ("[auth]\njwks_url = \"https://a/j\"\n", "without `issuer`"),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nuser_policy = \"map\"\n",
                "needs a `users` table",
            ),
            ("[auth]\nissuer = \"a\"\nbogus = 1\n", "unknown field"),
            (
                "[auth]\nissuer = \"a\"\nhs256_secret = \"s\"\nalgorithms = [\"HS512\"]\n",
                "only allows HS256",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn loopback_http_allowed_when_asked() {
        for host in ["127.0.0.1:9", "localhost:9", "[::1]:9", "127.1.2.3"] {
            let a = auth(&format!(
                "[auth]\nallow_http_jwks = true\nissuer = \"a\"\njwks_url = \"http://{host}/j\"\n"
            ));
            a.issuer_specs().unwrap();
        }
    }
}
