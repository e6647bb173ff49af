//! The config file as written: serde structs with `deny_unknown_fields` and named defaults.
//! Nothing here checks rules that span keys; [`RawConfig::validate`] does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{ConfigError, Secret};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub kafka: RawKafka,
    #[serde(default)]
    pub decode: RawDecode,
    #[serde(default)]
    pub tables: RawTables,
    pub staging: Option<RawStaging>,
    pub catalog: RawCatalog,
    #[serde(default)]
    pub flush: RawFlush,
    #[serde(default)]
    pub errors: RawErrors,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub maintenance: RawMaintenance,
}

impl RawConfig {
    pub(super) fn from_table(tree: toml::Table) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            // toml appends "\nin `table`"; the path already says where.
            let message = message.lines().next().unwrap_or_default().to_string();
            describe(&path, &message)
        })
    }
}

/// Turns serde's messages into "key: what is wrong", naming the offending key itself rather
/// than its parent table where serde reports it there.
fn describe(path: &str, message: &str) -> ConfigError {
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent == name || parent.ends_with(&format!(".{name}")) {
            parent.to_string()
        } else if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        }
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        let expected = expected.trim_start_matches(", ");
        return ConfigError::invalid(join(name), format!("unknown key; {expected}"));
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return ConfigError::invalid(join(name), "required key is missing");
    }
    ConfigError::invalid(
        if parent.is_empty() {
            "(top level)"
        } else {
            parent
        },
        message,
    )
}

/// A scalar written as a string, integer, float or boolean, kept as its string form (librdkafka
/// properties, table properties, and ids that may be all digits when set from the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a string, number or boolean")]
        enum Any {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(Scalar(match Any::deserialize(d)? {
            Any::S(s) => s,
            Any::I(i) => i.to_string(),
            Any::F(f) => f.to_string(),
            Any::B(b) => b.to_string(),
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: StringOrList,
    #[serde(default = "default_group_id")]
    pub group_id: Scalar,
    #[serde(default)]
    pub topics: Vec<String>,
    pub topic_regex: Option<String>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub start_from: StartFrom,
    #[serde(default)]
    pub properties: BTreeMap<String, Scalar>,
}

fn default_group_id() -> Scalar {
    Scalar("floe".into())
}

fn default_client_id() -> String {
    "floe".into()
}

/// Where to start reading a partition for which neither the table nor the consumer group has
/// a committed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecode {
    #[serde(default)]
    pub format: DecodeFormat,
    #[serde(default)]
    pub variable_scale_decimal: VariableScaleDecimalAs,
    /// The connector's `unavailable.value.placeholder`, when it is not Debezium's default.
    pub unavailable_value_placeholder: Option<String>,
    /// The unit of integer times and timestamps in records without a Connect schema.
    pub schemaless_time_unit: Option<SchemalessTimeUnit>,
    /// How the record values are serialized (the connector's `value.converter`).
    #[serde(default)]
    pub converter: Converter,
    /// How the record keys are serialized; the same as `converter` when left out.
    pub key_converter: Option<Converter>,
    pub schema_registry: Option<RawSchemaRegistry>,
}

/// The serialization of record keys or values: Kafka Connect's converter that wrote them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Converter {
    /// `org.apache.kafka.connect.json.JsonConverter`, with or without schemas.
    #[default]
    Json,
    /// Avro in the Confluent wire format (`io.confluent.connect.avro.AvroConverter`): a zero
    /// byte, the 4-byte schema id, then the Avro binary; schemas come from a Schema Registry.
    Avro,
}

/// Where Avro schemas are fetched from: a Confluent-compatible Schema Registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchemaRegistry {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bearer_token: Option<Secret>,
    /// A PEM file of CA certificates to trust (besides the system's) for an https URL.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What an integer means in a time or timestamp column when the record carries no Connect
/// schema to say it: Debezium's `time.precision.mode=adaptive` sends milliseconds for columns
/// of precision 0-3 and microseconds for 4-6, so no one unit is right for every table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemalessTimeUnit {
    Millis,
    Micros,
    Nanos,
}

/// The shape of the Kafka record values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeFormat {
    /// Debezium change events (`before`/`after`/`op`/`source`), with or without the Connect
    /// `schema`/`payload` envelope.
    #[default]
    Envelope,
    /// Rows flattened by Debezium's ExtractNewRecordState SMT (`__op`, `__deleted`, ...).
    Flattened,
}

/// The Iceberg type for `io.debezium.data.VariableScaleDecimal` and decimals over 38 digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableScaleDecimalAs {
    /// Exact, as the decimal's text.
    #[default]
    String,
    /// Approximate, as a double.
    Double,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTables {
    #[serde(default = "default_namespace")]
    pub default_namespace: String,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub soft_delete: bool,
    #[serde(default)]
    pub metadata_columns: Vec<MetadataColumn>,
    #[serde(default)]
    pub properties: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub overrides: BTreeMap<String, RawTableOverride>,
    #[serde(default)]
    pub deletes: DeleteMode,
    #[serde(default = "default_index_memory")]
    pub index_memory: ByteSize,
}

fn default_index_memory() -> ByteSize {
    ByteSize::gib(2)
}

