use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
topics = ["dbserver1.inventory.customers"]

[catalog]
type = "local"
path = "/tmp/floe"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_env(text, &[])
}

fn load_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_str(
        text,
        Path::new("connector.toml"),
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn err(text: &str) -> String {
    load(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn minimal_local_config_gets_the_documented_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.kafka.brokers, vec!["127.0.0.1:9092"]);
    assert_eq!(c.kafka.group_id, "floe");
    assert_eq!(c.kafka.start_from, StartFrom::Earliest);
    assert!(matches!(c.errors, ErrorsConfig::Fail));
    assert_eq!(c.flush.interval, Duration::from_secs(10));
    assert_eq!(c.flush.commit_interval, Duration::from_secs(60));
    assert_eq!(c.flush.max_bytes, 32 * 1024 * 1024);
    assert_eq!(c.flush.max_buffered_bytes, 256 * 1024 * 1024);
    assert_eq!(c.flush.zstd_level, 1);
    assert_eq!(c.metrics.listen.port(), 9464);
    match &c.staging {
        StagingConfig::Local { directory } => {
            assert_eq!(directory, Path::new("/tmp/floe/staging"))
        }
        other => panic!("expected local staging, got {other:?}"),
    }
}

#[test]
fn human_durations_and_sizes_are_parsed() {
    let c = load(&format!(
        "{MINIMAL}\n[flush]\ninterval = \"1m 30s\"\ncommit_interval = \"5m\"\nmax_bytes = \"16 MiB\"\nmax_buffered_bytes = \"1GiB\"\ntarget_file_size = 268435456\n"
    ))
    .unwrap();
    assert_eq!(c.flush.interval, Duration::from_secs(90));
    assert_eq!(c.flush.commit_interval, Duration::from_secs(300));
    assert_eq!(c.flush.max_bytes, 16 * 1024 * 1024);
    assert_eq!(c.flush.max_buffered_bytes, 1024 * 1024 * 1024);
    assert_eq!(c.flush.target_file_size, 256 * 1024 * 1024);
}

#[test]
fn unknown_key_is_named_with_its_section() {
    let e = err(&MINIMAL.replace("topics =", "brokerz = 1\ntopics ="));
    assert!(
        e.starts_with("connector.toml: key `kafka.brokerz`: unknown key; expected one of"),
        "{e}"
    );
}

#[test]
fn missing_required_key_is_named() {
    let e = err("[kafka]\ntopics = [\"t\"]\n[catalog]\ntype = \"local\"\n");
    assert_eq!(
        e,
        "connector.toml: key `kafka.brokers`: required key is missing"
    );
    let e = err("[kafka]\nbrokers = \"b:1\"\ntopics = [\"t\"]\n");
    assert_eq!(e, "connector.toml: key `catalog`: required key is missing");
}

#[test]
fn wrong_type_names_the_key_and_the_expected_type() {
    let e = err(&format!("{MINIMAL}\n[flush]\nmax_rows = \"many\"\n"));
    assert!(
        e.starts_with("connector.toml: key `flush.max_rows`: invalid type"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[flush]\ninterval = \"soon\"\n"));
    assert!(
        e.starts_with("connector.toml: key `flush.interval`:"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[errors]\npolicy = \"ignore\"\n"));
    assert!(e.contains("key `errors.policy`"), "{e}");
    assert!(e.contains("unknown variant `ignore`"), "{e}");
}

#[test]
fn toml_syntax_error_gives_line_and_column() {
    let e = err("[kafka\nbrokers = 1");
    assert!(
        e.starts_with("config file connector.toml is not valid TOML"),
        "{e}"
    );
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn unknown_catalog_type_is_refused() {
    let e = err(&MINIMAL.replace("type = \"local\"", "type = \"glue\""));
    assert_eq!(
        e,
        "connector.toml: key `catalog.type`: unknown variant `glue`, expected one of `s3tables`, `rest`, `local`"
    );
    let e = err(&MINIMAL.replace("path = ", "uri = \"http://x\"\npath = "));
    assert!(e.starts_with("connector.toml: key `catalog"), "{e}");
    assert!(e.contains("unknown key"), "{e}");
}

#[test]
fn topics_and_topic_regex_are_exclusive() {
    let e = err(&MINIMAL.replace(
        "topics = [\"dbserver1.inventory.customers\"]",
        "topics = [\"a\"]\ntopic_regex = \"b.*\"",
    ));
    assert!(e.contains("key `kafka.topic_regex`"), "{e}");
    let e = err(&MINIMAL.replace("topics = [\"dbserver1.inventory.customers\"]", ""));
    assert!(e.contains("key `kafka.topics`: set either"), "{e}");
    let e = err(&MINIMAL.replace(
        "topics = [\"dbserver1.inventory.customers\"]",
        "topic_regex = \"(\"",
    ));
    assert!(
        e.contains("key `kafka.topic_regex`: not a valid regex"),
        "{e}"
    );
}

#[test]
fn reserved_kafka_properties_are_refused() {
    let e = err(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"enable.auto.commit\" = true\n"
    ));
    assert!(e.contains("kafka.properties.\"enable.auto.commit\""), "{e}");
    assert!(e.contains("only after the Iceberg commit"), "{e}");
}

#[test]
fn kafka_properties_accept_any_scalar_and_hide_secrets_in_debug() {
    let c = load(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"session.timeout.ms\" = 45000\n\"sasl.password\" = \"hunter2\"\n"
    ))
    .unwrap();
    assert_eq!(c.kafka.properties.0["session.timeout.ms"], "45000");
    assert_eq!(c.kafka.properties.0["sasl.password"], "hunter2");
    let debug = format!("{:?}", c);
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("45000"), "{debug}");
}

