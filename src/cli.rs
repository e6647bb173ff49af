//! What each `floe` subcommand does, callable in-process. `main.rs` only parses arguments.
//!
//! Exit codes: 0 success, 1 a failure while working, 2 a configuration or usage error.

use std::io::IsTerminal;
use std::path::Path;

use crate::config::{self, Config, ConfigError, TableName};

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
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("{failed} of {total} checks did not pass")]
    ChecksFailed { failed: usize, total: usize },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::ChecksFailed { .. } | CliError::Failed(_) => 1,
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

/// `floe backfill`: loads the topics up to their end offsets at start, prints a report per
/// table, and fails when any table failed (the others stay committed).
pub fn backfill(
    path: &Path,
    drop_and_recreate: bool,
    tables: &[String],
    yes: bool,
) -> Result<(), CliError> {
    let config = load(path)?;
    let tables = tables
        .iter()
        .map(|t| {
            t.parse::<TableName>()
                .map_err(|e| CliError::Usage(format!("--tables: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if drop_and_recreate && !yes && !terminal {
        return Err(CliError::Usage(
            "--drop-and-recreate deletes tables: confirm with --yes when not on a terminal".into(),
        ));
    }
    let confirm = |tables: &[TableName]| {
        if yes {
            return true;
        }
        let names: Vec<String> = tables.iter().map(ToString::to_string).collect();
        eprint!(
            "This deletes and recreates {} table(s): {}\nType \"yes\" to go on: ",
            names.len(),
            names.join(", ")
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
    };
    let options = crate::runtime::BackfillOptions {
        drop_and_recreate,
        tables,
        progress_bars: std::io::stderr().is_terminal(),
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let report = rt
        .block_on(async move {
            let runtime = crate::runtime::Runtime::new(config).await?;
            runtime
                .backfill(options, confirm, crate::runtime::shutdown_signal())
                .await
        })
        .map_err(|e| CliError::Failed(e.to_string()))?;
    print!("{}", report.render());
    match report.failed() {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "{n} of {} tables failed; the others are committed",
            report.tables.len()
        ))),
    }
}

/// `floe maintain`: compacts each table the configuration routes to (or `tables`), one after
/// another, and prints what it did. Safe while `floe run` commits to the same tables.
pub fn maintain(
    path: &Path,
    tables: &[String],
    orphans_older_than: std::time::Duration,
) -> Result<(), CliError> {
    let config = load(path)?;
    let mut names = tables
        .iter()
        .map(|t| {
            t.parse::<TableName>()
                .map_err(|e| CliError::Usage(format!("--tables: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        let config::TopicSelection::List(topics) = &config.kafka.topics else {
            return Err(CliError::Usage(
                "kafka.topics is a pattern, so the tables are not known in advance: name them with --tables".into(),
            ));
        };
        for topic in topics {
            let table = config
                .tables
                .route(topic)
                .map_err(|e| CliError::Failed(format!("topic {topic}: {e}")))?;
            if !names.contains(&table) {
                names.push(table);
            }
        }
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let failed = rt.block_on(async {
        let catalog = crate::catalog::open_catalog(&config.catalog)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        if !catalog.expires_snapshots() {
            tracing::info!(
                catalog = catalog.kind(),
                "this catalog maintains its tables itself; compacting anyway, deleting nothing"
            );
        }
        let mut settings = crate::commit::CommitSettings::new(
            config.kafka.group_id.clone(),
            crate::commit::FileSettings {
                target_file_size: config.flush.target_file_size,
                zstd_level: config.flush.zstd_level,
            },
        );
        settings.index_memory = config.tables.index_memory;
        let engine = crate::commit::CommitEngine::new(catalog, settings);
        let mut failed = 0usize;
        for name in &names {
            let done = match engine.maintain(name, orphans_older_than).await {
                Ok(Some(done)) => done,
                Ok(None) => {
                    println!("{name}: does not exist yet");
                    continue;
                }
                Err(e) => {
                    println!("{name}: failed: {e}");
                    failed += 1;
                    continue;
                }
            };
            let c = &done.compacted;
            match c.snapshot_id {
                None => println!(
                    "{name}: compact already ({} data files, {} delete files)",
                    c.data_files_before, c.delete_files_before
                ),
                Some(snapshot) => println!(
                    "{name}: {} of {} data files and {} delete files rewritten into {} data \
                     files ({} rows; {} data files now), snapshot {snapshot}; {} old snapshots \
                     expired, {} files deleted",
                    c.data_files_rewritten,
                    c.data_files_before,
                    c.delete_files_before,
                    c.data_files_after - (c.data_files_before - c.data_files_rewritten),
                    c.rows,
                    c.data_files_after,
                    c.expired_snapshots,
                    c.removed_files
                ),
            }
            match done.orphans {
                Ok(Some((found, deleted))) => println!(
                    "{name}: {found} orphan files older than {} found, {deleted} deleted",
                    humantime::format_duration(orphans_older_than)
                ),
                Ok(None) => {}
                Err(e) => {
                    println!("{name}: orphan files: failed: {e}");
                    failed += 1;
                }
            }
        }
        Ok::<usize, CliError>(failed)
    })?;
    match failed {
        0 => Ok(()),
        n => Err(CliError::Failed(format!(
            "{n} of {} tables failed; the others are maintained",
            names.len()
        ))),
    }
}

/// Validates the configuration, then runs every check and prints one line per check, with the
/// actions that grant each missing permission.
pub fn check(path: &Path, create: bool) -> Result<(), CliError> {
    let config = load(path)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::Failed(e.to_string()))?;
    let options = crate::check::CheckOptions {
        create,
        timeout: std::time::Duration::from_secs(10),
    };
    let results = rt.block_on(crate::check::run_checks(&config, options));
    println!("{:<12} config {}", "ok", path.display());
    for r in &results {
        println!("{:<12} {}: {}", r.outcome.to_string(), r.what, r.detail);
        if !r.grant.is_empty() {
            println!("{:<12} grant: {}", "", r.grant.join(", "));
        }
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

/// `floe policy`: prints the access policy for the configured resources on stdout, and
/// what it does not cover on stderr.
pub fn policy(path: &Path, format: PolicyFormat, drop_and_recreate: bool) -> Result<(), CliError> {
    let config = load(path)?;
    let policy = crate::policy::policy(&config, drop_and_recreate);
    for note in &policy.notes {
        eprintln!("note: {note}");
    }
    match format {
        PolicyFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&policy.to_json()).expect("a policy serializes")
        ),
        PolicyFormat::Terraform => print!("{}", policy.to_terraform()),
    }
    Ok(())
}
