//! What the commit engine's files look like to an independent reader: zstd Parquet, column
//! statistics present, position deletes with bounds, and (in equality mode) equality deletes
//! on the primary key only.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use floe::catalog::local::{CATALOG_NAME, LocalCatalog};
use floe::commit::{
    CommitEngine, CommitSettings, CommittedOffsets, FileSettings, OP_COLUMN, TableChanges,
    TableSpec,
};
use floe::config::DeleteMode;
use serde_json::json;

use crate::support;

fn changes(ops: &[(&str, i64, &str)]) -> TableChanges {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(OP_COLUMN, DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ops.iter().map(|o| o.1))),
        Arc::new(StringArray::from_iter_values(ops.iter().map(|o| o.2))),
        Arc::new(StringArray::from_iter_values(ops.iter().map(|o| o.0))),
    ];
    TableChanges {
        batches: vec![RecordBatch::try_new(schema, columns).unwrap()],
        offsets: CommittedOffsets::default(),
        truncated_at: None,
    }
}

/// A commit engine on a local catalog at `path`.
fn local_engine(path: &std::path::Path, group: &str, zstd_level: i32) -> CommitEngine {
    CommitEngine::new(
        Arc::new(LocalCatalog::open(path).unwrap()),
        CommitSettings::new(
            group,
            FileSettings {
                target_file_size: 64 * 1024 * 1024,
                zstd_level,
            },
        ),
    )
}

/// Commits three rows, then an update and a delete, in `deletes` mode; returns what
/// pyiceberg reads of the table's files.
async fn two_commits(deletes: DeleteMode) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let engine = local_engine(&path, "format-test", 3);
    let spec = TableSpec {
        name: "fmt.people".parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: BTreeMap::from([("floe.test".to_string(), "yes".to_string())]),
        extras: Default::default(),
        deletes,
        partition_spec: Vec::new(),
    };
    engine
        .commit(
            &spec,
            changes(&[("c", 1, "a"), ("c", 2, "b"), ("c", 3, "c")]),
        )
        .await
        .unwrap();
    let outcome = engine
        .commit(&spec, changes(&[("u", 1, "a2"), ("d", 3, "")]))
        .await
        .unwrap();
    assert_eq!(outcome.indexed, deletes == DeleteMode::Position);
    assert_eq!(outcome.keys_deleted, 2);

    let path = path.canonicalize().unwrap();
    let info = support::iceberg_read(&[
        "pyiceberg-sql",
        "--uri",
        &format!("sqlite:///{}/catalog.db", path.display()),
        "--warehouse",
        &format!("file://{}/warehouse", path.display()),
        "--catalog-name",
        CATALOG_NAME,
        "--table",
        "fmt.people",
        "--files",
    ]);
    assert_eq!(info["properties"]["floe.test"], "yes");
    assert_eq!(info["properties"]["write.parquet.compression-level"], "3");
    // content 0: data, the same in both modes; the delete files follow.
    assert_eq!(
        file_facts(&info)[..2],
        [
            json!({"content": 0, "record_count": 1, "equality_ids": null,
                   "lower_bounds": [1, 2], "upper_bounds": [1, 2], "codec": "ZSTD"}),
            json!({"content": 0, "record_count": 3, "equality_ids": null,
                   "lower_bounds": [1, 2], "upper_bounds": [1, 2], "codec": "ZSTD"}),
        ]
    );
    info
}

#[tokio::test]
async fn files_are_zstd_parquet_with_statistics_and_position_deletes() {
    let info = two_commits(DeleteMode::Position).await;
    assert_eq!(info["rows"], json!([[1, "a2"], [2, "b"]]), "{info}");
    // content 1: position deletes (file_path and pos, with bounds on both).
    let (path, pos) = (2_147_483_546, 2_147_483_545);
    assert_eq!(
        file_facts(&info)[2..],
        [
            json!({"content": 1, "record_count": 2, "equality_ids": null,
                "lower_bounds": [pos, path], "upper_bounds": [pos, path], "codec": "ZSTD"})
        ]
    );
}

