//! Unit tests of every guard rule, and the property test that the lexical
//! pre-check never lets through what the full check refuses.

use super::*;

fn guard(profile: Profile) -> Guard {
    Guard::new(&GuardConfig {
        profile,
        ..Default::default()
    })
    .unwrap()
}

/// The rule that refuses `sql`, or None.
fn rule(g: &Guard, sql: &str) -> Option<&'static str> {
    let verdict = g.check(sql.as_bytes());
    // The cache must agree with a fresh parse.
    assert_eq!(
        verdict,
        g.check(sql.as_bytes()),
        "cached verdict differs: {sql}"
    );
    assert_eq!(
        verdict.clone().err().map(|v| v.rule),
        g.check_parsed(sql.as_bytes()).err().map(|v| v.rule),
        "{sql}"
    );
    verdict.err().map(|v| v.rule)
}

/// (SQL, rule in strict, rule in standard).
const CASES: &[(&str, Option<&str>, Option<&str>)] = &[
    // Ordinary statements pass.
    ("select 1", None, None),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", None, None),
    ("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2", None, None),
    ("insert into t values (1) on conflict do nothing", None, None),
    ("SET search_path = public", None, None),
    ("SET LOCAL statement_timeout = '5s'", None, None),
    ("set myapp.theme = 'dark'", None, None),
    ("select set_config('myapp.theme', 'dark', true)", None, None),
    ("select set_config('search_path'::text, 'public', false)", None, None),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None, None),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", None, None),
    ("SET TIME ZONE 'UTC'", None, None),
    ("SET client_encoding = 'UTF8'", None, None),
    ("SET NAMES 'LATIN1'", None, None),
    ("RESET search_path", None, None),
    ("DISCARD ALL", None, None),
    ("DISCARD PLANS", None, None),
    ("PREPARE q AS select 1", None, None),
    ("EXECUTE q", None, None),
    ("DEALLOCATE q", None, None),
    ("DEALLOCATE ALL", None, None),
    ("declare c cursor for select 1", None, None),
    ("select 'set_config(''app.user_id'', ''x'', true)'", None, None),
    ("select $$ set app.user_id = 'x' $$", None, None),
    ("-- set app.user_id = 'x'\nselect 1", None, None),
    ("selec 1", None, None), // unparseable: the server rejects it
    ("selec 'set app.user_id'", None, None),
    // Unparseable by PostgreSQL 18's grammar but valid for PostgreSQL 15.
    ("select set_config('app.user_id', 'user_b', true) from user_messages system_user", Some("unparseable"), Some("unparseable")),
    ("set app.user_id = 'user_b'; select * from user_messages system_user", Some("unparseable"), Some("unparseable")),
    ("select \"SET_CONFIG\"('app.user_id', 'x', true) from t system_user", Some("unparseable"), Some("unparseable")),
    ("select query_to_xml('select 1', true, true, '') from t system_user", Some("unparseable"), None),
    ("select E'\\x41' from t system_user", None, None),
    ("select 'C:\\' as path", None, None),
    ("select E'\\x41', set_config('app.user_id', 'x', true) from t system_user", Some("unparseable"), Some("unparseable")),
    ("selec set app.user_id", Some("unparseable"), Some("unparseable")),
    ("select table_to_xml('t', true, true, '')", None, None),
    // Protected settings: SET, SET LOCAL, RESET, quoting, case, escapes.
    ("SET app.user_id = 'user_b'", Some("protected_setting"), Some("protected_setting")),
    ("set local app.user_id to 'user_b'", Some("protected_setting"), Some("protected_setting")),
    ("SET SESSION app.user_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET \"app\".\"user_id\" = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET \"APP.USER_ID\" = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET APP.USER_ID = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET U&\"app.user\\005fid\" = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET /* c */ app . /* c */ user_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("RESET app.user_id", Some("protected_setting"), Some("protected_setting")),
    ("SET app.user_id TO DEFAULT", Some("protected_setting"), Some("protected_setting")),
    ("SET request.jwt.claims = '{}'", Some("protected_setting"), Some("protected_setting")),
    ("SET request.jwt.claim.sub = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET app.org_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET app.anything = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("SET rowgate.seal = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("select 1; commit; set app.user_id = 'x'; select 2", Some("protected_setting"), Some("protected_setting")),
    ("ALTER ROLE CURRENT_USER SET app.user_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("ALTER DATABASE d SET app.user_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("ALTER ROLE CURRENT_USER RESET app.user_id", Some("protected_setting"), Some("protected_setting")),
    ("ALTER FUNCTION f() SET app.user_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("ALTER SYSTEM SET app.user_id = 'x'", Some("protected_setting"), Some("protected_setting")),
    ("ALTER ROLE ALL IN DATABASE d SET request.jwt.claims = '{}'", Some("protected_setting"), Some("protected_setting")),
    ("call p(1)", None, None),
    ("call dblink_proc('select 1')", Some("code_execution"), None),
    ("call set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    (
        "create function f() returns int language sql set app.user_id = 'x' as 'select 1'",
        Some("code_execution"),
        Some("protected_setting"),
    ),
    // Role switching.
    ("SET ROLE postgres", Some("role_switch"), Some("role_switch")),
    ("set local role none", Some("role_switch"), Some("role_switch")),
    ("RESET ROLE", Some("role_switch"), Some("role_switch")),
    ("SET SESSION AUTHORIZATION postgres", Some("role_switch"), Some("role_switch")),
    ("RESET SESSION AUTHORIZATION", Some("role_switch"), Some("role_switch")),
    ("SET SESSION AUTHORIZATION DEFAULT", Some("role_switch"), Some("role_switch")),
    ("select set_config('role', 'postgres', true)", Some("role_switch"), Some("role_switch")),
    ("ALTER ROLE x SET role = 'y'", Some("role_switch"), Some("role_switch")),
    // RESET ALL.
    ("RESET ALL", Some("reset_all"), Some("reset_all")),
    ("select 1; reset all", Some("reset_all"), Some("reset_all")),
    ("ALTER ROLE CURRENT_USER RESET ALL", None, None),
    // set_config, direct and nested.
    ("select set_config('app.user_id', 'user_b', true)", Some("protected_setting"), Some("protected_setting")),
    ("SELECT pg_catalog.set_config('APP.USER_ID', 'x', false)", Some("protected_setting"), Some("protected_setting")),
    ("select SET_CONFIG(' app.user_id ', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select \"set_config\"('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select U&\"\\0073et_config\"('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select set_config(U&'app.user\\005fid', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select set_config(E'app.user\\x5fid', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select set_config('app.user_id'::text, 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select set_config('app.user_id  '::char(20), 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select set_config('app.user_id' collate \"C\", 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("select set_config('app.' || 'user_id', 'x', true)", Some("set_config"), Some("set_config")),
    ("select set_config(lower('APP.USER_ID'), 'x', true)", Some("set_config"), Some("set_config")),
    ("select set_config($1, $2, true)", Some("set_config"), Some("set_config")),
    ("select set_config(chr(97)::text, 'x', true)", Some("set_config"), Some("set_config")),
    ("select set_config('x'::regclass::text, 'x', true)", Some("set_config"), Some("set_config")),
    ("select set_config(new_value => 'x', setting_name => 'app.user_id', is_local => true)", Some("set_config"), Some("set_config")),
    ("select set_config(variadic array['app.user_id', 'x'])", Some("set_config"), Some("set_config")),
    ("select * from t where a = (select set_config('app.user_id', 'x', true))", Some("protected_setting"), Some("protected_setting")),
    ("with x as (select set_config('app.user_id', 'x', true)) select * from x", Some("protected_setting"), Some("protected_setting")),
    ("select coalesce(null, upper(set_config('app.user_id', 'x', true)))", Some("protected_setting"), Some("protected_setting")),
    ("select 1 where exists (select 1 from t order by set_config('app.user_id', a, true))", Some("protected_setting"), Some("protected_setting")),
    ("insert into t select set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("update t set a = set_config('request.jwt.claims', '{}', true)", Some("protected_setting"), Some("protected_setting")),
    ("copy (select set_config('app.user_id', 'x', true)) to stdout", Some("protected_setting"), Some("protected_setting")),
    ("explain analyze select set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("prepare p as select set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("execute p(set_config('app.user_id', 'x', true))", Some("protected_setting"), Some("protected_setting")),
    ("declare c cursor for select set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("create view v as select set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("create table t2 (a text default set_config('app.user_id', 'x', true))", Some("protected_setting"), Some("protected_setting")),
    ("create rule r as on insert to t do also select set_config('app.user_id', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("create policy p on t using (set_config('app.user_id', 'x', true) is not null)", Some("protected_setting"), Some("protected_setting")),
    ("call p(set_config('app.user_id', 'x', true))", Some("protected_setting"), Some("protected_setting")),
    ("select set_config('rowgate.seal', 'x', true)", Some("protected_setting"), Some("protected_setting")),
    ("create aggregate agg(text, boolean) (sfunc = set_config, stype = text, initcond = 'app.user_id')", Some("set_config"), Some("set_config")),
    ("create aggregate agg(text, boolean) (sfunc = pg_catalog.set_config, stype = text)", Some("set_config"), Some("set_config")),
    // Client encodings that could hide quotes from the check.
    ("SET client_encoding = 'SJIS'", Some("client_encoding"), Some("client_encoding")),
    ("set names 'sjis'", Some("client_encoding"), Some("client_encoding")),
    ("SET client_encoding TO 'Shift_JIS_2004'", Some("client_encoding"), Some("client_encoding")),
    ("SET client_encoding = 'win-950'", Some("client_encoding"), Some("client_encoding")),
    ("select set_config('client_encoding', 'GBK', false)", Some("client_encoding"), Some("client_encoding")),
    ("select set_config('client_encoding', $1, false)", Some("client_encoding"), Some("client_encoding")),
    ("select set_config('client_encoding', 'UTF8', false)", None, None),
    // Code the guard cannot see.
    ("DO $$ begin perform set_config('app.user_id', 'x', true); end $$", Some("code_execution"), None),
    ("do language plpgsql 'begin null; end'", Some("code_execution"), None),
    ("create function f() returns int language sql as 'select 1'", Some("code_execution"), None),
    ("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'select 1'", Some("code_execution"), None),
    (
        "create function f() returns text language sql begin atomic select set_config('app.user_id', 'x', true); end",
        Some("code_execution"),
        Some("protected_setting"),
    ),
    ("select query_to_xml('select 1', true, true, '')", Some("code_execution"), None),
    ("select * from pg_catalog.QUERY_TO_XML('select 1', true, true, '')", Some("code_execution"), None),
    ("select query_to_xml_and_xmlschema('select 1', true, true, '')", Some("code_execution"), None),
    ("select query_to_xmlschema('select 1', true, true, '')", Some("code_execution"), None),
    ("select cursor_to_xml('c', 1, true, true, '')", Some("code_execution"), None),
    ("select * from ts_stat('select to_tsvector(''x'')')", Some("code_execution"), None),
    ("select ts_rewrite('a'::tsquery, 'select 1')", Some("code_execution"), None),
    ("select * from dblink('dbname=x', 'select 1') as t(a int)", Some("code_execution"), None),
    ("select dblink_exec('select 1')", Some("code_execution"), None),
    ("select * from xpath_table('id', 'x', 't', '/a', 'true') as t(id int)", Some("code_execution"), None),
    ("select * from crosstab('select 1')", Some("code_execution"), None),
    ("select * from connectby('t', 'a', 'b', '1', 0)", Some("code_execution"), None),
    ("select (select query_to_xml('select 1', true, true, ''))", Some("code_execution"), None),
    ("create aggregate a2(text) (sfunc = dblink, stype = text)", Some("code_execution"), None),
    // rowgate's own statements on pooled connections.
    ("EXECUTE rowgate_identity('app.user_id', 'user_b')", Some("rowgate_statement"), Some("rowgate_statement")),
    ("execute ROWGATE_IDENTITY('app.user_id', 'user_b')", Some("rowgate_statement"), Some("rowgate_statement")),
    ("execute \"rowgate_identity\"('app.user_id', 'user_b')", Some("rowgate_statement"), Some("rowgate_statement")),
    ("PREPARE rowgate_identity AS select 1", Some("rowgate_statement"), Some("rowgate_statement")),
    ("DEALLOCATE rowgate_identity", Some("rowgate_statement"), Some("rowgate_statement")),
    ("DEALLOCATE PREPARE rg_0123456789abcdef", Some("rowgate_statement"), Some("rowgate_statement")),
    ("execute rg_0123456789abcdef", Some("rowgate_statement"), Some("rowgate_statement")),
    ("declare rowgate_identity cursor for select 1", Some("rowgate_statement"), Some("rowgate_statement")),
    // Temporary objects that outlive the transaction.
    ("create temp table user_messages (message text)", Some("temporary_object"), Some("temporary_object")),
    ("CREATE TEMPORARY VIEW v AS select 1", Some("temporary_object"), Some("temporary_object")),
    ("create table pg_temp.t (a int)", Some("temporary_object"), Some("temporary_object")),
    ("create temp sequence s", Some("temporary_object"), Some("temporary_object")),
    ("select * into temp t from user_messages", Some("temporary_object"), Some("temporary_object")),
    ("create temp table t as select 1", Some("temporary_object"), Some("temporary_object")),
    ("create temp table t (a int) on commit delete rows", Some("temporary_object"), Some("temporary_object")),
    ("create temp table t (a int) on commit drop", None, None),
    ("create temp table t on commit drop as select 1", None, None),
    ("create table t (a int)", None, None),
    ("select * from pg_temp.t", None, None),
    // Cursors that outlive the transaction.
    ("declare c cursor with hold for select * from t", Some("holdable_cursor"), Some("holdable_cursor")),
];

#[test]
fn every_rule_refuses_what_it_should_and_nothing_else() {
    let strict = guard(Profile::Strict);
    let standard = guard(Profile::Standard);
    let off = guard(Profile::Off);
    for (sql, in_strict, in_standard) in CASES {
        assert_eq!(rule(&strict, sql), *in_strict, "strict: {sql}");
        assert_eq!(rule(&standard, sql), *in_standard, "standard: {sql}");
        assert_eq!(rule(&off, sql), None, "off: {sql}");
    }
}

#[test]
fn messages_name_the_rule_and_what_to_do() {
    let g = guard(Profile::Strict);
    let v = g.check(b"SET app.user_id = 'x'").unwrap_err();
    let text = v.to_string();
    assert!(
        text.starts_with("rowgate refused this statement (protected_setting): SET app.user_id"),
        "{text}"
    );
    assert!(text.contains("another prefix"), "{text}");
    let v = g.check(b"do 'begin end'").unwrap_err();
    assert!(
        v.message.contains("profile = \"standard\""),
        "{}",
        v.message
    );
    let v = g.check(b"set role x").unwrap_err();
    assert!(v.message.contains("role_claim"), "{}", v.message);
}

#[test]
fn backslash_readings_are_both_checked() {
    // With standard_conforming_strings off the server reads 'a\' as the
    // start of a longer string, so the set_config below is code to it.
    let g = guard(Profile::Standard);
    let sql = r"select 'a\', ' , set_config($$app.user_id$$, $$user_b$$, true) --'";
    assert_eq!(rule(&g, sql), Some("protected_setting"));
    // Unreadable with standard_conforming_strings off, and about settings.
    let sql =
        r"select 'a\', ' , set_config($$app.user_id$$, $$user_b$$, true) from t system_user --'";
    assert_eq!(rule(&g, sql), Some("unparseable"));
    // And the other way round: code to the default reading.
    let sql = r"select E'a\'', set_config('app.user_id', 'x', true) --'";
    assert_eq!(rule(&g, sql), Some("protected_setting"));
}

#[test]
fn text_after_a_nul_is_not_what_the_server_runs() {
    let g = guard(Profile::Strict);
    assert_eq!(g.check(b"select 1\0set app.user_id = 'x'"), Ok(()));
    assert!(g.check(b"set app.user_id = 'x'\0select 1").is_err());
}

#[test]
fn config_extends_and_narrows_the_rules() {
    let g = Guard::new(&GuardConfig {
        protected_prefixes: vec!["tenant.".into()],
        protected_settings: vec!["myapp.uid".into()],
        deny_functions: vec!["Exec_Sql".into()],
        allow_functions: vec!["query_to_xml".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(rule(&g, "set app.custom = 'x'"), None);
    assert_eq!(rule(&g, "set app.user_id = 'x'"), Some("protected_setting"));
    assert_eq!(
        rule(&g, "set rowgate.seal = 'x'"),
        Some("protected_setting")
    );
    assert_eq!(rule(&g, "set tenant.id = 'x'"), Some("protected_setting"));
    assert_eq!(rule(&g, "set MYAPP.UID = 'x'"), Some("protected_setting"));
    assert_eq!(rule(&g, "select exec_sql('x')"), Some("denied_function"));
    assert_eq!(
        rule(&g, "select public.EXEC_SQL('x')"),
        Some("denied_function")
    );
    assert_eq!(
        rule(&g, "select query_to_xml('select 1', true, true, '')"),
        None
    );
    assert_eq!(
        rule(&g, "select ts_stat('select 1')"),
        Some("code_execution")
    );
    let standard = Guard::new(&GuardConfig {
        profile: Profile::Standard,
        deny_functions: vec!["exec_sql".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        rule(&standard, "select exec_sql('x')"),
        Some("denied_function")
    );
    for bad in [
        GuardConfig {
            protected_prefixes: vec!["".into()],
            ..Default::default()
        },
        GuardConfig {
            deny_functions: vec!["a.b".into()],
            ..Default::default()
        },
        GuardConfig {
            allow_functions: vec!["set_config".into()],
            ..Default::default()
        },
        GuardConfig {
            allow_function_oids: vec![2078],
            ..Default::default()
        },
    ] {
        assert!(Guard::new(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn config_parses_from_toml() {
    let cfg: GuardConfig = toml::from_str(
        r#"
profile = "standard"
protected_prefixes = ["app.", "tenant."]
deny_functions = ["exec_sql"]
allow_function_oids = [1234]
cache_entries = 10
"#,
    )
    .unwrap();
    assert_eq!(cfg.profile, Profile::Standard);
    assert_eq!(cfg.cache_entries, 10);
    let empty: GuardConfig = toml::from_str("").unwrap();
    assert_eq!(empty.profile, Profile::Strict);
    assert_eq!(empty.protected_prefixes, DEFAULT_PROTECTED_PREFIXES);
    assert!(toml::from_str::<GuardConfig>("profil = \"off\"").is_err());
    assert!(toml::from_str::<GuardConfig>("profile = \"lax\"").is_err());
}

#[test]
fn function_calls_by_oid() {
    let strict = guard(Profile::Strict);
    let standard = guard(Profile::Standard);
    let off = guard(Profile::Off);
    for (oid, _) in LARGE_OBJECT_FUNCTIONS {
        assert_eq!(strict.check_function_call(*oid), Ok(()));
    }
    assert_eq!(
        strict.check_function_call(2078).unwrap_err().rule,
        "set_config"
    );
    assert_eq!(
        standard.check_function_call(2078).unwrap_err().rule,
        "set_config"
    );
    assert_eq!(off.check_function_call(2078), Ok(()));
    // query_to_xml, current_setting: not on the strict list.
    assert_eq!(
        strict.check_function_call(2924).unwrap_err().rule,
        "function_call"
    );
    assert_eq!(
        strict.check_function_call(3294).unwrap_err().rule,
        "function_call"
    );
    assert_eq!(standard.check_function_call(2924), Ok(()));
    let g = Guard::new(&GuardConfig {
        allow_function_oids: vec![3294],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(g.check_function_call(3294), Ok(()));
}

#[test]
fn session_state_is_found_in_every_profile() {
    use SessionState::*;
    for profile in [Profile::Strict, Profile::Standard, Profile::Off] {
        let g = guard(profile).with_session_pins(true, true);
        let state = |sql: &str| g.inspect(sql.as_bytes()).state;
        assert_eq!(state("LISTEN chan"), Some(Listen), "{profile:?}");
        assert_eq!(state("select pg_advisory_lock(1)"), Some(AdvisoryLock));
        assert_eq!(
            state("select 1; create temp table t (a int)"),
            Some(TempTable)
        );
        assert_eq!(
            state("declare c cursor with hold for select 1"),
            Some(HoldCursor)
        );
        assert_eq!(state("prepare q as select 1"), Some(SqlPrepare));
        assert_eq!(state("select 'listen'"), None);
        // Cached with the verdict: the same answer the second time.
        assert_eq!(state("LISTEN chan"), Some(Listen));
    }
    // State and refusal from one parse: both are reported.
    let both = guard(Profile::Strict).inspect(b"listen x; set role admin");
    assert_eq!(both.state, Some(Listen));
    assert_eq!(both.violation.map(|v| v.rule), Some("role_switch"));
}

#[test]
fn paths_pre_check_cache_parse() {
    let g = guard(Profile::Strict);
    let select = b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;";
    assert_eq!(g.check_path(select), (Ok(()), Path::PreCheck));
    let update = b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1;";
    assert_eq!(g.check_path(update), (Ok(()), Path::Parsed));
    assert_eq!(g.check_path(update), (Ok(()), Path::Cached));
    let bad = b"set app.user_id = 'x'";
    assert_eq!(g.check_path(bad).1, Path::Parsed);
    let (verdict, path) = g.check_path(bad);
    assert_eq!((verdict.is_err(), path), (true, Path::Cached));
    let no_cache = Guard::new(&GuardConfig {
        cache_entries: 0,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(no_cache.check_path(update).1, Path::Parsed);
    assert_eq!(no_cache.check_path(update).1, Path::Parsed);
    assert_eq!(
        guard(Profile::Off).check_path(bad),
        (Ok(()), Path::PreCheck)
    );
}

#[test]
fn guard_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Guard>();
    shared::<Sealer>();
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// Fragments random statements are made of: harmless SQL, every
    /// dangerous construct, and the quoting, comment and escape tricks
    /// around them, so random joins exercise the pre-check's edges.
    const FRAGMENTS: &[&str] = &[
        "select ",
        "from ",
        "where ",
        "t",
        "a",
        "1",
        ", ",
        "(",
        ")",
        ";",
        " ",
        "\n",
        "=",
        "+",
        "'x'",
        "'",
        "\"",
        "$$",
        "$a$",
        "--",
        "/*",
        "*/",
        "E'",
        "\\",
        "U&",
        "U&\"",
        "\\0073",
        "set",
        "SET ",
        "reset ",
        "local ",
        "session ",
        "role ",
        "authorization ",
        "all ",
        "app.user_id",
        "app",
        ".",
        "user_id",
        "\"app\"",
        "\"user_id\"",
        "request.jwt.claims",
        "rowgate.seal",
        "to ",
        "default ",
        "set_config",
        "pg_catalog.",
        "('app.user_id', 'x', true)",
        "('role', 'x', true)",
        "('myapp.x', 'x', true)",
        "do ",
        "DO",
        "language plpgsql ",
        "create ",
        "function ",
        "procedure ",
        "f() returns int language sql as 'select 1'",
        "prepare ",
        "execute ",
        "deallocate ",
        "rowgate_identity",
        "rg_1",
        "declare ",
        "c ",
        "cursor ",
        "with ",
        "hold ",
        "for ",
        "query_to_xml",
        "('select 1', true, true, '')",
        "dblink",
        "ts_stat",
        "xpath_table",
        "crosstab",
        "lo_",
        "client_encoding",
        "names ",
        "'sjis'",
        "discard ",
        "values ",
        "insert into ",
        "update ",
        "random()",
        "done",
        "window",
        "commit",
        "begin",
        "aggregate ",
        "sfunc = ",
        "stype = text",
        "alter ",
        "current_user ",
        "::text",
        "collate \"C\"",
        "chr(97)",
        "||",
        "listen ",
        "chan ",
        "temp ",
        "temporary ",
        "table ",
        "t (a int) ",
        "on commit drop ",
        "pg_temp.",
        "pg_advisory_lock(1)",
        "pg_try_advisory_lock_shared(1, 2)",
        "pg_advisory_xact_lock(1)",
        "into ",
        "as ",
    ];

    fn statement() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 1..14).prop_map(|v| v.concat())
    }

    /// Statements built around one dangerous core, with random case.
    fn dangerous() -> impl Strategy<Value = String> {
        let core = prop::sample::select(
            CASES
                .iter()
                .filter(|c| c.1.is_some())
                .map(|c| c.0)
                .collect::<Vec<_>>(),
        );
        (statement(), core, statement(), any::<u64>()).prop_map(|(a, core, b, seed)| {
            let mixed: String = core
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if seed >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            format!("{a}; {mixed}; {b}")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn pre_check_never_passes_what_the_full_check_finds(sql in statement()) {
            // Refusals and session state alike; in `off` the pre-check
            // looks for session state only.
            for profile in [Profile::Strict, Profile::Standard, Profile::Off] {
                let g = guard(profile);
                if g.precheck_passes(sql.as_bytes()) {
                    prop_assert_eq!(
                        g.inspect_parsed(sql.as_bytes()),
                        Findings::default(),
                        "{:?}",
                        profile
                    );
                }
            }
        }

        #[test]
        fn pre_check_flags_every_dangerous_core(sql in dangerous()) {
            let g = guard(Profile::Strict);
            prop_assert!(!g.precheck_passes(sql.as_bytes()));
        }

        #[test]
        fn pre_check_is_sound_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let g = guard(Profile::Strict);
            if g.precheck_passes(&bytes) {
                prop_assert_eq!(g.inspect_parsed(&bytes), Findings::default());
            }
        }
    }
}

#[test]
fn deep_nesting_cannot_hide_a_call() {
    // Deeper than the parse tree's decoder goes (prost stops at 100
    // levels): the statement then counts as unreadable, and its tokens
    // still show the call.
    let g = guard(Profile::Standard);
    for depth in [10, 60, 300, 2000] {
        let open = "(".repeat(depth);
        let close = ")".repeat(depth);
        let bad = format!("select {open}set_config('app.user_id', 'x', true){close}");
        assert!(g.check(bad.as_bytes()).is_err(), "depth {depth}");
        let fine = format!("select {open}length('set'){close}");
        assert_eq!(g.check(fine.as_bytes()), Ok(()), "depth {depth}");
    }
}
