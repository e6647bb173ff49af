//! The dead-letter policy against the real Kafka fixture (tansu): a record that cannot be
//! decoded is produced to the dead-letter topic with its key, value and headers, plus the
//! floe.* headers naming the error and where the record came from.

use std::path::Path;
use std::time::Duration;

use floe::config::{self, Config};
use floe::decode::policy::{ERROR_HEADER, OFFSET_HEADER, PARTITION_HEADER, TOPIC_HEADER};
use floe::decode::{Decoder, ErrorPolicy, KafkaRecord, PolicyOutcome};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::support;

fn dlq_config(brokers: &str, topic: &str, dlq: &str) -> Config {
    config::load_str(
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
[catalog]
type = "local"
[errors]
policy = "dlq"
dlq_topic = "{dlq}"
"#,
            group = support::unique("dlq_group")
        ),
        Path::new("test.toml"),
        std::iter::empty(),
    )
    .expect("valid config")
}

#[tokio::test]
async fn undecodable_records_go_to_the_dead_letter_topic_with_their_origin() {
    let brokers = support::kafka_brokers();
    let topic = support::unique("dbz_src");
    let dlq = support::unique("dbz_dlq");
    let config = dlq_config(&brokers, &topic, &dlq);

    support::create_topic(&brokers, &dlq, 1).await;

    let key = br#"{"id":1004}"#;
    let value = br#"{"before":null,"after":{"id":1004},"op":"x","source":{}}"#;
    let record = KafkaRecord {
        topic: &topic,
        partition: 2,
        offset: 41,
        timestamp: None,
        key: Some(key),
        value: Some(value),
        headers: vec![("trace-id", Some(b"abc-123")), ("empty", None)],
    };
    let mut decoder = Decoder::new(&config.decode, &config.tables);
    let error = decoder
        .decode(&record)
        .expect_err("op x is not a Debezium op");
    let reason = error.to_string();
    assert_eq!(
        reason,
        format!(
            "cannot decode record {topic}/2@41: unknown op \"x\"; expected one of c, u, d, r, t"
        )
    );

    let policy = ErrorPolicy::new(&config.errors, &config.kafka).expect("dlq producer");
    let outcome = policy
        .handle(error, &record)
        .await
        .expect("dead letter produced");
    assert_eq!(
        outcome,
        PolicyOutcome::DeadLettered {
            partition: 0,
            offset: 0
        }
    );
    assert_eq!(policy.dead_lettered(), 1);

    let consumer: StreamConsumer = floe::source::consumer_config(&config.kafka)
        .create()
        .expect("consumer");
    {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&dlq, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
    }
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a dead letter within 60s")
        .expect("consume");
    assert_eq!(message.key(), Some(&key[..]));
    assert_eq!(message.payload(), Some(&value[..]));
    let headers: Vec<(String, Option<Vec<u8>>)> = message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect();
    let text = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        headers,
        [
            ("trace-id".to_string(), text("abc-123")),
            ("empty".to_string(), None),
            (ERROR_HEADER.to_string(), text(&reason)),
            (TOPIC_HEADER.to_string(), text(&topic)),
            (PARTITION_HEADER.to_string(), text("2")),
            (OFFSET_HEADER.to_string(), text("41")),
        ]
    );
}
