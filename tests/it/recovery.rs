//! Recovery: where `floe run` starts reading a partition (at the offset its table holds,
//! whatever the consumer group's committed offset says), and S3 failures while staging.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::runtime::{
    Setup, Target, await_eviction, block_on, model, produce, sigkill, signal, wait_exit,
};
use crate::support;

/// Commits the group's offsets at the end of each partition, as a tool resetting the group to
/// `latest` would, or as a restart after the group's offsets expired with `start_from = latest`.
fn move_group_to_end(s: &Setup, partitions: i32) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&s.topic, p, Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset(&s.topic, p, Offset::Offset(high))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

#[test]
fn a_group_offset_past_what_the_table_holds_does_not_skip_changes() {
    let s = Setup::build(
        "resume",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        Target::Local,
    );
    let mut first = s.stream_sample(200, 2);
    s.drain(&mut first, "a");

    // Changes the table does not hold yet, while the group's offsets claim they were read.
    produce(&s.brokers, &s.topic, 200, 2, Some(2));
    move_group_to_end(&s, 2);
    for (committed, end) in s.kafka_offsets(2) {
        assert_eq!(committed, end, "the group was moved to the end");
    }

    let mut second = s.start("b");
    s.wait_for(&model(200, Some(2)), &mut second, "b");
    s.drain(&mut second, "b");
    assert_eq!(s.rows().unwrap(), model(200, Some(2)));
    let log = s.log("b");
    assert_eq!(
        log.matches("starting at the table's offset").count(),
        2,
        "each partition starts at the table's offset:\n{log}"
    );
    s.assert_offsets_at_end(2);
}

/// With `start_from = "latest"`, a member that dies before its table's first commit must leave
/// the group holding where it started reading: the next member reads on from there, so every
/// change that came after the first member started is applied, and none from before.
#[test]
fn with_start_from_latest_a_member_killed_before_its_first_commit_loses_nothing() {
    let s = Setup::build(
        "latest",
        "interval = \"300ms\"\ncommit_interval = \"120s\"",
        "enabled = false",
        Target::Local,
    );
    s.set_kafka("start_from = \"latest\"");
    // What the topic held before Floe first started: `latest` skips it.
    produce(&s.brokers, &s.topic, 300, 3, None);
    let mut first = s.start("first");
    s.wait_for_log(&mut first, "first", "partitions assigned", 1);
    // Time to settle each partition's start position.
    std::thread::sleep(Duration::from_secs(2));
    // An update of every row: read by the first member, never committed (the commit
    // interval is far away).
    produce(&s.brokers, &s.topic, 300, 3, Some(1));
    std::thread::sleep(Duration::from_secs(2));
    sigkill(&mut first, &s.log("first"));
    assert!(
        !s.log("first").contains("\"committed\""),
        "the first member must die before committing:\n{}",
        s.log("first")
    );
    // Waits out the session so the dead member leaves the group.
    await_eviction();
    s.edit_config("commit_interval = \"120s\"", "commit_interval = \"1s\"");
    let mut second = s.start("second");
    s.wait_for(&model(300, Some(1)), &mut second, "second");
    s.drain(&mut second, "second");
    assert_eq!(s.rows().unwrap(), model(300, Some(1)));
    s.assert_offsets_at_end(3);
}

/// A commit round that outlasts `max.poll.interval.ms` (here a test pause standing for a slow
/// catalog) costs the member its partitions: the group may already have given them to another
/// member, which re-reads the work from the table's offsets. The member must not commit that
/// work as well: it drops it, rejoins, reads again and only then commits.
#[test]
fn a_member_that_lost_its_partitions_during_a_slow_commit_does_not_commit_for_them() {
    let s = Setup::build(
        "lost",
        "interval = \"300ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        Target::Local,
    );
    produce(&s.brokers, &s.topic, 300, 3, None);
    // 12 s, past the 8 s `max.poll.interval.ms` the tests configure.
    let mut floe = s.spawn_with(
        &["run"],
        "a",
        &[("FLOE_TEST_PAUSE_AT", "table-commit:12000")],
    );
    s.wait_for(&model(300, None), &mut floe, "a");
    s.drain(&mut floe, "a");
    assert_eq!(s.rows().unwrap(), model(300, None));
    s.assert_offsets_at_end(3);
    let log = s.log("a");
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("{what:?} not logged:\n{log}"))
    };
    let resumed = at("resuming after table-commit");
    let lost = at("lost its partitions");
    let first_commit = at("\"committed\"");
    let reassigned = log
        .match_indices("partitions assigned")
        .nth(1)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("never assigned again:\n{log}"));
    assert!(
        resumed < lost,
        "the lost assignment is noticed after the pause:\n{log}"
    );
    assert!(
        lost < reassigned && reassigned < first_commit,
        "the first commit comes only after the partitions were assigned again:\n{log}"
    );
}

/// A child process that is ended when the test ends, passing or not.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Staging writes answered with 503 (S3's "slow down, try again") are retried with backoff:
/// the run keeps going, logs each retry, and the table ends exact.
#[test]
fn s3_errors_while_staging_are_retried_and_nothing_is_lost() {
    const FAILURES: usize = 8;
    let target = block_on(Target::s3tables());
    let (moto, staging_bucket) = target.moto_staging();
    let mut proxy = Stopped(
        Command::new(support::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/flaky_s3.py"
            ))
            .args(["--upstream", &moto, "--fail", &FAILURES.to_string()])
            .args(["--method", "PUT", "--path-prefix"])
            .arg(format!("/{staging_bucket}/deltas/"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(proxy.0.stdout.take().unwrap());
    let mut port = String::new();
    out.read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().expect("the proxy prints its port");

    let s = Setup::build(
        "stage_retry",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    // The staging block comes first in the file: only staging goes through the proxy.
    let config = std::fs::read_to_string(&s.config).unwrap();
    let staging = format!("endpoint = \"{moto}\"");
    assert!(config.contains(&staging));
    std::fs::write(
        &s.config,
        config.replacen(
            &staging,
            &format!("endpoint = \"http://127.0.0.1:{port}\""),
            1,
        ),
    )
    .unwrap();

    let mut floe = s.stream_sample(200, 2);
    signal(&floe, "-TERM");
    let status = wait_exit(&mut floe, Duration::from_secs(30));
    drop(proxy);
    let mut injected = String::new();
    out.read_to_string(&mut injected).unwrap();
    assert!(status.success(), "{}", s.log("a"));
    assert_eq!(
        injected.matches("injected 503 PUT").count(),
        FAILURES,
        "{injected}"
    );
    let log = s.log("a");
    assert!(
        log.contains("staging call failed; retrying"),
        "the retries are logged:\n{log}"
    );
    assert_eq!(s.rows().unwrap(), model(200, None));
    s.assert_offsets_at_end(2);
}
