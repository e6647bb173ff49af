//! The commit engine against every catalog backend: `local` (SQLite + directory), `s3tables`
//! (moto's S3 Tables control plane and S3) and `rest` (SeaweedFS's Iceberg REST catalog, with
//! SigV4 and with OAuth2). The same scenario bodies run on each backend ([`on_backends!`]); each
//! table is read back by DuckDB (which applies equality deletes) and opened by pyiceberg from
//! the metadata location the catalog reports, never by Floe's own code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use aws_config::SdkConfig;
use floe::catalog::local::LocalCatalog;
use floe::catalog::rest::RestCatalog;
use floe::catalog::s3_storage::S3RequestCounts;
use floe::catalog::s3tables::S3TablesCatalog;
use floe::catalog::{CatalogError, LoadedTable, TableCatalog, TableIdent};
use floe::commit::extras::Extras;
use floe::commit::{
    CommitEngine, CommitSettings, CommittedOffsets, FileSettings, OP_COLUMN, TableChanges,
    TableSpec,
};
use floe::config::{self, DeleteMode, MetadataColumn, RestAuth, Secret};
use floe::decode::KafkaPosition;
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
        extras: Default::default(),
        deletes: Default::default(),
        partition_spec: Vec::new(),
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
        truncated_at: None,
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

/// pyiceberg lists snapshots in metadata order, which is not commit order.
fn by_sequence(info: &Value) -> Vec<Value> {
    let mut snapshots = info["snapshots"].as_array().unwrap().clone();
    snapshots.sort_by_key(|s| s["sequence_number"].as_i64().unwrap());
    snapshots
}

fn operations(info: &Value) -> Vec<String> {
    by_sequence(info)
        .iter()
        .map(|s| s["operation"].as_str().unwrap().to_string())
        .collect()
}

// ------------------------------------------------------------------------------------------
// Backends
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    S3Tables,
    RestSigv4,
    RestOAuth2,
}

enum Place {
    Local {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    S3Tables {
        config: config::S3TablesCatalog,
        sdk: SdkConfig,
        endpoint: String,
    },
    Rest {
        config: config::RestCatalog,
        sdk: SdkConfig,
        /// `<rest uri>/v1/<prefix>`.
        base: String,
    },
}

/// One catalog backend with a namespace of its own for one test.
struct Backend {
    kind: Kind,
    namespace: String,
    place: Place,
}

fn rest_config(auth: RestAuth, properties: BTreeMap<String, String>) -> config::RestCatalog {
    config::RestCatalog {
        uri: support::weed_rest(),
        warehouse: Some(format!("s3://{}", support::weed_table_bucket())),
        auth,
        request_timeout: Duration::from_secs(30),
        expire_snapshots: true,
        properties,
    }
}

fn sigv4() -> RestAuth {
    RestAuth::Sigv4 {
        signing_name: "s3tables".into(),
        signing_region: Some("us-east-1".into()),
    }
}

impl Backend {
    async fn start(kind: Kind) -> Self {
        let namespace = support::unique("floe");
        let place = match kind {
            Kind::Local => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("floe-data");
                Place::Local { _dir: dir, path }
            }
            Kind::S3Tables => {
                let endpoint = support::moto_endpoint();
                // A table bucket of its own: names are lowercase letters, digits and hyphens.
                let bucket = support::unique("floe").replace('_', "-");
                let arn = format!("arn:aws:s3tables:us-east-1:123456789012:bucket/{bucket}");
                let config = config::S3TablesCatalog {
                    table_bucket: arn.parse().unwrap(),
                    region: "us-east-1".into(),
                    endpoint: Some(endpoint.clone()),
                    s3_endpoint: Some(endpoint.clone()),
                };
                let sdk = support::static_sdk_config("test", "test");
                floe::catalog::aws::s3tables_client(&sdk, &config)
                    .create_table_bucket()
                    .name(&bucket)
                    .send()
                    .await
                    .expect("create table bucket");
                Place::S3Tables {
                    config,
                    sdk,
                    endpoint,
                }
            }
            Kind::RestSigv4 | Kind::RestOAuth2 => {
                let (key, secret) = support::weed_credentials();
                let config = if kind == Kind::RestSigv4 {
                    // S3 credentials for the files come from the AWS chain (the SdkConfig).
                    rest_config(sigv4(), BTreeMap::new())
                } else {
                    // ... or from catalog.properties.
                    rest_config(
                        RestAuth::OAuth2 {
                            client_id: key.clone(),
                            client_secret: Secret::new(secret.clone()),
                            server_uri: None,
                            scope: None,
                        },
                        BTreeMap::from([
                            ("s3.access-key-id".into(), key.clone()),
                            ("s3.secret-access-key".into(), secret.clone()),
                        ]),
                    )
                };
                let base = format!("{}/v1/{}", config.uri, support::weed_table_bucket());
                Place::Rest {
                    config,
                    sdk: support::static_sdk_config(&key, &secret),
                    base,
                }
            }
        };
        Backend {
            kind,
            namespace,
            place,
        }
    }

    /// `<this test's namespace>.<name>`.
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.namespace)
    }

    /// A new catalog client, as another process would open it.
    async fn catalog(&self) -> Arc<dyn TableCatalog> {
        match &self.place {
            Place::Local { path, .. } => Arc::new(LocalCatalog::open(path).unwrap()),
            Place::S3Tables { config, sdk, .. } => Arc::new(S3TablesCatalog::new(sdk, config)),
            Place::Rest { config, sdk, .. } => Arc::new(
                RestCatalog::connect_with(config, sdk.clone())
                    .await
                    .expect("connect to the REST catalog"),
            ),
        }
    }

    fn sqlite_args(&self, table: &str) -> Vec<String> {
        let Place::Local { path, .. } = &self.place else {
            panic!("{:?} has no SQLite catalog", self.kind)
        };
        let path = path.canonicalize().unwrap();
        vec![
            "--uri".into(),
            format!("sqlite:///{}", path.join("catalog.db").display()),
            "--warehouse".into(),
            format!("file://{}", path.join("warehouse").display()),
            "--catalog-name".into(),
            floe::catalog::local::CATALOG_NAME.into(),
            "--table".into(),
            table.into(),
        ]
    }

    /// How the readers reach the table's files.
    fn s3_args(&self) -> Vec<String> {
        let (endpoint, key, secret) = match &self.place {
            Place::Local { .. } => return Vec::new(),
            Place::S3Tables { endpoint, .. } => (endpoint.clone(), "test".into(), "test".into()),
            Place::Rest { .. } => {
                let (key, secret) = support::weed_credentials();
                (support::weed_s3(), key, secret)
            }
        };
        vec![
            "--s3-endpoint".into(),
            endpoint.trim_start_matches("http://").into(),
            "--s3-key".into(),
            key,
            "--s3-secret".into(),
            secret,
        ]
    }

    /// The table's current metadata location, asked of the catalog without Floe's code.
    async fn metadata_location(&self, table: &str) -> String {
        let (namespace, name) = table.split_once('.').unwrap();
        match &self.place {
            Place::Local { .. } => {
                let mut args = vec!["pyiceberg-sql".to_string()];
                args.extend(self.sqlite_args(table));
                read(&args)["metadata_location"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
            Place::S3Tables { config, sdk, .. } => floe::catalog::aws::s3tables_client(sdk, config)
                .get_table_metadata_location()
                .table_bucket_arn(&config.table_bucket.arn)
                .namespace(namespace)
                .name(name)
                .send()
                .await
                .expect("GetTableMetadataLocation")
                .metadata_location()
                .expect("the table has metadata")
                .to_string(),
            Place::Rest { base, .. } => {
                let url = format!("{base}/namespaces/{namespace}/tables/{name}");
                let (status, body) = support::weed_get_signed(&url).await;
                assert_eq!(status, 200, "{body}");
                body["metadata-location"].as_str().unwrap().to_string()
            }
        }
    }

    async fn duckdb(&self, table: &str, columns: Option<&str>) -> Value {
        match columns {
            Some(columns) => self.duckdb_with(table, &["--columns", columns]).await,
            None => self.duckdb_with(table, &[]).await,
        }
    }

    /// DuckDB's read of the table ordered by id, with `extra` options of `iceberg_read.py`.
    async fn duckdb_with(&self, table: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "duckdb".to_string(),
            "--metadata".into(),
            self.metadata_location(table).await,
            "--order-by".into(),
            "id".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(self.s3_args());
        read(&args)
    }

    async fn duckdb_rows(&self, table: &str) -> Value {
        self.duckdb(table, Some("id,name")).await["rows"].clone()
    }

    /// pyiceberg's view: through the SQL catalog (local), else a StaticTable from the
    /// metadata location the catalog reports.
    async fn pyiceberg(&self, table: &str) -> Value {
        self.pyiceberg_with(table, &[]).await
    }

    async fn pyiceberg_with(&self, table: &str, extra: &[&str]) -> Value {
        let mut args = match &self.place {
            Place::Local { .. } => {
                let mut args = vec!["pyiceberg-sql".to_string()];
                args.extend(self.sqlite_args(table));
                args
            }
            _ => vec![
                "pyiceberg-static".to_string(),
                "--metadata".into(),
                self.metadata_location(table).await,
            ],
        };
        args.extend(["--order-by".into(), "id".into()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(self.s3_args());
        read(&args)
    }

    /// Appends rows with pyiceberg through the catalog, as an outside writer. pyiceberg has no
    /// S3 Tables control-plane catalog, so this works on `local` and `rest`.
    fn outside_append(&self, table: &str, rows: &str) -> Value {
        self.outside_write(table, rows, false)
    }

    /// Rewrites the whole table into new files with pyiceberg (with `rows` added), as a
    /// compaction by another engine would: same rows, new files and positions.
    fn outside_rewrite(&self, table: &str, rows: &str) -> Value {
        self.outside_write(table, rows, true)
    }

    fn outside_write(&self, table: &str, rows: &str, rewrite: bool) -> Value {
        let mut args = match &self.place {
            Place::Local { .. } => {
                let mut args = vec!["pyiceberg-append".to_string()];
                args.extend(self.sqlite_args(table));
                args
            }
            Place::Rest { config, .. } => vec![
                "pyiceberg-rest-append".to_string(),
                "--uri".into(),
                config.uri.clone(),
                "--warehouse".into(),
                config.warehouse.clone().unwrap(),
                "--table".into(),
                table.into(),
            ],
            Place::S3Tables { .. } => panic!("pyiceberg cannot write through S3 Tables"),
        };
        args.extend(["--rows".into(), rows.into()]);
        if rewrite {
            args.push("--rewrite".into());
        }
        args.extend(self.s3_args());
        read(&args)
    }
}

fn read(args: &[String]) -> Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    support::iceberg_read(&args)
}

/// One `#[tokio::test]` per backend for a scenario `async fn scenario(fx: Backend)`; the
/// tests are named `commit::<scenario>::<backend>`.
macro_rules! on_backends {
    ($scenario:ident: $($backend:ident),+ $(,)?) => {
        mod $scenario {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    let fx = super::Backend::start(super::kind(stringify!($backend))).await;
                    super::$scenario(fx).await;
                }
            )+
        }
    };
}

