//! Records captured from real connectors (`tests/data/captured/`), produced to tansu byte for
//! byte, through `floe run` into each catalog, read back by DuckDB and compared with the source
//! rows the corpus's manifest states: a stream of inserts, updates and deletes with double
//! columns, and a MySQL row of every type (floats, doubles, decimals written as JSON numbers,
//! temporal types, bits, blobs, geometry). Floating-point cells are compared bit for bit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::runtime::{Setup, Target, produce_with};

fn captured(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/captured")
        .join(path)
}

fn manifest_entry(file: &str) -> Value {
    let text = std::fs::read_to_string(captured("manifest.json")).unwrap();
    let manifest: Vec<Value> = serde_json::from_str(&text).unwrap();
    manifest
        .into_iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in the manifest"))
}

fn produce_captured(brokers: &str, topic: &str, file: &str) {
    produce_with("produce_captured.py", brokers, topic, &["--file", file]);
}

/// The source table after every record of the file: the manifest's rows by primary key.
fn source_rows(entry: &Value) -> (Vec<String>, Vec<Map<String, Value>>) {
    let key: Vec<String> = entry["primary_key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut columns: Vec<String> = Vec::new();
    let mut rows: BTreeMap<Vec<i64>, Map<String, Value>> = BTreeMap::new();
    let key_of = |row: &Map<String, Value>| -> Vec<i64> {
        key.iter()
            .map(|k| row[k].as_str().unwrap().parse().unwrap())
            .collect()
    };
    for change in entry["expected"].as_array().unwrap() {
        for image in ["before", "after"] {
            if let Some(row) = change[image].as_object() {
                for c in row.keys() {
                    if !columns.contains(c) {
                        columns.push(c.clone());
                    }
                }
            }
        }
        match change["op"].as_str().unwrap() {
            "d" => {
                rows.remove(&key_of(change["before"].as_object().unwrap()));
            }
            _ => {
                let after = change["after"].as_object().unwrap().clone();
                rows.insert(key_of(&after), after);
            }
        }
    }
    (columns, rows.into_values().collect())
}

/// The FLOAT32 columns of the file's records (the JsonConverter's `"float"` type), whose cells
/// are compared as 32-bit values.
fn float32_columns(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(captured(file)).unwrap();
    let first: Value = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    let fields = first["schema"]["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["field"] == "after"))
        .map(|after| after["fields"].as_array().unwrap().clone())
        .unwrap_or_default();
    fields
        .iter()
        .filter(|f| f["type"] == "float")
        .map(|f| f["field"].as_str().unwrap().to_string())
        .collect()
}

/// Whether DuckDB's cell (as `tests/support/iceberg_read.py` renders it) is the source value in
/// the manifest's canonical text.
fn same(cell: &Value, want: &Value, float32: bool) -> bool {
    match (cell, want) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(b), Value::String(w)) => w == if *b { "true" } else { "false" },
        (Value::Number(n), Value::String(w)) => {
            if let Some(i) = n.as_i64() {
                return w == &i.to_string();
            }
            let text = n.to_string();
            if float32 {
                let (a, b) = (text.parse::<f32>(), w.parse::<f32>());
                matches!((a, b), (Ok(a), Ok(b)) if a.to_bits() == b.to_bits())
            } else {
                let (a, b) = (text.parse::<f64>(), w.parse::<f64>());
                matches!((a, b), (Ok(a), Ok(b)) if a.to_bits() == b.to_bits())
            }
        }
        (Value::String(c), Value::String(w)) => {
            c == w
                || w.strip_prefix("hex:") == Some(c.as_str())
                || w.strip_suffix('Z')
                    .is_some_and(|w| c.strip_suffix("+00:00") == Some(w))
                || (c == "NaN" && w == "NaN")
        }
        (Value::Array(c), Value::Array(w)) => {
            c.len() == w.len() && c.iter().zip(w).all(|(c, w)| same(c, w, false))
        }
        (Value::Object(c), Value::Object(w)) => w.iter().all(|(k, w)| {
            let cell = c.get(k).unwrap_or(&Value::Null);
            same(cell, w, false)
        }),
        _ => false,
    }
}

/// Reads `table` until it equals the source rows (or 90 s pass), then returns what differs.
fn wait_for_source(
    s: &Setup,
    floe: &mut std::process::Child,
    table: &str,
    file: &str,
) -> Vec<String> {
    let entry = manifest_entry(file);
    let (columns, want) = source_rows(&entry);
    let float32 = float32_columns(file);
    let key = entry["primary_key"][0].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = floe.try_wait().unwrap() {
            panic!("floe exited early ({status}):\n{}", s.log("a"));
        }
        let got = s
            .target
            .try_rows(
                &s.root,
                s.target.namespace(),
                table,
                &columns.join(","),
                key,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let mut diffs = Vec::new();
        match got.as_ref().and_then(Value::as_array) {
            None => diffs.push(format!("{table} does not exist yet")),
            Some(rows) if rows.len() != want.len() => diffs.push(format!(
                "{table}: {} rows, the source has {}",
                rows.len(),
                want.len()
            )),
            Some(rows) => {
                for (row, source) in rows.iter().zip(&want) {
                    for (i, column) in columns.iter().enumerate() {
                        let (cell, wanted) = (&row[i], source.get(column).unwrap_or(&Value::Null));
                        if !same(cell, wanted, float32.contains(column)) {
                            diffs.push(format!(
                                "{table} {key}={}: {column} is {cell}, the source held {wanted}",
                                source[key]
                            ));
                        }
                    }
                }
            }
        }
        if diffs.is_empty() || Instant::now() > deadline {
            return diffs;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

crate::on_targets!(captured_streams_land_exactly);
fn captured_streams_land_exactly(target: Target) {
    const STREAM: &str = "mysql/flink_products_schema_include.jsonl";
    const ALL_TYPES: &str = "mysql/paimon_all_types_schema_include.jsonl";
    let s = Setup::build(
        "captured",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    // A second topic for the all-types row, routed to a table of its own; neither file has
    // record keys, so the primary keys come from the source tables' DDL.
    let second = format!("{}_types", s.topic);
    let ns = s.target.namespace().to_string();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("topics = [\"{}\"]", s.topic),
        &format!("topics = [\"{}\", \"{second}\"]", s.topic),
    );
    let config = format!(
        "{config}\n[[tables.route]]\ntopic = \"{second}\"\ntable = \"{ns}.all_types\"\n\n\
         [tables.overrides.\"{ns}.customers\"]\nprimary_key = [\"id\"]\n\n\
         [tables.overrides.\"{ns}.all_types\"]\nprimary_key = [\"_id\"]\n"
    );
    std::fs::write(&s.config, config).unwrap();
    produce_captured(&s.brokers, &s.topic, STREAM);
    produce_captured(&s.brokers, &second, ALL_TYPES);

    let mut floe = s.start("a");
    let stream = wait_for_source(&s, &mut floe, "customers", STREAM);
    let types = wait_for_source(&s, &mut floe, "all_types", ALL_TYPES);
    s.drain(&mut floe, "a");
    assert!(
        stream.is_empty() && types.is_empty(),
        "the tables differ from the source:\n{}\n{}\nlog:\n{}",
        stream.join("\n"),
        types.join("\n"),
        s.log("a")
    );
}
