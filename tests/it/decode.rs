//! The dead-letter policy against the real Kafka fixture (tansu): a record that cannot be
//! decoded is produced to the dead-letter topic with its key, value and headers, plus the
//! floe.* headers naming the error and where the record came from.

use std::path::Path;
use std::time::Duration;

use floe::config::{self, Config};
use floe::decode::policy::{ERROR_HEADER, OFFSET_HEADER, PARTITION_HEADER, TOPIC_HEADER};
use floe::decode::{Decoder, ErrorPolicy, KafkaRecord, PolicyOutcome};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::support;

fn dlq_config(brokers: &str, topic: &str, dlq: &str) -> Config {
    config::load_str(
        &format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
[catalog]
type = "local"
[errors]
policy = "dlq"
dlq_topic = "{dlq}"
"#,
            group = support::unique("dlq_group")
        ),
        Path::new("test.toml"),
        std::iter::empty(),
    )
    .expect("valid config")
}

#[tokio::test]
async fn undecodable_records_go_to_the_dead_letter_topic_with_their_origin() {
    let brokers = support::kafka_brokers();
    let topic = support::unique("dbz_src");
    let dlq = support::unique("dbz_dlq");
    let config = dlq_config(&brokers, &topic, &dlq);

    support::create_topic(&brokers, &dlq, 1).await;

    let key = br#"{"id":1004}"#;
    let value = br#"{"before":null,"after":{"id":1004},"op":"x","source":{}}"#;
    let record = KafkaRecord {
        topic: &topic,
        partition: 2,
        offset: 41,
        timestamp: None,
        key: Some(key),
        value: Some(value),
        headers: vec![("trace-id", Some(b"abc-123")), ("empty", None)],
    };
    let mut decoder = Decoder::new(&config.decode, &config.tables);
    let error = decoder
        .decode(&record)
        .expect_err("op x is not a Debezium op");
    let reason = error.to_string();
    assert_eq!(
        reason,
        format!(
            "cannot decode record {topic}/2@41: unknown op \"x\"; expected one of c, u, d, r, t"
        )
    );

    let policy = ErrorPolicy::new(&config.errors, &config.kafka).expect("dlq producer");
    let outcome = policy
        .handle(error, &record)
        .await
        .expect("dead letter produced");
    assert_eq!(
        outcome,
        PolicyOutcome::DeadLettered {
            partition: 0,
            offset: 0
        }
    );
    assert_eq!(policy.dead_lettered(), 1);

    let consumer: StreamConsumer = floe::source::consumer_config(&config.kafka)
        .create()
        .expect("consumer");
    {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&dlq, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
    }
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a dead letter within 60s")
        .expect("consume");
    assert_eq!(message.key(), Some(&key[..]));
    assert_eq!(message.payload(), Some(&value[..]));
    let headers: Vec<(String, Option<Vec<u8>>)> = message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect();
    let text = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        headers,
        [
            ("trace-id".to_string(), text("abc-123")),
            ("empty".to_string(), None),
            (ERROR_HEADER.to_string(), text(&reason)),
            (TOPIC_HEADER.to_string(), text(&topic)),
            (PARTITION_HEADER.to_string(), text("2")),
            (OFFSET_HEADER.to_string(), text("41")),
        ]
    );
}

/// The Schema Registry client against the registry fixture: schemas by id, basic and bearer
/// authentication, a registry answering 503 for a while, unknown ids, a registry not there.
mod schema_registry {
    use std::time::Duration;

    use floe::config::{RegistryAuth, SchemaRegistryConfig, Secret};
    use floe::decode::{FetchError, SchemaSource};
    use floe::retry::Backoff;
    use floe::source::registry::Registry;

    use crate::support::SchemaRegistry;

