//! The guard's rules, applied to PostgreSQL's own parse tree (libpg_query
//! through the `pg_query` crate).
//!
//! The tree is walked generically (as the serde form of pg_query's protobuf
//! types), so every node of every statement is visited, however deeply it
//! is nested (CTEs, subqueries, function arguments, `CREATE RULE` actions,
//! `PREPARE ... AS`, `EXPLAIN`, `COPY (...)`, `BEGIN ATOMIC` bodies, ...),
//! including node types added by future PostgreSQL versions.

use super::precheck::PreCheck;
use super::state;
use super::tree::Tree;
use super::{Findings, GuardViolation};
use std::collections::HashSet;

/// Settings whose value is the identity (besides the configured ones).
pub const IDENTITY_SETTINGS: &[&str] = &[
    "app.user_id",
    "request.jwt.claims",
    "app.org_id",
    super::Sealer::SETTING,
];

/// Settings that switch who the database thinks the user is.
pub const ROLE_SETTINGS: &[&str] = &["role", "session_authorization"];

/// Functions that run SQL text they receive (or build), which the guard
/// cannot see: refused in the strict profile. `dblink` stands for every
/// function whose name starts with it (`dblink_exec`, `dblink_open`, ...).
pub const CODE_FUNCTIONS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "xpath_table",
    "crosstab",
    "crosstab2",
    "crosstab3",
    "crosstab4",
    "connectby",
    "dblink",
];

/// Names of statements and portals rowgate keeps on pooled connections.
const RESERVED_NAME_PREFIXES: &[&str] = &["rowgate", "rg_"];

/// Client encodings in which a multi-byte character can contain an ASCII
/// byte such as `'` or `\` (PostgreSQL's client-only encodings, as
/// normalised by its `clean_encoding_name`: lower case, letters and digits).
const UNSAFE_ENCODINGS: &[&str] = &[
    "sjis",
    "shiftjis",
    "mskanji",
    "win932",
    "windows932",
    "shiftjis2004",
    "big5",
    "win950",
    "windows950",
    "gbk",
    "win936",
    "windows936",
    "uhc",
    "win949",
    "windows949",
    "johab",
    "gb18030",
];

/// `CURSOR_OPT_HOLD` in PostgreSQL's parsenodes.h.
pub(super) const CURSOR_OPT_HOLD: i64 = 0x0020;

/// `OnCommitAction::OncommitDrop` in the parse tree.
pub(super) const ON_COMMIT_DROP: i64 = 4;

/// `VariableSetKind` values in the parse tree.
const VAR_SET_VALUE: i64 = 1;
const VAR_RESET_ALL: i64 = 6;

/// The rule set of one guard configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// False in the `off` profile: nothing is refused (session state is
    /// still found).
    pub active: bool,
    /// Refuse code the guard cannot see (the strict profile).
    pub strict: bool,
    /// Protected setting names, lower case.
    pub protected_settings: HashSet<String>,
    /// Protected setting name prefixes, lower case.
    pub protected_prefixes: Vec<String>,
    /// Extra functions refused in every profile, lower case.
    pub deny_functions: HashSet<String>,
    /// Code-running functions allowed even in strict, lower case.
    pub allow_functions: HashSet<String>,
    /// The pre-check without its backslash trigger, for text the parser
    /// cannot read under `standard_conforming_strings = off`.
    pub lexical: PreCheck,
    /// `[session_state] temp_tables = "pin"`: the client keeps its
    /// connection, so its temporary objects shadow nobody else's tables.
    pub pinned_temporary: bool,
    /// `[session_state] hold_cursors = "pin"`, likewise.
    pub pinned_hold: bool,
}

type Check = Result<(), GuardViolation>;

fn refuse(rule: &'static str, message: String) -> Check {
    Err(GuardViolation { rule, message })
}

