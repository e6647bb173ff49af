//! Corpus-driven decoder tests: the Debezium records under `tests/data/debezium/` (written by
//! its `generate.py` in the shapes of Debezium's documentation) decoded and turned into Arrow
//! batches, asserted on exact values; the malformed corpus asserted on the exact error and the
//! policy outcome; and a property test that no input panics the decoder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int32Array, Int64Array, LargeBinaryArray, RecordBatch, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray,
};
use ::arrow::datatypes::{DataType, Float64Type, Int32Type, TimeUnit};
use iceberg::spec::{NestedField, PrimitiveType, Schema as IcebergSchema, Type};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::arrow::{OFFSET_COLUMN, OP_COLUMN, SOURCE_TS_COLUMN, TOPIC_COLUMN, UNCHANGED_COLUMN};
use super::*;
use crate::config::{self, Config, ErrorsConfig, TableName};

pub(super) fn config(extra: &str) -> Config {
    config::load_str(
        &format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[catalog]\ntype = \"local\"\n{extra}"
        ),
        Path::new("test.toml"),
        std::iter::empty(),
    )
    .expect("valid test config")
}

pub(crate) fn decoder(extra: &str) -> Decoder {
    let c = config(extra);
    Decoder::new(&c.decode, &c.tables)
}

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/debezium")
        .join(path)
}

/// The records of a corpus file as raw (key, value) text, in order.
fn corpus(path: &str) -> Vec<(Option<String>, Option<String>)> {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        key: &'a RawValue,
        #[serde(borrow)]
        value: &'a RawValue,
    }
    let text = std::fs::read_to_string(data(path)).expect("corpus file");
    let text_of = |r: &RawValue| (r.get() != "null").then(|| r.get().to_string());
    text.lines()
        .map(|l| {
            let line: Line = serde_json::from_str(l).expect("corpus line");
            (text_of(line.key), text_of(line.value))
        })
        .collect()
}

pub(crate) fn record<'a>(
    topic: &'a str,
    offset: i64,
    key: Option<&'a str>,
    value: Option<&'a str>,
) -> KafkaRecord<'a> {
    KafkaRecord {
        topic,
        partition: 0,
        offset,
        timestamp: Some(1_700_000_000_000 + offset),
        key: key.map(str::as_bytes),
        value: value.map(str::as_bytes),
        headers: Vec::new(),
    }
}

/// One event of op `op` with the JsonConverter's envelope: key column `id` = 1 and one more
/// column `v` with the Connect schema `column` and the JSON value `value`.
pub(super) fn single_column_event(op: &str, column: &str, value: &str) -> String {
    format!(
        r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","fields":[{{"type":"int32","optional":false,"field":"id"}},{column}],"optional":true,"field":"after"}},{{"type":"string","optional":false,"field":"op"}}],"optional":false}},"payload":{{"after":{{"id":1,"v":{value}}},"op":"{op}"}}}}"#
    )
}

/// Decodes the value `value` with the record key `{"id":1}` at `topic`/0@0; it must be a change.
pub(super) fn decode_one(d: &mut Decoder, topic: &str, value: &str) -> Result<Change, DecodeError> {
    match d.decode(&record(topic, 0, Some(r#"{"id":1}"#), Some(value)))? {
        Decoded::Change(c) => Ok(c),
        other => panic!("not a change: {other:?}"),
    }
}

fn decode_all(decoder: &mut Decoder, topic: &str, path: &str) -> Vec<Decoded> {
    corpus(path)
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            decoder
                .decode(&record(topic, i as i64, k.as_deref(), v.as_deref()))
                .unwrap_or_else(|e| panic!("{path} record {i}: {e}"))
        })
        .collect()
}

fn changes(decoded: &[Decoded]) -> Vec<Change> {
    decoded
        .iter()
        .filter_map(|d| match d {
            Decoded::Change(c) => Some(c.clone()),
            Decoded::TombstoneAfterDelete(_) => None,
        })
        .collect()
}

fn batches(changes: &[Change]) -> Vec<BatchPart> {
    to_batches(changes).expect("batches")
}

fn rows(part: &BatchPart) -> &RecordBatch {
    match part {
        BatchPart::Rows(b) => &b.batch,
        other => panic!("expected rows, got {other:?}"),
    }
}

fn only_batch(changes: &[Change]) -> RecordBatch {
    let parts = batches(changes);
    assert_eq!(parts.len(), 1, "{parts:?}");
    rows(&parts[0]).clone()
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| {
            panic!(
                "column {name} has type {}",
                batch.schema().field_with_name(name).unwrap().data_type()
            )
        })
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    col::<StringArray>(batch, name)
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

