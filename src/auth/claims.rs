//! Reading claims out of a verified payload: typed getters that never panic
//! on hostile JSON, the time and audience checks, and claim paths for
//! `[identity]` settings.

use serde_json::{Map, Value};

use super::error::{quoted, AuthError};

/// A claim path from `[identity]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClaimPath {
    /// `"*"`: the whole claims object as JSON.
    Whole,
    /// `"org_id"`: Clerk v2 `o.id`, falling back to v1 flat `org_id`.
    OrgId,
    /// `"org_role"`: `o.rol`, falling back to `org_role`.
    OrgRole,
    /// `"org_slug"`: `o.slg`, falling back to `org_slug`.
    OrgSlug,
    /// A top-level claim named exactly `raw` (namespaced claims such as
    /// `https://example.com/roles` contain dots), else the dotted walk.
    Path { raw: String, segments: Vec<String> },
}

impl ClaimPath {
    /// Parses `"sub"`, `"o.id"`, `"*"`, `"org_id"`, ...
    pub(crate) fn parse(s: &str) -> Result<ClaimPath, String> {
        match s {
            "" => Err("claim path is empty".into()),
            "*" => Ok(ClaimPath::Whole),
            "org_id" => Ok(ClaimPath::OrgId),
            "org_role" => Ok(ClaimPath::OrgRole),
            "org_slug" => Ok(ClaimPath::OrgSlug),
            _ => {
                let segments: Vec<String> = s.split('.').map(str::to_owned).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(format!("claim path {s:?} has an empty segment"));
                }
                Ok(ClaimPath::Path {
                    raw: s.to_owned(),
                    segments,
                })
            }
        }
    }

    /// The claim value at this path, if any (`Whole` has no single value).
    pub(crate) fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let org = |v2: &str, v1: &str| -> Option<&'a Value> {
            claims
                .get("o")
                .and_then(|o| o.get(v2))
                .filter(|v| !v.is_null())
                .or_else(|| claims.get(v1))
        };
        match self {
            ClaimPath::Whole => None,
            ClaimPath::OrgId => org("id", "org_id"),
            ClaimPath::OrgRole => org("rol", "org_role"),
            ClaimPath::OrgSlug => org("slg", "org_slug"),
            ClaimPath::Path { raw, segments } => claims.get(raw.as_str()).or_else(|| {
                let (first, rest) = segments.split_first()?;
                let mut v = claims.get(first.as_str())?;
                for seg in rest {
                    v = v.as_object()?.get(seg.as_str())?;
                }
                Some(v)
            }),
        }
    }

    /// The setting value: strings as they are, absent or null as `""`,
    /// anything else as JSON text.
    pub(crate) fn render(&self, claims: &Map<String, Value>) -> String {
        match self {
            ClaimPath::Whole => Value::Object(claims.clone()).to_string(),
            _ => match self.lookup(claims) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            },
        }
    }
}

/// A string claim: `Ok(None)` when absent, an error when of another type.
pub(crate) fn str_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::BadClaim {
            claim: name.into(),
            why: "must be a string",
        }),
    }
}

/// A NumericDate claim (RFC 7519: seconds, possibly fractional) as whole
/// unix seconds. Negative values clamp to 0 and huge ones to `u64::MAX`, so
/// no arithmetic on them can overflow.
pub(crate) fn date_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, AuthError> {
    let bad = || AuthError::BadClaim {
        claim: name.into(),
        why: "must be a number of seconds since 1970",
    };
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                Ok(Some(0))
            } else {
                let f = n.as_f64().ok_or_else(bad)?;
                if !f.is_finite() {
                    return Err(bad());
                }
                // `as` saturates for floats: negative -> 0, huge -> u64::MAX.
                Ok(Some(f as u64))
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Checks `aud` (a string or an array of strings) against `expected`.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    expected: &[String],
) -> Result<(), AuthError> {
    if expected.is_empty() {
        return Ok(());
    }
    let fail = |got: String| AuthError::BadAudience {
        got,
        expected: format!("{expected:?}"),
    };
    match claims.get("aud") {
        None => Err(fail("(none)".into())),
        Some(Value::String(a)) => {
            if expected.iter().any(|e| e == a) {
                Ok(())
            } else {
                Err(fail(quoted(a)))
            }
        }
        Some(Value::Array(list)) => {
            let found = list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| expected.iter().any(|e| e == a));
            if found {
                Ok(())
            } else {
                let shown: Vec<&str> = list.iter().filter_map(Value::as_str).take(4).collect();
                Err(fail(quoted(&shown.join(", "))))
            }
        }
        Some(_) => Err(fail("(not a string or list)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test claims are objects"),
        }
    }

    #[test]
    fn org_virtual_paths_prefer_v2() {
        let v2 =
            obj(json!({"o": {"id": "org_2", "rol": "admin", "slg": "acme"}, "org_id": "org_1"}));
        assert_eq!(ClaimPath::OrgId.render(&v2), "org_2");
        assert_eq!(ClaimPath::OrgRole.render(&v2), "admin");
        assert_eq!(ClaimPath::OrgSlug.render(&v2), "acme");
        let v1 = obj(json!({"org_id": "org_1", "org_role": "org:admin"}));
        assert_eq!(ClaimPath::OrgId.render(&v1), "org_1");
        assert_eq!(ClaimPath::OrgRole.render(&v1), "org:admin");
        assert_eq!(ClaimPath::OrgSlug.render(&v1), "");
    }

    #[test]
    fn dotted_and_namespaced_paths_and_rendering() {
        let c = obj(json!({
            "a": {"b": {"c": 7}}, "https://x.io/roles": ["r1"], "n": null, "s": "plain"
        }));
        let p = |s: &str| ClaimPath::parse(s).unwrap();
        assert_eq!(p("a.b.c").render(&c), "7");
        assert_eq!(p("a.b").render(&c), "{\"c\":7}");
        assert_eq!(p("https://x.io/roles").render(&c), "[\"r1\"]");
        assert_eq!(p("n").render(&c), "");
        assert_eq!(p("s").render(&c), "plain");
        assert_eq!(p("missing.deep").render(&c), "");
        assert_eq!(p("s.deeper").render(&c), "");
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(p("*").render(&c).starts_with('{'));
    }

    #[test]
    fn dates_never_overflow() {
        let c = obj(json!({"a": 1.5, "b": -3, "c": 1e300, "d": "x", "e": 18446744073709551615u64}));
        assert_eq!(date_claim(&c, "a").unwrap(), Some(1));
        assert_eq!(date_claim(&c, "b").unwrap(), Some(0));
        assert_eq!(date_claim(&c, "c").unwrap(), Some(u64::MAX));
        assert!(date_claim(&c, "d").is_err());
        assert_eq!(date_claim(&c, "e").unwrap(), Some(u64::MAX));
        assert_eq!(date_claim(&c, "zz").unwrap(), None);
    }

    #[test]
    fn audience_forms() {
        let want = vec!["api".to_string()];
        assert!(check_audience(&obj(json!({"aud": "api"})), &want).is_ok());
        assert!(check_audience(&obj(json!({"aud": ["x", "api"]})), &want).is_ok());
        assert!(check_audience(&obj(json!({"aud": ["x"]})), &want).is_err());
        assert!(check_audience(&obj(json!({"aud": 5})), &want).is_err());
        assert!(check_audience(&obj(json!({})), &want).is_err());
        assert!(check_audience(&obj(json!({})), &[]).is_ok());
    }
}
