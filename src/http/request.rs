//! Reading a `POST /sql` request: the Neon headers, the connection string
//! and the JSON body, into what the pipe client sends. Every mistake is an
//! [`RequestError`] that says what to fix.

use axum::http::HeaderMap;
use serde_json::Value;

use super::json::RowFormat;

/// A request that cannot be run, with the SQLSTATE the answer carries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct RequestError {
    /// SQLSTATE (08P01 for a malformed request, 28P01 without a token).
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn bad(message: impl Into<String>) -> RequestError {
    RequestError {
        code: "08P01",
        message: message.into(),
    }
}

/// One statement of the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// SQL text, one statement (`$1`, `$2` placeholders).
    pub sql: String,
    /// Parameters as PostgreSQL text, `None` for NULL.
    pub params: Vec<Option<String>>,
    /// `arrayMode` of this statement, overriding `Neon-Array-Mode`.
    pub array_mode: Option<bool>,
}

/// `{query, params}` or `{queries: [...]}`.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// One statement, in a transaction of its own.
    Single(Statement),
    /// Several, in one transaction.
    Batch(Vec<Statement>),
}

/// Who logs in, from `Neon-Connection-String` and `Authorization`.
#[derive(Debug, PartialEq, Eq)]
pub struct Login {
    /// The connection string's user name.
    pub user: String,
    /// Its database name (routed as on the TCP listener).
    pub database: String,
    /// Its `application_name`, if any.
    pub application_name: Option<String>,
    /// The bearer token, else the connection string's password.
    pub token: String,
}

/// The transaction modes of a batch (`Neon-Batch-*` headers).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchModes {
    /// `SERIALIZABLE`, `REPEATABLE READ`, ... as SQL words.
    pub isolation: Option<&'static str>,
    /// `Neon-Batch-Read-Only: true`.
    pub read_only: bool,
    /// `Neon-Batch-Deferrable: true`.
    pub deferrable: bool,
}

impl BatchModes {
    /// The BEGIN that opens the batch's transaction. Only fixed words go
    /// into it, never header text.
    pub fn begin(&self) -> String {
        let mut sql = String::from("BEGIN");
        if let Some(level) = self.isolation {
            sql.push_str(" ISOLATION LEVEL ");
            sql.push_str(level);
        }
        if self.read_only {
            sql.push_str(" READ ONLY");
        }
        if self.deferrable {
            sql.push_str(" DEFERRABLE");
        }
        sql
    }
}

/// A whole request, read.
#[derive(Debug, PartialEq, Eq)]
pub struct SqlRequest {
    /// Who.
    pub login: Login,
    /// Default row format (per-statement `arrayMode` may override).
    pub format: RowFormat,
    /// Batch transaction modes (ignored for a single statement).
    pub modes: BatchModes,
    /// What to run.
    pub body: Body,
}

/// Neon counts a boolean header only when it is exactly `true`.
fn flag(headers: &HeaderMap, name: &str) -> bool {
    headers.get(name).is_some_and(|v| v.as_bytes() == b"true")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RequestError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| bad(format!("the {name} header is not valid text"))),
    }
}

/// Reads headers and body.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<SqlRequest, RequestError> {
    let login = login(headers)?;
    let format = RowFormat {
        array_mode: flag(headers, "neon-array-mode"),
        raw_text: flag(headers, "neon-raw-text-output"),
    };
    let isolation = match header(headers, "neon-batch-isolation-level")? {
        None => None,
        Some("Serializable") => Some("SERIALIZABLE"),
        Some("RepeatableRead") => Some("REPEATABLE READ"),
        Some("ReadCommitted") => Some("READ COMMITTED"),
        Some("ReadUncommitted") => Some("READ UNCOMMITTED"),
        Some(other) => {
            return Err(bad(format!(
                "invalid Neon-Batch-Isolation-Level {other:?}: use Serializable, RepeatableRead, ReadCommitted or ReadUncommitted"
            )))
        }
    };
    let modes = BatchModes {
        isolation,
        read_only: flag(headers, "neon-batch-read-only"),
        deferrable: flag(headers, "neon-batch-deferrable"),
    };
    Ok(SqlRequest {
        login,
        format,
        modes,
        body: parse_body(body)?,
    })
}

