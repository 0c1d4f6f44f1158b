//! Statement checks: where in a transaction a statement may run
//! ([`classify`]), which statements a client may send at all and which
//! session state they create ([`Guard`]), and the seal that lets the
//! database verify the identity ([`Sealer`]).

mod bound;
mod lexical;
mod precheck;
mod rules;
mod seal;
mod state;
mod tree;

pub use lexical::{
    classify, deallocate, ends_a_transaction, is_single_statement, leading_modes, session_effects,
    session_effects_of, Deallocate, Mentions, ModeSettings, SessionEffects, SessionOp, TxnEffect,
    TxnModes, ISOLATION_LEVELS,
};
pub use rules::{CODE_FUNCTIONS, IDENTITY_SETTINGS, ROLE_SETTINGS};
pub use seal::{install_seal_key, parse_key, read_key_file, SealConfig, Sealer, MIN_KEY_BYTES};
pub use state::SessionState;

use lru::LruCache;
use precheck::PreCheck;
use rules::Rules;
use serde::Deserialize;
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Which rules the guard applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Identity and role rules, plus code the guard cannot see: `DO`,
    /// `CREATE FUNCTION`/`PROCEDURE`, functions that run SQL text, and
    /// FunctionCall messages other than the large-object functions.
    #[default]
    Strict,
    /// Identity and role rules only; code-running statements pass (pair it
    /// with `[seal]`).
    Standard,
    /// No checks at all.
    Off,
}

/// `[guard]`: which client statements are refused (see docs/security.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// `strict` (default), `standard` or `off`.
    pub profile: Profile,
    /// Setting-name prefixes no client may change (case-insensitive).
    /// Replaces the default `["app.", "request.jwt.", "rowgate."]`; the
    /// identity settings (`app.user_id`, `request.jwt.claims`, `app.org_id`,
    /// `rowgate.seal`), `role` and `session_authorization` stay protected
    /// whatever this says.
    pub protected_prefixes: Vec<String>,
    /// More setting names no client may change, e.g. custom
    /// `[identity.settings]` names outside the prefixes.
    pub protected_settings: Vec<String>,
    /// Functions refused in every profile but `off`, by name whatever the
    /// schema, e.g. an application's own `exec_sql(text)`.
    pub deny_functions: Vec<String>,
    /// Functions that run SQL text which the strict profile should allow
    /// anyway, e.g. `["query_to_xml"]`.
    pub allow_functions: Vec<String>,
    /// FunctionCall (fast-path) OIDs the strict profile allows besides the
    /// large-object functions.
    pub allow_function_oids: Vec<u32>,
    /// Statement texts whose verdict is cached (LRU); 0 turns the cache off.
    pub cache_entries: usize,
    /// Longest statement text accepted (bytes, default 1 MiB; `0` = no
    /// limit). Longer ones are refused by size, before any parse.
    pub max_statement_size: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            profile: Profile::Strict,
            protected_prefixes: DEFAULT_PROTECTED_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            protected_settings: Vec::new(),
            deny_functions: Vec::new(),
            allow_functions: Vec::new(),
            allow_function_oids: Vec::new(),
            cache_entries: 4096,
            max_statement_size: 1 << 20,
        }
    }
}

/// Default `protected_prefixes`.
pub const DEFAULT_PROTECTED_PREFIXES: &[&str] = &["app.", "request.jwt.", "rowgate."];

/// `set_config(text, text, boolean)` in every PostgreSQL version.
pub const SET_CONFIG_OID: u32 = 2078;

/// The functions libpq's large-object interface calls by FunctionCall, with
/// their OIDs in `pg_proc` (the same from PostgreSQL 9.3 through 18; looked
/// up on PostgreSQL 15): what the strict profile allows.
pub const LARGE_OBJECT_FUNCTIONS: &[(u32, &str)] = &[
    (952, "lo_open(oid, integer)"),
    (953, "lo_close(integer)"),
    (954, "loread(integer, integer)"),
    (955, "lowrite(integer, bytea)"),
    (956, "lo_lseek(integer, integer, integer)"),
    (3170, "lo_lseek64(integer, bigint, integer)"),
    (957, "lo_creat(integer)"),
    (715, "lo_create(oid)"),
    (958, "lo_tell(integer)"),
    (3171, "lo_tell64(integer)"),
    (1004, "lo_truncate(integer, integer)"),
    (3172, "lo_truncate64(integer, bigint)"),
    (964, "lo_unlink(oid)"),
];

/// Statement texts longer than this are checked every time, not cached, so
/// the cache stays under `cache_entries` x 4 KiB.
const MAX_CACHED_LEN: usize = 4096;

/// A statement the guard refuses, with the rule that refused it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rowgate refused this statement ({rule}): {message}")]
pub struct GuardViolation {
    /// Short rule name, e.g. `protected_setting`.
    pub rule: &'static str,
    /// What was refused and what to do instead.
    pub message: String,
}

/// What one statement text holds, as far as rowgate cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// The first rule it breaks (never in the `off` profile).
    pub violation: Option<GuardViolation>,
    /// The first session state it creates, for `[session_state]`.
    pub state: Option<SessionState>,
}

