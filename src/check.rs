//! `floe check`: try, one by one, everything Floe needs, and report each as ok, missing or
//! failed. It never changes anything unless asked to (`--create`).
//!
//! What it checks today: the configuration, the Kafka brokers and topics, and for the local
//! catalog its directories. The S3 Tables / REST catalog and staging-bucket checks come with
//! those backends; until then a configuration using them is reported as not fully checked.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::{CatalogConfig, Config, StagingConfig, TopicSelection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Missing,
    Failed,
    NotChecked,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Failed => "failed",
            Outcome::NotChecked => "not checked",
        })
    }
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub what: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl CheckResult {
    fn new(what: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        CheckResult {
            what: what.into(),
            outcome,
            detail: detail.into(),
        }
    }
}

/// Runs every check this version knows; the caller prints them.
pub fn run_checks(config: &Config, timeout: Duration) -> Vec<CheckResult> {
    let mut results = kafka_checks(config, timeout);
    match &config.catalog {
        CatalogConfig::Local(local) => results.push(writable_dir("catalog directory", &local.path)),
        other => results.push(CheckResult::new(
            format!("catalog ({})", other.kind()),
            Outcome::NotChecked,
            "catalog permission checks are not implemented yet",
        )),
    }
    match &config.staging {
        StagingConfig::Local { directory } => {
            results.push(writable_dir("staging directory", directory))
        }
        StagingConfig::S3(s3) => results.push(CheckResult::new(
            format!("staging bucket s3://{}", s3.bucket),
            Outcome::NotChecked,
            "staging bucket checks are not implemented yet",
        )),
    }
    results
}

fn kafka_checks(config: &Config, timeout: Duration) -> Vec<CheckResult> {
    let brokers = config.kafka.brokers.join(",");
    let consumer: BaseConsumer = match crate::source::client_config(&config.kafka).create() {
        Ok(c) => c,
        Err(e) => {
            return vec![CheckResult::new(
                "kafka client",
                Outcome::Failed,
                format!("cannot create a client from [kafka]: {e}"),
            )];
        }
    };
    let metadata = match consumer.fetch_metadata(None, timeout) {
        Ok(m) => m,
        Err(e) => {
            return vec![CheckResult::new(
                format!("kafka brokers {brokers}"),
                Outcome::Failed,
                format!("no answer within {}s: {e}", timeout.as_secs()),
            )];
        }
    };
    let mut results = vec![CheckResult::new(
        format!("kafka brokers {brokers}"),
        Outcome::Ok,
        format!("{} broker(s) in the cluster", metadata.brokers().len()),
    )];
    let partitions_of = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
    };
    match &config.kafka.topics {
        TopicSelection::List(topics) => {
            for topic in topics {
                results.push(match partitions_of(topic) {
                    Some(n) => CheckResult::new(
                        format!("kafka topic {topic}"),
                        Outcome::Ok,
                        format!("{n} partition(s)"),
                    ),
                    None => CheckResult::new(
                        format!("kafka topic {topic}"),
                        Outcome::Missing,
                        "the topic does not exist or this principal cannot describe it",
                    ),
                });
            }
        }
        TopicSelection::Regex(re) => {
            let matching: Vec<&str> = metadata
                .topics()
                .iter()
                .map(|t| t.name())
                .filter(|n| re.is_match(n))
                .collect();
            results.push(CheckResult::new(
                format!("kafka topics matching {}", re.as_str()),
                if matching.is_empty() {
                    Outcome::Missing
                } else {
                    Outcome::Ok
                },
                if matching.is_empty() {
                    "no topic matches".to_string()
                } else {
                    matching.join(", ")
                },
            ));
        }
    }
    results
}

fn writable_dir(what: &str, dir: &Path) -> CheckResult {
    let what = format!("{what} {}", dir.display());
    let probe = dir.join(".floe-check");
    let outcome = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"floe check"))
        .and_then(|()| std::fs::remove_file(&probe));
    match outcome {
        Ok(()) => CheckResult::new(what, Outcome::Ok, "writable"),
        Err(e) => CheckResult::new(what, Outcome::Failed, format!("not writable: {e}")),
    }
}
