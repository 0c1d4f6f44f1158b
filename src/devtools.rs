//! Development helpers: `rowgate token` mints a token, `rowgate dev` runs the
//! whole thing on a throwaway local PostgreSQL with two demo users.

use crate::auth::mint;
use crate::embedded::{LocalPostgres, LocalPostgresOptions};
use std::path::PathBuf;

/// Issuer of the tokens `rowgate dev` and `rowgate token` mint by default.
pub const DEV_ISSUER: &str = "https://rowgate.dev.localhost";
/// Key id of the dev signing key.
pub const DEV_KID: &str = "rowgate-dev";

/// Arguments of `rowgate token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`), e.g. user_2abc.
    #[arg(long)]
    pub sub: String,
    /// PEM private key to sign with (RS256), e.g. the one `rowgate dev` prints.
    #[arg(long, conflicts_with = "secret")]
    pub key: Option<PathBuf>,
    /// HMAC secret to sign with (HS256) instead of a key.
    #[arg(long, env = "ROWGATE_TOKEN_SECRET")]
    pub secret: Option<String>,
    /// Lifetime, e.g. 60s (Clerk session tokens), 1h, 30m.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Issuer (`iss`).
    #[arg(long, default_value = DEV_ISSUER)]
    pub issuer: String,
    /// Key id (`kid`) for RS256.
    #[arg(long, default_value = DEV_KID)]
    pub kid: String,
    /// Active organisation id (Clerk v2 `o.id`).
    #[arg(long)]
    pub org: Option<String>,
}

/// Arguments of `rowgate dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Port rowgate listens on (127.0.0.1).
    #[arg(long, default_value_t = 6432)]
    pub port: u16,
    /// Port of the HTTP listener for the Neon serverless driver (`/sql`,
    /// `/v2`) on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Upstream pool size.
    #[arg(long, default_value_t = 4)]
    pub pool_size: usize,
    /// Keep the PostgreSQL data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Claims for a dev token: Clerk's session-token shape.
fn claims(sub: &str, issuer: &str, ttl_secs: u64, org: Option<&str>) -> serde_json::Value {
    let mut c = mint::clerk_session_claims(sub, issuer, ttl_secs);
    if let Some(org) = org {
        c["o"] = serde_json::json!({ "id": org, "rol": "admin", "slg": org });
    }
    c
}

/// `rowgate token`: prints a signed token.
pub fn token(args: TokenArgs) -> Result<(), String> {
    let ttl = crate::config::duration::parse(&args.ttl)?.as_secs().max(1);
    let claims = claims(&args.sub, &args.issuer, ttl, args.org.as_deref());
    let token = match (&args.key, &args.secret) {
        (Some(path), _) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            mint::sign_rs256(&pem, Some(&args.kid), &claims).map_err(|e| e.to_string())?
        }
        (None, Some(secret)) => {
            mint::sign_hs256(secret.as_bytes(), &claims).map_err(|e| e.to_string())?
        }
        (None, None) => return Err("give --key FILE (RS256) or --secret S (HS256)".into()),
    };
    println!("{token}");
    Ok(())
}

