//! End-to-end throughput of Floe's streaming runtime in-process, against librdkafka's
//! in-process mock cluster instead of a real broker: the same run as `benches/e2e.py`, without
//! the slow test broker, so the figures show Floe's own ceiling.
//!
//! 1. Starts a one-broker `rdkafka::mocking::MockCluster` and creates a 4-partition topic.
//! 2. Produces about N Debezium change events (`FLOE_BENCH_EVENTS`, default 200,000) in the
//!    shape `scripts/fixtures/produce_sample.py` writes: PostgreSQL connector envelope with the
//!    Kafka Connect schema (~2.8 KB each), table `inventory.customers`, keyed by the primary
//!    key; COUNT inserts, then updates of every third row, then deletes (each followed by its
//!    tombstone) of every fifth row. The producer compresses with zstd
//!    (`FLOE_BENCH_COMPRESSION`): the mock broker keeps only ~5 MB of record batches per
//!    partition and silently drops older ones, so 200k uncompressed events (~560 MB) would not
//!    fit (the bench checks that the topic holds every event). Unlike e2e.py's uncompressed
//!    topic, the consumer therefore also decompresses (inside librdkafka, in this process).
//! 3. Runs `floe::runtime::Runtime` (local catalog in a temporary directory, flush interval 2s,
//!    commit interval 5s, metrics off) on a multi-thread tokio runtime until the consumer
//!    group's committed offsets reach the end of every partition (polled every 500 ms from a
//!    separate thread, as e2e.py does).
//! 4. Reports, for the run only (producing is excluded):
//!    - events per CPU-second (user + sys of the whole process, from /proc/self/stat). The mock
//!      broker runs in this process, so its CPU time (serving fetches, offset commits) is
//!      INCLUDED: the figure is a lower bound for Floe alone;
//!    - wall-clock events/s, and when the committed offsets reached the end;
//!    - RSS when the run starts (this already holds the mock broker's copy of every produced
//!      event) and the peak RSS during the run (VmHWM, reset just before the run), and the
//!      difference, which is roughly Floe's own peak;
//!    - commits, data and delete files per commit (from the table's snapshots), rows written.
//! 5. Verifies the table: reads the current snapshot's data, equality-delete and
//!    position-delete files through Floe's local catalog (Iceberg rules: an equality delete
//!    removes rows of the same key in data files of a lower sequence number, a position delete
//!    the row at that position of the data file it names) and checks that exactly the rows 1..=COUNT
//!    without multiples of 5 are live, each with its last email (version 1 for multiples of 3).
//!    Exits non-zero when anything is wrong.
//!
//! With `FLOE_BENCH_BACKFILL=1`, step 3 runs `floe backfill` instead: the release binary as a
//! child process, at Floe's default flush settings, reading the topic to its end. The figures
//! are then the child's own, without the mock broker, which stays in this process: user + sys
//! CPU from getrusage of the waited-for child, and peak RSS as the child's VmHWM, read from
//! /proc every 10 ms while it runs (getrusage's peak RSS of a child is not its own: it includes
//! this process's RSS at the fork, here the mock broker's copy of every event).
//! `FLOE_BENCH_FLOE_BIN` runs another floe binary (to compare two builds). The table is
//! checked the same way.
//! The mock broker keeps ~5 MB of record batches per partition: millions of events need
//! hundreds of partitions (`FLOE_BENCH_PARTITIONS=512` holds 10M).
//!
//! Run: `cargo bench --bench e2e_mock` (release build; `RUST_LOG=info` shows Floe's log).
//! Quick check: `cargo bench --bench e2e_mock -- --test` or `cargo test --benches`, which use
//! 2,000 events unless `FLOE_BENCH_EVENTS` says otherwise. Other knobs:
//! `FLOE_BENCH_PARTITIONS` (default 4), `FLOE_BENCH_COMPRESSION` (default zstd),
//! `FLOE_BENCH_SCHEMA=0` (records without the Connect schema envelope, as the JsonConverter
//! writes them with schemas.enable=false),
//! `FLOE_BENCH_TIMEOUT_SECS` (default 900). Floe's own `FLOE_<SECTION>__<KEY>` overrides apply
//! to the bench's config (e.g. `FLOE_FLUSH__COMMIT_INTERVAL=10s`) and are printed with the
//! figures.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail, ensure};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use base64::Engine;
use floe::catalog::local::LocalCatalog;
use floe::catalog::{TableCatalog, TableIdent};
use floe::config::TableName;
use floe::runtime::{RunSummary, Runtime};
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, ManifestList};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "dbserver1.inventory.customers";
const TABLE: &str = "bench.customers";
/// Events per row id in produce_sample.py's mix: 1 insert, 1/3 update, 1/5 (delete + tombstone).
const EVENTS_PER_ROW: f64 = 1.0 + 1.0 / 3.0 + 2.0 / 5.0;

