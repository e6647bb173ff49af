//! Commit engine benchmarks on the local catalog (a temporary directory):
//!
//! - `commit_rows`: one commit of N upserted rows of a 20-column table, first as inserts into
//!   a new table (data files only), then as updates of the same keys (data files, and
//!   position-delete files from the key index). N is `FLOE_BENCH_ROWS` (default 1,000,000).
//!   Reported as rows/s. Each runs twice: into an unpartitioned table, and into one
//!   partitioned by `bucket(64, id)` (`..._bucket_64`: 64 data files per commit).
//! - `commit_latency`: the cost of one small commit (100 updated rows) on a table that already
//!   has 1, 25 or 100 snapshots, to show how commit cost grows with table history.
//!
//! Run: `cargo bench --bench commit`. Figures depend on the machine; compare ratios.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floe::catalog::local::LocalCatalog;
use floe::commit::{
    CommitEngine, CommitSettings, CommittedOffsets, FileSettings, OP_COLUMN, TableChanges,
    TableSpec,
};
use tokio::runtime::Runtime;

fn rows_from_env() -> usize {
    std::env::var("FLOE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A 20-column row image shaped like a typical OLTP table: key, integers, amounts, text,
/// flags and timestamps.
fn batch(start: i64, n: usize, op: &str, version: i64) -> RecordBatch {
    let ids = start..start + n as i64;
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(ids.clone()))];
    for c in 0..4 {
        fields.push(Field::new(format!("int_{c}"), DataType::Int32, true));
        columns.push(Arc::new(Int32Array::from_iter_values(
            ids.clone()
                .map(|i| ((i * 7 + c + version) % 100_000) as i32),
        )));
    }
    for c in 0..3 {
        fields.push(Field::new(
            format!("amount_{c}"),
            DataType::Decimal128(12, 2),
            true,
        ));
        columns.push(Arc::new(
            Decimal128Array::from_iter_values(
                ids.clone()
                    .map(|i| (i * 131 + c + version) as i128 % 10_000_000),
            )
            .with_precision_and_scale(12, 2)
            .unwrap(),
        ));
    }
    for c in 0..2 {
        fields.push(Field::new(format!("ratio_{c}"), DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from_iter_values(
            ids.clone()
                .map(|i| (i as f64 + c as f64) / 7.0 + version as f64),
        )));
    }
    for c in 0..5 {
        fields.push(Field::new(format!("text_{c}"), DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter_values(
            ids.clone()
                .map(|i| format!("value-{c}-{}-{version}", i % 5000)),
        )));
    }
    for c in 0..2 {
        fields.push(Field::new(format!("flag_{c}"), DataType::Boolean, true));
        columns.push(Arc::new(BooleanArray::from_iter(
            ids.clone().map(|i| Some((i + c) % 3 == 0)),
        )));
    }
    for c in 0..3 {
        fields.push(Field::new(
            format!("ts_{c}"),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                ids.clone()
                    .map(|i| 1_700_000_000_000_000 + i * 1_000 + c + version),
            )
            .with_timezone("UTC"),
        ));
    }
    fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(op, n),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn engine(path: &Path) -> CommitEngine {
    CommitEngine::new(
        Arc::new(LocalCatalog::open(path).unwrap()),
        CommitSettings::new(
            "bench",
            FileSettings {
                target_file_size: 128 * 1024 * 1024,
                zstd_level: 1,
            },
        ),
    )
}

fn spec() -> TableSpec {
    TableSpec {
        name: "bench.wide".parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: Default::default(),
        extras: Default::default(),
        deletes: Default::default(),
        partition_spec: Vec::new(),
    }
}

fn bucketed() -> TableSpec {
    TableSpec {
        partition_spec: vec!["bucket(64, id)".parse().unwrap()],
        ..spec()
    }
}

fn changes(batch: RecordBatch, next_offset: i64) -> TableChanges {
    let mut offsets = CommittedOffsets::default();
    offsets.advance("bench", 0, next_offset);
    TableChanges {
        batches: vec![batch],
        offsets,
        truncated_at: None,
    }
}

fn commit_rows(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let n = rows_from_env();
    let inserts = batch(0, n, "c", 0);
    let updates = batch(0, n, "u", 1);
    let mut group = c.benchmark_group("commit_rows");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(n as u64));
    for (spec, suffix) in [(spec(), ""), (bucketed(), "_bucket_64")] {
        group.bench_function(format!("insert_{n}_rows_20_columns{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let engine = engine(dir.path());
                    let start = Instant::now();
                    rt.block_on(engine.commit(&spec, changes(inserts.clone(), 1)))
                        .unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
        group.bench_function(format!("update_{n}_rows_20_columns{suffix}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let engine = engine(dir.path());
                    rt.block_on(engine.commit(&spec, changes(inserts.clone(), 1)))
                        .unwrap();
                    let start = Instant::now();
                    let outcome = rt
                        .block_on(engine.commit(&spec, changes(updates.clone(), 2)))
                        .unwrap();
                    total += start.elapsed();
                    assert_eq!(outcome.keys_deleted, n as u64);
                }
                total
            })
        });
    }
    group.finish();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn commit_latency(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("commit_latency");
    group.sample_size(20);
    group.throughput(Throughput::Elements(100));
    for snapshots in [1usize, 25, 100] {
        // A template table with `snapshots` commits of 100 updated rows each. Table paths are
        // absolute in the metadata, so every copy is opened at the template's own path.
        let template = tempfile::tempdir().unwrap();
        let live = template.path().join("live");
        let saved = template.path().join("saved");
        {
            let engine = engine(&live);
            rt.block_on(engine.commit(&spec(), changes(batch(0, 10_000, "c", 0), 1)))
                .unwrap();
            for s in 1..snapshots {
                rt.block_on(engine.commit(
                    &spec(),
                    changes(
                        batch((s as i64 * 100) % 10_000, 100, "u", s as i64),
                        1 + s as i64,
                    ),
                ))
                .unwrap();
            }
        }
        copy_dir(&live, &saved);
        group.bench_function(
            format!("commit_100_rows_after_{snapshots}_snapshots"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        std::fs::remove_dir_all(&live).unwrap();
                        copy_dir(&saved, &live);
                        let engine = engine(&live);
                        let start = Instant::now();
                        rt.block_on(engine.commit(
                            &spec(),
                            changes(batch(5_000, 100, "u", 1_000 + i as i64), 10_000),
                        ))
                        .unwrap();
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit_rows, commit_latency);
criterion_main!(benches);
