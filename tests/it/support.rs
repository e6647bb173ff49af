//! Where the fixtures are, unique names for test resources, and the independent readers.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("FLOE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/floe")
        })
}

pub fn kafka_brokers() -> String {
    let brokers = var_or("FLOE_TEST_KAFKA", "127.0.0.1:19092");
    require_tcp(&brokers, "Kafka (tansu)");
    brokers
}

pub fn moto_endpoint() -> String {
    let url = var_or("FLOE_TEST_MOTO", "http://127.0.0.1:15000");
    require_tcp(url.trim_start_matches("http://"), "moto (S3 + S3 Tables)");
    url
}

pub fn weed_rest() -> String {
    let url = var_or("FLOE_TEST_WEED_REST", "http://127.0.0.1:8181");
    require_tcp(url.trim_start_matches("http://"), "SeaweedFS Iceberg REST");
    url
}

pub fn weed_s3() -> String {
    let url = var_or("FLOE_TEST_WEED_S3", "http://127.0.0.1:8333");
    require_tcp(url.trim_start_matches("http://"), "SeaweedFS S3");
    url
}

pub fn weed_credentials() -> (String, String) {
    (
        var_or("FLOE_TEST_WEED_ACCESS_KEY", "floetest"),
        var_or("FLOE_TEST_WEED_SECRET_KEY", "floetest-secret"),
    )
}

pub fn weed_table_bucket() -> String {
    var_or("FLOE_TEST_WEED_TABLE_BUCKET", "floe-tb")
}

pub fn python() -> PathBuf {
    let python = std::env::var_os("FLOE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv/bin/python"));
    assert!(
        python.exists(),
        "the test venv's python is missing at {}: run scripts/test-env.sh up",
        python.display()
    );
    python
}

/// Panics with a hint when nothing listens at `addr`: a fixture test must not pass by
/// skipping its fixture.
pub fn require_tcp(addr: &str, what: &str) {
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "{what} is not reachable at {addr}: start the fixtures with scripts/test-env.sh up"
    );
}

/// A name no other test run uses: lowercase letters, digits and underscores, so it is valid
/// for topics, S3 Tables namespaces and tables alike.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// The seed of a randomised test: `FLOE_TEST_SEED` when set (to replay a failure), else a new
/// one. Printed either way, so a failing run says how to replay it.
pub fn seed() -> u64 {
    let seed = match std::env::var("FLOE_TEST_SEED") {
        Ok(s) => s.parse().expect("FLOE_TEST_SEED is a number"),
        Err(_) => {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
                ^ u64::from(std::process::id())
        }
    };
    eprintln!("seed {seed} (replay with FLOE_TEST_SEED={seed})");
    seed
}

/// A tiny deterministic generator for random test data and timing, seeded by [`seed`]
/// (printed, and replayable with `FLOE_TEST_SEED`).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Runs `tests/support/iceberg_read.py` (DuckDB / pyiceberg) and parses its JSON output.
pub fn iceberg_read(args: &[&str]) -> serde_json::Value {
    try_iceberg_read(args).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`iceberg_read`], with the reader's error returned.
pub fn try_iceberg_read(args: &[&str]) -> Result<serde_json::Value, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/iceberg_read.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run iceberg_read.py");
    if !out.status.success() {
        return Err(format!(
            "iceberg_read.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout).expect("iceberg_read.py prints JSON"))
}

/// AWS SDK settings with fixed credentials (moto accepts any; SeaweedFS checks them).
pub fn static_sdk_config(key: &str, secret: &str) -> aws_config::SdkConfig {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            key,
            secret,
            None,
            None,
            "floe-tests",
        )))
        .build()
}

/// A GET to SeaweedFS's Iceberg REST catalog, signed with SigV4 (service `s3tables`).
pub async fn weed_get_signed(url: &str) -> (u16, serde_json::Value) {
    let (key, secret) = weed_credentials();
    let http = reqwest::Client::new();
    let mut request = http.get(url).build().unwrap();
    let credentials = aws_credential_types::Credentials::new(key, secret, None, None, "floe-tests");
    floe::catalog::sigv4::sign_request(&mut request, &credentials, "us-east-1", "s3tables")
        .expect("sign");
    let response = http.execute(request).await.expect("request to SeaweedFS");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Fails the test for wrong rows (missing, duplicated or different), and makes every later
/// attempt of the same test in this nextest run fail at once: the retries configured for the
/// multi-process tests are there for the test broker's group stall only, never to turn a run
/// with wrong rows into a pass.
pub fn wrong_rows(message: String) -> ! {
    if let Some(marker) = wrong_rows_marker() {
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, &message).unwrap();
    }
    panic!("wrong rows (every retry of this test in this run fails too):\n{message}");
}

/// Fails a retried attempt of a test whose earlier attempt found wrong rows.
pub fn no_earlier_wrong_rows() {
    if let Some(marker) = wrong_rows_marker()
        && let Ok(earlier) = std::fs::read_to_string(&marker)
    {
        panic!(
            "an earlier attempt of this test in this run found wrong rows; a retry may only \
             absorb the broker's group stall:\n{earlier}"
        );
    }
}

/// Where [`wrong_rows`] leaves its mark: per nextest run and test (none outside nextest, which
/// does not retry).
fn wrong_rows_marker() -> Option<PathBuf> {
    let run = std::env::var("NEXTEST_RUN_ID").ok()?;
    let test = std::env::var("NEXTEST_TEST_NAME").ok()?;
    let name: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Some(
        std::env::temp_dir()
            .join("floe-test-wrong-rows")
            .join(run)
            .join(name),
    )
}

/// `text` (a process's output, named `what`) must not hold `secret`.
pub fn assert_no_secret(text: &str, secret: &str, what: &str) {
    assert!(
        secret.len() >= 8,
        "a secret this short would match by chance"
    );
    if let Some(at) = text.find(secret) {
        let line = text[..at].lines().count();
        panic!("{what} prints a configured secret (line {line})");
    }
}

#[test]
#[should_panic(expected = "stderr prints a configured secret (line 2)")]
fn a_secret_in_a_log_fails_the_test() {
    assert_no_secret(
        "{\"level\":\"INFO\"}\n{\"key\":\"floe-test-secret-7Qv2Zr\"}\n",
        "floe-test-secret-7Qv2Zr",
        "stderr",
    );
}

/// Creates `topic` with `partitions` on the broker at `brokers` (the test broker does not
/// create topics on first use).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// `scripts/fixtures/schema_registry.py` on a free port of 127.0.0.1, stopped when dropped.
pub struct SchemaRegistry {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    pub url: String,
}

impl SchemaRegistry {
    /// Starts a registry; `args` are the fixture's options (`--user`, `--token`,
    /// `--fail-first`, `--store`, `--port`, `--tls`).
    pub fn start(args: &[&str]) -> SchemaRegistry {
        use std::io::BufRead as _;
        let mut child = Command::new(python())
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("scripts/fixtures/schema_registry.py"),
            )
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the schema registry fixture");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut port = String::new();
        out.read_line(&mut port)
            .expect("the registry prints its port");
        let port: u16 = port.trim().parse().expect("the registry prints its port");
        SchemaRegistry {
            child,
            out,
            url: format!(
                "{}://127.0.0.1:{port}",
                if args.contains(&"--tls") {
                    "https"
                } else {
                    "http"
                }
            ),
        }
    }

    /// Stops the registry; returns the requests it answered, one "METHOD PATH STATUS" a line.
    pub fn requests(mut self) -> String {
        use std::io::Read as _;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        let _ = self.out.read_to_string(&mut text);
        text
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