    const SCHEMA: &str = r#"{"type":"record","name":"Key","namespace":"a.b","fields":[{"name":"id","type":"long"}],"connect.name":"a.b.Key"}"#;
    const QUICK: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(50), 4);

    /// Registers SCHEMA as confluent-kafka's serializer does; returns its id.
    fn register(registry: &SchemaRegistry, auth: &RegistryAuth) -> u32 {
        let client = reqwest::blocking::Client::new();
        let mut request = client
            .post(format!("{}/subjects/t-key/versions", registry.url))
            .json(&serde_json::json!({ "schema": SCHEMA }));
        request = match auth {
            RegistryAuth::None => request,
            RegistryAuth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            RegistryAuth::Bearer(token) => request.bearer_auth(token.expose()),
        };
        let answer: serde_json::Value = request
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap();
        answer["id"].as_u64().expect("an id") as u32
    }

    fn client(url: &str, auth: RegistryAuth) -> Registry {
        Registry::with_backoff(
            SchemaRegistryConfig {
                url: url.to_string(),
                auth,
                ca_pem: None,
                timeout: Duration::from_secs(5),
            },
            QUICK,
        )
    }

    // The blocking client must not run on the test's async runtime: these are plain tests.
    #[test]
    fn schemas_are_fetched_by_id_with_basic_or_bearer_auth() {
        let basic = RegistryAuth::Basic {
            username: "floe".into(),
            password: Secret::new("s3cret"),
        };
        let registry = SchemaRegistry::start(&["--user", "floe:s3cret"]);
        let id = register(&registry, &basic);
        assert_eq!(
            client(&registry.url, basic).fetch(id),
            Ok(SCHEMA.to_string())
        );
        let wrong = RegistryAuth::Basic {
            username: "floe".into(),
            password: Secret::new("wrong"),
        };
        match client(&registry.url, wrong).fetch(id) {
            Err(FetchError::Unavailable(m)) => assert!(m.contains("401"), "{m}"),
            other => panic!("{other:?}"),
        }
        match client(&registry.url, RegistryAuth::None).fetch(id + 1) {
            Err(FetchError::Unavailable(m)) => assert!(m.contains("credentials"), "{m}"),
            other => panic!("{other:?}"),
        }
        let requests = registry.requests();
        assert!(!requests.contains("s3cret"), "{requests}");

        let bearer = RegistryAuth::Bearer(Secret::new("tok-1"));
        let registry = SchemaRegistry::start(&["--token", "tok-1"]);
        let id = register(&registry, &bearer);
        assert_eq!(
            client(&registry.url, bearer.clone()).fetch(id),
            Ok(SCHEMA.to_string())
        );
        match client(&registry.url, bearer).fetch(id + 41) {
            Err(FetchError::Unusable(m)) => assert!(m.contains(&format!("{}", id + 41)), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_https_registry_is_trusted_through_the_configured_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().to_str().unwrap();
        let registry = SchemaRegistry::start(&["--tls", tls]);
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let with_ca = |ca_pem: Option<Vec<u8>>| {
            Registry::with_backoff(
                SchemaRegistryConfig {
                    url: registry.url.clone(),
                    auth: RegistryAuth::None,
                    ca_pem,
                    timeout: Duration::from_secs(5),
                },
                QUICK,
            )
        };
        // Registered through the same trust, with the test's own client.
        let cert = reqwest::Certificate::from_pem(&ca).unwrap();
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(cert)
            .build()
            .unwrap();
        let answer: serde_json::Value = client
            .post(format!("{}/subjects/t-key/versions", registry.url))
            .json(&serde_json::json!({ "schema": SCHEMA }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = answer["id"].as_u64().unwrap() as u32;
        assert_eq!(with_ca(Some(ca)).fetch(id), Ok(SCHEMA.to_string()));
        match with_ca(None).fetch(id) {
            Err(FetchError::Unavailable(m)) => assert!(m.contains("certificate"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_registry_that_is_down_for_a_while_is_retried_and_one_that_stays_down_is_reported() {
        // The fixture's first three answers are 503: the fetch retries through them.
        let registry = SchemaRegistry::start(&["--fail-first", "3"]);
        let mut failing = 0;
        let id = loop {
            // The registration itself may meet the 503s first.
            let answer = reqwest::blocking::Client::new()
                .post(format!("{}/subjects/t-key/versions", registry.url))
                .json(&serde_json::json!({ "schema": SCHEMA }))
                .send()
                .unwrap();
            if answer.status().is_success() {
                break answer.json::<serde_json::Value>().unwrap()["id"]
                    .as_u64()
                    .unwrap() as u32;
            }
            failing += 1;
            assert!(failing <= 3, "more 503s than the fixture was asked for");
        };
        let registry2 = SchemaRegistry::start(&["--fail-first", "3"]);
        let url2 = registry2.url.clone();
        // A fresh registry: the schema is not there, so 503 x3, then 404.
        match client(&url2, RegistryAuth::None).fetch(id) {
            Err(FetchError::Unusable(m)) => assert!(m.contains("not in the registry"), "{m}"),
            other => panic!("{other:?}"),
        }
        let requests = registry2.requests();
        assert_eq!(
            requests.lines().filter(|l| l.ends_with(" 503")).count(),
            3,
            "{requests}"
        );
        assert_eq!(
            client(&registry.url, RegistryAuth::None).fetch(id),
            Ok(SCHEMA.to_string())
        );

        // Nothing listening: retried, then reported as unavailable (never as the record's fault).
        let gone = {
            let r = SchemaRegistry::start(&[]);
            let url = r.url.clone();
            drop(r);
            url
        };
        match client(&gone, RegistryAuth::None).fetch(1) {
            Err(FetchError::Unavailable(m)) => {
                assert!(m.contains("gave up after 4 retries"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