impl Findings {
    /// Keeps the first violation and the first state seen.
    fn note(&mut self, check: Result<(), GuardViolation>, state: Option<SessionState>) {
        if self.violation.is_none() {
            self.violation = check.err();
        }
        self.state = self.state.or(state);
    }
}

/// Checks client statements before they reach the upstream, and finds the
/// session state they create, from one parse. Cheap to share across tasks
/// (`Send + Sync`; the cache has its own lock).
///
/// Its rules can be replaced while clients are connected
/// ([`Guard::reload`]): each check runs on the rules in force when it began.
pub struct Guard {
    current: arc_swap::ArcSwap<Checker>,
}

/// One generation of the guard's rules.
struct Checker {
    max_statement_size: usize,
    profile: Profile,
    rules: Rules,
    precheck: PreCheck,
    allowed_oids: HashSet<u32>,
    cache: Option<Mutex<FindingsCache>>,
}

/// Statement text -> what it holds.
type FindingsCache = LruCache<Box<[u8]>, Findings>;

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("profile", &self.profile)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// How a statement was decided; for benchmarks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The lexical pre-check proved it harmless.
    PreCheck,
    /// The verdict was cached.
    Cached,
    /// Parsed and checked.
    Parsed,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.current.load().fmt(f)
    }
}

impl Guard {
    /// Builds the guard from its config.
    pub fn new(cfg: &GuardConfig) -> Result<Guard, String> {
        Ok(Guard {
            current: arc_swap::ArcSwap::from_pointee(Checker::new(cfg)?),
        })
    }

    /// Replaces the rules with those of `cfg` (keeping the session pins);
    /// on error the rules in force stay.
    pub fn reload(&self, cfg: &GuardConfig) -> Result<(), String> {
        let mut next = Checker::new(cfg)?;
        let cur = self.current.load();
        next.rules.pinned_temporary = cur.rules.pinned_temporary;
        next.rules.pinned_hold = cur.rules.pinned_hold;
        self.current.store(std::sync::Arc::new(next));
        Ok(())
    }

    /// Lets temporary objects and WITH HOLD cursors through when
    /// `[session_state]` pins the clients that create them to their
    /// connection (it then owns those statements); every other rule still
    /// applies to the same statements.
    pub fn with_session_pins(self, temporary: bool, hold: bool) -> Guard {
        match std::sync::Arc::try_unwrap(self.current.into_inner()) {
            Ok(mut c) => {
                c.rules.pinned_temporary = temporary;
                c.rules.pinned_hold = hold;
                Guard {
                    current: arc_swap::ArcSwap::from_pointee(c),
                }
            }
            // Unreachable: the guard is not shared before it is built.
            Err(shared) => Guard {
                current: arc_swap::ArcSwap::new(shared),
            },
        }
    }

    /// The profile in force.
    pub fn profile(&self) -> Profile {
        self.current.load().profile
    }

    /// Checks the SQL text of a simple Query (which may hold several
    /// statements) or of one Parse.
    pub fn check(&self, sql: &[u8]) -> Result<(), GuardViolation> {
        self.check_path(sql).0
    }

    /// [`Guard::check`], also saying how the verdict was reached.
    pub fn check_path(&self, sql: &[u8]) -> (Result<(), GuardViolation>, Path) {
        let (found, path) = self.inspect_path(sql);
        (found.violation.map_or(Ok(()), Err), path)
    }

    /// What a Query's or Parse's SQL text holds: the rule it breaks and the
    /// session state it creates.
    pub fn inspect(&self, sql: &[u8]) -> Findings {
        self.inspect_path(sql).0
    }

    /// [`Guard::inspect`], also saying how it was found. A statement over
    /// `max_statement_size` is refused by its size alone, never parsed.
    pub fn inspect_path(&self, sql: &[u8]) -> (Findings, Path) {
        self.current.load().inspect_path(sql)
    }

    /// The full check, without pre-check or cache (for tests and benches).
    pub fn check_parsed(&self, sql: &[u8]) -> Result<(), GuardViolation> {
        self.current.load().check_parsed(sql)
    }

    /// The full inspection, without pre-check or cache.
    pub fn inspect_parsed(&self, sql: &[u8]) -> Findings {
        self.current.load().inspect_parsed(sql)
    }

    /// Whether the lexical pre-check alone lets `sql` through.
    pub fn precheck_passes(&self, sql: &[u8]) -> bool {
        self.current.load().precheck.harmless(sql)
    }

    /// Checks a FunctionCall (fast-path call by function OID).
    pub fn check_function_call(&self, oid: u32) -> Result<(), GuardViolation> {
        self.current.load().check_function_call(oid)
    }
}

