//! Sealed identity (layer 2) on its own, with the guard off: the database
//! turns an identity the client set itself into NULL, honest transactions
//! keep theirs, a wrong key fails closed, and the hardened role recipe
//! works with rowgate.

mod support;

use support::{pg, proxy_config, rowgate, token, TestDb};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn seeded() -> TestDb {
    let db = pg().new_database();
    db.admin_client()
        .await
        .batch_execute(
            "INSERT INTO user_messages (user_id, message) VALUES
             ('user_a', 'a 1'), ('user_b', 'b 1')",
        )
        .await
        .unwrap();
    db
}

fn sealed_config(db: &TestDb, key: &[u8], extra: &str) -> String {
    format!(
        "{}\n[guard]\nprofile = \"off\"\n[seal]\nkey = \"{}\"\n{extra}",
        proxy_config(db, 1, ""),
        hex::encode(key)
    )
}

/// Every cell of every row of a simple query, NULL as "NULL".
async fn cells(c: &Client, sql: &str) -> Result<Vec<String>, String> {
    let msgs = c
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })?;
    Ok(msgs
        .into_iter()
        .flat_map(|m| match m {
            SimpleQueryMessage::Row(r) => (0..r.len())
                .map(|i| r.get(i).unwrap_or("NULL").to_string())
                .collect(),
            _ => Vec::new(),
        })
        .collect())
}

#[tokio::test]
async fn a_forged_identity_is_null_and_an_honest_one_is_kept() {
    let db = seeded().await;
    let key: [u8; 32] = rand::random();
    rowgate::guard::install_seal_key(&db.admin_url(), &key)
        .await
        .unwrap();
    let proxy = rowgate(&sealed_config(&db, &key, "")).await;
    let a = proxy.connect(&token("user_a")).await.unwrap();
    // Honest: own id, claims, rows.
    assert_eq!(
        cells(
            &a,
            "select auth.user_id(), auth.claims()->>'sub', coalesce(auth.org_id(), 'NULL'), \
             auth.setting('app.user_id'), (select string_agg(message, ',') from user_messages), \
             current_setting('rowgate.seal') like 'v1:app.user_id,request.jwt.claims,app.org_id:%'"
        )
        .await,
        Ok(vec![
            "user_a".into(),
            "user_a".into(),
            "NULL".into(),
            "user_a".into(),
            "a 1".into(),
            "t".into()
        ])
    );
    // Forged in the same transaction: NULL, and no rows at all.
    assert_eq!(
        cells(
            &a,
            "begin; select set_config('app.user_id', 'user_b', true); \
             select coalesce(auth.user_id(), 'NULL'), count(*)::text from user_messages; commit"
        )
        .await,
        Ok(vec!["user_b".into(), "NULL".into(), "0".into()])
    );
    // A seal copied from another setting value does not fit either.
    assert_eq!(
        cells(
            &a,
            "begin; select set_config('request.jwt.claims', '{\"sub\":\"user_b\"}', true); \
             select coalesce(auth.claims()::text, 'NULL'), coalesce(auth.user_id(), 'NULL'); commit"
        )
        .await,
        Ok(vec![
            "{\"sub\":\"user_b\"}".into(),
            "NULL".into(),
            "NULL".into()
        ])
    );
    // The next transaction is honest again.
    assert_eq!(
        cells(&a, "select auth.user_id()").await,
        Ok(vec!["user_a".into()])
    );
    // Outside rowgate (straight to PostgreSQL), nothing is sealed.
    let direct = db.authenticator_client().await;
    let row = direct
        .query_one(
            "select set_config('app.user_id', 'user_b', false), auth.user_id()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(1), None);
}

#[tokio::test]
async fn a_key_the_database_does_not_hold_fails_closed() {
    let db = seeded().await;
    let key: [u8; 32] = rand::random();
    let other: [u8; 32] = rand::random();
    rowgate::guard::install_seal_key(&db.admin_url(), &other)
        .await
        .unwrap();
    let proxy = rowgate(&sealed_config(&db, &key, "")).await;
    let a = proxy.connect(&token("user_a")).await.unwrap();
    assert_eq!(
        cells(
            &a,
            "select coalesce(auth.user_id(), 'NULL'), count(*)::text from user_messages"
        )
        .await,
        Ok(vec!["NULL".into(), "0".into()])
    );
    // Installing the right key (replacing the row) makes it work.
    rowgate::guard::install_seal_key(&db.admin_url(), &key)
        .await
        .unwrap();
    assert_eq!(
        cells(&a, "select auth.user_id()").await,
        Ok(vec!["user_a".into()])
    );
    // The key cannot be read by the role rowgate logs in as.
    let direct = db.authenticator_client().await;
    let err = direct
        .simple_query("select key from rowgate_private.seal_key")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let err = direct
        .simple_query("set role rowgate_definer")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
}

#[tokio::test]
async fn the_hardened_role_recipe_leaves_clients_nothing_to_abuse() {
    let db = seeded().await;
    let admin = db.admin_client().await;
    admin
        .batch_execute("CREATE ROLE hardened_auth LOGIN PASSWORD 'hardpass'")
        .await
        .unwrap();
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/recipes/hardened_authenticator.sql");
    let out = support::psql_command(&db.admin_url(), support::SUPERUSER_PASSWORD)
        .args(["-v", "authenticator=hardened_auth", "-v"])
        .arg(format!("dbname={}", db.name()))
        .arg("-f")
        .arg(&recipe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: [u8; 32] = rand::random();
    rowgate::guard::install_seal_key(&db.admin_url(), &key)
        .await
        .unwrap();
    // Guard off, and temporary tables pinned rather than refused by
    // rowgate, so what answers below is the database itself.
    let extra = "[identity]\nrole = \"rowgate_user\"\n[session_state]\ntemp_tables = \"pin\"\n";
    let config = sealed_config(&db, &key, extra).replace(
        &db.authenticator_url(),
        &format!(
            "postgres://hardened_auth:hardpass@127.0.0.1:{}/{}",
            db.port(),
            db.name()
        ),
    );
    let proxy = rowgate(&config).await;
    let a = proxy.connect(&token("user_a")).await.unwrap();
    assert_eq!(
        cells(&a, "select auth.user_id(), current_user::text, (select string_agg(message, ',') from user_messages)").await,
        Ok(vec!["user_a".into(), "rowgate_user".into(), "a 1".into()])
    );
    // With the guard off, the database itself refuses what the strict
    // guard would: code, temporary tables, objects in schemas.
    for sql in [
        "do $$ begin perform set_config('app.user_id', 'user_b', false); end $$",
        "create function pg_temp.f() returns int language sql as 'select 1'",
        "create temp table t (a int)",
        "create table public.t (a int)",
    ] {
        let err = cells(&a, sql).await.unwrap_err();
        assert!(err.contains("permission denied"), "{sql}: {err}");
    }
    // Resetting the role leaves a role that can read nothing.
    assert!(cells(&a, "reset role; select count(*) from user_messages")
        .await
        .unwrap_err()
        .contains("permission denied"));
}