#[test]
fn dlq_policy_needs_a_topic_that_is_not_consumed() {
    let e = err(&format!("{MINIMAL}\n[errors]\npolicy = \"dlq\"\n"));
    assert!(e.contains("key `errors.dlq_topic`: required"), "{e}");
    let e = err(&format!(
        "{MINIMAL}\n[errors]\npolicy = \"dlq\"\ndlq_topic = \"dbserver1.inventory.customers\"\n"
    ));
    assert!(e.contains("read again"), "{e}");
    let c = load(&format!(
        "{MINIMAL}\n[errors]\npolicy = \"dlq\"\ndlq_topic = \"floe.dlq\"\n"
    ))
    .unwrap();
    assert!(matches!(c.errors, ErrorsConfig::Dlq { ref topic } if topic == "floe.dlq"));
}

#[test]
fn flush_rules_that_span_keys() {
    let e = err(&format!(
        "{MINIMAL}\n[flush]\ninterval = \"2m\"\ncommit_interval = \"1m\"\n"
    ));
    assert!(
        e.contains("key `flush.commit_interval`: must be at least flush.interval (2m)"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[flush]\nmax_bytes = \"1GiB\"\nmax_buffered_bytes = \"512MiB\"\n"
    ));
    assert!(e.contains("key `flush.max_bytes`"), "{e}");
    let e = err(&format!("{MINIMAL}\n[flush]\nzstd_level = 0\n"));
    assert!(e.contains("key `flush.zstd_level`"), "{e}");
}

const S3TABLES: &str = r#"
[kafka]
brokers = ["b1:9092", "b2:9092"]
topic_regex = '^dbserver1\.inventory\..*'

[catalog]
type = "s3tables"
table_bucket_arn = "arn:aws:s3tables:eu-west-1:111122223333:bucket/analytics"
"#;

#[test]
fn s3tables_catalog_needs_an_s3_staging_bucket() {
    let e = err(S3TABLES);
    assert!(
        e.contains("key `staging`: required with catalog type s3tables"),
        "{e}"
    );
    let e = err(&format!("{S3TABLES}\n[staging]\ndirectory = \"/tmp/x\"\n"));
    assert!(e.contains("key `staging.directory`"), "{e}");
    let c = load(&format!(
        "{S3TABLES}\n[staging]\nbucket = \"floe-staging\"\nprefix = \"/cdc/\"\n"
    ))
    .unwrap();
    let CatalogConfig::S3Tables(cat) = &c.catalog else {
        panic!("expected s3tables")
    };
    assert_eq!(cat.region, "eu-west-1");
    assert_eq!(cat.table_bucket.bucket, "analytics");
    assert_eq!(cat.table_bucket.account, "111122223333");
    let StagingConfig::S3(s) = &c.staging else {
        panic!("expected s3 staging")
    };
    assert_eq!(s.prefix, "cdc");
    assert_eq!(s.expire_after_days, 3);
    assert!(c.kafka.topics.matches("dbserver1.inventory.orders"));
    assert!(!c.kafka.topics.matches("dbserver1.other.orders"));
}

