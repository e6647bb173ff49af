//! Floe: a Debezium CDC sink that keeps Apache Iceberg tables equal to their source tables.
//!
//! The pipeline, one module per stage: [`source`] (Kafka) -> `decode` (Debezium -> typed
//! changes) -> `buffer` (per-table Arrow batches, deduplicated by key) -> `stage` (Parquet
//! delta files in the staging bucket) -> `commit` (one Iceberg snapshot per table and window)
//! -> back to [`source`] (offsets). [`catalog`] holds the table catalogs, [`config`] reads
//! `connector.toml`, [`retry`] is how every boundary waits between tries, and [`cli`] holds
//! what each subcommand does. This file only wires
//! modules together.

pub mod buffer;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod commit;
pub mod config;
pub mod decode;
pub mod policy;
pub mod retry;
pub mod runtime;
pub mod source;
pub mod stage;
pub mod telemetry;
