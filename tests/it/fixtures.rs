//! Smoke tests of the test environment itself: each fixture works from Rust (or, for the
//! readers, from the Python venv), so later failures point at Floe, not at the fixtures.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_credential_types::Credentials;
use floe::config::{self, CatalogConfig, Config};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::support;

fn load_config(toml: &str) -> Config {
    config::load_str(toml, Path::new("test.toml"), std::iter::empty()).expect("valid config")
}

fn kafka_test_config(brokers: &str, topic: &str, group: &str) -> Config {
    load_config(&format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
[kafka.properties]
"session.timeout.ms" = 10000
[catalog]
type = "local"
"#
    ))
}

/// Reads `n` messages, returning (partition, offset, key, value) in arrival order.
async fn consume(consumer: &StreamConsumer, n: usize) -> Vec<(i32, i64, String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} messages", got.len()))
            .expect("consume");
        let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap_or_default().to_vec()).unwrap();
        got.push((
            msg.partition(),
            msg.offset(),
            text(msg.key()),
            text(msg.payload()),
        ));
    }
    got
}

#[tokio::test]
async fn kafka_keyed_records_round_trip_with_committed_offsets() {
    let brokers = support::kafka_brokers();
    let topic = support::unique("smoke_kafka");
    let group = support::unique("smoke_group");
    let config = kafka_test_config(&brokers, &topic, &group);
    support::create_topic(&brokers, &topic, 3).await;

    let producer: FutureProducer = floe::source::client_config(&config.kafka)
        .create()
        .expect("producer");
    let send = |i: usize| {
        let key = format!("k{}", i % 5);
        let value = format!("v{i}");
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce v{i}: {e}"));
        }
    };
    for i in 0..20 {
        send(i).await;
    }

    let consumer: StreamConsumer = floe::source::consumer_config(&config.kafka)
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let first = consume(&consumer, 20).await;

    // One key always lands in one partition, in produce order.
    let mut by_key: BTreeMap<String, Vec<(i32, usize)>> = BTreeMap::new();
    for (partition, _, key, value) in &first {
        let i: usize = value[1..].parse().unwrap();
        by_key.entry(key.clone()).or_default().push((*partition, i));
    }
    assert_eq!(by_key.len(), 5);
    for (key, seen) in &by_key {
        assert!(
            seen.iter().all(|(p, _)| *p == seen[0].0),
            "{key} in several partitions"
        );
        let order: Vec<usize> = seen.iter().map(|(_, i)| *i).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "{key} out of order");
        assert_eq!(order.len(), 4);
    }

    // Commit explicit next offsets, as Floe does after an Iceberg commit.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, _, _) in &first {
        let e = next.entry(*partition).or_insert(0);
        *e = (*e).max(offset + 1);
    }
    {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset(&topic, *p, Offset::Offset(*o))
                .unwrap();
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .expect("commit offsets");
    }
    consumer.unsubscribe();
    drop(consumer);

    // A new member of the group sees the committed offsets and resumes after them.
    for i in 20..23 {
        send(i).await;
    }
    let consumer: StreamConsumer = floe::source::consumer_config(&config.kafka)
        .create()
        .expect("second consumer");
    {
        let mut tpl = TopicPartitionList::new();
        for p in 0..3 {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        for p in 0..3 {
            let want = next
                .get(&p)
                .copied()
                .map(Offset::Offset)
                .unwrap_or(Offset::Invalid);
            let got = committed.find_partition(&topic, p).unwrap().offset();
            assert_eq!(got, want, "partition {p}");
        }
    }
    consumer.subscribe(&[&topic]).expect("subscribe");
    let rest = consume(&consumer, 3).await;
    let mut values: Vec<String> = rest.into_iter().map(|(_, _, _, v)| v).collect();
    values.sort();
    assert_eq!(values, vec!["v20", "v21", "v22"]);
    consumer.unsubscribe();
}

