//! `floe run` as a process, against tansu and the local catalog; tables read back by DuckDB and
//! compared with a model of the source table.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::support;

/// What the table must hold after `produce_sample.py --count n` (and, with `all_to`, after
/// `--update-all-to V`): ids 1..=n without multiples of 5; multiples of 3 were updated once.
pub(crate) fn model(n: i64, all_to: Option<i64>) -> Value {
    let rows = (1..=n)
        .filter(|i| i % 5 != 0)
        .map(|i| {
            let version = all_to.unwrap_or(if i % 3 == 0 { 1 } else { 0 });
            let cents = i * 100 + version;
            json!([
                i,
                format!("user{i}.v{version}@example.com"),
                format!("{}.{:02}", cents / 100, cents % 100)
            ])
        })
        .collect();
    Value::Array(rows)
}

pub(crate) fn produce(
    brokers: &str,
    topic: &str,
    count: i64,
    partitions: i32,
    update_all_to: Option<i64>,
) {
    let mut cmd = Command::new(support::python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/fixtures/produce_sample.py"
    ))
    .args(["--brokers", brokers, "--topic", topic])
    .args([
        "--count",
        &count.to_string(),
        "--partitions",
        &partitions.to_string(),
    ]);
    if let Some(v) = update_all_to {
        cmd.args(["--update-all-to", &v.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The consumers' session timeout: how long the broker waits before it gives a killed
/// member's partitions to someone else.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// After a SIGKILL: the broker must evict the dead member before the next one joins. tansu
/// 0.6 never evicts a member that dies while a rebalance waits for another dead member, so
/// the tests let each eviction finish before they start the next process.
fn await_eviction() {
    std::thread::sleep(SESSION_TIMEOUT + Duration::from_millis(700));
}

/// Where `floe run` writes: the local catalog, or S3 Tables (moto) with S3 staging.
pub(crate) enum Target {
    Local,
    /// SeaweedFS: the Iceberg REST catalog with SigV4, staging in its S3.
    Rest {
        namespace: String,
        staging_bucket: String,
    },
    S3Tables {
        endpoint: String,
        arn: String,
        staging_bucket: String,
    },
}

impl Target {
    /// A fresh S3 Tables table bucket and staging bucket in moto.
    pub(crate) async fn s3tables() -> Target {
        let endpoint = support::moto_endpoint();
        let name = support::unique("run").replace('_', "-");
        let arn = format!("arn:aws:s3tables:us-east-1:123456789012:bucket/{name}");
        let sdk = support::static_sdk_config("test", "test");
        let tables = aws_sdk_s3tables::Client::from_conf(
            aws_sdk_s3tables::config::Builder::from(&sdk)
                .endpoint_url(&endpoint)
                .build(),
        );
        tables
            .create_table_bucket()
            .name(&name)
            .send()
            .await
            .expect("create table bucket");
        let staging_bucket = format!("{name}-staging");
        s3_client(&endpoint)
            .create_bucket()
            .bucket(&staging_bucket)
            .send()
            .await
            .expect("create staging bucket");
        Target::S3Tables {
            endpoint,
            arn,
            staging_bucket,
        }
    }

    /// A namespace of its own in SeaweedFS's table bucket, and a staging bucket.
    pub(crate) async fn rest() -> Target {
        let (key, secret) = support::weed_credentials();
        let namespace = support::unique("run");
        let staging_bucket = namespace.replace('_', "-");
        let sdk = support::static_sdk_config(&key, &secret);
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .endpoint_url(support::weed_s3())
                .force_path_style(true)
                .build(),
        )
        .create_bucket()
        .bucket(&staging_bucket)
        .send()
        .await
        .expect("create staging bucket in SeaweedFS");
        Target::Rest {
            namespace,
            staging_bucket,
        }
    }

    /// The destination table's name.
    pub(crate) fn table(&self) -> String {
        match self {
            Target::Rest { namespace, .. } => format!("{namespace}.customers"),
            _ => "inventory.customers".into(),
        }
    }

    fn toml(&self, root: &std::path::Path) -> String {
        match self {
            Target::Rest { staging_bucket, .. } => format!(
                "[staging]\nbucket = \"{staging_bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\n\
                 [catalog]\ntype = \"rest\"\nuri = \"{}\"\nwarehouse = \"s3://{}\"\nauth = \"sigv4\"\nsigning_region = \"us-east-1\"\n",
                support::weed_s3(),
                support::weed_rest(),
                support::weed_table_bucket()
            ),
            Target::Local => format!(
                "[catalog]\ntype = \"local\"\npath = \"{}\"\n",
                root.join("data").display()
            ),
            Target::S3Tables {
                endpoint,
                arn,
                staging_bucket,
            } => format!(
                "[staging]\nbucket = \"{staging_bucket}\"\nprefix = \"deltas\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nmanage_lifecycle = true\nexpire_after_days = 2\n\n\
                 [catalog]\ntype = \"s3tables\"\ntable_bucket_arn = \"{arn}\"\nendpoint = \"{endpoint}\"\ns3_endpoint = \"{endpoint}\"\n"
            ),
        }
    }
}

pub(crate) fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let sdk = support::static_sdk_config("test", "test");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build(),
    )
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) brokers: String,
    pub(crate) topic: String,
    group: String,
    pub(crate) target: Target,
}

