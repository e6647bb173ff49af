//! The decode stage: records leave the consume loop in batches and are decoded on a thread of
//! their own, so that JSON parsing (most of a record's cost) runs beside polling, buffering
//! and staging instead of between them. One decoder sees every record, in the order they were
//! received, and batches come back in the order they were sent: what the loop applies is
//! exactly what decoding them one by one on the loop would give.
//!
//! The loop bounds what is in flight ([`Decoding::busy`]) and takes in every batch it sent
//! before it acts on a rebalance, so no record outlives the assignment it was read under.

use std::sync::mpsc;

use futures::FutureExt as _;
use iceberg::spec::Schema as IcebergSchema;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use tokio::sync::{mpsc as async_mpsc, oneshot};

use super::RuntimeError;
use super::context::RebalanceForwarder;
use crate::config::TableName;
use crate::decode::{DecodeError, Decoded, Decoder, KafkaRecord};

/// Records per batch sent to the decode thread: large enough that handing a batch over costs
/// nothing next to decoding it, small enough that the loop sees results often.
pub(super) const BATCH: usize = 256;

/// Batches sent and not yet taken in; past this the loop stops polling until one comes back.
const MAX_IN_FLIGHT: usize = 4;

/// A record copied out of librdkafka's buffer, so the consumer can be polled again while the
/// record is decoded and handled (and no librdkafka handle outlives the consumer).
pub(super) struct OwnedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

pub(super) fn detach(m: BorrowedMessage<'_>) -> OwnedRecord {
    let record = KafkaRecord::from_message(&m);
    OwnedRecord {
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key.map(<[u8]>::to_vec),
        value: record.value.map(<[u8]>::to_vec),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

impl OwnedRecord {
    pub fn record(&self) -> KafkaRecord<'_> {
        KafkaRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect(),
        }
    }
}

/// One record and what it decoded to.
pub(super) struct Outcome {
    pub record: OwnedRecord,
    pub decoded: Result<Decoded, DecodeError>,
}