fn kind(name: &str) -> Kind {
    match name {
        "local" => Kind::Local,
        "s3tables" => Kind::S3Tables,
        "rest_sigv4" => Kind::RestSigv4,
        "rest_oauth2" => Kind::RestOAuth2,
        other => panic!("no backend {other}"),
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------

on_backends!(upserts_deletes_and_reinserts_read_back_exactly: local, s3tables, rest_sigv4, rest_oauth2);
async fn upserts_deletes_and_reinserts_read_back_exactly(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("customers");
    let mut model = Model::default();
    let windows: Vec<Vec<Change>> = vec![
        vec![
            ("c", 1, Some("a")),
            ("c", 2, Some("b")),
            ("c", 3, Some("c")),
        ],
        vec![("u", 1, Some("a2")), ("d", 2, None), ("c", 4, Some("d"))],
        // Re-insert after delete, and an insert+delete inside one window that leaves no row.
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
                &spec(&table),
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
        assert_eq!(
            fx.duckdb_rows(&table).await,
            model.rows(),
            "after window {i}"
        );
    }
    assert_eq!(
        fx.duckdb_rows(&table).await,
        json!([[1, "a2"], [2, "b-again"], [3, "c3"]])
    );

    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["format_version"], 2);
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
    // Only rows the table holds are deleted, by position: 1 and 2 (window 2; 4 is new), none
    // in window 3 (2 and 5 are not in the table), 3 and 4 (window 4).
    assert_eq!(last["total-position-deletes"], "4");
    assert_eq!(last["total-equality-deletes"], "0");
    assert_eq!(info["rows"], model.rows(), "pyiceberg reads the deletes");

    let offsets = engine
        .committed_offsets(&table.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(offsets.get("dbserver1.inventory.customers", 0), Some(40));
}

on_backends!(a_truncate_replaces_every_row_once: local, s3tables, rest_sigv4);
async fn a_truncate_replaces_every_row_once(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("truncated");
    for (changes, next) in [
        (
            vec![
                ("c", 1, Some("a")),
                ("c", 2, Some("b")),
                ("c", 3, Some("c")),
            ],
            10,
        ),
        (vec![("u", 2, Some("b2"))], 20),
    ] {
        engine
            .commit(&spec(&table), window(&changes, "t", next))
            .await
            .unwrap();
    }
    // Truncated at offset 20; then key 2 comes back and key 4 is new.
    let truncated = |changes: &[Change<'_>]| {
        let mut w = window(changes, "t", 23);
        w.truncated_at = Some(KafkaPosition {
            topic: "t".into(),
            partition: 0,
            offset: 20,
            timestamp: None,
        });
        w
    };
    let outcome = engine
        .commit(
            &spec(&table),
            truncated(&[("u", 2, Some("b3")), ("c", 4, Some("d"))]),
        )
        .await
        .unwrap();
    assert_eq!(outcome.delete_files, 0, "an emptied table needs no deletes");
    assert_eq!(fx.duckdb_rows(&table).await, json!([[2, "b3"], [4, "d"]]));

    // The truncate read again (a restart before Kafka heard of it): the table holds its
    // position, so it empties nothing.
    let mut again = truncated(&[]);
    again.batches.clear();
    engine.commit(&spec(&table), again).await.unwrap();
    engine
        .commit(&spec(&table), window(&[("c", 5, Some("e"))], "t", 24))
        .await
        .unwrap();
    assert_eq!(
        fx.duckdb_rows(&table).await,
        json!([[2, "b3"], [4, "d"], [5, "e"]])
    );

    let info = fx.pyiceberg(&table).await;
    let snapshots = by_sequence(&info);
    let before = &snapshots[1]["summary"];
    assert_eq!(before["total-records"], "4");
    assert_eq!(before["total-delete-files"], "1");
    let truncate = &snapshots[2]["summary"];
    assert_eq!(truncate["deleted-records"], "4", "{truncate}");
    assert_eq!(truncate["deleted-data-files"], "2", "{truncate}");
    assert_eq!(truncate["removed-delete-files"], "1", "{truncate}");
    assert_eq!(truncate["total-records"], "2", "{truncate}");
    assert_eq!(truncate["total-data-files"], "1", "{truncate}");
    assert_eq!(truncate["total-delete-files"], "0", "{truncate}");
    assert_eq!(snapshots[4]["summary"]["total-records"], "3");
}

on_backends!(soft_deletes_keep_the_last_image_and_metadata_columns_are_filled: local, s3tables, rest_sigv4);
async fn soft_deletes_keep_the_last_image_and_metadata_columns_are_filled(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("soft");
    let mut spec = spec(&table);
    spec.extras = Extras {
        soft_delete: true,
        metadata_columns: vec![MetadataColumn::Op, MetadataColumn::UpdatedAt],
    };
    // Deletes carry only the key (as Debezium sends them without REPLICA IDENTITY FULL):
    // the kept row takes its values from the table (2, 3) or from earlier in the window (4).
    let windows: Vec<Vec<Change>> = vec![
        vec![
            ("c", 1, Some("a")),
            ("c", 2, Some("b")),
            ("c", 3, Some("c")),
        ],
        vec![
            ("u", 1, Some("a2")),
            ("d", 2, None),
            ("d", 3, None),
            ("c", 4, Some("d")),
            ("d", 4, None),
        ],
        // A soft-deleted key inserted again replaces its deleted row.
        vec![("c", 2, Some("b-again"))],
    ];
    for (i, changes) in windows.iter().enumerate() {
        engine
            .commit(&spec, window(changes, "t", (i as i64 + 1) * 10))
            .await
            .unwrap();
    }
    let read = fx
        .duckdb(&table, Some("id,name,__floe_deleted,__floe_op"))
        .await;
    assert_eq!(
        read["rows"],
        json!([
            [1, "a2", false, "u"],
            [2, "b-again", false, "c"],
            [3, "c", true, "d"],
            [4, "d", true, "d"]
        ])
    );
    let updated_at = fx.duckdb(&table, Some("id,__floe_updated_at")).await;
    let types: Vec<&str> = updated_at["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[1], "TIMESTAMP WITH TIME ZONE", "{updated_at}");
    for row in updated_at["rows"].as_array().unwrap() {
        assert!(
            row[1].is_string(),
            "a commit time on every row: {updated_at}"
        );
    }
}

on_backends!(pyiceberg_reads_updates_and_sees_the_schema: local, s3tables, rest_sigv4, rest_oauth2);
async fn pyiceberg_reads_updates_and_sees_the_schema(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("items");
    engine
        .commit(
            &spec(&table),
            window(&[("r", 1, Some("x")), ("r", 2, None)], "t", 2),
        )
        .await
        .unwrap();
    let info = fx.pyiceberg(&table).await;
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

    // Updates are position deletes, which pyiceberg applies as DuckDB does.
    engine
        .commit(&spec(&table), window(&[("u", 1, Some("y"))], "t", 3))
        .await
        .unwrap();
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["rows"], json!([[1, "y"], [2, null]]), "{info}");
    assert_eq!(fx.duckdb_rows(&table).await, json!([[1, "y"], [2, null]]));
}

on_backends!(many_commits_in_a_row: local, s3tables, rest_sigv4);
/// 30 commits of updates and deletes, with manifests merged once 4 of a kind pile up: the
/// merged manifests keep each file's sequence number, so every position delete still
/// applies to the rows it was written for.
async fn many_commits_in_a_row(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("many");
    let mut spec = spec(&table);
    spec.properties
        .insert("commit.manifest.min-count-to-merge".into(), "4".into());
    let mut model = Model::default();
    let names: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
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
            .commit(&spec, window(&changes, "t", i + 1))
            .await
            .unwrap();
        model.apply(&changes);
    }
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["rows"], model.rows(), "{info}");
    let snapshots = by_sequence(&info);
    assert_eq!(snapshots.len(), 30);
    // Without merging, the last snapshot would list about one manifest of each kind per commit.
    let manifests = info["manifests"].as_array().unwrap();
    for content in ["data", "deletes"] {
        let of_kind = manifests
            .iter()
            .filter(|m| m["content"].as_str().unwrap().eq_ignore_ascii_case(content))
            .count();
        assert!((1..=4).contains(&of_kind), "{content}: {manifests:?}");
    }
    let replaced: u64 = snapshots
        .iter()
        .map(|s| {
            s["summary"]["manifests-replaced"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(replaced >= 20, "manifests merged: {replaced}");
}

on_backends!(old_snapshots_expire_and_only_their_files_go: local, s3tables, rest_sigv4);
async fn old_snapshots_expire_and_only_their_files_go(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("expiring");
    let mut spec = spec(&table);
    for (key, value) in [
        ("history.expire.max-snapshot-age-ms", "0"),
        ("history.expire.min-snapshots-to-keep", "5"),
        ("commit.manifest.min-count-to-merge", "20"),
        ("write.metadata.previous-versions-max", "10"),
    ] {
        spec.properties.insert(key.into(), value.into());
    }
    // S3 Tables expires snapshots itself: Floe leaves them.
    let expires = fx.kind != Kind::S3Tables;
    let commits: i64 = if fx.kind == Kind::Local { 2000 } else { 40 };
    let mut model = Model::default();
    let (mut expired, mut removed) = (0, 0);
    let mut compaction_snapshots = 0;
    let mut early_metadata_size = 0;
    let names: Vec<String> = (0..commits).map(|i| format!("v{i}")).collect();
    for i in 0..commits {
        let id = i % 50;
        let changes: Vec<Change> = match i % 5 {
            4 => vec![("d", id, None)],
            _ => vec![("u", id, Some(names[i as usize].as_str()))],
        };
        let mut changed = window(&changes, "t", i + 1);
        // The source table is truncated twice: what it held goes with snapshots that expire.
        if i == commits / 2 || i == commits - 8 {
            changed.truncated_at = Some(KafkaPosition {
                topic: "t".into(),
                partition: 0,
                offset: i,
                timestamp: None,
            });
            model.0.clear();
        }
        let outcome = engine.commit(&spec, changed).await.unwrap();
        model.apply(&changes);
        expired += outcome.expired_snapshots;
        removed += outcome.removed_files;
        // Compacted once: its two snapshots (the compaction, then the table without the
        // manifests of what it removed) expire like the others, and take the files it removed.
        if i == commits / 4 && expires {
            let compacted = engine.compact(&table.parse().unwrap()).await.unwrap();
            assert!(compacted.snapshot_id.is_some(), "{compacted:?}");
            expired += compacted.expired_snapshots;
            removed += compacted.removed_files;
            compaction_snapshots += 2;
        }
        if i == 99 && fx.kind == Kind::Local {
            early_metadata_size = std::fs::metadata(fx.metadata_location(&table).await)
                .unwrap()
                .len();
        }
    }
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let info = fx.pyiceberg_with(&table, &["--referenced"]).await;
    assert_eq!(info["rows"], model.rows(), "{}", info["rows"]);
    let snapshots = info["snapshots"].as_array().unwrap().len();
    if !expires {
        assert_eq!((snapshots, expired, removed), (commits as usize, 0, 0));
        return;
    }
    assert_eq!(snapshots, 5);
    assert_eq!(expired, commits as usize + compaction_snapshots - 5);
    assert!(removed as i64 >= commits - 5, "files removed: {removed}");
    let manifests = info["manifests"].as_array().unwrap();
    assert!(manifests.len() <= 40, "{manifests:?}");
    if fx.kind != Kind::Local {
        return;
    }
    // The metadata file no longer grows with the commits.
    let metadata = fx.metadata_location(&table).await;
    let size = std::fs::metadata(&metadata).unwrap().len();
    assert!(
        size <= early_metadata_size + early_metadata_size / 5,
        "metadata.json: {early_metadata_size} bytes after 100 commits, {size} after {commits}"
    );
    // What is on disk is exactly what the table references: nothing an expired snapshot or an
    // old metadata file left behind, nothing a kept snapshot needs removed.
    let location = info["location"].as_str().unwrap();
    let strip = |p: &str| p.trim_start_matches("file://").to_string();
    let referenced: Vec<String> = info["referenced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| strip(p.as_str().unwrap()))
        .collect();
    let mut on_disk: Vec<String> = walkdir(std::path::Path::new(&strip(location)));
    on_disk.sort();
    assert_eq!(on_disk, referenced);
    assert!(
        on_disk
            .iter()
            .filter(|p| p.ends_with(".metadata.json"))
            .count()
            <= 11,
        "{on_disk:?}"
    );
}

/// Every file under `dir`, as absolute paths.
fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walkdir(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

on_backends!(compaction_rewrites_the_rows_into_few_files_and_keeps_the_offsets: local, s3tables, rest_sigv4);
async fn compaction_rewrites_the_rows_into_few_files_and_keeps_the_offsets(fx: Backend) {
    let fx = Arc::new(fx);
    let table = fx.table("compacted");
    let name: floe::config::TableName = table.parse().unwrap();
    let writer = CommitEngine::new(fx.catalog().await, settings());
    let mut model = Model::default();
    let names: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    for i in 0..12i64 {
        let changes: Vec<Change> = match i % 4 {
            3 => vec![("d", i % 5, None)],
            _ => vec![
                ("u", i % 5, Some(names[i as usize].as_str())),
                ("c", 100 + i, Some("new")),
            ],
        };
        writer
            .commit(&spec(&table), window(&changes, "t", i + 1))
            .await
            .unwrap();
        model.apply(&changes);
    }
    let offsets = writer.committed_offsets(&name).await.unwrap();

    // Another Floe commits (topic `other`) while the compaction reads and writes: its commit
    // conflicts, and it starts over on the table with that commit in it.
    let maintainer = CommitEngine::new(
        Arc::new(AnotherWriterFirst {
            inner: fx.catalog().await,
            other: AnotherWriter::Floe(Arc::new(CommitEngine::new(fx.catalog().await, settings()))),
            done: AtomicBool::new(false),
        }),
        settings(),
    );
    let compacted = maintainer.compact(&name).await.unwrap();
    model.apply(&[("c", 77, Some("sneaked in"))]);
    assert_eq!(compacted.attempts, 2, "{compacted:?}");
    assert!(compacted.snapshot_id.is_some(), "{compacted:?}");
    assert_eq!(compacted.data_files_before, 10, "{compacted:?}");
    assert!(compacted.delete_files_before >= 5, "{compacted:?}");
    assert_eq!(compacted.data_files_after, 1, "{compacted:?}");
    assert_eq!(compacted.rows as usize, model.0.len(), "{compacted:?}");

    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["rows"], model.rows());
    // Two snapshots: the compaction, which records the removed files in two manifests of
    // their own (data and deletes), then one that lists the table without those manifests.
    let snapshots = by_sequence(&info);
    let [compaction, tidied] = &snapshots[snapshots.len() - 2..] else {
        unreachable!()
    };
    for snapshot in [compaction, tidied] {
        assert_eq!(snapshot["operation"], "replace", "{snapshot}");
        let summary = &snapshot["summary"];
        assert_eq!(summary["total-data-files"], "1", "{summary}");
        assert_eq!(summary["total-delete-files"], "0", "{summary}");
        assert_eq!(
            summary["total-records"],
            model.0.len().to_string(),
            "{summary}"
        );
    }
    assert_eq!(tidied["summary"]["manifests-replaced"], "2", "{tidied}");
    assert_eq!(tidied["summary"]["manifests-kept"], "1", "{tidied}");
    // Readers of the table no longer go through the removed files' entries.
    let dead = |info: &serde_json::Value| {
        info["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["added_files"] == 0 && m["existing_files"] == 0)
            .count()
    };
    assert_eq!(dead(&info), 0, "{}", info["manifests"]);
    // The offsets of both writers are still the table's.
    let mut both = offsets.clone();
    both.advance("other", 0, 1);
    assert_eq!(writer.committed_offsets(&name).await.unwrap(), both);
    // Nothing left to do.
    let again = maintainer.compact(&name).await.unwrap();
    assert_eq!((again.snapshot_id, again.data_files_before), (None, 1));

    // Floe commits on: the old rows are found in the compacted file.
    let changes = [("u", 100, Some("after")), ("d", 77, None)];
    writer
        .commit(&spec(&table), window(&changes, "t", 13))
        .await
        .unwrap();
    model.apply(&changes);
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["rows"], model.rows());
    assert_eq!(dead(&info), 0, "{}", info["manifests"]);
}

/// The table's rows as pyiceberg reads them, and its live files as pyiceberg lists them:
/// (path, content, record count, size).
async fn rows_and_files(fx: &Backend, table: &str) -> (Value, Vec<(String, i64, i64, u64)>) {
    let info = fx.pyiceberg_with(table, &["--files"]).await;
    let files = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file_path"].as_str().unwrap().to_string(),
                f["content"].as_i64().unwrap(),
                f["record_count"].as_i64().unwrap(),
                f["file_size_in_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    (info["rows"].clone(), files)
}

on_backends!(compaction_keeps_full_files_no_delete_touches: local, s3tables, rest_sigv4);
async fn compaction_keeps_full_files_no_delete_touches(fx: Backend) {
    let table = fx.table("partly_compacted");
    let name: floe::config::TableName = table.parse().unwrap();
    let writer = CommitEngine::new(fx.catalog().await, settings());
    let mut model = Model::default();
    let names: Vec<String> = (0..5_000).map(|i| format!("name-{i}")).collect();
    let big: Vec<Change> = (0..5_000)
        .map(|i| ("c", i as i64, Some(names[i].as_str())))
        .collect();
    let windows: [Vec<Change>; 4] = [
        big,
        vec![("c", 100_000, Some("b0")), ("c", 100_001, Some("b1"))],
        // An update of a row of the second file: a position delete that names only it.
        vec![("u", 100_000, Some("b0 again"))],
        vec![("c", 100_002, Some("b2"))],
    ];
    for (i, changes) in windows.iter().enumerate() {
        writer
            .commit(&spec(&table), window(changes, "t", i as i64 + 1))
            .await
            .unwrap();
        model.apply(changes);
    }
    let (_, files) = rows_and_files(&fx, &table).await;
    let full = files.iter().find(|f| f.2 == 5_000).unwrap().clone();
    assert_eq!(
        files.iter().map(|f| f.1).collect::<Vec<_>>(),
        [0, 0, 0, 0, 1],
        "{files:?}"
    );
    // The large file is of the target size; the others are far under it.
    let mut small = settings();
    small.files.target_file_size = full.3;
    assert!(
        files
            .iter()
            .filter(|f| f.0 != full.0)
            .all(|f| f.3 < full.3 / 2),
        "{files:?}"
    );
    let maintainer = CommitEngine::new(fx.catalog().await, small.clone());
    let compacted = maintainer.compact(&name).await.unwrap();
    assert!(compacted.snapshot_id.is_some(), "{compacted:?}");
    assert_eq!(
        (
            compacted.data_files_before,
            compacted.delete_files_before,
            compacted.data_files_rewritten,
            compacted.data_files_after,
            compacted.rows
        ),
        (4, 1, 3, 2, 3),
        "{compacted:?}"
    );
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let (rows, files) = rows_and_files(&fx, &table).await;
    assert_eq!(rows, model.rows());
    assert!(files.contains(&full), "the full file stays: {files:?}");
    assert_eq!(
        files.iter().map(|f| (f.1, f.2)).collect::<Vec<_>>(),
        [(0, 3), (0, 5_000)],
        "{files:?}"
    );

    // Floe commits on: a row of the kept file and one of the rewritten file are found.
    let changes = [("u", 7, Some("seven")), ("d", 100_001, None)];
    writer
        .commit(&spec(&table), window(&changes, "t", 5))
        .await
        .unwrap();
    model.apply(&changes);
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    assert_eq!(fx.pyiceberg(&table).await["rows"], model.rows());

    // Now a delete touches the full file: it is rewritten with the rest.
    let compacted = maintainer.compact(&name).await.unwrap();
    assert_eq!(
        (compacted.data_files_before, compacted.data_files_rewritten),
        (3, 3),
        "{compacted:?}"
    );
    assert_eq!(compacted.rows as usize, model.0.len(), "{compacted:?}");
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let (rows, files) = rows_and_files(&fx, &table).await;
    assert_eq!(rows, model.rows());
    assert!(
        !files.iter().any(|f| f.0 == full.0 || f.1 != 0),
        "{files:?}"
    );

    // Equality deletes reach every older file of their partition, none written after them.
    let table = fx.table("partly_compacted_eq");
    let name: floe::config::TableName = table.parse().unwrap();
    let mut eq_spec = spec(&table);
    eq_spec.deletes = DeleteMode::Equality;
    let mut model = Model::default();
    // One row fewer than the first file, to tell the two apart.
    let later: Vec<Change> = (0..4_999)
        .map(|i| ("c", 50_000 + i as i64, Some(names[i].as_str())))
        .collect();
    let windows: [Vec<Change>; 3] = [windows[0].clone(), vec![("u", 5, Some("five"))], later];
    for (i, changes) in windows.iter().enumerate() {
        writer
            .commit(&eq_spec, window(changes, "t", i as i64 + 1))
            .await
            .unwrap();
        model.apply(changes);
    }
    let (_, before) = rows_and_files(&fx, &table).await;
    let data: Vec<i64> = before.iter().filter(|f| f.1 == 0).map(|f| f.2).collect();
    assert_eq!(data, [1, 4_999, 5_000], "{before:?}");
    let deletes = before.iter().filter(|f| f.1 == 2).count();
    assert_eq!(deletes + data.len(), before.len(), "{before:?}");
    let kept = before.iter().find(|f| f.2 == 4_999).unwrap().clone();
    // The first file (under the update's delete) and the updated row's small file are
    // rewritten; the last file came after every delete and is of the target size.
    let compacted = maintainer.compact(&name).await.unwrap();
    assert_eq!(
        (
            compacted.data_files_rewritten,
            compacted.delete_files_before,
            compacted.rows
        ),
        (2, deletes, 5_000),
        "{compacted:?}"
    );
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let (rows, files) = rows_and_files(&fx, &table).await;
    assert_eq!(rows, model.rows());
    assert!(files.contains(&kept), "{files:?}");
    assert!(files.iter().all(|f| f.1 == 0), "{files:?}");
}

on_backends!(orphan_files_past_the_age_go_and_referenced_files_stay: local, s3tables, rest_sigv4);
async fn orphan_files_past_the_age_go_and_referenced_files_stay(fx: Backend) {
    let table = fx.table("orphans");
    let name: floe::config::TableName = table.parse().unwrap();
    let catalog = fx.catalog().await;
    let engine = CommitEngine::new(catalog.clone(), settings());
    let mut model = Model::default();
    for (i, changes) in [
        vec![("c", 1, Some("a")), ("c", 2, Some("b"))],
        vec![("u", 1, Some("a2")), ("d", 2, None)],
        vec![("c", 3, Some("c"))],
    ]
    .iter()
    .enumerate()
    {
        engine
            .commit(&spec(&table), window(changes, "t", i as i64 + 1))
            .await
            .unwrap();
        model.apply(changes);
    }
    // Files no metadata references: as a killed writer or an unknown commit outcome leaves.
    let loaded = catalog
        .load_table(&engine.ident(&name).unwrap())
        .await
        .unwrap()
        .unwrap();
    let location = loaded.metadata.location().trim_end_matches('/').to_string();
    let strays = [
        format!("{location}/data/stray-00000.parquet"),
        format!("{location}/metadata/stray-m0.avro"),
    ];
    for stray in &strays {
        loaded
            .file_io
            .new_output(stray)
            .unwrap()
            .write(bytes::Bytes::from_static(b"not referenced"))
            .await
            .unwrap();
    }
    let exists = |path: String| {
        let io = loaded.file_io.clone();
        async move { io.exists(&path).await.unwrap() }
    };

    if fx.kind == Kind::S3Tables {
        // S3 Tables forbids listing: nothing is looked at.
        let removed = engine.remove_orphans(&name, Duration::ZERO).await.unwrap();
        assert_eq!(removed, None);
        return;
    }
    // Younger than the age: kept.
    let removed = engine
        .remove_orphans(&name, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, Some((0, 0)));
    for stray in &strays {
        assert!(exists(stray.clone()).await, "{stray}");
    }
    // Past the age (any age): deleted, and only they.
    let removed = engine.remove_orphans(&name, Duration::ZERO).await.unwrap();
    assert_eq!(removed, Some((2, 2)));
    for stray in &strays {
        assert!(!exists(stray.clone()).await, "{stray}");
    }
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let info = fx.pyiceberg_with(&table, &["--referenced"]).await;
    assert_eq!(info["rows"], model.rows());
    for path in info["referenced"].as_array().unwrap() {
        let path = path.as_str().unwrap().to_string();
        assert!(exists(path.clone()).await, "{path} was deleted");
    }
    // Floe commits on.
    let changes = [("u", 3, Some("c2"))];
    engine
        .commit(&spec(&table), window(&changes, "t", 4))
        .await
        .unwrap();
    model.apply(&changes);
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
}

on_backends!(schema_changes_add_columns_and_widen_types: local, s3tables, rest_sigv4);
async fn schema_changes_add_columns_and_widen_types(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("evolve");
    engine
        .commit(&spec(&table), window(&[("c", 1, Some("a"))], "t", 1))
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
            &spec(&table),
            TableChanges {
                batches: vec![with_qty],
                offsets: CommittedOffsets::default(),
                truncated_at: None,
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
            &spec(&table),
            TableChanges {
                batches: vec![wide],
                offsets: CommittedOffsets::default(),
                truncated_at: None,
            },
        )
        .await
        .unwrap();

    let read = fx.duckdb(&table, None).await;
    assert_eq!(
        read["rows"],
        json!([[1, "a", null], [2, "b", 7], [3, null, 5_000_000_000i64]])
    );
    let info = fx.pyiceberg(&table).await;
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
            &spec(&table),
            TableChanges {
                batches: vec![text],
                offsets: CommittedOffsets::default(),
                truncated_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "table {table}, column qty: incompatible schema change: the table has type long, the source now sends string"
        )
    );
}

on_backends!(an_outside_writer_between_two_commits_is_kept: local, rest_sigv4);
async fn an_outside_writer_between_two_commits_is_kept(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("shared");
    engine
        .commit(&spec(&table), window(&[("c", 1, Some("floe"))], "t", 5))
        .await
        .unwrap();
    fx.outside_append(&table, r#"[{"id": 50, "name": "outside"}]"#);
    engine
        .commit(&spec(&table), window(&[("u", 1, Some("floe2"))], "t", 9))
        .await
        .unwrap();
    assert_eq!(
        fx.duckdb_rows(&table).await,
        json!([[1, "floe2"], [50, "outside"]])
    );
    let info = fx.pyiceberg(&table).await;
    assert_eq!(operations(&info), ["overwrite", "append", "overwrite"]);
    let offsets = engine
        .committed_offsets(&table.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(offsets.get("t", 0), Some(9));
}

on_backends!(outside_rewrites_and_duplicated_keys_end_in_one_row_per_key: local, rest_sigv4);
async fn outside_rewrites_and_duplicated_keys_end_in_one_row_per_key(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let table = fx.table("rewritten");
    let mut model = Model::default();
    let mut next = 0;
    let mut commit = async |changes: &[Change<'_>], model: &mut Model| {
        next += 10;
        let outcome = engine
            .commit(&spec(&table), window(changes, "t", next))
            .await
            .unwrap();
        model.apply(changes);
        outcome
    };
    commit(
        &[
            ("c", 1, Some("a")),
            ("c", 2, Some("b")),
            ("c", 3, Some("c")),
            ("c", 4, Some("d")),
        ],
        &mut model,
    )
    .await;
    // Another engine compacts: every row moves to a new file and position.
    fx.outside_rewrite(&table, "[]");
    let outcome = commit(
        &[("u", 1, Some("a2")), ("d", 2, None), ("c", 5, Some("e"))],
        &mut model,
    )
    .await;
    assert!(outcome.indexed);
    assert_eq!(
        outcome.keys_deleted, 2,
        "the rows of 1 and 2, where the rewrite put them"
    );
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());

    // Another writer adds a second row for key 3; Floe's next change of 3 replaces both, and
    // a re-sent insert of 4 replaces the row the table holds.
    fx.outside_append(&table, r#"[{"id": 3, "name": "dup"}]"#);
    let outcome = commit(&[("u", 3, Some("c2")), ("c", 4, Some("d"))], &mut model).await;
    assert_eq!(outcome.keys_deleted, 3, "two rows of 3, one of 4");
    fx.outside_rewrite(&table, "[]");
    commit(&[("d", 4, None), ("r", 5, Some("e2"))], &mut model).await;

    assert_eq!(
        model.rows(),
        json!([[1, "a2"], [3, "c2"], [5, "e2"]]),
        "the model"
    );
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["rows"], model.rows(), "{info}");
}

/// A table Floe wrote with equality deletes (before it kept a key index, or in equality
/// mode) is indexed exactly: its equality deletes apply by sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_equality_deletes_is_indexed_exactly() {
    let fx = Backend::start(kind("local")).await;
    let table = fx.table("mixed");
    let mut model = Model::default();
    let windows: Vec<Vec<Change>> = vec![
        vec![
            ("c", 1, Some("a")),
            ("c", 2, Some("b")),
            ("c", 3, Some("c")),
        ],
        vec![("u", 1, Some("a2")), ("d", 2, None)],
        vec![("c", 2, Some("b2")), ("u", 3, Some("c2"))],
        // From here on, position deletes against rows of both eras.
        vec![("u", 2, Some("b3")), ("d", 3, None), ("c", 1, Some("a3"))],
        vec![("c", 3, Some("c3")), ("u", 2, Some("b4"))],
    ];
    for (i, changes) in windows.iter().enumerate() {
        let mut spec = spec(&table);
        if i < 3 {
            spec.deletes = DeleteMode::Equality;
        }
        // A new engine per window: each position-mode commit builds its index from the table.
        let engine = CommitEngine::new(fx.catalog().await, settings());
        let outcome = engine
            .commit(&spec, window(changes, "t", (i as i64 + 1) * 10))
            .await
            .unwrap();
        assert_eq!(outcome.indexed, i >= 3);
        // Only live rows are found: the rows the equality deletes removed are not deleted again.
        match i {
            3 => assert_eq!(outcome.keys_deleted, 3, "b2, c2 and a2"),
            4 => assert_eq!(outcome.keys_deleted, 1, "b3 (3 is not in the table)"),
            _ => {}
        }
        model.apply(changes);
        assert_eq!(
            fx.duckdb_rows(&table).await,
            model.rows(),
            "after window {i}"
        );
    }
}

on_backends!(two_writers_racing_on_one_table_lose_nothing: local, s3tables, rest_sigv4);
async fn two_writers_racing_on_one_table_lose_nothing(fx: Backend) {
    let table = fx.table("race");
    // Two engines with their own catalog clients, as two processes would have.
    let a = Arc::new(CommitEngine::new(fx.catalog().await, settings()));
    let b = Arc::new(CommitEngine::new(fx.catalog().await, settings()));
    a.commit(&spec(&table), window(&[("c", 0, Some("seed"))], "t", 1))
        .await
        .unwrap();
    let run = |engine: Arc<CommitEngine>, base: i64, partition: i32| {
        let table = table.clone();
        async move {
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
                        &spec(&table),
                        TableChanges {
                            batches: vec![batch(&changes)],
                            offsets,
                            truncated_at: None,
                        },
                    )
                    .await
                    .unwrap();
                retries += outcome.attempts - 1;
            }
            retries
        }
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(run(a.clone(), 1000, 1)),
        tokio::spawn(run(b.clone(), 2000, 2))
    );
    let retries = ra.unwrap() + rb.unwrap();
    let rows = fx.duckdb_rows(&table).await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1 + 15 + 15, "{rows:?}");
    assert_eq!(rows[1], json!([1000, "w1000-14"]));
    assert_eq!(rows[16], json!([2000, "w2000-14"]));
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["snapshots"].as_array().unwrap().len(), 31);
    // Both writers' offsets survive in the table, whoever committed last.
    let offsets = a.committed_offsets(&table.parse().unwrap()).await.unwrap();
    assert_eq!(offsets.get("t", 1), Some(15));
    assert_eq!(offsets.get("t", 2), Some(15));
    eprintln!("{:?}: racing writers retried {retries} times", fx.kind);
    // The writers did race: some commits met the other's snapshot and were re-applied (9 to
    // 24 of the 30 in runs on every backend), or the test showed nothing about conflicts.
    assert!(retries > 0, "the two writers never conflicted");
}

