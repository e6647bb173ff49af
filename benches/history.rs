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
//!   false`), for comparison.
//!
//! Run: `cargo bench --bench history`. Figures depend on the machine; compare ratios.

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

async fn run(dir: &Path, name: &str, properties: &[(&str, &str)], commits: usize) {
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

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks the tables whose name holds it.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let commits: usize = std::env::var("FLOE_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tables: [(&str, &[(&str, &str)]); 3] = [
        ("retention_default", &[]),
        (
            "keep_100",
            &[
                ("history.expire.max-snapshot-age-ms", "0"),
                ("history.expire.min-snapshots-to-keep", "100"),
            ],
        ),
        (
            "no_merge",
            &[
                ("history.expire.max-snapshot-age-ms", "0"),
                ("history.expire.min-snapshots-to-keep", "100"),
                ("commit.manifest-merge.enabled", "false"),
            ],
        ),
    ];
    for (name, properties) in tables {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(run(dir.path(), name, properties, commits));
    }
}