impl Setup {
    fn new(name: &str, flush: &str) -> Self {
        Self::with_metrics(name, flush, "enabled = false")
    }

    fn with_metrics(name: &str, flush: &str, metrics: &str) -> Self {
        Self::build(name, flush, metrics, Target::Local)
    }

    pub(crate) fn build(name: &str, flush: &str, metrics: &str, target: Target) -> Self {
        let session_ms = SESSION_TIMEOUT.as_millis();
        let brokers = support::kafka_brokers();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let destination = target.toml(&root);
        let table = target.table();
        let topic = support::unique(name);
        let group = support::unique("group");
        let config = root.join("connector.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
[kafka.properties]
"session.timeout.ms" = {session_ms}
"heartbeat.interval.ms" = 500
# The broker waits this long for members to rejoin a rebalance; a killed member never does.
"max.poll.interval.ms" = 8000

[[tables.route]]
topic = "{topic}"
table = "{table}"

{destination}

[flush]
{flush}

[metrics]
{metrics}
"#
            ),
        )
        .unwrap();
        Setup {
            _dir: dir,
            root,
            config,
            brokers,
            topic,
            group,
            target,
        }
    }

    fn start(&self, tag: &str) -> Child {
        self.spawn(&["run"], tag)
    }

    /// `floe <args> --config <config>` in the background, logging to `floe-<tag>.log`.
    pub(crate) fn spawn(&self, args: &[&str], tag: &str) -> Child {
        let log = std::fs::File::create(self.root.join(format!("floe-{tag}.log"))).unwrap();
        self.command(args)
            .stdout(std::fs::File::create(self.root.join(format!("floe-{tag}.out"))).unwrap())
            .stderr(log)
            .spawn()
            .expect("start floe")
    }

    /// `floe <args> --config <config>` with the fixtures' credentials, as a container runs it.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_floe"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("FLOE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            // The AWS default credential chain, as in a container.
            .env("AWS_ACCESS_KEY_ID", self.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.secret_key())
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null());
        cmd
    }

    pub(crate) fn log(&self, tag: &str) -> String {
        std::fs::read_to_string(self.root.join(format!("floe-{tag}.log"))).unwrap_or_default()
    }

    fn access_key(&self) -> String {
        match self.target {
            Target::Rest { .. } => support::weed_credentials().0,
            _ => "test".into(),
        }
    }

    fn secret_key(&self) -> String {
        match self.target {
            Target::Rest { .. } => support::weed_credentials().1,
            _ => "test".into(),
        }
    }

    /// The table's rows (id, email, balance) as DuckDB reads them, or None before it exists.
    pub(crate) fn rows(&self) -> Option<Value> {
        if let Target::Rest { namespace, .. } = &self.target {
            let url = format!(
                "{}/v1/{}/namespaces/{namespace}/tables/customers",
                support::weed_rest(),
                support::weed_table_bucket()
            );
            let (status, body) = block_on(support::weed_get_signed(&url));
            if status != 200 {
                return None;
            }
            let location = body["metadata-location"].as_str()?.to_string();
            let (key, secret) = support::weed_credentials();
            return Some(s3_rows(&location, &support::weed_s3(), &key, &secret));
        }
        if let Target::S3Tables { endpoint, arn, .. } = &self.target {
            let sdk = support::static_sdk_config("test", "test");
            let tables = aws_sdk_s3tables::Client::from_conf(
                aws_sdk_s3tables::config::Builder::from(&sdk)
                    .endpoint_url(endpoint)
                    .build(),
            );
            let location = block_on(
                tables
                    .get_table_metadata_location()
                    .table_bucket_arn(arn)
                    .namespace("inventory")
                    .name("customers")
                    .send(),
            )
            .ok()?
            .metadata_location()?
            .to_string();
            return Some(s3_rows(&location, endpoint, "test", "test"));
        }
        local_rows(
            &self.root.join("data"),
            "inventory.customers",
            "id,email,balance",
        )
    }

    fn wait_for(&self, want: &Value, child: &mut Child, tag: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("floe exited early ({status}):\n{}", self.log(tag));
            }
            last = self.rows();
            if last.as_ref() == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let shown = last.map_or("none".into(), |v| {
            let rows = v.as_array().cloned().unwrap_or_default();
            format!(
                "{} rows, first {:?}",
                rows.len(),
                rows.iter().take(3).collect::<Vec<_>>()
            )
        });
        let others: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("floe-") && n.ends_with(".log"))
            .map(|n| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(self.root.join(&n)).unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "table never matched the model ({} rows, first {:?}); last read: {shown}\nwaiting on {tag}; logs:\n{}",
            want.as_array().map_or(0, Vec::len),
            want.as_array().and_then(|r| r.first()),
            others.join("\n")
        );
    }

    /// The group's committed offset per partition, and each partition's end.
    pub(crate) fn kafka_offsets(&self, partitions: i32) -> Vec<(i64, i64)> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .unwrap();
        let mut result = Vec::new();
        {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&self.topic, p);
            }
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .unwrap();
            for p in 0..partitions {
                let c = match committed.find_partition(&self.topic, p).unwrap().offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                let (_, high) = consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .unwrap();
                result.push((c, high));
            }
        }
        result
    }
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("floe did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .expect("metrics endpoint answers");
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn streams_into_the_table_and_sigterm_drains_and_commits() {
    let port = free_port();
    let s = Setup::with_metrics(
        "run_basic",
        "interval = \"1s\"\ncommit_interval = \"2s\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    produce(&s.brokers, &s.topic, 300, 3, None);
    let mut floe = s.start("a");
    s.wait_for(&model(300, None), &mut floe, "a");

    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz").0, 200);
    let (status, metrics) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    // 300 inserts, 100 updates, 60 deletes and their 60 tombstones.
    for (op, n) in [("c", 300), ("u", 100), ("d", 60), ("tombstone", 60)] {
        let line = format!("floe_events_total{{table=\"inventory.customers\",op=\"{op}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert!(
        metrics.contains("floe_commits_total{table=\"inventory.customers\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("floe_commit_duration_seconds_bucket"),
        "{metrics}"
    );

    // More changes, then SIGTERM before the next commit interval: the drain commits them.
    produce(&s.brokers, &s.topic, 300, 3, Some(2));
    std::thread::sleep(Duration::from_millis(1500));
    signal(&floe, "-TERM");
    let status = wait_exit(&mut floe, Duration::from_secs(30));
    assert!(status.success(), "exit {status}:\n{}", s.log("a"));
    assert_eq!(s.rows().unwrap(), model(300, Some(2)), "{}", s.log("a"));
    for (committed, end) in s.kafka_offsets(3) {
        assert_eq!(committed, end, "group offsets committed up to the end");
    }
}

#[test]
fn a_killed_process_restarts_without_losing_or_repeating_changes() {
    let s = Setup::new(
        "run_crash",
        "interval = \"500ms\"\ncommit_interval = \"1s\"",
    );
    produce(&s.brokers, &s.topic, 200, 2, None);
    let mut first = s.start("a");
    s.wait_for(&model(200, None), &mut first, "a");
    // Updates arrive; the process dies without warning partway through them.
    produce(&s.brokers, &s.topic, 200, 2, Some(3));
    std::thread::sleep(Duration::from_millis(700));
    signal(&first, "-KILL");
    let _ = wait_exit(&mut first, Duration::from_secs(10));
    await_eviction();

    let mut second = s.start("b");
    s.wait_for(&model(200, Some(3)), &mut second, "b");
    signal(&second, "-TERM");
    assert!(
        wait_exit(&mut second, Duration::from_secs(30)).success(),
        "{}",
        s.log("b")
    );
    assert_eq!(s.rows().unwrap(), model(200, Some(3)));
}

#[test]
fn two_processes_in_one_group_share_the_partitions_and_hand_over() {
    let s = Setup::new("run_pair", "interval = \"500ms\"\ncommit_interval = \"1s\"");
    produce(&s.brokers, &s.topic, 400, 4, None);
    let mut a = s.start("a");
    let mut b = s.start("b");
    s.wait_for(&model(400, None), &mut b, "b");

    produce(&s.brokers, &s.topic, 400, 4, Some(2));
    std::thread::sleep(Duration::from_millis(800));
    // One member leaves midway; the other takes over its partitions.
    signal(&a, "-TERM");
    assert!(
        wait_exit(&mut a, Duration::from_secs(30)).success(),
        "{}",
        s.log("a")
    );
    produce(&s.brokers, &s.topic, 400, 4, Some(3));
    s.wait_for(&model(400, Some(3)), &mut b, "b");
    signal(&b, "-TERM");
    assert!(
        wait_exit(&mut b, Duration::from_secs(30)).success(),
        "{}",
        s.log("b")
    );
    assert_eq!(s.rows().unwrap(), model(400, Some(3)));
    for (committed, end) in s.kafka_offsets(4) {
        assert_eq!(committed, end);
    }
    // Both processes committed: the work was shared.
    for tag in ["a", "b"] {
        assert!(
            s.log(tag).contains("\"committed\""),
            "process {tag} never committed:\n{}",
            s.log(tag)
        );
    }
}

/// A tiny deterministic generator, seeded from the clock and printed, for kill timing.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Rounds of the crash test; each kills two processes.
const ROUNDS: i64 = 10;

#[test]
fn killed_at_random_moments_and_at_every_crash_point_the_table_stays_exact() {
    let s = Setup::new(
        "run_kills",
        "interval = \"300ms\"\ncommit_interval = \"600ms\"",
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill timing seed {seed}");
    let mut rng = Lcg(seed);
    produce(&s.brokers, &s.topic, 300, 3, None);
    let mut kills = 0;
    for round in 1..=ROUNDS {
        produce(&s.brokers, &s.topic, 300, 3, Some(round));
        let tag = format!("r{round}");
        // A crash point, alternating, or a SIGKILL at a random moment.
        let fault = match round % 3 {
            0 => Some("staged"),
            1 => Some("table-committed"),
            _ => None,
        };
        let mut crashing = match fault {
            Some(point) => {
                let log = std::fs::File::create(s.root.join(format!("floe-{tag}.log"))).unwrap();
                s.command(&["run"])
                    .env("FLOE_TEST_ABORT_AT", point)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap()
            }
            None => s.start(&tag),
        };
        match fault {
            Some(_) => {
                let status = wait_exit(&mut crashing, Duration::from_secs(60));
                assert!(!status.success(), "expected an abort: {}", s.log(&tag));
                assert!(s.log(&tag).contains("aborting at"), "{}", s.log(&tag));
            }
            None => {
                std::thread::sleep(Duration::from_millis(200 + rng.next(1500)));
                signal(&crashing, "-KILL");
                let _ = wait_exit(&mut crashing, Duration::from_secs(10));
            }
        }
        kills += 1;
        await_eviction();
        // The next process must bring the table to exactly this round's state; then it dies too.
        let tag = format!("r{round}-recover");
        let mut recovering = s.start(&tag);
        s.wait_for(&model(300, Some(round)), &mut recovering, &tag);
        std::thread::sleep(Duration::from_millis(rng.next(700)));
        signal(&recovering, "-KILL");
        let _ = wait_exit(&mut recovering, Duration::from_secs(10));
        kills += 1;
        await_eviction();
        assert_eq!(
            s.rows().unwrap(),
            model(300, Some(round)),
            "after round {round}"
        );
    }
    let mut last = s.start("last");
    s.wait_for(&model(300, Some(ROUNDS)), &mut last, "last");
    signal(&last, "-TERM");
    assert!(
        wait_exit(&mut last, Duration::from_secs(30)).success(),
        "{}",
        s.log("last")
    );
    assert_eq!(s.rows().unwrap(), model(300, Some(ROUNDS)));
    for (committed, end) in s.kafka_offsets(3) {
        assert_eq!(committed, end);
    }
    assert_eq!(kills, 2 * ROUNDS);
}

/// Loads events, streams them, adds updates, drains with SIGTERM: the table and the group's
/// offsets must end exactly at the model and the partitions' ends.
fn stream_and_drain(name: &str, target: Target) -> Setup {
    let s = Setup::build(
        name,
        "interval = \"1s\"\ncommit_interval = \"2s\"",
        "enabled = false",
        target,
    );
    produce(&s.brokers, &s.topic, 200, 2, None);
    let mut floe = s.start("a");
    s.wait_for(&model(200, None), &mut floe, "a");
    produce(&s.brokers, &s.topic, 200, 2, Some(2));
    std::thread::sleep(Duration::from_millis(1500));
    signal(&floe, "-TERM");
    assert!(
        wait_exit(&mut floe, Duration::from_secs(30)).success(),
        "{}",
        s.log("a")
    );
    assert_eq!(s.rows().unwrap(), model(200, Some(2)));
    for (committed, end) in s.kafka_offsets(2) {
        assert_eq!(committed, end);
    }
    s
}

#[test]
fn streams_into_s3_tables_with_s3_staging() {
    let s = stream_and_drain("run_s3tables", block_on(Target::s3tables()));
    // Staged deltas were written to the staging bucket and deleted after their commits.
    let Target::S3Tables {
        endpoint,
        staging_bucket,
        ..
    } = &s.target
    else {
        unreachable!()
    };
    let left = block_on(
        s3_client(endpoint)
            .list_objects_v2()
            .bucket(staging_bucket)
            .send(),
    )
    .unwrap();
    assert_eq!(left.key_count(), Some(0), "{:?}", left.contents());
    assert!(s.log("a").contains("\"committed\""));
    // staging.manage_lifecycle added an expiration rule for the staging prefix.
    let lifecycle = block_on(
        s3_client(endpoint)
            .get_bucket_lifecycle_configuration()
            .bucket(staging_bucket)
            .send(),
    )
    .expect("the staging bucket has a lifecycle configuration");
    let rule = &lifecycle.rules()[0];
    assert_eq!(rule.expiration().and_then(|e| e.days()), Some(2));
    assert_eq!(rule.filter().and_then(|f| f.prefix()), Some("deltas/"));
}

#[test]
fn streams_into_a_rest_catalog_with_sigv4() {
    let s = stream_and_drain("run_rest", block_on(Target::rest()));
    // Its staging bucket has no expiration rule and Floe was not asked to add one.
    assert!(s.log("a").contains("no expiration rule"), "{}", s.log("a"));
}

/// The rows (id, email, balance) of the table whose metadata is at `location` on S3, as
/// DuckDB reads them.
fn s3_rows(location: &str, endpoint: &str, key: &str, secret: &str) -> Value {
    support::iceberg_read(&[
        "duckdb",
        "--metadata",
        location,
        "--s3-endpoint",
        endpoint.trim_start_matches("http://"),
        "--s3-key",
        key,
        "--s3-secret",
        secret,
        "--order-by",
        "id",
        "--columns",
        "id,email,balance",
    ])["rows"]
        .clone()
}

/// A table of the local catalog under `data`, as DuckDB reads it.
pub(crate) fn local_rows(data: &std::path::Path, table: &str, columns: &str) -> Option<Value> {
    if !data.join("catalog.db").exists() {
        return None;
    }
    let data = data.canonicalize().unwrap();
    let out = Command::new(support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/iceberg_read.py"
        ))
        .args([
            "pyiceberg-sql",
            "--uri",
            &format!("sqlite:///{}/catalog.db", data.display()),
            "--warehouse",
            &format!("file://{}/warehouse", data.display()),
            "--catalog-name",
            "floe",
            "--table",
            table,
            "--columns",
            "id",
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let metadata = info["metadata_location"].as_str()?.to_string();
    let read = support::iceberg_read(&[
        "duckdb",
        "--metadata",
        &metadata,
        "--order-by",
        "id",
        "--columns",
        columns,
    ]);
    Some(read["rows"].clone())
}

#[test]
fn a_random_stream_over_two_tables_with_toast_and_a_schema_change_ends_exact() {
    let brokers = support::kafka_brokers();
    let dir = tempfile::tempdir().unwrap();
    let topics = [support::unique("rand_a"), support::unique("rand_b")];
    let model_path = dir.path().join("model.json");
    let out = Command::new(support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/fixtures/random_stream.py"
        ))
        .args(["--brokers", &brokers, "--topics", &topics.join(",")])
        .args(["--events", "10000", "--partitions", "3", "--seed", "11"])
        .arg("--model")
        .arg(&model_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model: Value = serde_json::from_slice(&std::fs::read(&model_path).unwrap()).unwrap();

    let data = dir.path().join("data");
    let config = dir.path().join("connector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{}"
topics = ["{}", "{}"]
[tables]
default_namespace = "rand"
[catalog]
type = "local"
path = "{}"
[flush]
interval = "1s"
commit_interval = "2s"
max_rows = 1500
[metrics]
enabled = false
"#,
            support::unique("group"),
            topics[0],
            topics[1],
            data.display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("floe.log");
    let mut floe = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["run", "--config"])
        .arg(&config)
        .env("FLOE_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = false;
    while Instant::now() < deadline && !done {
        assert!(
            floe.try_wait().unwrap().is_none(),
            "floe exited:\n{}",
            log()
        );
        done = topics.iter().all(|t| {
            local_rows(&data, &format!("rand.{t}"), "id,name,bio,tier").as_ref() == Some(&model[t])
        });
        if !done {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    signal(&floe, "-TERM");
    assert!(
        wait_exit(&mut floe, Duration::from_secs(30)).success(),
        "{}",
        log()
    );
    for t in &topics {
        let rows = local_rows(&data, &format!("rand.{t}"), "id,name,bio,tier").unwrap();
        let want = &model[t];
        assert_eq!(
            rows.as_array().map(Vec::len),
            want.as_array().map(Vec::len),
            "row count of {t}"
        );
        let differing: Vec<(&Value, &Value)> = rows
            .as_array()
            .unwrap()
            .iter()
            .zip(want.as_array().unwrap())
            .filter(|(a, b)| a != b)
            .collect();
        assert!(
            differing.is_empty(),
            "table rand.{t}: (table, model) differ in {differing:?}"
        );
    }
    assert!(done);
}