/// A catalog whose first commit after the table has data is applied but reported as "state
/// unknown" (a timeout after the catalog did its work).
struct LosesFirstAnswer {
    inner: Arc<dyn TableCatalog>,
    lost: AtomicBool,
}

#[async_trait]
impl TableCatalog for LosesFirstAnswer {
    fn kind(&self) -> &'static str {
        "flaky"
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
                catalog: "flaky",
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

/// A catalog in front of which another writer commits just before Floe's first commit into a
/// table with data, so that commit meets a stale base: pyiceberg through the catalog, or
/// (on S3 Tables, where pyiceberg has no catalog) a second Floe engine.
struct AnotherWriterFirst {
    inner: Arc<dyn TableCatalog>,
    other: AnotherWriter,
    done: AtomicBool,
}

enum AnotherWriter {
    Pyiceberg(Arc<Backend>),
    /// pyiceberg rewriting the whole table into new files, as a compaction would.
    PyicebergRewrite(Arc<Backend>),
    Floe(Arc<CommitEngine>),
}

#[async_trait]
impl TableCatalog for AnotherWriterFirst {
    fn kind(&self) -> &'static str {
        self.inner.kind()
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
            let table = base.ident.to_string();
            match &self.other {
                AnotherWriter::Pyiceberg(fx) => {
                    fx.outside_append(&table, r#"[{"id": 77, "name": "sneaked in"}]"#);
                }
                AnotherWriter::PyicebergRewrite(fx) => {
                    fx.outside_rewrite(&table, r#"[{"id": 77, "name": "sneaked in"}]"#);
                }
                AnotherWriter::Floe(engine) => {
                    engine
                        .commit(
                            &spec(&table),
                            window(&[("c", 77, Some("sneaked in"))], "other", 1),
                        )
                        .await
                        .expect("the other writer's commit");
                }
            }
        }
        self.inner.commit(base, requirements, updates).await
    }
    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError> {
        self.inner.drop_table(ident).await
    }
}

/// The stale base is refused by the catalog (a stale version token on S3 Tables, 409 from a
/// REST catalog, a lost compare-and-swap locally); the engine reloads and re-applies.
async fn a_conflict_reloads_and_reapplies(fx: Backend, other: &str) {
    let fx = Arc::new(fx);
    let table = fx.table("conflict");
    let other = match other {
        "floe" => AnotherWriter::Floe(Arc::new(CommitEngine::new(fx.catalog().await, settings()))),
        "pyiceberg" => AnotherWriter::Pyiceberg(fx.clone()),
        "rewrite" => AnotherWriter::PyicebergRewrite(fx.clone()),
        other => panic!("no writer {other}"),
    };
    let rewrites = matches!(other, AnotherWriter::PyicebergRewrite(_));
    let other_op = match other {
        AnotherWriter::Floe(_) => "overwrite",
        _ => "append",
    };
    let catalog = Arc::new(AnotherWriterFirst {
        inner: fx.catalog().await,
        other,
        done: AtomicBool::new(false),
    });
    let engine = CommitEngine::new(catalog, settings());
    engine
        .commit(&spec(&table), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap();
    let outcome = engine
        .commit(&spec(&table), window(&[("u", 1, Some("a2"))], "t", 2))
        .await
        .unwrap();
    assert_eq!(
        outcome.attempts, 2,
        "the first attempt met the other writer's commit"
    );
    // After a rewrite the old row of 1 is in another file: the retry deletes it there.
    let want = json!([[1, "a2"], [77, "sneaked in"]]);
    assert_eq!(fx.duckdb_rows(&table).await, want);
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["rows"], want, "{info}");
    let snapshots = by_sequence(&info);
    if !rewrites {
        assert_eq!(operations(&info), ["overwrite", other_op, "overwrite"]);
    }
    // The retried snapshot builds on the other writer's.
    let last = snapshots.len() - 1;
    assert_eq!(
        snapshots[last]["parent_id"],
        snapshots[last - 1]["snapshot_id"]
    );
}

on_backends!(a_conflict_with_pyiceberg_reloads_and_reapplies_the_same_files: local, rest_sigv4);
async fn a_conflict_with_pyiceberg_reloads_and_reapplies_the_same_files(fx: Backend) {
    a_conflict_reloads_and_reapplies(fx, "pyiceberg").await;
}

on_backends!(a_conflict_with_a_compaction_finds_the_rows_again: local, rest_sigv4);
async fn a_conflict_with_a_compaction_finds_the_rows_again(fx: Backend) {
    a_conflict_reloads_and_reapplies(fx, "rewrite").await;
}

on_backends!(a_conflict_with_another_floe_reloads_and_reapplies_the_same_files: local, s3tables, rest_sigv4, rest_oauth2);
async fn a_conflict_with_another_floe_reloads_and_reapplies_the_same_files(fx: Backend) {
    a_conflict_reloads_and_reapplies(fx, "floe").await;
}

on_backends!(a_commit_whose_answer_was_lost_is_not_applied_twice: local, s3tables, rest_sigv4);
async fn a_commit_whose_answer_was_lost_is_not_applied_twice(fx: Backend) {
    let table = fx.table("unknown");
    let flaky = Arc::new(LosesFirstAnswer {
        inner: fx.catalog().await,
        lost: AtomicBool::new(false),
    });
    let engine = CommitEngine::new(flaky, settings());
    engine
        .commit(&spec(&table), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap();
    let outcome = engine
        .commit(
            &spec(&table),
            window(&[("c", 2, Some("b")), ("u", 1, Some("a2"))], "t", 3),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.attempts, 1,
        "found in the table after the lost answer"
    );
    let info = fx.pyiceberg(&table).await;
    assert_eq!(
        info["snapshots"].as_array().unwrap().len(),
        2,
        "applied once"
    );
    assert_eq!(fx.duckdb_rows(&table).await, json!([[1, "a2"], [2, "b"]]));
}

/// One Debezium record as Kafka's JsonConverter writes it with schemas off: (op, id, name).
fn debezium_json(op: &str, id: i64, name: Option<&str>) -> (String, String) {
    let row = |n: Option<&str>| n.map(|n| json!({"id": id, "name": n}));
    let (before, after) = match op {
        "d" => (Some(json!({"id": id, "name": null})), None),
        _ => (None, row(name)),
    };
    let value = json!({
        "before": before,
        "after": after,
        "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "dbserver1",
                   "ts_ms": 1_700_000_000_000_i64, "snapshot": "false", "db": "postgres",
                   "schema": "inventory", "table": "customers"},
        "op": op,
        "ts_ms": 1_700_000_000_000_i64,
    });
    (json!({"id": id}).to_string(), value.to_string())
}

/// Reads `records` (offsets 0.. of partition 0) up to `end` as `floe run` does: decoded,
/// merged per key in the table buffer, laid out as change batches.
fn buffered_window(topic: &str, records: &[(String, String)], end: usize) -> TableChanges {
    let config = config::load_str(
        &format!("[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"{topic}\"]\n[catalog]\ntype = \"local\"\n"),
        std::path::Path::new("test.toml"),
        std::iter::empty(),
    )
    .unwrap();
    let mut decoder = floe::decode::Decoder::new(&config.decode, &config.tables);
    let mut buffer = floe::buffer::TableBuffer::default();
    for (offset, (key, value)) in records[..end].iter().enumerate() {
        let record = floe::decode::KafkaRecord {
            topic,
            partition: 0,
            offset: offset as i64,
            timestamp: Some(1_700_000_000_000),
            key: Some(key.as_bytes()),
            value: Some(value.as_bytes()),
            headers: Vec::new(),
        };
        match decoder.decode(&record).unwrap() {
            floe::decode::Decoded::Change(change) => buffer.push(change),
            other => panic!("offset {offset}: not a change: {other:?}"),
        }
    }
    let flushed = buffer.take();
    let batches = floe::decode::to_batches(&flushed.changes)
        .unwrap()
        .into_iter()
        .map(|part| match part {
            floe::decode::BatchPart::Rows(rows) => rows.batch,
            other => panic!("not rows: {other:?}"),
        })
        .collect();
    TableChanges {
        batches,
        offsets: flushed.offsets,
        truncated_at: None,
    }
}

on_backends!(another_writer_holding_an_offset_inside_the_window_leaves_no_duplicate_and_no_phantom: local, s3tables, rest_sigv4);
/// Another writer of the same group (a member whose poll interval lapsed, a backfill beside
/// `floe run`) committed the first part of the window Floe is about to commit. The buffer has
/// merged each key's changes into one at the key's last offset: an insert and an update into
/// an insert, an insert and a delete into a delete. Each merged change is past the offset the
/// table holds, so it is applied, and it must replace (or remove) the row the other writer
/// committed: no second row for key 1, no row left for key 2. Both delete modes.
async fn another_writer_holding_an_offset_inside_the_window_leaves_no_duplicate_and_no_phantom(
    fx: Backend,
) {
    for deletes in [DeleteMode::Position, DeleteMode::Equality] {
        let engine = CommitEngine::new(fx.catalog().await, settings());
        let table = fx.table(&format!("midwindow_{deletes:?}").to_lowercase());
        let mut spec = spec(&table);
        spec.deletes = deletes;
        let topic = "dbserver1.inventory.customers";
        let records = [
            debezium_json("c", 1, Some("a")),
            debezium_json("c", 2, Some("b")),
            debezium_json("u", 1, Some("a2")),
            debezium_json("d", 2, None),
            debezium_json("c", 3, Some("c")),
        ];
        // The other writer read offsets 0 and 1 and committed them.
        let other = buffered_window(topic, &records, 2);
        engine.commit(&spec, other).await.unwrap();
        assert_eq!(fx.duckdb_rows(&table).await, json!([[1, "a"], [2, "b"]]));
        // Floe read offsets 0 to 4 and merged them per key before the other commit landed.
        let ours = buffered_window(topic, &records, 5);
        let outcome = engine.commit(&spec, ours).await.unwrap();
        assert_eq!(outcome.rows_written, 2, "{deletes:?}: rows 1 and 3");
        let want = json!([[1, "a2"], [3, "c"]]);
        assert_eq!(fx.duckdb_rows(&table).await, want, "{deletes:?}");
        if deletes == DeleteMode::Position {
            // pyiceberg does not apply equality deletes; DuckDB above does.
            assert_eq!(fx.pyiceberg(&table).await["rows"], want);
        }
        let offsets = engine
            .committed_offsets(&table.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(offsets.get(topic, 0), Some(5));
    }
}

// ------------------------------------------------------------------------------------------
// Partitioned tables
// ------------------------------------------------------------------------------------------

/// A change of a table with a timestamp: (op, id, name, ts in microseconds since the epoch).
type TsChange = (&'static str, i64, Option<String>, Option<i64>);

fn ts_batch(changes: &[TsChange]) -> RecordBatch {
    use arrow::array::TimestampMicrosecondArray;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(OP_COLUMN, DataType::Utf8, false),
    ]));
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1)));
    let names: ArrayRef = Arc::new(StringArray::from_iter(
        changes.iter().map(|c| c.2.as_deref()),
    ));
    let ts: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter(changes.iter().map(|c| c.3)).with_timezone("UTC"),
    );
    let ops: ArrayRef = Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.0)));
    RecordBatch::try_new(schema, vec![ids, names, ts, ops]).unwrap()
}