#[tokio::test]
async fn s3tables_metadata_location_round_trip_and_stale_token_conflict() {
    let endpoint = support::moto_endpoint();
    let bucket_name = support::unique("smoke").replace('_', "-");
    // moto's fixed account id.
    let arn = format!("arn:aws:s3tables:us-east-1:123456789012:bucket/{bucket_name}");
    let config = load_config(&format!(
        r#"
[kafka]
brokers = "127.0.0.1:1"
topics = ["t"]
[staging]
bucket = "staging"
[catalog]
type = "s3tables"
table_bucket_arn = "{arn}"
endpoint = "{endpoint}"
s3_endpoint = "{endpoint}"
"#
    ));
    let CatalogConfig::S3Tables(catalog) = &config.catalog else {
        panic!("expected s3tables")
    };
    let sdk = support::static_sdk_config("test", "test");
    let tables = floe::catalog::aws::s3tables_client(&sdk, catalog);
    let s3 =
        floe::catalog::aws::s3_client(&sdk, &catalog.region, catalog.s3_endpoint.as_deref(), false);

    let created = tables
        .create_table_bucket()
        .name(&bucket_name)
        .send()
        .await
        .expect("create table bucket");
    assert_eq!(created.arn(), arn);
    tables
        .create_namespace()
        .table_bucket_arn(&arn)
        .namespace("smoke")
        .send()
        .await
        .expect("create namespace");
    tables
        .create_table()
        .table_bucket_arn(&arn)
        .namespace("smoke")
        .name("events")
        .format(aws_sdk_s3tables::types::OpenTableFormat::Iceberg)
        .send()
        .await
        .expect("create table");

    let loc = tables
        .get_table_metadata_location()
        .table_bucket_arn(&arn)
        .namespace("smoke")
        .name("events")
        .send()
        .await
        .expect("get metadata location");
    assert_eq!(
        loc.metadata_location(),
        None,
        "a new table has no metadata yet"
    );
    let warehouse = loc.warehouse_location().to_string();
    let warehouse_bucket = warehouse
        .strip_prefix("s3://")
        .expect("warehouse is an s3:// location")
        .trim_end_matches('/')
        .to_string();
    let token = loc.version_token().to_string();

    // Files go into the table's warehouse with plain S3 PUT / GET.
    let key = "metadata/00000-smoke.metadata.json";
    let body = br#"{"format-version": 2}"#.to_vec();
    s3.put_object()
        .bucket(&warehouse_bucket)
        .key(key)
        .body(body.clone().into())
        .send()
        .await
        .expect("put into table warehouse");
    let got = s3
        .get_object()
        .bucket(&warehouse_bucket)
        .key(key)
        .send()
        .await
        .expect("get from table warehouse")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(got.as_ref(), body.as_slice());
    // Like AWS, the warehouse refuses LIST.
    let listed = s3.list_objects_v2().bucket(&warehouse_bucket).send().await;
    assert!(
        listed.is_err(),
        "LIST inside a table warehouse must be refused"
    );

    let metadata_location = format!("{warehouse}/{key}");
    let updated = tables
        .update_table_metadata_location()
        .table_bucket_arn(&arn)
        .namespace("smoke")
        .name("events")
        .version_token(&token)
        .metadata_location(&metadata_location)
        .send()
        .await
        .expect("update metadata location (the launcher corrects moto's response)");
    assert_eq!(updated.namespace(), ["smoke".to_string()]);
    assert!(
        updated.table_arn().ends_with("/table/events"),
        "{}",
        updated.table_arn()
    );
    assert_eq!(updated.metadata_location(), metadata_location);
    assert_ne!(updated.version_token(), token);

    let now = tables
        .get_table_metadata_location()
        .table_bucket_arn(&arn)
        .namespace("smoke")
        .name("events")
        .send()
        .await
        .expect("get metadata location again");
    assert_eq!(now.metadata_location(), Some(metadata_location.as_str()));
    assert_eq!(now.version_token(), updated.version_token());

    let stale = tables
        .update_table_metadata_location()
        .table_bucket_arn(&arn)
        .namespace("smoke")
        .name("events")
        .version_token(&token)
        .metadata_location(&metadata_location)
        .send()
        .await
        .expect_err("a stale version token must be refused");
    assert!(
        stale.into_service_error().is_conflict_exception(),
        "a stale version token is a conflict"
    );
}

