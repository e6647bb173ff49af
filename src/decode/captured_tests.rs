//! Decoder tests over records captured from real connectors (`tests/data/captured/`): every
//! record of every file decodes, and each value equals what the source row held, as the
//! corpus's `manifest.json` states it (derived from the origin's own statements where the
//! origin gives them). Floating-point values are compared bit for bit. Every record with a
//! Connect schema is also rewritten as Confluent's AvroConverter would write it, and must
//! decode to the same change.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate};
use num_bigint::BigInt;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::logical::scaled_text;
use super::tests::record;
use super::*;
use crate::config;

#[derive(Debug, Deserialize)]
struct Entry {
    file: String,
    format: String,
    record: String,
    shape: String,
    table: String,
    primary_key: Vec<String>,
    expected: Vec<Expected>,
}

#[derive(Debug, Deserialize)]
struct Expected {
    op: String,
    before: Option<serde_json::Map<String, Value>>,
    after: Option<serde_json::Map<String, Value>>,
}

fn captured() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/captured")
}

fn manifest() -> Vec<Entry> {
    let text = std::fs::read_to_string(captured().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest.json")
}

/// The file's Kafka records as (key, value) text, byte for byte as stored.
fn records(entry: &Entry) -> Vec<(Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(captured().join(&entry.file)).expect("corpus file");
    let values: Vec<&RawValue> = match entry.format.as_str() {
        "lines" => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
            .collect(),
        "document" => {
            let doc: &RawValue = serde_json::from_str(&text).expect("a JSON document");
            if doc.get().starts_with('[') {
                serde_json::from_str(doc.get()).expect("an array of records")
            } else {
                vec![doc]
            }
        }
        other => panic!("{}: unknown format {other}", entry.file),
    };
    let text_of = |r: &RawValue| (r.get() != "null").then(|| r.get().to_string());
    values
        .into_iter()
        .map(|v| match entry.record.as_str() {
            "value" => (None, text_of(v)),
            "key_value" => {
                #[derive(Deserialize)]
                struct KeyValue<'a> {
                    #[serde(borrow)]
                    key: &'a RawValue,
                    #[serde(borrow)]
                    value: &'a RawValue,
                }
                let kv: KeyValue = serde_json::from_str(v.get()).expect("{key, value}");
                (text_of(kv.key), text_of(kv.value))
            }
            other => panic!("{}: unknown record kind {other}", entry.file),
        })
        .collect()
}

fn decoder_for(entry: &Entry, topic: &str) -> Decoder {
    let c = config::load_str(
        &decoder_toml(entry, topic),
        Path::new("captured.toml"),
        std::iter::empty(),
    )
    .expect("valid test config");
    Decoder::new(&c.decode, &c.tables)
}

fn decoder_toml(entry: &Entry, topic: &str) -> String {
    let format = if entry.shape.starts_with("flattened") {
        "flattened"
    } else {
        "envelope"
    };
    let mut toml = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"{topic}\"]\n[catalog]\ntype = \"local\"\n\
         [decode]\nformat = \"{format}\"\n"
    );
    if entry.record == "value" && !entry.primary_key.is_empty() {
        let keys: Vec<String> = entry.primary_key.iter().map(|k| format!("{k:?}")).collect();
        toml.push_str(&format!(
            "[tables.overrides.\"cdc.{}\"]\nprimary_key = [{}]\n",
            table_name(entry),
            keys.join(", ")
        ));
    }
    toml
}

fn table_name(entry: &Entry) -> String {
    entry
        .table
        .rsplit('.')
        .next()
        .unwrap_or(&entry.table)
        .to_string()
}