impl Checker {
    fn new(cfg: &GuardConfig) -> Result<Checker, String> {
        let lower = |v: &[String]| -> Vec<String> {
            v.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
        };
        let prefixes = lower(&cfg.protected_prefixes);
        if prefixes.iter().any(String::is_empty) {
            return Err("protected_prefixes: an empty prefix would protect every setting".into());
        }
        let mut protected: HashSet<String> = lower(&cfg.protected_settings).into_iter().collect();
        protected.extend(IDENTITY_SETTINGS.iter().map(|s| s.to_string()));
        let deny: HashSet<String> = lower(&cfg.deny_functions).into_iter().collect();
        if let Some(bad) = deny.iter().find(|d| !valid_function_name(d)) {
            return Err(format!(
                "deny_functions: {bad:?} is not a function name (letters, digits, _; no schema)"
            ));
        }
        let allow: HashSet<String> = lower(&cfg.allow_functions).into_iter().collect();
        if let Some(bad) = allow.iter().find(|a| !rules::is_code_function_name(a)) {
            return Err(format!(
                "allow_functions: {bad:?} is not one of the functions the strict profile \
                 refuses ({}, dblink_*)",
                CODE_FUNCTIONS.join(", ")
            ));
        }
        let mut allowed_oids: HashSet<u32> =
            LARGE_OBJECT_FUNCTIONS.iter().map(|(oid, _)| *oid).collect();
        allowed_oids.extend(cfg.allow_function_oids.iter().copied());
        if allowed_oids.contains(&SET_CONFIG_OID) {
            return Err("allow_function_oids: 2078 is set_config, which is never allowed".into());
        }
        // Session state is looked for in every profile, rules only when on.
        let active = cfg.profile != Profile::Off;
        let precheck = if active {
            PreCheck::new(
                deny.iter()
                    .map(String::as_str)
                    .chain(state::TRIGGERS.iter().copied()),
            )
        } else {
            PreCheck::only(state::TRIGGERS)
        };
        let lexical = PreCheck::without_backslash(deny.iter().map(String::as_str));
        let cache = NonZeroUsize::new(cfg.cache_entries).map(|n| Mutex::new(LruCache::new(n)));
        Ok(Checker {
            max_statement_size: cfg.max_statement_size,
            profile: cfg.profile,
            rules: Rules {
                active,
                strict: cfg.profile == Profile::Strict,
                protected_settings: protected,
                protected_prefixes: prefixes,
                deny_functions: deny,
                allow_functions: allow,
                lexical,
                pinned_temporary: false,
                pinned_hold: false,
            },
            precheck,
            allowed_oids,
            cache,
        })
    }

    fn inspect_path(&self, sql: &[u8]) -> (Findings, Path) {
        // The server reads a Query's text up to its first NUL.
        let sql = sql.split(|&b| b == 0).next().unwrap_or_default();
        if self.max_statement_size > 0 && sql.len() > self.max_statement_size {
            // Parsing a huge statement would hold a runtime thread; its
            // size alone decides.
            let found = Findings {
                violation: Some(GuardViolation {
                    rule: "statement_too_large",
                    message: format!(
                        "the statement is {} bytes, over rowgate's [guard] max_statement_size of {} bytes; send smaller statements (or COPY for bulk data)",
                        sql.len(),
                        self.max_statement_size
                    ),
                }),
                state: None,
            };
            return (found, Path::PreCheck);
        }
        if self.precheck.harmless(sql) {
            return (Findings::default(), Path::PreCheck);
        }
        let cacheable = sql.len() <= MAX_CACHED_LEN;
        if let (Some(cache), true) = (&self.cache, cacheable) {
            if let Some(found) = lock(cache).get(sql) {
                return (found.clone(), Path::Cached);
            }
        }
        let found = self.inspect_parsed(sql);
        if let (Some(cache), true) = (&self.cache, cacheable) {
            lock(cache).put(sql.into(), found.clone());
        }
        (found, Path::Parsed)
    }

    fn check_parsed(&self, sql: &[u8]) -> Result<(), GuardViolation> {
        self.inspect_parsed(sql).violation.map_or(Ok(()), Err)
    }

    fn inspect_parsed(&self, sql: &[u8]) -> Findings {
        // Bytes that are not UTF-8 (a LATIN1 client, say) become U+FFFD;
        // every ASCII byte, which is all the rules look at, stays as it is.
        let text = String::from_utf8_lossy(sql);
        self.rules.inspect_text(&text)
    }

    fn check_function_call(&self, oid: u32) -> Result<(), GuardViolation> {
        match self.profile {
            Profile::Off => Ok(()),
            _ if oid == SET_CONFIG_OID => Err(GuardViolation {
                rule: "set_config",
                message: "a FunctionCall of set_config (OID 2078) could change the identity \
                          rowgate injects; call set_config in SQL with a constant, unprotected \
                          setting name instead"
                    .into(),
            }),
            Profile::Strict if !self.allowed_oids.contains(&oid) => Err(GuardViolation {
                rule: "function_call",
                message: format!(
                    "a FunctionCall (fast-path) of function OID {oid} is refused in the strict \
                     profile, which allows only the large-object functions; call the function \
                     in SQL instead, or allow it with [guard] allow_function_oids = [{oid}]"
                ),
            }),
            _ => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a cache, not an invariant.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn valid_function_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
