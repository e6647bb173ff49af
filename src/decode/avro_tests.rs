//! Avro records in the Confluent wire format: decoded to the same changes as their JSON
//! counterparts. The envelope schema is one a Debezium PostgreSQL connector registered through
//! Confluent's AvroConverter (captured from a Schema Registry, as published in a public
//! repository); the type schemas follow the AvroConverter's mapping of Connect and Debezium
//! logical types (`connect.name`, `connect.parameters`, `connect.type`, Avro logical types).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema};
use rustc_hash::FxHashMap;

use super::tests::config;
use super::*;

/// The value schema a Debezium 2.x PostgreSQL connector registered for `demo.public.users`.
const USERS_ENVELOPE: &str = r#"{"type":"record","name":"Envelope","namespace":"demo.public.users","fields":[{"name":"before","type":["null",{"type":"record","name":"Value","fields":[{"name":"id","type":{"type":"int","connect.default":0},"default":0},{"name":"user_id","type":"string"},{"name":"email","type":["null","string"],"default":null},{"name":"country","type":["null","string"],"default":null},{"name":"created_at","type":[{"type":"long","connect.version":1,"connect.default":0,"connect.name":"io.debezium.time.MicroTimestamp"},"null"],"default":0},{"name":"updated_at","type":[{"type":"long","connect.version":1,"connect.default":0,"connect.name":"io.debezium.time.MicroTimestamp"},"null"],"default":0}],"connect.name":"demo.public.users.Value"}],"default":null},{"name":"after","type":["null","Value"],"default":null},{"name":"source","type":{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[{"name":"version","type":"string"},{"name":"connector","type":"string"},{"name":"name","type":"string"},{"name":"ts_ms","type":"long"},{"name":"snapshot","type":[{"type":"string","connect.version":1,"connect.parameters":{"allowed":"true,last,false,incremental"},"connect.default":"false","connect.name":"io.debezium.data.Enum"},"null"],"default":"false"},{"name":"db","type":"string"},{"name":"sequence","type":["null","string"],"default":null},{"name":"ts_us","type":["null","long"],"default":null},{"name":"ts_ns","type":["null","long"],"default":null},{"name":"schema","type":"string"},{"name":"table","type":"string"},{"name":"txId","type":["null","long"],"default":null},{"name":"lsn","type":["null","long"],"default":null},{"name":"xmin","type":["null","long"],"default":null}],"connect.name":"io.debezium.connector.postgresql.Source"}},{"name":"transaction","type":["null",{"type":"record","name":"block","namespace":"event","fields":[{"name":"id","type":"string"},{"name":"total_order","type":"long"},{"name":"data_collection_order","type":"long"}],"connect.version":1,"connect.name":"event.block"}],"default":null},{"name":"op","type":"string"},{"name":"ts_ms","type":["null","long"],"default":null},{"name":"ts_us","type":["null","long"],"default":null},{"name":"ts_ns","type":["null","long"],"default":null}],"connect.version":2,"connect.name":"demo.public.users.Envelope"}"#;

/// The key schema the same connector registers (the primary key struct).
const USERS_KEY: &str = r#"{"type":"record","name":"Key","namespace":"demo.public.users","fields":[{"name":"id","type":{"type":"int","connect.default":0},"default":0}],"connect.name":"demo.public.users.Key"}"#;

/// A flattened row (ExtractNewRecordState with add.fields=op and delete.handling.mode=rewrite)
/// with the Connect and Debezium types whose Avro shape differs from their JSON one.
const TYPES_FLAT: &str = r#"{"type":"record","name":"Value","namespace":"srv.inventory.items","fields":[
 {"name":"id","type":"long"},
 {"name":"price","type":["null",{"type":"bytes","scale":2,"precision":10,"connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
 {"name":"amount","type":["null",{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}],"connect.doc":"Variable scaled decimal","connect.version":1,"connect.name":"io.debezium.data.VariableScaleDecimal"}],"default":null},
 {"name":"ratio","type":["null","double"],"default":null},
 {"name":"weight","type":["null","float"],"default":null},
 {"name":"small","type":["null",{"type":"int","connect.type":"int16"}],"default":null},
 {"name":"born","type":["null",{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}],"default":null},
 {"name":"day","type":["null",{"type":"int","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Date","logicalType":"date"}],"default":null},
 {"name":"seen","type":["null",{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}],"default":null},
 {"name":"stamp","type":["null",{"type":"long","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}],"default":null},
 {"name":"blob","type":["null","bytes"],"default":null},
 {"name":"mood","type":["null",{"type":"string","connect.version":1,"connect.parameters":{"allowed":"happy,sad"},"connect.name":"io.debezium.data.Enum"}],"default":null},
 {"name":"tags","type":["null",{"type":"array","items":["null","string"]}],"default":null},
 {"name":"__op","type":["null","string"],"default":null},
 {"name":"__deleted","type":["null","string"],"default":null}
],"connect.name":"srv.inventory.items.Value"}"#;

const TYPES_KEY: &str = r#"{"type":"record","name":"Key","namespace":"srv.inventory.items","fields":[{"name":"id","type":"long"}],"connect.name":"srv.inventory.items.Key"}"#;

/// Schemas by id, counting fetches; `down` answers like an unreachable registry.
#[derive(Default)]
struct Schemas {
    by_id: FxHashMap<u32, &'static str>,
    fetched: AtomicUsize,
    down: bool,
}

impl SchemaSource for Schemas {
    fn fetch(&self, id: u32) -> Result<String, FetchError> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(FetchError::Unavailable("connection refused".into()));
        }
        self.by_id
            .get(&id)
            .map(|s| s.to_string())
            .ok_or_else(|| FetchError::Unusable(format!("schema id {id} is not in the registry")))
    }
}