fn ts_window(changes: &[TsChange], next_offset: i64) -> TableChanges {
    let mut offsets = CommittedOffsets::default();
    offsets.advance("dbserver1.inventory.events", 0, next_offset);
    TableChanges {
        batches: vec![ts_batch(changes)],
        offsets,
        truncated_at: None,
    }
}

/// A timestamp as the readers print it.
fn ts_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// 2024-03-01T00:00:00Z, and a day, in microseconds.
const MARCH_1: i64 = 1_709_251_200_000_000;
const DAY: i64 = 86_400_000_000;

/// The source table: id -> (name, ts).
#[derive(Default)]
struct TsModel(BTreeMap<i64, (Option<String>, Option<i64>)>);

impl TsModel {
    fn apply(&mut self, changes: &[TsChange]) {
        for (op, id, name, ts) in changes {
            if *op == "d" {
                self.0.remove(id);
            } else {
                self.0.insert(*id, (name.clone(), *ts));
            }
        }
    }

    fn rows_where(&self, keep: impl Fn(i64, Option<i64>) -> bool) -> Value {
        Value::Array(
            self.0
                .iter()
                .filter(|(id, (_, ts))| keep(**id, *ts))
                .map(|(id, (name, ts))| json!([id, name, ts.map(ts_text)]))
                .collect(),
        )
    }

