//! What each `floe` subcommand does, callable in-process. `main.rs` only parses arguments.
//!
//! Exit codes: 0 success, 1 a failure while working, 2 a configuration or usage error.

use std::io::IsTerminal;
use std::path::Path;

use crate::config::{self, Config, ConfigError};

#[derive(Debug, Clone, Copy)]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy)]
pub enum PolicyFormat {
    Json,
    Terraform,
}

/// Why a subcommand ended without success.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("`floe {command}` is not implemented yet in this version of Floe")]
    NotImplemented { command: &'static str },
    #[error("{0}")]
    Failed(String),
    #[error("{failed} of {total} checks did not pass")]
    ChecksFailed { failed: usize, total: usize },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::NotImplemented { .. }
            | CliError::ChecksFailed { .. }
            | CliError::Failed(_) => 1,
        }
    }
}

/// Logs go to stderr; `RUST_LOG` (default `info`) sets the filter.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling in-process) is not an error worth reporting.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn load(path: &Path) -> Result<Config, CliError> {
    let config = config::load(path)?;
    tracing::info!(
        config = %path.display(),
        catalog = config.catalog.kind(),
        group_id = %config.kafka.group_id,
        "configuration loaded"
    );
    Ok(config)
}

/// `floe run`: streams until SIGTERM / SIGINT, then flushes, commits and returns.
pub fn run(path: &Path) -> Result<(), CliError> {
    let config = load(path)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    rt.block_on(async move {
        let runtime = crate::runtime::Runtime::new(config).await?;
        runtime.run(crate::runtime::shutdown_signal()).await
    })
    .map(|summary| {
        tracing::info!(
            records = summary.records,
            commits = summary.commits,
            rows = summary.rows_written,
            "done"
        );
    })
    .map_err(|e| CliError::Failed(e.to_string()))
}

pub fn backfill(
    path: &Path,
    _drop_and_recreate: bool,
    _tables: &[String],
    _yes: bool,
) -> Result<(), CliError> {
    load(path)?;
    Err(CliError::NotImplemented {
        command: "backfill",
    })
}

/// Validates the configuration, then runs every check and prints one line per check.
pub fn check(path: &Path, _create: bool) -> Result<(), CliError> {
    let config = load(path)?;
    println!("{:<12} config {}", "ok", path.display());
    let results = crate::check::run_checks(&config, std::time::Duration::from_secs(10));
    for r in &results {
        println!("{:<12} {}: {}", r.outcome.to_string(), r.what, r.detail);
    }
    let not_ok = results
        .iter()
        .filter(|r| r.outcome != crate::check::Outcome::Ok)
        .count();
    if not_ok == 0 {
        println!("all {} checks passed", results.len() + 1);
        Ok(())
    } else {
        Err(CliError::ChecksFailed {
            failed: not_ok,
            total: results.len() + 1,
        })
    }
}

pub fn policy(path: &Path, _format: PolicyFormat) -> Result<(), CliError> {
    load(path)?;
    Err(CliError::NotImplemented { command: "policy" })
}
