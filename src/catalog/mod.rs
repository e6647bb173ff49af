//! catalog: where tables live. Loads table metadata and commits new metadata through one of
//! the backends: `s3tables` (the S3 Tables control plane), `rest` (any Iceberg REST catalog)
//! and `local` (an embedded SQLite catalog over a directory).
//!
//! Inside a table's warehouse location it must never LIST or DELETE: S3 Tables forbids both.

pub mod aws;
pub mod sigv4;
