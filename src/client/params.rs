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

use crate::guard::{ModeSettings, SessionEffects, SessionOp, TxnModes, ISOLATION_LEVELS};
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

/// One client's parameters. Every client holds one, idle or not, so it is
/// kept small: a handful of settings in sorted vectors, and of what the
/// client was told only where it differs from the server.
#[derive(Debug, Default)]
pub struct ClientParams {
    /// Values from the startup packet (what `RESET ALL` returns to).
    startup: Settings,
    /// Values in force for the client now, by lower-cased name.
    current: Settings,
    /// ParameterStatus values the client was told, by canonical name,
    /// where they differ from the server's (see [`ClientParams::told`]).
    reported: Settings,
}

/// A few `name -> value` pairs, sorted by name: smaller than a `BTreeMap`
/// (whose every node holds room for eleven) for the one to five entries a
/// client usually has.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Settings(Vec<(String, String)>);

impl Settings {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }
    fn get(&self, name: &str) -> Option<&String> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }
    fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }
    fn insert(&mut self, name: String, value: String) {
        match self.find(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }
    fn remove(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.0.remove(i);
        }
    }
    fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// The server's value of a reported parameter.
fn server_value<'a>(server: &'a [(String, String)], name: &str) -> Option<&'a str> {
    server
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl ClientParams {
    /// Parameters from a StartupMessage (including `options=-c x=y`).
    pub fn from_startup(params: &[(String, String)]) -> ClientParams {
        let mut startup = Settings::default();
        for (k, v) in params {
            let k = k.to_ascii_lowercase();
            if k == "options" {
                for (name, value) in parse_options(v) {
                    let value = reported_value(&name, &value);
                    startup.insert(name.to_ascii_lowercase(), value);
                }
            } else if !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("_pq_.") {
                let v = reported_value(&k, v);
                startup.insert(k, v);
            }
        }
        // PostgreSQL reports the application_name a client gave, or an
        // empty one; never the pooled connection's own.
        if !startup.contains_key("application_name") {
            startup.insert("application_name".into(), String::new());
        }
        ClientParams {
            current: startup.clone(),
            startup,
            reported: Settings::default(),
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
            self.tell(name, &value, server);
            out.push((name.clone(), value));
        }
        out
    }

    /// Whether a ParameterStatus from the upstream is for the client. Those
    /// that echo what the client was already told, and, for settings rowgate
    /// re-applies in every transaction, the pooled connection's own default
    /// coming back at commit, are artefacts of pooling; anything else is a
    /// change the client made, forwarded in place (before its
    /// ReadyForQuery, as PostgreSQL sends it) and remembered. Returns the
    /// value to report, or None.
    ///
    /// `resetting`: the client's own `RESET` of this setting (or `RESET
    /// ALL`) is in flight, so the report is of that reset, which takes the
    /// client back to *its* startup value, not the pooled connection's.
    pub fn upstream_report(
        &mut self,
        name: &str,
        value: &str,
        server: &[(String, String)],
        resetting: bool,
    ) -> Option<String> {
        let key = name.to_ascii_lowercase();
        let value = match self.startup.get(&key) {
            Some(own) if resetting => own.clone(),
            _ => reported_value(name, value),
        };
        let value = value.as_str();
        if self.told(name, server) == Some(value) {
            return None;
        }
        let server_default = server_value(server, name);
        if !resetting && self.current.contains_key(&key) && server_default == Some(value) {
            return None;
        }
        let value = value.to_owned();
        self.tell(name, &value, server);
        Some(value)
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
                        let v = reported_value(n, &v);
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
            if self.told(name, server) != Some(value.as_str()) {
                let value = value.clone();
                self.tell(name, &value, server);
                owed.push((name.clone(), value));
            }
        }
        owed
    }

    /// What the client was last told of `name`: its own value where it
    /// differs from the server's, else the server's.
    fn told<'a>(&'a self, name: &str, server: &'a [(String, String)]) -> Option<&'a str> {
        self.reported
            .get(name)
            .map(String::as_str)
            .or_else(|| server_value(server, name))
    }

    /// Remembers that the client was told `value` for `name`.
    fn tell(&mut self, name: &str, value: &str, server: &[(String, String)]) {
        if server_value(server, name) == Some(value) {
            self.reported.remove(name);
        } else {
            self.reported.insert(name.to_owned(), value.to_owned());
        }
    }

    /// The settings to re-apply, in a stable order.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.current.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The ParameterStatus messages owed, before the ReadyForQuery that
    /// ends a transaction, for settings whose last change in it (`ops`)
    /// was the client's `RESET` or `RESET ALL`. The server sends none: on
    /// the pooled connection the value went back to where it was. Values
    /// the client `SET` are reported after the transaction, once known.
    pub fn report_resets(
        &mut self,
        fx: &SessionEffects,
        server: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut owed = Vec::new();
        for (name, server_value) in server {
            if !fx.resets(name) {
                continue;
            }
            let value = self
                .startup
                .get(&name.to_ascii_lowercase())
                .unwrap_or(server_value);
            if self.told(name, server) != Some(value.as_str()) {
                let value = value.clone();
                self.tell(name, &value, server);
                owed.push((name.clone(), value));
            }
        }
        owed
    }

    /// `SET TRANSACTION ...` for the client's session characteristics
    /// (`default_transaction_isolation`, `_read_only`, `_deferrable`: `SET
    /// SESSION CHARACTERISTICS`, JDBC's `setTransactionIsolation`) that the
    /// transaction's own statements (`explicit`) did not set; None when
    /// there are none.
    ///
    /// Re-applying those defaults transaction-locally, like every other
    /// setting, comes too late: a transaction takes its modes from them
    /// when it starts. The text is made of fixed words only, never of the
    /// client's value; a value PostgreSQL would not accept is left out.
    pub fn characteristics(&self, explicit: TxnModes) -> ModeSettings {
        let value = |name: &str| {
            self.current
                .get(name)
                .map(|v| v.trim().to_ascii_lowercase())
        };
        let flag = |name: &str, skip: bool| {
            (!skip)
                .then(|| value(name))
                .flatten()
                .and_then(|v| parse_bool(&v))
        };
        let isolation = (!explicit.isolation)
            .then(|| value("default_transaction_isolation"))
            .flatten()
            .and_then(|level| ISOLATION_LEVELS.iter().find(|l| l.0 == level))
            .map(|l| l.1);
        ModeSettings {
            isolation,
            read_only: flag("default_transaction_read_only", explicit.access),
            deferrable: flag("default_transaction_deferrable", explicit.deferrable),
        }
    }
}

