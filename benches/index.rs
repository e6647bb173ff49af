//! Key index benchmarks: what the primary-key index costs and what it buys.
//!
//! 1. `memory`: bytes per key of the index for 1M and 10M keys of three key shapes (int64;
//!    int64 + int32; a uuid as a 36-character string), as the growth of the process's resident
//!    memory and as the index's own estimate (the figure checked against `tables.index_memory`).
//! 2. `build`: the time to build the index of a table of 10M rows (10 data files) from its
//!    files, as Floe does when it first writes a table in a process.
//! 3. `updates`: 1M updates of a 1M-row table committed in 10 windows, position-delete mode
//!    vs equality-delete mode.
//! 4. `reads`: DuckDB's `count(*)` and full scan of a 100k-row table after 200 commits of 500
//!    updates each, in position mode, in equality mode, and of the same rows freshly written.
//!    Needs the test venv (`scripts/test-env.sh up`, or `FLOE_TEST_PYTHON`).
//!
//! Run: `cargo bench --bench index` (all) or `cargo bench --bench index -- memory reads`.
//! Sizes: `FLOE_INDEX_BENCH_KEYS` (default `1000000,10000000`), `FLOE_INDEX_BENCH_TABLE_ROWS`
//! (default 10000000). Figures depend on the machine; compare ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use floe::catalog::LoadedTable;
use floe::catalog::local::LocalCatalog;
use floe::commit::index::{KeyIndex, WrittenFile};
use floe::commit::{
    CommitEngine, CommitSettings, CommittedOffsets, FileSettings, OP_COLUMN, TableChanges,
    TableSpec,
};
use floe::config::DeleteMode;
use tokio::runtime::Runtime;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A well-spread 64-bit value of `i` (splitmix64).
fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy)]
enum KeyShape {
    Int64,
    Int64Int32,
    UuidText,
}

impl KeyShape {
    fn types(self) -> Vec<DataType> {
        match self {
            KeyShape::Int64 => vec![DataType::Int64],
            KeyShape::Int64Int32 => vec![DataType::Int64, DataType::Int32],
            KeyShape::UuidText => vec![DataType::Utf8],
        }
    }

    fn keys(self, start: u64, n: usize) -> Vec<ArrayRef> {
        let range = start..start + n as u64;
        match self {
            KeyShape::Int64 => vec![Arc::new(Int64Array::from_iter_values(
                range.map(|i| spread(i) as i64),
            ))],
            KeyShape::Int64Int32 => vec![
                Arc::new(Int64Array::from_iter_values(
                    range.clone().map(|i| spread(i / 4) as i64),
                )),
                Arc::new(Int32Array::from_iter_values(range.map(|i| (i % 4) as i32))),
            ],
            KeyShape::UuidText => {
                vec![Arc::new(StringArray::from_iter_values(range.map(|i| {
                    uuid::Uuid::from_u64_pair(spread(i), spread(i ^ 0xFFFF)).to_string()
                })))]
            }
        }
    }
}