fn schemas() -> Arc<Schemas> {
    let by_id = [
        (1, USERS_KEY),
        (2, USERS_ENVELOPE),
        (3, TYPES_KEY),
        (4, TYPES_FLAT),
    ];
    Arc::new(Schemas {
        by_id: by_id.into_iter().collect(),
        ..Schemas::default()
    })
}

fn avro_decoder(extra: &str, schemas: Arc<Schemas>) -> Decoder {
    let c = config(&format!(
        "[decode]\nconverter = \"avro\"\n{extra}\n[decode.schema_registry]\nurl = \"http://127.0.0.1:1\"\n"
    ));
    Decoder::with_schemas(&c.decode, &c.tables, Some(schemas))
}

/// The Confluent wire format of `value` written with schema `id`.
fn framed(id: u32, schema: &str, value: Avro) -> Vec<u8> {
    let schema = Schema::parse_str(schema).expect("test schema");
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(&schema, value).expect("value fits its schema"));
    out
}

fn record(fields: Vec<(&str, Avro)>) -> Avro {
    Avro::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn some(index: u32, v: Avro) -> Avro {
    Avro::Union(index, Box::new(v))
}

fn null() -> Avro {
    Avro::Union(0, Box::new(Avro::Null))
}

fn users_row(id: i32, email: Option<&str>, created: i64) -> Avro {
    record(vec![
        ("id", Avro::Int(id)),
        ("user_id", Avro::String(format!("u-{id}"))),
        (
            "email",
            email.map_or(null(), |e| some(1, Avro::String(e.into()))),
        ),
        ("country", some(1, Avro::String("NL".into()))),
        ("created_at", some(0, Avro::Long(created))),
        ("updated_at", Avro::Union(1, Box::new(Avro::Null))),
    ])
}

fn users_envelope(op: &str, before: Option<Avro>, after: Option<Avro>) -> Avro {
    let image = |row: Option<Avro>| row.map_or(null(), |r| some(1, r));
    record(vec![
        ("before", image(before)),
        ("after", image(after)),
        (
            "source",
            record(vec![
                ("version", Avro::String("2.7.0.Final".into())),
                ("connector", Avro::String("postgresql".into())),
                ("name", Avro::String("demo".into())),
                ("ts_ms", Avro::Long(1_700_000_000_000)),
                ("snapshot", some(0, Avro::String("false".into()))),
                ("db", Avro::String("demo".into())),
                ("sequence", null()),
                ("ts_us", null()),
                ("ts_ns", null()),
                ("schema", Avro::String("public".into())),
                ("table", Avro::String("users".into())),
                ("txId", some(1, Avro::Long(771))),
                ("lsn", some(1, Avro::Long(23_456_789))),
                ("xmin", null()),
            ]),
        ),
        ("transaction", null()),
        ("op", Avro::String(op.into())),
        ("ts_ms", some(1, Avro::Long(1_700_000_000_321))),
        ("ts_us", null()),
        ("ts_ns", null()),
    ])
}

fn users_key(id: i32) -> Vec<u8> {
    framed(1, USERS_KEY, record(vec![("id", Avro::Int(id))]))
}

fn rec<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>, offset: i64) -> KafkaRecord<'a> {
    KafkaRecord {
        topic: "t",
        partition: 0,
        offset,
        timestamp: None,
        key,
        value,
        headers: Vec::new(),
    }
}

