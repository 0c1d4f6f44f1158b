//! A client's session parameters. PostgreSQL keeps `SET` values, startup
//! parameters and `options=-c x=y` with the *connection*; under transaction
//! pooling that connection is shared, so rowgate keeps them with the
//! *client* instead and re-applies them, transaction-locally, in every
//! transaction (in the same statement as the identity). The pooled
//! connection's own session state never changes, and nothing a client sets
//! reaches another client.
//!
//! rowgate also owns the ParameterStatus messages a client sees: it reports
//! its model of the client's values, not the pooled connection's.

use crate::guard::SessionOp;
use std::collections::BTreeMap;

/// Startup parameters that are not settings (or that rowgate must not let
/// a client set this way).
const NOT_SETTINGS: &[&str] = &[
    "user",
    "database",
    "replication",
    "options",
    "role",
    "session_authorization",
];

/// One client's parameters.
#[derive(Debug, Default)]
pub struct ClientParams {
    /// Values from the startup packet (what `RESET ALL` returns to).
    startup: BTreeMap<String, String>,
    /// Values in force for the client now, by lower-cased name.
    current: BTreeMap<String, String>,
    /// ParameterStatus values the client was told, by canonical name.
    reported: BTreeMap<String, String>,
}

impl ClientParams {
    /// Parameters from a StartupMessage (including `options=-c x=y`).
    pub fn from_startup(params: &[(String, String)]) -> ClientParams {
        let mut startup = BTreeMap::new();
        for (k, v) in params {
            let k = k.to_ascii_lowercase();
            if k == "options" {
                for (name, value) in parse_options(v) {
                    startup.insert(name.to_ascii_lowercase(), value);
                }
            } else if !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("_pq_.") {
                startup.insert(k, v.clone());
            }
        }
        // PostgreSQL reports the application_name a client gave, or an
        // empty one; never the pooled connection's own.
        startup.entry("application_name".into()).or_default();
        ClientParams {
            current: startup.clone(),
            startup,
            reported: BTreeMap::new(),
        }
    }

    /// Drops values equal to the upstream connection's own (nothing to
    /// re-apply for them), given the server's reported parameters.
    pub fn drop_server_defaults(&mut self, server: &[(String, String)]) {
        for (name, value) in server {
            let key = name.to_ascii_lowercase();
            if self.startup.get(&key) == Some(value) && key != "application_name" {
                self.startup.remove(&key);
                self.current.remove(&key);
            }
        }
    }

    /// The ParameterStatus values to send at startup: the server's, with
    /// the client's own values where it set them. Remembers them.
    pub fn initial_report(&mut self, server: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(server.len());
        for (name, server_value) in server {
            let value = self
                .current
                .get(&name.to_ascii_lowercase())
                .unwrap_or(server_value)
                .clone();
            self.reported.insert(name.clone(), value.clone());
            out.push((name.clone(), value));
        }
        out
    }

    /// Whether a ParameterStatus from the upstream is for the client. Those
    /// that echo what the client was already told, and, for settings rowgate
    /// re-applies in every transaction, the pooled connection's own default
    /// coming back at commit, are artefacts of pooling; anything else is a
    /// change the client made, forwarded in place (before its
    /// ReadyForQuery, as PostgreSQL sends it) and remembered.
    pub fn upstream_report(
        &mut self,
        name: &str,
        value: &str,
        server: &[(String, String)],
    ) -> bool {
        if self.reported.get(name).map(String::as_str) == Some(value) {
            return false;
        }
        let managed = self.current.contains_key(&name.to_ascii_lowercase());
        let server_default = server
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        if managed && server_default == Some(value) {
            return false;
        }
        self.reported.insert(name.to_owned(), value.to_owned());
        true
    }