/// `rowgate dev`: a throwaway PostgreSQL, migrations, demo rows, a dev
/// signing key, and the proxy, until Ctrl-C.
pub async fn dev(args: DevArgs) -> Result<(), String> {
    let admin_password = random_word();
    let auth_password = random_word();
    eprintln!("starting a throwaway PostgreSQL ...");
    let opts = LocalPostgresOptions {
        superuser_password: admin_password,
        data_dir: args.data_dir.clone(),
        ..Default::default()
    };
    let pg = tokio::task::spawn_blocking(move || LocalPostgres::start(opts))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut admin = crate::upstream::ServerConn::connect(
        &crate::upstream::Target::from_url(&pg.superuser_url("postgres"))?,
        None,
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    let setup = [
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN CREATE ROLE authenticator LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$".to_string(),
        format!("ALTER ROLE authenticator PASSWORD '{auth_password}'"),
    ];
    for sql in &setup {
        admin
            .simple_query(sql)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    // CREATE DATABASE cannot run in a transaction; ignore "already exists".
    let _ = admin.simple_query("CREATE DATABASE app").await;
    crate::migrate::apply(&pg.superuser_url("app"), &["authenticator".into()]).await?;
    let mut app = crate::upstream::ServerConn::connect(
        &crate::upstream::Target::from_url(&pg.superuser_url("app"))?,
        None,
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    app.simple_query(
        "INSERT INTO user_messages (user_id, message)
         SELECT * FROM (VALUES ('user_alice', 'Hello from Alice'), ('user_alice', 'Alice again'),
                               ('user_bob', 'Hi, this is Bob')) v
         WHERE NOT EXISTS (SELECT 1 FROM user_messages)",
    )
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;

    let (private_pem, public_pem) = mint::generate_rsa_keypair().map_err(|e| e.to_string())?;
    let key_dir = std::env::temp_dir().join(format!("rowgate-dev-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir).map_err(|e| e.to_string())?;
    let private_path = key_dir.join("dev-signing-key.pem");
    let public_path = key_dir.join("dev-public-key.pem");
    std::fs::write(&private_path, &private_pem).map_err(|e| e.to_string())?;
    std::fs::write(&public_path, &public_pem).map_err(|e| e.to_string())?;

    let config_text = format!(
        r#"[listen]
addr = "127.0.0.1:{port}"
[upstream]
url = "postgres://authenticator:{auth_password}@127.0.0.1:{pg_port}/app"
pool_size = {pool}
[auth]
issuer = "{DEV_ISSUER}"
public_key_file = "{public}"
leeway_secs = 5
[http]
addr = "127.0.0.1:{http_port}"
cors_allowed_origins = ["http://localhost:3000"]
"#,
        port = args.port,
        http_port = args.http_port,
        pg_port = pg.port(),
        pool = args.pool_size,
        public = public_path.display(),
    );
    let config_path = key_dir.join("rowgate.toml");
    std::fs::write(&config_path, &config_text).map_err(|e| e.to_string())?;
    let config = crate::Config::from_toml(&config_text).map_err(|e| e.to_string())?;
    let server = crate::start(config).await.map_err(|e| e.to_string())?;

    let sign = |sub: &str| {
        mint::sign_rs256(
            &private_pem,
            Some(DEV_KID),
            &claims(sub, DEV_ISSUER, 3600, None),
        )
    };
    let alice = sign("user_alice").map_err(|e| e.to_string())?;
    let bob = sign("user_bob").map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    println!(
        r#"
rowgate is running on {addr}, in front of a throwaway PostgreSQL on 127.0.0.1:{pg_port}.
Each demo user sees only their own rows of user_messages (RLS with auth.user_id()).

Alice:
  PGPASSWORD='{alice}' psql "host=127.0.0.1 port={port} dbname=app user=alice" -c "select auth.user_id(), message from user_messages"

Bob:
  PGPASSWORD='{bob}' psql "host=127.0.0.1 port={port} dbname=app user=bob" -c "select auth.user_id(), message from user_messages"

{snippets}
More tokens (valid 1 h):
  cargo run --release -- token --key {private} --sub user_carol
Config in use: {config}
Ctrl-C stops rowgate and removes the database.
"#,
        pg_port = pg.port(),
        port = addr.port(),
        private = private_path.display(),
        config = config_path.display(),
        snippets = driver_snippets(server.http_addr(), &alice, &bob),
    );
    let _ = tokio::signal::ctrl_c().await;
    server.stop();
    drop(pg);
    let _ = std::fs::remove_dir_all(&key_dir);
    Ok(())
}

/// Ready-to-paste use of the Neon serverless driver through rowgate's
/// HTTP listener, in both modes, and the example that runs both.
fn driver_snippets(http: Option<std::net::SocketAddr>, alice: &str, bob: &str) -> String {
    let Some(http) = http else {
        return String::new();
    };
    format!(
        r#"
Neon serverless driver (npm i @neondatabase/serverless ws), SQL over HTTP
(drizzle-orm/neon-http):
  import {{ neon, neonConfig }} from '@neondatabase/serverless';
  neonConfig.fetchEndpoint = 'http://{http}/sql';
  const sql = neon('postgresql://authenticated@rowgate.localhost/app', {{ authToken: '{alice}' }});
  console.log(await sql`select auth.user_id(), message from user_messages`);

Over WebSockets (Pool/Client, drizzle-orm/neon-serverless):
  import {{ Pool, neonConfig }} from '@neondatabase/serverless';
  import ws from 'ws';
  neonConfig.wsProxy = (host, port) => `{http}/v2?address=${{host}}:${{port}}`;
  neonConfig.useSecureWebSocket = false;
  neonConfig.webSocketConstructor = ws;
  const pool = new Pool({{ connectionString: 'postgresql://alice:{alice}@rowgate.localhost/app' }});
  console.log((await pool.query('select auth.user_id(), message from user_messages')).rows);

With curl:
  curl -s http://{http}/sql -H 'Neon-Connection-String: postgresql://alice@rowgate.localhost/app' -H 'Authorization: Bearer {alice}' -d '{{"query":"select auth.user_id(), message from user_messages","params":[]}}'

The Drizzle example, both modes, both users:
  ROWGATE_HTTP={http} ALICE_TOKEN='{alice}' BOB_TOKEN='{bob}' node examples/nextjs-drizzle/scripts/two-users.mjs
"#
    )
}

fn random_word() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::thread_rng().gen();
    hex::encode(bytes)
}