    fn rows(&self) -> Value {
        self.rows_where(|_, _| true)
    }
}

/// Random changes over 60 keys: inserts, updates (most of which move the row to another day,
/// so to another partition of a table partitioned by day), deletes and re-inserts; the
/// timestamps fall on 6 days, one in ten is null.
fn random_ts_windows(
    rng: &mut support::Lcg,
    model: &TsModel,
    windows: usize,
    per_window: usize,
) -> Vec<Vec<TsChange>> {
    let mut live: std::collections::BTreeSet<i64> = model.0.keys().copied().collect();
    let mut serial = 0;
    (0..windows)
        .map(|_| {
            (0..per_window)
                .map(|_| {
                    serial += 1;
                    let id = rng.next(60) as i64;
                    let ts = (rng.next(10) != 0)
                        .then(|| MARCH_1 + rng.next(6) as i64 * DAY + rng.next(DAY as u64) as i64);
                    let name = Some(format!("n{serial}"));
                    if !live.contains(&id) {
                        live.insert(id);
                        ("c", id, name, ts)
                    } else if rng.next(10) < 7 {
                        ("u", id, name, ts)
                    } else {
                        live.remove(&id);
                        ("d", id, None, None)
                    }
                })
                .collect()
        })
        .collect()
}

fn partitioned(table: &str, fields: &[&str]) -> TableSpec {
    TableSpec {
        partition_spec: fields.iter().map(|f| f.parse().unwrap()).collect(),
        ..spec(table)
    }
}