    /// Applies what a committed transaction changed at session level, in
    /// order: RESETs go back to the client's startup values (not the pooled
    /// connection's), and a SET takes the value the server settled on
    /// (`captured`: name → value after the transaction, None when the
    /// setting does not exist). Returns the ParameterStatus messages the
    /// client is owed, given the server's defaults.
    pub fn apply(
        &mut self,
        ops: &[SessionOp],
        captured: &BTreeMap<String, Option<String>>,
        server: &[(String, String)],
    ) -> Vec<(String, String)> {
        for op in ops {
            match op {
                SessionOp::ResetAll => self.current = self.startup.clone(),
                SessionOp::Reset(n) => match self.startup.get(n) {
                    Some(v) => {
                        self.current.insert(n.clone(), v.clone());
                    }
                    None => {
                        self.current.remove(n);
                    }
                },
                SessionOp::Set(n) => match captured.get(n).cloned().flatten() {
                    Some(v) => {
                        self.current.insert(n.clone(), v);
                    }
                    None => {
                        self.current.remove(n);
                    }
                },
                SessionOp::Unknown => {}
            }
        }
        let mut owed = Vec::new();
        for (name, server_value) in server {
            let value = self
                .current
                .get(&name.to_ascii_lowercase())
                .unwrap_or(server_value);
            if self.reported.get(name) != Some(value) {
                self.reported.insert(name.clone(), value.clone());
                owed.push((name.clone(), value.clone()));
            }
        }
        owed
    }

    /// The settings to re-apply, in a stable order.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.current.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Parses libpq's `options` (`-c name=value`, `-cname=value`,
/// `--name=value`; backslash escapes a space).
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let pair = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            w.strip_prefix("--").map(str::to_string)
        };
        if let Some((k, v)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
    out
}

/// Encodes strings as a PostgreSQL text-array literal (`{"a","b\"c"}`),
/// for binding as a `text[]` parameter.
pub fn array_literal<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_like_the_server() {
        assert_eq!(
            parse_options(
                "-c search_path=a,b -cstatement_timeout=5s --work-mem=4MB -c x=with\\ space"
            ),
            s(&[
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "4MB"),
                ("x", "with space")
            ])
        );
    }

    #[test]
    fn startup_values_are_kept_and_reported() {
        let server = s(&[
            ("DateStyle", "ISO, MDY"),
            ("application_name", "rowgate"),
            ("client_encoding", "UTF8"),
        ]);
        let mut p = ClientParams::from_startup(&s(&[
            ("user", "u"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("options", "-c search_path=app"),
        ]));
        p.drop_server_defaults(&server);
        let got: Vec<_> = p.settings().collect();
        assert_eq!(got, [("application_name", "psql"), ("search_path", "app")]);
        let report = p.initial_report(&server);
        assert!(report.contains(&("application_name".into(), "psql".into())));
        // A session SET of DateStyle, then RESET ALL.
        let captured = BTreeMap::from([("datestyle".to_string(), Some("German, DMY".to_string()))]);
        let owed = p.apply(&[SessionOp::Set("datestyle".into())], &captured, &server);
        assert_eq!(owed, s(&[("DateStyle", "German, DMY")]));
        let owed = p.apply(&[SessionOp::ResetAll], &BTreeMap::new(), &server);
        assert_eq!(owed, s(&[("DateStyle", "ISO, MDY")]));
        assert_eq!(p.settings().count(), 2);
        // RESET of a startup setting goes back to the client's value.
        let captured = BTreeMap::from([("search_path".to_string(), Some("x".to_string()))]);
        p.apply(
            &[
                SessionOp::Set("search_path".into()),
                SessionOp::Reset("search_path".into()),
            ],
            &captured,
            &server,
        );
        assert!(p.settings().any(|kv| kv == ("search_path", "app")));
        // Re-applying psql's name echoes it; the revert at commit is the
        // pooled connection's own; a client's SET passes.
        assert!(!p.upstream_report("application_name", "psql", &server));
        assert!(!p.upstream_report("application_name", "rowgate", &server));
        assert!(p.upstream_report("application_name", "mine", &server));
        assert!(!p.upstream_report("application_name", "mine", &server));
    }

    #[test]
    fn array_literals_escape_quotes_and_backslashes() {
        assert_eq!(
            array_literal(["a", "b\"c", "d\\e", "{x,y}"]),
            r#"{"a","b\"c","d\\e","{x,y}"}"#
        );
        assert_eq!(array_literal([]), "{}");
    }
}