fn login(headers: &HeaderMap) -> Result<Login, RequestError> {
    let conn = header(headers, "neon-connection-string")?.ok_or_else(|| {
        bad("missing Neon-Connection-String header: send postgresql://USER@HOST/DBNAME (neon() does)")
    })?;
    let url = url::Url::parse(conn)
        .ok()
        .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
        .ok_or_else(|| {
            // The string may hold a password: never echo it.
            bad("Neon-Connection-String is not a postgresql:// URL")
        })?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(url.username());
    let database = decode(url.path().trim_start_matches('/'));
    if user.is_empty() || database.is_empty() {
        return Err(bad(
            "Neon-Connection-String needs a user and a database: postgresql://USER@HOST/DBNAME",
        ));
    }
    let application_name = url
        .query_pairs()
        .find(|(k, _)| k == "application_name")
        .map(|(_, v)| v.into_owned());
    let bearer = match header(headers, "authorization")? {
        None => None,
        Some(v) => match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(token.trim().to_owned())
            }
            _ => {
                return Err(RequestError {
                    code: "28P01",
                    message: "the Authorization header must be \"Bearer <token>\"".into(),
                })
            }
        },
    };
    let token = bearer
        .or_else(|| url.password().map(decode))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RequestError {
            code: "28P01",
            message: "no token: send Authorization: Bearer <token> (neon(url, { authToken })) or put the token in the connection string as the password".into(),
        })?;
    Ok(Login {
        user,
        database,
        application_name,
        token,
    })
}

fn parse_body(body: &[u8]) -> Result<Body, RequestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(bad(
            "the request body must be a JSON object with \"query\" or \"queries\"",
        ));
    };
    if let Some(queries) = obj.get("queries") {
        let Value::Array(list) = queries else {
            return Err(bad(
                "\"queries\" must be an array of {query, params} objects",
            ));
        };
        return list
            .iter()
            .enumerate()
            .map(|(i, q)| statement(q).map_err(|e| bad(format!("queries[{i}]: {}", e.message))))
            .collect::<Result<_, _>>()
            .map(Body::Batch);
    }
    statement(&value).map(Body::Single)
}

fn statement(v: &Value) -> Result<Statement, RequestError> {
    let sql = match v.get("query") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("\"query\" must be a string")),
        None => {
            return Err(bad(
                "the request body needs \"query\" (or \"queries\" for a batch)",
            ))
        }
    };
    let params = match v.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ps)) => ps.iter().map(param_text).collect(),
        Some(_) => return Err(bad("\"params\" must be an array")),
    };
    let array_mode = match v.get("arrayMode") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad("\"arrayMode\" must be true or false")),
    };
    Ok(Statement {
        sql,
        params,
        array_mode,
    })
}

/// A JSON parameter as PostgreSQL text, as Neon's proxy converts it: null
/// is NULL, a string is itself, numbers, booleans and objects are their
/// JSON text, an array is a PostgreSQL array literal.
pub fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(array_literal(items)),
        other => Some(other.to_string()),
    }
}

fn array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&array_literal(inner)),
            Value::String(s) => quote_element(&mut out, s),
            Value::Object(_) => quote_element(&mut out, &item.to_string()),
            Value::Bool(_) | Value::Number(_) => out.push_str(&item.to_string()),
        }
    }
    out.push('}');
    out
}

