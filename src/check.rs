//! `floe check`: try, one by one, everything Floe needs, and report each as ok, missing or
//! failed, naming for each missing permission the action that grants it. It changes nothing
//! unless asked to (`--create` creates missing namespaces), except for two harmless writes: a
//! probe object in the staging bucket (deleted again), and, for each existing table, a commit
//! without changes, which is the only way to know a commit is allowed.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use iceberg::TableRequirement;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::catalog::{CatalogError, TableCatalog, TableIdent};
use crate::commit::partition;
use crate::config::{
    CatalogConfig, Config, DeleteMode, StagingConfig, TableName, TableSettings, TopicSelection,
};
use crate::stage::{LifecycleState, Stager};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Missing,
    Failed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Missing => "missing",
            Outcome::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub what: String,
    pub outcome: Outcome,
    pub detail: String,
    /// For a missing permission: the actions that grant it.
    pub grant: Vec<String>,
}

impl CheckResult {
    fn new(what: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        CheckResult {
            what: what.into(),
            outcome,
            detail: detail.into(),
            grant: Vec::new(),
        }
    }

    fn ok(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(what, Outcome::Ok, detail)
    }

    fn denied(what: impl Into<String>, detail: impl Into<String>, grant: &[&str]) -> Self {
        CheckResult {
            grant: grant.iter().map(|g| g.to_string()).collect(),
            ..Self::new(what, Outcome::Missing, detail)
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Create missing namespaces.
    pub create: bool,
    pub timeout: Duration,
}

/// Runs every check; the caller prints them.
pub async fn run_checks(config: &Config, options: CheckOptions) -> Vec<CheckResult> {
    let (mut results, topics) = kafka_checks(config, options.timeout);
    results.extend(registry_check(config).await);
    results.extend(staging_checks(config).await);
    results.extend(catalog_checks(config, &topics, options.create).await);
    results
}

/// Whether an error text says access was refused.
fn is_denied(text: &str) -> bool {
    [
        "AccessDenied",
        "Forbidden",
        "HTTP 403",
        "(HTTP 401",
        "authentication refused",
        "UnauthorizedAccess",
        "not authorized",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

// ---------------------------------------------------------------------------------------
// Schema Registry

/// Whether the Schema Registry answers, when a converter is Avro.
async fn registry_check(config: &Config) -> Option<CheckResult> {
    let registry = config.decode.schema_registry.clone()?;
    let what = format!("schema registry {}", registry.url);
    let client = crate::source::registry::Registry::new(registry);
    // The registry client blocks: not on the runtime's threads.
    let answer = tokio::task::spawn_blocking(move || client.check())
        .await
        .unwrap_or_else(|e| Err(format!("the check did not finish: {e}")));
    Some(match answer {
        Ok(n) => CheckResult::ok(what, format!("answers; {n} subject(s)")),
        Err(e) if is_denied(&e) => CheckResult::new(
            what,
            Outcome::Failed,
            format!(
                "{e}: the registry refused Floe's credentials \
                 (decode.schema_registry.username/password or bearer_token)"
            ),
        ),
        Err(e) => CheckResult::new(what, Outcome::Failed, e),
    })
}

// ---------------------------------------------------------------------------------------
// Kafka

/// Checks brokers, topics and the consumer group; returns the topics found.
fn kafka_checks(config: &Config, timeout: Duration) -> (Vec<CheckResult>, Vec<String>) {
    let brokers = config.kafka.brokers.join(",");
    let consumer: BaseConsumer = match crate::source::consumer_config(&config.kafka).create() {
        Ok(c) => c,
        Err(e) => {
            return (
                vec![CheckResult::new(
                    "kafka client",
                    Outcome::Failed,
                    format!("cannot create a client from [kafka]: {e}"),
                )],
                Vec::new(),
            );
        }
    };
    let metadata = match consumer.fetch_metadata(None, timeout) {
        Ok(m) => m,
        Err(e) => {
            return (
                vec![CheckResult::new(
                    format!("kafka brokers {brokers}"),
                    Outcome::Failed,
                    format!("no answer within {}s: {e}", timeout.as_secs()),
                )],
                Vec::new(),
            );
        }
    };
    let mut results = vec![CheckResult::ok(
        format!("kafka brokers {brokers}"),
        format!("{} broker(s) in the cluster", metadata.brokers().len()),
    )];
    let partitions_of = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
    };
    let mut found = Vec::new();
    match &config.kafka.topics {
        TopicSelection::List(topics) => {
            for topic in topics {
                let what = format!("kafka topic {topic}");
                match partitions_of(topic) {
                    None => results.push(CheckResult::denied(
                        what,
                        "the topic does not exist or this principal cannot describe it",
                        &["Kafka ACL: DESCRIBE and READ on the topic"],
                    )),
                    Some(n) => match consumer.fetch_watermarks(topic, 0, timeout) {
                        Ok((low, high)) => {
                            results.push(CheckResult::ok(
                                what,
                                format!(
                                    "{n} partition(s); partition 0 holds offsets {low}..{high}"
                                ),
                            ));
                            found.push(topic.clone());
                        }
                        Err(e) => results.push(CheckResult::denied(
                            what,
                            format!("cannot read its offsets: {e}"),
                            &["Kafka ACL: DESCRIBE and READ on the topic"],
                        )),
                    },
                }
            }
        }
        TopicSelection::Regex(re) => {
            let matching: Vec<String> = metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|n| re.is_match(n))
                .collect();
            results.push(if matching.is_empty() {
                CheckResult::new(
                    format!("kafka topics matching {}", re.as_str()),
                    Outcome::Missing,
                    "no topic matches",
                )
            } else {
                CheckResult::ok(
                    format!("kafka topics matching {}", re.as_str()),
                    matching.join(", "),
                )
            });
            found = matching;
        }
    }
    if let Some(topic) = found.first() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let group = &config.kafka.group_id;
        results.push(match consumer.committed_offsets(tpl, timeout) {
            Ok(committed) => {
                let offset = committed
                    .elements()
                    .first()
                    .map(|e| e.offset())
                    .unwrap_or(Offset::Invalid);
                CheckResult::ok(
                    format!("kafka consumer group {group}"),
                    match offset {
                        Offset::Offset(o) => format!("{topic}[0] committed at {o}"),
                        _ => format!("no offset committed for {topic}[0] yet"),
                    },
                )
            }
            Err(e) => CheckResult::denied(
                format!("kafka consumer group {group}"),
                format!("cannot read its committed offsets: {e}"),
                &["Kafka ACL: READ on the consumer group"],
            ),
        });
    }
    (results, found)
}

// ---------------------------------------------------------------------------------------
// Staging

async fn staging_checks(config: &Config) -> Vec<CheckResult> {
    let s3 = match &config.staging {
        StagingConfig::Local { directory } => {
            return vec![writable_dir("staging directory", directory)];
        }
        StagingConfig::S3(s3) => s3,
    };
    let what = |step: &str| format!("staging bucket s3://{}: {step}", s3.bucket);
    let stager = match Stager::open(&config.staging, "floe-check").await {
        Ok(s) => s,
        Err(e) => {
            return vec![CheckResult::new(
                what("client"),
                Outcome::Failed,
                e.to_string(),
            )];
        }
    };
    let (client, bucket, prefix, kms) = stager.s3().expect("an S3 stager");
    let key = format!("{prefix}/{}.probe", uuid::Uuid::new_v4());
    let kms_grant = |action: &'static str| kms.map(|_| action);
    let mut results = Vec::new();

    // Write: the bucket must exist, and with SSE-KMS the key must be usable.
    let mut put = client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(b"floe check".to_vec().into());
    if let Some(kms) = kms {
        put = put
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id(kms);
    }
    match put.send().await {
        Ok(out) => results.push(CheckResult::ok(
            what("write"),
            match (out.server_side_encryption(), out.ssekms_key_id()) {
                (Some(sse), Some(key)) => format!("wrote a probe object ({sse}, key {key})"),
                (Some(sse), None) => format!("wrote a probe object ({sse})"),
                _ => "wrote a probe object".to_string(),
            },
        )),
        Err(e) => {
            let code = e.code().unwrap_or("").to_string();
            let text = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
            if code == "NoSuchBucket" {
                // Nothing else can be checked on a bucket that does not exist.
                return vec![CheckResult::new(
                    format!("staging bucket s3://{bucket}"),
                    Outcome::Missing,
                    "the bucket does not exist (NoSuchBucket)",
                )];
            }
            results.push(if code.starts_with("KMS") {
                CheckResult::denied(
                    what("write"),
                    format!("the KMS key is not usable ({code})"),
                    &["kms:GenerateDataKey"],
                )
            } else if is_denied(&code) || is_denied(&text) {
                let grant: Vec<&str> = [action("PutObject")]
                    .into_iter()
                    .chain(kms_grant("kms:GenerateDataKey"))
                    .collect();
                CheckResult::denied(what("write"), format!("refused ({code})"), &grant)
            } else {
                CheckResult::new(what("write"), Outcome::Failed, text)
            });
            // Without a probe object, read and delete cannot be tried.
            results.extend(lifecycle_and_encryption(&stager, s3, &what).await);
            return results;
        }
    }
    match client.get_object().bucket(bucket).key(&key).send().await {
        Ok(out) => match out.body.collect().await.map(|b| b.into_bytes()) {
            Ok(body) if body.as_ref() == b"floe check" => {
                results.push(CheckResult::ok(what("read"), "read the probe object back"))
            }
            Ok(_) => results.push(CheckResult::new(
                what("read"),
                Outcome::Failed,
                "the probe object came back different",
            )),
            Err(e) => results.push(CheckResult::new(
                what("read"),
                Outcome::Failed,
                e.to_string(),
            )),
        },
        Err(e) => {
            let grant: Vec<&str> = [action("GetObject")]
                .into_iter()
                .chain(kms_grant("kms:Decrypt"))
                .collect();
            results.push(s3_refusal(what("read"), &e, &grant, true, ""));
        }
    }
    match client.delete_object().bucket(bucket).key(&key).send().await {
        Ok(_) => results.push(CheckResult::ok(what("delete"), "deleted the probe object")),
        Err(e) => results.push(s3_refusal(
            what("delete"),
            &e,
            &[action("DeleteObject")],
            false,
            &format!("; the probe object {key} is left"),
        )),
    }
    results.extend(lifecycle_and_encryption(&stager, s3, &what).await);
    results
}

/// An S3 call that failed: "missing" with the actions that grant it when access was refused
/// (or, with `kms_too`, a KMS key was unusable), else "failed" with the SDK's error.
fn s3_refusal<E, R>(
    what: String,
    e: &aws_sdk_s3::error::SdkError<E, R>,
    grant: &[&str],
    kms_too: bool,
    left: &str,
) -> CheckResult
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or("");
    if is_denied(code) || (kms_too && code.starts_with("KMS")) {
        CheckResult::denied(what, format!("refused ({code}){left}"), grant)
    } else {
        CheckResult::new(
            what,
            Outcome::Failed,
            aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        )
    }
}

