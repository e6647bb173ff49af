//! The `floe` binary as a user meets it: help texts, exit codes, configuration errors.

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

#[test]
fn commands_not_built_yet_say_so_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), VALID);
    for sub in ["backfill", "policy"] {
        let out = floe(&[sub, "--config", &path], &[]);
        assert_eq!(out.status.code(), Some(1), "floe {sub}");
        assert!(
            text(&out.stderr).contains("not implemented yet"),
            "floe {sub}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn check_reports_each_kafka_topic_and_the_local_directories() {
    let brokers = crate::support::kafka_brokers();
    let topic = crate::support::unique("check");
    let out = Command::new(crate::support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/fixtures/produce_sample.py"
        ))
        .args(["--brokers", &brokers, "--topic", &topic, "--count", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

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
        stdout.contains(&format!("ok           kafka topic {topic}: 1 partition(s)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok           staging directory"),
        "{stdout}"
    );
    assert!(stdout.contains("all 5 checks passed"), "{stdout}");

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
        text(&out.stderr).contains("1 of 5 checks did not pass"),
        "{}",
        text(&out.stderr)
    );
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
