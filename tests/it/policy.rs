//! `errors.policy` through `floe run` against the real broker: records that a broken producer
//! or a damaged topic may hold (truncated JSON, a wrong type, an unknown op, a key that names
//! another row than its value, invalid UTF-8, a truncated 4 MB record), between good change
//! events. Each bad record ends where the policy says, the error names its topic, partition
//! and offset, and nothing else is lost.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::runtime::{Setup, Target, block_on, model, produce};

/// One bad record: what it is, its key and value bytes, and the offset it was written at.
struct Bad {
    what: &'static str,
    key: Vec<u8>,
    value: Vec<u8>,
    offset: i64,
}

/// The bad records, from the decoder's malformed corpus (its last, failing record per case)
/// and built here where JSON text cannot hold them.
fn bad_records() -> Vec<Bad> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/debezium/malformed/cases.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let cases: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A case's records are {"key", "value"} with both as raw text.
    let record = |name: &str, index: Option<usize>| {
        let case = cases.iter().find(|c| c["case"] == name).unwrap();
        let records = case["records"].as_array().unwrap();
        let r = &records[index.unwrap_or(records.len() - 1)];
        let text = |part: &str| r[part].as_str().unwrap().as_bytes().to_vec();
        (text("key"), text("value"))
    };
    let last = |name: &str| record(name, None);
    let mut bad = Vec::new();
    for (what, case) in [
        ("truncated JSON", "truncated_json"),
        ("a string for an integer", "string_for_int"),
        ("an unknown op", "unknown_op"),
        (
            "a key that does not match the row",
            "key_does_not_match_the_row",
        ),
    ] {
        let (key, value) = last(case);
        bad.push(Bad {
            what,
            key,
            value,
            offset: -1,
        });
    }
    // A good record of the corpus, made bad: a byte that is not UTF-8 inside a string, and a
    // 4 MB value cut off before its end (tansu 0.6, the test broker, stores larger records
    // but never returns one over about 5 MB to a fetch).
    let (key, good) = record("key_missing_for_keyed_table", Some(0));
    let at = good.windows(8).position(|w| w == b"\"email\":").unwrap() + 9;
    let mut invalid = good.clone();
    invalid.splice(at..at, [0xff, 0xfe]);
    bad.push(Bad {
        what: "invalid UTF-8",
        key: key.clone(),
        value: invalid,
        offset: -1,
    });
    let mut huge = good[..at].to_vec();
    huge.resize(at + 4_000_000, b'x');
    bad.push(Bad {
        what: "a truncated 4 MB record",
        key,
        value: huge,
        offset: -1,
    });
    bad
}

/// The topic gets: 100 rows' inserts, updates and deletes; the bad records; then an update of
/// every remaining row. Returns the bad records with their offsets.
fn produce_with_bad_records(s: &Setup) -> Vec<Bad> {
    produce(&s.brokers, &s.topic, 100, 1, None);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("message.max.bytes", "20000000")
        .create()
        .unwrap();
    let mut bad = bad_records();
    block_on(async {
        for b in &mut bad {
            let record = FutureRecord::to(&s.topic)
                .partition(0)
                .key(&b.key[..])
                .payload(&b.value[..]);
            let delivery = producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap_or_else(|(e, _)| panic!("producing {}: {e}", b.what));
            b.offset = delivery.offset;
        }
    });
    produce(&s.brokers, &s.topic, 100, 1, Some(1));
    bad
}

fn setup(name: &str, errors: &str) -> Setup {
    let s = Setup::build(
        name,
        "interval = \"300ms\"\ncommit_interval = \"600ms\"",
        "enabled = false",
        Target::Local,
    );
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{config}\n[errors]\n{errors}\n")).unwrap();
    s
}

/// Runs `floe` (logging as `tag`) until the table holds every good change, then stops it:
/// the table and the group's offsets end exact.
fn run_to_the_end(s: &Setup, tag: &str) {
    let mut floe = s.start(tag);
    s.wait_for(&model(100, Some(1)), &mut floe, tag);
    s.drain(&mut floe, tag);
    s.assert_rows(&model(100, Some(1)));
    s.assert_offsets_at_end(1);
}

