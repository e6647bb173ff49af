//! The `floe` binary as a user meets it: help texts, exit codes, configuration errors.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn floe(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_floe"));
    cmd.args(args).env("FLOE_LOG_FORMAT", "json");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run floe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("connector.toml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

const VALID: &str = r#"
[kafka]
brokers = "127.0.0.1:19092"
topics = ["dbserver1.inventory.customers"]

[catalog]
type = "local"
path = "floe-data"
"#;

#[test]
fn help_lists_every_subcommand() {
    let out = floe(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["run", "backfill", "check", "policy"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "`{sub}` missing from:\n{help}"
        );
    }
}

#[test]
fn run_help_explains_config_and_shutdown() {
    let out = floe(&["run", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("--config <PATH>"), "{help}");
    assert!(help.contains("[default: connector.toml]"), "{help}");
    assert!(help.contains("SIGTERM"), "{help}");
    assert!(help.contains("FLOE_<SECTION>__<KEY>"), "{help}");
}

#[test]
fn version_is_the_crate_version() {
    let out = floe(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("floe {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_key_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &VALID.replace("[catalog]", "[catalog]\nbogus = 1"),
    );
    let out = floe(&["run", "--config", &path], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("floe: {path}: key `catalog")),
        "{err}"
    );
    assert!(err.contains("unknown key"), "{err}");
}

#[test]
fn missing_config_file_exits_2() {
    let out = floe(&["check", "--config", "/nonexistent/floe.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/floe.toml"),
        "{err}"
    );
}

#[test]
fn bad_environment_override_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    let out = floe(&["run", "-c", &path], &[("FLOE_FLUSH__INTERVAL", "often")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("FLOE_FLUSH__INTERVAL"), "{err}");
    assert!(err.contains("key `flush.interval`"), "{err}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = floe(&["serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

const S3TABLES_CONFIG: &str = r#"
[kafka]
brokers = "127.0.0.1:19092"
topics = ["dbserver1.inventory.customers"]
[staging]
bucket = "floe-staging"
prefix = "cdc/deltas"
kms_key_arn = "arn:aws:kms:eu-west-1:111122223333:key/0000-1111"
[catalog]
type = "s3tables"
table_bucket_arn = "arn:aws:s3tables:eu-west-1:111122223333:bucket/analytics"
"#;

fn policy_json(config: &str, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), config);
    let mut args = vec!["policy", "--config", &path];
    args.extend(extra);
    let out = floe(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("floe policy prints JSON")
}

fn actions_of(policy: &serde_json::Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn statement<'a>(policy: &'a serde_json::Value, sid: &str) -> &'a serde_json::Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {policy:#}"))
}

/// The policy grants exactly the actions the backends list as the ones they call.
#[test]
fn policy_for_s3_tables_lists_exactly_the_actions_the_code_calls() {
    use floe::catalog::s3tables;
    let policy = policy_json(S3TABLES_CONFIG, &[]);
    assert_eq!(policy["Version"], "2012-10-17");
    let mut want: BTreeSet<String> = s3tables::ACTIONS
        .iter()
        .filter(|a| **a != s3tables::DROP_ACTION)
        .map(|a| a.to_string())
        .collect();
    want.extend(
        floe::stage::S3_ACTIONS
            .iter()
            .map(|(_, a)| a.to_string())
            .filter(|a| a != floe::stage::MANAGE_LIFECYCLE_ACTION),
    );
    want.extend(floe::stage::KMS_ACTIONS.iter().map(|a| a.to_string()));
    assert_eq!(actions_of(&policy), want);
    let tables = statement(&policy, "FloeTableBucket");
    assert_eq!(
        tables["Resource"],
        serde_json::json!([
            "arn:aws:s3tables:eu-west-1:111122223333:bucket/analytics",
            "arn:aws:s3tables:eu-west-1:111122223333:bucket/analytics/table/*"
        ])
    );
    assert_eq!(
        statement(&policy, "FloeStagingObjects")["Resource"],
        serde_json::json!(["arn:aws:s3:::floe-staging/cdc/deltas/*"])
    );
    assert_eq!(
        statement(&policy, "FloeStagingKms")["Resource"],
        serde_json::json!(["arn:aws:kms:eu-west-1:111122223333:key/0000-1111"])
    );

    // Dropping tables and managing the lifecycle rule add exactly their actions.
    let managed = S3TABLES_CONFIG.replace(
        "prefix = \"cdc/deltas\"",
        "prefix = \"cdc/deltas\"\nmanage_lifecycle = true",
    );
    let more = actions_of(&policy_json(&managed, &["--drop-and-recreate"]));
    let added: BTreeSet<String> = more.difference(&want).cloned().collect();
    assert_eq!(
        added,
        BTreeSet::from([
            s3tables::DROP_ACTION.to_string(),
            floe::stage::MANAGE_LIFECYCLE_ACTION.to_string()
        ])
    );
}

#[test]
fn policy_for_aistor_tables_is_scoped_to_the_warehouse() {
    let config = r#"
[kafka]
brokers = "127.0.0.1:19092"
topics = ["t"]
[staging]
bucket = "staging"
endpoint = "http://127.0.0.1:9000"
[catalog]
type = "rest"
uri = "http://127.0.0.1:9000/_iceberg"
warehouse = "lake"
auth = "sigv4"
"#;
    let policy = policy_json(config, &[]);
    let warehouse = statement(&policy, "FloeWarehouse");
    assert_eq!(
        warehouse["Resource"],
        serde_json::json!([
            "arn:aws:s3tables:::bucket/lake",
            "arn:aws:s3tables:::bucket/lake/table/*"
        ])
    );
    let want: BTreeSet<String> = floe::catalog::rest::ACTIONS
        .iter()
        .flat_map(|(_, a)| a.iter())
        .filter(|a| **a != floe::catalog::s3tables::DROP_ACTION)
        .map(|a| a.to_string())
        .collect();
    let got: BTreeSet<String> = warehouse["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);
    let data = statement(&policy, "FloeWarehouseData");
    assert_eq!(data["Resource"], serde_json::json!(["arn:aws:s3:::lake/*"]));
    let actions = data["Action"].as_array().unwrap();
    assert!(actions.contains(&serde_json::json!("s3:PutObject")));
    // Snapshot expiry deletes files, and `floe maintain` lists the orphans.
    assert!(actions.contains(&serde_json::json!("s3:DeleteObject")));
    let list = statement(&policy, "FloeWarehouseList");
    assert_eq!(list["Resource"], serde_json::json!(["arn:aws:s3:::lake"]));
    assert_eq!(list["Action"], serde_json::json!(["s3:ListBucket"]));
}

#[test]
fn policy_as_terraform_includes_the_staging_bucket_and_its_expiration_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), S3TABLES_CONFIG);
    let out = floe(&["policy", "--config", &path, "--format", "terraform"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hcl = text(&out.stdout);
    assert!(
        hcl.contains("data \"aws_iam_policy_document\" \"floe\""),
        "{hcl}"
    );
    assert!(
        hcl.contains("\"s3tables:UpdateTableMetadataLocation\""),
        "{hcl}"
    );
    assert!(!hcl.contains("DeleteTable"), "{hcl}");
    assert!(
        hcl.contains("resource \"aws_s3_bucket\" \"floe_staging\""),
        "{hcl}"
    );
    assert!(hcl.contains("bucket = \"floe-staging\""), "{hcl}");
    assert!(hcl.contains("prefix = \"cdc/deltas/\""), "{hcl}");
    assert!(hcl.contains("days = 3"), "{hcl}");
    // Balanced braces: the HCL blocks are closed.
    assert_eq!(hcl.matches('{').count(), hcl.matches('}').count());
}

#[test]
fn check_reports_each_kafka_topic_and_the_local_directories() {
    let brokers = crate::support::kafka_brokers();
    let topic = crate::support::unique("check");
    crate::runtime::produce_sample(&brokers, &topic, &["--count", "3"]);

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\n[catalog]\ntype = \"local\"\npath = \"{}\"\n",
        dir.path().join("data").display()
    );
    let path = write_config(dir.path(), &config);
    let out = floe(&["check", "--config", &path], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "ok           kafka topic {topic}: 1 partition(s); partition 0 holds offsets 0..4"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok           staging directory"),
        "{stdout}"
    );
    assert!(stdout.contains("all 9 checks passed"), "{stdout}");

    let missing = format!("{topic}_absent");
    let path = write_config(
        dir.path(),
        &config.replace(&format!("[\"{topic}\"]"), &format!("[\"{missing}\"]")),
    );
    let out = floe(&["check", "--config", &path], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("missing      kafka topic {missing}")),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("1 of 6 checks did not pass"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_asks_the_schema_registry_with_the_configured_credentials() {
    let brokers = crate::support::kafka_brokers();
    let topic = crate::support::unique("check_avro");
    crate::runtime::produce_sample(&brokers, &topic, &["--count", "1"]);
    let registry = crate::support::SchemaRegistry::start(&["--user", "floe:pw"]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\n[catalog]\ntype = \"local\"\n\
         path = \"{}\"\n[decode]\nconverter = \"avro\"\n[decode.schema_registry]\nurl = \"{}\"\n\
         username = \"floe\"\n",
        dir.path().join("data").display(),
        registry.url
    );
    let path = write_config(dir.path(), &config);
    let out = floe(
        &["check", "--config", &path],
        &[("FLOE_DECODE__SCHEMA_REGISTRY__PASSWORD", "pw")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "ok           schema registry {}: answers; 0 subject(s)",
            registry.url
        )),
        "{stdout}"
    );
    let out = floe(
        &["check", "--config", &path],
        &[("FLOE_DECODE__SCHEMA_REGISTRY__PASSWORD", "wrong")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed       schema registry") && stdout.contains("401"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong"), "{stdout}");
}

#[test]
fn check_names_unreachable_brokers() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let path = write_config(dir.path(), &VALID.replace("127.0.0.1:19092", "127.0.0.1:1"));
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["check", "--config", &path])
        .env("FLOE_LOG_FORMAT", "json")
        .env("FLOE_KAFKA__PROPERTIES__SOCKET_TIMEOUT_MS", "2000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("failed       kafka brokers 127.0.0.1:1: no answer"),
        "{stdout}"
    );
}

/// README.md's configuration reference is generated from connector.toml.example.
#[test]
fn the_readme_configuration_reference_matches_the_example() {
    let out = Command::new(crate::support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/config-reference.py"
        ))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}
