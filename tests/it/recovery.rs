//! Recovery: where `floe run` starts reading a partition (at the offset its table holds,
//! whatever the consumer group's committed offset says), and S3 failures while staging.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::runtime::{Setup, Target, await_eviction, block_on, model, produce, signal, wait_exit};
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
    s.assert_rows(&model(200, Some(2)));
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
    s.kill(&mut first, "first");
    assert!(
        !s.log("first").contains("\"committed\""),
        "the first member must die before committing:\n{}",
        s.log("first")
    );
    // Waits out the session so the dead member leaves the group.
    await_eviction();
    s.edit_config("commit_interval = \"120s\"", "commit_interval = \"1s\"");
    let mut second = s.start("second");
    s.ends_exact(&model(300, Some(1)), &mut second, "second", 3);
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
    s.ends_exact(&model(300, None), &mut floe, "a", 3);
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
    let (proxy, out, port) = FlakyProxy::start(
        &moto,
        &["--fail", &FAILURES.to_string(), "--method", "PUT"],
        &format!("/{staging_bucket}/deltas/"),
    );

    let s = Setup::build(
        "stage_retry",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    // The staging block comes first in the file: only staging goes through the proxy.
    s.edit_config(
        &format!("endpoint = \"{moto}\""),
        &format!("endpoint = \"http://127.0.0.1:{port}\""),
    );

    let mut floe = s.stream_sample(200, 2);
    signal(&floe, "-TERM");
    let status = wait_exit(&mut floe, Duration::from_secs(30));
    let injected = injected(proxy, out);
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
    s.assert_rows(&model(200, None));
    s.assert_offsets_at_end(2);
}

/// `tests/support/flaky_s3.py` in front of `upstream`: failing the requests `args` and
/// `path_prefix` select. Returns the process, its output (one line per failed request) and
/// its port.
struct FlakyProxy;

impl FlakyProxy {
    fn start(
        upstream: &str,
        args: &[&str],
        path_prefix: &str,
    ) -> (Stopped, BufReader<std::process::ChildStdout>, u16) {
        let mut proxy = Stopped(
            Command::new(support::python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/support/flaky_s3.py"
                ))
                .args(["--upstream", upstream])
                .args(args)
                .args(["--path-prefix", path_prefix])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = BufReader::new(proxy.0.stdout.take().unwrap());
        let mut port = String::new();
        out.read_line(&mut port).unwrap();
        let port: u16 = port.trim().parse().expect("the proxy prints its port");
        (proxy, out, port)
    }
}

/// What the proxy failed, once it is stopped.
fn injected(proxy: Stopped, mut out: BufReader<std::process::ChildStdout>) -> String {
    drop(proxy);
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    text
}

