//! The commit engine against a real catalog, each table read back by DuckDB (which applies
//! equality deletes) and opened by pyiceberg, never by Floe's own code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use floe::catalog::local::LocalCatalog;
use floe::catalog::{CatalogError, LoadedTable, TableCatalog, TableIdent};
use floe::commit::{
    CommitEngine, CommitSettings, CommittedOffsets, FileSettings, OP_COLUMN, TableChanges,
    TableSpec,
};
use iceberg::{TableCreation, TableRequirement, TableUpdate};
use serde_json::{Value, json};

use crate::support;

const GROUP: &str = "floe-tests";

fn settings() -> CommitSettings {
    let mut s = CommitSettings::new(
        GROUP,
        FileSettings {
            target_file_size: 128 * 1024 * 1024,
            zstd_level: 1,
        },
    );
    s.backoff = std::time::Duration::from_millis(5);
    s.max_attempts = 50;
    s
}

fn spec(table: &str) -> TableSpec {
    TableSpec {
        name: table.parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: BTreeMap::new(),
    }
}

/// A change: (op, id, name). Deletes carry the key only.
type Change<'a> = (&'a str, i64, Option<&'a str>);

fn batch(changes: &[Change<'_>]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(OP_COLUMN, DataType::Utf8, false),
    ]));
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1)));
    let names: ArrayRef = Arc::new(StringArray::from_iter(changes.iter().map(|c| c.2)));
    let ops: ArrayRef = Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.0)));
    RecordBatch::try_new(schema, vec![ids, names, ops]).unwrap()
}

fn window(changes: &[Change<'_>], topic: &str, next_offset: i64) -> TableChanges {
    let mut offsets = CommittedOffsets::default();
    offsets.advance(topic, 0, next_offset);
    TableChanges {
        batches: vec![batch(changes)],
        offsets,
    }
}

/// An in-memory model of the source table: id -> name.
#[derive(Default)]
struct Model(BTreeMap<i64, Option<String>>);

impl Model {
    fn apply(&mut self, changes: &[Change<'_>]) {
        for (op, id, name) in changes {
            if *op == "d" {
                self.0.remove(id);
            } else {
                self.0.insert(*id, name.map(str::to_string));
            }
        }
    }

    fn rows(&self) -> Value {
        Value::Array(self.0.iter().map(|(id, name)| json!([id, name])).collect())
    }
}

struct LocalFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl LocalFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floe-data");
        LocalFixture { _dir: dir, path }
    }

    fn catalog(&self) -> Arc<LocalCatalog> {
        Arc::new(LocalCatalog::open(&self.path).unwrap())
    }

    fn uri(&self) -> String {
        format!(
            "sqlite:///{}",
            self.path
                .canonicalize()
                .unwrap()
                .join("catalog.db")
                .display()
        )
    }

    fn warehouse(&self) -> String {
        format!(
            "file://{}",
            self.path
                .canonicalize()
                .unwrap()
                .join("warehouse")
                .display()
        )
    }

    fn pyiceberg(&self, table: &str) -> Value {
        support::iceberg_read(&[
            "pyiceberg-sql",
            "--uri",
            &self.uri(),
            "--warehouse",
            &self.warehouse(),
            "--catalog-name",
            floe::catalog::local::CATALOG_NAME,
            "--table",
            table,
            "--order-by",
            "id",
        ])
    }

    fn duckdb_rows(&self, table: &str) -> Value {
        let info = self.pyiceberg(table);
        let metadata = info["metadata_location"].as_str().unwrap().to_string();
        duckdb_rows(&metadata)
    }
}

/// pyiceberg lists snapshots in metadata order, which is not commit order.
fn by_sequence(info: &Value) -> Vec<Value> {
    let mut snapshots = info["snapshots"].as_array().unwrap().clone();
    snapshots.sort_by_key(|s| s["sequence_number"].as_i64().unwrap());
    snapshots
}

fn duckdb_rows(metadata: &str) -> Value {
    support::iceberg_read(&[
        "duckdb",
        "--metadata",
        metadata,
        "--order-by",
        "id",
        "--columns",
        "id,name",
    ])["rows"]
        .clone()
}