fn field_id(batch: &RecordBatch, name: &str) -> i32 {
    batch.schema().field_with_name(name).unwrap().metadata()["PARQUET:field_id"]
        .parse()
        .unwrap()
}

fn table(ns: &str, name: &str) -> TableName {
    TableName {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn postgres_stream_snapshot_insert_update_delete_tombstones_and_truncate() {
    let mut d = decoder("");
    let topic = "dbserver1.inventory.customers";
    let decoded = decode_all(&mut d, topic, "postgres/customers_stream.jsonl");
    assert_eq!(decoded.len(), 7);
    // The tombstone right after the delete of 1001 is not a second delete.
    assert_eq!(
        decoded[4],
        Decoded::TombstoneAfterDelete(KafkaPosition {
            topic: topic.into(),
            partition: 0,
            offset: 4,
            timestamp: Some(1_700_000_000_004),
        })
    );
    let changes = changes(&decoded);
    let ops: Vec<Op> = changes.iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [
            Op::Read,
            Op::Create,
            Op::Update,
            Op::Delete,
            Op::Truncate,
            Op::Delete
        ]
    );
    let c = &changes[2];
    assert_eq!(c.table, table("cdc", "customers"));
    assert_eq!(c.key, [Datum::Int(1004)]);
    assert_eq!(c.schema.primary_key_names(), ["id"]);
    assert_eq!(c.before.as_ref().unwrap()[1], Datum::String("Anne".into()));
    assert_eq!(
        c.after.as_ref().unwrap()[1],
        Datum::String("Anne Marie".into())
    );
    assert_eq!(
        c.source,
        SourceInfo {
            connector: Some("postgresql".into()),
            name: Some("dbserver1".into()),
            ts_ms: Some(1559033905863),
            db: Some("postgres".into()),
            schema: Some("inventory".into()),
            table: Some("customers".into()),
            snapshot: Some("false".into()),
            position: Some(SourcePosition::Lsn {
                lsn: 24023300,
                tx_id: Some(557)
            }),
        }
    );
    assert_eq!(c.event_ts_ms, Some(1559033905870));
    assert_eq!(changes[0].source.snapshot.as_deref(), Some("first"));
    // A tombstone nobody announced still deletes its key.
    let last = &changes[5];
    assert_eq!(
        (last.key.clone(), last.before.clone(), last.after.clone()),
        (vec![Datum::Int(1004)], None, None)
    );

    let parts = batches(&changes);
    assert_eq!(parts.len(), 3);
    let b = rows(&parts[0]);
    assert_eq!(
        col::<Int32Array>(b, "id").values().to_vec(),
        [1001, 1004, 1004, 1001]
    );
    assert_eq!(
        strings(b, "first_name"),
        ["Sally", "Anne", "Anne Marie", "Sally"].map(|s| Some(s.to_string()))
    );
    assert_eq!(
        strings(b, OP_COLUMN),
        ["r", "c", "u", "d"].map(|s| Some(s.to_string()))
    );
    assert_eq!(
        col::<Int64Array>(b, OFFSET_COLUMN).values().to_vec(),
        [0, 1, 2, 3]
    );
    assert_eq!(strings(b, TOPIC_COLUMN)[0].as_deref(), Some(topic));
    assert_eq!(
        col::<Int64Array>(b, SOURCE_TS_COLUMN).values().to_vec(),
        [1559033904000, 1559033904863, 1559033905863, 1559033906863]
    );
    assert_eq!(b.column_by_name(UNCHANGED_COLUMN).unwrap().null_count(), 4);
    assert_eq!(
        ["id", "first_name", "last_name", "email"].map(|n| field_id(b, n)),
        [1, 2, 3, 4]
    );
    assert!(!b.schema().field_with_name("id").unwrap().is_nullable());
    assert!(b.schema().field_with_name("email").unwrap().is_nullable());
    assert!(matches!(
        &parts[1],
        BatchPart::Truncate { table: t, position } if *t == table("cdc", "customers") && position.offset == 5
    ));
    let tomb = rows(&parts[2]);
    assert_eq!(col::<Int32Array>(tomb, "id").values().to_vec(), [1004]);
    assert_eq!(tomb.column_by_name("email").unwrap().null_count(), 1);
    assert_eq!(strings(tomb, OP_COLUMN), [Some("d".to_string())]);

    // The batch schema is the Iceberg schema's Arrow form.
    let iceberg = changes[0].schema.to_iceberg_schema().unwrap();
    let arrow = iceberg::arrow::schema_to_arrow_schema(&iceberg).unwrap();
    for f in arrow.fields() {
        assert_eq!(b.schema().field_with_name(f.name()).unwrap(), f.as_ref());
    }
    assert_eq!(iceberg.identifier_field_ids().collect::<Vec<_>>(), [1]);
}

#[test]
fn postgres_logical_types_have_exact_values() {
    let mut d = decoder("");
    let decoded = decode_all(
        &mut d,
        "dbserver1.public.all_types",
        "postgres/all_types.jsonl",
    );
    let b = only_batch(&changes(&decoded));
    let s = b.schema();
    let ty = |n: &str| s.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(col::<Int64Array>(&b, "id").values().to_vec(), [1, 2]);
    assert_eq!(col::<Int32Array>(&b, "small").value(0), -32768);
    assert_eq!(col::<Int64Array>(&b, "big").value(0), i64::MAX);
    assert_eq!(col::<Float32Array>(&b, "real_col").value(0), 1.5);
    assert_eq!(col::<Float64Array>(&b, "double_col").value(0), -2.25e-5);
    assert!(col::<BooleanArray>(&b, "flag").value(0));
    assert_eq!(col::<StringArray>(&b, "name").value(0), "zoë \"quoted\"");
    assert_eq!(
        col::<LargeBinaryArray>(&b, "raw").value(0),
        [0, 1, 0xfe, 0xff]
    );
    assert_eq!(ty("price"), DataType::Decimal128(10, 2));
    assert_eq!(col::<Decimal128Array>(&b, "price").value(0), 1234567);
    assert_eq!(
        col::<StringArray>(&b, "huge").value(0),
        "12345678901234567890123456789012345678901234567890"
    );
    assert_eq!(col::<StringArray>(&b, "any_numeric").value(0), "-1234.567");
    assert_eq!(col::<Date32Array>(&b, "day").value(0), 19723);
    assert_eq!(ty("clock"), DataType::Time64(TimeUnit::Microsecond));
    assert_eq!(
        col::<Time64MicrosecondArray>(&b, "clock").value(0),
        45296789012
    );
    assert_eq!(
        ty("created"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "created").value(0),
        1704112496789012
    );
    assert_eq!(
        ty("created_tz"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
    );
    // 14:34:56.789012+02:00 is 12:34:56.789012 UTC.
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "created_tz").value(0),
        1704112496789012
    );
    assert_eq!(col::<StringArray>(&b, "clock_tz").value(0), "12:34:56.789Z");
    assert_eq!(col::<StringArray>(&b, "doc").value(0), "{\"a\": [1, 2]}");
    assert_eq!(col::<StringArray>(&b, "xml_doc").value(0), "<a>1</a>");
    assert_eq!(
        col::<StringArray>(&b, "guid").value(0),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    assert_eq!(col::<StringArray>(&b, "mood").value(0), "happy");
    assert_eq!(col::<LargeBinaryArray>(&b, "bits").value(0), [0x0f, 0xa0]);
    let tags = b.column_by_name("tags").unwrap().as_list::<i32>();
    let tags0 = tags.value(0);
    let tags0: Vec<Option<&str>> = tags0.as_string::<i32>().iter().collect();
    assert_eq!(tags0, [Some("red"), None, Some("blue")]);
    assert!(tags.is_null(1));
    let attrs = b.column_by_name("attrs").unwrap().as_map();
    let entries = attrs.value(0);
    let keys: Vec<Option<&str>> = entries.column(0).as_string::<i32>().iter().collect();
    let vals: Vec<Option<&str>> = entries.column(1).as_string::<i32>().iter().collect();
    assert_eq!(
        (keys, vals),
        (vec![Some("color"), Some("size")], vec![Some("green"), None])
    );
    let loc = b.column_by_name("location").unwrap().as_struct();
    assert_eq!(
        loc.column_by_name("x")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        1.5
    );
    assert_eq!(
        loc.column_by_name("y")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        -2.0
    );
    assert_eq!(
        loc.column_by_name("srid")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        4326
    );
    assert!(loc.is_null(1));
    assert_eq!(col::<Int64Array>(&b, "span").value(0), 90061000000);
    // The second row is all nulls but its key.
    for (i, f) in s.fields().iter().enumerate() {
        if !f.name().starts_with("_floe") && f.name() != "id" {
            assert!(b.column(i).is_null(1), "{} is not null", f.name());
        }
    }
    // Nested field ids follow the top-level ones (25 columns).
    let Type::Struct(point) = changes(&decoded)[0]
        .schema
        .to_iceberg_schema()
        .unwrap()
        .field_by_name("location")
        .unwrap()
        .field_type
        .as_ref()
        .clone()
    else {
        panic!("location is a struct")
    };
    assert!(point.fields().iter().all(|f| f.id > 25));
}

#[test]
fn variable_scale_decimals_can_be_doubles() {
    let mut d = decoder("[decode]\nvariable_scale_decimal = \"double\"\n");
    let decoded = decode_all(
        &mut d,
        "dbserver1.public.all_types",
        "postgres/all_types.jsonl",
    );
    let b = only_batch(&changes(&decoded));
    assert_eq!(col::<Float64Array>(&b, "any_numeric").value(0), -1234.567);
    assert_eq!(
        col::<Float64Array>(&b, "huge").value(0),
        "12345678901234567890123456789012345678901234567890"
            .parse::<f64>()
            .unwrap()
    );
    assert_eq!(col::<Decimal128Array>(&b, "price").value(0), 1234567);
}

#[test]
fn toast_placeholders_are_unchanged_not_strings() {
    let mut d = decoder("");
    let decoded = decode_all(&mut d, "dbserver1.public.documents", "postgres/toast.jsonl");
    let changes = changes(&decoded);
    assert_eq!(
        changes[0].after.as_ref().unwrap()[1..],
        [
            Datum::String("v2".into()),
            Datum::Unchanged,
            Datum::Unchanged,
            Datum::Unchanged,
            Datum::Unchanged
        ]
    );
    let b = only_batch(&changes);
    for c in ["body", "payload", "labels", "meta"] {
        assert!(b.column_by_name(c).unwrap().is_null(0), "{c}");
    }
    let unchanged = b.column_by_name(UNCHANGED_COLUMN).unwrap().as_list::<i32>();
    let ids = unchanged.value(0);
    let ids = ids.as_primitive::<Int32Type>();
    assert_eq!(
        ids.values().to_vec(),
        ["body", "payload", "labels", "meta"].map(|n| field_id(&b, n))
    );
    assert_eq!(ids.values().to_vec(), [3, 4, 5, 6]);
}

#[test]
fn a_schema_change_starts_a_new_batch() {
    let mut d = decoder("");
    let decoded = decode_all(
        &mut d,
        "dbserver1.inventory.customers",
        "postgres/schema_change.jsonl",
    );
    let parts = batches(&changes(&decoded));
    assert_eq!(parts.len(), 2);
    assert!(rows(&parts[0]).column_by_name("phone").is_none());
    let second = rows(&parts[1]);
    assert_eq!(strings(second, "phone"), [Some("+1 555 0100".to_string())]);
    assert_eq!(field_id(second, "phone"), 5);
}

#[test]
fn schemaless_records_infer_types_and_widen() {
    let mut d = decoder("");
    let decoded = decode_all(
        &mut d,
        "dbserver1.inventory.customers",
        "postgres/customers_schemaless.jsonl",
    );
    assert!(matches!(decoded[4], Decoded::TombstoneAfterDelete(_)));
    let changes = changes(&decoded);
    assert_eq!(changes[0].key, [Datum::Long(1001)]);
    assert_eq!(changes[3].op, Op::Delete);
    assert_eq!(
        changes[0].source.position,
        Some(SourcePosition::Lsn {
            lsn: 24023128,
            tx_id: Some(555)
        })
    );
    let parts = batches(&changes);
    // The update brought a new column, `score`: a new schema from there on.
    assert_eq!(parts.len(), 2);
    let first = rows(&parts[0]);
    assert_eq!(
        col::<Int64Array>(first, "id").values().to_vec(),
        [1001, 1004]
    );
    let second = rows(&parts[1]);
    assert_eq!(
        col::<Int64Array>(second, "id").values().to_vec(),
        [1004, 1001]
    );
    assert_eq!(
        col::<Float64Array>(second, "score")
            .iter()
            .collect::<Vec<_>>(),
        [Some(4.5), None]
    );
    assert_eq!(
        strings(second, OP_COLUMN),
        [Some("u".into()), Some("d".into())]
    );
}

#[test]
fn schemaless_records_take_types_and_ids_from_the_existing_table() {
    let mut d = decoder("");
    let existing = IcebergSchema::builder()
        .with_fields([
            NestedField::required(10, "id", Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::optional(11, "first_name", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(12, "email", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .with_identifier_field_ids([10])
        .build()
        .unwrap();
    d.register_table(&table("cdc", "customers"), &existing)
        .unwrap();
    let decoded = decode_all(
        &mut d,
        "dbserver1.inventory.customers",
        "postgres/customers_schemaless.jsonl",
    );
    let changes = changes(&decoded);
    assert_eq!(changes[0].key, [Datum::Int(1001)]);
    let b = rows(&batches(&changes)[0]).clone();
    assert_eq!(col::<Int32Array>(&b, "id").values().to_vec(), [1001, 1004]);
    assert_eq!(
        [
            field_id(&b, "id"),
            field_id(&b, "first_name"),
            field_id(&b, "email"),
            field_id(&b, "last_name")
        ],
        [10, 11, 12, 13]
    );
}

#[test]
fn flattened_rows_carry_op_and_source_in_metadata_fields() {
    let mut d = decoder("[decode]\nformat = \"flattened\"\n");
    let decoded = decode_all(
        &mut d,
        "dbserver1.inventory.customers",
        "postgres/flattened.jsonl",
    );
    assert!(matches!(decoded[3], Decoded::TombstoneAfterDelete(_)));
    let changes = changes(&decoded);
    assert_eq!(
        changes.iter().map(|c| c.op).collect::<Vec<_>>(),
        [Op::Create, Op::Update, Op::Delete]
    );
    assert_eq!(
        changes[2].before.as_ref().unwrap()[1],
        Datum::String("Anne Marie".into())
    );
    assert_eq!(changes[2].after, None);
    assert_eq!(changes[1].source.ts_ms, Some(1559033905863));
    assert_eq!(changes[1].source.table.as_deref(), Some("customers"));
    assert_eq!(
        changes[1].source.position,
        Some(SourcePosition::Lsn {
            lsn: 24023300,
            tx_id: None
        })
    );
    let b = only_batch(&changes);
    assert!(
        b.schema()
            .fields()
            .iter()
            .all(|f| !f.name().starts_with("__"))
    );
    assert_eq!(b.num_columns(), 4 + 6);
    assert_eq!(
        strings(&b, "first_name"),
        ["Anne", "Anne Marie", "Anne Marie"].map(|s| Some(s.to_string()))
    );
    assert_eq!(
        strings(&b, OP_COLUMN),
        ["c", "u", "d"].map(|s| Some(s.to_string()))
    );
}

#[test]
fn mysql_stream_and_types() {
    let mut d = decoder("");
    let decoded = decode_all(
        &mut d,
        "mysql-server-1.inventory.customers",
        "mysql/customers_stream.jsonl",
    );
    assert!(matches!(decoded[3], Decoded::TombstoneAfterDelete(_)));
    let changes_ = changes(&decoded);
    assert_eq!(
        changes_.iter().map(|c| c.op).collect::<Vec<_>>(),
        [Op::Create, Op::Update, Op::Delete]
    );
    assert_eq!(
        changes_[1].source.position,
        Some(SourcePosition::Binlog {
            file: "mysql-bin.000003".into(),
            pos: 484,
            row: Some(0),
            gtid: None
        })
    );
    assert_eq!(changes_[1].source.db.as_deref(), Some("inventory"));
    let b = only_batch(&changes_);
    assert_eq!(
        strings(&b, "first_name"),
        ["Anne", "Anne Marie", "Anne Marie"].map(|s| Some(s.to_string()))
    );

    let decoded = decode_all(
        &mut d,
        "mysql-server-1.inventory.all_types",
        "mysql/all_types.jsonl",
    );
    let c = changes(&decoded);
    assert_eq!(c[0].op, Op::Read);
    assert_eq!(c[0].source.snapshot.as_deref(), Some("last"));
    let b = only_batch(&c);
    assert_eq!(col::<Int32Array>(&b, "tiny").value(0), -128);
    assert_eq!(col::<Int32Array>(&b, "yr").value(0), 2024);
    assert_eq!(col::<Date32Array>(&b, "d").value(0), -1);
    assert_eq!(col::<Time64MicrosecondArray>(&b, "t").value(0), 86399999999);
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "dt3").value(0),
        1704112496789000
    );
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "dt6").value(0),
        -1000001
    );
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "ts").value(0),
        1704112496000000
    );
    assert_eq!(
        b.schema().field_with_name("amount").unwrap().data_type(),
        &DataType::Decimal128(19, 4)
    );
    assert_eq!(col::<Decimal128Array>(&b, "amount").value(0), -99999999);
    assert_eq!(col::<StringArray>(&b, "status").value(0), "paid");
    assert_eq!(col::<StringArray>(&b, "perms").value(0), "r,x");
    assert_eq!(col::<LargeBinaryArray>(&b, "flags").value(0), [0x05, 0x08]);
    assert_eq!(col::<StringArray>(&b, "doc").value(0), "{\"k\":\"v\"}");
    assert_eq!(col::<LargeBinaryArray>(&b, "blob_col").value(0), b"hello");
    assert!(col::<BooleanArray>(&b, "bit1").value(0));
}

