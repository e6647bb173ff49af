//! decode: Debezium change records from Kafka into typed changes, and changes into Arrow
//! batches with Iceberg field ids.
//!
//! [`Decoder::decode`] turns one Kafka record into a [`Change`]: destination table, [`Op`],
//! primary key, row images as typed [`Datum`]s, [`SourceInfo`] and the [`KafkaPosition`]. It
//! reads Debezium's envelope (`before`/`after`/`op`/`source`) with or without the Connect
//! `schema`/`payload` wrapper ([`envelope`]), or rows flattened by ExtractNewRecordState
//! ([`flattened`]), written by the JsonConverter or, through a Schema Registry, by the
//! AvroConverter ([`avro`]); without a schema, types come from the values or from the existing table
//! ([`infer`]). [`arrow::to_batches`] makes Arrow batches of changes; [`ErrorPolicy`] is what
//! happens to a record that cannot be decoded.
//!
//! This module never talks to a catalog or buffers rows across records, and never resolves an
//! unchanged (TOASTed) column: that needs the previous image or the table, which the runtime
//! has. It must never parse the Connect `schema` of every message into a tree: schemas are
//! compiled once and found again by their bytes.

pub mod arrow;
mod avro;
mod envelope;
mod error;
mod flattened;
mod infer;
mod logical;
pub mod policy;
mod schema;

#[cfg(test)]
mod avro_tests;
#[cfg(test)]
mod captured_tests;
#[cfg(test)]
mod exact_tests;
#[cfg(test)]
mod settings_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use crate::config::TableName;

pub use self::arrow::{BatchError, BatchPart, ChangeBatch, to_batches};
pub use avro::{FetchError, SchemaSource};
pub use envelope::Decoder;
pub use error::{DecodeError, DecodeErrorKind, RecordPart};
pub use logical::{Datum, UNAVAILABLE_VALUE};
pub use policy::{ErrorPolicy, PolicyError, PolicyOutcome};
pub use schema::{Codec, Field, RowSchema, TableSchema};

/// One Kafka record as the decoder and the error policy see it. Borrowed from the consumer's
/// message; nothing is copied until a change is built.
#[derive(Debug, Clone)]
pub struct KafkaRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker has one.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> KafkaRecord<'a> {
    pub fn from_message<M: rdkafka::Message>(message: &'a M) -> Self {
        use rdkafka::message::Headers as _;
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        KafkaRecord {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
            headers,
        }
    }

    pub(crate) fn error(&self, reason: DecodeErrorKind) -> DecodeError {
        DecodeError {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            reason,
        }
    }
}

/// Where a change came from in Kafka: what the table's snapshot records as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
}

/// Debezium's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`, or a tombstone: a row was deleted.
    Delete,
    /// `r`: a row read by a snapshot.
    Read,
    /// `t`: the table was truncated.
    Truncate,
}

impl Op {
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Debezium's `source` block: where and when the change happened in the source database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub connector: Option<String>,
    /// The connector's logical server name (`topic.prefix`).
    pub name: Option<String>,
    /// When the change was committed in the source database.
    pub ts_ms: Option<i64>,
    pub db: Option<String>,
    pub schema: Option<String>,
    pub table: Option<String>,
    /// `true`, `first`, `last`, `incremental`... for snapshot reads; `false` or absent otherwise.
    pub snapshot: Option<String>,
    pub position: Option<SourcePosition>,
}

/// The change's position in the source database's log, where the connector reports one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePosition {
    /// PostgreSQL: the WAL log sequence number and transaction id.
    Lsn { lsn: i64, tx_id: Option<i64> },
    /// MySQL: binlog file, position, row within the event, GTID.
    Binlog {
        file: String,
        pos: i64,
        row: Option<i64>,
        gtid: Option<String>,
    },
    /// SQL Server: commit and change LSNs (as Debezium writes them, "00000027:00000758:0003").
    SqlServer {
        commit_lsn: Option<String>,
        change_lsn: Option<String>,
        event_serial_no: Option<i64>,
    },
}

/// One decoded change to one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: TableName,
    pub op: Op,
    /// The columns the row images are laid out by. Shared by every change with the same
    /// schema; a different `Arc` that compares equal is the same schema.
    pub schema: Arc<TableSchema>,
    /// The primary key values, in the order of `schema.primary_key()`; never null. Empty for
    /// an append-only table and for a truncate.
    pub key: Vec<Datum>,
    /// The row before the change (updates and deletes, when the source sends it), one datum
    /// per column of `schema`.
    pub before: Option<Vec<Datum>>,
    /// The row after the change (creates, updates, snapshot reads).
    pub after: Option<Vec<Datum>>,
    pub source: SourceInfo,
    /// When Debezium processed the change (the envelope's `ts_ms`).
    pub event_ts_ms: Option<i64>,
    pub position: KafkaPosition,
}

impl Change {
    /// About the bytes this change holds on the heap: its key, its row images and every string
    /// in them and in its source block. Each allocation is counted at its capacity plus
    /// [`ALLOCATION_OVERHEAD`]. The change itself is not counted (it lives where it is put).
    pub fn heap_bytes(&self) -> usize {
        let source = &self.source;
        let strings = [
            &source.connector,
            &source.name,
            &source.db,
            &source.schema,
            &source.table,
            &source.snapshot,
        ];
        let position = match &source.position {
            Some(SourcePosition::Binlog { file, gtid, .. }) => {
                string_bytes(file) + gtid.as_ref().map_or(0, string_bytes)
            }
            Some(SourcePosition::SqlServer {
                commit_lsn,
                change_lsn,
                ..
            }) => [commit_lsn, change_lsn]
                .into_iter()
                .flatten()
                .map(string_bytes)
                .sum(),
            Some(SourcePosition::Lsn { .. }) | None => 0,
        };
        string_bytes(&self.table.namespace)
            + string_bytes(&self.table.name)
            + datums_bytes(&self.key)
            + self.before.as_ref().map_or(0, datums_bytes)
            + self.after.as_ref().map_or(0, datums_bytes)
            + strings
                .into_iter()
                .flatten()
                .map(string_bytes)
                .sum::<usize>()
            + position
    }
}

/// What an allocation takes beyond the bytes asked for, about: the allocator's rounding up to
/// its size classes, for the small allocations a change is made of.
pub const ALLOCATION_OVERHEAD: usize = 16;

fn allocation(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        capacity + ALLOCATION_OVERHEAD
    }
}

fn string_bytes(s: &String) -> usize {
    allocation(s.capacity())
}

fn datums_bytes(row: &Vec<Datum>) -> usize {
    allocation(row.capacity() * std::mem::size_of::<Datum>())
        + row.iter().map(Datum::heap_bytes).sum::<usize>()
}

impl Datum {
    /// The bytes this value holds on the heap (see [`Change::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Datum::String(s) => string_bytes(s),
            Datum::Binary(b) => allocation(b.capacity()),
            Datum::List(values) | Datum::Struct(values) => datums_bytes(values),
            Datum::Map(entries) => {
                allocation(entries.capacity() * std::mem::size_of::<(Datum, Datum)>())
                    + entries
                        .iter()
                        .map(|(k, v)| k.heap_bytes() + v.heap_bytes())
                        .sum::<usize>()
            }
            _ => 0,
        }
    }
}

/// What one record decodes to.
// Boxing the change would cost an allocation per record on the hot path; the value is
// matched and moved on right away, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Change(Change),
    /// The tombstone Debezium sends right after a delete of the same key in the same
    /// partition: the delete was already decoded, so this one changes nothing. The offset
    /// still counts as consumed.
    TombstoneAfterDelete(KafkaPosition),
}
