//! Decoder throughput: a realistic 20-column Debezium PostgreSQL `orders` event (from
//! `tests/data/debezium/postgres/bench_orders.jsonl`), with the Connect schema envelope (~5 KB,
//! most of it schema) and without it, decoded into changes and built into one Arrow batch per
//! 1000 events, and the same event as Confluent's AvroConverter writes it
//! (`benches/data/avro_orders.json`, made by `avro_orders.py` beside it; its schemas served
//! from memory, as a Schema Registry's would be after the first fetch). Reports events/s and
//! MB/s of record values. Run: `cargo bench --bench decode`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floe::config;
use floe::decode::{Change, Decoded, Decoder, FetchError, KafkaRecord, SchemaSource, to_batches};
use serde::Deserialize;
use serde_json::value::RawValue;

const EVENTS: usize = 1000;

struct Sample {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// The Avro schemas of the Avro sample: key id 1, value id 2.
struct Schemas(String, String);

impl SchemaSource for Schemas {
    fn fetch(&self, id: u32) -> Result<String, FetchError> {
        match id {
            1 => Ok(self.0.clone()),
            2 => Ok(self.1.clone()),
            _ => Err(FetchError::Unusable(format!("no schema {id}"))),
        }
    }
}

/// The Avro sample, framed in the Confluent wire format, and its schemas.
fn avro_sample() -> (Sample, Schemas) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data/avro_orders.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("avro sample")).unwrap();
    let text = |k: &str| doc[k].as_str().expect("sample field").to_string();
    let framed = |k: &str, id: u32| {
        let hex = text(k);
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")),
        );
        out
    };
    let sample = Sample {
        key: framed("key", 1),
        value: framed("value", 2),
    };
    (sample, Schemas(text("key_schema"), text("value_schema")))
}

/// Line 1 is the event with the schema envelope, line 2 the same event without.
fn samples() -> (Sample, Sample) {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        key: &'a RawValue,
        #[serde(borrow)]
        value: &'a RawValue,
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/debezium/postgres/bench_orders.jsonl");
    let text = std::fs::read_to_string(&path).expect("benchmark corpus");
    let mut lines = text.lines().map(|l| {
        let line: Line = serde_json::from_str(l).expect("corpus line");
        Sample {
            key: line.key.get().as_bytes().to_vec(),
            value: line.value.get().as_bytes().to_vec(),
        }
    });
    let with = lines.next().expect("event with schema");
    let without = lines.next().expect("event without schema");
    (with, without)
}

fn decoder(avro: Option<Schemas>) -> Decoder {
    let decode = match avro {
        Some(_) => {
            "[decode]\nconverter = \"avro\"\n[decode.schema_registry]\nurl = \"http://127.0.0.1:1\"\n"
        }
        None => "",
    };
    let config = config::load_str(
        &format!("[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"shop.public.orders\"]\n[catalog]\ntype = \"local\"\n{decode}"),
        Path::new("bench.toml"),
        std::iter::empty(),
    )
    .expect("config");
    let schemas = avro.map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn SchemaSource>);
    Decoder::with_schemas(&config.decode, &config.tables, schemas)
}

fn decode(decoder: &mut Decoder, sample: &Sample, changes: &mut Vec<Change>) {
    changes.clear();
    for offset in 0..EVENTS as i64 {
        let record = KafkaRecord {
            topic: "shop.public.orders",
            partition: 0,
            offset,
            timestamp: None,
            key: Some(&sample.key),
            value: Some(&sample.value),
            headers: Vec::new(),
        };
        match decoder.decode(&record) {
            Ok(Decoded::Change(c)) => changes.push(c),
            other => panic!("the benchmark event must decode: {other:?}"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let (with, without) = samples();
    let (avro, schemas) = avro_sample();
    eprintln!(
        "event value sizes: {} bytes with schema, {} bytes without, {} bytes in Avro",
        with.value.len(),
        without.value.len(),
        avro.value.len()
    );
    let mut schemas = Some(schemas);
    for (name, sample) in [
        ("with_schema", &with),
        ("without_schema", &without),
        ("avro", &avro),
    ] {
        let mut decoder = decoder(if name == "avro" { schemas.take() } else { None });
        let mut changes = Vec::with_capacity(EVENTS);
        for (unit, throughput) in [
            ("events", Throughput::Elements(EVENTS as u64)),
            (
                "bytes",
                Throughput::Bytes((EVENTS * sample.value.len()) as u64),
            ),
        ] {
            let mut group = c.benchmark_group(format!("decode_{name}"));
            group.throughput(throughput);
            group.measurement_time(Duration::from_secs(4));
            group.bench_function(format!("decode_{unit}"), |b| {
                b.iter(|| {
                    decode(&mut decoder, sample, &mut changes);
                    black_box(changes.len())
                })
            });
            group.bench_function(format!("decode_and_arrow_{unit}"), |b| {
                b.iter(|| {
                    decode(&mut decoder, sample, &mut changes);
                    black_box(to_batches(&changes).expect("batch"))
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