impl Rules {
    /// Checks SQL text and finds the session state it creates: every
    /// statement in it, each parsed the way the server may read it. Text
    /// the parser rejects passes (the server rejects it too, with its own
    /// error) unless its tokens hold something a rule is about.
    pub fn inspect_text(&self, sql: &str) -> Findings {
        let mut found = Findings::default();
        match pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) {
            Ok(parsed) => {
                let tree = Tree::of(&parsed.protobuf);
                found.note(self.check_tree(&tree), state::in_tree(&tree));
            }
            Err(_) => found.note(self.unparseable(sql), state::in_tokens(sql)),
        }
        if sql.contains('\\') {
            // With standard_conforming_strings = off (which a client can
            // set) backslashes escape quotes in '...' strings, so where a
            // string ends differs: read it that way too.
            let options = pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS;
            match pg_query::parse(sql, options) {
                Ok(parsed) => {
                    let tree = Tree::of(&parsed.protobuf);
                    found.note(self.check_tree(&tree), state::in_tree(&tree));
                }
                // The scanner knows only the default reading; fall back to
                // the bytes (the pre-check, its backslash aside).
                Err(_) => {
                    let check = if self.active && !self.lexical.harmless(sql.as_bytes()) {
                        unreadable("backslashes, read with standard_conforming_strings = off")
                    } else {
                        Ok(())
                    };
                    found.note(check, state::in_bytes(sql.as_bytes()));
                }
            }
        }
        found
    }

    /// Text PostgreSQL 18's grammar rejects. Usually the server rejects it
    /// too and it may pass, for the server's own error. But an older server
    /// may accept it: `... from t system_user` is a table alias in
    /// PostgreSQL 15 and a syntax error since `SYSTEM_USER` became a
    /// keyword in 16, and the server parses a whole query string before it
    /// runs any of it, so `set app.user_id = ...; select ... system_user`
    /// would run unchecked. So the text passes only if its tokens (the lexer
    /// changes far less between versions than the grammar) hold nothing a
    /// rule could be about.
    fn unparseable(&self, sql: &str) -> Check {
        use pg_query::protobuf::Token as T;
        if !self.active {
            return Ok(());
        }
        let found = unreadable;
        let Ok(scanned) = pg_query::scan(sql) else {
            return Ok(()); // the server's lexer rejects it too
        };
        for t in &scanned.tokens {
            let text = sql
                .get(t.start as usize..t.end as usize)
                .unwrap_or_default();
            let kind = T::try_from(t.token).unwrap_or(T::Nul);
            let hit = match kind {
                T::Set
                | T::Reset
                | T::Prepare
                | T::Execute
                | T::Deallocate
                | T::Declare
                | T::Hold
                | T::Temp
                | T::Temporary => true,
                T::Do | T::Function | T::Procedure => self.strict,
                T::Uident | T::Usconst => true,
                T::Ident => {
                    let name = if let Some(quoted) = text.strip_prefix('"') {
                        quoted
                            .strip_suffix('"')
                            .unwrap_or(quoted)
                            .replace("\"\"", "\"")
                    } else {
                        text.to_string()
                    }
                    .to_ascii_lowercase();
                    name == "set_config"
                        || self.deny_functions.contains(&name)
                        || (self.strict
                            && is_code_function(&name)
                            && !self.allow_functions.contains(&name))
                }
                _ => false,
            };
            if hit {
                return found(text);
            }
        }
        Ok(())
    }

    /// Checks a parse tree: the [`Tree`] of a `pg_query::protobuf::ParseResult`.
    pub fn check_tree(&self, tree: &Tree) -> Check {
        if !self.active {
            return Ok(());
        }
        for raw in tree.field("stmts").as_slice().unwrap_or_default() {
            let stmt = raw.field("stmt");
            if let Some(("VariableSetStmt", body)) = node(stmt) {
                if int(body, "kind") == VAR_RESET_ALL {
                    return refuse(
                        "reset_all",
                        "RESET ALL would also clear the identity rowgate set for this \
                         transaction; reset the settings you changed one by one instead"
                            .into(),
                    );
                }
            }
            self.walk(stmt)?;
        }
        Ok(())
    }

    fn walk(&self, v: &Tree) -> Check {
        match v {
            Tree::Map(map) => {
                for (key, child) in map {
                    if key.starts_with(|c: char| c.is_ascii_uppercase()) {
                        self.visit(key, child)?;
                    } else if let Some(tag) = typed_field(key) {
                        self.visit(tag, child)?;
                    } else {
                        self.walk(child)?;
                    }
                }
                Ok(())
            }
            Tree::Seq(items) => items.iter().try_for_each(|x| self.walk(x)),
            _ => Ok(()),
        }
    }

    /// Visits one node, `tag` being its type (`FuncCall`, `String`, ...).
    fn visit(&self, tag: &str, body: &Tree) -> Check {
        match tag {
            // A literal: its text is data, never a name.
            "AConst" => Ok(()),
            "String" => self.name_reference(str_field(body, "sval")),
            "FuncCall" => {
                self.function_call(body)?;
                for (key, child) in body.entries() {
                    if *key != "funcname" {
                        self.walk(child)?;
                    }
                }
                Ok(())
            }
            "VariableSetStmt" => self.variable_set(body),
            "DoStmt" if self.strict => refuse(
                "code_execution",
                "DO blocks run code rowgate cannot inspect; put the code in a function \
                 created by the database owner (a migration) and call that, or use \
                 [guard] profile = \"standard\" together with [seal]"
                    .into(),
            ),
            "CreateFunctionStmt" if self.strict => {
                let what = if body.field("is_procedure").as_bool() == Some(true) {
                    "CREATE PROCEDURE"
                } else {
                    "CREATE FUNCTION"
                };
                refuse(
                    "code_execution",
                    format!(
                        "{what} through rowgate could define code rowgate cannot inspect; \
                         create functions in migrations as the database owner, or use \
                         [guard] profile = \"standard\" together with [seal]"
                    ),
                )
            }
            "PrepareStmt" | "ExecuteStmt" | "DeallocateStmt" => {
                let kind = match tag {
                    "PrepareStmt" => "PREPARE",
                    "ExecuteStmt" => "EXECUTE",
                    _ => "DEALLOCATE",
                };
                self.reserved_name(kind, str_field(body, "name"))?;
                self.walk(body)
            }
            "DeclareCursorStmt" => {
                self.reserved_name("DECLARE", str_field(body, "portalname"))?;
                if int(body, "options") & CURSOR_OPT_HOLD != 0 && !self.pinned_hold {
                    return refuse(
                        "holdable_cursor",
                        "a WITH HOLD cursor outlives the transaction on an upstream \
                         connection rowgate shares with other users; fetch what you \
                         need inside the transaction instead"
                            .into(),
                    );
                }
                self.walk(body)
            }
            "CreateStmt" => {
                self.temporary(body.field("relation"), int(body, "oncommit"))?;
                self.walk(body)
            }
            "IntoClause" => {
                self.temporary(body.field("rel"), int(body, "on_commit"))?;
                self.walk(body)
            }
            "ViewStmt" => {
                self.temporary(body.field("view"), 0)?;
                self.walk(body)
            }
            "CreateSeqStmt" => {
                self.temporary(body.field("sequence"), 0)?;
                self.walk(body)
            }
            _ => self.walk(body),
        }
    }

    /// A temporary table, view or sequence lives as long as the upstream
    /// session, which rowgate shares between users: the next user's
    /// unqualified `user_messages` would resolve to a temporary table of
    /// that name first, handing their rows to whoever created it. Only
    /// `ON COMMIT DROP` tables die with the transaction.
    fn temporary(&self, relation: &Tree, on_commit: i64) -> Check {
        let temp = str_field(relation, "relpersistence") == "t"
            || str_field(relation, "schemaname")
                .to_ascii_lowercase()
                .starts_with("pg_temp");
        if temp && on_commit != ON_COMMIT_DROP && !self.pinned_temporary {
            return refuse(
                "temporary_object",
                format!(
                    "temporary {} outlives the transaction on an upstream connection \
                     rowgate shares with other users, and would shadow their tables; use \
                     CREATE TEMP TABLE ... ON COMMIT DROP inside a transaction",
                    str_field(relation, "relname")
                ),
            );
        }
        Ok(())
    }

    /// A name used other than as the function of a call: `set_config` (or
    /// a refused function) named in `CREATE AGGREGATE ... (sfunc = ...)`,
    /// `CREATE OPERATOR`, `CREATE CAST`, a column, ... A false alarm on a
    /// column of that name is the price of a short rule.
    fn name_reference(&self, name: &str) -> Check {
        let lower = name.to_ascii_lowercase();
        if lower == "set_config" {
            return refuse(
                "set_config",
                "set_config may only be called directly, with a constant setting name; \
                 naming it elsewhere (an aggregate, operator or cast built on it) could \
                 change rowgate's identity settings"
                    .into(),
            );
        }
        self.function_name(&lower, "naming")
    }

    /// Refusals by function name: configured denials, and in strict, the
    /// functions that run SQL text.
    fn function_name(&self, lower: &str, how: &str) -> Check {
        if self.deny_functions.contains(lower) {
            return refuse(
                "denied_function",
                format!(
                    "{how} {lower} is refused by [guard] deny_functions; ask the \
                     administrator for another way to do what you need"
                ),
            );
        }
        if self.strict && is_code_function(lower) && !self.allow_functions.contains(lower) {
            return refuse(
                "code_execution",
                format!(
                    "{lower} runs SQL text that rowgate cannot inspect, so {how} it is \
                     refused in the strict profile; run the query itself instead, or allow \
                     it with [guard] allow_functions = [\"{lower}\"] (with [seal] on)"
                ),
            );
        }
        Ok(())
    }

    fn function_call(&self, body: &Tree) -> Check {
        let Some(name) = body
            .field("funcname")
            .as_slice()
            .and_then(|parts| parts.last())
            .and_then(|last| match node(last) {
                Some(("String", s)) => Some(str_field(s, "sval")),
                _ => None,
            })
        else {
            return Ok(());
        };
        let lower = name.to_ascii_lowercase();
        if lower == "set_config" {
            return self.set_config_call(body);
        }
        self.function_name(&lower, "calling")
    }

    /// `set_config(name, value, is_local)`: allowed only with a constant,
    /// unprotected name, given positionally.
    fn set_config_call(&self, body: &Tree) -> Check {
        let args: &[Tree] = body.field("args").as_slice().unwrap_or_default();
        let named = args
            .iter()
            .any(|a| matches!(node(a), Some(("NamedArgExpr", _))));
        let variadic = body.field("func_variadic").as_bool() == Some(true);
        let setting = args.first().and_then(const_string);
        let Some(setting) = setting.filter(|_| !named && !variadic) else {
            return refuse(
                "set_config",
                "set_config with a setting name that is not a string constant (or with \
                 named or VARIADIC arguments) cannot be checked; write the setting name \
                 as a literal, e.g. set_config('myapp.theme', $1, true)"
                    .into(),
            );
        };
        self.setting(&setting, &format!("set_config('{setting}', ...)"))?;
        if normalise(&setting) == "client_encoding" {
            let value = args.get(1).and_then(const_string);
            self.client_encoding(value.as_deref())?;
        }
        Ok(())
    }

    /// `SET`, `SET LOCAL`, `RESET`, and the `SET` clauses of `ALTER ROLE`,
    /// `ALTER DATABASE`, `ALTER SYSTEM` and functions.
    fn variable_set(&self, body: &Tree) -> Check {
        let name = str_field(body, "name");
        let kind = int(body, "kind");
        let shown = if kind == VAR_SET_VALUE || kind == 2 || kind == 3 {
            format!("SET {name}")
        } else {
            format!("RESET {name}")
        };
        self.setting(name, &shown)?;
        if normalise(name) == "client_encoding" && kind == VAR_SET_VALUE {
            let value = body
                .field("args")
                .as_slice()
                .and_then(|a| a.first())
                .and_then(const_string);
            self.client_encoding(value.as_deref())?;
        }
        self.walk(body)
    }

    /// Whether changing `setting` (as `shown`) is refused.
    fn setting(&self, setting: &str, shown: &str) -> Check {
        let name = normalise(setting);
        if ROLE_SETTINGS.contains(&name.as_str()) {
            return refuse(
                "role_switch",
                format!(
                    "{shown} would change which role the database checks privileges and \
                     policies for; rowgate sets the role from the token ([identity] role \
                     or role_claim), so configure it there"
                ),
            );
        }
        if self.protected_settings.contains(&name)
            || self.protected_prefixes.iter().any(|p| name.starts_with(p))
        {
            return refuse(
                "protected_setting",
                format!(
                    "{shown} would change a setting rowgate reserves for the verified \
                     identity (protected: {}; prefixes {}); keep your own settings under \
                     another prefix, e.g. myapp.",
                    {
                        let mut v: Vec<&str> =
                            self.protected_settings.iter().map(String::as_str).collect();
                        v.sort_unstable();
                        v.join(", ")
                    },
                    self.protected_prefixes.join(", ")
                ),
            );
        }
        Ok(())
    }

    fn client_encoding(&self, value: Option<&str>) -> Check {
        let unsafe_encoding = match value {
            None => true, // not a constant: cannot be checked
            Some(v) => {
                let clean: String = v
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                UNSAFE_ENCODINGS.contains(&clean.as_str())
            }
        };
        if unsafe_encoding {
            return refuse(
                "client_encoding",
                format!(
                    "client encoding {} lets multi-byte characters contain quote and \
                     backslash bytes, so the server could read statements differently \
                     from rowgate's check; use UTF8 and convert in the client",
                    value.unwrap_or("(not a constant)")
                ),
            );
        }
        Ok(())
    }

    fn reserved_name(&self, kind: &str, name: &str) -> Check {
        let lower = name.to_ascii_lowercase();
        if RESERVED_NAME_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return refuse(
                "rowgate_statement",
                format!(
                    "{kind} {name}: names starting with rowgate or rg_ are reserved for the \
                     statements rowgate keeps on pooled connections; choose another name"
                ),
            );
        }
        Ok(())
    }
}