/// The IAM action of a staging operation, from [`crate::stage::S3_ACTIONS`].
fn action(operation: &str) -> &'static str {
    crate::stage::s3_action(operation).expect("the operation is in stage::S3_ACTIONS")
}

async fn lifecycle_and_encryption(
    stager: &Stager,
    s3: &crate::config::S3Staging,
    what: &impl Fn(&str) -> String,
) -> Vec<CheckResult> {
    let (client, bucket, _, _) = stager.s3().expect("an S3 stager");
    let mut results = Vec::new();
    results.push(
        match client.get_bucket_encryption().bucket(bucket).send().await {
            Ok(out) => {
                let rules: Vec<String> = out
                    .server_side_encryption_configuration()
                    .map(|c| c.rules())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| r.apply_server_side_encryption_by_default())
                    .map(|d| match d.kms_master_key_id() {
                        Some(key) => format!("{} with key {key}", d.sse_algorithm()),
                        None => d.sse_algorithm().to_string(),
                    })
                    .collect();
                CheckResult::ok(
                    what("encryption"),
                    if rules.is_empty() {
                        "no default encryption".to_string()
                    } else {
                        format!("default encryption {}", rules.join(", "))
                    },
                )
            }
            Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => {
                CheckResult::ok(what("encryption"), "no default encryption")
            }
            Err(e) => s3_refusal(
                what("encryption"),
                &e,
                &[action("GetBucketEncryption")],
                false,
                "",
            ),
        },
    );
    results.push(
        match stager.ensure_expiration(false, s3.expire_after_days).await {
            Ok(LifecycleState::Expires(days)) => CheckResult::ok(
                what("expiration rule"),
                format!("the bucket expires objects after {days} days"),
            ),
            Ok(_) if s3.manage_lifecycle => CheckResult::ok(
                what("expiration rule"),
                "none yet; floe run adds one (staging.manage_lifecycle = true)",
            ),
            Ok(_) => CheckResult::new(
                what("expiration rule"),
                Outcome::Missing,
                "no rule expires objects: staged files of crashed runs would stay forever; \
                 add one or set staging.manage_lifecycle = true",
            ),
            Err(e) if is_denied(&e.message) => CheckResult::denied(
                what("expiration rule"),
                "cannot read the lifecycle configuration",
                &[action("GetBucketLifecycleConfiguration")],
            ),
            Err(e) => CheckResult::new(what("expiration rule"), Outcome::Failed, e.to_string()),
        },
    );
    results
}

