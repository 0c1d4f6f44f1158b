//! `[identity]`: which claims become which transaction-local settings, and
//! the checks that tie it to `[auth]`.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::claims::ClaimPath;
use super::config::{AuthConfig, IssuerSpec, UserPolicy};
use super::error::AuthConfigError;

/// `[identity]`: which claims become which transaction-local settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `setting name -> claim path`, in file order. When absent, the
    /// defaults: `app.user_id = "sub"`, `request.jwt.claims = "*"`,
    /// `app.org_id = "org_id"`. When present it replaces them.
    #[serde(default, deserialize_with = "ordered_table")]
    pub settings: Option<Vec<(String, String)>>,
    /// Claim path whose (string) value becomes the `role` setting.
    pub role_claim: Option<String>,
    /// A fixed `role` setting for every client.
    pub role: Option<String>,
    /// Roles a token may switch to; required with `role_claim`.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
}

/// Reads a TOML table into a list, keeping the order of the file (a map
/// type would sort it, and the injected statement order must be stable and
/// as written).
fn ordered_table<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, String)>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of setting name = \"claim path\"")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<String, String>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V).map(Some)
}

/// The default settings, in their fixed order.
pub(crate) const DEFAULT_SETTINGS: [(&str, &str); 3] = [
    ("app.user_id", "sub"),
    ("request.jwt.claims", "*"),
    ("app.org_id", "org_id"),
];

/// Where the `role` setting comes from.
#[derive(Clone, Debug)]
pub(crate) enum RoleSource {
    Claim(ClaimPath),
    Fixed(String),
}

/// `[identity]` after validation.
#[derive(Clone, Debug)]
pub(crate) struct IdentitySpec {
    pub settings: Vec<(String, ClaimPath)>,
    pub role: Option<RoleSource>,
    pub allowed_roles: Vec<String>,
}

impl IdentityConfig {
    /// Checks `[identity]`: setting names, claim paths and the role switch.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        self.spec().map(|_| ())
    }

    pub(crate) fn spec(&self) -> Result<IdentitySpec, AuthConfigError> {
        let bad = |problem: String| AuthConfigError::invalid("[identity]", problem);
        let pairs: Vec<(String, String)> = match &self.settings {
            Some(list) => list.clone(),
            None => DEFAULT_SETTINGS
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
        };
        let mut seen = HashSet::new();
        let mut settings = Vec::with_capacity(pairs.len());
        for (name, path) in pairs {
            if name == "role" {
                return Err(bad(
                    "\"role\" cannot be a plain setting; use role_claim or role \
                     (with allowed_roles)"
                        .into(),
                ));
            }
            if !is_custom_setting_name(&name) {
                return Err(bad(format!(
                    "setting name {name:?} must be a custom setting such as app.user_id: \
                     two or more dot-separated words of letters, digits and _"
                )));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(bad(format!("setting {name:?} is listed twice")));
            }
            let path =
                ClaimPath::parse(&path).map_err(|why| bad(format!("setting {name:?}: {why}")))?;
            settings.push((name, path));
        }
        let role = match (&self.role_claim, &self.role) {
            (Some(_), Some(_)) => {
                return Err(bad("set either role_claim or role, not both".into()));
            }
            (Some(p), None) => {
                if self.allowed_roles.is_empty() {
                    return Err(bad(
                        "role_claim needs allowed_roles; otherwise a token could \
                         switch to any role, including a superuser"
                            .into(),
                    ));
                }
                let path = ClaimPath::parse(p).map_err(|why| bad(format!("role_claim: {why}")))?;
                Some(RoleSource::Claim(path))
            }
            (None, Some(r)) => {
                if r.is_empty() {
                    return Err(bad("role is empty".into()));
                }
                if !self.allowed_roles.is_empty() && !self.allowed_roles.contains(r) {
                    return Err(bad(format!("role {r:?} is not in allowed_roles")));
                }
                Some(RoleSource::Fixed(r.clone()))
            }
            (None, None) => None,
        };
        if self.allowed_roles.iter().any(|r| r.is_empty()) {
            return Err(bad("allowed_roles contains an empty string".into()));
        }
        Ok(IdentitySpec {
            settings,
            role,
            allowed_roles: self.allowed_roles.clone(),
        })
    }
}