struct Settings {
    /// Approximate number of events (as e2e.py's --events).
    events: u64,
    partitions: i32,
    /// The producer's compression.type.
    compression: String,
    timeout: Duration,
    /// Run `floe backfill` as a child process at Floe's default flush settings instead of
    /// `floe run` in-process.
    backfill: bool,
    /// Records with the Connect schema envelope (the JsonConverter's schemas.enable=true) or
    /// without (only the payload).
    schema: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn envelope(&self) -> &'static str {
        if self.schema {
            "with the schema envelope"
        } else {
            "without the schema envelope"
        }
    }

    fn from_env() -> anyhow::Result<Self> {
        // `cargo bench` passes --bench; `cargo test --benches` passes nothing, and
        // `cargo bench -- --test` asks for a quick check too.
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
        let settings = Settings {
            events: env_or("FLOE_BENCH_EVENTS", if full { 200_000 } else { 2_000 })?,
            partitions: env_or("FLOE_BENCH_PARTITIONS", 4)?,
            compression: env_or("FLOE_BENCH_COMPRESSION", "zstd".to_string())?,
            timeout: Duration::from_secs(env_or("FLOE_BENCH_TIMEOUT_SECS", 900)?),
            backfill: env_or("FLOE_BENCH_BACKFILL", 0u8)? == 1,
            schema: env_or("FLOE_BENCH_SCHEMA", 1u8)? == 1,
        };
        ensure!(
            settings.events >= 10,
            "FLOE_BENCH_EVENTS must be at least 10"
        );
        ensure!(
            settings.partitions >= 1,
            "FLOE_BENCH_PARTITIONS must be at least 1"
        );
        Ok(settings)
    }
}