fn writable_dir(what: &str, dir: &Path) -> CheckResult {
    let what = format!("{what} {}", dir.display());
    let probe = dir.join(".floe-check");
    let outcome = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"floe check"))
        .and_then(|()| std::fs::remove_file(&probe));
    match outcome {
        Ok(()) => CheckResult::ok(what, "writable"),
        Err(e) => CheckResult::new(what, Outcome::Failed, format!("not writable: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Catalog

/// The actions that grant one catalog step, per backend (none for the local catalog).
#[derive(Clone, Copy)]
enum Step {
    Bucket,
    Namespace,
    CreateNamespace,
    LoadTable,
    Commit,
}

impl Step {
    /// From the backends' own action lists, so `check` and `policy` cannot disagree.
    fn grant(self, catalog: &CatalogConfig) -> Vec<&'static str> {
        let names: &[&str] = match self {
            Step::Bucket => &["s3tables:GetTableBucket"],
            Step::Namespace => &["s3tables:GetNamespace"],
            Step::CreateNamespace => &["s3tables:CreateNamespace"],
            Step::LoadTable => &[
                "s3tables:GetTable",
                "s3tables:GetTableMetadataLocation",
                "s3tables:GetTableData",
            ],
            Step::Commit => &[
                "s3tables:UpdateTableMetadataLocation",
                "s3tables:PutTableData",
            ],
        };
        let known: BTreeSet<&str> = match catalog {
            CatalogConfig::S3Tables(_) => {
                crate::catalog::s3tables::ACTIONS.iter().copied().collect()
            }
            CatalogConfig::Rest(_) => crate::catalog::rest::ACTIONS
                .iter()
                .flat_map(|(_, a)| a.iter().copied())
                .chain(crate::catalog::s3tables::DATA_ACTIONS.iter().copied())
                .collect(),
            CatalogConfig::Local(_) => BTreeSet::new(),
        };
        names
            .iter()
            .copied()
            .filter(|n| known.contains(n))
            .collect()
    }
}

fn catalog_failure(
    what: String,
    error: &CatalogError,
    step: Step,
    catalog: &CatalogConfig,
) -> CheckResult {
    let text = error.to_string();
    if is_denied(&text) {
        CheckResult::denied(what, text, &step.grant(catalog))
    } else {
        CheckResult::new(what, Outcome::Failed, text)
    }
}

async fn catalog_checks(config: &Config, topics: &[String], create: bool) -> Vec<CheckResult> {
    let kind = config.catalog.kind();
    let catalog = match crate::catalog::open_catalog(&config.catalog).await {
        Ok(c) => c,
        Err(e) => {
            return vec![catalog_failure(
                format!("catalog ({kind})"),
                &e,
                Step::Bucket,
                &config.catalog,
            )];
        }
    };
    let mut results = vec![match catalog.describe().await {
        Ok(description) => CheckResult::ok(format!("catalog ({kind})"), description),
        Err(e) => {
            // Without the table bucket nothing else can be checked.
            return vec![if e.to_string().contains("does not exist") {
                CheckResult::new(format!("catalog ({kind})"), Outcome::Missing, e.to_string())
            } else {
                catalog_failure(
                    format!("catalog ({kind})"),
                    &e,
                    Step::Bucket,
                    &config.catalog,
                )
            }];
        }
    }];
    if let CatalogConfig::Local(local) = &config.catalog {
        results.push(writable_dir("catalog directory", &local.path));
    }
    let tables: BTreeSet<TableName> = topics
        .iter()
        .filter_map(|t| config.tables.route(t).ok())
        .collect();
    let namespaces: BTreeSet<&str> = tables.iter().map(|t| t.namespace.as_str()).collect();
    let mut names = crate::catalog::NameRegistry::default();
    for namespace in namespaces {
        results.push(namespace_check(&*catalog, &config.catalog, namespace, create).await);
    }
    for table in &tables {
        let ident = match names.resolve(table) {
            Ok(i) => i,
            Err(e) => {
                results.push(CheckResult::new(
                    format!("table {table}"),
                    Outcome::Failed,
                    e,
                ));
                continue;
            }
        };
        results.extend(
            table_checks(
                &*catalog,
                &config.catalog,
                &ident,
                config.tables.settings(table),
                config.tables.index_memory,
            )
            .await,
        );
    }
    results
}

async fn namespace_check(
    catalog: &dyn TableCatalog,
    config: &CatalogConfig,
    namespace: &str,
    create: bool,
) -> CheckResult {
    let what = format!("namespace {namespace}");
    match catalog.namespace_exists(namespace).await {
        Ok(true) => CheckResult::ok(what, "exists"),
        Ok(false) if create => match catalog.ensure_namespace(namespace).await {
            Ok(()) => CheckResult::ok(what, "created"),
            Err(e) => catalog_failure(what, &e, Step::CreateNamespace, config),
        },
        Ok(false) => CheckResult::ok(
            what,
            "does not exist yet: floe run creates it (`floe check --create` creates it now)",
        ),
        Err(e) => catalog_failure(what, &e, Step::Namespace, config),
    }
}

async fn table_checks(
    catalog: &dyn TableCatalog,
    config: &CatalogConfig,
    ident: &TableIdent,
    settings: &TableSettings,
    index_memory: u64,
) -> Vec<CheckResult> {
    let what = format!("table {ident}");
    let configured = settings
        .partition_spec
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let loaded = match catalog.load_table(ident).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let spec = if configured.is_empty() {
                "unpartitioned".to_string()
            } else {
                format!("partitioned by {configured}")
            };
            return vec![CheckResult::ok(
                what,
                format!("does not exist yet: floe run creates it ({spec}) on its first commit"),
            )];
        }
        Err(e) => return vec![catalog_failure(what, &e, Step::LoadTable, config)],
    };
    let metadata = &loaded.metadata;
    let spec = partition::describe(metadata.default_partition_spec(), metadata.current_schema());
    let spec = match spec.as_str() {
        "unpartitioned" => spec,
        _ => format!("partitioned by {spec}"),
    };
    let not_configured =
        if configured.is_empty() || partition::is_configured(&settings.partition_spec, &loaded) {
            String::new()
        } else {
            format!(
                "; not the configured partition_spec ({configured}), which applies only to tables \
             Floe creates: Floe writes under the table's own spec"
            )
        };
    let mut results = vec![CheckResult::ok(
        format!("{what}: metadata"),
        format!(
            "format v{}, {} snapshot(s), {spec}{not_configured}",
            metadata.format_version() as u8,
            metadata.snapshots().count()
        ),
    )];
    let requirement = TableRequirement::UuidMatch {
        uuid: loaded.metadata.uuid(),
    };
    results.push(match catalog.commit(&loaded, vec![requirement], Vec::new()).await {
        Ok(_) => CheckResult::ok(format!("{what}: commit"), "a commit without changes succeeded"),
        Err(CatalogError::Conflict { .. }) => CheckResult::ok(
            format!("{what}: commit"),
            "allowed (another writer committed meanwhile, so the catalog answered with a conflict)",
        ),
        Err(e) => catalog_failure(format!("{what}: commit"), &e, Step::Commit, config),
    });
    results.push(deletes_check(&what, &loaded, settings.deletes, index_memory).await);
    results
}