fn change(decoded: Result<Decoded, DecodeError>) -> Change {
    match decoded.expect("decodes") {
        Decoded::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn column<'c>(c: &'c Change, name: &str) -> &'c Datum {
    let i = c.schema.column_index(name).expect("column exists");
    &c.after.as_ref().or(c.before.as_ref()).expect("an image")[i]
}

#[test]
fn a_debezium_envelope_in_avro_decodes_to_its_columns_key_and_source() {
    let schemas = schemas();
    let mut d = avro_decoder("", schemas.clone());
    let key = users_key(7);
    let value = framed(
        2,
        USERS_ENVELOPE,
        users_envelope("c", None, Some(users_row(7, None, 1_700_000_000_123_456))),
    );
    let c = change(d.decode(&rec(Some(&key), Some(&value), 10)));
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.key, vec![Datum::Int(7)]);
    assert_eq!(c.schema.primary_key_names(), ["id"]);
    let names: Vec<&str> = c.schema.columns().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "user_id",
            "email",
            "country",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(column(&c, "user_id"), &Datum::String("u-7".into()));
    assert_eq!(column(&c, "email"), &Datum::Null);
    assert_eq!(column(&c, "country"), &Datum::String("NL".into()));
    assert_eq!(
        column(&c, "created_at"),
        &Datum::Timestamp(1_700_000_000_123_456)
    );
    assert_eq!(column(&c, "updated_at"), &Datum::Null);
    assert_eq!(c.event_ts_ms, Some(1_700_000_000_321));
    assert_eq!(c.source.ts_ms, Some(1_700_000_000_000));
    assert_eq!(c.source.table.as_deref(), Some("users"));
    assert_eq!(
        c.source.position,
        Some(SourcePosition::Lsn {
            lsn: 23_456_789,
            tx_id: Some(771)
        })
    );

    // An update and a delete with its tombstone: schemas are fetched once per id.
    let update = framed(
        2,
        USERS_ENVELOPE,
        users_envelope(
            "u",
            Some(users_row(7, None, 1_700_000_000_123_456)),
            Some(users_row(7, Some("a@b.c"), 1_700_000_000_123_456)),
        ),
    );
    let c = change(d.decode(&rec(Some(&key), Some(&update), 11)));
    assert_eq!(c.op, Op::Update);
    assert_eq!(column(&c, "email"), &Datum::String("a@b.c".into()));
    let delete = framed(
        2,
        USERS_ENVELOPE,
        users_envelope("d", Some(users_row(7, None, 5)), None),
    );
    let c = change(d.decode(&rec(Some(&key), Some(&delete), 12)));
    assert_eq!((c.op, c.key.clone()), (Op::Delete, vec![Datum::Int(7)]));
    assert!(matches!(
        d.decode(&rec(Some(&key), None, 13)),
        Ok(Decoded::TombstoneAfterDelete(_))
    ));
    assert_eq!(schemas.fetched.load(Ordering::SeqCst), 2);

    // A tombstone on its own deletes by the Avro key.
    let other = users_key(8);
    let c = change(d.decode(&rec(Some(&other), None, 14)));
    assert_eq!((c.op, c.key), (Op::Delete, vec![Datum::Int(8)]));
}

