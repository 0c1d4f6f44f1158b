use super::*;

fn set_local(token: &str, rest: usize) -> Inband {
    Inband::SetLocal {
        token: token.into(),
        rest,
    }
}

#[test]
fn set_local_forms_are_recognised() {
    let q = b"SET LOCAL rowgate.token = 'eyJ.a.b'";
    assert_eq!(recognize(q), set_local("eyJ.a.b", q.len()));
    for q in [
        &b"set local rowgate.token to 'eyJ.a.b'"[..],
        b"  /* hi /* nested */ */ SET\n\tLOCAL   \"rowgate\".\"token\"='eyJ.a.b' ; ",
        b"Set Local \"rowgate.token\" = E'eyJ.a.b';",
        b"-- c\nset local rowgate . token = 'eyJ.a.b'",
    ] {
        assert!(
            matches!(recognize(q), Inband::SetLocal { ref token, .. } if token == "eyJ.a.b"),
            "{}",
            String::from_utf8_lossy(q)
        );
        assert_eq!(recognize(q).rest(q), None, "nothing follows");
    }
}

#[test]
fn a_multi_statement_query_gives_the_rest() {
    let q = b"SET LOCAL rowgate.token = 'tok'; select * from notes";
    let form = recognize(q);
    assert!(matches!(form, Inband::SetLocal { ref token, .. } if token == "tok"));
    assert_eq!(form.rest(q), Some(&b" select * from notes"[..]));
    let q = b"select set_config('rowgate.token', 'tok', true);select 1";
    let form = recognize(q);
    assert_eq!(form.rest(q), Some(&b"select 1"[..]));
}

#[test]
fn a_rest_that_ends_the_transaction_is_noticed() {
    assert!(ends_transaction(b" select 1; COMMIT"));
    assert!(ends_transaction(b"rollback"));
    assert!(ends_transaction(b"select 1;/* x */ end;"));
    assert!(!ends_transaction(
        b"select case when true then 1 end from t"
    ));
    assert!(!ends_transaction(b"select 'commit'; select 2"));
}

#[test]
fn session_level_forms_are_refused() {
    for q in [
        &b"SET rowgate.token = 'x'"[..],
        b"SET SESSION rowgate.token = 'x'",
        b"set rowgate.token to default",
        b"SET LOCAL rowgate.token TO DEFAULT",
        b"SET LOCAL rowgate.token = 'x' 'y'",
        b"RESET rowgate.token",
        b"select set_config('rowgate.token', $1, false)",
        b"select set_config('rowgate.token', 'x', 'off')",
        b"select set_config('rowgate.token', $2, true)",
        b"select set_config('rowgate.token', $1, $2)",
    ] {
        assert_eq!(
            recognize(q),
            Inband::SessionLevel,
            "{}",
            String::from_utf8_lossy(q)
        );
    }
}

#[test]
fn other_statements_are_not_ours() {
    for q in [
        &b"select 1"[..],
        b"SET LOCAL app.user_id = 'x'",
        b"SET LOCAL rowgate.tokens = 'x'",
        b"select set_config('app.user_id', $1, true)",
        b"select 'SET LOCAL rowgate.token = 1'",
        b"",
        b"set",
        b"select pg_catalog",
    ] {
        assert_eq!(recognize(q), Inband::None, "{}", String::from_utf8_lossy(q));
    }
}

#[test]
fn the_extended_form_is_recognised_in_its_variants() {
    for q in [
        &b"select set_config('rowgate.token', $1, true)"[..],
        b"SELECT SET_CONFIG ( 'rowgate.token' , $1 , TRUE ) ;",
        b"select pg_catalog.set_config('rowgate.token',$1,'t')",
        b"select\nset_config('rowgate.token', $1, true) -- why",
    ] {
        assert_eq!(
            recognize(q),
            Inband::SetConfig {
                token: TokenAt::Param,
                rest: q.len()
            },
            "{}",
            String::from_utf8_lossy(q)
        );
    }
}

fn bind_rest(formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b.extend_from_slice(&(results.len() as i16).to_be_bytes());
    for r in results {
        b.extend_from_slice(&r.to_be_bytes());
    }
    b
}

