//! The `floe` command: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use floe::cli::{self, LogFormat, PolicyFormat};

/// jemalloc, not the C library's allocator: with glibc's, threads that allocate at once (the
/// consume loop, the decode thread, tokio's workers, librdkafka's) waited on each other's
/// locks, and freed memory stayed in per-thread arenas. Measured with `cargo bench --bench
/// e2e_mock` on two cores: `floe run` 99-105k events per CPU-second against 59-86k, and a
/// 10M-event backfill peaked at 723 MiB against 840 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Floe keeps Apache Iceberg tables (Amazon S3 Tables, Iceberg REST catalogs, or a local
/// warehouse) equal to the source tables of Debezium change events in Kafka.
#[derive(Debug, Parser)]
#[command(name = "floe", version, propagate_version = true)]
struct Cli {
    /// Log format: `auto` writes pretty logs on a terminal and JSON lines otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Auto, env = "FLOE_LOG_FORMAT")]
    log_format: LogFormatArg,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The connector configuration (TOML). `FLOE_<SECTION>__<KEY>` environment variables
    /// override its keys, e.g. FLOE_CATALOG__TOKEN or FLOE_KAFKA__PROPERTIES__SASL_PASSWORD.
    #[arg(
        long,
        short = 'c',
        value_name = "PATH",
        default_value = "connector.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream changes from Kafka into the tables until stopped.
    ///
    /// Consumes the configured topics in the configured consumer group, buffers changes per
    /// table, stages Parquet delta files, and commits each table's changes as one Iceberg
    /// snapshot that also records the Kafka offsets it covers. SIGTERM or SIGINT flushes,
    /// commits and exits 0.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load the topics into the tables once, up to the end offsets seen at start, then exit.
    ///
    /// Without --drop-and-recreate it continues from the offsets the tables already hold.
    Backfill {
        #[command(flatten)]
        config: ConfigArg,
        /// Delete each destination table and create it anew before loading.
        #[arg(long)]
        drop_and_recreate: bool,
        /// Only these destination tables (comma-separated `namespace.table`).
        #[arg(long, value_delimiter = ',', value_name = "TABLES")]
        tables: Vec<String>,
        /// Do not ask for confirmation before dropping tables.
        #[arg(long)]
        yes: bool,
    },
    /// Validate the configuration and try every permission Floe needs.
    ///
    /// Reports each check as ok, missing or failed, and for each missing permission the
    /// policy action that grants it. Exits 0 only when every check passes.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Create missing namespaces instead of only reporting them.
        #[arg(long)]
        create: bool,
    },
    /// Compact the tables: rewrite each table's rows, deletes applied, into few data files.
    ///
    /// For catalogs without a maintenance service (local, most REST catalogs). Safe while
    /// `floe run` commits to the same tables: a commit meanwhile makes the compaction start
    /// over. Old snapshots expire by the tables' history.expire.* properties, and their files
    /// are deleted where Floe expires snapshots.
    Maintain {
        #[command(flatten)]
        config: ConfigArg,
        /// Only these tables (comma-separated `namespace.table`); default: every table the
        /// configuration routes its topics to.
        #[arg(long, value_delimiter = ',', value_name = "TABLES")]
        tables: Vec<String>,
        /// Delete files under each table's location that no snapshot or metadata file
        /// references and that are older than this (local and REST catalogs Floe expires
        /// snapshots on; never on S3 Tables).
        #[arg(long, value_name = "AGE", default_value = "3days", value_parser = humantime::parse_duration)]
        orphans_older_than: std::time::Duration,
    },
    /// Print the least-privilege access policy for the configured resources.
    Policy {
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PolicyFormatArg::Json)]
        format: PolicyFormatArg,
        /// Include the permission to delete tables (`floe backfill --drop-and-recreate`).
        #[arg(long)]
        drop_and_recreate: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PolicyFormatArg {
    Json,
    Terraform,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(match cli.log_format {
        LogFormatArg::Auto => LogFormat::Auto,
        LogFormatArg::Json => LogFormat::Json,
        LogFormatArg::Pretty => LogFormat::Pretty,
    });
    let outcome = match cli.command {
        Command::Run { config } => cli::run(&config.config),
        Command::Backfill {
            config,
            drop_and_recreate,
            tables,
            yes,
        } => cli::backfill(&config.config, drop_and_recreate, &tables, yes),
        Command::Check { config, create } => cli::check(&config.config, create),
        Command::Maintain {
            config,
            tables,
            orphans_older_than,
        } => cli::maintain(&config.config, &tables, orphans_older_than),
        Command::Policy {
            config,
            format,
            drop_and_recreate,
        } => cli::policy(
            &config.config,
            match format {
                PolicyFormatArg::Json => PolicyFormat::Json,
                PolicyFormatArg::Terraform => PolicyFormat::Terraform,
            },
            drop_and_recreate,
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floe: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}