/// A boolean setting's value as PostgreSQL's `parse_bool` reads it
/// (unambiguous prefixes of the words included).
fn parse_bool(v: &str) -> Option<bool> {
    let word = |w: &str, min: usize| v.len() >= min && w.starts_with(v);
    match v {
        "1" => Some(true),
        "0" => Some(false),
        _ if word("true", 1) || word("yes", 1) || word("on", 2) => Some(true),
        _ if word("false", 1) || word("no", 1) || word("off", 2) => Some(false),
        _ => None,
    }
}

/// An encoding's name as PostgreSQL reports it (`UTF8`, `LATIN1`,
/// `EUC_JP`, ...) for any spelling PostgreSQL accepts (`utf-8`, `Unicode`,
/// `iso-8859-1`, `euc-jp`, `win1252`); None for a name it does not know.
///
/// Drivers pick their text decoder from the `client_encoding` they are
/// told, by these names. The table is PostgreSQL's own
/// (`src/common/encnames.c`), which compares names lower-cased with
/// everything but letters and digits removed.
pub fn canonical_encoding(name: &str) -> Option<&'static str> {
    let key: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let found = match key.as_str() {
        "utf8" | "unicode" => "UTF8",
        "sqlascii" => "SQL_ASCII",
        "latin1" | "iso88591" => "LATIN1",
        "latin2" | "iso88592" => "LATIN2",
        "latin3" | "iso88593" => "LATIN3",
        "latin4" | "iso88594" => "LATIN4",
        "latin5" | "iso88599" => "LATIN5",
        "latin6" | "iso885910" => "LATIN6",
        "latin7" | "iso885913" => "LATIN7",
        "latin8" | "iso885914" => "LATIN8",
        "latin9" | "iso885915" => "LATIN9",
        "latin10" | "iso885916" => "LATIN10",
        "iso88595" => "ISO_8859_5",
        "iso88596" => "ISO_8859_6",
        "iso88597" => "ISO_8859_7",
        "iso88598" => "ISO_8859_8",
        "eucjp" => "EUC_JP",
        "euccn" => "EUC_CN",
        "euckr" => "EUC_KR",
        "euctw" => "EUC_TW",
        "eucjis2004" => "EUC_JIS_2004",
        "muleinternal" => "MULE_INTERNAL",
        "sjis" | "shiftjis" | "mskanji" | "win932" | "windows932" => "SJIS",
        "shiftjis2004" => "SHIFT_JIS_2004",
        "big5" | "win950" | "windows950" => "BIG5",
        "gbk" | "win936" | "windows936" => "GBK",
        "uhc" | "win949" | "windows949" => "UHC",
        "gb18030" => "GB18030",
        "johab" => "JOHAB",
        "koi8" | "koi8r" => "KOI8R",
        "koi8u" => "KOI8U",
        "alt" | "win866" | "windows866" => "WIN866",
        "win874" | "windows874" => "WIN874",
        "win" | "win1251" | "windows1251" => "WIN1251",
        "win1250" | "windows1250" => "WIN1250",
        "win1252" | "windows1252" => "WIN1252",
        "win1253" | "windows1253" => "WIN1253",
        "win1254" | "windows1254" => "WIN1254",
        "win1255" | "windows1255" => "WIN1255",
        "win1256" | "windows1256" => "WIN1256",
        "win1257" | "windows1257" => "WIN1257",
        "win1258" | "windows1258" | "abc" | "tcvn" | "tcvn5712" | "vscii" => "WIN1258",
        _ => return None,
    };
    Some(found)
}

