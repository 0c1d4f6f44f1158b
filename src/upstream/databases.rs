//! Which upstream database serves a client: the startup packet's `database`
//! picks one entry of `[databases.NAME]` (or the single `[upstream]`, which
//! serves the database named in its URL, and only that one), else the
//! wildcard `[databases."*"]`, whose URL names the database as `{dbname}`.
//! A name no entry serves is refused like PgBouncer does:
//! `FATAL 3D000 database "x" does not exist`.
//!
//! Each database has its own pool, its own metrics label, and may verify
//! tokens and inject identity its own way (`[databases.NAME.auth]`,
//! `[databases.NAME.identity]`, key by key over `[auth]`/`[identity]`).

use super::{Pool, Target};
use crate::auth::{AuthConfig, Authenticator, IdentityConfig};
use crate::config::{Config, UpstreamConfig};
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The config key of the wildcard entry.
pub const WILDCARD: &str = "*";

/// What stands for the client's database name in the wildcard's URL.
pub const DBNAME_PLACEHOLDER: &str = "{dbname}";

/// `[databases.NAME]`: a pool's settings (the keys of `[upstream]`) and
/// optional overrides of `[auth]` and `[identity]` for this database.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// URL and pool settings.
    pub pool: UpstreamConfig,
    /// `[databases.NAME.auth]`, already completed from `[auth]`.
    pub auth: Option<AuthConfig>,
    /// `[databases.NAME.identity]`, already completed from `[identity]`.
    pub identity: Option<IdentityConfig>,
}

impl<'de> Deserialize<'de> for DatabaseConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // The pool keys are exactly `[upstream]`'s (unknown keys refused
        // there); `auth` and `identity` are the two sub-tables.
        let mut table = toml::Table::deserialize(d)?;
        let auth = table
            .remove("auth")
            .map(|v| v.try_into::<AuthConfig>())
            .transpose()
            .map_err(|e| D::Error::custom(format!("auth: {e}")))?;
        let identity = table
            .remove("identity")
            .map(|v| v.try_into::<IdentityConfig>())
            .transpose()
            .map_err(|e| D::Error::custom(format!("identity: {e}")))?;
        let pool = toml::Value::Table(table)
            .try_into::<UpstreamConfig>()
            .map_err(|e| D::Error::custom(e.to_string()))?;
        Ok(DatabaseConfig {
            pool,
            auth,
            identity,
        })
    }
}

/// `[auth]` keys that together say which issuers are trusted and how: an
/// override naming any of them replaces all of them (a preview branch that
/// trusts a test issuer must not also inherit production's key by
/// accident). The other keys (leeway, JWKS timing, on_expiry) are inherited
/// one by one.
const AUTH_ISSUER_KEYS: &[&str] = &[
    "issuer",
    "jwks_url",
    "jwks_file",
    "public_key_file",
    "public_key",
    "hs256_secret",
    "hmac_secret",
    "hmac_algorithms",
    "algorithms",
    "audience",
    "authorized_parties",
    "require_sid",
    "reject_pending",
    "user_policy",
    "users",
    "issuers",
];

/// `[identity]` keys about the role, replaced together for the same reason.
const IDENTITY_ROLE_KEYS: &[&str] = &["role", "role_claim", "allowed_roles"];