/// The floe binary's allocator, so that the in-process run allocates as it would.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e_mock: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let count = ((settings.events as f64 / EVENTS_PER_ROW) as u32).max(5);

    // --- 1. the broker -------------------------------------------------------------------
    let cluster = MockCluster::new(1).context("start the mock cluster")?;
    cluster
        .create_topic(TOPIC, settings.partitions, 1)
        .context("create the topic")?;
    let brokers = cluster.bootstrap_servers();

    // --- 2. the events -------------------------------------------------------------------
    let produce_started = Instant::now();
    let produced = produce(&brokers, count, &settings.compression, settings.schema)?;
    let produce_seconds = produce_started.elapsed().as_secs_f64();
    let in_topic = topic_size(&brokers, settings.partitions)?;
    ensure!(
        in_topic == produced,
        "produced {produced} events but the topic holds {in_topic}: the mock broker keeps only \
         ~5 MB of record batches per partition and drops older ones (use a better \
         FLOE_BENCH_COMPRESSION, more partitions or fewer events)"
    );
    eprintln!(
        "e2e_mock: produced {produced} events ({count} rows) into {} partitions in {produce_seconds:.1}s; running Floe",
        settings.partitions
    );

    // --- 3. the run ----------------------------------------------------------------------
    let work = tempfile::Builder::new()
        .prefix("floe-e2e-mock-")
        .tempdir()?;
    let catalog_path = work.path().join("data");
    let group = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    if settings.backfill {
        return backfill(&settings, &brokers, &group, work.path(), count, produced);
    }
    let config = floe_config(&brokers, &group, &catalog_path)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;

    // Stops the run once the group's committed offsets reach the end of every partition.
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (brokers, group, stop) = (brokers.clone(), group.clone(), stop_watching.clone());
        let partitions = settings.partitions;
        let timeout = settings.timeout;
        std::thread::spawn(move || {
            let result = watch_committed(&brokers, &group, partitions, timeout, &stop);
            let _ = reached_tx.send(());
            result
        })
    };
    let shutdown = async move {
        let _ = reached_rx.await;
    };

    reset_peak_rss();
    let rss_at_start = proc_status_kib("VmRSS");
    let cpu_before = process_cpu_seconds()?;
    let started = Instant::now();
    let outcome: anyhow::Result<RunSummary> = runtime.block_on(async {
        let floe = Runtime::new(config).await.context("start the runtime")?;
        floe.run(shutdown).await.context("floe run")
    });
    let wall = started.elapsed();
    let cpu = process_cpu_seconds()? - cpu_before;
    let peak_rss = proc_status_kib("VmHWM");

    stop_watching.store(true, Ordering::Relaxed);
    let reached = watcher
        .join()
        .map_err(|_| anyhow!("the offset watcher panicked"))?;
    let summary = outcome?;
    let watched = reached.context("waiting for the committed offsets")?;
    let reached = watched.reached;
    // Between the first offset commit and the last: no group join, no first window.
    let steady = watched.first.and_then(|(at, covered)| {
        let span = reached.saturating_sub(at).as_secs_f64();
        (span > 0.0).then(|| (watched.total - covered) as f64 / span)
    });
    drop(cluster);

    // --- 4. + 5. the table ---------------------------------------------------------------
    let table = runtime
        .block_on(read_table(&catalog_path))
        .context("read the table back")?;
    let problems = check_rows(&table.live, count);

    let events = summary.records;
    let wall_s = wall.as_secs_f64();
    let per_commit = |files: u64| {
        if table.snapshots == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", files as f64 / table.snapshots as f64)
        }
    };
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let peak_growth = match (peak_rss, rss_at_start) {
        (Some(p), Some(s)) => Some(p.saturating_sub(s)),
        _ => None,
    };
    println!();
    println!("e2e_mock: floe run in-process against the librdkafka mock cluster");
    println!(
        "  events consumed          {events} (produced {produced}: {count} rows, {} partitions, {} compression, {})",
        settings.partitions,
        settings.compression,
        settings.envelope()
    );
    println!(
        "  events per CPU-second    {:.0}   (process user+sys {cpu:.2}s; includes the in-process mock broker)",
        events as f64 / cpu.max(1e-9)
    );
    println!(
        "  wall events/s            {:.0}   (wall {wall_s:.1}s incl. group join; offsets at the end after {:.1}s)",
        events as f64 / wall_s,
        reached.as_secs_f64()
    );
    println!(
        "  steady events/s          {}   (events the group's offsets covered from its first offset commit to the last, per second)",
        steady.map_or("-".to_string(), |r| format!("{r:.0}"))
    );
    println!(
        "  peak RSS during run      {} MiB   (RSS at run start {} MiB, which already holds the mock broker's log of every event; growth {} MiB)",
        mib(peak_rss),
        mib(rss_at_start),
        mib(peak_growth)
    );
    println!(
        "  commits                  {}   (snapshots in the table: {})",
        summary.commits, table.snapshots
    );
    println!(
        "  data files per commit    {}",
        per_commit(table.data_files_added)
    );
    println!(
        "  delete files per commit  {}",
        per_commit(table.delete_files_added)
    );
    println!("  rows written             {}", summary.rows_written);
    println!(
        "  live rows in the table   {} (expected {})",
        table.live.len(),
        expected_live(count)
    );
    println!("  producing (not measured) {produce_seconds:.1}s");
    let consumed = if events >= produced {
        Ok(())
    } else {
        Err(anyhow!(
            "Floe consumed {events} events but {produced} were produced"
        ))
    };
    verdict(problems, consumed)
}