/// A setting's value as PostgreSQL would report it in ParameterStatus:
/// `client_encoding` by its canonical name, everything else as it is.
fn reported_value(name: &str, value: &str) -> String {
    if name.eq_ignore_ascii_case("client_encoding") {
        if let Some(canonical) = canonical_encoding(value) {
            return canonical.to_owned();
        }
    }
    value.to_owned()
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

    #[test]
    fn encodings_are_named_as_postgresql_names_them() {
        for (spelling, canonical) in [
            ("UTF8", "UTF8"),
            ("utf-8", "UTF8"),
            ("Unicode", "UTF8"),
            ("latin1", "LATIN1"),
            ("ISO-8859-1", "LATIN1"),
            ("iso_8859_15", "LATIN9"),
            ("euc-jp", "EUC_JP"),
            ("EUC_JIS_2004", "EUC_JIS_2004"),
            ("Shift_JIS", "SJIS"),
            ("windows-1252", "WIN1252"),
            ("koi8-r", "KOI8R"),
            ("iso-8859-5", "ISO_8859_5"),
            ("sql_ascii", "SQL_ASCII"),
        ] {
            assert_eq!(canonical_encoding(spelling), Some(canonical), "{spelling}");
        }
        assert_eq!(canonical_encoding("klingon"), None);
        assert_eq!(canonical_encoding(""), None);
    }

    #[test]
    fn client_encoding_is_reported_canonically() {
        let server = s(&[("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY")]);
        // Same encoding as the server's, other spelling: nothing to keep.
        let mut p = ClientParams::from_startup(&s(&[("client_encoding", "utf-8")]));
        p.drop_server_defaults(&server);
        assert_eq!(
            p.initial_report(&server)[0],
            ("client_encoding".into(), "UTF8".into())
        );
        assert!(p.settings().all(|(k, _)| k != "client_encoding"));
        let mut p = ClientParams::from_startup(&s(&[("client_encoding", "euc-jp")]));
        p.drop_server_defaults(&server);
        assert_eq!(
            p.initial_report(&server)[0],
            ("client_encoding".into(), "EUC_JP".into())
        );
        // A report coming from the upstream in another spelling.
        assert_eq!(
            p.upstream_report("client_encoding", "latin1", &server, false),
            Some("LATIN1".into())
        );
        // An unknown name is left alone (PostgreSQL refuses it anyway).
        assert_eq!(reported_value("client_encoding", "klingon"), "klingon");
        assert_eq!(reported_value("DateStyle", "utf-8"), "utf-8");
    }

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
        let report = |p: &mut ClientParams, v: &str, resetting| {
            p.upstream_report("application_name", v, &server, resetting)
        };
        assert_eq!(report(&mut p, "psql", false), None);
        assert_eq!(report(&mut p, "rowgate", false), None);
        assert_eq!(report(&mut p, "mine", false).as_deref(), Some("mine"));
        assert_eq!(report(&mut p, "mine", false), None);
        // The client's RESET: the pooled connection's default comes back,
        // the client is told its own startup value.
        assert_eq!(report(&mut p, "rowgate", true).as_deref(), Some("psql"));
    }

    #[test]
    fn resets_are_reported_before_the_transaction_ends() {
        let server = s(&[("DateStyle", "ISO, MDY"), ("TimeZone", "UTC")]);
        let mut p = ClientParams::from_startup(&s(&[("TimeZone", "Asia/Tokyo")]));
        p.initial_report(&server);
        let captured = BTreeMap::from([
            ("datestyle".to_string(), Some("German, DMY".to_string())),
            ("timezone".to_string(), Some("UTC".to_string())),
        ]);
        let set_both = [
            SessionOp::Set("datestyle".into()),
            SessionOp::Set("timezone".into()),
        ];
        p.apply(&set_both, &captured, &server);
        // RESET ALL: back to the server's DateStyle and the client's own
        // startup TimeZone.
        let fx = |ops: Vec<SessionOp>| SessionEffects { ops };
        let owed = p.report_resets(&fx(vec![SessionOp::ResetAll]), &server);
        assert_eq!(
            owed,
            s(&[("DateStyle", "ISO, MDY"), ("TimeZone", "Asia/Tokyo")])
        );
        // A SET after the reset is reported later, once its value is known.
        let ops = fx(vec![
            SessionOp::ResetAll,
            SessionOp::Set("datestyle".into()),
        ]);
        assert_eq!(p.report_resets(&ops, &server), Vec::new());
    }

    #[test]
    fn array_literals_escape_quotes_and_backslashes() {
        assert_eq!(
            array_literal(["a", "b\"c", "d\\e", "{x,y}"]),
            r#"{"a","b\"c","d\\e","{x,y}"}"#
        );
        assert_eq!(array_literal([]), "{}");
    }

    #[test]
    fn session_characteristics_become_set_transaction() {
        let none = TxnModes::default();
        let mut p = ClientParams::from_startup(&s(&[(
            "options",
            "-c default_transaction_isolation=SERIALIZABLE -c default_transaction_read_only=on",
        )]));
        assert_eq!(
            p.characteristics(none).sql().as_deref(),
            Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY")
        );
        // What the transaction's own BEGIN set stays as it said.
        let isolation = TxnModes {
            isolation: true,
            ..none
        };
        assert_eq!(
            p.characteristics(isolation).sql().as_deref(),
            Some("SET TRANSACTION READ ONLY")
        );
        assert_eq!(p.characteristics(TxnModes::ALL).sql(), None);
        // Values are never copied into the text.
        let captured = [(
            "default_transaction_isolation".to_string(),
            Some("serializable'; drop table x; --".to_string()),
        )];
        p.apply(
            &[SessionOp::Set("default_transaction_isolation".into())],
            &captured.into_iter().collect(),
            &[],
        );
        assert_eq!(
            p.characteristics(none).sql().as_deref(),
            Some("SET TRANSACTION READ ONLY")
        );
        assert_eq!(ClientParams::default().characteristics(none).sql(), None);
        assert_eq!(parse_bool("of"), Some(false));
        assert_eq!(parse_bool("o"), None);
        assert_eq!(parse_bool("Y"), None); // callers lower-case first
    }
}
