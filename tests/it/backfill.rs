//! `floe backfill`, `floe check` and `floe policy` as processes, against tansu and the catalog
//! fixtures; tables read back by DuckDB / pyiceberg and compared with a model of the source.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::runtime::{Setup, Target, block_on, model, produce, produce_sample, signal, wait_exit};
use crate::support;

const FLUSH: &str = "interval = \"100ms\"\ncommit_interval = \"100ms\"\nmax_rows = 150";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(s: &Setup, args: &[&str]) -> Output {
    let out = s.command(args).output().expect("run floe");
    let secret = s.target.credentials().1;
    support::assert_no_secret(&text(&out.stdout), &secret, "stdout");
    support::assert_no_secret(&text(&out.stderr), &secret, "stderr");
    out
}

/// The report line of `table`: (records, rows, files, status).
fn report_line(stdout: &str, table: &str) -> (u64, u64, u64, String) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no report line for {table} in:\n{stdout}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[6..].join(" "),
    )
}

/// Backfills 300 sample events, then, after more changes, backfills again without dropping:
/// the second run reads only what the table does not hold yet. `partition_spec`: the table's
/// configured spec (TOML array), if any.
fn backfill_and_continue(name: &str, target: Target, partition_spec: Option<&str>) -> Setup {
    let s = Setup::build(name, FLUSH, "enabled = false", target);
    let table = s.target.table();
    if let Some(spec) = partition_spec {
        let config = std::fs::read_to_string(&s.config).unwrap();
        std::fs::write(
            &s.config,
            format!("{config}\n[tables.overrides.\"{table}\"]\npartition_spec = {spec}\n"),
        )
        .unwrap();
    }
    produce(&s.brokers, &s.topic, 300, 3, None);
    let out = run(&s, &["backfill"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (records, rows, files, status) = report_line(&stdout, &table);
    // 300 inserts, 100 updates, 60 deletes and 60 tombstones.
    assert_eq!(records, 520, "{stdout}");
    // Rows written: a key changed in two commit windows is written twice.
    assert!(rows >= 240, "{stdout}");
    assert!(files >= 1, "{stdout}");
    assert_eq!(status, "ok");
    s.assert_rows(&model(300, None));

    let end = |s: &Setup| -> i64 { s.kafka_offsets(3).iter().map(|(_, high)| high).sum() };
    let before = end(&s);
    produce(&s.brokers, &s.topic, 300, 3, Some(2));
    // 240 updates; the sample producer is not idempotent, so a retried send may append one
    // twice: the run must read exactly what was appended.
    let appended = (end(&s) - before) as u64;
    assert!((240..245).contains(&appended), "{appended}");
    let out = run(&s, &["backfill"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (records, rows, _, _) = report_line(&stdout, &table);
    assert_eq!((records, rows), (appended, 240), "{stdout}");
    s.assert_rows(&model(300, Some(2)));
    s
}

#[test]
fn backfills_into_the_local_catalog_and_continues_from_the_table() {
    let s = backfill_and_continue(
        "backfill_local",
        Target::Local,
        Some(r#"["bucket(2, id)"]"#),
    );
    // Nothing new: a third run reads nothing and changes nothing.
    let out = run(&s, &["backfill"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (records, rows, files, _) = report_line(&text(&out.stdout), &s.target.table());
    assert_eq!((records, rows, files), (0, 0, 0));
    s.assert_rows(&model(300, Some(2)));
    // The table was created with the configured spec, and `floe check` shows it.
    let out = run(&s, &["check"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(
            |l| l.contains(&format!("table {}: metadata", s.target.table()))
                && l.ends_with(" snapshot(s), partitioned by id_bucket=bucket[2](id)")
        ),
        "{stdout}"
    );
}

#[test]
fn backfills_into_s3_tables_and_check_then_passes() {
    let s = backfill_and_continue("backfill_s3tables", block_on(Target::s3tables()), None);
    // The staging bucket got its expiration rule, the table exists: every check passes,
    // including a commit without changes to the table.
    let out = run(&s, &["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ok           table inventory.customers: commit"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok           table inventory.customers: metadata: format v2,")
            && stdout.contains(" snapshot(s), unpartitioned\n"),
        "{stdout}"
    );
    // Every S3 call the check made is in the published action lists (the log says which
    // were not); the log is the check's own stderr.
    let log = text(&out.stderr);
    assert!(log.contains("\"level\":\"INFO\""), "no log written:\n{log}");
    assert!(!log.contains("missing from"), "{log}");
    let rows = s.rows().unwrap();
    assert_eq!(rows, model(300, Some(2)));
    // The check builds the key index as the first commit would: one key per row.
    let keys = rows.as_array().unwrap().len();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("table inventory.customers: deletes")
                && l.contains(&format!("position deletes; key index: {keys} keys,"))),
        "{stdout}"
    );
}

#[test]
fn backfills_into_a_rest_catalog() {
    let s = backfill_and_continue("backfill_rest", block_on(Target::rest()), None);
    // Its staging bucket has no expiration rule: the one check that does not pass.
    let out = run(&s, &["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let bad = not_ok(&stdout);
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(bad[0].contains(": expiration rule: no rule"), "{stdout}");
    assert!(
        stdout.contains(": commit: a commit without changes succeeded"),
        "{stdout}"
    );
    s.assert_rows(&model(300, Some(2)));
}

/// A window that reaches `flush.max_window_bytes` is committed at once, not at the commit
/// interval: with an hour-long interval, the backfill still commits many times, and each
/// commit holds only what the window bound let in.
#[test]
fn a_backfill_commits_each_full_window_before_the_commit_interval() {
    let flush = "interval = \"100ms\"\ncommit_interval = \"1h\"\nmax_rows = 50\n\
                 max_window_bytes = \"1KiB\"";
    let s = Setup::build("backfill_window", flush, "enabled = false", Target::Local);
    // Enough records that reading them takes longer than a flush.
    produce(&s.brokers, &s.topic, 3000, 3, None);
    let out = run(&s, &["backfill"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (records, _, _, status) = report_line(&stdout, &s.target.table());
    // 3000 inserts, 1000 updates, 600 deletes and 600 tombstones.
    assert_eq!((records, status.as_str()), (5200, "ok"), "{stdout}");
    s.assert_rows(&model(3000, None));
    // Before the bound was honoured, this backfill committed once, at its end.
    let snapshots = s.local_table_metadata()["snapshots"]
        .as_array()
        .unwrap()
        .len();
    assert!(snapshots >= 3, "{snapshots} snapshot(s)");
}

/// The lines of `floe check` output that are not ok, as "<outcome> <check>: <detail>".
fn not_ok(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("missing") || l.starts_with("failed"))
        .map(|l| {
            let (outcome, rest) = l.split_once(' ').unwrap();
            format!("{outcome} {}", rest.trim_start())
        })
        .collect()
}

#[test]
fn drop_and_recreate_replaces_a_table_with_other_data_and_an_older_schema() {
    let s = Setup::build("backfill_drop", FLUSH, "enabled = false", Target::Local);
    // Another writer's table: other columns, other rows.
    let data = s.root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data = data.canonicalize().unwrap();
    let catalog = [
        "--uri".to_string(),
        format!("sqlite:///{}/catalog.db", data.display()),
        "--warehouse".into(),
        format!("file://{}/warehouse", data.display()),
        "--catalog-name".into(),
        "floe".into(),
        "--table".into(),
        "inventory.customers".into(),
    ];
    let mut args = vec!["pyiceberg-write-sample"];
    args.extend(catalog.iter().map(String::as_str));
    support::iceberg_read(&args);

    // An initial snapshot of 400 rows (op "r"), committed in windows of 100ms.
    produce_sample(
        &s.brokers,
        &s.topic,
        &["--count", "400", "--partitions", "2", "--snapshot-only"],
    );

    // Off a terminal, dropping needs --yes; nothing is touched without it.
    let out = run(&s, &["backfill", "--drop-and-recreate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));

    let out = run(&s, &["backfill", "--drop-and-recreate", "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (records, rows, files, _) = report_line(&stdout, "inventory.customers");
    assert_eq!((records, rows), (400, 400), "{stdout}");
    assert!(files >= 1, "{stdout}");

    let want: Vec<Value> = (1..=400)
        .map(|i: i64| json!([i, format!("user{i}.v0@example.com"), format!("{}.00", i)]))
        .collect();
    s.assert_rows(&Value::Array(want));
    let mut args = vec!["pyiceberg-sql", "--files"];
    args.extend(catalog.iter().map(String::as_str));
    let info = support::iceberg_read(&args);
    let columns: BTreeSet<&str> = info["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(columns.contains("email"), "{columns:?}");
    assert!(
        !columns.contains("amount") && !columns.contains("ts"),
        "the old schema's columns are gone: {columns:?}"
    );
    // Old rows are removed by position (content 1), never by equality (content 2).
    let files = info["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["content"] == 0), "{files:?}");
    assert!(
        files.iter().all(|f| f["content"] == 0 || f["content"] == 1),
        "{files:?}"
    );
}

#[test]
fn a_killed_backfill_run_again_ends_with_the_same_table() {
    let s = Setup::build(
        "backfill_kill",
        "interval = \"100ms\"\ncommit_interval = \"200ms\"\nmax_rows = 200",
        "enabled = false",
        Target::Local,
    );
    produce(&s.brokers, &s.topic, 3000, 3, None);
    // Two runs killed with SIGKILL right after their first commit, then one that finishes.
    for tag in ["first", "second"] {
        let mut killed = s.spawn(&["backfill"], tag);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !s.log(tag).contains("\"committed\"") {
            assert!(Instant::now() < deadline, "no commit:\n{}", s.log(tag));
            assert!(
                killed.try_wait().unwrap().is_none(),
                "{tag} ended before it could be killed:\n{}",
                s.log(tag)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&killed, "-KILL");
        assert!(!wait_exit(&mut killed, Duration::from_secs(10)).success());
    }
    let out = run(&s, &["backfill"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (records, _, _, _) = report_line(&stdout, &s.target.table());
    // 3000 inserts, 1000 updates, 600 deletes and 600 tombstones in all; the last run read
    // only what the table did not hold yet.
    assert!(records < 5200, "{stdout}");
    s.assert_rows(&model(3000, None));
}

/// `floe check` against moto: a staging bucket that does not exist, then one without an
/// expiration rule, then one with it; each time exactly that is reported.
#[test]
fn check_reports_a_missing_staging_bucket_and_a_missing_expiration_rule() {
    let target = block_on(Target::s3tables());
    let (endpoint, staging_bucket) = target.moto_staging();
    let s = Setup::build("check_moto", FLUSH, "enabled = false", target);
    produce(&s.brokers, &s.topic, 10, 1, None);
    let client = crate::runtime::s3_client(&endpoint);
    // The staging bucket does not exist, and Floe was not asked to manage its lifecycle.
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(
                &format!("bucket = \"{staging_bucket}\""),
                &format!("bucket = \"{staging_bucket}-absent\""),
            )
            .replace("manage_lifecycle = true", "manage_lifecycle = false"),
    )
    .unwrap();
    let out = run(&s, &["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let bad = not_ok(&stdout);
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(
        bad[0].starts_with(&format!(
            "missing staging bucket s3://{staging_bucket}-absent: the bucket does not exist"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("NoSuchBucket"), "{stdout}");
    assert!(
        stdout.contains("ok           namespace inventory: does not exist yet"),
        "{stdout}"
    );

    // The real staging bucket, without an expiration rule.
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&format!("{staging_bucket}-absent"), &staging_bucket),
    )
    .unwrap();
    let out = run(&s, &["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let bad = not_ok(&stdout);
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(
        bad[0].starts_with(&format!(
            "missing staging bucket s3://{staging_bucket}: expiration rule: no rule"
        )),
        "{stdout}"
    );
    for step in ["write", "read", "delete", "encryption"] {
        assert!(
            stdout.contains(&format!(
                "ok           staging bucket s3://{staging_bucket}: {step}"
            )),
            "{step}: {stdout}"
        );
    }
    let left = block_on(client.list_objects_v2().bucket(&staging_bucket).send()).unwrap();
    assert_eq!(left.key_count(), Some(0), "the probe object was deleted");

    // With a rule, and --create: everything passes and the namespace now exists.
    block_on(
        client
            .put_bucket_lifecycle_configuration()
            .bucket(&staging_bucket)
            .lifecycle_configuration(
                aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                    .rules(
                        aws_sdk_s3::types::LifecycleRule::builder()
                            .id("expire")
                            .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
                            .filter(
                                aws_sdk_s3::types::LifecycleRuleFilter::builder()
                                    .prefix("")
                                    .build(),
                            )
                            .expiration(
                                aws_sdk_s3::types::LifecycleExpiration::builder()
                                    .days(1)
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send(),
    )
    .unwrap();
    let out = run(&s, &["check", "--create"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ok           namespace inventory: created"),
        "{stdout}"
    );
    let out = run(&s, &["check"]);
    assert!(
        text(&out.stdout).contains("ok           namespace inventory: exists"),
        "{}",
        text(&out.stdout)
    );
}