/// Prints the config overrides and the verdict: the table's problems first, then `also`.
fn verdict(problems: Option<String>, also: anyhow::Result<()>) -> anyhow::Result<()> {
    let overrides = config_overrides();
    if !overrides.is_empty() {
        println!("  config overrides         {}", overrides.join(" "));
    }
    if let Some(problems) = problems {
        println!("  VERIFY                   FAILED");
        bail!("the table is wrong: {problems}");
    }
    also?;
    println!(
        "  VERIFY                   ok: exactly the expected rows, each with its last version"
    );
    Ok(())
}

/// `floe backfill` of the whole topic as a child process, at Floe's default flush settings
/// (`FLOE_<SECTION>__<KEY>` variables reach it): its own CPU time and peak RSS, without the mock
/// broker's, then the same check of the table.
fn backfill(
    settings: &Settings,
    brokers: &str,
    group: &str,
    work: &Path,
    count: u32,
    produced: u64,
) -> anyhow::Result<()> {
    let catalog_path = work.join("data");
    let config = work.join("backfill.toml");
    std::fs::write(&config, config_text(brokers, group, &catalog_path, ""))?;
    let log_path = work.join("floe.log");
    let started = Instant::now();
    let binary = std::env::var("FLOE_BENCH_FLOE_BIN").unwrap_or(env!("CARGO_BIN_EXE_floe").into());
    let mut child = std::process::Command::new(&binary)
        .args(["--log-format", "json", "backfill", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("start floe backfill ({binary})"))?;
    // The child's own peak, read from /proc while it runs: getrusage's peak for a child
    // includes this process's RSS at the fork (the mock broker's copy of every event).
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "floe backfill exited with {status}; the end of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let usage = children_usage();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let table = runtime
        .block_on(read_table(&catalog_path))
        .context("read the table back")?;
    let problems = check_rows(&table.live, count);
    println!();
    println!("e2e_mock: floe backfill as a child process against the librdkafka mock cluster");
    println!(
        "  events                   {produced} ({count} rows, {} partitions, {} compression, {})",
        settings.partitions,
        settings.compression,
        settings.envelope()
    );
    println!(
        "  events per CPU-second    {:.0}   (floe's user+sys {:.2}s)",
        produced as f64 / usage.cpu_seconds.max(1e-9),
        usage.cpu_seconds
    );
    println!(
        "  wall events/s            {:.0}   (wall {wall:.1}s, from start to exit)",
        produced as f64 / wall
    );
    println!(
        "  peak RSS                 {:.1} MiB   (floe's own VmHWM, read every 10 ms)",
        peak_kib as f64 / 1024.0
    );
    println!("  commits                  {}", table.snapshots);
    println!(
        "  live rows in the table   {} (expected {})",
        table.live.len(),
        expected_live(count)
    );
    verdict(problems, Ok(()))
}

struct ChildUsage {
    cpu_seconds: f64,
}

/// CPU time of the children this process waited for (here: the one backfill).
fn children_usage() -> ChildUsage {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    ChildUsage {
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    }
}

/// The bench's config for the in-process run: flushes every 2 s, commits every 5 s.
fn floe_config(brokers: &str, group: &str, catalog: &Path) -> anyhow::Result<floe::config::Config> {
    let text = config_text(
        brokers,
        group,
        catalog,
        "[flush]\ninterval = \"2s\"\ncommit_interval = \"5s\"\n",
    );
    // Floe's usual FLOE_<SECTION>__<KEY> overrides apply (FLOE_BENCH_* have no "__").
    floe::config::load_str(&text, Path::new("e2e_mock.toml"), std::env::vars())
        .context("bench config")
}

/// One topic routed to one table of a local catalog, metrics off, plus `extra`.
fn config_text(brokers: &str, group: &str, catalog: &Path, extra: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{TOPIC}"]
[[tables.route]]
topic = "{TOPIC}"
table = "{TABLE}"
[catalog]
type = "local"
path = "{catalog}"
[metrics]
enabled = false
{extra}"#,
        catalog = catalog.display()
    )
}