fn memory() {
    println!("## memory: bytes per key");
    println!("keys, shape, resident bytes/key, estimated bytes/key, build s");
    for n in env_list("FLOE_INDEX_BENCH_KEYS", &[1_000_000, 10_000_000]) {
        for shape in [KeyShape::Int64, KeyShape::Int64Int32, KeyShape::UuidText] {
            let ids: Vec<i32> = (1..=shape.types().len() as i32).collect();
            let before = rss();
            let started = Instant::now();
            let mut index =
                KeyIndex::empty(uuid::Uuid::nil(), None, ids, shape.types()).expect("index");
            let chunk = 1_000_000;
            let mut start = 0;
            while start < n {
                let len = chunk.min(n - start);
                let keys = shape.keys(start as u64, len);
                index
                    .apply(
                        &[],
                        &keys,
                        &[WrittenFile {
                            path: &format!("file-{start}.parquet"),
                            rows: len as u64,
                            bytes: 0,
                            partition: None,
                        }],
                        1,
                        false,
                    )
                    .expect("apply");
                start += len;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let grown = rss().saturating_sub(before);
            assert_eq!(index.len(), n, "every key is distinct");
            println!(
                "{n}, {shape:?}, {:.1}, {:.1}, {elapsed:.2}",
                grown as f64 / n as f64,
                index.memory_bytes() as f64 / n as f64
            );
            drop(index);
        }
    }
}

/// A narrow table's changes: `id`, `name`, `amount`, op.
fn changes(ids: &[i64], version: i64, op: &str, next_offset: i64) -> TableChanges {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
        Field::new(OP_COLUMN, DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.iter().copied())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("name-{i}-{version}")),
        )),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i * 31 + version),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            op,
            ids.len(),
        ))),
    ];
    let mut offsets = CommittedOffsets::default();
    offsets.advance("bench", 0, next_offset);
    TableChanges {
        batches: vec![RecordBatch::try_new(schema, columns).unwrap()],
        offsets,
        truncated_at: None,
    }
}

fn engine(path: &Path) -> CommitEngine {
    let mut settings = CommitSettings::new(
        "bench",
        FileSettings {
            target_file_size: 512 * 1024 * 1024,
            zstd_level: 1,
        },
    );
    settings.index_memory = 16 << 30;
    CommitEngine::new(Arc::new(LocalCatalog::open(path).unwrap()), settings)
}

fn spec(name: &str, deletes: DeleteMode) -> TableSpec {
    TableSpec {
        name: name.parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: Default::default(),
        extras: Default::default(),
        deletes,
        partition_spec: Vec::new(),
    }
}

async fn load(engine: &CommitEngine, name: &str) -> LoadedTable {
    let ident = engine.ident(&name.parse().unwrap()).unwrap();
    engine
        .catalog()
        .load_table(&ident)
        .await
        .unwrap()
        .expect("the table exists")
}

fn build(rt: &Runtime) {
    let rows = env_list("FLOE_INDEX_BENCH_TABLE_ROWS", &[10_000_000])[0];
    println!("## build: the index of a {rows}-row table from its files");
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let chunk = 1_000_000.min(rows);
    rt.block_on(async {
        let mut start = 0;
        let mut offset = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let ids: Vec<i64> = (start as i64..(start + len) as i64).collect();
            offset += len as i64;
            engine
                .commit(
                    &spec("bench.built", DeleteMode::Equality),
                    changes(&ids, 0, "c", offset),
                )
                .await
                .unwrap();
            start += len;
        }
        let table = load(&engine, "bench.built").await;
        let before = rss();
        let started = Instant::now();
        let index = KeyIndex::build(&table).await.expect("build");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(index.len(), rows);
        println!(
            "{rows} keys from {} files: {secs:.2} s ({:.0} keys/s), resident growth {:.1} bytes/key",
            rows.div_ceil(chunk),
            rows as f64 / secs,
            rss().saturating_sub(before) as f64 / rows as f64
        );
    });
}

fn updates(rt: &Runtime) {
    let rows = 1_000_000usize;
    let windows = 10;
    println!("## updates: {rows} updates of a {rows}-row table in {windows} commits");
    let mut seconds = Vec::new();
    for mode in [DeleteMode::Position, DeleteMode::Equality] {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let spec = spec("bench.updated", mode);
        let ids: Vec<i64> = (0..rows as i64).collect();
        let secs = rt.block_on(async {
            engine
                .commit(&spec, changes(&ids, 0, "c", 1))
                .await
                .unwrap();
            let started = Instant::now();
            for (w, window) in ids.chunks(rows / windows).enumerate() {
                engine
                    .commit(&spec, changes(window, w as i64 + 1, "u", w as i64 + 2))
                    .await
                    .unwrap();
            }
            started.elapsed().as_secs_f64()
        });
        println!(
            "{mode:?}: {secs:.2} s ({:.0} updates/s)",
            rows as f64 / secs
        );
        seconds.push(secs);
    }
    println!("position / equality time: {:.2}", seconds[0] / seconds[1]);
}

