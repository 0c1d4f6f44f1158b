//! `[admin]`: who may open the admin console.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[admin]`: the console at database `rowgate`, user `admin`
/// (docs/operations.md). Off unless a password is configured.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The console password (checked with SCRAM-SHA-256).
    pub password: Option<String>,
    /// A file holding the console password (trailing newline ignored);
    /// read at start and on every reload.
    pub password_file: Option<PathBuf>,
    /// How long `PAUSE` waits for running transactions, and how long a
    /// client that wants a connection waits while the pool is paused.
    #[serde(default, with = "crate::config::duration")]
    pub pause_timeout: Duration,
}

impl AdminConfig {
    /// Checks the section; the password file must be readable.
    pub fn validate(&self) -> Result<(), String> {
        if self.password.is_some() && self.password_file.is_some() {
            return Err("set password or password_file, not both".into());
        }
        self.load_password().map(|_| ())
    }

    /// The console password, if the console is on.
    pub fn load_password(&self) -> Result<Option<String>, String> {
        let pw = match (&self.password, &self.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("password_file {}: {e}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        if pw.as_deref() == Some("") {
            return Err("the admin password is empty".into());
        }
        Ok(pw)
    }

    /// `pause_timeout`, 60 s when unset.
    pub fn pause_timeout(&self) -> Duration {
        if self.pause_timeout.is_zero() {
            Duration::from_secs(60)
        } else {
            self.pause_timeout
        }
    }
}