/// The FLOE_<SECTION>__<KEY> variables that change the bench's Floe config.
fn config_overrides() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(floe::config::ENV_PREFIX) && k.contains("__"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    vars
}

// ---------------------------------------------------------------------------------------------
// Events, byte for byte as produce_sample.py's json.dumps writes them (", " and ": " separators,
// keys in the same order).

const KEY_SCHEMA: &str = concat!(
    r#"{"type": "struct", "name": "dbserver1.inventory.customers.Key", "optional": false, "#,
    r#""fields": [{"type": "int32", "optional": false, "field": "id"}]}"#
);

const ROW_FIELDS: &str = concat!(
    r#"[{"type": "int32", "optional": false, "field": "id"}, "#,
    r#"{"type": "string", "optional": false, "field": "first_name"}, "#,
    r#"{"type": "string", "optional": false, "field": "last_name"}, "#,
    r#"{"type": "string", "optional": false, "field": "email"}, "#,
    r#"{"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "#,
    r#""version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "#,
    r#""field": "balance"}, "#,
    r#"{"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "#,
    r#""version": 1, "field": "updated_at"}]"#
);

const SOURCE_SCHEMA: &str = concat!(
    r#"{"type": "struct", "name": "io.debezium.connector.postgresql.Source", "#,
    r#""optional": false, "field": "source", "fields": ["#,
    r#"{"type": "string", "optional": false, "field": "version"}, "#,
    r#"{"type": "string", "optional": false, "field": "connector"}, "#,
    r#"{"type": "string", "optional": false, "field": "name"}, "#,
    r#"{"type": "int64", "optional": false, "field": "ts_ms"}, "#,
    r#"{"type": "string", "optional": true, "field": "snapshot"}, "#,
    r#"{"type": "string", "optional": false, "field": "db"}, "#,
    r#"{"type": "string", "optional": false, "field": "schema"}, "#,
    r#"{"type": "string", "optional": false, "field": "table"}, "#,
    r#"{"type": "int64", "optional": true, "field": "txId"}, "#,
    r#"{"type": "int64", "optional": true, "field": "lsn"}]}"#
);

fn value_schema() -> String {
    let row = |name: &str| {
        format!(
            r#"{{"type": "struct", "name": "dbserver1.inventory.customers.Value", "optional": true, "field": "{name}", "fields": {ROW_FIELDS}}}"#
        )
    };
    format!(
        concat!(
            r#"{{"type": "struct", "name": "dbserver1.inventory.customers.Envelope", "#,
            r#""optional": false, "fields": [{}, {}, {}, "#,
            r#"{{"type": "string", "optional": false, "field": "op"}}, "#,
            r#"{{"type": "int64", "optional": true, "field": "ts_ms"}}]}}"#
        ),
        row("before"),
        row("after"),
        SOURCE_SCHEMA
    )
}

