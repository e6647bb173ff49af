//! source: the Kafka side of the pipeline. Reads change records in a consumer group and
//! commits group offsets, but only for changes that an Iceberg commit already holds; the
//! dead-letter producer uses the same settings.
//!
//! It must never enable librdkafka's automatic offset commit or offset store: the table, not
//! Kafka, is the record of what was applied.

pub mod registry;

use rdkafka::ClientConfig;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::producer::FutureProducer;

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

/// What librdkafka may hold pre-fetched, in KiB, unless the user's properties say otherwise.
/// Its own default (64 MiB) measured as 200-300 MiB of resident memory with zstd batches on
/// many partitions, more than the rest of a backfill holds while reading; 16 MiB reads as fast.
pub const PREFETCH_KIB: u32 = 16 * 1024;

/// The consumer `floe run` and `floe backfill` read with: [`consumer_config`], plus
/// librdkafka's statistics (consumer lag per partition), a short fetch backoff and a smaller
/// prefetch queue ([`PREFETCH_KIB`]), unless the user's properties set them.
pub fn stream_consumer<C: ConsumerContext + 'static>(
    kafka: &KafkaConfig,
    context: C,
) -> Result<StreamConsumer<C>, rdkafka::error::KafkaError> {
    stream_config(kafka).create_with_context(context)
}

fn stream_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = consumer_config(kafka);
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", "15000");
    }
    if config.get("fetch.queue.backoff.ms").is_none() {
        // librdkafka waits this long to fetch again once its queue is full (1 s by default),
        // which idles a consumer that empties the queue faster than that.
        config.set("fetch.queue.backoff.ms", "10");
    }
    if config.get("queued.max.messages.kbytes").is_none() {
        config.set("queued.max.messages.kbytes", PREFETCH_KIB.to_string());
    }
    config
}

/// The producer `errors.policy = "dlq"` sends dead letters with: the same brokers and
/// settings as the consumer, every record acknowledged by all replicas within `timeout`.
pub fn dead_letter_producer(
    kafka: &KafkaConfig,
    timeout: std::time::Duration,
) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut config = client_config(kafka);
    if config.get("message.max.bytes").is_none() {
        // A dead letter is as large as the record it carries, which the broker accepted into
        // the source topic: librdkafka's 1 MB default would refuse it (the dead-letter topic's
        // own limit still applies).
        config.set("message.max.bytes", "1000000000");
    }
    config
        // Every dead letter is awaited one by one, so batching only adds latency.
        .set("linger.ms", "0")
        .set("acks", "all")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn kafka(extra: &str) -> KafkaConfig {
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n{extra}\n\
             [catalog]\ntype = \"local\"\npath = \"/tmp/floe-source-test\"\n"
        );
        crate::config::load_str(&text, Path::new("test.toml"), std::iter::empty())
            .unwrap()
            .kafka
    }

    #[test]
    fn the_prefetch_queue_is_bounded_unless_the_user_sets_it() {
        let config = stream_config(&kafka(""));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        let config = stream_config(&kafka(
            "[kafka.properties]\n\"queued.max.messages.kbytes\" = 65536",
        ));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("65536"));
    }
}