/// S3 answers every staging write with 503 for longer than Floe's retry budget (about a
/// minute): the run stops with an error naming the staging location (it cannot buffer without
/// bound), having committed nothing it did not stage; a restart once S3 is back loses nothing.
#[test]
fn staging_unavailable_beyond_the_retry_budget_stops_the_run_and_a_restart_loses_nothing() {
    let target = block_on(Target::s3tables());
    let (moto, staging_bucket) = target.moto_staging();
    let (proxy, out, port) = FlakyProxy::start(
        &moto,
        &["--fail-for", "100000", "--method", "PUT"],
        &format!("/{staging_bucket}/deltas/"),
    );
    let s = Setup::build(
        "stage_outage",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    // The staging block comes first in the file: only staging goes through the proxy.
    let direct = format!("endpoint = \"{moto}\"");
    let proxied = format!("endpoint = \"http://127.0.0.1:{port}\"");
    s.edit_config(&direct, &proxied);
    produce(&s.brokers, &s.topic, 200, 2, None);
    let mut floe = s.start("a");
    let status = wait_exit(&mut floe, Duration::from_secs(240));
    let log = s.log("a");
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(
        log.matches("staging call failed; retrying").count(),
        7,
        "{log}"
    );
    assert!(
        log.contains(&format!("s3://{staging_bucket}/deltas/")) && log.contains("503"),
        "the error names the location and the answer:\n{log}"
    );
    assert!(s.rows().is_none(), "nothing was committed");
    let failed = injected(proxy, out);
    assert!(failed.matches("injected 503 PUT").count() >= 8, "{failed}");
    // S3 is back.
    s.edit_config(&proxied, &direct);
    let mut again = s.start("b");
    s.ends_exact(&model(200, None), &mut again, "b", 2);
}

/// The table's storage answers writes with 503 for 25 s (past the SDK's own retries): each
/// commit attempt fails, Floe keeps running and retries the commit with backoff, and the
/// table ends exact once storage is back.
#[test]
fn table_storage_unavailable_for_a_while_delays_commits_and_loses_nothing() {
    let target = block_on(Target::s3tables());
    let (moto, _) = target.moto_staging();
    let (proxy, out, port) =
        FlakyProxy::start(&moto, &["--fail-for", "25", "--method", "PUT"], "/");
    let s = Setup::build(
        "table_outage",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    s.edit_config(
        &format!("s3_endpoint = \"{moto}\""),
        &format!("s3_endpoint = \"http://127.0.0.1:{port}\""),
    );
    produce(&s.brokers, &s.topic, 200, 2, None);
    let mut floe = s.start("a");
    s.ends_exact(&model(200, None), &mut floe, "a", 2);
    let failed = injected(proxy, out);
    assert!(
        failed.contains("injected 503 PUT"),
        "no write failed: {failed}"
    );
    let log = s.log("a");
    assert!(log.contains("commit failed; will retry"), "{log}");
}

/// The table's storage refuses every write with 403 AccessDenied (a role without the table
/// bucket's write permission): that does not pass by waiting, so the next commit stops the run
/// with exit 1 and an error naming the table and the answer, having acknowledged nothing. Once
/// the permission is back, a restart ends exact.
#[test]
fn table_storage_refusing_writes_stops_the_run_and_a_restart_loses_nothing() {
    let target = block_on(Target::s3tables());
    let (moto, _) = target.moto_staging();
    let s = Setup::build(
        "table_denied",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    // The table exists and holds rows: the refusal meets a commit's data files.
    let mut floe = s.stream_sample(200, 2);
    s.drain(&mut floe, "a");
    s.assert_rows(&model(200, None));

    let (proxy, out, port) = FlakyProxy::start(
        &moto,
        &["--fail-for", "100000", "--status", "403", "--method", "PUT"],
        "/",
    );
    let direct = format!("s3_endpoint = \"{moto}\"");
    let proxied = format!("s3_endpoint = \"http://127.0.0.1:{port}\"");
    s.edit_config(&direct, &proxied);
    produce(&s.brokers, &s.topic, 200, 2, Some(1));
    let mut denied = s.start("b");
    let status = wait_exit(&mut denied, Duration::from_secs(120));
    let log = s.log("b");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("customers") && log.contains("AccessDenied"),
        "the error names the table and the answer:\n{log}"
    );
    assert!(
        !log.contains("commit failed; will retry"),
        "a refusal is not retried:\n{log}"
    );
    let failed = injected(proxy, out);
    assert!(failed.contains("injected 403 PUT"), "{failed}");
    s.assert_rows(&model(200, None));

    // The permission is back.
    s.edit_config(&proxied, &direct);
    let mut again = s.start("c");
    s.ends_exact(&model(200, Some(1)), &mut again, "c", 2);
}

/// The catalog takes 30 s to answer every commit. The consume loop does not wait for it: it
/// keeps reading (the updates produced during the first commit are all read before that
/// commit is answered) and stays in the group (the tests' `max.poll.interval.ms` is 8 s, so a
/// loop blocked by the commit would be evicted), and the table ends exact.
#[test]
fn a_catalog_taking_30_seconds_per_commit_neither_stops_reading_nor_costs_the_assignment() {
    let proxied = commits_through_proxy(
        "slow_catalog",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        &["--delay", "30"],
        "\nrequest_timeout = \"90s\"",
    );
    let (s, lines, metrics) = (&proxied.setup, &proxied.lines, proxied.metrics);
    let mut floe = s.start("a");
    let first = proxied.first_line(s);
    assert!(first.starts_with("delaying POST"), "{first}");
    let held_since = std::time::Instant::now();

    // While the first commit is held: 200 updates, all read (every record of the topic
    // counted in floe_events_total) before it is answered.
    produce(&s.brokers, &s.topic, 200, 2, Some(1));
    let end = records_in(s, 2);
    loop {
        if events_read(&crate::runtime::http_get(metrics, "/metrics").1) == end {
            break;
        }
        if let Ok(line) = lines.try_recv() {
            panic!(
                "the first commit was answered ({line}) before the updates were read: reading \
                 waited for the commit\n{}",
                s.log("a")
            );
        }
        assert!(
            held_since.elapsed() < Duration::from_secs(28),
            "the updates were not read while the commit was held:\n{}\n{}",
            crate::runtime::http_get(metrics, "/metrics").1,
            s.log("a")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.ends_exact(&model(200, Some(1)), &mut floe, "a", 2);
    let log = s.log("a");
    assert_eq!(
        log.matches("partitions assigned").count(),
        1,
        "assigned once, never evicted:\n{log}"
    );
    assert!(
        !log.contains("partitions revoked") && !log.contains("lost its partitions"),
        "{log}"
    );
}

/// The catalog refuses every commit with 503 for 40 s, and the changes read behind the failing
/// commit reach `flush.max_window_bytes`: Floe pauses reading instead of growing the window
/// (changes produced meanwhile stay unread, `floe_reading_paused` is 1), and once a commit
/// lands it reads on, and the table ends exact.
#[test]
fn failing_commits_with_a_full_window_pause_reading_instead_of_growing() {
    // Flushes of 50 rows: 200 rows stage four deltas, over the 8 KiB bound.
    let proxied = commits_through_proxy(
        "window_full",
        "interval = \"500ms\"\ncommit_interval = \"1s\"\nmax_rows = 50\nmax_window_bytes = \"8KiB\"",
        &["--fail-for", "40", "--status", "503"],
        "",
    );
    let (s, metrics) = (&proxied.setup, proxied.metrics);
    let mut floe = s.start("a");
    let first = proxied.first_line(s);
    let outage_started = std::time::Instant::now();
    assert!(first.starts_with("injected 503 POST"), "{first}");
    // The first commit is failing: 200 updates fill a new window (four deltas) behind it.
    produce(&s.brokers, &s.topic, 200, 2, Some(1));
    let scrape = || crate::runtime::http_get(metrics, "/metrics").1;
    let paused = |text: &str| text.lines().any(|l| l == "floe_reading_paused 1");
    while !paused(&scrape()) {
        assert!(
            outage_started.elapsed() < Duration::from_secs(25),
            "reading never paused while commits failed:\n{}\n{}",
            scrape(),
            s.log("a")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let paused_at = events_read(&scrape());
    // While paused: 200 more updates, which must stay unread as long as commits fail.
    produce(&s.brokers, &s.topic, 200, 2, Some(2));
    let end = records_in(s, 2);
    std::thread::sleep(Duration::from_secs(5));
    let text = scrape();
    assert!(
        outage_started.elapsed() < Duration::from_secs(38),
        "the check ran past the outage; its premise no longer holds"
    );
    assert!(paused(&text), "{text}");
    assert_eq!(
        events_read(&text),
        paused_at,
        "records were read while the window was full (the topic holds {end}):\n{text}\n{}",
        s.log("a")
    );
    assert!(paused_at < end);
    // The catalog is back: a commit lands, reading resumes, and everything is applied.
    s.ends_exact(&model(200, Some(2)), &mut floe, "a", 2);
    let log = s.log("a");
    assert!(
        log.contains("reading paused") && log.contains("reading resumed"),
        "{log}"
    );
}

/// The catalog refuses every commit with 503, for longer than `staging.max_uncommitted_age`
/// (5 s here; by default half the staging bucket's expiration age; the first commit round
/// already takes longer, with the engine's own retries): Floe stops with exit 1
/// and an error naming the table, rather than wait on staged files the lifecycle rule would
/// remove. Nothing was acknowledged: once the catalog is back, a restart ends exact.
#[test]
fn commits_failing_longer_than_staged_files_may_wait_stop_the_run_and_lose_nothing() {
    let proxied = commits_through_proxy(
        "uncommitted_age",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        &["--fail-for", "100000", "--status", "503"],
        "",
    );
    let s = &proxied.setup;
    s.edit_config(
        "region = \"us-east-1\"\n\n[catalog]",
        "region = \"us-east-1\"\nmax_uncommitted_age = \"5s\"\n\n[catalog]",
    );
    let mut floe = s.start("a");
    let first = proxied.first_line(s);
    assert!(first.starts_with("injected 503 POST"), "{first}");
    let status = wait_exit(&mut floe, Duration::from_secs(120));
    let log = s.log("a");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("customers")
            && log.contains("still not committed")
            && log.contains("max_uncommitted_age = 5s")
            && log.contains("503"),
        "the error names the table, the limit and the last commit error:\n{log}"
    );
    let rows = s
        .rows()
        .and_then(|r| r.as_array().map(Vec::len))
        .unwrap_or(0);
    assert_eq!(rows, 0, "nothing was committed:\n{log}");

    // The catalog is back.
    let upstream = support::weed_rest();
    let text = std::fs::read_to_string(&s.config).unwrap();
    let proxied_uri = text
        .lines()
        .find(|l| l.starts_with("uri = "))
        .unwrap()
        .to_string();
    s.edit_config(&proxied_uri, &format!("uri = \"{upstream}\""));
    let mut again = s.start("b");
    s.ends_exact(&model(200, None), &mut again, "b", 2);
}

/// A REST-catalog setup whose table commits (POST .../tables/<table>) go through
/// `flaky_s3.py` with `proxy_args`; creating the namespace and the table goes straight
/// through. The catalog block gets `catalog_extra` after its `uri`, metrics are served, and
/// the topic holds the 200-row sample.
struct ProxiedCommits {
    setup: Setup,
    lines: std::sync::mpsc::Receiver<String>,
    metrics: u16,
    _proxy: Stopped,
}

fn commits_through_proxy(
    name: &str,
    flush: &str,
    proxy_args: &[&str],
    catalog_extra: &str,
) -> ProxiedCommits {
    let target = block_on(Target::rest());
    let upstream = support::weed_rest();
    let mut args = proxy_args.to_vec();
    args.extend(["--method", "POST", "--path-regex", "/tables/[^/]+$"]);
    let (proxy, out, port) = FlakyProxy::start(&upstream, &args, "/v1/");
    let metrics = crate::runtime::free_port();
    let setup = Setup::build(
        name,
        flush,
        &format!("listen = \"127.0.0.1:{metrics}\""),
        target,
    );
    setup.edit_config(
        &format!("uri = \"{upstream}\""),
        &format!("uri = \"http://127.0.0.1:{port}\"{catalog_extra}"),
    );
    produce(&setup.brokers, &setup.topic, 200, 2, None);
    ProxiedCommits {
        setup,
        lines: proxy_lines(out),
        metrics,
        _proxy: proxy,
    }
}

impl ProxiedCommits {
    /// The proxy's first report: the first commit reached it.
    fn first_line(&self, s: &Setup) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no commit reached the catalog:\n{}", s.log("a")))
    }
}

/// Every record `floe run` has read, by its metrics: the sum of `floe_events_total`.
fn events_read(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("floe_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How many records the test topic's partitions hold.
fn records_in(s: &Setup, partitions: i32) -> u64 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&s.topic, p, Duration::from_secs(10))
                .unwrap();
            (high - low) as u64
        })
        .sum()
}

/// The proxy's report lines as they come.
fn proxy_lines(out: BufReader<std::process::ChildStdout>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The catalog answers 429 (S3 Tables' throttling) or 503 (a REST catalog under load) to every
/// write for 20 s: table creation and commits are retried, Floe keeps running, and the table
/// ends exact.
fn catalog_throttling_is_retried_and_loses_nothing(target: Target, status: &str) {
    let (upstream, method, prefix, key) = match &target {
        Target::S3Tables { endpoint, .. } => (endpoint.clone(), "PUT", "/tables/", "endpoint"),
        Target::Rest { .. } => (support::weed_rest(), "POST", "/v1/", "uri"),
        Target::Local => unreachable!("the local catalog has no HTTP API"),
    };
    let (proxy, out, port) = FlakyProxy::start(
        &upstream,
        &["--fail-for", "20", "--status", status, "--method", method],
        prefix,
    );
    let s = Setup::build(
        "catalog_throttled",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
        "enabled = false",
        target,
    );
    // The catalog's own setting, after the staging block's `endpoint`.
    let config = std::fs::read_to_string(&s.config).unwrap();
    let catalog = config.find("[catalog]").unwrap();
    let (head, tail) = config.split_at(catalog);
    let tail = tail.replacen(
        &format!("{key} = \"{upstream}\""),
        &format!("{key} = \"http://127.0.0.1:{port}\""),
        1,
    );
    assert_ne!(
        tail,
        config[catalog..],
        "the catalog's {key} is in the config"
    );
    std::fs::write(&s.config, format!("{head}{tail}")).unwrap();
    produce(&s.brokers, &s.topic, 200, 2, None);
    let mut floe = s.start("a");
    s.wait_for(&model(200, None), &mut floe, "a");
    produce(&s.brokers, &s.topic, 200, 2, Some(1));
    s.ends_exact(&model(200, Some(1)), &mut floe, "a", 2);
    let failed = injected(proxy, out);
    assert!(
        failed.contains(&format!("injected {status} {method}")),
        "nothing failed: {failed}"
    );
}

#[test]
fn s3_tables_throttling_is_retried_and_loses_nothing() {
    catalog_throttling_is_retried_and_loses_nothing(block_on(Target::s3tables()), "429");
}

#[test]
fn rest_catalog_errors_are_retried_and_lose_nothing() {
    catalog_throttling_is_retried_and_loses_nothing(block_on(Target::rest()), "503");
}

/// A TCP forwarder on 127.0.0.1 that can cut every connection and refuse new ones, standing
/// for a broker that went away: the test's own tansu advertises the forwarder's address, so
/// every connection Floe makes goes through it.
struct Cuttable {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Cuttable {
    fn start(upstream: String) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut o = o.lock().unwrap();
                o.push(client.try_clone().unwrap());
                o.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cuttable { port, down, open }
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A tansu broker of the test's own (the shared one must stay up for the other tests), its
/// SQLite file in `dir`, listening on `port` and advertising `advertised`.
fn own_broker_on(dir: &std::path::Path, port: u16, advertised: &str) -> (Stopped, String) {
    let tansu = std::env::var("FLOE_TEST_TANSU")
        .expect("FLOE_TEST_TANSU (set by scripts/test-env.sh) names the tansu binary");
    let address = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
    let child = Command::new(&tansu)
        .args(["broker", "--storage-engine", "sqlite://tansu.db"])
        .args(["--listener-url", &format!("tcp://{address}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tansu");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "tansu did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (Stopped(child), address)
}

/// The broker is unreachable for two minutes while `floe run` streams (every connection cut,
/// new ones refused), then reachable again: Floe keeps running, says what happened (log and
/// `floe_errors_total{stage="consume"}`), and ends with exactly the source's rows.
#[test]
fn the_broker_unreachable_for_two_minutes_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The forwarder's port is what the broker advertises; it forwards to the broker.
    let listener_port = crate::runtime::free_port();
    let cuttable = Cuttable::start(format!("127.0.0.1:{listener_port}"));
    let advertised = format!("127.0.0.1:{}", cuttable.port);
    let (_broker, _) = own_broker_on(dir.path(), listener_port, &advertised);
    let port = crate::runtime::free_port();
    let s = Setup::build_on(
        advertised,
        "broker_down",
        "interval = \"300ms\"\ncommit_interval = \"1s\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        Target::Local,
    );
    produce(&s.brokers, &s.topic, 300, 3, None);
    let mut floe = s.start("a");
    s.wait_for(&model(300, None), &mut floe, "a");
    // Changes just produced when the broker becomes unreachable.
    produce(&s.brokers, &s.topic, 300, 3, Some(1));
    cuttable.cut();
    std::thread::sleep(Duration::from_secs(120));
    assert!(
        floe.try_wait().unwrap().is_none(),
        "floe stopped while the broker was unreachable:\n{}",
        s.log("a")
    );
    cuttable.restore();
    produce(&s.brokers, &s.topic, 300, 3, Some(2));
    s.wait_for(&model(300, Some(2)), &mut floe, "a");
    let (_, metrics) = crate::runtime::http_get(port, "/metrics");
    let consume_errors = metrics
        .lines()
        .find(|l| l.starts_with("floe_errors_total{") && l.contains("stage=\"consume\""))
        .unwrap_or_else(|| panic!("no consume errors counted:\n{metrics}"));
    assert!(!consume_errors.ends_with(" 0"), "{consume_errors}");
    s.drain(&mut floe, "a");
    s.assert_rows(&model(300, Some(2)));
    s.assert_offsets_at_end(3);
    assert!(
        s.log("a").contains("kafka consumer error; retrying"),
        "the outage is logged:\n{}",
        s.log("a")
    );
}