fn python() -> PathBuf {
    std::env::var_os("FLOE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("FLOE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/floe")
                });
            cache.join("venv/bin/python")
        })
}

fn duckdb_timing(metadata_location: &str) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/iceberg_read.py");
    let out = Command::new(python())
        .arg(script)
        .args(["duckdb", "--metadata", metadata_location, "--timing", "3"])
        .output()
        .expect("run iceberg_read.py (scripts/test-env.sh up makes the venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reads(rt: &Runtime) {
    let rows = 100_000usize;
    let commits = 200;
    let per_commit = 500;
    println!(
        "## reads: DuckDB after {commits} commits of {per_commit} updates of a {rows}-row table"
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let ids: Vec<i64> = (0..rows as i64).collect();
    // The same seeded updates in both modes; `latest` is each key's last version.
    let mut latest = vec![0i64; rows];
    let plan: Vec<Vec<i64>> = (0..commits)
        .map(|c| {
            let mut keys: Vec<i64> = (0..per_commit)
                .map(|k| (spread((c * per_commit + k) as u64) % rows as u64) as i64)
                .collect();
            keys.sort_unstable();
            keys.dedup();
            for k in &keys {
                latest[*k as usize] = c as i64 + 1;
            }
            keys
        })
        .collect();
    let mut figures = Vec::new();
    rt.block_on(async {
        for (name, mode) in [
            ("bench.position", DeleteMode::Position),
            ("bench.equality", DeleteMode::Equality),
        ] {
            let spec = spec(name, mode);
            engine
                .commit(&spec, changes(&ids, 0, "c", 1))
                .await
                .unwrap();
            for (c, keys) in plan.iter().enumerate() {
                engine
                    .commit(&spec, changes(keys, c as i64 + 1, "u", c as i64 + 2))
                    .await
                    .unwrap();
            }
            figures.push((name, load(&engine, name).await.metadata_location));
        }
        // The final rows written once: versions grouped so each commit writes one version.
        let spec = spec("bench.fresh", DeleteMode::Position);
        let mut by_version: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        for (id, v) in latest.iter().enumerate() {
            by_version.entry(*v).or_default().push(id as i64);
        }
        let mut batches = Vec::new();
        for (v, ids) in &by_version {
            batches.extend(changes(ids, *v, "c", 1).batches);
        }
        let mut offsets = CommittedOffsets::default();
        offsets.advance("bench", 0, 1);
        engine
            .commit(
                &spec,
                TableChanges {
                    batches,
                    offsets,
                    truncated_at: None,
                },
            )
            .await
            .unwrap();
        figures.push((
            "bench.fresh",
            load(&engine, "bench.fresh").await.metadata_location,
        ));
    });
    println!("table, rows, count(*) ms, full scan ms (best of 3)");
    let mut results = Vec::new();
    for (name, location) in &figures {
        let t = duckdb_timing(location);
        assert_eq!(t["rows"], rows, "{name}: {t}");
        assert_eq!(t["scanned"], rows, "{name}: {t}");
        println!("{name}, {}, {}, {}", t["rows"], t["count_ms"], t["scan_ms"]);
        results.push((
            t["count_ms"].as_f64().unwrap(),
            t["scan_ms"].as_f64().unwrap(),
        ));
    }
    let fresh = results[2];
    for (i, (name, _)) in figures.iter().take(2).enumerate() {
        println!(
            "{name} / fresh: count(*) {:.1}x, full scan {:.1}x",
            results[i].0 / fresh.0,
            results[i].1 / fresh.1
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments pick parts.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |part: &str| wanted.is_empty() || wanted.iter().any(|w| w == part);
    let rt = Runtime::new().unwrap();
    if run("memory") {
        memory();
    }
    if run("build") {
        build(&rt);
    }
    if run("updates") {
        updates(&rt);
    }
    if run("reads") {
        reads(&rt);
    }
}