/// Completes each `[databases.NAME.auth]` / `.identity` table from the
/// top-level `[auth]` / `[identity]` before the config is deserialized, so
/// an override only names what differs.
pub fn inherit_overrides(doc: &mut toml::Table) {
    let base_auth = doc.get("auth").and_then(|v| v.as_table()).cloned();
    let base_identity = doc.get("identity").and_then(|v| v.as_table()).cloned();
    let Some(toml::Value::Table(dbs)) = doc.get_mut("databases") else {
        return;
    };
    for (_, entry) in dbs.iter_mut() {
        let Some(entry) = entry.as_table_mut() else {
            continue;
        };
        for (key, base, group) in [
            ("auth", &base_auth, AUTH_ISSUER_KEYS),
            ("identity", &base_identity, IDENTITY_ROLE_KEYS),
        ] {
            let (Some(toml::Value::Table(over)), Some(base)) = (entry.get_mut(key), base) else {
                continue;
            };
            let names_group = group.iter().any(|k| over.contains_key(*k));
            for (k, v) in base {
                if names_group && group.contains(&k.as_str()) {
                    continue;
                }
                over.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// The database name the single `[upstream]` serves.
fn upstream_dbname(u: &UpstreamConfig) -> Result<String, String> {
    Target::from_url(&u.url)
        .map(|t| t.dbname)
        .map_err(|e| format!("[upstream] url: {e}"))
}

/// Every configured entry as (section name for messages, startup name,
/// settings); the `[upstream]` one first.
fn entries(config: &Config) -> Result<Vec<(String, String, DatabaseConfig)>, String> {
    let mut out = Vec::new();
    if let Some(u) = &config.upstream {
        out.push((
            "[upstream]".to_string(),
            upstream_dbname(u)?,
            DatabaseConfig {
                pool: u.clone(),
                auth: None,
                identity: None,
            },
        ));
    }
    for (name, db) in &config.databases {
        out.push((section(name), name.clone(), db.clone()));
    }
    Ok(out)
}

fn section(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("[databases.{name}]")
    } else {
        format!("[databases.{name:?}]")
    }
}

/// The wildcard URL for one database name (percent-encoded, so any name a
/// client sends stays one path segment).
fn wildcard_url(template: &str, dbname: &str) -> String {
    template.replace(
        DBNAME_PLACEHOLDER,
        &utf8_percent_encode(dbname, NON_ALPHANUMERIC).to_string(),
    )
}

/// Checks the database entries, with advice (`rowgate check` prints it).
pub fn validate(config: &Config) -> Result<(), String> {
    let all = entries(config)?;
    if all.is_empty() {
        return Err("no database is configured: add [upstream] url = \"postgres://...\" or one [databases.NAME] entry per database".into());
    }
    if let Some(u) = &config.upstream {
        let served = upstream_dbname(u)?;
        if config.databases.contains_key(&served) {
            return Err(format!(
                "[upstream] serves the database \"{served}\" (the one its URL names), and {} is configured too: a startup database name needs exactly one entry; remove one of them, or move [upstream] into [databases]",
                section(&served)
            ));
        }
    }
    for (sect, name, db) in &all {
        let p = &db.pool;
        if p.pool_size == 0 {
            return Err(format!("{sect} pool_size must be at least 1"));
        }
        if p.min_idle > p.pool_size {
            return Err(format!("{sect} min_idle cannot be larger than pool_size"));
        }
        let has_placeholder = p.url.contains(DBNAME_PLACEHOLDER);
        if name == WILDCARD && !has_placeholder {
            return Err(format!(
                "{sect} url must contain {DBNAME_PLACEHOLDER} (where the client's database name goes), e.g. postgres://authenticator:secret@host/{DBNAME_PLACEHOLDER}"
            ));
        }
        if name != WILDCARD && has_placeholder {
            return Err(format!(
                "{sect} url contains {DBNAME_PLACEHOLDER}, which only the wildcard entry [databases.\"*\"] fills in"
            ));
        }
        if name.is_empty() {
            return Err("[databases.\"\"]: a database name cannot be empty".into());
        }
        Target::from_url(&wildcard_url(&p.url, "db")).map_err(|e| format!("{sect} url: {e}"))?;
        if db.auth.is_some() || db.identity.is_some() {
            let auth = db.auth.as_ref().unwrap_or(&config.auth);
            let identity = db.identity.as_ref().unwrap_or(&config.identity);
            crate::auth::validate(auth, identity)
                .map_err(|e| format!("{sect} (with its overrides): {e}"))?;
        }
    }
    Ok(())
}

/// One line about every database entry, for `rowgate check`: e.g.
/// `database app -> 127.0.0.1:5432/app as authenticator, pool_size 10`.
pub fn summary(config: &Config) -> Result<String, String> {
    let mut parts = Vec::new();
    for (_, name, db) in entries(config)? {
        let t = Target::from_url(&wildcard_url(&db.pool.url, DBNAME_PLACEHOLDER))?;
        let overrides = if db.auth.is_some() || db.identity.is_some() {
            ", own auth/identity"
        } else {
            ""
        };
        parts.push(format!(
            "database {name} -> {}/{} as {}, pool_size {}{overrides}",
            t.display_addr(),
            t.dbname,
            t.user,
            db.pool.pool_size
        ));
    }
    Ok(parts.join("; "))
}

/// One database clients can connect to: its pool, how its clients' tokens
/// are verified, and what the identity statement sets there.
pub struct Database {
    name: String,
    label: &'static str,
    pool: Pool,
    auth: Arc<Authenticator>,
    leeway_secs: u64,
    identity_spec: Bytes,
    setting_names: Vec<String>,
    /// Opened for the wildcard entry: kept only once a client of it
    /// authenticated (see [`Databases::keep`]).
    from_wildcard: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// The startup database name it serves.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its metrics label: the configured name (`*` for every database of
    /// the wildcard, so labels stay few).
    pub fn label(&self) -> &'static str {
        self.label
    }
    /// Its upstream connections.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
    /// Verifies its clients' tokens.
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }
    /// The clock leeway of its `[auth]`.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }
    /// Parse payload of the identity statement.
    pub fn identity_spec(&self) -> &Bytes {
        &self.identity_spec
    }
    /// Setting names of the identity statement (the seal last, if on).
    pub fn setting_names(&self) -> &[String] {
        &self.setting_names
    }
}

/// How one entry verifies and injects: shared by all databases of the
/// wildcard.
#[derive(Clone)]
struct Flavour {
    auth: Arc<Authenticator>,
    leeway_secs: u64,
    setting_names: Vec<String>,
}

struct Wildcard {
    /// Its pool settings, `{dbname}` in the URL; replaced on reload.
    pool: Mutex<UpstreamConfig>,
    flavour: Flavour,
    /// Databases of the wildcard some client authenticated for.
    opened: Mutex<HashMap<String, Arc<Database>>>,
}

/// The startup `database` name is not served here.
#[derive(Debug, thiserror::Error)]
#[error("database \"{0}\" does not exist")]
pub struct UnknownDatabase(pub String);

impl UnknownDatabase {
    /// SQLSTATE `invalid_catalog_name`, as PostgreSQL and PgBouncer answer.
    pub const SQLSTATE: &'static str = "3D000";
}

/// Every database rowgate serves.
pub struct Databases {
    named: HashMap<String, Arc<Database>>,
    wildcard: Option<Wildcard>,
}

impl Databases {
    /// Builds every configured database's pool and verifier (overrides get
    /// their own [`Authenticator`]; the rest share `[auth]`'s) and starts
    /// the pools' upkeep.
    pub async fn new(config: &Config, sealed: bool) -> Result<Databases, String> {
        let base_auth = Authenticator::new(&config.auth, &config.identity)
            .await
            .map_err(|e| format!("[auth] {e}"))?;
        let flavour_of = |auth: Arc<Authenticator>, leeway_secs: u64| {
            let mut setting_names = auth.setting_names().to_vec();
            if sealed {
                setting_names.push(crate::guard::Sealer::SETTING.to_string());
            }
            Flavour {
                auth,
                leeway_secs,
                setting_names,
            }
        };
        let base = flavour_of(base_auth, config.auth.leeway_secs);
        let mut named = HashMap::new();
        let mut wildcard = None;
        for (sect, name, db) in entries(config)? {
            let flavour = if db.auth.is_some() || db.identity.is_some() {
                let auth_cfg = db.auth.as_ref().unwrap_or(&config.auth);
                let identity_cfg = db.identity.as_ref().unwrap_or(&config.identity);
                let auth = Authenticator::new(auth_cfg, identity_cfg)
                    .await
                    .map_err(|e| format!("{sect} {e}"))?;
                flavour_of(auth, auth_cfg.leeway_secs)
            } else {
                base.clone()
            };
            if name == WILDCARD {
                wildcard = Some(Wildcard {
                    pool: Mutex::new(db.pool),
                    flavour,
                    opened: Mutex::new(HashMap::new()),
                });
                continue;
            }
            let pool = Pool::new(&db.pool)
                .map_err(|e| format!("{sect} {e}"))?
                .with_label(intern(&name));
            pool.spawn_maintenance();
            named.insert(
                name.clone(),
                Arc::new(database(name.clone(), intern(&name), pool, &flavour, false)),
            );
        }
        Ok(Databases { named, wildcard })
    }

    /// The database a startup packet's `database` asks for. A wildcard
    /// database nobody authenticated for yet is made afresh and not kept:
    /// pass it to [`Databases::keep`] once its client is authenticated, so
    /// that names sent before authentication cannot fill memory.
    pub fn resolve(&self, dbname: &str) -> Result<Arc<Database>, UnknownDatabase> {
        if let Some(db) = self.named.get(dbname) {
            return Ok(db.clone());
        }
        let unknown = || UnknownDatabase(dbname.to_owned());
        let w = self.wildcard.as_ref().ok_or_else(unknown)?;
        if let Some(db) = lock(&w.opened).get(dbname) {
            return Ok(db.clone());
        }
        let mut cfg = lock(&w.pool).clone();
        cfg.url = wildcard_url(&cfg.url, dbname);
        // The URL was validated with a placeholder name; any name encodes
        // to a valid path, so this fails only on a TLS setup error, which
        // the named check at startup would have shown too.
        let pool = Pool::new(&cfg).map_err(|_| unknown())?.with_label(WILDCARD);
        Ok(Arc::new(database(
            dbname.to_owned(),
            WILDCARD,
            pool,
            &w.flavour,
            true,
        )))
    }

    /// Keeps a database whose client authenticated, returning the one to
    /// use (another client may have kept the same name first).
    pub fn keep(&self, db: Arc<Database>) -> Arc<Database> {
        let Some(w) = self.wildcard.as_ref().filter(|_| db.from_wildcard) else {
            return db;
        };
        let mut opened = lock(&w.opened);
        match opened.get(&db.name) {
            Some(kept) if !Arc::ptr_eq(kept, &db) => kept.clone(),
            Some(_) => db,
            None => {
                db.pool.spawn_maintenance();
                opened.insert(db.name.clone(), db.clone());
                db
            }
        }
    }

    /// Every database opened so far (named ones and kept wildcard ones).
    pub fn all(&self) -> Vec<Arc<Database>> {
        let mut out: Vec<_> = self.named.values().cloned().collect();
        if let Some(w) = &self.wildcard {
            out.extend(lock(&w.opened).values().cloned());
        }
        out
    }

    /// Upstream connections idle in all pools.
    pub fn idle_count(&self) -> usize {
        self.all().iter().map(|d| d.pool.idle_count()).sum()
    }

    /// Applies a reloaded configuration: pool sizes and timeouts, and each
    /// verifier's issuers, keys and identity mapping. Everything is checked
    /// (keys loaded, JWKS fetched) before anything changes, so a refusal
    /// leaves the old configuration whole. Which databases exist, their
    /// servers, and which have their own `auth`/`identity` stay as started.
    pub async fn reload(&self, old: &Config, new: &Config) -> Result<(), String> {
        let restart = "; restart rowgate for that";
        let (olds, news) = (entries(old)?, entries(new)?);
        let names = |e: &[(String, String, DatabaseConfig)]| {
            let mut v: Vec<(String, bool)> = e
                .iter()
                .map(|(_, n, d)| (n.clone(), d.auth.is_some() || d.identity.is_some()))
                .collect();
            v.sort();
            v
        };
        if names(&olds) != names(&news) {
            return Err(format!("the databases (or which of them have their own [auth]/[identity]) changed{restart}"));
        }
        // One verifier may serve many databases: prepare each once.
        let mut prepared: Vec<(Arc<Authenticator>, crate::auth::Prepared)> = Vec::new();
        for (sect, name, db) in &news {
            let auth = match (name.as_str(), &self.wildcard) {
                (WILDCARD, Some(w)) => w.flavour.auth.clone(),
                _ => self
                    .named
                    .get(name)
                    .ok_or("a database vanished")?
                    .auth
                    .clone(),
            };
            if prepared.iter().any(|(a, _)| Arc::ptr_eq(a, &auth)) {
                continue;
            }
            let auth_cfg = db.auth.as_ref().unwrap_or(&new.auth);
            let identity_cfg = db.identity.as_ref().unwrap_or(&new.identity);
            let p = auth
                .prepare(auth_cfg, identity_cfg)
                .await
                .map_err(|e| format!("{sect} {e}"))?;
            prepared.push((auth, p));
        }
        for (sect, name, db) in &news {
            match (name.as_str(), &self.wildcard) {
                (WILDCARD, Some(w)) if lock(&w.pool).url != db.pool.url => {
                    return Err(format!("{sect} url cannot change on reload{restart}"));
                }
                (WILDCARD, _) => {}
                _ => self.named[name]
                    .pool
                    .check_reload(&db.pool)
                    .map_err(|e| format!("{sect} {e}"))?,
            }
        }
        for (auth, p) in prepared {
            auth.install(p);
        }
        for (_, name, db) in news {
            match (name.as_str(), &self.wildcard) {
                (WILDCARD, Some(w)) => {
                    for d in lock(&w.opened).values() {
                        let mut cfg = db.pool.clone();
                        cfg.url = wildcard_url(&cfg.url, &d.name);
                        let _ = d.pool.reload(&cfg);
                    }
                    *lock(&w.pool) = db.pool;
                }
                _ => {
                    let _ = self.named[&name].pool.reload(&db.pool);
                }
            }
        }
        Ok(())
    }

    /// `host:port` of each configured upstream, for the startup log line.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .named
            .iter()
            .map(|(n, d)| format!("{n}={}", d.pool.target().display_addr()))
            .collect();
        parts.sort();
        if let Some(w) = &self.wildcard {
            let url = wildcard_url(&lock(&w.pool).url, "db");
            if let Ok(t) = Target::from_url(&url) {
                parts.push(format!("*={}", t.display_addr()));
            }
        }
        parts.join(", ")
    }
}