/// The refusal of a statement the parser cannot read and whose tokens
/// hold `what`.
fn unreadable(what: &str) -> Check {
    refuse(
        "unparseable",
        format!(
            "rowgate's parser (PostgreSQL 18's grammar) cannot read this statement, and it \
             contains {what}, which rowgate does not pass unchecked; fix its syntax, or if \
             your server accepts it, write it so that PostgreSQL 18 reads it too (e.g. quote \
             identifiers that became keywords, such as \"system_user\")"
        ),
    )
}

/// Lower case and trimmed, as PostgreSQL compares setting names (ASCII
/// case-insensitively); trimming only widens what counts as protected.
fn normalise(setting: &str) -> String {
    setting.trim().to_ascii_lowercase()
}

/// Whether `lower` names a function the strict profile refuses.
pub fn is_code_function_name(lower: &str) -> bool {
    is_code_function(lower)
}

fn is_code_function(lower: &str) -> bool {
    lower.starts_with("dblink") || CODE_FUNCTIONS.contains(&lower)
}

/// Fields whose protobuf type is one specific node rather than `Node`, so
/// that their serde form carries no type tag; the node types the rules look
/// at, by field name. Audited against pg_query 18's `protobuf.rs` (fields
/// typed `VariableSetStmt`, `FuncCall`, `DoStmt`, `CreateFunctionStmt`,
/// `PrepareStmt`, `ExecuteStmt`, `DeallocateStmt`, `DeclareCursorStmt`,
/// `AConst`, `TypeCast`, `NamedArgExpr`); the tests of `ALTER ROLE ... SET`,
/// `ALTER DATABASE ... SET`, `ALTER SYSTEM` and `CALL` fail if it changes.
pub(super) fn typed_field(key: &str) -> Option<&'static str> {
    match key {
        // AlterRoleSetStmt, AlterDatabaseSetStmt, AlterSystemStmt.
        "setstmt" => Some("VariableSetStmt"),
        // CallStmt.
        "funccall" => Some("FuncCall"),
        // CreateTableAsStmt, SelectStmt (SELECT ... INTO).
        "into" | "into_clause" => Some("IntoClause"),
        _ => None,
    }
}