#[test]
fn sqlserver_stream_and_types() {
    let mut d = decoder("");
    let decoded = decode_all(
        &mut d,
        "server1.dbo.customers",
        "sqlserver/customers_stream.jsonl",
    );
    assert!(matches!(decoded[3], Decoded::TombstoneAfterDelete(_)));
    let c = changes(&decoded);
    assert_eq!(
        c[1].source.position,
        Some(SourcePosition::SqlServer {
            commit_lsn: Some("00000027:00000ac0:0007".into()),
            change_lsn: Some("00000027:00000ac0:0002".into()),
            event_serial_no: Some(2)
        })
    );
    assert_eq!(
        strings(&only_batch(&c), "email")[1].as_deref(),
        Some("john.doe@example.com")
    );

    let decoded = decode_all(&mut d, "server1.dbo.all_types", "sqlserver/all_types.jsonl");
    let b = only_batch(&changes(&decoded));
    // Nanosecond types are floored to Iceberg's microseconds.
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "dt2").value(0),
        1704112496123456
    );
    assert_eq!(
        col::<Time64MicrosecondArray>(&b, "tm7").value(0),
        45296123456
    );
    assert_eq!(
        col::<Time64MicrosecondArray>(&b, "tm3").value(0),
        45296123000
    );
    // 12:34:56.1234567-05:00 is 17:34:56.123456 UTC.
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "dto").value(0),
        1704130496123456
    );
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "small_dt").value(0),
        1704112440000000
    );
    assert_eq!(col::<Decimal128Array>(&b, "cash").value(0), 922337203685477);
    assert_eq!(
        col::<StringArray>(&b, "guid").value(0),
        "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    );
    assert!(!col::<BooleanArray>(&b, "active").value(0));
    assert_eq!(col::<Float64Array>(&b, "ratio").value(0), 0.1);
    assert_eq!(col::<Date32Array>(&b, "cd").value(0), 19723);
    assert_eq!(
        col::<TimestampMicrosecondArray>(&b, "ct").value(0),
        1704112496789000
    );
}

