//! Floe's integration tests, in one binary to keep link time down. Tests that need a fixture
//! (Kafka, S3 / S3 Tables, REST catalog) find it on 127.0.0.1 as started by
//! `scripts/test-env.sh up`, and fail (not skip) with a hint when it is not there.

mod backfill;
mod captured;
mod cli;
mod commit;
mod commit_format;
mod decode;
mod fixtures;
mod policy;
mod recovery;
mod runtime;
mod support;