/// How `floe run` will remove old rows from the table: builds its key index as the first
/// commit would, and says whether it fits the memory budget.
async fn deletes_check(
    what: &str,
    table: &crate::catalog::LoadedTable,
    deletes: DeleteMode,
    index_memory: u64,
) -> CheckResult {
    use crate::commit::index::{IndexError, KeyIndex};
    let what = format!("{what}: deletes");
    // Equality deletes are refused for some partitioned tables: then the check fails.
    let equality = |detail: String| match partition::equality_deletes_refused(table) {
        Some(reason) => CheckResult::new(&what, Outcome::Failed, format!("{detail}; but {reason}")),
        None => CheckResult::ok(&what, detail),
    };
    if deletes == DeleteMode::Equality {
        return equality("equality deletes (deletes = \"equality\")".into());
    }
    if table
        .metadata
        .current_schema()
        .identifier_field_ids()
        .next()
        .is_none()
    {
        return CheckResult::ok(what, "no primary key: the table is append-only");
    }
    let started = std::time::Instant::now();
    match KeyIndex::build(table).await {
        Ok(index) => {
            let bytes = index.memory_bytes() as u64;
            let built = format!(
                "{} keys, about {bytes} bytes, read in {} ms",
                index.len(),
                started.elapsed().as_millis()
            );
            let duplicated = match index.duplicated_keys() {
                0 => String::new(),
                n => format!(
                    "; {n} keys are held more than once and are repaired at their next change"
                ),
            };
            if bytes > index_memory {
                equality(format!(
                    "equality deletes: the key index ({built}) does not fit \
                     tables.index_memory ({index_memory} bytes){duplicated}"
                ))
            } else {
                CheckResult::ok(
                    what,
                    format!("position deletes; key index: {built}{duplicated}"),
                )
            }
        }
        Err(IndexError::Unsupported(reason)) => equality(format!(
            "equality deletes: the table cannot be indexed by key: {reason}"
        )),
        Err(IndexError::Read(e)) => CheckResult::new(
            what,
            Outcome::Failed,
            format!("reading the table's key columns: {e}"),
        ),
    }
}