impl Backend {
    async fn duckdb_ts_rows(&self, table: &str, filter: Option<&str>) -> Value {
        self.duckdb_ts(table, filter).await["rows"].clone()
    }

    /// DuckDB's rows (id, name, ts), with `filter` as a WHERE clause; then also the number of
    /// files its plan read with and without it.
    async fn duckdb_ts(&self, table: &str, filter: Option<&str>) -> Value {
        let mut extra = vec!["--columns", "id,name,ts"];
        if let Some(filter) = filter {
            extra.extend(["--filter", filter]);
        }
        self.duckdb_with(table, &extra).await
    }
}

/// What the readers see of a partitioned table: pyiceberg's rows equal the model's, every
/// position-delete file is in the partition of the data files it points into, and scans with a
/// partition predicate (by pyiceberg, which prunes by the files' partition values, and by
/// DuckDB) return exactly the model's rows for it, both reading fewer files than the table has.
async fn assert_partitioned_reads(
    fx: &Backend,
    table: &str,
    model: &TsModel,
    predicates: &[(String, String, Value)],
) {
    let info = fx
        .pyiceberg_with(table, &["--columns", "id,name,ts", "--partitions"])
        .await;
    assert_eq!(
        info["rows"],
        model.rows(),
        "pyiceberg reads the model's rows"
    );
    let partitions = &info["partitions"];
    assert_eq!(
        partitions["position_delete_mismatches"],
        json!([]),
        "position deletes are in their data files' partitions"
    );
    // Every row of every data file is in the partition its manifest entry gives, recomputed
    // by pyiceberg's own transforms.
    assert_eq!(partitions["data_partition_mismatches"], json!([]));
    assert!(
        partitions["rows_checked"].as_u64() >= Some(model.0.len() as u64),
        "{partitions}"
    );
    for (pyiceberg_filter, duckdb_filter, expected) in predicates {
        let filtered = &fx
            .pyiceberg_with(
                table,
                &["--columns", "id,name,ts", "--filter", pyiceberg_filter],
            )
            .await["filtered"];
        assert_eq!(&filtered["rows"], expected, "pyiceberg, {pyiceberg_filter}");
        assert!(
            filtered["planned_files"].as_u64() < filtered["data_files"].as_u64(),
            "pyiceberg prunes files on {pyiceberg_filter}: {filtered}"
        );
        let duckdb = fx.duckdb_ts(table, Some(duckdb_filter)).await;
        assert_eq!(&duckdb["rows"], expected, "DuckDB, {duckdb_filter}");
        assert!(
            duckdb["files_read"].as_u64() < duckdb["files_total"].as_u64(),
            "DuckDB prunes files on {duckdb_filter}: read {} of {}",
            duckdb["files_read"],
            duckdb["files_total"]
        );
    }
}

on_backends!(random_changes_into_partitioned_tables_read_back_exactly: local, s3tables, rest_sigv4);
/// A random change stream (seed printed) into a table partitioned by `day(ts)` and one by
/// `bucket(8, id)`: updates move rows between days, and so between partitions. After every
/// other commit DuckDB reads the model's rows; at the end pyiceberg too, with pruning on a
/// partition predicate, and the files are split by partition (never one file per row).
async fn random_changes_into_partitioned_tables_read_back_exactly(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let mut rng = support::Lcg(support::seed());
    for (name, fields, spec_json, partitions) in [
        ("by_day", ["day(ts)"], json!([["ts_day", "day"]]), 7),
        (
            "by_bucket",
            ["bucket(8, id)"],
            json!([["id_bucket", "bucket[8]"]]),
            8,
        ),
    ] {
        let table = fx.table(name);
        let spec = partitioned(&table, &fields);
        let mut model = TsModel::default();
        let windows = random_ts_windows(&mut rng, &model, 4, 80);
        let mut position_deletes = 0;
        for (i, changes) in windows.iter().enumerate() {
            let outcome = engine
                .commit(&spec, ts_window(changes, (i as i64 + 1) * 100))
                .await
                .unwrap();
            model.apply(changes);
            assert!(
                outcome.data_files <= partitions && outcome.data_files > 1,
                "{name}, window {i}: {} data files for at most {partitions} partitions",
                outcome.data_files
            );
            position_deletes += outcome.delete_files;
            if i % 2 == 1 {
                assert_eq!(
                    fx.duckdb_ts_rows(&table, None).await,
                    model.rows(),
                    "{name}, after window {i}"
                );
            }
        }
        assert!(
            position_deletes > 0,
            "{name}: updates removed rows by position"
        );
        let info = fx.pyiceberg(&table).await;
        let got: Vec<Value> = info["partition_spec"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| json!([f["name"], f["transform"]]))
            .collect();
        assert_eq!(Value::Array(got), spec_json, "{name}");
        let predicates = if name == "by_day" {
            let (from, to) = (MARCH_1 + 2 * DAY, MARCH_1 + 3 * DAY);
            vec![(
                format!("ts >= '{}' and ts < '{}'", ts_text(from), ts_text(to)),
                format!(
                    "ts >= TIMESTAMPTZ '{}' AND ts < TIMESTAMPTZ '{}'",
                    ts_text(from),
                    ts_text(to)
                ),
                model.rows_where(|_, ts| ts.is_some_and(|t| t >= from && t < to)),
            )]
        } else {
            let id = *model.0.keys().next().unwrap();
            vec![(
                format!("id == {id}"),
                format!("id = {id}"),
                model.rows_where(|k, _| k == id),
            )]
        };
        assert_partitioned_reads(&fx, &table, &model, &predicates).await;
        if name == "by_day" {
            // Compaction rewrites the rows partition by partition.
            let compacted = engine.compact(&table.parse().unwrap()).await.unwrap();
            assert!(compacted.snapshot_id.is_some(), "{compacted:?}");
            assert!(
                compacted.data_files_after <= partitions,
                "{} files after compaction",
                compacted.data_files_after
            );
            assert_partitioned_reads(&fx, &table, &model, &predicates).await;
        }
    }
}

on_backends!(equality_deletes_in_a_partitioned_table_only_when_the_key_decides_the_partition: local, rest_sigv4);
/// An equality delete reaches only rows of its own partition. Partitioned by a bucket of the
/// key, a key's rows stay in one partition: equality deletes are written there and the table
/// reads exactly. Partitioned by a column outside the key, equality deletes are refused with
/// the reason, and nothing is written.
async fn equality_deletes_in_a_partitioned_table_only_when_the_key_decides_the_partition(
    fx: Backend,
) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let mut rng = support::Lcg(support::seed());
    let table = fx.table("eq_by_bucket");
    let spec = TableSpec {
        deletes: DeleteMode::Equality,
        ..partitioned(&table, &["bucket(4, id)"])
    };
    let mut model = TsModel::default();
    let mut equality_deletes = 0;
    for (i, changes) in random_ts_windows(&mut rng, &model, 4, 60)
        .iter()
        .enumerate()
    {
        let outcome = engine
            .commit(&spec, ts_window(changes, (i as i64 + 1) * 100))
            .await
            .unwrap();
        assert!(!outcome.indexed);
        equality_deletes += outcome.delete_files;
        model.apply(changes);
    }
    assert!(
        equality_deletes > 1,
        "equality deletes, one set per partition"
    );
    assert_eq!(fx.duckdb_ts_rows(&table, None).await, model.rows());

    let table = fx.table("eq_by_day");
    let spec = TableSpec {
        deletes: DeleteMode::Equality,
        ..partitioned(&table, &["day(ts)"])
    };
    let error = engine
        .commit(&spec, ts_window(&[("c", 1, None, Some(MARCH_1))], 1))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    let message = error.to_string();
    assert!(
        message.contains("partitioned by ts outside the primary key")
            && message.contains("tables.deletes = \"equality\""),
        "{message}"
    );
    let info = fx.pyiceberg(&table).await;
    assert_eq!(info["snapshots"], json!([]), "nothing was written");
}

