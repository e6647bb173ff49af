//! Decoder throughput: a realistic 20-column Debezium PostgreSQL `orders` event (from
//! `tests/data/debezium/postgres/bench_orders.jsonl`), with the Connect schema envelope (~5 KB,
//! most of it schema) and without it, decoded into changes and built into one Arrow batch per
//! 1000 events. Reports events/s and MB/s of record values. Run: `cargo bench --bench decode`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floe::config;
use floe::decode::{Change, Decoded, Decoder, KafkaRecord, to_batches};
use serde::Deserialize;
use serde_json::value::RawValue;

const EVENTS: usize = 1000;

struct Sample {
    key: String,
    value: String,
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
            key: line.key.get().to_string(),
            value: line.value.get().to_string(),
        }
    });
    let with = lines.next().expect("event with schema");
    let without = lines.next().expect("event without schema");
    (with, without)
}

fn decoder() -> Decoder {
    let config = config::load_str(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"shop.public.orders\"]\n[catalog]\ntype = \"local\"\n",
        Path::new("bench.toml"),
        std::iter::empty(),
    )
    .expect("config");
    Decoder::new(&config.decode, &config.tables)
}

fn decode(decoder: &mut Decoder, sample: &Sample, changes: &mut Vec<Change>) {
    changes.clear();
    for offset in 0..EVENTS as i64 {
        let record = KafkaRecord {
            topic: "shop.public.orders",
            partition: 0,
            offset,
            timestamp: None,
            key: Some(sample.key.as_bytes()),
            value: Some(sample.value.as_bytes()),
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
    eprintln!(
        "event value sizes: {} bytes with schema, {} bytes without",
        with.value.len(),
        without.value.len()
    );
    for (name, sample) in [("with_schema", &with), ("without_schema", &without)] {
        let mut decoder = decoder();
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