#[test]
fn every_captured_record_decodes_to_the_source_rows_values() {
    let entries = manifest();
    assert!(entries.len() >= 20, "the corpus lost files");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in &entries {
        let topic = format!("captured.{}", table_name(entry));
        let mut decoder = decoder_for(entry, &topic);
        let records = records(entry);
        assert_eq!(
            records.len(),
            entry.expected.len(),
            "{}: one expected entry per record",
            entry.file
        );
        for (offset, ((key, value), want)) in records.iter().zip(&entry.expected).enumerate() {
            let rec = record(&topic, offset as i64, key.as_deref(), value.as_deref());
            let at = format!("{} record {offset}", entry.file);
            let change = match decoder.decode(&rec) {
                Ok(Decoded::Change(c)) => c,
                Ok(other) => {
                    failures.push(format!("{at}: decoded to {other:?}"));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if change.op.code() != want.op {
                failures.push(format!("{at}: op {} != {}", change.op.code(), want.op));
            }
            for (image, got, expected) in [
                ("before", &change.before, &want.before),
                ("after", &change.after, &want.after),
            ] {
                // A flattened delete carries its row as the image it deletes.
                let got = match (image, got, expected) {
                    ("before", None, Some(_)) if change.op == Op::Delete => &change.after,
                    _ => got,
                };
                match (got, expected) {
                    (_, None) => {}
                    (None, Some(_)) => failures.push(format!("{at}: no {image} image")),
                    (Some(row), Some(expected)) => {
                        for e in compare_row(change.schema.columns(), row, expected) {
                            failures.push(format!("{at}, {image}: {e}"));
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 100, "only {checked} row images were compared");
}

/// A record's key and value decode the same when their schemas are found by their bytes
/// (the topic's last schema) as when they are read as JSON.
#[test]
fn every_captured_record_decodes_the_same_when_its_schema_is_the_last_one() {
    let mut compared = 0;
    let mut by_bytes = 0;
    for entry in &manifest() {
        let topic = format!("captured.{}", table_name(entry));
        let (mut read, mut known) = (decoder_for(entry, &topic), decoder_for(entry, &topic));
        for (offset, (key, value)) in records(entry).iter().enumerate() {
            let rec = record(&topic, offset as i64, key.as_deref(), value.as_deref());
            read.forget_schemas();
            let want = format!("{:?}", read.decode(&rec));
            // Decoded twice: the second time, the record's own schemas are the last ones.
            let _ = known.decode(&rec);
            let got = format!("{:?}", known.decode(&rec));
            assert_eq!(got, want, "{} record {offset}", entry.file);
            compared += 1;
            for text in [key, value].into_iter().flatten() {
                let object = super::envelope::RawObject::parse(text).ok();
                if let Some((schema, _)) = object.as_ref().and_then(|o| o.envelope()) {
                    assert!(
                        super::envelope::split_envelope(text, schema.get()).is_some(),
                        "{} record {offset}: its schema is not found by its bytes",
                        entry.file
                    );
                    by_bytes += 1;
                }
            }
        }
    }
    assert!(compared >= 100, "only {compared} records were compared");
    assert!(
        by_bytes >= 90,
        "only {by_bytes} schemas were found by their bytes"
    );
}

/// Every column the record has is compared with the expected value; a column the source row
/// has must be in the decoded row (or be null there, where schemaless decoding never saw it).
fn compare_row(
    columns: &[Field],
    row: &[Datum],
    expected: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        let want = expected.get(&column.name).unwrap_or(&Value::Null);
        if let Err(e) = compare(&row[i], &column.codec, want) {
            out.push(format!("column {}: {e}", column.name));
        }
    }
    for (name, want) in expected {
        if !want.is_null() && !columns.iter().any(|c| &c.name == name) {
            out.push(format!("column {name} is missing (expected {want})"));
        }
    }
    out
}

fn compare(got: &Datum, codec: &Codec, want: &Value) -> Result<(), String> {
    let mismatch = || Err(format!("decoded {got:?}, expected {want}"));
    let text = want.as_str();
    let ok = match (got, want) {
        (Datum::Null, Value::Null) => true,
        (_, Value::Null) | (Datum::Null, _) => false,
        (Datum::Unchanged, _) => text == Some(UNAVAILABLE_VALUE),
        (Datum::Boolean(b), _) => text == Some(if *b { "true" } else { "false" }),
        (Datum::Int(v), _) => text == Some(v.to_string().as_str()),
        (Datum::Long(v), _) => text == Some(v.to_string().as_str()),
        (Datum::Float(v), _) => text
            .and_then(|t| t.parse::<f32>().ok())
            .is_some_and(|w| w.to_bits() == v.to_bits() || w.is_nan() && v.is_nan()),
        (Datum::Double(v), _) => text
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|w| w.to_bits() == v.to_bits() || w.is_nan() && v.is_nan()),
        (Datum::Decimal(v), _) => match codec {
            Codec::Decimal { scale, .. } => {
                text == Some(scaled_text(&BigInt::from(*v), *scale as i32).as_str())
            }
            _ => false,
        },
        (Datum::String(s), _) => text == Some(s.as_str()),
        (Datum::Binary(b), _) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            text == Some(format!("hex:{hex}").as_str())
        }
        (Datum::Date(d), _) => {
            let date = NaiveDate::default()
                .checked_add_signed(chrono::TimeDelta::days(i64::from(*d)))
                .map(|d| d.format("%Y-%m-%d").to_string());
            text.is_some() && date.as_deref() == text
        }
        (Datum::Time(us), _) => {
            let secs = us / 1_000_000;
            let shown = format!(
                "{:02}:{:02}:{:02}.{:06}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                us % 1_000_000
            );
            text == Some(shown.as_str())
        }
        (Datum::Timestamp(us), _) => {
            DateTime::from_timestamp_micros(*us)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
                .as_deref()
                == text
        }
        (Datum::TimestampTz(us), _) => {
            DateTime::from_timestamp_micros(*us)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                .as_deref()
                == text
        }
        (Datum::List(items), Value::Array(wants)) => {
            let Codec::List(element) = codec else {
                return mismatch();
            };
            if items.len() != wants.len() {
                return mismatch();
            }
            for (i, (g, w)) in items.iter().zip(wants).enumerate() {
                compare(g, &element.codec, w).map_err(|e| format!("element {i}: {e}"))?;
            }
            true
        }
        (Datum::Struct(values), Value::Object(wants)) => {
            let Codec::Struct(fields) = codec else {
                return mismatch();
            };
            let errors = compare_row(fields, values, wants);
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            true
        }
        (Datum::Map(entries), Value::Object(wants)) => {
            let Codec::Map(_, value) = codec else {
                return mismatch();
            };
            if entries.len() != wants.len() {
                return mismatch();
            }
            for (k, v) in entries {
                let Datum::String(k) = k else {
                    return mismatch();
                };
                compare(v, &value.codec, wants.get(k).unwrap_or(&Value::Null))
                    .map_err(|e| format!("key {k}: {e}"))?;
            }
            true
        }
        _ => false,
    };
    if ok { Ok(()) } else { mismatch() }
}

/// Every captured record that carries its Connect schema, rewritten as Confluent's
/// AvroConverter writes the same Connect record (the schema mapped as below, the values
/// encoded by the `apache-avro` crate, framed with a schema id), decodes to the same change
/// as the JSON record.
#[test]
fn every_captured_record_with_a_schema_decodes_the_same_from_avro() {
    use std::sync::Arc;
    use std::sync::Mutex;

    /// Schemas registered by the conversion, by id.
    #[derive(Default)]
    struct Registered(Mutex<Vec<String>>);

    impl Registered {
        fn id_of(&self, schema: String) -> u32 {
            let mut all = self.0.lock().unwrap();
            match all.iter().position(|s| *s == schema) {
                Some(i) => i as u32 + 1,
                None => {
                    all.push(schema);
                    all.len() as u32
                }
            }
        }
    }

    impl SchemaSource for Registered {
        fn fetch(&self, id: u32) -> Result<String, FetchError> {
            let all = self.0.lock().unwrap();
            all.get(id as usize - 1)
                .cloned()
                .ok_or_else(|| FetchError::Unusable(format!("no schema {id}")))
        }
    }

    let registered = Arc::new(Registered::default());
    let framed = |at: &str, json: &str| -> Vec<u8> {
        #[derive(Deserialize)]
        struct Parts<'a> {
            schema: Value,
            #[serde(borrow)]
            payload: &'a RawValue,
        }
        let record: Parts = serde_json::from_str(json).expect("JSON record");
        let avro = connect_to_avro::schema(&record.schema);
        let parsed = apache_avro::Schema::parse(&avro).expect("a valid Avro schema");
        let value = connect_to_avro::value(&record.schema, record.payload);
        let id = registered.id_of(avro.to_string());
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        match apache_avro::to_avro_datum(&parsed, value.clone()) {
            Ok(bytes) => out.extend(bytes),
            Err(e) => panic!("{at}: {e}\n{avro}\n{value:?}"),
        }
        out
    };
    let mut compared = 0;
    for entry in manifest()
        .iter()
        .filter(|e| e.shape.ends_with("with_schema"))
    {
        let topic = format!("captured.{}", table_name(entry));
        let mut json = decoder_for(entry, &topic);
        let mut avro = {
            let toml = decoder_toml(entry, &topic)
                .replace("[decode]\n", "[decode]\nconverter = \"avro\"\n")
                + "[decode.schema_registry]\nurl = \"http://127.0.0.1:1\"\n";
            let c = config::load_str(&toml, Path::new("captured.toml"), std::iter::empty())
                .expect("valid test config");
            Decoder::with_schemas(&c.decode, &c.tables, Some(registered.clone()))
        };
        for (offset, (key, value)) in records(entry).iter().enumerate() {
            let at = format!("{} record {offset}", entry.file);
            let rec = record(&topic, offset as i64, key.as_deref(), value.as_deref());
            let want = json.decode(&rec).unwrap_or_else(|e| panic!("{at}: {e}"));
            let (k, v) = (
                key.as_deref().map(|j| framed(&at, j)),
                value.as_deref().map(|j| framed(&at, j)),
            );
            let rec = record(&topic, offset as i64, None, None);
            let rec = KafkaRecord {
                key: k.as_deref(),
                value: v.as_deref(),
                ..rec
            };
            let got = avro.decode(&rec).unwrap_or_else(|e| panic!("{at}: {e}"));
            if got != want {
                // Name the columns that differ: the changes are long.
                if let (Decoded::Change(g), Decoded::Change(w)) = (&got, &want) {
                    for (i, (gc, wc)) in g
                        .schema
                        .columns()
                        .iter()
                        .zip(w.schema.columns())
                        .enumerate()
                    {
                        let image = |c: &Change| {
                            c.after.as_ref().or(c.before.as_ref()).map(|r| r[i].clone())
                        };
                        if gc != wc || image(g) != image(w) {
                            eprintln!(
                                "{at}: column {}: avro {gc:?} {:?}, json {wc:?} {:?}",
                                gc.name,
                                image(g),
                                image(w)
                            );
                        }
                    }
                }
                panic!("{at}: the Avro record decodes to another change");
            }
            compared += 1;
        }
    }
    assert!(compared >= 90, "only {compared} records were compared");
}

/// The Avro schema and value Confluent's AvroConverter writes for a Connect schema and value
/// (as its `AvroData` maps them): structs to records named after the Connect name (with
/// `connect.name`), a name used again referred to by name, optional fields to a union with
/// null defaulting to null, int8 and int16 to int with `connect.type`, Connect's Decimal,
/// Date, Time and Timestamp to Avro's logical types, `connect.version` and
/// `connect.parameters` kept.
mod connect_to_avro {
    use std::collections::{HashMap, HashSet};

    use apache_avro::types::Value as Avro;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    pub fn schema(connect: &Value) -> Value {
        let mut defined = HashSet::new();
        let mut unnamed = 0;
        let (avro, _) = convert(connect, &mut defined, &mut unnamed);
        avro
    }

    fn convert(connect: &Value, defined: &mut HashSet<String>, unnamed: &mut u32) -> (Value, bool) {
        let optional = connect["optional"].as_bool().unwrap_or(false);
        let name = connect["name"].as_str();
        let mut avro = match connect["type"].as_str().expect("a Connect type") {
            "struct" => {
                let full = match name {
                    Some(n) => n.to_string(),
                    None => {
                        *unnamed += 1;
                        format!("io.confluent.connect.avro.ConnectDefault{unnamed}")
                    }
                };
                if !defined.insert(full.clone()) {
                    return (Value::String(full), optional);
                }
                let (namespace, short) = full.rsplit_once('.').unwrap_or(("", &full));
                let fields: Vec<Value> = connect["fields"]
                    .as_array()
                    .expect("struct fields")
                    .iter()
                    .map(|f| {
                        let (ty, optional) = convert(f, defined, unnamed);
                        let name = f["field"].as_str().expect("a field name");
                        if optional {
                            json!({"name": name, "type": ["null", ty], "default": null})
                        } else {
                            json!({"name": name, "type": ty})
                        }
                    })
                    .collect();
                json!({"type": "record", "name": short, "namespace": namespace, "fields": fields})
            }
            "array" => {
                let (items, optional) = convert(&connect["items"], defined, unnamed);
                let items = if optional {
                    json!(["null", items])
                } else {
                    items
                };
                json!({"type": "array", "items": items})
            }
            "map" => {
                assert_eq!(
                    connect["keys"]["type"], "string",
                    "maps with string keys only"
                );
                let (values, optional) = convert(&connect["values"], defined, unnamed);
                let values = if optional {
                    json!(["null", values])
                } else {
                    values
                };
                json!({"type": "map", "values": values})
            }
            t => {
                let primitive = match t {
                    "int8" | "int16" | "int32" => "int",
                    "int64" => "long",
                    "float32" => "float",
                    "float64" => "double",
                    other => other,
                };
                let mut avro = json!({ "type": primitive });
                if matches!(t, "int8" | "int16") {
                    avro["connect.type"] = json!(t);
                }
                match name {
                    Some("org.apache.kafka.connect.data.Decimal") => {
                        let param = |k: &str| {
                            connect["parameters"][k]
                                .as_str()
                                .and_then(|s| s.parse::<u64>().ok())
                        };
                        avro["logicalType"] = json!("decimal");
                        avro["scale"] = json!(param("scale").unwrap_or(0));
                        avro["precision"] = json!(param("connect.decimal.precision").unwrap_or(64));
                    }
                    Some("org.apache.kafka.connect.data.Date") => {
                        avro["logicalType"] = json!("date")
                    }
                    Some("org.apache.kafka.connect.data.Time") => {
                        avro["logicalType"] = json!("time-millis")
                    }
                    Some("org.apache.kafka.connect.data.Timestamp") => {
                        avro["logicalType"] = json!("timestamp-millis")
                    }
                    _ => {}
                }
                avro
            }
        };
        if let Some(v) = connect.get("version") {
            avro["connect.version"] = v.clone();
        }
        if let Some(p) = connect.get("parameters") {
            avro["connect.parameters"] = p.clone();
        }
        if let Some(n) = name {
            avro["connect.name"] = json!(n);
        }
        (avro, optional)
    }

    /// `json` as text: numbers are read from their digits, never through a double.
    pub fn value(connect: &Value, json: &RawValue) -> Avro {
        let optional = connect["optional"].as_bool().unwrap_or(false);
        match (optional, json.get().trim() == "null") {
            (true, true) => Avro::Union(0, Box::new(Avro::Null)),
            (true, false) => Avro::Union(1, Box::new(plain(connect, json))),
            (false, _) => plain(connect, json),
        }
    }

    fn parse<'a, T: serde::Deserialize<'a>>(json: &'a RawValue) -> T {
        serde_json::from_str(json.get()).unwrap_or_else(|e| panic!("{e}: {}", json.get()))
    }

    fn plain(connect: &Value, json: &RawValue) -> Avro {
        let name = connect["name"].as_str();
        let text = json.get().trim();
        // A double from its text (serde_json reads the nearest double), or "NaN" etc.
        let float = || match text.strip_prefix('"') {
            Some(_) => parse::<String>(json)
                .parse::<f64>()
                .expect("NaN or an infinity"),
            None => parse::<f64>(json),
        };
        match connect["type"].as_str().unwrap() {
            "struct" => {
                let fields: HashMap<String, &RawValue> = parse(json);
                Avro::Record(
                    connect["fields"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| {
                            let name = f["field"].as_str().unwrap();
                            let null: &RawValue = serde_json::from_str("null").unwrap();
                            (
                                name.to_string(),
                                value(f, fields.get(name).copied().unwrap_or(null)),
                            )
                        })
                        .collect(),
                )
            }
            "array" => Avro::Array(
                parse::<Vec<&RawValue>>(json)
                    .into_iter()
                    .map(|j| value(&connect["items"], j))
                    .collect(),
            ),
            "map" => Avro::Map(
                parse::<HashMap<String, &RawValue>>(json)
                    .into_iter()
                    .map(|(k, j)| (k, value(&connect["values"], j)))
                    .collect(),
            ),
            "int8" | "int16" | "int32" => {
                let v = parse::<i32>(json);
                match name {
                    Some("org.apache.kafka.connect.data.Date") => Avro::Date(v),
                    Some("org.apache.kafka.connect.data.Time") => Avro::TimeMillis(v),
                    _ => Avro::Int(v),
                }
            }
            "int64" => {
                let v = parse::<i64>(json);
                match name {
                    Some("org.apache.kafka.connect.data.Timestamp") => Avro::TimestampMillis(v),
                    _ => Avro::Long(v),
                }
            }
            // The JsonConverter's float32 text, read as the decoder reads it.
            "float32" | "float" => Avro::Float(float() as f32),
            "float64" | "double" => Avro::Double(float()),
            "boolean" => Avro::Boolean(parse(json)),
            "string" => Avro::String(parse(json)),
            // A Decimal's unscaled two's-complement bytes are the Avro decimal's bytes; one
            // whose scale exceeds its precision (which PostgreSQL allows) is not a valid Avro
            // decimal, so its schema is plain bytes (Avro ignores the logical type).
            "bytes" => {
                let param = |k: &str| {
                    connect["parameters"][k]
                        .as_str()
                        .and_then(|s| s.parse::<u64>().ok())
                };
                let bytes = if text.starts_with('"') {
                    BASE64.decode(parse::<String>(json)).expect("base64")
                } else {
                    // decimal.format=NUMERIC: the decimal's digits; its unscaled bytes.
                    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
                    assert!(!text.contains(['e', 'E']), "{text}");
                    let scale = param("scale").unwrap_or(0) as usize;
                    assert!(fraction.len() <= scale, "{text} at scale {scale}");
                    let digits = format!("{whole}{fraction:0<scale$}");
                    num_bigint::BigInt::parse_bytes(digits.as_bytes(), 10)
                        .expect("decimal digits")
                        .to_signed_bytes_be()
                };
                let valid_decimal = name == Some("org.apache.kafka.connect.data.Decimal")
                    && param("scale").unwrap_or(0)
                        <= param("connect.decimal.precision").unwrap_or(64);
                if valid_decimal {
                    Avro::Decimal(apache_avro::Decimal::from(bytes))
                } else {
                    Avro::Bytes(bytes)
                }
            }
            other => panic!("Connect type {other}"),
        }
    }
}
