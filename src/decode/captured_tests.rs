//! Decoder tests over records captured from real connectors (`tests/data/captured/`): every
//! record of every file decodes, and each value equals what the source row held, as the
//! corpus's `manifest.json` states it (derived from the origin's own statements where the
//! origin gives them). Floating-point values are compared bit for bit.

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
    let c = config::load_str(&toml, Path::new("captured.toml"), std::iter::empty())
        .expect("valid test config");
    Decoder::new(&c.decode, &c.tables)
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