#[test]
fn a_configured_primary_key_replaces_the_record_key() {
    let mut d = decoder("[tables.overrides.\"cdc.customers\"]\nprimary_key = [\"email\"]\n");
    let topic = "dbserver1.inventory.customers";
    let mut records = corpus("postgres/customers_stream.jsonl");
    // The last record is a tombstone nobody announced; its key struct has no `email`, so it
    // cannot say which row to delete.
    let (tomb_key, _) = records.pop().unwrap();
    let decoded: Vec<Decoded> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            d.decode(&record(topic, i as i64, k.as_deref(), v.as_deref()))
                .unwrap()
        })
        .collect();
    let c = changes(&decoded);
    assert_eq!(c[1].key, [Datum::String("annek@noanswer.org".into())]);
    assert_eq!(c[3].key, [Datum::String("sally.thomas@acme.com".into())]);
    assert_eq!(c[0].schema.primary_key_names(), ["email"]);
    let iceberg = c[0].schema.to_iceberg_schema().unwrap();
    assert_eq!(iceberg.identifier_field_ids().collect::<Vec<_>>(), [4]);
    let err = d
        .decode(&record(topic, 6, tomb_key.as_deref(), None))
        .unwrap_err();
    assert_eq!(
        err.reason.to_string(),
        "table cdc.customers is keyed by (email) but primary key column `email` is null"
    );
}

