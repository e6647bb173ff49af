//! Commit latency as a table's history grows, on the local catalog (a temporary directory).
//!
//! One engine commits 100 updated rows (of 10,000 keys) to one table, `FLOE_BENCH_COMMITS`
//! times (default 5,000), and prints the p50 and p99 latency of the 100 commits up to the
//! 100th, 1,000th and 5,000th commit, with the size of the table's metadata file and the
//! number of snapshots it holds then. Three tables:
//!
//! - `retention_default`: Iceberg's default retention (5 days), so no snapshot expires during
//!   the run: what a table looks like after N commits within 5 days;
//! - `keep_100`: `history.expire.max-snapshot-age-ms = 0`, `min-snapshots-to-keep = 100`: each
//!   commit expires the oldest snapshot once there are 100;
//! - `no_merge`: as `keep_100`, without manifest merging (`commit.manifest-merge.enabled =
//!   false`), for comparison;
//! - `maintained`: as `keep_100`, compacted (as `floe maintain` does) after every 500th commit;
//!   the compactions are not counted in the latencies.
//!
//! Then `scan`: `FLOE_BENCH_SCAN_COMMITS` (default 1,000) update commits into a table, and
//! DuckDB's best-of-5 full-scan time of it (`tests/support/iceberg_read.py duckdb --timing`,
//! with the test venv's Python), of the same table after `floe maintain`'s compaction and
//! after the next update commit, and of the same rows written fresh in one commit; once with
//! Iceberg's default retention and once keeping 100 snapshots (`keep_100_` tables).
//! `FLOE_BENCH_SCAN_DIR=<dir>` keeps those tables there (a local catalog) instead of in a
//! temporary directory.
//!
//! `FLOE_BENCH_SLOW=1` prints each commit that took over 50 ms, with its number.
//!
//! Run: `cargo bench --bench history` (`-- scan` for the scan part alone; it needs
//! `scripts/test-env.sh up` once, for the Python venv). Figures depend on the machine; compare
//! ratios.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use floe::catalog::local::LocalCatalog;
use floe::catalog::{TableCatalog, TableIdent};
use floe::commit::{
    CommitEngine, CommitSettings, CommittedOffsets, FileSettings, OP_COLUMN, TableChanges,
    TableSpec,
};

const KEYS: i64 = 10_000;
const ROWS: i64 = 100;

fn batch(commit: i64, op: &str) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(OP_COLUMN, DataType::Utf8, false),
    ]));
    let (start, n) = if op == "c" {
        (0, KEYS)
    } else {
        ((commit * ROWS) % KEYS, ROWS)
    };
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(start..start + n)),
            Arc::new(StringArray::from_iter_values(
                (start..start + n).map(|i| format!("name-{i}-{commit}")),
            )),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| op))),
        ],
    )
    .unwrap()
}

fn changes(batch: RecordBatch, next_offset: i64) -> TableChanges {
    let mut offsets = CommittedOffsets::default();
    for partition in 0..8 {
        offsets.advance("bench.inventory.items", partition, next_offset);
    }
    TableChanges {
        batches: vec![batch],
        offsets,
        truncated_at: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(
    dir: &Path,
    name: &str,
    properties: &[(&str, &str)],
    compact_every: Option<usize>,
    commits: usize,
) {
    let catalog = Arc::new(LocalCatalog::open(dir).unwrap());
    let engine = CommitEngine::new(
        catalog.clone(),
        CommitSettings::new(
            "bench",
            FileSettings {
                target_file_size: 128 * 1024 * 1024,
                zstd_level: 1,
            },
        ),
    );
    let spec = TableSpec {
        name: "bench.items".parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        extras: Default::default(),
        deletes: Default::default(),
        partition_spec: Vec::new(),
    };
    let ident = TableIdent {
        namespace: "bench".into(),
        name: "items".into(),
    };
    engine
        .commit(&spec, changes(batch(0, "c"), 1))
        .await
        .unwrap();
    let marks: Vec<usize> = [100, 1_000, 5_000, 10_000]
        .into_iter()
        .filter(|m| *m <= commits)
        .collect();
    let mut latencies = Vec::with_capacity(commits);
    for i in 1..=commits {
        let start = Instant::now();
        engine
            .commit(&spec, changes(batch(i as i64, "u"), 1 + i as i64))
            .await
            .unwrap();
        latencies.push(start.elapsed());
        if std::env::var_os("FLOE_BENCH_SLOW").is_some() && start.elapsed().as_millis() > 50 {
            eprintln!("slow commit {i}: {:?}", start.elapsed());
        }
        if compact_every.is_some_and(|n| i % n == 0) {
            engine.compact(&spec.name).await.unwrap();
        }
        if marks.contains(&i) {
            let mut last: Vec<Duration> = latencies[i.saturating_sub(100)..i].to_vec();
            last.sort();
            let table = catalog.load_table(&ident).await.unwrap().unwrap();
            let size = std::fs::metadata(&table.metadata_location)
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "{name:<18} commit {i:>6}: p50 {:>8.2} ms  p99 {:>8.2} ms  metadata {:>9} bytes  snapshots {:>5}",
                percentile(&last, 0.5).as_secs_f64() * 1e3,
                percentile(&last, 0.99).as_secs_f64() * 1e3,
                size,
                table.metadata.snapshots().len(),
            );
        }
    }
}

/// A table of the bench: its name, its properties, and how often it is compacted.
type Table<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<usize>);

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks the tables whose name holds it.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let commits: usize = std::env::var("FLOE_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keep_100: &[(&str, &str)] = &[
        ("history.expire.max-snapshot-age-ms", "0"),
        ("history.expire.min-snapshots-to-keep", "100"),
    ];
    let tables: [Table; 4] = [
        ("retention_default", &[], None),
        ("keep_100", keep_100, None),
        (
            "no_merge",
            &[
                ("history.expire.max-snapshot-age-ms", "0"),
                ("history.expire.min-snapshots-to-keep", "100"),
                ("commit.manifest-merge.enabled", "false"),
            ],
            None,
        ),
        ("maintained", keep_100, Some(500)),
    ];
    if filter.as_deref().is_none_or(|f| "scan".contains(f)) {
        let commits: usize = std::env::var("FLOE_BENCH_SCAN_COMMITS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000);
        // FLOE_BENCH_SCAN_DIR keeps the tables there, to look at afterwards.
        let dir = tempfile::tempdir().unwrap();
        let kept = std::env::var_os("FLOE_BENCH_SCAN_DIR").map(std::path::PathBuf::from);
        let dir = kept.as_deref().unwrap_or(dir.path());
        rt.block_on(scan(dir, commits, "", &[]));
        rt.block_on(scan(dir, commits, "keep_100_", keep_100));
        if filter.as_deref() == Some("scan") {
            return;
        }
    }
    for (name, properties, compact_every) in tables {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(run(dir.path(), name, properties, compact_every, commits));
    }
}