fn key(i: u32, with_schema: bool) -> String {
    if with_schema {
        format!(r#"{{"schema": {KEY_SCHEMA}, "payload": {{"id": {i}}}}}"#)
    } else {
        format!(r#"{{"id": {i}}}"#)
    }
}

/// Connect Decimal: big-endian two's complement of the unscaled value, base64.
fn decimal_bytes(cents: i64) -> String {
    let bits = 64 - cents.unsigned_abs().leading_zeros() as usize;
    let length = ((bits + 8) / 8).clamp(1, 8);
    base64::engine::general_purpose::STANDARD.encode(&cents.to_be_bytes()[8 - length..])
}

fn email(i: u32, version: u32) -> String {
    format!("user{i}.v{version}@example.com")
}

fn row(i: u32, version: u32) -> String {
    format!(
        r#"{{"id": {i}, "first_name": "first{i}", "last_name": "last{i}", "email": "{}", "balance": "{}", "updated_at": {}}}"#,
        email(i, version),
        decimal_bytes(i as i64 * 100 + version as i64),
        1_700_000_000_000_000i64 + i as i64 * 1_000_000 + version as i64
    )
}

/// A Debezium value: `{"schema": .., "payload": ..}`, or only the payload when `schema` is
/// empty.
fn envelope(schema: &str, op: &str, before: Option<&str>, after: Option<&str>, lsn: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let snapshot = if op == "r" { "true" } else { "false" };
    let payload = format!(
        concat!(
            r#"{{"before": {before}, "after": {after}, "#,
            r#""source": {{"version": "2.7.0.Final", "connector": "postgresql", "name": "dbserver1", "#,
            r#""ts_ms": {now}, "snapshot": "{snapshot}", "db": "postgres", "schema": "inventory", "#,
            r#""table": "customers", "txId": {tx}, "lsn": {lsn}}}, "op": "{op}", "ts_ms": {now}}}"#
        ),
        before = before.unwrap_or("null"),
        after = after.unwrap_or("null"),
        now = now,
        snapshot = snapshot,
        tx = 1000 + lsn,
        lsn = lsn,
        op = op,
    );
    if schema.is_empty() {
        payload
    } else {
        format!(r#"{{"schema": {schema}, "payload": {payload}}}"#)
    }
}

/// produce_sample.py's `events(count)`: (key, value), value None for a tombstone.
fn events(count: u32, with_schema: bool) -> impl Iterator<Item = (String, Option<String>)> {
    let schema = if with_schema {
        value_schema()
    } else {
        String::new()
    };
    let mut lsn = 0u64;
    let inserts = (1..=count).map(|i| (i, 'c'));
    let updates = (3..=count).step_by(3).map(|i| (i, 'u'));
    let deletes = (5..=count).step_by(5).flat_map(|i| [(i, 'd'), (i, 't')]);
    inserts.chain(updates).chain(deletes).map(move |(i, op)| {
        let value = match op {
            'c' => {
                lsn += 1;
                Some(envelope(&schema, "c", None, Some(&row(i, 0)), lsn))
            }
            'u' => {
                lsn += 1;
                Some(envelope(
                    &schema,
                    "u",
                    Some(&row(i, 0)),
                    Some(&row(i, 1)),
                    lsn,
                ))
            }
            'd' => {
                lsn += 1;
                let before = row(i, if i % 3 == 0 { 1 } else { 0 });
                Some(envelope(&schema, "d", Some(&before), None, lsn))
            }
            _ => None, // the tombstone after a delete
        };
        (key(i, with_schema), value)
    })
}

/// Counts failed deliveries.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn produce(brokers: &str, count: u32, compression: &str, with_schema: bool) -> anyhow::Result<u64> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("compression.type", compression)
        .create_with_context(Deliveries::default())
        .context("create the producer")?;
    let mut n = 0u64;
    for (key, value) in events(count, with_schema) {
        let mut record = BaseRecord::to(TOPIC).key(&key);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e).context("produce"),
            }
        }
        producer.poll(Duration::ZERO);
        n += 1;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flush the producer")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    ensure!(failed == 0, "{failed} of {n} events were not delivered");
    Ok(n)
}

fn kafka_consumer(brokers: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("create a consumer")
}

fn topic_size(brokers: &str, partitions: i32) -> anyhow::Result<u64> {
    let consumer = kafka_consumer(brokers, "e2e-mock-size")?;
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(TOPIC, p, Duration::from_secs(10))?;
        total += (high - low) as u64;
    }
    Ok(total)
}