#[test]
fn duckdb_reads_a_table_pyiceberg_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}/catalog.db", dir.path().display());
    let warehouse = format!("file://{}/warehouse", dir.path().display());
    std::fs::create_dir_all(dir.path().join("warehouse")).unwrap();
    let written = support::iceberg_read(&[
        "pyiceberg-write-sample",
        "--uri",
        &uri,
        "--warehouse",
        &warehouse,
        "--table",
        "smoke.sample",
    ]);
    let metadata = written["metadata_location"]
        .as_str()
        .expect("metadata location");
    let read = support::iceberg_read(&["duckdb", "--metadata", metadata, "--order-by", "id"]);
    assert_eq!(
        read["rows"],
        serde_json::json!([
            [1, "alice", "10.50", "2024-01-01T00:00:00.000000+00:00"],
            [2, "bob", "-3.25", "2024-06-15T12:34:56.789012+00:00"],
            [3, null, null, null],
        ])
    );
    let names: Vec<&str> = read["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "name", "amount", "ts"]);
}

async fn weed_get(url: &str, auth: WeedAuth<'_>) -> (u16, serde_json::Value) {
    let http = reqwest::Client::new();
    let mut request = http.get(url).build().unwrap();
    match auth {
        WeedAuth::None => {}
        WeedAuth::Sigv4 { key, secret } => {
            let credentials = Credentials::new(key, secret, None, None, "floe-tests");
            floe::catalog::sigv4::sign_request(&mut request, &credentials, "us-east-1", "s3tables")
                .expect("sign");
        }
        WeedAuth::Bearer(token) => {
            request.headers_mut().insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
    }
    let response = http.execute(request).await.expect("request to SeaweedFS");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

enum WeedAuth<'a> {
    None,
    Sigv4 { key: &'a str, secret: &'a str },
    Bearer(&'a str),
}

#[tokio::test]
async fn rest_catalog_accepts_sigv4_and_oauth2_and_refuses_bad_signatures() {
    let rest = support::weed_rest();
    let bucket = support::weed_table_bucket();
    let (key, secret) = support::weed_credentials();
    let sigv4 = WeedAuth::Sigv4 {
        key: &key,
        secret: &secret,
    };

    let (status, config) =
        weed_get(&format!("{rest}/v1/config?warehouse=s3://{bucket}"), sigv4).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["overrides"]["prefix"], bucket.as_str(), "{config}");

    // /v1/config is open on SeaweedFS; listing namespaces is where authentication shows.
    let namespaces = format!("{rest}/v1/{bucket}/namespaces");
    let (status, body) = weed_get(
        &namespaces,
        WeedAuth::Sigv4 {
            key: &key,
            secret: &secret,
        },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["namespaces"].is_array(), "{body}");
    let (status, body) = weed_get(
        &namespaces,
        WeedAuth::Sigv4 {
            key: &key,
            secret: "not-the-secret",
        },
    )
    .await;
    assert_eq!(status, 403, "a wrong secret must be refused: {body}");
    let (status, _) = weed_get(&namespaces, WeedAuth::None).await;
    assert_eq!(status, 403, "an unsigned request must be refused");

    // OAuth2 client credentials, then the bearer token.
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{rest}/v1/oauth/tokens"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", key.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .expect("token request")
        .error_for_status()
        .expect("token issued")
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().expect("access_token");
    let (status, body) = weed_get(&namespaces, WeedAuth::Bearer(token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = weed_get(&namespaces, WeedAuth::Bearer(&format!("{token}x"))).await;
    assert_eq!(status, 401, "a tampered token must be refused");
}