#[test]
fn the_token_is_bind_parameter_one_in_either_format() {
    let text = bind_rest(&[], &[Some(b"tok")], &[]);
    assert_eq!(bind_first_param(&text), Ok(Some(&b"tok"[..])));
    assert_eq!(bind_result_format(&text), Ok(0));
    let binary = bind_rest(&[1], &[Some(b"tok")], &[1]);
    assert_eq!(bind_first_param(&binary), Ok(Some(&b"tok"[..])));
    assert_eq!(bind_result_format(&binary), Ok(1));
    assert_eq!(bind_first_param(&bind_rest(&[], &[None], &[])), Ok(None));
    assert!(bind_first_param(&bind_rest(&[], &[], &[])).is_err());
    assert!(bind_first_param(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_err());
}

#[test]
fn replies_are_what_postgres_sends() {
    // PostgreSQL's layout: one field, no table, type text (25),
    // typlen -1, typmod -1, text format. (tests/sidecar.rs compares
    // the whole reply with a real server's.)
    let rd = reply::set_config_row_description(0);
    assert_eq!(
        &rd[..],
        b"T\0\0\0\x23\0\x01set_config\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0"
    );
    assert_eq!(
        &reply::data_row(b"tok")[..],
        b"D\0\0\0\x0d\0\x01\0\0\0\x03tok"
    );
    assert_eq!(
        &reply::command_complete("SELECT 1")[..],
        b"C\0\0\0\x0dSELECT 1\0"
    );
    assert_eq!(&reply::command_complete("SET")[..], b"C\0\0\0\x08SET\0");
    let p = Prepared {
        form: recognize(b"select set_config('rowgate.token', $1, true)"),
        param_type: 0,
    };
    let d = p.describe_statement();
    assert_eq!(&d[..11], b"t\0\0\0\x0a\0\x01\0\0\0\x19");
}

#[test]
fn the_tracker_follows_statements_portals_and_transactions() {
    let mut t = Tracker::default();
    let spec = b"select set_config('rowgate.token', $1, true)\0\0\x01\0\0\x04\x13";
    assert!(matches!(t.parse(b"S_1", spec), Inband::SetConfig { .. }));
    assert_eq!(t.statement(b"S_1").map(|p| p.param_type), Some(1043));
    assert_eq!(t.parse(b"S_1", b"select 1\0\0\0"), Inband::None);
    assert!(
        t.statement(b"S_1").is_none(),
        "a re-Parse of the name forgets it"
    );
    assert_eq!(t.switch([1; 32]), Switch::First);
    assert_eq!(t.switch([1; 32]), Switch::Same);
    assert_eq!(t.switch([2; 32]), Switch::Different);
    t.transaction_over();
    assert!(!t.active());
    assert_eq!(t.switch([2; 32]), Switch::First);
    // A multi-statement Parse is not ours (PostgreSQL refuses it).
    assert_eq!(
        t.parse(b"", b"set local rowgate.token = 'x'; select 1\0\0\0"),
        Inband::None
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_rest_is_in_bounds(s in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let f = recognize(&s);
        if let Some(rest) = f.rest(&s) {
            proptest::prop_assert!(rest.len() <= s.len());
        }
        let _ = bind_first_param(&s);
        let _ = bind_result_format(&s);
        let _ = parse_first_param_type(&s);
    }

    #[test]
    fn any_token_literal_round_trips(tok in "[A-Za-z0-9_.'-]{1,80}", ws in "[ \t\n]{0,3}", local in proptest::bool::ANY) {
        let lit = tok.replace('\'', "''");
        let q = if local {
            format!("SET{ws} LOCAL rowgate.token{ws}={ws}'{lit}'{ws}")
        } else {
            format!("select{ws} set_config('rowgate.token',{ws}'{lit}', true){ws};")
        };
        let f = recognize(q.as_bytes());
        let got = match f {
            Inband::SetLocal { token, .. } => token,
            Inband::SetConfig { token: TokenAt::Literal(t), .. } => t,
            other => { return Err(proptest::test_runner::TestCaseError::fail(format!("{other:?} for {q}"))); }
        };
        proptest::prop_assert_eq!(got, tok);
    }

    #[test]
    fn prefixes_of_a_set_local_are_never_a_set_local(cut in 0usize..36) {
        let q = b"SET LOCAL rowgate.token = 'abc.def'";
        let f = recognize(&q[..cut.min(q.len() - 1)]);
        let is_set_local = matches!(f, Inband::SetLocal { .. });
        proptest::prop_assert!(!is_set_local);
    }
}
