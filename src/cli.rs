//! The `rowgate` command line.

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// rowgate: a PostgreSQL proxy that turns a JWT password into a verified,
/// transaction-local identity for Row-Level Security.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy with a config file (if the file does not exist, the
    /// configuration comes from `ROWGATE_*` environment variables alone).
    Serve {
        /// Path to the TOML config (see config/rowgate.example.toml).
        #[arg(long, short, default_value = "config/rowgate.toml")]
        config: PathBuf,
    },
    /// Check a config file and explain what is wrong with it.
    Check {
        /// Path to the TOML config.
        #[arg(long, short, default_value = "config/rowgate.toml")]
        config: PathBuf,
    },
    /// Install rowgate's SQL (auth schema, helpers, example RLS table) into a
    /// database. Idempotent.
    Migrate {
        /// Administrator URL of the database, e.g.
        /// postgres://postgres:pw@127.0.0.1:5432/app.
        #[arg(long, env = "ROWGATE_MIGRATE_URL")]
        upstream: String,
        /// Grant the `rowgate_user` role to this role (rowgate's login role,
        /// e.g. authenticator). Repeatable.
        #[arg(long)]
        grant_to: Vec<String>,
        /// Install this key (hex, at least 32 bytes) for sealed identity: the
        /// same key as [seal] key_file in rowgate's config.
        #[arg(long)]
        seal_key_file: Option<PathBuf>,
    },
    /// Mint a development token (RS256 with a PEM private key, or HS256 with
    /// a secret).
    Token(crate::devtools::TokenArgs),
    /// Start a throwaway PostgreSQL, apply the migrations, start rowgate on
    /// it, and print ready-to-paste psql commands for two demo users.
    Dev(crate::devtools::DevArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROWGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // ROWGATE_LOG_FORMAT=json: one JSON object per line, for log pipelines.
    if std::env::var("ROWGATE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match build_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rowgate: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("rowgate: {message}");
            1
        }
    }
}

/// The async runtime: tokio's multi-thread scheduler, or with
/// `ROWGATE_RUNTIME=current_thread` one thread that does everything.
fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    match std::env::var("ROWGATE_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config: path } => {
            let config = Config::load_or_env(&path).map_err(|e| e.to_string())?;
            let server = crate::start(config).await.map_err(|e| e.to_string())?;
            server.set_config_path(path);
            serve_until_signalled(&server).await;
            Ok(())
        }
        Command::Check { config } => {
            let cfg =
                Config::load_or_env(&config).map_err(|e| format!("{}: {e}", config.display()))?;
            println!(
                "{}: OK (listen {}, {})",
                config.display(),
                cfg.listen.addr,
                crate::upstream::databases::summary(&cfg)?
            );
            Ok(())
        }
        Command::Migrate {
            upstream,
            grant_to,
            seal_key_file,
        } => {
            for name in crate::migrate::apply(&upstream, &grant_to).await? {
                println!("applied {name}");
            }
            if let Some(path) = seal_key_file {
                let key = crate::guard::read_key_file(&path)?;
                crate::guard::install_seal_key(&upstream, &key).await?;
                println!("installed the seal key; the database now verifies rowgate's identity");
            }
            Ok(())
        }
        Command::Token(args) => crate::devtools::token(args),
        Command::Dev(args) => crate::devtools::dev(args).await,
    }
}

/// SIGHUP reloads; SIGTERM drains gracefully (docs/operations.md); SIGINT,
/// or a second SIGTERM, shuts down fast. Returns when rowgate has stopped.
async fn serve_until_signalled(server: &crate::Server) {
    use crate::admin::ShutdownMode;
    let mut hangups = hangup_signals();
    let shutdown = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break ShutdownMode::Fast,
            _ = terminate() => break ShutdownMode::Graceful,
            _ = next_hangup(&mut hangups) => {
                // The outcome is logged by the reload itself.
                let _ = server.reload_from_file().await;
            }
        }
    };
    let draining = server.shutdown(shutdown);
    tokio::pin!(draining);
    tokio::select! {
        _ = &mut draining => {}
        _ = async { tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = terminate() => {} } } => {
            tracing::warn!("second signal: shutting down fast");
            server.shutdown(ShutdownMode::Fast).await;
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
