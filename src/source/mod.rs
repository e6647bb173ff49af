//! source: the Kafka side of the pipeline. Reads change records in a consumer group and
//! commits group offsets, but only for changes that an Iceberg commit already holds.
//!
//! It must never enable librdkafka's automatic offset commit or offset store: the table, not
//! Kafka, is the record of what was applied.

use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, StartFrom};

/// The librdkafka settings for Floe's consumer: the user's pass-through properties first, then
/// the settings Floe's delivery guarantee depends on (config validation refuses user values
/// for those, so nothing is silently replaced).
pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match kafka.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        );
    config
}

/// The settings shared by every Kafka client Floe opens (consumer, dead-letter producer,
/// admin): brokers, client id and the user's pass-through properties (security, timeouts).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in &kafka.properties.0 {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", kafka.brokers.join(","))
        .set("client.id", &kafka.client_id);
    config
}