#[test]
fn staged_changes_wait_less_than_the_lifecycle_rule_keeps_them() {
    let staging = |extra: &str| {
        load(&format!(
            "{S3TABLES}\n[staging]\nbucket = \"floe-staging\"\n{extra}"
        ))
        .map(|c| match c.staging {
            StagingConfig::S3(s) => s.max_uncommitted_age,
            StagingConfig::Local { .. } => panic!("expected s3 staging"),
        })
    };
    assert_eq!(staging("").unwrap(), Duration::from_secs(36 * 3600));
    assert_eq!(
        staging("expire_after_days = 1\n").unwrap(),
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(
        staging("max_uncommitted_age = \"5s\"\n").unwrap(),
        Duration::from_secs(5)
    );
    let e = staging("max_uncommitted_age = \"3d\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `staging.max_uncommitted_age`") && e.contains("below"),
        "{e}"
    );
    let e = err(
        "[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopics = [\"t\"]\n\n[staging]\ndirectory = \"/tmp/x\"\nmax_uncommitted_age = \"1h\"\n\n[catalog]\ntype = \"local\"\n",
    );
    assert!(e.contains("key `staging.max_uncommitted_age`"), "{e}");
}

#[test]
fn bad_table_bucket_arn_is_refused() {
    let e = err(&S3TABLES.replace(
        "arn:aws:s3tables:eu-west-1:111122223333:bucket/analytics",
        "arn:aws:s3:::analytics",
    ));
    assert!(e.contains("key `catalog.table_bucket_arn`"), "{e}");
}

const REST: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
topics = ["t"]

[staging]
bucket = "staging"

[catalog]
type = "rest"
uri = "http://127.0.0.1:8181"
warehouse = "tables"
"#;

#[test]
fn snapshot_expiry_is_off_only_on_s3_tables_rest_endpoint() {
    let expires = |extra: &str| {
        let c = load(&format!("{REST}{extra}")).unwrap();
        let CatalogConfig::Rest(r) = &c.catalog else {
            panic!()
        };
        r.expire_snapshots
    };
    assert!(expires(""));
    assert!(expires("auth = \"sigv4\"\n"));
    assert!(!expires("expire_snapshots = false\n"));
    let s3_tables = |extra: &str| {
        let text = REST.replace(
            "warehouse = \"tables\"",
            "warehouse = \"arn:aws:s3tables:us-east-1:111122223333:bucket/b\"",
        );
        let c = load(&format!("{text}auth = \"sigv4\"\n{extra}")).unwrap();
        let CatalogConfig::Rest(r) = &c.catalog else {
            panic!()
        };
        r.expire_snapshots
    };
    assert!(!s3_tables(""));
    assert!(s3_tables("expire_snapshots = true\n"));
}