#[test]
fn avro_types_decode_to_the_same_datums_as_their_json_forms() {
    let mut d = avro_decoder("format = \"flattened\"", schemas());
    let key = framed(3, TYPES_KEY, record(vec![("id", Avro::Long(5))]));
    // 12345.67 as Connect's Decimal (unscaled 1234567, two's complement big-endian).
    let price = Decimal::from(1_234_567i32.to_be_bytes().to_vec());
    // -0.5 with a variable scale: unscaled -5, scale 1.
    let amount = record(vec![
        ("scale", Avro::Int(1)),
        ("value", Avro::Bytes(vec![0xfb])),
    ]);
    // A double whose shortest text is 17 digits, and the float nearest 0.1.
    let ratio = 0.1 + 0.2;
    let row = record(vec![
        ("id", Avro::Long(5)),
        ("price", some(1, Avro::Decimal(price))),
        ("amount", some(1, amount)),
        ("ratio", some(1, Avro::Double(ratio))),
        ("weight", some(1, Avro::Float(0.1))),
        ("small", some(1, Avro::Int(-300))),
        ("born", some(1, Avro::Int(19_000))),
        ("day", some(1, Avro::Date(-1))),
        (
            "seen",
            some(1, Avro::String("2024-03-01T10:15:30.123456+02:00".into())),
        ),
        ("stamp", some(1, Avro::TimestampMillis(1_700_000_000_123))),
        ("blob", some(1, Avro::Bytes(vec![0, 255, 7]))),
        ("mood", some(1, Avro::String("sad".into()))),
        (
            "tags",
            some(
                1,
                Avro::Array(vec![some(1, Avro::String("a".into())), null()]),
            ),
        ),
        ("__op", some(1, Avro::String("u".into()))),
        ("__deleted", some(1, Avro::String("false".into()))),
    ]);
    let value = framed(4, TYPES_FLAT, row);
    let c = change(d.decode(&rec(Some(&key), Some(&value), 0)));
    assert_eq!(c.op, Op::Update);
    assert_eq!(c.key, vec![Datum::Long(5)]);
    assert!(c.schema.column_index("__op").is_none());
    assert_eq!(column(&c, "price"), &Datum::Decimal(1_234_567));
    assert_eq!(column(&c, "amount"), &Datum::String("-0.5".into()));
    assert_eq!(column(&c, "ratio"), &Datum::Double(ratio));
    assert_eq!(column(&c, "weight"), &Datum::Float(0.1));
    assert_eq!(column(&c, "small"), &Datum::Int(-300));
    assert_eq!(column(&c, "born"), &Datum::Date(19_000));
    assert_eq!(column(&c, "day"), &Datum::Date(-1));
    assert_eq!(
        column(&c, "seen"),
        &Datum::TimestampTz(1_709_280_930_123_456)
    );
    assert_eq!(
        column(&c, "stamp"),
        &Datum::Timestamp(1_700_000_000_123_000)
    );
    assert_eq!(column(&c, "blob"), &Datum::Binary(vec![0, 255, 7]));
    assert_eq!(column(&c, "mood"), &Datum::String("sad".into()));
    assert_eq!(
        column(&c, "tags"),
        &Datum::List(vec![Datum::String("a".into()), Datum::Null])
    );
    let ty = |name: &str| {
        c.schema.columns()[c.schema.column_index(name).unwrap()]
            .codec
            .clone()
    };
    assert_eq!(
        ty("price"),
        Codec::Decimal {
            precision: 10,
            scale: 2
        }
    );
    assert_eq!(ty("stamp"), Codec::TimestampMillis);
    assert_eq!(ty("seen"), Codec::ZonedTimestamp);

    // Doubles at the edges come through exactly; NaN and the infinities too.
    for x in [
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        -0.0,
        1e21,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        let row = record(vec![
            ("id", Avro::Long(5)),
            ("price", null()),
            ("amount", null()),
            ("ratio", some(1, Avro::Double(x))),
            ("weight", some(1, Avro::Float(x as f32))),
            ("small", null()),
            ("born", null()),
            ("day", null()),
            ("seen", null()),
            ("stamp", null()),
            ("blob", null()),
            ("mood", null()),
            ("tags", null()),
            ("__op", null()),
            ("__deleted", null()),
        ]);
        let value = framed(4, TYPES_FLAT, row);
        let c = change(d.decode(&rec(Some(&key), Some(&value), 1)));
        match (column(&c, "ratio"), column(&c, "weight")) {
            (Datum::Double(r), Datum::Float(w)) => {
                assert_eq!(r.to_bits(), x.to_bits(), "double {x:e}");
                assert_eq!(w.to_bits(), (x as f32).to_bits(), "float {x:e}");
            }
            other => panic!("{x:e}: {other:?}"),
        }
    }
}

#[test]
fn records_that_are_not_framed_avro_or_name_unknown_schemas_are_record_errors() {
    let mut d = avro_decoder("", schemas());
    let key = users_key(1);
    let json = br#"{"op":"c"}"#;
    let err = d.decode(&rec(Some(&key), Some(json), 3)).unwrap_err();
    assert_eq!((err.topic.as_str(), err.offset), ("t", 3));
    assert!(matches!(
        &err.reason,
        DecodeErrorKind::Avro { part: RecordPart::Value, message } if message.contains("Confluent wire format")
    ));
    assert!(!err.reason.stops_the_run());

    let unknown = [0, 0, 0, 0, 99, 2];
    let err = d
        .decode(&rec(Some(&unknown), Some(&unknown), 4))
        .unwrap_err();
    assert!(
        matches!(&err.reason, DecodeErrorKind::Avro { part: RecordPart::Key, message } if message.contains("99")),
        "{err}"
    );

    // Apicurio's default framing: an 8-byte id after the zero byte.
    let apicurio = [0, 0, 0, 0, 0, 0, 0, 0, 2, 2];
    let err = d.decode(&rec(Some(&key), Some(&apicurio), 4)).unwrap_err();
    assert!(
        matches!(&err.reason, DecodeErrorKind::Avro { message, .. } if message.contains("apicurio.registry.as-confluent")),
        "{err}"
    );

    // Bytes cut short of what the schema says.
    let mut value = framed(
        2,
        USERS_ENVELOPE,
        users_envelope("c", None, Some(users_row(1, None, 1))),
    );
    value.truncate(value.len() - 3);
    let err = d.decode(&rec(Some(&key), Some(&value), 5)).unwrap_err();
    assert!(
        matches!(&err.reason, DecodeErrorKind::Avro { message, .. } if message.contains("schema id 2")),
        "{err}"
    );
}