#[tokio::test]
async fn upserts_deletes_and_reinserts_read_back_exactly() {
    let fx = LocalFixture::new();
    let engine = CommitEngine::new(fx.catalog(), settings());
    let table = "inventory.customers";
    let mut model = Model::default();
    let windows: Vec<Vec<Change>> = vec![
        vec![
            ("c", 1, Some("a")),
            ("c", 2, Some("b")),
            ("c", 3, Some("c")),
        ],
        vec![("u", 1, Some("a2")), ("d", 2, None), ("c", 4, Some("d"))],
        // Re-insert after delete, and an insert+delete inside one window that leaves nothing.
        vec![
            ("c", 2, Some("b-again")),
            ("c", 5, Some("e")),
            ("d", 5, None),
        ],
        vec![("u", 3, Some("c2")), ("u", 3, Some("c3")), ("d", 4, None)],
    ];
    for (i, changes) in windows.iter().enumerate() {
        let outcome = engine
            .commit(
                &spec(table),
                window(
                    changes,
                    "dbserver1.inventory.customers",
                    (i as i64 + 1) * 10,
                ),
            )
            .await
            .unwrap();
        model.apply(changes);
        assert_eq!(outcome.created_table, i == 0);
        assert_eq!(fx.duckdb_rows(table), model.rows(), "after window {i}");
    }
    assert_eq!(
        fx.duckdb_rows(table),
        json!([[1, "a2"], [2, "b-again"], [3, "c3"]])
    );

    let info = fx.pyiceberg(table);
    assert_eq!(info["identifier_fields"], json!(["id"]));
    let snapshots = by_sequence(&info);
    assert_eq!(snapshots.len(), 4, "one snapshot per commit");
    for s in &snapshots {
        assert_eq!(s["operation"], "overwrite");
    }
    let first = &snapshots[0]["summary"];
    // The first commit into a new table is data-only: no delete files.
    assert_eq!(first["added-data-files"], "1");
    assert!(first.get("added-delete-files").is_none(), "{first}");
    let last = &snapshots[3]["summary"];
    assert_eq!(last["floe.consumer-group"], GROUP);
    assert_eq!(
        last["floe.offsets"],
        r#"{"dbserver1.inventory.customers":{"0":40}}"#
    );
    assert_eq!(last["total-data-files"], "4");
    // Data rows written over all commits: 3 + 2 + 1 + 1.
    assert_eq!(last["total-records"], "7");
    // Keys 1 and 2 (window 2), 3 and 4 (window 4); re-inserted 2 and new 4 and 5 are known new.
    assert_eq!(last["total-equality-deletes"], "4");

    let offsets = engine
        .committed_offsets(&table.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(offsets.get("dbserver1.inventory.customers", 0), Some(40));
}

#[tokio::test]
async fn pyiceberg_reads_data_only_snapshots_and_sees_the_schema() {
    let fx = LocalFixture::new();
    let engine = CommitEngine::new(fx.catalog(), settings());
    engine
        .commit(
            &spec("shop.items"),
            window(&[("r", 1, Some("x")), ("r", 2, None)], "t", 2),
        )
        .await
        .unwrap();
    let info = fx.pyiceberg("shop.items");
    assert_eq!(info["rows"], json!([[1, "x"], [2, null]]));
    let schema = info["schema"].as_array().unwrap();
    assert_eq!(schema[0]["name"], "id");
    assert_eq!(schema[0]["required"], true);
    assert_eq!(schema[0]["type"], "long");
    assert_eq!(schema[1]["name"], "name");
    assert_eq!(schema[1]["required"], false);
    assert_eq!(
        info["properties"]["write.parquet.compression-codec"],
        "zstd"
    );

    // With equality deletes pyiceberg refuses the rows; DuckDB applies them.
    engine
        .commit(&spec("shop.items"), window(&[("u", 1, Some("y"))], "t", 3))
        .await
        .unwrap();
    let info = fx.pyiceberg("shop.items");
    assert!(info.get("rows_error").is_some(), "{info}");
    assert_eq!(fx.duckdb_rows("shop.items"), json!([[1, "y"], [2, null]]));
}

#[tokio::test]
async fn many_commits_in_a_row() {
    let fx = LocalFixture::new();
    let engine = CommitEngine::new(fx.catalog(), settings());
    let mut model = Model::default();
    let mut names = Vec::new();
    for i in 0..30i64 {
        names.push(format!("v{i}"));
    }
    for i in 0..30i64 {
        let id = i % 7;
        let changes: Vec<Change> = if i % 5 == 4 {
            vec![("d", id, None)]
        } else {
            vec![
                ("u", id, Some(names[i as usize].as_str())),
                ("c", 100 + i, Some("new")),
            ]
        };
        engine
            .commit(&spec("ns.many"), window(&changes, "t", i + 1))
            .await
            .unwrap();
        model.apply(&changes);
    }
    assert_eq!(fx.duckdb_rows("ns.many"), model.rows());
    let info = fx.pyiceberg("ns.many");
    assert_eq!(info["snapshots"].as_array().unwrap().len(), 30);
}

#[tokio::test]
async fn schema_changes_add_columns_and_widen_types() {
    let fx = LocalFixture::new();
    let engine = CommitEngine::new(fx.catalog(), settings());
    engine
        .commit(&spec("ns.evolve"), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap();

    // The source adds `qty` as int, then sends it as a long.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("qty", DataType::Int32, true),
        Field::new(OP_COLUMN, DataType::Utf8, false),
    ]));
    let with_qty = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(StringArray::from(vec!["b"])),
            Arc::new(Int32Array::from(vec![7])),
            Arc::new(StringArray::from(vec!["c"])),
        ],
    )
    .unwrap();
    let outcome = engine
        .commit(
            &spec("ns.evolve"),
            TableChanges {
                batches: vec![with_qty],
                offsets: CommittedOffsets::default(),
            },
        )
        .await
        .unwrap();
    assert!(outcome.schema_changed);
    let wide = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![3])),
            Arc::new(Int64Array::from(vec![5_000_000_000])),
            Arc::new(StringArray::from(vec!["c"])),
        ],
    )
    .unwrap();
    engine
        .commit(
            &spec("ns.evolve"),
            TableChanges {
                batches: vec![wide],
                offsets: CommittedOffsets::default(),
            },
        )
        .await
        .unwrap();

    let info = fx.pyiceberg("ns.evolve");
    let metadata = info["metadata_location"].as_str().unwrap();
    let read = support::iceberg_read(&["duckdb", "--metadata", metadata, "--order-by", "id"]);
    assert_eq!(
        read["rows"],
        json!([[1, "a", null], [2, "b", 7], [3, null, 5_000_000_000i64]])
    );
    let qty = info["schema"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "qty")
        .unwrap();
    assert_eq!(qty["type"], "long");

    // A type change that could lose data is refused, naming table and column.
    let text = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Utf8, true),
            Field::new(OP_COLUMN, DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![4])),
            Arc::new(StringArray::from(vec!["many"])),
            Arc::new(StringArray::from(vec!["c"])),
        ],
    )
    .unwrap();
    let err = engine
        .commit(
            &spec("ns.evolve"),
            TableChanges {
                batches: vec![text],
                offsets: CommittedOffsets::default(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "table ns.evolve, column qty: incompatible schema change: the table has type long, the source now sends string"
    );
}

#[tokio::test]
async fn an_outside_writer_between_two_commits_is_kept() {
    let fx = LocalFixture::new();
    let engine = CommitEngine::new(fx.catalog(), settings());
    engine
        .commit(
            &spec("ns.shared"),
            window(&[("c", 1, Some("floe"))], "t", 5),
        )
        .await
        .unwrap();
    support::iceberg_read(&[
        "pyiceberg-append",
        "--uri",
        &fx.uri(),
        "--warehouse",
        &fx.warehouse(),
        "--catalog-name",
        floe::catalog::local::CATALOG_NAME,
        "--table",
        "ns.shared",
        "--rows",
        r#"[{"id": 50, "name": "outside"}]"#,
    ]);
    engine
        .commit(
            &spec("ns.shared"),
            window(&[("u", 1, Some("floe2"))], "t", 9),
        )
        .await
        .unwrap();
    assert_eq!(
        fx.duckdb_rows("ns.shared"),
        json!([[1, "floe2"], [50, "outside"]])
    );
    let info = fx.pyiceberg("ns.shared");
    let snapshots = by_sequence(&info);
    let ops: Vec<&str> = snapshots
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["overwrite", "append", "overwrite"]);
    let offsets = engine
        .committed_offsets(&"ns.shared".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(offsets.get("t", 0), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_on_one_table_lose_nothing() {
    let fx = LocalFixture::new();
    // Two engines with their own catalog connections, as two processes would have.
    let a = Arc::new(CommitEngine::new(fx.catalog(), settings()));
    let b = Arc::new(CommitEngine::new(fx.catalog(), settings()));
    a.commit(&spec("ns.race"), window(&[("c", 0, Some("seed"))], "t", 1))
        .await
        .unwrap();
    let run = |engine: Arc<CommitEngine>, base: i64, partition: i32| async move {
        let mut retries = 0;
        for i in 0..15i64 {
            let name = format!("w{base}-{i}");
            let changes = [
                ("c", base + i, Some(name.as_str())),
                ("u", base, Some(name.as_str())),
            ];
            let mut offsets = CommittedOffsets::default();
            offsets.advance("t", partition, i + 1);
            let outcome = engine
                .commit(
                    &spec("ns.race"),
                    TableChanges {
                        batches: vec![batch(&changes)],
                        offsets,
                    },
                )
                .await
                .unwrap();
            retries += outcome.attempts - 1;
        }
        retries
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(run(a.clone(), 1000, 1)),
        tokio::spawn(run(b.clone(), 2000, 2))
    );
    let retries = ra.unwrap() + rb.unwrap();
    let rows = fx.duckdb_rows("ns.race");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1 + 15 + 15, "{rows:?}");
    assert_eq!(rows[1], json!([1000, "w1000-14"]));
    assert_eq!(rows[16], json!([2000, "w2000-14"]));
    let info = fx.pyiceberg("ns.race");
    assert_eq!(info["snapshots"].as_array().unwrap().len(), 31);
    // Both writers' offsets survive in the table, whoever committed last.
    let offsets = a
        .committed_offsets(&"ns.race".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(offsets.get("t", 1), Some(15));
    assert_eq!(offsets.get("t", 2), Some(15));
    eprintln!("racing writers retried {retries} times");
}

/// A catalog whose first commit is applied but reported as "state unknown" (a timeout after
/// the catalog did its work).
struct LosesFirstAnswer {
    inner: Arc<LocalCatalog>,
    lost: AtomicBool,
}

#[async_trait]
impl TableCatalog for LosesFirstAnswer {
    fn kind(&self) -> &'static str {
        "flaky-local"
    }
    async fn ensure_namespace(&self, namespace: &str) -> Result<(), CatalogError> {
        self.inner.ensure_namespace(namespace).await
    }
    async fn load_table(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CatalogError> {
        self.inner.load_table(ident).await
    }
    async fn create_table(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<LoadedTable, CatalogError> {
        self.inner.create_table(ident, creation).await
    }
    async fn commit(
        &self,
        base: &LoadedTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<LoadedTable, CatalogError> {
        let result = self.inner.commit(base, requirements, updates).await?;
        if base.metadata.current_snapshot().is_some() && !self.lost.swap(true, Ordering::SeqCst) {
            return Err(CatalogError::CommitStateUnknown {
                catalog: "flaky-local",
                table: base.ident.to_string(),
                message: "timed out".into(),
            });
        }
        Ok(result)
    }
    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError> {
        self.inner.drop_table(ident).await
    }
}

/// A catalog in front of which an outside writer (pyiceberg) commits just before Floe's first
/// data commit, so that commit meets a stale base.
struct OutsideWriterFirst {
    inner: Arc<LocalCatalog>,
    fixture_uri: String,
    fixture_warehouse: String,
    done: AtomicBool,
}

#[async_trait]
impl TableCatalog for OutsideWriterFirst {
    fn kind(&self) -> &'static str {
        "local"
    }
    async fn ensure_namespace(&self, namespace: &str) -> Result<(), CatalogError> {
        self.inner.ensure_namespace(namespace).await
    }
    async fn load_table(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CatalogError> {
        self.inner.load_table(ident).await
    }
    async fn create_table(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<LoadedTable, CatalogError> {
        self.inner.create_table(ident, creation).await
    }
    async fn commit(
        &self,
        base: &LoadedTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<LoadedTable, CatalogError> {
        if base.metadata.current_snapshot().is_some() && !self.done.swap(true, Ordering::SeqCst) {
            support::iceberg_read(&[
                "pyiceberg-append",
                "--uri",
                &self.fixture_uri,
                "--warehouse",
                &self.fixture_warehouse,
                "--catalog-name",
                floe::catalog::local::CATALOG_NAME,
                "--table",
                &base.ident.to_string(),
                "--rows",
                r#"[{"id": 77, "name": "sneaked in"}]"#,
            ]);
        }
        self.inner.commit(base, requirements, updates).await
    }
    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError> {
        self.inner.drop_table(ident).await
    }
}

#[tokio::test]
async fn a_conflict_reloads_and_reapplies_the_same_files() {
    let fx = LocalFixture::new();
    let catalog = Arc::new(OutsideWriterFirst {
        inner: fx.catalog(),
        fixture_uri: fx.uri(),
        fixture_warehouse: fx.warehouse(),
        done: AtomicBool::new(false),
    });
    let engine = CommitEngine::new(catalog, settings());
    engine
        .commit(&spec("ns.conflict"), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap();
    let outcome = engine
        .commit(
            &spec("ns.conflict"),
            window(&[("u", 1, Some("a2"))], "t", 2),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.attempts, 2,
        "the first attempt met the outside writer's commit"
    );
    assert_eq!(
        fx.duckdb_rows("ns.conflict"),
        json!([[1, "a2"], [77, "sneaked in"]])
    );
    let info = fx.pyiceberg("ns.conflict");
    let snapshots = by_sequence(&info);
    let ops: Vec<&str> = snapshots
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["overwrite", "append", "overwrite"]);
    // The retried snapshot builds on the outside writer's.
    assert_eq!(snapshots[2]["parent_id"], snapshots[1]["snapshot_id"]);
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_not_applied_twice() {
    let fx = LocalFixture::new();
    let flaky = Arc::new(LosesFirstAnswer {
        inner: fx.catalog(),
        lost: AtomicBool::new(false),
    });
    let engine = CommitEngine::new(flaky, settings());
    engine
        .commit(&spec("ns.unknown"), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap();
    let outcome = engine
        .commit(
            &spec("ns.unknown"),
            window(&[("c", 2, Some("b")), ("u", 1, Some("a2"))], "t", 3),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.attempts, 1,
        "found in the table after the lost answer"
    );
    let info = fx.pyiceberg("ns.unknown");
    assert_eq!(
        info["snapshots"].as_array().unwrap().len(),
        2,
        "applied once"
    );
    assert_eq!(fx.duckdb_rows("ns.unknown"), json!([[1, "a2"], [2, "b"]]));
}

#[tokio::test]
async fn table_names_are_normalised_and_collisions_refused() {
    let fx = LocalFixture::new();
    let engine = CommitEngine::new(fx.catalog(), settings());
    let outcome = engine
        .commit(
            &spec("Inventory.Customer-List"),
            window(&[("c", 1, Some("a"))], "t", 1),
        )
        .await
        .unwrap();
    assert_eq!(outcome.table.to_string(), "inventory.customer_list");
    assert_eq!(fx.duckdb_rows("inventory.customer_list"), json!([[1, "a"]]));
    let err = engine
        .commit(
            &spec("inventory.customer_list"),
            window(&[("c", 2, Some("b"))], "t", 2),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("both become inventory.customer_list"),
        "{err}"
    );
}