#[test]
fn rest_auth_settings_must_fit_the_auth_kind() {
    let c = load(&format!("{REST}auth = \"sigv4\"\n")).unwrap();
    let CatalogConfig::Rest(r) = &c.catalog else {
        panic!()
    };
    assert!(
        matches!(&r.auth, RestAuth::Sigv4 { signing_name, signing_region: None } if signing_name == "s3tables")
    );
    let e = err(&format!("{REST}auth = \"oauth2\"\n"));
    assert!(e.contains("key `catalog.credential`: required"), "{e}");
    let e = err(&format!("{REST}auth = \"bearer\"\ncredential = \"a:b\"\n"));
    assert!(
        e.contains("key `catalog.credential`: only used with catalog.auth = \"oauth2\""),
        "{e}"
    );
    let c = load(&format!(
        "{REST}auth = \"oauth2\"\ncredential = \"client:s3cr3t\"\n"
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    let CatalogConfig::Rest(r) = &c.catalog else {
        panic!()
    };
    let RestAuth::OAuth2 {
        client_id,
        client_secret,
        ..
    } = &r.auth
    else {
        panic!()
    };
    assert_eq!(client_id, "client");
    assert_eq!(client_secret.expose(), "s3cr3t");
    let e = err(&REST.replace("http://127.0.0.1:8181", "127.0.0.1:8181"));
    assert!(e.contains("key `catalog.uri`"), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let c = load_env(
        &format!("{REST}auth = \"bearer\"\ntoken = \"from-file\"\n"),
        &[
            ("FLOE_CATALOG__TOKEN", "from-env"),
            ("FLOE_KAFKA__GROUP_ID", "12345"),
            ("FLOE_KAFKA__PROPERTIES__SASL_PASSWORD", "987"),
            ("FLOE_FLUSH__MAX_ROWS", "500"),
            ("FLOE_KAFKA__TOPICS", "[\"a\", \"b\"]"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    let CatalogConfig::Rest(r) = &c.catalog else {
        panic!()
    };
    let RestAuth::Bearer { token } = &r.auth else {
        panic!()
    };
    assert_eq!(token.expose(), "from-env");
    assert_eq!(c.kafka.group_id, "12345");
    assert_eq!(c.kafka.properties.0["sasl.password"], "987");
    assert_eq!(c.flush.max_rows, 500);
    assert!(matches!(&c.kafka.topics, TopicSelection::List(l) if l == &["a", "b"]));
}

#[test]
fn bad_environment_override_names_the_variable() {
    let e = load_env(
        &format!("{MINIMAL}\n[flush]\nmax_rows = 10\n"),
        &[("FLOE_FLUSH__MAX_ROWS", "lots")],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "environment variable FLOE_FLUSH__MAX_ROWS: expected an integer, got \"lots\""
    );
    let e = load_env(MINIMAL, &[("FLOE_FLUSH__NOPE", "1")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("(with overrides from FLOE_FLUSH__NOPE)"), "{e}");
    assert!(e.contains("key `flush.nope`: unknown key"), "{e}");
}

#[test]
fn routes_map_topics_to_tables() {
    let c = load(&format!(
        r#"{MINIMAL}
[tables]
default_namespace = "raw"

[[tables.route]]
topic = "dbserver1.inventory.customers"
table = "crm.customers"

[[tables.route]]
topic_regex = '^dbserver1\.(\w+)\.(\w+)$'
table = "${{1}}.${{2}}_v2"

[tables.overrides."crm.customers"]
primary_key = ["id"]
soft_delete = true
"#
    ))
    .unwrap();
    let t = &c.tables;
    assert_eq!(
        t.route("dbserver1.inventory.customers")
            .unwrap()
            .to_string(),
        "crm.customers"
    );
    assert_eq!(
        t.route("dbserver1.inventory.orders").unwrap().to_string(),
        "inventory.orders_v2"
    );
    assert_eq!(
        t.route("other.topic.items").unwrap().to_string(),
        "raw.items"
    );
    let s = t.settings(&"crm.customers".parse().unwrap());
    assert!(s.soft_delete);
    assert_eq!(s.primary_key.as_deref(), Some(&["id".to_string()][..]));
    assert!(!t.settings(&"raw.items".parse().unwrap()).soft_delete);
}

#[test]
fn a_partition_spec_is_read_field_by_field() {
    use crate::config::{PartitionField, PartitionTransform};
    let c = load(&format!(
        "{MINIMAL}\n[tables.overrides.\"a.b\"]\npartition_spec = [\"bucket(16, id)\", \"day(created_at)\", \"region\", \"truncate(4, sku)\"]\n"
    ))
    .unwrap();
    let field = |source: &str, transform| PartitionField {
        source: source.into(),
        transform,
    };
    assert_eq!(
        c.tables.settings(&"a.b".parse().unwrap()).partition_spec,
        vec![
            field("id", PartitionTransform::Bucket(16)),
            field("created_at", PartitionTransform::Day),
            field("region", PartitionTransform::Identity),
            field("sku", PartitionTransform::Truncate(4)),
        ]
    );
    // Other tables stay unpartitioned; an empty spec asks for nothing.
    assert!(
        c.tables
            .settings(&"a.c".parse().unwrap())
            .partition_spec
            .is_empty()
    );
    let c = load(&format!(
        "{MINIMAL}\n[tables.overrides.\"a.b\"]\npartition_spec = []\n"
    ))
    .unwrap();
    assert!(
        c.tables
            .settings(&"a.b".parse().unwrap())
            .partition_spec
            .is_empty()
    );
}

#[test]
fn bad_partition_spec_and_route_are_refused() {
    let e = err(&format!(
        "{MINIMAL}\n[tables.overrides.\"a.b\"]\npartition_spec = [\"bucket(id)\"]\n"
    ));
    assert!(
        e.contains("key `tables.overrides.\"a.b\".partition_spec`"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}\n[[tables.route]]\ntopic = \"x\"\ntable = \"no_namespace\"\n"
    ));
    assert!(e.contains("key `tables.route[0].table`"), "{e}");
    let e = err(&format!("{MINIMAL}\n[[tables.route]]\ntable = \"a.b\"\n"));
    assert!(e.contains("exactly one of `topic` or `topic_regex`"), "{e}");
}

/// `connector.toml.example` with `backend`'s block active and the others commented out, as
/// its header tells a user to do.
fn example_for(backend: &str) -> String {
    let text = include_str!("../../connector.toml.example");
    let mut out = Vec::new();
    let mut block: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# >>> backend: ") {
            out.push(line.to_string());
            block = Some((rest.split(' ').next().unwrap().to_string(), Vec::new()));
        } else if line.starts_with("# <<< backend: ") {
            let (name, lines) = block.take().expect("a block was opened");
            let active = lines.iter().any(|l| !l.is_empty() && !l.starts_with('#'));
            for l in lines {
                out.push(if l.starts_with("##") || l.is_empty() {
                    l.to_string()
                } else if name == backend && !active {
                    l.strip_prefix("# ")
                        .unwrap_or(l.trim_start_matches('#'))
                        .to_string()
                } else if name != backend && active {
                    format!("# {l}")
                } else {
                    l.to_string()
                });
            }
            out.push(line.to_string());
        } else if let Some((_, lines)) = &mut block {
            lines.push(line);
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n") + "\n"
}

#[test]
fn the_example_has_a_complete_valid_block_per_backend() {
    for backend in ["s3tables", "rest", "local"] {
        let text = example_for(backend);
        let c = load(&text).unwrap_or_else(|e| panic!("backend {backend}: {e}\n{text}"));
        assert_eq!(c.catalog.kind(), backend);
        match (&c.catalog, &c.staging) {
            (CatalogConfig::Local(local), StagingConfig::Local { directory }) => {
                assert_eq!(local.path, Path::new("floe-data"));
                assert_eq!(directory, Path::new("floe-data/staging"));
            }
            (CatalogConfig::Rest(rest), StagingConfig::S3(s3)) => {
                assert_eq!(rest.warehouse.as_deref(), Some("analytics"));
                assert!(matches!(rest.auth, RestAuth::Sigv4 { .. }));
                assert!(s3.manage_lifecycle);
            }
            (CatalogConfig::S3Tables(_), StagingConfig::S3(s3)) => {
                assert_eq!(s3.bucket, "my-floe-staging");
            }
            (catalog, staging) => panic!("{backend}: {catalog:?} with {staging:?}"),
        }
    }
    // The file as shipped is the S3 Tables example.
    assert_eq!(
        example_for("s3tables"),
        format!(
            "{}\n",
            include_str!("../../connector.toml.example").trim_end()
        )
    );
}

#[test]
fn the_documented_example_is_valid() {
    let c = load(include_str!("../../connector.toml.example")).unwrap();
    assert_eq!(c.catalog.kind(), "s3tables");
    assert_eq!(
        c.tables
            .route("dbserver1.inventory.orders")
            .unwrap()
            .to_string(),
        "inventory.orders"
    );
    let s = c.tables.settings(&"inventory.customers".parse().unwrap());
    assert_eq!(
        s.metadata_columns,
        vec![MetadataColumn::Op, MetadataColumn::SourceTs]
    );
}

#[test]
fn cooperative_rebalancing_is_refused() {
    let e = err(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"\n"
    ));
    assert!(
        e.contains("kafka.properties.\"partition.assignment.strategy\""),
        "{e}"
    );
    assert!(e.contains("eager protocol"), "{e}");
    load(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"partition.assignment.strategy\" = \"roundrobin\"\n"
    ))
    .unwrap();
}

#[test]
fn the_incremental_consumer_group_protocol_is_refused() {
    let e = err(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"group.protocol\" = \"consumer\"\n"
    ));
    assert!(e.contains("kafka.properties.\"group.protocol\""), "{e}");
    assert!(e.contains("KIP-848"), "{e}");
    load(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"group.protocol\" = \"classic\"\n"
    ))
    .unwrap();
}

#[test]
fn background_maintenance_is_off_unless_an_interval_is_given_and_never_takes_young_files() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.maintenance.interval, None);
    assert_eq!(
        c.maintenance.orphans_older_than,
        Duration::from_secs(3 * 86_400)
    );
    let c = load(&format!(
        "{MINIMAL}\n[maintenance]\ninterval = \"6h\"\norphans_older_than = \"2h\"\n"
    ))
    .unwrap();
    assert_eq!(c.maintenance.interval, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(c.maintenance.orphans_older_than, Duration::from_secs(7200));
    for (text, key) in [
        ("interval = \"0s\"", "maintenance.interval"),
        (
            "orphans_older_than = \"10m\"",
            "maintenance.orphans_older_than",
        ),
    ] {
        let e = load(&format!("{MINIMAL}\n[maintenance]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn avro_needs_a_schema_registry_whose_secrets_can_come_from_the_environment() {
    let c = load_env(MINIMAL, &[]).unwrap();
    assert_eq!(
        (c.decode.converter, c.decode.key_converter),
        (Converter::Json, Converter::Json)
    );
    assert!(c.decode.schema_registry.is_none());

    let e = err(&format!("{MINIMAL}[decode]\nconverter = \"avro\"\n"));
    assert!(e.contains("decode.schema_registry.url"), "{e}");
    let e = err(&format!("{MINIMAL}[decode]\nkey_converter = \"avro\"\n"));
    assert!(e.contains("decode.schema_registry.url"), "{e}");

    let avro = format!(
        "{MINIMAL}[decode]\nconverter = \"avro\"\nkey_converter = \"json\"\n\
         [decode.schema_registry]\nurl = \"https://registry:8081/\"\nusername = \"floe\"\n"
    );
    let e = err(&avro);
    assert!(e.contains("decode.schema_registry.password"), "{e}");
    let c = load_env(&avro, &[("FLOE_DECODE__SCHEMA_REGISTRY__PASSWORD", "p4ss")]).unwrap();
    assert_eq!(
        (c.decode.converter, c.decode.key_converter),
        (Converter::Avro, Converter::Json)
    );
    let r = c.decode.schema_registry.unwrap();
    assert_eq!(r.url, "https://registry:8081");
    assert_eq!(r.timeout, Duration::from_secs(10));
    assert_eq!(
        r.auth,
        RegistryAuth::Basic {
            username: "floe".into(),
            password: Secret::new("p4ss")
        }
    );
    assert!(!format!("{r:?}").contains("p4ss"));

    let e = err(&avro.replace("https://registry:8081/", "registry:8081"));
    assert!(e.contains("not an http"), "{e}");
    let e = err(&format!("{avro}bearer_token = \"t\"\npassword = \"p\"\n"));
    assert!(e.contains("bearer_token"), "{e}");
    let e = err(&format!(
        "{avro}password = \"p\"\nca_file = \"/nonexistent/ca.pem\"\n"
    ));
    assert!(e.contains("decode.schema_registry.ca_file"), "{e}");
}