enum Job {
    Decode(Vec<OwnedRecord>),
    /// A table's schema changed (or became known): records sent after this see it.
    Register {
        table: TableName,
        schema: Box<IcebergSchema>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// The decode thread and the batches on their way through it.
pub(super) struct Decoding {
    jobs: mpsc::Sender<Job>,
    done: async_mpsc::UnboundedReceiver<Vec<Outcome>>,
    in_flight: usize,
}

impl Decoding {
    /// Starts a thread that owns `decoder`; it ends when this value is dropped.
    pub fn start(mut decoder: Decoder) -> Result<Decoding, RuntimeError> {
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (finished, done) = async_mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("floe-decode".into())
            .spawn(move || {
                for job in incoming {
                    match job {
                        Job::Decode(records) => {
                            let outcomes = records
                                .into_iter()
                                .map(|record| {
                                    let decoded = decoder.decode(&record.record());
                                    Outcome { record, decoded }
                                })
                                .collect();
                            if finished.send(outcomes).is_err() {
                                return;
                            }
                        }
                        Job::Register {
                            table,
                            schema,
                            done,
                        } => {
                            let _ = done.send(decoder.register_table(&table, &schema));
                        }
                    }
                }
            })
            .map_err(|e| RuntimeError::Setup(format!("starting the decode thread: {e}")))?;
        Ok(Decoding {
            jobs,
            done,
            in_flight: 0,
        })
    }

    /// Too many batches in flight to send another.
    pub fn busy(&self) -> bool {
        self.in_flight >= MAX_IN_FLIGHT
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    pub fn submit(&mut self, records: Vec<OwnedRecord>) -> Result<(), RuntimeError> {
        if records.is_empty() {
            return Ok(());
        }
        self.jobs
            .send(Job::Decode(records))
            .map_err(|_| stopped())?;
        self.in_flight += 1;
        Ok(())
    }

    /// The oldest batch in flight, decoded; pending while none is in flight.
    pub async fn next(&mut self) -> Result<Vec<Outcome>, RuntimeError> {
        if self.in_flight == 0 {
            return std::future::pending().await;
        }
        let outcomes = self.done.recv().await.ok_or_else(stopped)?;
        self.in_flight -= 1;
        Ok(outcomes)
    }

    /// Tells the decoder a table's current schema. Records sent before are decoded with what
    /// it knew before, as they were read before.
    pub async fn register(
        &mut self,
        table: &TableName,
        schema: &IcebergSchema,
    ) -> Result<(), RuntimeError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job::Register {
                table: table.clone(),
                schema: Box::new(schema.clone()),
                done,
            })
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(RuntimeError::Setup)
    }
}

fn stopped() -> RuntimeError {
    RuntimeError::Setup("the decode thread stopped".into())
}

/// The records librdkafka already holds after `first`, up to a batch, without waiting for
/// more. `keep` sees each record as it is taken and may leave it out; taking stops early when
/// `stop` says so after a poll (a rebalance came in it: what follows belongs to the next
/// assignment), and the record of that poll is returned apart.
pub(super) fn take_ready(
    consumer: &StreamConsumer<RebalanceForwarder>,
    first: OwnedRecord,
    mut keep: impl FnMut(&OwnedRecord) -> bool,
    mut stop: impl FnMut() -> bool,
) -> (Vec<OwnedRecord>, Ready) {
    let mut batch = Vec::with_capacity(BATCH);
    if keep(&first) {
        batch.push(first);
    }
    let mut taken = 1;
    while taken < BATCH {
        let Some(next) = consumer.recv().now_or_never() else {
            return (batch, Ready::Drained);
        };
        taken += 1;
        let next = next.map(detach);
        if stop() {
            return (batch, Ready::Rebalanced(next));
        }
        match next {
            Ok(record) => {
                if keep(&record) {
                    batch.push(record);
                }
            }
            Err(e) => return (batch, Ready::Failed(e)),
        }
    }
    (batch, Ready::Full)
}

/// Why [`take_ready`] stopped taking.
pub(super) enum Ready {
    /// Nothing more was waiting.
    Drained,
    /// The batch is full.
    Full,
    /// The last poll delivered rebalance events, then this.
    Rebalanced(KafkaResult<OwnedRecord>),
    /// The consumer reported an error.
    Failed(rdkafka::error::KafkaError),
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    fn record(offset: i64, id: i64) -> OwnedRecord {
        OwnedRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: None,
            key: Some(format!(r#"{{"id":{id}}}"#).into_bytes()),
            // Debezium's envelope as the JsonConverter writes it with schemas.enable=false.
            value: Some(
                format!(
                    r#"{{"before":null,"after":{{"id":{id},"name":"n{id}"}},"op":"c","ts_ms":1}}"#
                )
                .into_bytes(),
            ),
            headers: Vec::new(),
        }
    }

    /// The field ids of each change's columns, and its offset.
    fn ids(outcomes: Vec<Outcome>) -> Vec<(i64, Vec<i32>)> {
        outcomes
            .into_iter()
            .map(|o| match o.decoded {
                Ok(Decoded::Change(c)) => (
                    c.position.offset,
                    c.schema.columns().iter().map(|f| f.id).collect(),
                ),
                other => panic!("offset {}: {other:?}", o.record.offset),
            })
            .collect()
    }

    #[tokio::test]
    async fn batches_come_back_in_order_and_a_schema_applies_to_what_was_sent_after_it() {
        let config = crate::config::load_str(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[catalog]\ntype = \"local\"\n",
            Path::new("test.toml"),
            std::iter::empty(),
        )
        .unwrap();
        let mut decoding = Decoding::start(Decoder::new(&config.decode, &config.tables)).unwrap();
        let table: TableName = config.tables.route("t").unwrap();
        let mut offset = 0;
        let mut batch = || {
            let records = (0..BATCH as i64)
                .map(|i| record(offset + i, offset + i))
                .collect();
            offset += BATCH as i64;
            records
        };
        decoding.submit(batch()).unwrap();
        decoding.submit(batch()).unwrap();
        let existing = IcebergSchema::builder()
            .with_fields([
                NestedField::required(10, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(11, "name", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .with_identifier_field_ids([10])
            .build()
            .unwrap();
        decoding.register(&table, &existing).await.unwrap();
        decoding.submit(batch()).unwrap();
        assert!(decoding.in_flight());

        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(ids(decoding.next().await.unwrap()));
        }
        assert!(!decoding.in_flight());
        let offsets: Vec<i64> = seen.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..3 * BATCH as i64).collect::<Vec<_>>());
        // Read before the table was known: ids of the records' own; after: the table's.
        assert_eq!(seen[0].1, [1, 2]);
        assert_eq!(seen[2 * BATCH - 1].1, [1, 2]);
        assert_eq!(seen[2 * BATCH].1, [10, 11]);
        assert_eq!(seen[3 * BATCH - 1].1, [10, 11]);
    }
}
