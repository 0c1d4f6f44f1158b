//! rowgate logs in upstream with whatever the server asks for: SCRAM
//! (the rest of the suite), md5 and cleartext password (here).

mod support;

use rowgate::upstream::{ServerConn, Target};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_cleartext_upstream_authentication_work() {
    let server = support::private_postgres().await;
    let admin_url = server.superuser_url("postgres");
    let admin_target = Target::from_url(&admin_url).unwrap();
    let mut admin = ServerConn::connect(&admin_target, None, Duration::from_secs(10))
        .await
        .unwrap();
    for sql in [
        "SET password_encryption = 'md5'",
        "CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret'",
        "RESET password_encryption",
        "CREATE ROLE plain_user LOGIN PASSWORD 'plain-secret'",
    ] {
        admin.simple_query(sql).await.unwrap().unwrap();
    }
    // Put md5 and password lines ahead of the scram ones.
    let hba = server.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host all md5_user 127.0.0.1/32 md5\nhost all plain_user 127.0.0.1/32 password\n{old}"
        ),
    )
    .unwrap();
    admin
        .simple_query("SELECT pg_reload_conf()")
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (user, password) in [("md5_user", "md5-secret"), ("plain_user", "plain-secret")] {
        let url = format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres?sslmode=disable",
            server.port()
        );
        let mut conn = ServerConn::connect(
            &Target::from_url(&url).unwrap(),
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(conn.simple_query("select 1").await.unwrap().unwrap(), b'I');
        // A wrong password gets the server's refusal, not a hang.
        let bad = url.replace(password, "wrong");
        let err = ServerConn::connect(
            &Target::from_url(&bad).unwrap(),
            None,
            Duration::from_secs(10),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} with a wrong password connected"));
        assert!(
            err.to_string().contains("password authentication failed"),
            "{err}"
        );
    }
}