/// What the offset watcher saw.
struct Watched {
    /// When the committed offsets reached the end of every partition.
    reached: Duration,
    /// When the first offsets were committed, and how many events they covered.
    first: Option<(Duration, i64)>,
    /// Events the committed offsets cover at the end.
    total: i64,
}

/// Polls every 500 ms until the group's committed offsets reach the end of every partition.
/// Fails after `timeout` or when `stop` is set first.
fn watch_committed(
    brokers: &str,
    group: &str,
    partitions: i32,
    timeout: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Watched> {
    // Not subscribed: it never joins the group, it only reads the group's offsets.
    let consumer = kafka_consumer(brokers, group)?;
    let started = Instant::now();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(TOPIC, p);
    }
    let mut first = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            bail!("the run ended before the committed offsets reached the end of the topic");
        }
        if started.elapsed() > timeout {
            bail!("committed offsets did not reach the end of the topic within {timeout:?}");
        }
        let mut total = 0;
        let done = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(committed) => (0..partitions).all(|p| {
                let high = consumer
                    .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                    .map_or(i64::MAX, |(_, high)| high);
                match committed.find_partition(TOPIC, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => {
                        total += o;
                        o >= high
                    }
                    _ => high == 0,
                }
            }),
            Err(e) => {
                tracing::warn!(error = %e, "reading committed offsets failed; retrying");
                false
            }
        };
        if first.is_none() && total > 0 {
            first = Some((started.elapsed(), total));
        }
        if done {
            return Ok(Watched {
                reached: started.elapsed(),
                first,
                total,
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------------
// Process figures.

/// User + sys CPU seconds of this process (all threads), from /proc/self/stat.
fn process_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3, "state".
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("/proc/self/stat")?.parse::<u64>()? as f64)
    };
    // utime and stime are fields 14 and 15, in USER_HZ ticks (100 per second on Linux).
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// A `Vm*` line of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resets VmHWM to the current RSS (Linux: "5" into clear_refs), so the peak is the run's.
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("e2e_mock: cannot reset the peak RSS ({e}); it will include producing");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the table back.

struct TableState {
    snapshots: u64,
    data_files_added: u64,
    delete_files_added: u64,
    /// Live rows: id -> email.
    live: HashMap<i64, String>,
}

async fn read_table(catalog_path: &Path) -> anyhow::Result<TableState> {
    let catalog = LocalCatalog::open(catalog_path)?;
    let name: TableName = TABLE.parse().map_err(|e: String| anyhow!(e))?;
    let ident = TableIdent::normalised(&name).map_err(|e| anyhow!(e))?;
    let table = catalog
        .load_table(&ident)
        .await?
        .context("the table was not created")?;
    let metadata = &table.metadata;

    let (mut snapshots, mut data_files_added, mut delete_files_added) = (0, 0, 0);
    for snapshot in metadata.snapshots() {
        let get = |key: &str| -> u64 {
            snapshot
                .summary()
                .additional_properties
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        snapshots += 1;
        data_files_added += get("added-data-files");
        delete_files_added += get("added-delete-files");
    }

    let current = metadata
        .current_snapshot()
        .context("the table has no snapshot")?;
    let bytes = table
        .file_io
        .new_input(current.manifest_list())?
        .read()
        .await?;
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version())?;
    let mut data_files = Vec::new();
    let mut delete_files = Vec::new();
    let mut position_delete_files = Vec::new();
    for manifest in list.entries() {
        for entry in manifest.load_manifest(&table.file_io).await?.entries() {
            if !entry.is_alive() {
                continue;
            }
            let seq = entry
                .sequence_number()
                .context("manifest entry without a sequence number")?;
            let path = entry.file_path().to_string();
            match entry.content_type() {
                DataContentType::Data => data_files.push((seq, path)),
                DataContentType::EqualityDeletes => delete_files.push((seq, path)),
                DataContentType::PositionDeletes => position_delete_files.push(path),
            }
        }
    }

    // The highest sequence number at which each key was deleted.
    let mut deleted_at: HashMap<i64, i64> = HashMap::new();
    for (seq, path) in &delete_files {
        for batch in read_parquet(&table.file_io, path).await? {
            let ids = int64_column(&batch, "id", path)?;
            for id in ids.as_primitive::<Int64Type>().values() {
                let at = deleted_at.entry(*id).or_insert(*seq);
                *at = (*at).max(*seq);
            }
        }
    }
    // Rows removed by position (data file path, row position); a position-delete file only
    // names files written before it.
    let mut deleted_rows: HashSet<(String, i64)> = HashSet::new();
    for path in &position_delete_files {
        for batch in read_parquet(&table.file_io, path).await? {
            let files = batch
                .column_by_name("file_path")
                .with_context(|| format!("{path}: no file_path column"))?;
            let files = arrow::compute::cast(files, &DataType::Utf8)?;
            let files = files.as_string::<i32>();
            let positions = int64_column(&batch, "pos", path)?;
            for (file, pos) in files
                .iter()
                .zip(positions.as_primitive::<Int64Type>().values())
            {
                deleted_rows.insert((file.unwrap_or_default().to_string(), *pos));
            }
        }
    }
    let mut live = HashMap::new();
    for (seq, path) in &data_files {
        let mut position = 0i64;
        for batch in read_parquet(&table.file_io, path).await? {
            let ids = int64_column(&batch, "id", path)?;
            let first = position;
            position += batch.num_rows() as i64;
            let emails = batch
                .column_by_name("email")
                .with_context(|| format!("{path}: no email column"))?;
            let emails = arrow::compute::cast(emails, &DataType::Utf8)?;
            let emails = emails.as_string::<i32>();
            for (row, id) in ids.as_primitive::<Int64Type>().values().iter().enumerate() {
                // An equality delete applies to data files of a LOWER sequence number.
                if deleted_at.get(id).is_some_and(|at| *at > *seq)
                    || deleted_rows.contains(&(path.clone(), first + row as i64))
                {
                    continue;
                }
                let email = if emails.is_null(row) {
                    String::new()
                } else {
                    emails.value(row).to_string()
                };
                if let Some(previous) = live.insert(*id, email) {
                    bail!("id {id} is live twice (also as {previous:?}); second copy in {path}");
                }
            }
        }
    }
    Ok(TableState {
        snapshots,
        data_files_added,
        delete_files_added,
        live,
    })
}

async fn read_parquet(file_io: &FileIO, path: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let bytes = file_io.new_input(path)?.read().await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

fn int64_column(
    batch: &RecordBatch,
    name: &str,
    path: &str,
) -> anyhow::Result<arrow::array::ArrayRef> {
    let column = batch
        .column_by_name(name)
        .with_context(|| format!("{path}: no {name} column"))?;
    Ok(arrow::compute::cast(column, &DataType::Int64)?)
}

fn expected_live(count: u32) -> u64 {
    (count - count / 5) as u64
}

/// What is wrong with the live rows, if anything.
fn check_rows(live: &HashMap<i64, String>, count: u32) -> Option<String> {
    let mut problems = Vec::new();
    let mut wrong = 0u64;
    for i in 1..=count {
        let expected = (i % 5 != 0).then(|| email(i, if i % 3 == 0 { 1 } else { 0 }));
        let actual = live.get(&(i as i64));
        if actual != expected.as_ref() {
            wrong += 1;
            if problems.len() < 5 {
                problems.push(format!("id {i}: expected {expected:?}, found {actual:?}"));
            }
        }
    }
    let stray = live
        .keys()
        .filter(|id| **id < 1 || **id > count as i64)
        .count();
    if stray > 0 {
        problems.push(format!("{stray} ids outside 1..={count}"));
    }
    if wrong == 0 && stray == 0 {
        None
    } else {
        Some(format!(
            "{} live rows, expected {}; {wrong} ids wrong: {}",
            live.len(),
            expected_live(count),
            problems.join("; ")
        ))
    }
}