/// Checks `[auth]`, `[identity]` and how they fit together, without network:
/// what `rowgate check` should call.
pub fn validate(auth: &AuthConfig, identity: &IdentityConfig) -> Result<(), AuthConfigError> {
    auth.validate()?;
    cross_check(&auth.issuer_specs()?, &identity.spec()?)
}

/// A `users` map whose roles are outside `allowed_roles` could never log
/// anyone in; say so at start instead of at every login.
pub(crate) fn cross_check(
    specs: &[IssuerSpec],
    ident: &IdentitySpec,
) -> Result<(), AuthConfigError> {
    if ident.allowed_roles.is_empty() {
        return Ok(());
    }
    for spec in specs.iter().filter(|s| s.user_policy == UserPolicy::Map) {
        for (user, role) in &spec.users {
            if !ident.allowed_roles.contains(role) {
                return Err(AuthConfigError::invalid(
                    format!("[auth] issuer {:?}", spec.issuer),
                    format!(
                        "users maps {user:?} to role {role:?}, which is not in [identity] \
                         allowed_roles"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `app.user_id`-style names only: Postgres accepts unknown settings only
/// when qualified with a dot, and refusing plain names keeps a config typo
/// from ever writing a real server setting (search_path, ...).
fn is_custom_setting_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 2
        && name.len() <= 63
        && parts.iter().all(|p| {
            let mut chars = p.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(toml_text: &str) -> Result<IdentitySpec, AuthConfigError> {
        #[derive(Deserialize)]
        struct W {
            identity: IdentityConfig,
        }
        toml::from_str::<W>(toml_text).unwrap().identity.spec()
    }

    #[test]
    fn identity_defaults_and_file_order() {
        let d = IdentityConfig::default().spec().unwrap();
        let names: Vec<_> = d.settings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["app.user_id", "request.jwt.claims", "app.org_id"]);
        let s = identity(
            "[identity]\nsettings = { \"z.last\" = \"sub\", \"a.first\" = \"o.id\", \"m.mid\" = \"*\" }\n",
        )
        .unwrap();
        let names: Vec<_> = s.settings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z.last", "a.first", "m.mid"]);
        let s =
            identity("[identity.settings]\n\"b.x\" = \"sub\"\n\"a.y\" = \"org_role\"\n").unwrap();
        let names: Vec<_> = s.settings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b.x", "a.y"]);
    }

    #[test]
    fn user_map_roles_must_be_allowed() {
        #[derive(Deserialize)]
        struct W {
            auth: AuthConfig,
            identity: IdentityConfig,
        }
        let w: W = toml::from_str(
            "[auth]\nissuer = \"a\"\nhs256_secret = \"s\"\nuser_policy = \"map\"\n\
             users = { app = \"app_user\", ops = \"postgres\" }\n\
             [identity]\nallowed_roles = [\"app_user\"]\n",
        )
        .unwrap();
        let e = validate(&w.auth, &w.identity).unwrap_err().to_string();
        assert!(e.contains("\"postgres\""), "{e}");
    }

    #[test]
    fn identity_mistakes() {
        let cases = [
            (
                "[identity]\nsettings = { search_path = \"sub\" }\n",
                "custom setting",
            ),
            (
                "[identity]\nsettings = { role = \"sub\" }\n",
                "cannot be a plain setting",
            ),
            ("[identity]\nrole_claim = \"r\"\n", "needs allowed_roles"),
            (
                "[identity]\nrole_claim = \"r\"\nrole = \"x\"\nallowed_roles=[\"x\"]\n",
                "not both",
            ),
            (
                "[identity]\nrole = \"x\"\nallowed_roles = [\"y\"]\n",
                "not in allowed_roles",
            ),
            ("[identity]\nsettings = { \"a.b\" = \"\" }\n", "empty"),
        ];
        for (text, want) in cases {
            let got = identity(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: got {got:?}");
        }
    }
}