/// Quoted, so commas, braces, spaces and the word NULL stay data.
fn quote_element(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const CONN: (&str, &str) = (
        "neon-connection-string",
        "postgresql://authenticated@db.example/app?application_name=pkg%3Anpm",
    );

    #[test]
    fn a_driver_request_reads_whole() {
        let h = headers(&[
            CONN,
            ("authorization", "Bearer eyJ.tok.en"),
            ("neon-array-mode", "true"),
            ("neon-raw-text-output", "true"),
        ]);
        let r = parse(&h, br#"{"query":"select $1::int, $2","params":["1",null]}"#).unwrap();
        assert_eq!(
            r.login,
            Login {
                user: "authenticated".into(),
                database: "app".into(),
                application_name: Some("pkg:npm".into()),
                token: "eyJ.tok.en".into(),
            }
        );
        assert_eq!(
            r.format,
            RowFormat {
                array_mode: true,
                raw_text: true
            }
        );
        assert_eq!(
            r.body,
            Body::Single(Statement {
                sql: "select $1::int, $2".into(),
                params: vec![Some("1".into()), None],
                array_mode: None,
            })
        );
    }

    #[test]
    fn the_password_is_the_token_without_a_bearer() {
        let h = headers(&[("neon-connection-string", "postgres://alice:eyJ%2Ea@h/app")]);
        assert_eq!(
            parse(&h, br#"{"query":"select 1"}"#).unwrap().login.token,
            "eyJ.a"
        );
        let h = headers(&[("neon-connection-string", "postgres://alice@h/app")]);
        let err = parse(&h, br#"{"query":"select 1"}"#).unwrap_err();
        assert_eq!(err.code, "28P01");
        assert!(err.message.contains("no token"), "{err}");
    }

    #[test]
    fn malformed_requests_are_explained() {
        let ok = headers(&[CONN, ("authorization", "Bearer t")]);
        for (h, body, says) in [
            (
                HeaderMap::new(),
                &br#"{"query":"x"}"#[..],
                "missing Neon-Connection-String",
            ),
            (
                headers(&[("neon-connection-string", "mysql://u:p@h/d")]),
                br#"{}"#,
                "not a postgresql:// URL",
            ),
            (
                headers(&[("neon-connection-string", "postgres://h")]),
                br#"{}"#,
                "needs a user and a database",
            ),
            (ok.clone(), b"{", "not valid JSON"),
            (ok.clone(), b"[]", "must be a JSON object"),
            (ok.clone(), br#"{"sql":"x"}"#, "needs \"query\""),
            (
                ok.clone(),
                br#"{"query":"x","params":1}"#,
                "\"params\" must be an array",
            ),
            (
                ok.clone(),
                br#"{"queries":[{"query":1}]}"#,
                "queries[0]: \"query\" must be a string",
            ),
        ] {
            let err = parse(&h, body).unwrap_err();
            assert_eq!(err.code, "08P01");
            assert!(err.message.contains(says), "{err} should say {says}");
        }
        let basic = headers(&[CONN, ("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(
            parse(&basic, br#"{"query":"x"}"#).unwrap_err().code,
            "28P01"
        );
    }

    #[test]
    fn connection_string_passwords_never_appear_in_errors() {
        let h = headers(&[("neon-connection-string", "mysql://u:secret-token@h/d")]);
        let err = parse(&h, b"{}").unwrap_err();
        assert!(!err.message.contains("secret-token"), "{err}");
    }

    #[test]
    fn batches_and_their_modes() {
        let h = headers(&[
            CONN,
            ("authorization", "Bearer t"),
            ("neon-batch-isolation-level", "RepeatableRead"),
            ("neon-batch-read-only", "true"),
            ("neon-batch-deferrable", "false"),
        ]);
        let r = parse(&h, br#"{"queries":[{"query":"select 1","params":[]},{"query":"select 2","arrayMode":false}]}"#).unwrap();
        assert!(
            matches!(&r.body, Body::Batch(qs) if qs.len() == 2 && qs[1].array_mode == Some(false))
        );
        assert_eq!(
            r.modes.begin(),
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        );
        assert_eq!(BatchModes::default().begin(), "BEGIN");
        let h = headers(&[
            CONN,
            ("authorization", "Bearer t"),
            ("neon-batch-isolation-level", "Chaos; DROP TABLE x"),
        ]);
        let err = parse(&h, br#"{"queries":[]}"#).unwrap_err();
        assert!(err.message.contains("Neon-Batch-Isolation-Level"), "{err}");
    }

    #[test]
    fn parameters_convert_as_neons_proxy_does() {
        assert_eq!(param_text(&json!(null)), None);
        assert_eq!(param_text(&json!("a,b")), Some("a,b".into()));
        assert_eq!(param_text(&json!(1.5)), Some("1.5".into()));
        assert_eq!(param_text(&json!(true)), Some("true".into()));
        assert_eq!(param_text(&json!({"k": [1]})), Some(r#"{"k":[1]}"#.into()));
        assert_eq!(
            param_text(&json!([1, null, "x y", "q\"\\", [true], {"a": 1}])),
            Some(r#"{1,NULL,"x y","q\"\\",{true},"{\"a\":1}"}"#.into())
        );
    }
}