on_backends!(a_table_created_partitioned_elsewhere_is_written_under_its_spec: local, rest_sigv4);
/// A table another engine created partitioned (here iceberg-rust through the catalog, with a
/// bucket of the key and an identity field named unlike Floe would): Floe writes under its
/// spec, and the rows read back exactly, with pruning on the key.
async fn a_table_created_partitioned_elsewhere_is_written_under_its_spec(fx: Backend) {
    use iceberg::spec::{NestedField, PrimitiveType, Schema as IcebergSchema, Transform, Type};
    let catalog = fx.catalog().await;
    let engine = CommitEngine::new(catalog.clone(), settings());
    let table = fx.table("created_elsewhere");
    let ident = engine.ident(&table.parse().unwrap()).unwrap();
    let schema = IcebergSchema::builder()
        .with_fields([
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(3, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
        ])
        .with_identifier_field_ids([1])
        .build()
        .unwrap();
    let partitions = iceberg::spec::UnboundPartitionSpec::builder()
        .add_partition_field(1, "shard", Transform::Bucket(8))
        .unwrap()
        .add_partition_field(3, "hour_of_ts", Transform::Hour)
        .unwrap()
        .build();
    catalog.ensure_namespace(&ident.namespace).await.unwrap();
    catalog
        .create_table(
            &ident,
            TableCreation::builder()
                .name(ident.name.clone())
                .schema(schema)
                .partition_spec(partitions)
                .build(),
        )
        .await
        .unwrap();
    let mut rng = support::Lcg(support::seed());
    let mut model = TsModel::default();
    for (i, changes) in random_ts_windows(&mut rng, &model, 3, 40)
        .iter()
        .enumerate()
    {
        // The spec configured for new tables does not apply to an existing one.
        engine
            .commit(
                &partitioned(&table, &["day(ts)"]),
                ts_window(changes, (i as i64 + 1) * 100),
            )
            .await
            .unwrap();
        model.apply(changes);
    }
    assert_eq!(fx.duckdb_ts_rows(&table, None).await, model.rows());
    let id = *model.0.keys().last().unwrap();
    assert_partitioned_reads(
        &fx,
        &table,
        &model,
        &[(
            format!("id == {id}"),
            format!("id = {id}"),
            model.rows_where(|k, _| k == id),
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A table pyiceberg created partitioned by `day(ts)` and `bucket(4, id)` and wrote rows into:
/// Floe updates and deletes them (position deletes against pyiceberg's files, in their
/// partitions) and writes new rows under the same spec; both readers agree with the model.
async fn a_table_pyiceberg_created_partitioned_is_updated_in_its_partitions() {
    let fx = Backend::start(Kind::Local).await;
    let table = fx.table("from_pyiceberg");
    // Floe's catalog first: pyiceberg creates the table in it.
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let mut args = vec!["pyiceberg-write-sample".to_string()];
    args.extend(fx.sqlite_args(&table));
    args.extend(["--partition", "day(ts)", "--partition", "bucket(4, id)"].map(String::from));
    assert_eq!(read(&args)["rows_written"], 3);
    // The sample rows (id, name, ts): 1 alice 2024-01-01, 2 bob 2024-06-15T12:34:56.789012,
    // 3 with no name and no ts.
    let mut model = TsModel::default();
    model
        .0
        .insert(1, (Some("alice".into()), Some(1_704_067_200_000_000)));
    model
        .0
        .insert(2, (Some("bob".into()), Some(1_718_454_896_789_012)));
    model.0.insert(3, (None, None));
    assert_eq!(fx.duckdb_ts_rows(&table, None).await, model.rows());
    let changes: Vec<TsChange> = vec![
        ("u", 1, Some("alice2".into()), Some(MARCH_1)),
        ("d", 2, None, None),
        ("u", 3, Some("carol".into()), Some(MARCH_1 + DAY)),
        ("c", 4, Some("dan".into()), Some(MARCH_1 + DAY)),
        ("c", 5, Some("eve".into()), None),
    ];
    let outcome = engine
        .commit(&spec(&table), ts_window(&changes, 5))
        .await
        .unwrap();
    assert!(outcome.indexed, "{outcome:?}");
    model.apply(&changes);
    assert_eq!(fx.duckdb_ts_rows(&table, None).await, model.rows());
    let day = MARCH_1 + DAY;
    assert_partitioned_reads(
        &fx,
        &table,
        &model,
        &[
            (
                format!("ts >= '{}' and ts < '{}'", ts_text(day), ts_text(day + DAY)),
                format!(
                    "ts >= TIMESTAMPTZ '{}' AND ts < TIMESTAMPTZ '{}'",
                    ts_text(day),
                    ts_text(day + DAY)
                ),
                model.rows_where(|_, ts| ts.is_some_and(|t| t >= day && t < day + DAY)),
            ),
            (
                "id == 5".into(),
                "id = 5".into(),
                model.rows_where(|k, _| k == 5),
            ),
        ],
    )
    .await;
}

on_backends!(table_names_are_normalised_and_collisions_refused: local, s3tables, rest_sigv4);
async fn table_names_are_normalised_and_collisions_refused(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let raw = format!("{}.Customer-List", fx.namespace.to_uppercase());
    let normalised = fx.table("customer_list");
    let outcome = engine
        .commit(&spec(&raw), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap();
    assert_eq!(outcome.table.to_string(), normalised);
    assert_eq!(fx.duckdb_rows(&normalised).await, json!([[1, "a"]]));
    let err = engine
        .commit(&spec(&normalised), window(&[("c", 2, Some("b"))], "t", 2))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("both become {normalised}")),
        "{err}"
    );
}

on_backends!(a_dropped_table_is_recreated_empty: local, s3tables, rest_sigv4);
async fn a_dropped_table_is_recreated_empty(fx: Backend) {
    let catalog = fx.catalog().await;
    let engine = CommitEngine::new(catalog.clone(), settings());
    let table = fx.table("dropped");
    engine
        .commit(&spec(&table), window(&[("c", 1, Some("old"))], "t", 1))
        .await
        .unwrap();
    let ident = engine.ident(&table.parse().unwrap()).unwrap();
    catalog.drop_table(&ident).await.unwrap();
    assert!(catalog.load_table(&ident).await.unwrap().is_none());
    let err = catalog.drop_table(&ident).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::NoSuchTable { .. }),
        "dropping a missing table: {err}"
    );
    let outcome = engine
        .commit(&spec(&table), window(&[("c", 2, Some("new"))], "t", 2))
        .await
        .unwrap();
    assert!(outcome.created_table);
    assert_eq!(fx.duckdb_rows(&table).await, json!([[2, "new"]]));
}

/// S3 Tables refuses LIST and DELETE inside a table's warehouse (moto answers 405); Floe's S3
/// layer counts every request it sends, so the count shows none was even tried.
async fn no_list_or_delete(
    fx: &Backend,
    requests: impl Fn() -> S3RequestCounts,
    engine: &CommitEngine,
) {
    let table = fx.table("no_list");
    // Snapshots old enough to expire at once, were expiry on.
    let mut spec = spec(&table);
    spec.properties
        .insert("history.expire.max-snapshot-age-ms".into(), "0".into());
    let mut model = Model::default();
    let windows: Vec<Vec<Change>> = vec![
        vec![("c", 1, Some("a")), ("c", 2, Some("b"))],
        vec![("u", 1, Some("a2")), ("d", 2, None)],
        vec![("d", 1, None), ("c", 3, Some("c"))],
    ];
    for (i, changes) in windows.iter().enumerate() {
        let outcome = engine
            .commit(&spec, window(changes, "t", i as i64 + 1))
            .await
            .unwrap();
        assert_eq!(outcome.expired_snapshots, 0);
        model.apply(changes);
    }
    assert_eq!(fx.duckdb_rows(&table).await, model.rows());
    let counts = requests();
    assert_eq!(counts.list, 0, "{counts:?}");
    assert_eq!(counts.delete, 0, "{counts:?}");
    assert!(
        counts.put >= 3 + 3 + 2,
        "data, manifests, metadata: {counts:?}"
    );
    assert!(counts.get > 0, "manifest lists are read back: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3tables_calls_only_its_listed_actions_and_never_lists_or_deletes_files() {
    let fx = Backend::start(Kind::S3Tables).await;
    let Place::S3Tables { config, sdk, .. } = &fx.place else {
        unreachable!()
    };
    let catalog = Arc::new(S3TablesCatalog::new(sdk, config));
    let engine = CommitEngine::new(catalog.clone(), settings());
    no_list_or_delete(&fx, || catalog.s3_requests(), &engine).await;
    let ident = engine.ident(&fx.table("no_list").parse().unwrap()).unwrap();
    catalog.drop_table(&ident).await.unwrap();

    // `floe policy` and `floe check` are derived from ACTIONS: it must cover every call.
    let called = catalog.actions_called();
    for action in &called {
        assert!(
            floe::catalog::s3tables::ACTIONS.contains(&action.as_str()),
            "{action} is called but missing from s3tables::ACTIONS"
        );
    }
    for expected in [
        "s3tables:CreateNamespace",
        "s3tables:CreateTable",
        "s3tables:GetTableMetadataLocation",
        "s3tables:UpdateTableMetadataLocation",
        "s3tables:DeleteTable",
    ] {
        assert!(
            called.contains(expected),
            "{expected} not seen in {called:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_never_lists_or_deletes_in_a_warehouse() {
    let fx = Backend::start(Kind::RestSigv4).await;
    let Place::Rest { config, sdk, .. } = &fx.place else {
        unreachable!()
    };
    // As on S3 Tables' Iceberg endpoint, where Floe leaves snapshot expiry to the service.
    let config = config::RestCatalog {
        expire_snapshots: false,
        ..config.clone()
    };
    let catalog = Arc::new(
        RestCatalog::connect_with(&config, sdk.clone())
            .await
            .unwrap(),
    );
    let engine = CommitEngine::new(catalog.clone(), settings());
    no_list_or_delete(&fx, || catalog.s3_requests(), &engine).await;
}

#[tokio::test]
async fn rest_with_a_wrong_secret_reports_an_authentication_error() {
    let (key, _) = support::weed_credentials();
    let table = format!("{}.t", support::unique("floe"));

    // SigV4 with a wrong secret: SeaweedFS refuses the signature.
    let config = rest_config(sigv4(), BTreeMap::new());
    let catalog =
        RestCatalog::connect_with(&config, support::static_sdk_config(&key, "not-the-secret"))
            .await
            .expect("/v1/config is open on SeaweedFS");
    let engine = CommitEngine::new(Arc::new(catalog), settings());
    let err = engine
        .commit(&spec(&table), window(&[("c", 1, Some("a"))], "t", 1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(!err.is_retryable(), "{text}");
    assert!(text.contains("catalog rest"), "{text}");
    assert!(
        text.contains(&format!("authentication refused by {}", config.uri)),
        "{text}"
    );
    assert!(text.contains("403"), "{text}");
    assert!(
        !text.contains("not-the-secret"),
        "no secret in errors: {text}"
    );

    // OAuth2 with a wrong client secret: the token endpoint refuses it.
    let config = rest_config(
        RestAuth::OAuth2 {
            client_id: key.clone(),
            client_secret: Secret::new("not-the-secret"),
            server_uri: None,
            scope: None,
        },
        BTreeMap::new(),
    );
    let err = RestCatalog::connect_with(&config, support::static_sdk_config("unused", "unused"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("catalog rest"), "{text}");
    assert!(text.contains("authentication refused by"), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(
        !text.contains("not-the-secret"),
        "no secret in errors: {text}"
    );
}

#[tokio::test]
async fn open_catalog_builds_each_backend_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let local = floe::catalog::open_catalog(&config::CatalogConfig::Local(config::LocalCatalog {
        path: dir.path().join("floe-data"),
    }))
    .await
    .unwrap();
    assert_eq!(local.kind(), "local");

    let fx = Backend::start(Kind::S3Tables).await;
    let Place::S3Tables { config, .. } = &fx.place else {
        unreachable!()
    };
    let s3tables = floe::catalog::open_catalog(&config::CatalogConfig::S3Tables(config.clone()))
        .await
        .unwrap();
    assert_eq!(s3tables.kind(), "s3tables");

    let (key, secret) = support::weed_credentials();
    let rest = floe::catalog::open_catalog(&config::CatalogConfig::Rest(rest_config(
        RestAuth::OAuth2 {
            client_id: key,
            client_secret: Secret::new(secret),
            server_uri: None,
            scope: None,
        },
        BTreeMap::new(),
    )))
    .await
    .unwrap();
    assert_eq!(rest.kind(), "rest");
    let ns = support::unique("floe");
    rest.ensure_namespace(&ns).await.unwrap();
    let missing = TableIdent {
        namespace: ns,
        name: "missing".into(),
    };
    assert!(rest.load_table(&missing).await.unwrap().is_none());
}

/// Large files become multipart uploads, which S3 Tables allows inside a warehouse (moto
/// checks the same rules); deletes are refused before any request is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage_uploads_large_files_in_parts_and_refuses_deletes() {
    use floe::catalog::s3_storage::{self, S3RequestStats};

    let fx = Backend::start(Kind::S3Tables).await;
    let Place::S3Tables {
        config,
        sdk,
        endpoint,
    } = &fx.place
    else {
        unreachable!()
    };
    let tables = floe::catalog::aws::s3tables_client(sdk, config);
    let arn = &config.table_bucket.arn;
    tables
        .create_namespace()
        .table_bucket_arn(arn)
        .namespace(&fx.namespace)
        .send()
        .await
        .unwrap();
    tables
        .create_table()
        .table_bucket_arn(arn)
        .namespace(&fx.namespace)
        .name("big")
        .format(aws_sdk_s3tables::types::OpenTableFormat::Iceberg)
        .send()
        .await
        .unwrap();
    let warehouse = tables
        .get_table_metadata_location()
        .table_bucket_arn(arn)
        .namespace(&fx.namespace)
        .name("big")
        .send()
        .await
        .unwrap()
        .warehouse_location()
        .to_string();

    let stats = Arc::new(S3RequestStats::default());
    let io = s3_storage::file_io(
        sdk,
        std::collections::HashMap::from([
            ("s3.endpoint".to_string(), endpoint.clone()),
            ("s3.region".to_string(), "us-east-1".to_string()),
        ]),
        stats.clone(),
        s3_storage::Deletes::Refused,
    );
    let location = format!("{warehouse}/data/big.bin");
    // 20 MiB + 5 bytes in uneven writes: one full 16 MiB part, then the rest on close.
    let data: Vec<u8> = (0..20 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    let output = io.new_output(&location).unwrap();
    let mut writer = output.writer().await.unwrap();
    for chunk in data.chunks(3 * 1024 * 1024 + 7) {
        writer
            .write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    writer.close().await.unwrap();

    let input = io.new_input(&location).unwrap();
    assert!(input.exists().await.unwrap());
    assert_eq!(input.metadata().await.unwrap().size, data.len() as u64);
    assert_eq!(input.read().await.unwrap().as_ref(), data.as_slice());
    let reader = input.reader().await.unwrap();
    let middle = 16 * 1024 * 1024 - 3..16 * 1024 * 1024 + 3;
    assert_eq!(
        reader.read(middle.clone()).await.unwrap().as_ref(),
        &data[middle.start as usize..middle.end as usize]
    );
    assert!(
        !io.exists(format!("{warehouse}/data/none.bin"))
            .await
            .unwrap()
    );

    let err = io.delete(&location).await.unwrap_err();
    assert!(err.to_string().contains("does not delete"), "{err}");
    assert!(io.delete_prefix(format!("{warehouse}/data")).await.is_err());

    let counts = stats.counts();
    assert_eq!(counts.put, 2, "two parts: {counts:?}");
    assert_eq!(counts.multipart, 2, "create + complete: {counts:?}");
    assert_eq!((counts.list, counts.delete), (0, 0), "{counts:?}");
}

/// A window split into parts, as the runtime hands the commit engine its staged deltas.
struct Parts(Vec<Vec<RecordBatch>>);

impl floe::commit::ChangeParts for Parts {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn read(
        &self,
        part: usize,
    ) -> futures::future::BoxFuture<'_, Result<Vec<RecordBatch>, String>> {
        let batches = self.0[part].clone();
        Box::pin(async move { Ok(batches) })
    }
}

/// A change with its Kafka offset (partition 0) and a `note` column when `Some(Some(..))` or
/// `Some(None)` (the column is in the batch), none when `None`.
type Positioned = (
    &'static str,
    i64,
    Option<String>,
    Option<Option<String>>,
    i64,
);

/// One part: the changes as one batch with position columns; `note` is a column when any
/// change carries it.
fn positioned_batch(topic: &str, changes: &[Positioned]) -> RecordBatch {
    use floe::decode::arrow::{OFFSET_COLUMN, PARTITION_COLUMN, TOPIC_COLUMN};
    let with_note = changes.iter().any(|c| c.3.is_some());
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1))),
        Arc::new(StringArray::from_iter(
            changes.iter().map(|c| c.2.as_deref()),
        )),
    ];
    if with_note {
        fields.push(Field::new("note", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter(
            changes.iter().map(|c| c.3.clone().flatten()),
        )));
    }
    fields.extend([
        Field::new(OP_COLUMN, DataType::Utf8, false),
        Field::new(TOPIC_COLUMN, DataType::Utf8, false),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
    ]);
    columns.extend([
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.0))) as ArrayRef,
        Arc::new(StringArray::from_iter_values(changes.iter().map(|_| topic))),
        Arc::new(Int32Array::from_iter_values(changes.iter().map(|_| 0))),
        Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.4))),
    ]);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