#[test]
fn records_without_key_make_an_append_only_table() {
    let mut d = decoder("");
    let (_, value) = corpus("postgres/customers_stream.jsonl").remove(1);
    for offset in 0..2 {
        let Decoded::Change(c) = d
            .decode(&record("audit.log", offset, None, value.as_deref()))
            .unwrap()
        else {
            panic!("a change")
        };
        assert!(c.key.is_empty());
        assert!(c.schema.primary_key().is_empty());
    }
}

#[derive(Deserialize)]
struct Case {
    case: String,
    records: Vec<CaseRecord>,
}

#[derive(Deserialize)]
struct CaseRecord {
    key: Option<String>,
    value: Option<String>,
}

fn malformed_cases() -> Vec<Case> {
    std::fs::read_to_string(data("malformed/cases.jsonl"))
        .expect("malformed corpus")
        .lines()
        .map(|l| serde_json::from_str(l).expect("case line"))
        .collect()
}

/// Decodes a case's records; all but the last must succeed.
fn run_case(case: &Case) -> (DecodeError, usize) {
    let mut d = decoder("");
    let topic = "dbserver1.inventory.customers";
    let n = case.records.len();
    for (i, r) in case.records.iter().enumerate() {
        let result = d.decode(&record(
            topic,
            i as i64,
            r.key.as_deref(),
            r.value.as_deref(),
        ));
        match (i + 1 == n, result) {
            (false, Ok(_)) => {}
            (true, Err(e)) => return (e, i),
            (last, other) => panic!("{} record {i} (last: {last}): {other:?}", case.case),
        }
    }
    unreachable!("the loop returns at the last record")
}

