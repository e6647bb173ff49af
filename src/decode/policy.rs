//! What happens to a record that cannot be decoded (`errors.policy`): `fail` hands the error
//! back so the runtime stops before the record's offset is committed, `skip` logs and counts
//! it, `dlq` produces the original record to the dead-letter topic with headers naming the
//! error and its origin, and waits for the broker to acknowledge it.
//!
//! It must never drop a record silently: a dead letter that cannot be produced is an error,
//! so the record's offset is not committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{DecodeError, KafkaRecord};
use crate::config::{ErrorsConfig, KafkaConfig};
use crate::source::dead_letter_producer;

/// The dead-letter headers Floe adds to the record's own.
pub const ERROR_HEADER: &str = "floe.error";
pub const TOPIC_HEADER: &str = "floe.topic";
pub const PARTITION_HEADER: &str = "floe.partition";
pub const OFFSET_HEADER: &str = "floe.offset";

/// How long to wait for the dead-letter topic to acknowledge a record.
const DLQ_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The configured error policy, with its producer for `dlq`.
pub struct ErrorPolicy {
    action: Action,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
}

enum Action {
    Fail,
    Skip,
    Dlq {
        topic: String,
        producer: FutureProducer,
    },
}

impl std::fmt::Debug for ErrorPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match &self.action {
            Action::Fail => "fail".to_string(),
            Action::Skip => "skip".to_string(),
            Action::Dlq { topic, .. } => format!("dlq to {topic}"),
        };
        f.debug_struct("ErrorPolicy")
            .field("action", &action)
            .field("skipped", &self.skipped())
            .field("dead_lettered", &self.dead_lettered())
            .finish()
    }
}

/// What the policy did with a record; either way its offset may be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    Skipped,
    DeadLettered { partition: i32, offset: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `errors.policy = "fail"`, or an error that is not the record's (the schema registry is
    /// down): stop before this record.
    #[error(transparent)]
    Fail(DecodeError),
    /// The dead letter could not be produced; the record must not be committed.
    #[error("{error}; producing it to the dead-letter topic {topic} failed: {source}")]
    DeadLetter {
        error: DecodeError,
        topic: String,
        #[source]
        source: KafkaError,
    },
}

impl ErrorPolicy {
    /// Builds the policy; for `dlq` this creates the producer (from the same Kafka settings as
    /// the consumer), which fails only on invalid client settings.
    pub fn new(errors: &ErrorsConfig, kafka: &KafkaConfig) -> Result<ErrorPolicy, KafkaError> {
        let action = match errors {
            ErrorsConfig::Fail => Action::Fail,
            ErrorsConfig::Skip => Action::Skip,
            ErrorsConfig::Dlq { topic } => {
                let producer = dead_letter_producer(kafka, DLQ_DELIVERY_TIMEOUT)?;
                Action::Dlq {
                    topic: topic.clone(),
                    producer,
                }
            }
        };
        Ok(ErrorPolicy {
            action,
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        })
    }

    /// Applies the policy to one record that failed decoding.
    pub async fn handle(
        &self,
        error: DecodeError,
        record: &KafkaRecord<'_>,
    ) -> Result<PolicyOutcome, PolicyError> {
        if error.reason.stops_the_run() {
            return Err(PolicyError::Fail(error));
        }
        match &self.action {
            Action::Fail => Err(PolicyError::Fail(error)),
            Action::Skip => {
                tracing::warn!(
                    topic = %error.topic,
                    partition = error.partition,
                    offset = error.offset,
                    error_type = error.reason.label(),
                    reason = %error.reason,
                    "skipping a record that cannot be decoded (errors.policy = skip)"
                );
                self.skipped.fetch_add(1, Ordering::Relaxed);
                Ok(PolicyOutcome::Skipped)
            }
            Action::Dlq { topic, producer } => {
                let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 4);
                for (key, value) in &record.headers {
                    headers = headers.insert(Header { key, value: *value });
                }
                let reason = error.to_string();
                let partition = record.partition.to_string();
                let offset = record.offset.to_string();
                for (key, value) in [
                    (ERROR_HEADER, reason.as_str()),
                    (TOPIC_HEADER, record.topic),
                    (PARTITION_HEADER, partition.as_str()),
                    (OFFSET_HEADER, offset.as_str()),
                ] {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
                let mut dead = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
                if let Some(key) = record.key {
                    dead = dead.key(key);
                }
                if let Some(value) = record.value {
                    dead = dead.payload(value);
                }
                match producer.send(dead, DLQ_DELIVERY_TIMEOUT).await {
                    Ok(delivery) => {
                        tracing::warn!(
                            topic = %error.topic,
                            partition = error.partition,
                            offset = error.offset,
                            error_type = error.reason.label(),
                            reason = %error.reason,
                            dlq_topic = %topic,
                            "sent a record that cannot be decoded to the dead-letter topic"
                        );
                        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        Ok(PolicyOutcome::DeadLettered {
                            partition: delivery.partition,
                            offset: delivery.offset,
                        })
                    }
                    Err((source, _)) => Err(PolicyError::DeadLetter {
                        error,
                        topic: topic.clone(),
                        source,
                    }),
                }
            }
        }
    }

    /// Records skipped so far (for the `skip` policy's metric).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Records produced to the dead-letter topic so far.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}