on_backends!(streamed_commits_write_what_in_memory_commits_write: local, s3tables, rest_sigv4);
/// The same random windows (seed printed), each in three parts, committed into one table from
/// memory (`commit`) and into another part by part (`commit_parts`), and into an append-only
/// table part by part. Windows re-send the end of the one before (positions the tables hold),
/// re-send inserts of keys the table holds, delete keys it does not hold, and gain a `note`
/// column in the middle of a window. Every `commit_parts` must stream (the first creates the
/// table from the first part's columns); DuckDB must read the model's rows from both keyed tables after every
/// window, and every change but the deletes from the append-only one.
async fn streamed_commits_write_what_in_memory_commits_write(fx: Backend) {
    let engine = CommitEngine::new(fx.catalog().await, settings());
    let mut rng = support::Lcg(support::seed());
    let topic = "dbserver1.inventory.streamed";
    let (memory, streamed, appended) = (
        fx.table("in_memory"),
        fx.table("streamed"),
        fx.table("appended"),
    );
    let append_spec = TableSpec {
        primary_key: Vec::new(),
        ..spec(&appended)
    };
    // id -> (name, note)
    let mut model: BTreeMap<i64, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut appended_rows = 0u64;
    let mut offset = 0i64;
    let mut previous: Vec<Positioned> = Vec::new();
    for w in 0..5 {
        let mut parts: Vec<Vec<Positioned>> = Vec::new();
        if w > 0 {
            // Redelivered: already in the tables, dropped by both paths.
            parts.push(previous[previous.len() - 10..].to_vec());
        }
        let mut window_changes = Vec::new();
        for p in 0..3 {
            let mut part = Vec::new();
            for _ in 0..30 {
                let id = rng.next(25) as i64;
                let op = match rng.next(10) {
                    0..=1 => "d",
                    2..=3 => "r",
                    4..=5 => "c",
                    _ => "u",
                };
                let name = (op != "d").then(|| format!("n{w}-{p}-{}", rng.next(1000)));
                // `note` arrives in the second part of the third window and stays.
                let note = (w > 2 || (w == 2 && p >= 1))
                    .then(|| (op != "d" && rng.next(2) == 0).then(|| format!("x{}", rng.next(99))));
                part.push((op, id, name, note, offset));
                offset += 1;
            }
            window_changes.extend(part.clone());
            parts.push(part);
        }
        let batches: Vec<Vec<RecordBatch>> = parts
            .iter()
            .map(|part| vec![positioned_batch(topic, part)])
            .collect();
        let mut offsets = CommittedOffsets::default();
        offsets.advance(topic, 0, offset);

        let in_memory = engine
            .commit(
                &spec(&memory),
                TableChanges {
                    batches: batches.iter().flatten().cloned().collect(),
                    offsets: offsets.clone(),
                    truncated_at: None,
                },
            )
            .await
            .unwrap();
        assert!(!in_memory.streamed);
        let parts_of = Parts(batches);
        for (table, spec) in [
            (&streamed, spec(&streamed)),
            (&appended, append_spec.clone()),
        ] {
            let outcome = engine
                .commit_parts(&spec, &parts_of, offsets.clone(), None)
                .await
                .unwrap();
            assert!(outcome.streamed, "{table}, window {w}: {outcome:?}");
            assert_eq!(outcome.created_table, w == 0, "{table}, window {w}");
            assert_eq!(outcome.schema_changed, w == 2, "{table}, window {w}");
            if table == &streamed {
                assert_eq!(outcome.indexed, in_memory.indexed, "window {w}");
                assert_eq!(outcome.rows_written, in_memory.rows_written, "window {w}");
                assert_eq!(outcome.keys_deleted, in_memory.keys_deleted, "window {w}");
            }
        }
        for (op, id, name, note, _) in &window_changes {
            if *op == "d" {
                model.remove(id);
            } else {
                appended_rows += 1;
                model.insert(*id, (name.clone(), note.clone().flatten()));
            }
        }
        previous = window_changes;

        // The tables have a `note` column from the third window on.
        let (columns, expected) = if w >= 2 {
            let rows = model
                .iter()
                .map(|(id, (name, note))| json!([id, name, note]));
            ("id,name,note", Value::Array(rows.collect()))
        } else {
            let rows = model.iter().map(|(id, (name, _))| json!([id, name]));
            ("id,name", Value::Array(rows.collect()))
        };
        for table in [&memory, &streamed] {
            assert_eq!(
                fx.duckdb(table, Some(columns)).await["rows"],
                expected,
                "{table}, after window {w}"
            );
        }
        let count = fx.duckdb(&appended, Some("id")).await["rows"]
            .as_array()
            .unwrap()
            .len() as u64;
        assert_eq!(count, appended_rows, "append-only, after window {w}");
    }
    let info = fx.pyiceberg(&streamed).await;
    let expected = Value::Array(
        model
            .iter()
            .map(|(id, (name, note))| json!([id, name, note]))
            .collect(),
    );
    assert_eq!(info["rows"], expected, "pyiceberg reads the streamed table");
    let offsets = engine
        .committed_offsets(&streamed.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(offsets.get(topic, 0), Some(offset));
}