#[test]
fn skip_policy_skips_each_bad_record_with_its_origin_and_loses_nothing_else() {
    let s = setup("policy_skip", "policy = \"skip\"");
    let bad = produce_with_bad_records(&s);
    run_to_the_end(&s, "a");
    let log = s.log("a");
    for b in &bad {
        let line = log
            .lines()
            .find(|l| {
                l.contains("skipping a record that cannot be decoded")
                    && l.contains(&format!("\"offset\":{}", b.offset))
            })
            .unwrap_or_else(|| panic!("{} (offset {}) was not reported:\n{log}", b.what, b.offset));
        assert!(
            line.contains(&format!("\"topic\":\"{}\"", s.topic)),
            "{line}"
        );
        assert!(line.contains("\"partition\":0"), "{line}");
    }
    assert_eq!(
        log.matches("skipping a record that cannot be decoded")
            .count(),
        bad.len(),
        "{log}"
    );
}

#[test]
fn dlq_policy_sends_each_bad_record_with_its_origin_and_loses_nothing_else() {
    let dlq = crate::support::unique("policy_dlq_letters");
    let s = setup(
        "policy_dlq",
        &format!("policy = \"dlq\"\ndlq_topic = \"{dlq}\""),
    );
    block_on(crate::support::create_topic(&s.brokers, &dlq, 1));
    let bad = produce_with_bad_records(&s);
    run_to_the_end(&s, "a");

    // Every dead letter: the record's own key and value, and where it came from.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", crate::support::unique("dlq_reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&dlq, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (_, end) = consumer
        .fetch_watermarks(&dlq, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(end, bad.len() as i64, "one dead letter per bad record");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut letters = Vec::new();
    while letters.len() < bad.len() && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.unwrap();
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == name))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            letters.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                header(floe::decode::policy::TOPIC_HEADER),
                header(floe::decode::policy::PARTITION_HEADER),
                header(floe::decode::policy::OFFSET_HEADER),
                header(floe::decode::policy::ERROR_HEADER),
            ));
        }
    }
    assert_eq!(letters.len(), bad.len());
    for (b, (key, value, topic, partition, offset, error)) in bad.iter().zip(letters) {
        assert_eq!(key.as_deref(), Some(&b.key[..]), "{}", b.what);
        assert!(
            value.as_deref() == Some(&b.value[..]),
            "{}: value differs",
            b.what
        );
        assert_eq!(topic.as_deref(), Some(s.topic.as_str()), "{}", b.what);
        assert_eq!(partition.as_deref(), Some("0"), "{}", b.what);
        assert_eq!(offset, Some(b.offset.to_string()), "{}", b.what);
        let error = error.unwrap_or_default();
        assert!(
            error.contains(&format!("{}/0@{}", s.topic, b.offset)),
            "{}: {error}",
            b.what
        );
    }
}

#[test]
fn fail_policy_stops_at_the_first_bad_record_having_committed_all_before_it() {
    let s = setup("policy_fail", "policy = \"fail\"");
    let bad = produce_with_bad_records(&s);
    let first = bad[0].offset;
    let mut floe = s.start("a");
    let status = s.wait_exit(&mut floe, "a", Duration::from_secs(90));
    let log = s.log("a");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot decode record {}/0@{first}", s.topic)),
        "the error names the record:\n{log}"
    );
    // Everything before the bad record is in the table, and the group stops right at it.
    s.assert_rows(&model(100, None));
    assert_eq!(s.kafka_offsets(1)[0].0, first, "{log}");
    // Run again: it stops at the same record, and changes nothing.
    let mut again = s.start("b");
    assert_eq!(
        s.wait_exit(&mut again, "b", Duration::from_secs(90)).code(),
        Some(1)
    );
    assert!(s.log("b").contains(&format!("{}/0@{first}", s.topic)));
    s.assert_rows(&model(100, None));
    // With the bad records skipped, the rest arrives.
    s.edit_config("policy = \"fail\"", "policy = \"skip\"");
    run_to_the_end(&s, "c");
}