#[test]
fn malformed_input_gives_exact_errors() {
    let expected: &[(&str, &str)] = &[
        (
            "truncated_json",
            "malformed JSON in the record value: EOF while parsing a string at line 1 column 200",
        ),
        (
            "value_not_an_object",
            "malformed JSON in the record value: invalid type: sequence, expected a JSON object at line 1 column 0",
        ),
        (
            "unknown_op",
            "unknown op \"x\"; expected one of c, u, d, r, t",
        ),
        (
            "missing_op",
            "the record value has no usable `op`: it is missing",
        ),
        (
            "create_without_after",
            "the record value has no usable `after`: op c needs an after image",
        ),
        (
            "string_for_int",
            "column `id`: expected an integer (int), got string \"1004\"",
        ),
        ("int_overflow", "column `id`: 3000000000 does not fit int"),
        (
            "number_for_string",
            "column `email`: expected a string, got integer 42",
        ),
        (
            "unknown_connect_type",
            "unsupported schema in the record value: field `id`: unknown Connect type \"int128\"; the JsonConverter writes boolean, int8, int16, int32, int64, float, double, bytes, string, array, map or struct",
        ),
        (
            "time_of_day_out_of_range",
            "column `starts`: 86400000000 (a time of day) does not fit timemicros",
        ),
        (
            "zoned_timestamp_garbage",
            "column `at`: expected an ISO-8601 timestamp with offset (io.debezium.time.ZonedTimestamp), got string \"yesterday\"",
        ),
        (
            "decimal_not_base64",
            "column `amount`: string \"12.34!\" does not fit decimal(5, 2)",
        ),
        (
            "decimal_over_precision",
            "column `amount`: string \"AJiWgA==\" does not fit decimal(5, 2)",
        ),
        (
            "key_missing_for_keyed_table",
            "table cdc.customers is keyed by (id) but the record has no key",
        ),
        (
            "key_is_null",
            "table cdc.customers is keyed by (id) but primary key column `id` is null",
        ),
        (
            "key_not_json",
            "malformed JSON in the record key: expected value at line 1 column 1; a Debezium record key is a JSON object (the key struct)",
        ),
        (
            "key_does_not_match_the_row",
            "table cdc.customers is keyed by (id) but the record key has `id` = Int(1005) while the row image has Int(1004)",
        ),
        (
            "tombstone_without_key",
            "the record key has no usable `key`: a tombstone (null value) without a key deletes nothing",
        ),
    ];
    let cases = malformed_cases();
    assert_eq!(cases.len(), expected.len());
    for (case, (name, reason)) in cases.iter().zip(expected) {
        assert_eq!(case.case, *name);
        let (err, offset) = run_case(case);
        assert_eq!(err.reason.to_string(), *reason, "case {name}");
        assert_eq!(
            err.to_string(),
            format!("cannot decode record dbserver1.inventory.customers/0@{offset}: {reason}")
        );
    }
}

