//! Statements whose verdict depends on their bind parameters:
//! `select set_config($1, $2, false)`, `set_config('client_encoding', $1,
//! false)`. At Parse the guard cannot know the setting or the encoding, so
//! rather than refuse them outright it judges them at Bind, when the values
//! are known: the same rules read the statement with each parameter written
//! in as the string constant it is bound to. Protected names and unsafe
//! encodings are refused there; everything else runs.

use super::{Findings, Guard, GuardViolation};

/// Rules whose refusal may be only for want of a parameter's value.
const PARAMETER_RULES: &[&str] = &["set_config", "client_encoding"];

/// Stands in for every parameter at Parse: a setting name no rule is
/// about and an encoding that is safe, so what is left is what the
/// statement holds whatever it is bound to.
const NEUTRAL: &str = "rowgate_bound_value";

impl Guard {
    /// Whether a Parse the guard would refuse (`found`) is refused only
    /// because of what its parameters may be bound to: then it is let
    /// through, and each Bind of it goes through [`Guard::check_bound`].
    pub fn defers_to_bind(&self, sql: &[u8], found: &Findings) -> bool {
        let Some(v) = &found.violation else {
            return false;
        };
        if !PARAMETER_RULES.contains(&v.rule) {
            return false;
        }
        let sql = String::from_utf8_lossy(sql);
        let Some(neutral) = substitute(&sql, |_| Some(NEUTRAL.as_bytes())) else {
            return false;
        };
        neutral != sql && self.inspect_parsed(neutral.as_bytes()).violation.is_none()
    }

    /// Judges a deferred statement with its bound values (`params[n]` is
    /// `$n+1`; None for NULL), as the server will run it.
    pub fn check_bound(&self, sql: &[u8], params: &[Option<&[u8]>]) -> Result<(), GuardViolation> {
        let sql = String::from_utf8_lossy(sql);
        let bound = substitute(&sql, |n| params.get(n.checked_sub(1)?).copied().flatten());
        match bound {
            Some(text) => self.check_parsed(text.as_bytes()),
            None => Err(GuardViolation {
                rule: "set_config",
                message: "rowgate cannot read this statement's bind parameters, so it cannot \
                          check which setting it changes"
                    .into(),
            }),
        }
    }
}

/// `sql` with every parameter (`$n`, as PostgreSQL's scanner finds them,
/// never inside strings or comments) replaced by the string constant
/// `value(n)` gives (NULL where it gives None). None if the text cannot
/// be scanned.
fn substitute<'a>(sql: &str, value: impl Fn(usize) -> Option<&'a [u8]>) -> Option<String> {
    use pg_query::protobuf::Token;
    let scanned = pg_query::scan(sql).ok()?;
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for t in &scanned.tokens {
        if Token::try_from(t.token) != Ok(Token::Param) {
            continue;
        }
        let (start, end) = (t.start as usize, t.end as usize);
        let n: usize = sql.get(start + 1..end)?.parse().ok()?;
        out.push_str(sql.get(at..start)?);
        match value(n) {
            Some(v) => {
                out.push('\'');
                out.push_str(&String::from_utf8_lossy(v).replace('\'', "''"));
                out.push('\'');
            }
            None => out.push_str("NULL"),
        }
        at = end;
    }
    out.push_str(sql.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardConfig;

    fn guard() -> Guard {
        Guard::new(&GuardConfig::default()).expect("default guard")
    }

    #[test]
    fn parameters_are_replaced_outside_strings_only() {
        let s = substitute("select set_config($1, '$2', $2) -- $1", |n| {
            Some(if n == 1 { b"a'b" } else { b"x" })
        });
        assert_eq!(
            s.as_deref(),
            Some("select set_config('a''b', '$2', 'x') -- $1")
        );
    }

    #[test]
    fn set_config_with_bound_names_is_judged_by_its_values() {
        let g = guard();
        for sql in [
            "select set_config($1, $2, false)",
            "select set_config('client_encoding', $1, false)",
        ] {
            let found = g.inspect(sql.as_bytes());
            assert!(found.violation.is_some(), "{sql} is refused at Parse today");
            assert!(g.defers_to_bind(sql.as_bytes(), &found), "{sql}");
        }
        let any = b"select set_config($1, $2, false)";
        let ok = |name: &str, value: &str| {
            g.check_bound(any, &[Some(name.as_bytes()), Some(value.as_bytes())])
                .is_ok()
        };
        assert!(ok("myapp.theme", "dark"));
        assert!(ok("client_encoding", "LATIN1"));
        assert!(!ok("app.user_id", "victim"));
        assert!(!ok("request.jwt.claims", "{}"));
        assert!(!ok("role", "postgres"));
        assert!(!ok("client_encoding", "SJIS"));
        assert!(!ok("App.User_Id", "victim"));
        let enc = b"select set_config('client_encoding', $1, false)";
        assert!(g.check_bound(enc, &[Some(b"UTF8")]).is_ok());
        assert!(g.check_bound(enc, &[Some(b"big5")]).is_err());
    }

    #[test]
    fn a_refusal_that_does_not_depend_on_parameters_is_not_deferred() {
        let g = guard();
        for sql in [
            "select set_config($1, $2, false); set app.user_id = 'x'",
            "select set_config('app.user_id', $1, false)",
            "select set_config(current_user || 'x', $1, false)",
        ] {
            let found = g.inspect(sql.as_bytes());
            assert!(found.violation.is_some(), "{sql}");
            assert!(!g.defers_to_bind(sql.as_bytes(), &found), "{sql}");
        }
    }
}
