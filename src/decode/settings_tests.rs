//! Debezium connector settings a user may have set, each as the connector writes it: the
//! unavailable-value placeholder in every kind of column (default and custom, global and per
//! table), integer times without a schema, and a struct column that gains a field.

use std::path::Path;

use iceberg::spec::{NestedField, PrimitiveType, Schema as IcebergSchema, Type};

use super::tests::{decode_one, decoder, single_column_event};
use super::*;
use crate::config;

/// An update of row 1: `column` is the schema of field `v`.
fn update(column: &str, value: &str) -> String {
    single_column_event("u", column, value)
}

fn v(d: &mut Decoder, column: &str, value: &str) -> Datum {
    let change = decode_one(d, "t", &update(column, value)).expect("decodes");
    change.after.expect("an after image")[1].clone()
}

const TEXT: &str = r#"{"type":"string","optional":true,"field":"v"}"#;
const BYTES: &str = r#"{"type":"bytes","optional":true,"field":"v"}"#;
const TEXT_ARRAY: &str =
    r#"{"type":"array","items":{"type":"string","optional":true},"optional":true,"field":"v"}"#;
const INT_ARRAY: &str =
    r#"{"type":"array","items":{"type":"int32","optional":true},"optional":true,"field":"v"}"#;
const BIGINT_ARRAY: &str =
    r#"{"type":"array","items":{"type":"int64","optional":true},"optional":true,"field":"v"}"#;
const DATE_ARRAY: &str = r#"{"type":"array","items":{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1},"optional":true,"field":"v"}"#;
const UUID_ARRAY: &str = r#"{"type":"array","items":{"type":"string","optional":true,"name":"io.debezium.data.Uuid","version":1},"optional":true,"field":"v"}"#;
const HSTORE_MAP: &str = r#"{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":true},"optional":true,"field":"v"}"#;
const HSTORE_JSON: &str =
    r#"{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"v"}"#;

/// The placeholder's bytes as a JSON array of numbers: what the PostgreSQL connector sends for
/// an unchanged int[], bigint[] or date[].
fn as_numbers(placeholder: &str) -> String {
    let n: Vec<String> = placeholder.bytes().map(|b| b.to_string()).collect();
    format!("[{}]", n.join(","))
}

#[test]
fn the_default_placeholder_is_recognised_in_every_form_postgres_sends() {
    let mut d = decoder("");
    let p = UNAVAILABLE_VALUE;
    let cases = [
        (TEXT, format!("{p:?}")),
        // bytea, binary.handling.mode=bytes: base64 of the placeholder's bytes.
        (
            BYTES,
            "\"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==\"".to_string(),
        ),
        (TEXT_ARRAY, format!("[{p:?}]")),
        (INT_ARRAY, as_numbers(p)),
        (BIGINT_ARRAY, as_numbers(p)),
        (DATE_ARRAY, as_numbers(p)),
        // Java's UUID.nameUUIDFromBytes of the placeholder's bytes.
        (
            UUID_ARRAY,
            "[\"b68a35a7-17ad-35b3-af2a-ae46edb4545a\"]".to_string(),
        ),
        (HSTORE_MAP, format!("{{{p:?}:{p:?}}}")),
        (HSTORE_JSON, format!("{:?}", format!("{{{p:?}:{p:?}}}"))),
    ];
    for (column, value) in cases {
        assert_eq!(v(&mut d, column, &value), Datum::Unchanged, "{value}");
    }
    // Real values of the same shapes stay values.
    assert_eq!(
        v(&mut d, INT_ARRAY, "[95,95]"),
        Datum::List(vec![Datum::Int(95), Datum::Int(95)])
    );
    assert_eq!(
        v(&mut d, TEXT, "\"__other\""),
        Datum::String("__other".into())
    );
}

#[test]
fn a_custom_placeholder_is_configured_globally_or_per_table() {
    let mut d = decoder(
        "[decode]\nunavailable_value_placeholder = \"~unset~\"\n\
         [tables.overrides.\"cdc.u\"]\nunavailable_value_placeholder = \"@@\"\n",
    );
    assert_eq!(v(&mut d, TEXT, "\"~unset~\""), Datum::Unchanged);
    // base64("~unset~")
    assert_eq!(v(&mut d, BYTES, "\"fnVuc2V0fg==\""), Datum::Unchanged);
    assert_eq!(
        v(&mut d, INT_ARRAY, &as_numbers("~unset~")),
        Datum::Unchanged
    );
    // The default text is an ordinary value now.
    assert_eq!(
        v(&mut d, TEXT, &format!("{UNAVAILABLE_VALUE:?}")),
        Datum::String(UNAVAILABLE_VALUE.into())
    );
    // Table cdc.u (topic "x.u") has a placeholder of its own.
    let c = decode_one(&mut d, "x.u", &update(TEXT, "\"@@\"")).unwrap();
    assert_eq!(c.after.unwrap()[1], Datum::Unchanged);
    let c = decode_one(&mut d, "x.u", &update(TEXT, "\"~unset~\"")).unwrap();
    assert_eq!(c.after.unwrap()[1], Datum::String("~unset~".into()));
}