/// A configured database name as a metrics label (labels are `&'static`
/// so that nothing a peer sends can become one): each name is leaked once,
/// and only names from the config file come here.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = lock(&NAMES);
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

fn database(
    name: String,
    label: &'static str,
    pool: Pool,
    f: &Flavour,
    wildcard: bool,
) -> Database {
    Database {
        name,
        label,
        pool,
        auth: f.auth.clone(),
        leeway_secs: f.leeway_secs,
        identity_spec: identity_spec(),
        setting_names: f.setting_names.clone(),
        from_wildcard: wildcard,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The identity statement: every setting of the transaction (the client's
/// own session parameters first, the identity last so it always wins) as
/// two bound `text[]` parameters, names and values, applied in order with
/// `set_config(name, value, true)`. Values are never spliced into SQL.
///
/// `$3` counts the client's own settings at the front; for the rest (the
/// identity), a session-level value someone left on the pooled connection
/// is first cleared, so it cannot surface after this transaction either.
///
/// Rows are applied in order (a function scan in a plain SELECT), so the
/// identity, last, wins over a client setting of the same name.
fn identity_spec() -> Bytes {
    // No rows come back: concat() evaluates both calls for every setting
    // (a function's arguments are all evaluated; AND/OR could skip one)
    // and is never NULL, so the WHERE drops every row. The values, the
    // claims JSON among them, then do not travel back on every transaction.
    let sql =
        "SELECT FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(n, v, o) \
         WHERE concat(CASE WHEN o > $3::int THEN set_config(n, CASE n WHEN 'role' THEN 'none' ELSE '' END, false) END, \
                      set_config(n, v, true)) IS NULL";
    crate::wire::frontend::parse_spec(sql.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[auth]
issuer = "https://clerk.example.com"
hs256_secret = "dev-secret-dev-secret-dev-secret!"
leeway_secs = 7
"#;

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_toml(&format!("{BASE}\n{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn upstream_alone_serves_the_database_of_its_url() {
        let c = load("[upstream]\nurl = \"postgres://a:b@127.0.0.1/app\"\n").unwrap();
        let all = entries(&c).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1, "app");
    }

    #[test]
    fn upstream_and_databases_coexist_but_may_not_clash() {
        let ok = load(
            "[upstream]\nurl = \"postgres://a:b@127.0.0.1/app\"\n\
             [databases.preview]\nurl = \"postgres://a:b@127.0.0.2/app\"\npool_size = 3\n",
        )
        .unwrap();
        assert_eq!(ok.databases["preview"].pool.pool_size, 3);
        let err = load(
            "[upstream]\nurl = \"postgres://a:b@127.0.0.1/app\"\n\
             [databases.app]\nurl = \"postgres://a:b@127.0.0.2/app\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("[upstream] serves the database \"app\""),
            "{err}"
        );
        assert!(err.contains("[databases.app]"), "{err}");
    }

    #[test]
    fn mistakes_in_entries_are_explained() {
        let err = load("").unwrap_err();
        assert!(err.contains("no database is configured"), "{err}");
        let err = load("[databases.\"*\"]\nurl = \"postgres://a:b@h/app\"\n").unwrap_err();
        assert!(err.contains("must contain {dbname}"), "{err}");
        let err = load("[databases.x]\nurl = \"postgres://a:b@h/{dbname}\"\n").unwrap_err();
        assert!(err.contains("only the wildcard"), "{err}");
        let err = load("[databases.x]\nurl = \"postgres://a:b@h/x\"\npool_size = 0\n").unwrap_err();
        assert!(err.contains("[databases.x] pool_size"), "{err}");
        let err = load("[databases.x]\nurl = \"postgres://a:b@h/x\"\npool_sise = 2\n").unwrap_err();
        assert!(err.contains("pool_sise"), "{err}");
    }

    #[test]
    fn overrides_inherit_what_they_do_not_name() {
        let c = load(
            "[databases.main]\nurl = \"postgres://a:b@h/main\"\n\
             [databases.preview]\nurl = \"postgres://a:b@h/preview\"\n\
             [databases.preview.auth]\nissuer = \"https://test.example\"\n\
             hs256_secret = \"test-secret-test-secret-test-secret\"\n",
        )
        .unwrap();
        assert!(c.databases["main"].auth.is_none());
        let auth = c.databases["preview"].auth.as_ref().unwrap();
        assert_eq!(auth.issuer.as_deref(), Some("https://test.example"));
        // Not an issuer key: inherited.
        assert_eq!(auth.leeway_secs, 7);
    }

    #[test]
    fn an_override_naming_an_issuer_key_inherits_no_issuer_key() {
        let mut doc: toml::Table = r#"
[auth]
issuer = "https://prod"
public_key_file = "/prod.pem"
leeway_secs = 9
[databases.p.auth]
issuer = "https://test"
hs256_secret = "x"
"#
        .parse()
        .unwrap();
        inherit_overrides(&mut doc);
        let over = doc["databases"]["p"]["auth"].as_table().unwrap();
        assert!(!over.contains_key("public_key_file"));
        assert_eq!(over["leeway_secs"].as_integer(), Some(9));
    }

    #[test]
    fn wildcard_names_stay_one_path_segment() {
        let url = wildcard_url("postgres://a:b@h:5432/{dbname}?sslmode=disable", "x/y?z");
        let t = Target::from_url(&url).unwrap();
        assert_eq!(t.dbname, "x/y?z");
        assert_eq!(t.host, "h");
    }

    #[tokio::test]
    async fn resolution_by_name_wildcard_and_unknown() {
        let c = load(
            "[upstream]\nurl = \"postgres://a:b@127.0.0.1/app\"\n\
             [databases.other]\nurl = \"postgres://a:b@127.0.0.1/other\"\n",
        )
        .unwrap();
        let dbs = Databases::new(&c, false).await.unwrap();
        assert_eq!(dbs.resolve("app").unwrap().pool().target().dbname, "app");
        assert_eq!(dbs.resolve("other").unwrap().label(), "other");
        let err = dbs.resolve("nosuchdb").unwrap_err();
        assert_eq!(err.to_string(), "database \"nosuchdb\" does not exist");

        let c = load("[databases.\"*\"]\nurl = \"postgres://a:b@127.0.0.1/{dbname}\"\n").unwrap();
        let dbs = Databases::new(&c, false).await.unwrap();
        let a = dbs.resolve("tenant_a").unwrap();
        assert_eq!(a.pool().target().dbname, "tenant_a");
        assert_eq!(a.label(), "*");
        // Not kept until its client authenticated.
        assert!(dbs.all().is_empty());
        let kept = dbs.keep(a.clone());
        assert!(Arc::ptr_eq(&kept, &a));
        assert!(Arc::ptr_eq(&dbs.resolve("tenant_a").unwrap(), &a));
        // A second, concurrent open of the same name yields the kept one.
        let b = dbs.resolve("tenant_b").unwrap();
        let b2 = dbs.resolve("tenant_b").unwrap();
        let kb = dbs.keep(b.clone());
        assert!(Arc::ptr_eq(&dbs.keep(b2), &kb));
        assert_eq!(dbs.all().len(), 2);
    }
}
