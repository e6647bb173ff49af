//! The one error a record can fail decoding with. Every error names where the record is
//! (topic, partition, offset) and why it could not be decoded, so that the error policy can
//! log it, stop on it or put it on the dead-letter topic without further context.
//!
//! This module must never hold record bytes: errors end up in logs and Kafka headers, and the
//! record itself travels next to them.

use std::fmt;

/// Which part of a Kafka record was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPart {
    Key,
    Value,
}

impl fmt::Display for RecordPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordPart::Key => "key",
            RecordPart::Value => "value",
        })
    }
}

/// A record that cannot be turned into a change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot decode record {topic}/{partition}@{offset}: {reason}")]
pub struct DecodeError {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: DecodeErrorKind,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The bytes are not JSON, or not the JSON object a Debezium record is.
    #[error("malformed JSON in the record {part}: {message}")]
    MalformedJson { part: RecordPart, message: String },
    /// `op` is not one of c, u, d, r, t.
    #[error("unknown op {0:?}; expected one of c, u, d, r, t")]
    UnknownOp(String),
    /// A field the envelope needs is absent or has the wrong JSON type.
    #[error("the record {part} has no usable `{field}`: {message}")]
    Envelope {
        part: RecordPart,
        field: &'static str,
        message: String,
    },
    /// The Connect schema cannot be compiled (unknown type, Iceberg cannot hold it).
    #[error("unsupported schema in the record {part}: {message}")]
    Schema { part: RecordPart, message: String },
    /// A value that does not fit the type its schema (or the table) declares.
    #[error("column `{column}`: {message}")]
    ValueMismatch { column: String, message: String },
    /// A keyed table's record without a usable primary key.
    #[error("table {table} is keyed by ({key}) but {message}")]
    MissingKey {
        table: String,
        key: String,
        message: String,
    },
    /// The topic's route names no valid table.
    #[error("no destination table: {0}")]
    Route(String),
    /// An Avro part that cannot be read: not in the Confluent wire format, a schema id the
    /// registry does not know, bytes that do not match the schema.
    #[error("cannot read the record {part} as Avro: {message}")]
    Avro { part: RecordPart, message: String },
    /// The Schema Registry could not be asked for the record's schema. Not the record's fault:
    /// it stops the run whatever `errors.policy` says, before the record is committed.
    #[error(
        "the schema registry could not give the record {part}'s schema: {message}; Floe stops \
         here without committing this record (a restart reads it again)"
    )]
    Registry { part: RecordPart, message: String },
}

impl DecodeErrorKind {
    /// A short, bounded label for metrics (`error_type`).
    pub fn label(&self) -> &'static str {
        match self {
            DecodeErrorKind::MalformedJson { .. } => "malformed_json",
            DecodeErrorKind::UnknownOp(_) => "unknown_op",
            DecodeErrorKind::Envelope { .. } => "envelope",
            DecodeErrorKind::Schema { .. } => "schema",
            DecodeErrorKind::ValueMismatch { .. } => "value_mismatch",
            DecodeErrorKind::MissingKey { .. } => "missing_key",
            DecodeErrorKind::Route(_) => "route",
            DecodeErrorKind::Avro { .. } => "avro",
            DecodeErrorKind::Registry { .. } => "schema_registry",
        }
    }

    /// Whether the error is not the record's own but the run's (the registry is down): the
    /// record may be fine, so it is never skipped or dead-lettered.
    pub fn stops_the_run(&self) -> bool {
        matches!(self, DecodeErrorKind::Registry { .. })
    }
}