/// `{"node": {"Tag": body}}` (a `Node`) or `{"Tag": body}` as `(tag, body)`.
pub(super) fn node(v: &Tree) -> Option<(&'static str, &Tree)> {
    let inner = v.get("node").unwrap_or(v);
    let (tag, body) = inner.entries().first()?;
    tag.starts_with(|c: char| c.is_ascii_uppercase())
        .then_some((*tag, body))
}

pub(super) fn str_field<'a>(body: &'a Tree, key: &str) -> &'a str {
    body.field(key).as_str().unwrap_or_default()
}

pub(super) fn int(body: &Tree, key: &str) -> i64 {
    body.field(key).as_i64().unwrap_or_default()
}

/// The value of a string constant, possibly cast to a text type or given a
/// collation: `'x'`, `'x'::text`, `text 'x'`, `'x' COLLATE "C"`.
fn const_string(v: &Tree) -> Option<String> {
    match node(v)? {
        ("AConst", body) => body
            .field("val")
            .get("Sval")
            .map(|s| str_field(s, "sval").to_string()),
        ("TypeCast", body) => {
            let type_name = body
                .field("type_name")
                .field("names")
                .as_slice()
                .and_then(|n| n.last())
                .and_then(|last| match node(last) {
                    Some(("String", s)) => Some(str_field(s, "sval").to_ascii_lowercase()),
                    _ => None,
                })?;
            // Types whose conversion to text keeps the value (bpchar drops
            // trailing blanks, which the comparison trims anyway).
            if !["text", "varchar", "bpchar", "name"].contains(&type_name.as_str()) {
                return None;
            }
            const_string(body.get("arg")?)
        }
        ("CollateClause", body) => const_string(body.get("arg")?),
        _ => None,
    }
}