/// How a commit removes the old rows of the keys it changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Position-delete files, from an in-memory index of where each key's row is: a key the
    /// table does not hold needs no delete, and every engine reads the result.
    #[default]
    Position,
    /// Equality-delete files on the primary key for every changed key, no index.
    Equality,
}

impl Default for RawTables {
    fn default() -> Self {
        RawTables {
            default_namespace: default_namespace(),
            routes: Vec::new(),
            soft_delete: false,
            metadata_columns: Vec::new(),
            properties: BTreeMap::new(),
            overrides: BTreeMap::new(),
            deletes: DeleteMode::default(),
            index_memory: default_index_memory(),
        }
    }
}

fn default_namespace() -> String {
    "cdc".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub topic: Option<String>,
    pub topic_regex: Option<String>,
    pub table: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTableOverride {
    pub primary_key: Option<Vec<String>>,
    pub deletes: Option<DeleteMode>,
    pub unavailable_value_placeholder: Option<String>,
    pub partition_spec: Option<Vec<String>>,
    pub soft_delete: Option<bool>,
    pub metadata_columns: Option<Vec<MetadataColumn>>,
    #[serde(default)]
    pub properties: BTreeMap<String, Scalar>,
}

/// Optional columns Floe adds to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataColumn {
    /// `__floe_op`: the Debezium op of the row's last change (c, u, d, r).
    Op,
    /// `__floe_source_ts`: when the change was committed in the source database.
    SourceTs,
    /// `__floe_updated_at`: when Floe committed the row.
    UpdatedAt,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaging {
    pub bucket: Option<String>,
    #[serde(default = "default_staging_prefix")]
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    pub kms_key_arn: Option<String>,
    #[serde(default)]
    pub manage_lifecycle: bool,
    #[serde(default = "default_expire_after_days")]
    pub expire_after_days: u32,
    #[serde(default, with = "humantime_serde")]
    pub max_uncommitted_age: Option<Duration>,
    pub directory: Option<PathBuf>,
}

fn default_staging_prefix() -> String {
    "floe".into()
}

fn default_expire_after_days() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawCatalog {
    S3tables {
        table_bucket_arn: String,
        region: Option<String>,
        endpoint: Option<String>,
        s3_endpoint: Option<String>,
    },
    Rest {
        uri: String,
        warehouse: Option<String>,
        #[serde(default)]
        auth: RestAuthKind,
        signing_name: Option<String>,
        signing_region: Option<String>,
        credential: Option<Secret>,
        oauth2_server_uri: Option<String>,
        scope: Option<String>,
        token: Option<Secret>,
        #[serde(default = "default_request_timeout", with = "humantime_serde")]
        request_timeout: Duration,
        expire_snapshots: Option<bool>,
        #[serde(default)]
        properties: BTreeMap<String, Scalar>,
    },
    Local {
        #[serde(default = "default_local_path")]
        path: PathBuf,
    },
}

/// How requests to a REST catalog are authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestAuthKind {
    #[default]
    None,
    /// AWS Signature V4 with credentials from the AWS default chain (S3 Tables, AIStor).
    Sigv4,
    /// OAuth2 client credentials (`credential = "client_id:client_secret"`).
    Oauth2,
    /// A static bearer token (`token`).
    Bearer,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_local_path() -> PathBuf {
    PathBuf::from("floe-data")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlush {
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: ByteSize,
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(default = "default_max_window_bytes")]
    pub max_window_bytes: ByteSize,
    #[serde(default = "default_max_concurrent_commits")]
    pub max_concurrent_commits: usize,
    #[serde(default = "default_target_file_size")]
    pub target_file_size: ByteSize,
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for RawFlush {
    fn default() -> Self {
        RawFlush {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
            max_buffered_bytes: default_max_buffered_bytes(),
            interval: default_flush_interval(),
            commit_interval: default_commit_interval(),
            max_window_bytes: default_max_window_bytes(),
            max_concurrent_commits: default_max_concurrent_commits(),
            target_file_size: default_target_file_size(),
            zstd_level: default_zstd_level(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

fn default_max_rows() -> usize {
    100_000
}

fn default_max_bytes() -> ByteSize {
    ByteSize::mib(32)
}

fn default_max_buffered_bytes() -> ByteSize {
    ByteSize::mib(256)
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_max_window_bytes() -> ByteSize {
    ByteSize::mib(256)
}

fn default_max_concurrent_commits() -> usize {
    4
}

fn default_target_file_size() -> ByteSize {
    ByteSize::mib(128)
}

fn default_zstd_level() -> i32 {
    1
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrors {
    #[serde(default)]
    pub policy: ErrorPolicyKind,
    pub dlq_topic: Option<String>,
}

/// What happens to a record that cannot be decoded or applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicyKind {
    /// Stop before the bad record's offset is committed, naming topic, partition and offset.
    #[default]
    Fail,
    /// Log, count, and go on.
    Skip,
    /// Produce the original record to the dead-letter topic, then go on.
    Dlq,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default = "default_orphans_older_than", with = "humantime_serde")]
    pub orphans_older_than: Duration,
}

impl Default for RawMaintenance {
    fn default() -> Self {
        RawMaintenance {
            interval: None,
            orphans_older_than: default_orphans_older_than(),
        }
    }
}

fn default_orphans_older_than() -> Duration {
    Duration::from_secs(3 * 86_400)
}

fn default_true() -> bool {
    true
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9464))
}