#[tokio::test]
async fn a_registry_that_cannot_be_reached_stops_the_run_instead_of_failing_the_record() {
    let down = Arc::new(Schemas {
        down: true,
        ..Schemas::default()
    });
    let mut d = avro_decoder("", down);
    let key = users_key(1);
    let record = rec(Some(&key), None, 6);
    let err = d.decode(&record).unwrap_err();
    assert!(err.reason.stops_the_run(), "{err}");
    assert_eq!(err.reason.label(), "schema_registry");
    assert!(err.to_string().contains("connection refused"), "{err}");
    // Not skipped even where records that cannot be decoded are.
    let c = config("");
    let skip = ErrorPolicy::new(&crate::config::ErrorsConfig::Skip, &c.kafka).unwrap();
    match skip.handle(err.clone(), &record).await {
        Err(PolicyError::Fail(e)) => assert_eq!(e, err),
        other => panic!("{other:?}"),
    }
    assert_eq!(skip.skipped(), 0);
}

#[test]
fn json_keys_can_go_with_avro_values() {
    let mut d = avro_decoder("key_converter = \"json\"", schemas());
    let key = br#"{"id": 3}"#;
    let value = framed(
        2,
        USERS_ENVELOPE,
        users_envelope("r", None, Some(users_row(3, None, 0))),
    );
    let c = change(d.decode(&rec(Some(key), Some(&value), 0)));
    assert_eq!((c.op, c.key), (Op::Read, vec![Datum::Int(3)]));
}

/// The decode bench's 20-column `orders` event, as JSON with its Connect schema and as the
/// AvroConverter writes it (`benches/data/avro_orders.py`): the same change either way.
#[test]
fn the_orders_event_in_avro_decodes_to_the_same_change_as_in_json() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let avro: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("benches/data/avro_orders.json")).unwrap(),
    )
    .unwrap();
    let text = |k: &str| avro[k].as_str().unwrap().to_string();
    let bytes = |k: &str, id: u32| {
        let hex = text(k);
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()),
        );
        out
    };
    let leaked = |k: &str| -> &'static str { Box::leak(text(k).into_boxed_str()) };
    let schemas = Arc::new(Schemas {
        by_id: [(1, leaked("key_schema")), (2, leaked("value_schema"))]
            .into_iter()
            .collect(),
        ..Schemas::default()
    });
    let (key, value) = (bytes("key", 1), bytes("value", 2));
    let line =
        std::fs::read_to_string(root.join("tests/data/debezium/postgres/bench_orders.jsonl"))
            .unwrap();
    let json: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let (json_key, json_value) = (json["key"].to_string(), json["value"].to_string());

    let mut from_avro = avro_decoder("", schemas);
    let mut from_json = super::tests::decoder("");
    let a = change(from_avro.decode(&rec(Some(&key), Some(&value), 0)));
    let j = change(from_json.decode(&rec(
        Some(json_key.as_bytes()),
        Some(json_value.as_bytes()),
        0,
    )));
    assert_eq!(a.schema.columns().len(), 20);
    assert_eq!(a.schema.columns(), j.schema.columns());
    assert_eq!(a, j);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    /// Corrupted Avro (a valid record with bytes flipped, cut or appended, or random bytes
    /// after a known schema id) is an error or a change, never a panic.
    #[test]
    fn corrupted_avro_never_panics_the_decoder(
        edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
        cut in 0usize..400,
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        flattened in proptest::prelude::any::<bool>(),
    ) {
        let mut d = avro_decoder(if flattened { "format = \"flattened\"" } else { "" }, schemas());
        let mut value = framed(
            2,
            USERS_ENVELOPE,
            users_envelope("u", Some(users_row(4, None, 9)), Some(users_row(4, Some("x"), 9))),
        );
        for (at, byte) in edits {
            let at = 5 + at % (value.len() - 5);
            value[at] = byte;
        }
        value.truncate(5 + cut.min(value.len() - 5));
        value.extend(tail);
        let key = users_key(4);
        let _ = d.decode(&rec(Some(&key), Some(&value), 0));
        let _ = d.decode(&rec(Some(&value), None, 1));
    }
}