#[tokio::test]
async fn equality_mode_writes_key_only_equality_deletes() {
    let info = two_commits(DeleteMode::Equality).await;
    // pyiceberg does not apply equality deletes: the reason position deletes are the default.
    assert!(info.get("rows_error").is_some(), "{info}");
    // content 2: equality deletes, on the key column only.
    assert_eq!(
        file_facts(&info)[2..],
        [json!({"content": 2, "record_count": 2, "equality_ids": [1],
                "lower_bounds": [1], "upper_bounds": [1], "codec": "ZSTD"})]
    );
}

/// The reader's file list without each file's path and size, which differ run to run.
fn file_facts(info: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut files = info["files"].as_array().unwrap().clone();
    for file in &mut files {
        let file = file.as_object_mut().unwrap();
        assert!(file.remove("file_path").is_some(), "{file:?}");
        assert!(file.remove("file_size_in_bytes").is_some(), "{file:?}");
    }
    files
}

fn with_id(field: arrow::datatypes::Field, id: i32) -> arrow::datatypes::Field {
    field.with_metadata(std::collections::HashMap::from([(
        "PARQUET:field_id".to_string(),
        id.to_string(),
    )]))
}

/// Changes with a `bio` column and the decoder's `_floe_unchanged` marker (field id 3 = bio).
fn toast_changes(rows: &[(&str, i64, &str, Option<&str>)]) -> TableChanges {
    use arrow::array::{Int32Builder, ListBuilder};
    let element = with_id(Field::new("element", DataType::Int32, false), 2_147_482_002);
    let schema = Arc::new(Schema::new(vec![
        with_id(Field::new("id", DataType::Int64, false), 1),
        with_id(Field::new("name", DataType::Utf8, true), 2),
        with_id(Field::new("bio", DataType::Utf8, true), 3),
        Field::new(OP_COLUMN, DataType::Utf8, false),
        Field::new(
            floe::decode::arrow::UNCHANGED_COLUMN,
            DataType::List(Arc::new(element.clone())),
            true,
        ),
    ]));
    let mut unchanged = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(element));
    for r in rows {
        if r.3.is_none() {
            unchanged.values().append_value(3);
            unchanged.append(true);
        } else {
            unchanged.append(false);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(unchanged.finish()),
    ];
    TableChanges {
        batches: vec![RecordBatch::try_new(schema, columns).unwrap()],
        offsets: CommittedOffsets::default(),
        truncated_at: None,
    }
}

#[tokio::test]
async fn unchanged_toasted_columns_keep_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let engine = local_engine(&path, "toast-test", 1);
    let spec = TableSpec {
        name: "fmt.profiles".parse().unwrap(),
        primary_key: vec!["id".into()],
        properties: BTreeMap::new(),
        extras: Default::default(),
        deletes: Default::default(),
        partition_spec: Vec::new(),
    };
    engine
        .commit(
            &spec,
            toast_changes(&[
                ("c", 1, "a", Some("long text one")),
                ("c", 2, "b", Some("long text two")),
                ("c", 3, "c", Some("long text three")),
            ]),
        )
        .await
        .unwrap();
    engine
        .commit(
            &spec,
            toast_changes(&[
                // From the table's current row.
                ("u", 1, "a2", None),
                // From the earlier image in the same window.
                ("u", 2, "b2", Some("new text")),
                ("u", 2, "b3", None),
            ]),
        )
        .await
        .unwrap();
    // And once more from the table, which now holds equality deletes for 1 and 2; key 3 is
    // updated twice in the window (two staged deltas), unchanged both times: the second takes
    // what the first took from the table.
    engine
        .commit(
            &spec,
            toast_changes(&[
                ("u", 2, "b4", None),
                ("u", 3, "c1", None),
                ("u", 3, "c2", None),
            ]),
        )
        .await
        .unwrap();

    let path = path.canonicalize().unwrap();
    let info = support::iceberg_read(&[
        "pyiceberg-sql",
        "--uri",
        &format!("sqlite:///{}/catalog.db", path.display()),
        "--warehouse",
        &format!("file://{}/warehouse", path.display()),
        "--catalog-name",
        CATALOG_NAME,
        "--table",
        "fmt.profiles",
        "--columns",
        "id",
    ]);
    let metadata = info["metadata_location"].as_str().unwrap();
    let rows = support::iceberg_read(&["duckdb", "--metadata", metadata, "--order-by", "id"]);
    assert_eq!(
        rows["rows"],
        json!([
            [1, "a2", "long text one"],
            [2, "b4", "new text"],
            [3, "c2", "long text three"],
        ])
    );
}