/// DuckDB's full-scan time of the table at `location`, in milliseconds (best of 5).
fn duckdb_scan_ms(location: &str) -> f64 {
    let cache = std::env::var_os("FLOE_CACHE").map_or_else(
        || Path::new(&std::env::var("HOME").unwrap()).join(".cache/floe"),
        std::path::PathBuf::from,
    );
    let out = std::process::Command::new(cache.join("venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/iceberg_read.py"
        ))
        .args(["duckdb", "--metadata", location, "--timing", "5"])
        .output()
        .expect("run the test venv's Python (scripts/test-env.sh up)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let timing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(timing["scanned"], KEYS);
    timing["scan_ms"].as_f64().unwrap()
}

/// `prefix` names the tables (and the line printed); `properties` are the updated table's.
async fn scan(dir: &Path, commits: usize, prefix: &str, properties: &[(&str, &str)]) {
    let catalog = Arc::new(LocalCatalog::open(dir).unwrap());
    let settings = CommitSettings::new(
        "bench",
        FileSettings {
            target_file_size: 128 * 1024 * 1024,
            zstd_level: 1,
        },
    );
    let engine = CommitEngine::new(catalog.clone(), settings.clone());
    let spec = |table: &str| TableSpec {
        name: format!("bench.{prefix}{table}").parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        extras: Default::default(),
        deletes: Default::default(),
        partition_spec: Vec::new(),
    };
    let location = |table: &'static str| {
        let catalog = catalog.clone();
        async move {
            let ident = TableIdent {
                namespace: "bench".into(),
                name: format!("{prefix}{table}"),
            };
            let table = catalog.load_table(&ident).await.unwrap().unwrap();
            table.metadata_location
        }
    };
    engine
        .commit(&spec("updated"), changes(batch(0, "c"), 1))
        .await
        .unwrap();
    for i in 1..=commits {
        engine
            .commit(
                &spec("updated"),
                changes(batch(i as i64, "u"), 1 + i as i64),
            )
            .await
            .unwrap();
    }
    let updated = duckdb_scan_ms(&location("updated").await);
    let compacted = engine.compact(&spec("updated").name).await.unwrap();
    let after = duckdb_scan_ms(&location("updated").await);
    // The next commit no longer lists the compaction's removed entries.
    engine
        .commit(
            &spec("updated"),
            changes(batch(commits as i64 + 1, "u"), 2 + commits as i64),
        )
        .await
        .unwrap();
    let next = duckdb_scan_ms(&location("updated").await);

    // The same rows in one commit: each key with its last name.
    let mut names: Vec<String> = (0..KEYS).map(|k| format!("name-{k}-0")).collect();
    for i in 1..=commits as i64 + 1 {
        let start = (i * ROWS) % KEYS;
        for k in start..start + ROWS {
            names[k as usize] = format!("name-{k}-{i}");
        }
    }
    let fresh = RecordBatch::try_new(
        batch(0, "c").schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..KEYS)),
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from_iter_values((0..KEYS).map(|_| "c"))),
        ],
    )
    .unwrap();
    engine
        .commit(&spec("fresh"), changes(fresh, 1))
        .await
        .unwrap();
    let fresh = duckdb_scan_ms(&location("fresh").await);
    println!(
        "{prefix}scan after {commits} update commits: {updated:.1} ms ({:.1}x fresh); after \
         compaction ({} data and {} delete files into {}): {after:.1} ms ({:.1}x); after the \
         next commit: {next:.1} ms ({:.1}x); fresh: {fresh:.1} ms",
        updated / fresh,
        compacted.data_files_before,
        compacted.delete_files_before,
        compacted.data_files_after,
        after / fresh,
        next / fresh,
    );
}