#[test]
fn an_empty_placeholder_is_a_config_error() {
    let err = config::load_str(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[catalog]\ntype = \"local\"\n\
         [decode]\nunavailable_value_placeholder = \"\"\n",
        Path::new("test.toml"),
        std::iter::empty(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("decode.unavailable_value_placeholder"),
        "{err}"
    );
}

fn table_with_times() -> IcebergSchema {
    IcebergSchema::builder()
        .with_fields([
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::optional(2, "at", Type::Primitive(PrimitiveType::Timestamp)).into(),
            NestedField::optional(3, "clock", Type::Primitive(PrimitiveType::Time)).into(),
        ])
        .with_identifier_field_ids([1])
        .build()
        .unwrap()
}

fn schemaless(d: &mut Decoder, after: &str) -> Result<Change, DecodeError> {
    decode_one(d, "t", &format!(r#"{{"after":{after},"op":"u"}}"#))
}

#[test]
fn schemaless_integer_times_need_a_configured_unit() {
    let table = crate::config::TableName {
        namespace: "cdc".into(),
        name: "t".into(),
    };
    // Unset: an integer's unit is unknown, so it is refused with the settings to change.
    let mut d = decoder("");
    d.register_table(&table, &table_with_times()).unwrap();
    let err = schemaless(&mut d, r#"{"id":1,"at":1700000000123}"#).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("column `at`"), "{text}");
    assert!(text.contains("decode.schemaless_time_unit"), "{text}");
    assert!(text.contains("schemas.enable"), "{text}");
    // ISO-8601 text (time.precision.mode=isostring, or another producer) is unambiguous.
    let c = schemaless(
        &mut d,
        r#"{"id":1,"at":"2023-11-14T22:13:20.123456","clock":"10:13:23.5"}"#,
    )
    .unwrap();
    let row = c.after.unwrap();
    assert_eq!(row[1], Datum::Timestamp(1_700_000_000_123_456));
    assert_eq!(
        row[2],
        Datum::Time((10 * 3600 + 13 * 60 + 23) * 1_000_000 + 500_000)
    );

    for (unit, at, clock) in [
        (
            "millis",
            Datum::Timestamp(1_700_000_000_123_000),
            Datum::Time(1_000),
        ),
        (
            "micros",
            Datum::Timestamp(1_700_000_000_123),
            Datum::Time(1),
        ),
        ("nanos", Datum::Timestamp(1_700_000_000), Datum::Time(0)),
    ] {
        let mut d = decoder(&format!("[decode]\nschemaless_time_unit = \"{unit}\"\n"));
        d.register_table(&table, &table_with_times()).unwrap();
        let c = schemaless(&mut d, r#"{"id":1,"at":1700000000123,"clock":1}"#).unwrap();
        let row = c.after.unwrap();
        assert_eq!((&row[1], &row[2]), (&at, &clock), "{unit}");
    }
}

#[test]
fn the_jsonconverter_type_names_are_read_and_others_refused() {
    let mut d = decoder("");
    assert_eq!(
        v(
            &mut d,
            r#"{"type":"float","optional":true,"field":"v"}"#,
            "1.5"
        ),
        Datum::Float(1.5)
    );
    assert_eq!(
        v(
            &mut d,
            r#"{"type":"double","optional":true,"field":"v"}"#,
            "1.0E-5"
        ),
        Datum::Double(1.0e-5)
    );
    for name in ["float64", "float32", "decimal"] {
        let column = format!(r#"{{"type":"{name}","optional":true,"field":"v"}}"#);
        let err = decode_one(&mut d, "t", &update(&column, "1")).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("unknown Connect type \"{name}\"")),
            "{err}"
        );
    }
}

#[test]
fn a_struct_that_gains_a_field_keeps_its_ids_and_adds_one() {
    let mut d = decoder("");
    let point = |fields: &str| {
        format!(
            r#"{{"type":"struct","fields":[{fields}],"optional":true,"name":"x.Address","field":"v"}}"#
        )
    };
    let city = r#"{"type":"string","optional":true,"field":"city"}"#;
    let zip = r#"{"type":"int32","optional":true,"field":"zip"}"#;
    let first = decode_one(&mut d, "t", &update(&point(city), r#"{"city":"Oslo"}"#)).unwrap();
    let table = first.schema.to_iceberg_schema().unwrap();
    d.register_table(&first.table, &table).unwrap();
    let second = decode_one(
        &mut d,
        "t",
        &update(
            &point(&format!("{city},{zip}")),
            r#"{"city":"Lima","zip":15001}"#,
        ),
    )
    .unwrap();
    let evolved = second.schema.to_iceberg_schema().unwrap();
    assert_eq!(
        evolved.field_by_name("v.city").unwrap().id,
        table.field_by_name("v.city").unwrap().id
    );
    let zip_field = evolved
        .field_by_name("v.zip")
        .expect("the new nested field");
    assert_eq!(zip_field.id, table.highest_field_id() + 1);
    assert_eq!(
        second.after.unwrap()[1],
        Datum::Struct(vec![Datum::String("Lima".into()), Datum::Int(15001)])
    );
}

#[test]
fn a_null_value_with_or_without_its_schema_is_a_tombstone() {
    // ExtractNewRecordState's default delete (delete.tombstone.handling.mode=tombstone) keeps
    // the row's schema with a null value: {"schema":...,"payload":null}, or the text `null`
    // without the envelope. Either deletes the record key's row.
    for value in [
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":true},"payload":null}"#,
        "null",
    ] {
        let mut d = decoder("[decode]\nformat = \"flattened\"\n");
        let change = decode_one(&mut d, "t", value).unwrap();
        assert_eq!(change.op, Op::Delete, "{value}");
        assert_eq!(change.key, [Datum::Long(1)], "{value}");
    }
}