#[tokio::test]
async fn the_policy_fails_or_skips_malformed_records() {
    let c = config("");
    let fail = ErrorPolicy::new(&ErrorsConfig::Fail, &c.kafka).unwrap();
    let skip = ErrorPolicy::new(&ErrorsConfig::Skip, &c.kafka).unwrap();
    let cases = malformed_cases();
    for case in &cases {
        let (err, offset) = run_case(case);
        let last = case.records.last().unwrap();
        let rec = record(
            "dbserver1.inventory.customers",
            offset as i64,
            last.key.as_deref(),
            last.value.as_deref(),
        );
        match fail.handle(err.clone(), &rec).await {
            Err(PolicyError::Fail(e)) => assert_eq!(e, err),
            other => panic!("{}: {other:?}", case.case),
        }
        assert_eq!(
            skip.handle(err, &rec).await.unwrap(),
            PolicyOutcome::Skipped
        );
    }
    assert_eq!(skip.skipped(), cases.len() as u64);
    assert_eq!(fail.skipped(), 0);
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "[a-z_]{0,12}",
            Just(UNAVAILABLE_VALUE.to_string()),
            Just("AAEC".to_string()),
            Just("2024-01-01T00:00:00Z".to_string()),
            Just("c".to_string()),
            Just("d".to_string()),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("before".to_string()),
                        Just("after".to_string()),
                        Just("op".to_string()),
                        Just("source".to_string()),
                        Just("schema".to_string()),
                        Just("payload".to_string()),
                        Just("id".to_string()),
                        Just("__op".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_json_never_panics_the_decoder(
        key in proptest::option::of(arb_json()),
        value in proptest::option::of(arb_json()),
        flattened in any::<bool>(),
    ) {
        let mut d = decoder(if flattened { "[decode]\nformat = \"flattened\"\n" } else { "" });
        let key = key.map(|k| k.to_string());
        let value = value.map(|v| v.to_string());
        let result = d.decode(&record("t", 0, key.as_deref(), value.as_deref()));
        if let Ok(Decoded::Change(c)) = &result {
            let _ = to_batches(std::slice::from_ref(c));
        }
    }

    #[test]
    fn random_values_in_real_records_never_panic(
        column in 0usize..25,
        replacement in arb_json(),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (key, value) = corpus("postgres/all_types.jsonl").remove(0);
        let mut event: serde_json::Value = serde_json::from_str(value.as_deref().unwrap()).unwrap();
        let after = event["payload"]["after"].as_object_mut().unwrap();
        let name = after.keys().nth(column).unwrap().clone();
        after.insert(name, replacement);
        let mut d = decoder("");
        let value = event.to_string();
        if let Ok(Decoded::Change(c)) = d.decode(&record("t", 0, key.as_deref(), Some(&value))) {
            to_batches(std::slice::from_ref(&c)).unwrap();
        }
        let garbage = String::from_utf8_lossy(&bytes).into_owned();
        let _ = d.decode(&record("t", 1, Some(&garbage), Some(&garbage)));
        let _ = d.decode(&record("t", 2, Some(&garbage), None));
    }
}

/// Iceberg map keys are required and Arrow refuses a null one when the batch is built, so
/// the decoder must refuse it for the record (found by `random_values_in_real_records_never_panic`).
#[test]
fn a_null_map_key_is_an_error_of_its_record() {
    let (key, value) = corpus("postgres/all_types.jsonl").remove(0);
    let mut event: serde_json::Value = serde_json::from_str(value.as_deref().unwrap()).unwrap();
    event["payload"]["after"]["attrs"] = serde_json::json!([[null, ""]]);
    let value = event.to_string();
    let err = decoder("")
        .decode(&record("t", 7, key.as_deref(), Some(&value)))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("a null map key"), "{text}");
    assert!(text.contains("attrs.key"), "{text}");
    assert!(text.contains("t/0@7"), "{text}");
    // A pair whose key is present still decodes and converts.
    event["payload"]["after"]["attrs"] = serde_json::json!([["k", null]]);
    let value = event.to_string();
    let Decoded::Change(c) = decoder("")
        .decode(&record("t", 8, key.as_deref(), Some(&value)))
        .unwrap()
    else {
        panic!("a change")
    };
    to_batches(std::slice::from_ref(&c)).unwrap();
}

#[test]
fn decoded_changes_share_their_schema() {
    let mut d = decoder("");
    let decoded = decode_all(
        &mut d,
        "dbserver1.inventory.customers",
        "postgres/customers_stream.jsonl",
    );
    let c = changes(&decoded);
    assert!(Arc::ptr_eq(&c[0].schema, &c[3].schema));
}
