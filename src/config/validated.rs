//! The validated configuration: what the rest of Floe reads. Built only by
//! [`RawConfig::validate`], so every value here has passed the cross-key rules.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;

pub use super::raw::{
    Converter, DecodeFormat, DeleteMode, ErrorPolicyKind, MetadataColumn, RestAuthKind,
    SchemalessTimeUnit, StartFrom, VariableScaleDecimalAs,
};
use super::raw::{
    RawCatalog, RawConfig, RawDecode, RawErrors, RawFlush, RawKafka, RawMaintenance, RawStaging,
    RawTableOverride, RawTables, Scalar, StringOrList,
};
use super::{ConfigError, Secret};

#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub decode: DecodeConfig,
    pub tables: TablesConfig,
    pub staging: StagingConfig,
    pub catalog: CatalogConfig,
    pub flush: FlushConfig,
    pub errors: ErrorsConfig,
    pub metrics: MetricsConfig,
    pub maintenance: MaintenanceConfig,
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub group_id: String,
    pub topics: TopicSelection,
    pub client_id: String,
    pub start_from: StartFrom,
    pub properties: KafkaProperties,
}

#[derive(Debug, Clone)]
pub enum TopicSelection {
    List(Vec<String>),
    Regex(Regex),
}

impl TopicSelection {
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicSelection::List(list) => list.iter().any(|t| t == topic),
            TopicSelection::Regex(re) => re.is_match(topic),
        }
    }
}

/// librdkafka properties passed through as they are (security settings, timeouts). `Debug`
/// hides the values of keys that hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

/// Properties Floe sets itself; setting them by hand would break delivery guarantees.
const RESERVED_KAFKA_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("client.id", "set kafka.client_id instead"),
    (
        "enable.auto.commit",
        "Floe commits offsets only after the Iceberg commit",
    ),
    (
        "enable.auto.offset.store",
        "Floe stores offsets only after the Iceberg commit",
    ),
    ("auto.offset.reset", "set kafka.start_from instead"),
];

pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", ".pem", "key"]
        .iter()
        .any(|needle| k.contains(needle))
        && !k.ends_with(".location")
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            if is_secret_property(k) {
                map.entry(k, &"***");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

#[derive(Debug, Clone)]
pub struct DecodeConfig {
    pub format: DecodeFormat,
    pub variable_scale_decimal: VariableScaleDecimalAs,
    /// `None`: integers in time and timestamp columns of schemaless records are refused.
    pub schemaless_time_unit: Option<SchemalessTimeUnit>,
    pub converter: Converter,
    pub key_converter: Converter,
    /// Set whenever either converter is Avro.
    pub schema_registry: Option<SchemaRegistryConfig>,
}

/// A Confluent-compatible Schema Registry.
#[derive(Debug, Clone)]
pub struct SchemaRegistryConfig {
    /// The base URL, without a trailing slash.
    pub url: String,
    pub auth: RegistryAuth,
    /// PEM certificates to trust besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// A destination table, `namespace.name`, as configured (not yet normalised to catalog rules).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

impl FromStr for TableName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('.') => {
                Ok(TableName {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "{s:?} is not a table name; expected \"namespace.table\""
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub matcher: RouteMatcher,
    /// The destination; for a regex route, `$1`-style references to its capture groups.
    pub table: String,
}

#[derive(Debug, Clone)]
pub enum RouteMatcher {
    Topic(String),
    Regex(Regex),
}

/// Per-table settings: the table defaults with the table's own overrides applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSettings {
    /// Replaces the primary key taken from the Kafka record key.
    pub primary_key: Option<Vec<String>>,
    pub partition_spec: Vec<PartitionField>,
    pub soft_delete: bool,
    pub metadata_columns: Vec<MetadataColumn>,
    pub properties: BTreeMap<String, String>,
    /// The text Debezium sends for a value it does not have (an unchanged TOASTed column).
    pub unavailable_value_placeholder: String,
    pub deletes: DeleteMode,
}

#[derive(Debug, Clone)]
pub struct TablesConfig {
    pub default_namespace: String,
    pub routes: Vec<Route>,
    pub defaults: TableSettings,
    pub overrides: BTreeMap<TableName, TableSettings>,
    /// What the key indexes of all tables may hold in memory together.
    pub index_memory: u64,
}

impl TablesConfig {
    /// The destination of a topic: the first matching route, else
    /// `<default_namespace>.<last dot-separated segment of the topic>`.
    pub fn route(&self, topic: &str) -> Result<TableName, String> {
        for route in &self.routes {
            match &route.matcher {
                RouteMatcher::Topic(t) if t == topic => return route.table.parse(),
                RouteMatcher::Regex(re) => {
                    if let Some(caps) = re.captures(topic) {
                        let mut out = String::new();
                        caps.expand(&route.table, &mut out);
                        return out.parse().map_err(|e| {
                            format!("route {:?} for topic {topic:?}: {e}", route.table)
                        });
                    }
                }
                RouteMatcher::Topic(_) => {}
            }
        }
        let name = topic.rsplit('.').next().unwrap_or(topic);
        Ok(TableName {
            namespace: self.default_namespace.clone(),
            name: name.to_string(),
        })
    }

    pub fn settings(&self, table: &TableName) -> &TableSettings {
        self.overrides.get(table).unwrap_or(&self.defaults)
    }
}

/// One field of a partition spec, written like Iceberg's transforms: `col`, `identity(col)`,
/// `year(col)`, `month(col)`, `day(col)`, `hour(col)`, `bucket(16, col)`, `truncate(4, col)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    pub source: String,
    pub transform: PartitionTransform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTransform {
    Identity,
    Year,
    Month,
    Day,
    Hour,
    Bucket(u32),
    Truncate(u32),
}

impl FromStr for PartitionField {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a partition field; expected col, identity(col), year(col), \
                 month(col), day(col), hour(col), bucket(N, col) or truncate(W, col)"
            )
        };
        let s = s.trim();
        let Some((func, rest)) = s.split_once('(') else {
            return if is_identifier(s) {
                Ok(PartitionField {
                    source: s.to_string(),
                    transform: PartitionTransform::Identity,
                })
            } else {
                Err(bad())
            };
        };
        let args = rest.strip_suffix(')').ok_or_else(bad)?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        let (transform, source) = match (func.trim(), args.as_slice()) {
            ("identity", [c]) => (PartitionTransform::Identity, *c),
            ("year", [c]) => (PartitionTransform::Year, *c),
            ("month", [c]) => (PartitionTransform::Month, *c),
            ("day", [c]) => (PartitionTransform::Day, *c),
            ("hour", [c]) => (PartitionTransform::Hour, *c),
            ("bucket", [n, c]) => (
                PartitionTransform::Bucket(n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
                *c,
            ),
            ("truncate", [w, c]) => (
                PartitionTransform::Truncate(w.parse().ok().filter(|w| *w > 0).ok_or_else(bad)?),
                *c,
            ),
            _ => return Err(bad()),
        };
        if !is_identifier(source) {
            return Err(bad());
        }
        Ok(PartitionField {
            source: source.to_string(),
            transform,
        })
    }
}

/// As it is written in the configuration: `day(ts)`, `bucket(16, id)`, `col`.
impl std::fmt::Display for PartitionField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.source;
        match self.transform {
            PartitionTransform::Identity => write!(f, "{c}"),
            PartitionTransform::Year => write!(f, "year({c})"),
            PartitionTransform::Month => write!(f, "month({c})"),
            PartitionTransform::Day => write!(f, "day({c})"),
            PartitionTransform::Hour => write!(f, "hour({c})"),
            PartitionTransform::Bucket(n) => write!(f, "bucket({n}, {c})"),
            PartitionTransform::Truncate(w) => write!(f, "truncate({w}, {c})"),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

#[derive(Debug, Clone)]
pub enum StagingConfig {
    /// An S3 bucket with a lifecycle rule that expires old objects.
    S3(S3Staging),
    /// A local directory, for the local catalog.
    Local { directory: PathBuf },
}

#[derive(Debug, Clone)]
pub struct S3Staging {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub kms_key_arn: Option<String>,
    pub manage_lifecycle: bool,
    pub expire_after_days: u32,
    /// Changes staged this long without a commit stop the run before the lifecycle rule can
    /// remove them (default: half of `expire_after_days`).
    pub max_uncommitted_age: Duration,
}

#[derive(Debug, Clone)]
pub enum CatalogConfig {
    S3Tables(S3TablesCatalog),
    Rest(RestCatalog),
    Local(LocalCatalog),
}

impl CatalogConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogConfig::S3Tables(_) => "s3tables",
            CatalogConfig::Rest(_) => "rest",
            CatalogConfig::Local(_) => "local",
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3TablesCatalog {
    pub table_bucket: TableBucketArn,
    pub region: String,
    /// Overrides the S3 Tables control-plane endpoint (tests, VPC endpoints).
    pub endpoint: Option<String>,
    /// Overrides the S3 endpoint used for the tables' files.
    pub s3_endpoint: Option<String>,
}

/// `arn:<partition>:s3tables:<region>:<account>:bucket/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableBucketArn {
    pub arn: String,
    pub partition: String,
    pub region: String,
    pub account: String,
    pub bucket: String,
}

impl FromStr for TableBucketArn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a table bucket ARN; expected arn:aws:s3tables:<region>:<account>:bucket/<name>"
            )
        };
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(bad());
        };
        let bucket = resource.strip_prefix("bucket/").ok_or_else(bad)?;
        if *arn != "arn"
            || *service != "s3tables"
            || partition.is_empty()
            || region.is_empty()
            || account.is_empty()
            || bucket.is_empty()
            || bucket.contains('/')
        {
            return Err(bad());
        }
        Ok(TableBucketArn {
            arn: s.to_string(),
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            bucket: bucket.to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct RestCatalog {
    pub uri: String,
    pub warehouse: Option<String>,
    pub auth: RestAuth,
    pub request_timeout: Duration,
    /// Whether Floe expires old snapshots and deletes their files: off where the catalog
    /// maintains its tables itself (S3 Tables' endpoint: a table bucket ARN as warehouse).
    pub expire_snapshots: bool,
    /// FileIO and catalog properties passed through (`s3.endpoint`, `s3.path-style-access`...).
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum RestAuth {
    None,
    Sigv4 {
        signing_name: String,
        /// `None`: the region of the AWS default chain.
        signing_region: Option<String>,
    },
    OAuth2 {
        client_id: String,
        client_secret: Secret,
        /// `None`: the catalog's own `v1/oauth/tokens`.
        server_uri: Option<String>,
        scope: Option<String>,
    },
    Bearer {
        token: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct LocalCatalog {
    /// Holds `catalog.db` (SQLite) and `warehouse/`.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct FlushConfig {
    pub max_rows: usize,
    pub max_bytes: u64,
    pub max_buffered_bytes: u64,
    pub interval: Duration,
    pub commit_interval: Duration,
    /// In-memory (Arrow) size of the staged changes of all tables waiting for a commit:
    /// reaching it starts a commit round early, and while a round is in flight or failing,
    /// reading pauses there.
    pub max_window_bytes: u64,
    /// Tables committed at once within a commit round.
    pub max_concurrent_commits: usize,
    pub target_file_size: u64,
    pub zstd_level: i32,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum ErrorsConfig {
    Fail,
    Skip,
    Dlq { topic: String },
}

/// Background maintenance in `floe run` (what `floe maintain` does), for catalogs that do not
/// maintain their tables themselves.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceConfig {
    /// How often each table is compacted and its orphan files removed; `None`: never.
    pub interval: Option<Duration>,
    /// Files no snapshot references are deleted once older than this.
    pub orphans_older_than: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl RawConfig {
    /// Checks the rules that span keys and builds the [`Config`] the rest of Floe reads.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let kafka = validate_kafka(self.kafka)?;
        let catalog = validate_catalog(self.catalog)?;
        let staging = validate_staging(self.staging, &catalog)?;
        let errors = validate_errors(self.errors, &kafka)?;
        Ok(Config {
            tables: validate_tables(
                self.tables,
                self.decode.unavailable_value_placeholder.clone(),
            )?,
            decode: validate_decode(self.decode)?,
            flush: validate_flush(self.flush)?,
            metrics: MetricsConfig {
                enabled: self.metrics.enabled,
                listen: self.metrics.listen,
            },
            maintenance: validate_maintenance(self.maintenance)?,
            kafka,
            catalog,
            staging,
            errors,
        })
    }
}

fn validate_decode(raw: RawDecode) -> Result<DecodeConfig, ConfigError> {
    let key_converter = raw.key_converter.unwrap_or(raw.converter);
    let avro = raw.converter == Converter::Avro || key_converter == Converter::Avro;
    let schema_registry = match (raw.schema_registry, avro) {
        (None, true) => {
            return Err(ConfigError::invalid(
                "decode.schema_registry.url",
                "is needed to read Avro records (decode.converter or decode.key_converter = \"avro\")",
            ));
        }
        (Some(_), false) | (None, false) => None,
        (Some(r), true) => {
            let url = r.url.trim().trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "decode.schema_registry.url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            let auth = match (r.username, r.password, r.bearer_token) {
                (None, None, None) => RegistryAuth::None,
                (Some(username), Some(password), None) => {
                    RegistryAuth::Basic { username, password }
                }
                (None, None, Some(token)) => RegistryAuth::Bearer(token),
                (_, _, Some(_)) => {
                    return Err(ConfigError::invalid(
                        "decode.schema_registry.bearer_token",
                        "cannot be set together with username and password",
                    ));
                }
                (_, _, None) => {
                    return Err(ConfigError::invalid(
                        "decode.schema_registry.password",
                        "basic authentication needs both username and password",
                    ));
                }
            };
            let ca_pem = match r.ca_file {
                Some(path) => Some(std::fs::read(&path).map_err(|e| {
                    ConfigError::invalid(
                        "decode.schema_registry.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?),
                None => None,
            };
            if r.timeout.is_zero() {
                return Err(ConfigError::invalid(
                    "decode.schema_registry.timeout",
                    "must be longer than zero",
                ));
            }
            Some(SchemaRegistryConfig {
                url,
                auth,
                ca_pem,
                timeout: r.timeout,
            })
        }
    };
    Ok(DecodeConfig {
        format: raw.format,
        variable_scale_decimal: raw.variable_scale_decimal,
        schemaless_time_unit: raw.schemaless_time_unit,
        converter: raw.converter,
        key_converter,
        schema_registry,
    })
}

fn validate_maintenance(raw: RawMaintenance) -> Result<MaintenanceConfig, ConfigError> {
    if raw.interval.is_some_and(|i| i.is_zero()) {
        return Err(ConfigError::invalid(
            "maintenance.interval",
            "must be longer than zero (leave it out to turn background maintenance off)",
        ));
    }
    // Floe's own commits write their files before the snapshot that lists them: a file that
    // young is not an orphan.
    if raw.orphans_older_than < Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "maintenance.orphans_older_than",
            "must be at least 1h: files of a commit in progress are not referenced yet",
        ));
    }
    Ok(MaintenanceConfig {
        interval: raw.interval,
        orphans_older_than: raw.orphans_older_than,
    })
}

fn validate_kafka(raw: RawKafka) -> Result<KafkaConfig, ConfigError> {
    let brokers: Vec<String> = match raw.brokers {
        StringOrList::One(s) => s.split(',').map(|b| b.trim().to_string()).collect(),
        StringOrList::Many(v) => v.into_iter().map(|b| b.trim().to_string()).collect(),
    };
    if brokers.is_empty() || brokers.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            "kafka.brokers",
            "expected one or more host:port addresses",
        ));
    }
    if raw.group_id.0.trim().is_empty() {
        return Err(ConfigError::invalid("kafka.group_id", "must not be empty"));
    }
    let topics = match (raw.topics.is_empty(), raw.topic_regex) {
        (false, None) => {
            if let Some(t) = raw.topics.iter().find(|t| t.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    "kafka.topics",
                    format!("{t:?} is not a topic name"),
                ));
            }
            TopicSelection::List(raw.topics)
        }
        (true, Some(re)) => TopicSelection::Regex(Regex::new(&re).map_err(|e| {
            ConfigError::invalid("kafka.topic_regex", format!("not a valid regex: {e}"))
        })?),
        (true, None) => {
            return Err(ConfigError::invalid(
                "kafka.topics",
                "set either kafka.topics (a list) or kafka.topic_regex",
            ));
        }
        (false, Some(_)) => {
            return Err(ConfigError::invalid(
                "kafka.topic_regex",
                "set either kafka.topics or kafka.topic_regex, not both",
            ));
        }
    };
    let mut properties = BTreeMap::new();
    for (key, Scalar(value)) in raw.properties {
        if let Some((_, why)) = RESERVED_KAFKA_PROPERTIES.iter().find(|(k, _)| *k == key) {
            return Err(ConfigError::invalid(
                format!("kafka.properties.\"{key}\""),
                format!("Floe sets this property itself: {why}"),
            ));
        }
        if key == "partition.assignment.strategy" && value.contains("cooperative") {
            return Err(ConfigError::invalid(
                format!("kafka.properties.\"{key}\""),
                "incremental (cooperative) rebalancing is not supported: Floe drops uncommitted \
                 work on every revoke and relies on the eager protocol to re-read it; use range \
                 or roundrobin",
            ));
        }
        // KIP-848's consumer protocol assigns incrementally whatever the assignor: a revoke
        // takes some partitions while the others read on, which the eager model above
        // does not allow for.
        if key == "group.protocol" && !value.trim().eq_ignore_ascii_case("classic") {
            return Err(ConfigError::invalid(
                format!("kafka.properties.\"{key}\""),
                "the consumer group protocol (KIP-848) rebalances incrementally, which Floe does \
                 not support: it drops uncommitted work on every revoke and relies on the \
                 classic eager protocol to re-read it; use \"classic\" (the default)",
            ));
        }
        properties.insert(key, value);
    }
    Ok(KafkaConfig {
        brokers,
        group_id: raw.group_id.0,
        topics,
        client_id: raw.client_id,
        start_from: raw.start_from,
        properties: KafkaProperties(properties),
    })
}

fn table_settings(
    key: &str,
    defaults: &TableSettings,
    o: RawTableOverride,
) -> Result<TableSettings, ConfigError> {
    let mut s = defaults.clone();
    if let Some(pk) = o.primary_key {
        if pk.is_empty() || pk.iter().any(|c| c.trim().is_empty()) {
            return Err(ConfigError::invalid(
                format!("{key}.primary_key"),
                "expected a non-empty list of column names",
            ));
        }
        s.primary_key = Some(pk);
    }
    if let Some(d) = o.deletes {
        s.deletes = d;
    }
    if let Some(p) = o.unavailable_value_placeholder {
        s.unavailable_value_placeholder =
            placeholder(&format!("{key}.unavailable_value_placeholder"), p)?;
    }
    if let Some(spec) = o.partition_spec {
        let key = format!("{key}.partition_spec");
        s.partition_spec = parse_partition_spec(&key, &spec)?;
    }
    if let Some(sd) = o.soft_delete {
        s.soft_delete = sd;
    }
    if let Some(mc) = o.metadata_columns {
        s.metadata_columns = dedup_sorted(mc);
    }
    s.properties
        .extend(o.properties.into_iter().map(|(k, v)| (k, v.0)));
    Ok(s)
}

fn parse_partition_spec(key: &str, spec: &[String]) -> Result<Vec<PartitionField>, ConfigError> {
    spec.iter()
        .map(|f| f.parse().map_err(|e| ConfigError::invalid(key, e)))
        .collect()
}

fn dedup_sorted(mut v: Vec<MetadataColumn>) -> Vec<MetadataColumn> {
    v.sort();
    v.dedup();
    v
}

fn placeholder(key: &str, text: String) -> Result<String, ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "expected the connector's unavailable.value.placeholder text, not an empty string",
        ));
    }
    Ok(text)
}

fn validate_tables(
    raw: RawTables,
    unavailable_value_placeholder: Option<String>,
) -> Result<TablesConfig, ConfigError> {
    if raw.default_namespace.trim().is_empty() || raw.default_namespace.contains('.') {
        return Err(ConfigError::invalid(
            "tables.default_namespace",
            "expected a namespace name without dots",
        ));
    }
    let defaults = TableSettings {
        primary_key: None,
        partition_spec: Vec::new(),
        soft_delete: raw.soft_delete,
        metadata_columns: dedup_sorted(raw.metadata_columns),
        properties: raw.properties.into_iter().map(|(k, v)| (k, v.0)).collect(),
        unavailable_value_placeholder: match unavailable_value_placeholder {
            Some(p) => placeholder("decode.unavailable_value_placeholder", p)?,
            None => crate::decode::UNAVAILABLE_VALUE.to_string(),
        },
        deletes: raw.deletes,
    };
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        let key = format!("tables.route[{i}]");
        let matcher = match (r.topic, r.topic_regex) {
            (Some(t), None) => {
                r.table
                    .parse::<TableName>()
                    .map_err(|e| ConfigError::invalid(format!("{key}.table"), e))?;
                RouteMatcher::Topic(t)
            }
            (None, Some(re)) => {
                let re = Regex::new(&re).map_err(|e| {
                    ConfigError::invalid(
                        format!("{key}.topic_regex"),
                        format!("not a valid regex: {e}"),
                    )
                })?;
                if !r.table.contains('.') {
                    return Err(ConfigError::invalid(
                        format!("{key}.table"),
                        format!(
                            "{:?} must name \"namespace.table\" (capture references like $1 are allowed)",
                            r.table
                        ),
                    ));
                }
                RouteMatcher::Regex(re)
            }
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    "a route needs exactly one of `topic` or `topic_regex`",
                ));
            }
        };
        routes.push(Route {
            matcher,
            table: r.table,
        });
    }
    let mut overrides = BTreeMap::new();
    for (name, o) in raw.overrides {
        let key = format!("tables.overrides.\"{name}\"");
        let table: TableName = name
            .parse()
            .map_err(|e| ConfigError::invalid(key.clone(), e))?;
        overrides.insert(table, table_settings(&key, &defaults, o)?);
    }
    Ok(TablesConfig {
        default_namespace: raw.default_namespace,
        routes,
        defaults,
        overrides,
        index_memory: raw.index_memory.as_u64(),
    })
}

fn validate_staging(
    raw: Option<RawStaging>,
    catalog: &CatalogConfig,
) -> Result<StagingConfig, ConfigError> {
    let Some(raw) = raw else {
        return match catalog {
            CatalogConfig::Local(local) => Ok(StagingConfig::Local {
                directory: local.path.join("staging"),
            }),
            other => Err(ConfigError::invalid(
                "staging",
                format!(
                    "required with catalog type {}: set staging.bucket (an S3 bucket with an expiration rule)",
                    other.kind()
                ),
            )),
        };
    };
    match (raw.bucket, raw.directory) {
        (Some(bucket), None) => {
            if bucket.trim().is_empty() || bucket.contains('/') {
                return Err(ConfigError::invalid(
                    "staging.bucket",
                    "expected a bucket name (no s3:// and no slashes; use staging.prefix)",
                ));
            }
            if raw.expire_after_days == 0 {
                return Err(ConfigError::invalid(
                    "staging.expire_after_days",
                    "must be at least 1",
                ));
            }
            let rule_age = Duration::from_secs(u64::from(raw.expire_after_days) * 86_400);
            let max_uncommitted_age = raw.max_uncommitted_age.unwrap_or(rule_age / 2);
            if max_uncommitted_age.is_zero() || max_uncommitted_age >= rule_age {
                return Err(ConfigError::invalid(
                    "staging.max_uncommitted_age",
                    format!(
                        "must be above zero and below staging.expire_after_days ({} days): \
                         staged changes must be committed before the lifecycle rule removes them",
                        raw.expire_after_days
                    ),
                ));
            }
            Ok(StagingConfig::S3(S3Staging {
                bucket,
                prefix: raw.prefix.trim_matches('/').to_string(),
                region: raw.region,
                endpoint: raw.endpoint,
                force_path_style: raw.force_path_style,
                kms_key_arn: raw.kms_key_arn,
                manage_lifecycle: raw.manage_lifecycle,
                expire_after_days: raw.expire_after_days,
                max_uncommitted_age,
            }))
        }
        (None, Some(directory)) => {
            if raw.max_uncommitted_age.is_some() {
                return Err(ConfigError::invalid(
                    "staging.max_uncommitted_age",
                    "only used with staging.bucket (a local directory has no lifecycle rule)",
                ));
            }
            if !matches!(catalog, CatalogConfig::Local(_)) {
                return Err(ConfigError::invalid(
                    "staging.directory",
                    format!(
                        "a local staging directory is only for catalog type local; catalog type {} needs staging.bucket",
                        catalog.kind()
                    ),
                ));
            }
            Ok(StagingConfig::Local { directory })
        }
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            "staging",
            "set either staging.bucket or staging.directory, not both",
        )),
        (None, None) => Err(ConfigError::invalid(
            "staging",
            "set staging.bucket (S3) or staging.directory (local catalog only)",
        )),
    }
}

fn validate_catalog(raw: RawCatalog) -> Result<CatalogConfig, ConfigError> {
    Ok(match raw {
        RawCatalog::S3tables {
            table_bucket_arn,
            region,
            endpoint,
            s3_endpoint,
        } => {
            let table_bucket: TableBucketArn = table_bucket_arn
                .parse()
                .map_err(|e| ConfigError::invalid("catalog.table_bucket_arn", e))?;
            let region = region.unwrap_or_else(|| table_bucket.region.clone());
            for (key, value) in [
                ("catalog.endpoint", &endpoint),
                ("catalog.s3_endpoint", &s3_endpoint),
            ] {
                if let Some(v) = value {
                    check_http_url(key, v)?;
                }
            }
            CatalogConfig::S3Tables(S3TablesCatalog {
                table_bucket,
                region,
                endpoint,
                s3_endpoint,
            })
        }
        RawCatalog::Rest {
            uri,
            warehouse,
            auth,
            signing_name,
            signing_region,
            credential,
            oauth2_server_uri,
            scope,
            token,
            request_timeout,
            expire_snapshots,
            properties,
        } => {
            check_http_url("catalog.uri", &uri)?;
            let only_with = |key: &str, set: bool, kind: &str| {
                if set {
                    Err(ConfigError::invalid(
                        format!("catalog.{key}"),
                        format!("only used with catalog.auth = \"{kind}\""),
                    ))
                } else {
                    Ok(())
                }
            };
            if auth != RestAuthKind::Sigv4 {
                only_with("signing_name", signing_name.is_some(), "sigv4")?;
                only_with("signing_region", signing_region.is_some(), "sigv4")?;
            }
            if auth != RestAuthKind::Oauth2 {
                only_with("credential", credential.is_some(), "oauth2")?;
                only_with("oauth2_server_uri", oauth2_server_uri.is_some(), "oauth2")?;
                only_with("scope", scope.is_some(), "oauth2")?;
            }
            if auth != RestAuthKind::Bearer {
                only_with("token", token.is_some(), "bearer")?;
            }
            let auth = match auth {
                RestAuthKind::None => RestAuth::None,
                RestAuthKind::Sigv4 => RestAuth::Sigv4 {
                    signing_name: signing_name.unwrap_or_else(|| "s3tables".into()),
                    signing_region,
                },
                RestAuthKind::Oauth2 => {
                    let credential = credential.ok_or_else(|| {
                        ConfigError::invalid(
                            "catalog.credential",
                            "required with auth = \"oauth2\": \"client_id:client_secret\"",
                        )
                    })?;
                    let (id, secret) = credential.expose().split_once(':').ok_or_else(|| {
                        ConfigError::invalid(
                            "catalog.credential",
                            "expected \"client_id:client_secret\"",
                        )
                    })?;
                    if let Some(u) = &oauth2_server_uri {
                        check_http_url("catalog.oauth2_server_uri", u)?;
                    }
                    RestAuth::OAuth2 {
                        client_id: id.to_string(),
                        client_secret: Secret::new(secret),
                        server_uri: oauth2_server_uri,
                        scope,
                    }
                }
                RestAuthKind::Bearer => RestAuth::Bearer {
                    token: token.ok_or_else(|| {
                        ConfigError::invalid("catalog.token", "required with auth = \"bearer\"")
                    })?,
                },
            };
            // S3 Tables' Iceberg endpoint (its warehouse is the table bucket's ARN) expires
            // snapshots itself and refuses deletes.
            let s3tables = warehouse.as_deref().is_some_and(|w| w.starts_with("arn:"));
            CatalogConfig::Rest(RestCatalog {
                uri,
                warehouse,
                auth,
                request_timeout,
                expire_snapshots: expire_snapshots.unwrap_or(!s3tables),
                properties: properties.into_iter().map(|(k, v)| (k, v.0)).collect(),
            })
        }
        RawCatalog::Local { path } => CatalogConfig::Local(LocalCatalog { path }),
    })
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("{value:?} is not an http:// or https:// URL"),
        )),
    }
}

fn validate_flush(raw: RawFlush) -> Result<FlushConfig, ConfigError> {
    if raw.max_rows == 0 {
        return Err(ConfigError::invalid("flush.max_rows", "must be at least 1"));
    }
    if raw.max_bytes.as_u64() == 0 {
        return Err(ConfigError::invalid(
            "flush.max_bytes",
            "must be more than 0",
        ));
    }
    if raw.max_bytes > raw.max_buffered_bytes {
        return Err(ConfigError::invalid(
            "flush.max_bytes",
            format!(
                "one table's buffer ({}) cannot be larger than flush.max_buffered_bytes ({})",
                raw.max_bytes, raw.max_buffered_bytes
            ),
        ));
    }
    if raw.interval.is_zero() {
        return Err(ConfigError::invalid(
            "flush.interval",
            "must be more than 0s",
        ));
    }
    if raw.commit_interval < raw.interval {
        return Err(ConfigError::invalid(
            "flush.commit_interval",
            format!(
                "must be at least flush.interval ({}); a commit covers one or more flushes",
                humantime::format_duration(raw.interval)
            ),
        ));
    }
    if raw.max_window_bytes.as_u64() == 0 {
        return Err(ConfigError::invalid(
            "flush.max_window_bytes",
            "must be more than 0",
        ));
    }
    if raw.max_concurrent_commits == 0 {
        return Err(ConfigError::invalid(
            "flush.max_concurrent_commits",
            "must be at least 1",
        ));
    }
    if raw.target_file_size.as_u64() < 1024 * 1024 {
        return Err(ConfigError::invalid(
            "flush.target_file_size",
            "must be at least 1MiB",
        ));
    }
    if !(1..=22).contains(&raw.zstd_level) {
        return Err(ConfigError::invalid(
            "flush.zstd_level",
            "must be between 1 and 22",
        ));
    }
    Ok(FlushConfig {
        max_rows: raw.max_rows,
        max_bytes: raw.max_bytes.as_u64(),
        max_buffered_bytes: raw.max_buffered_bytes.as_u64(),
        interval: raw.interval,
        commit_interval: raw.commit_interval,
        max_window_bytes: raw.max_window_bytes.as_u64(),
        max_concurrent_commits: raw.max_concurrent_commits,
        target_file_size: raw.target_file_size.as_u64(),
        zstd_level: raw.zstd_level,
        drain_timeout: raw.drain_timeout,
    })
}

fn validate_errors(raw: RawErrors, kafka: &KafkaConfig) -> Result<ErrorsConfig, ConfigError> {
    match raw.policy {
        ErrorPolicyKind::Fail => Ok(ErrorsConfig::Fail),
        ErrorPolicyKind::Skip => Ok(ErrorsConfig::Skip),
        ErrorPolicyKind::Dlq => {
            let topic = raw
                .dlq_topic
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "errors.dlq_topic",
                        "required with errors.policy = \"dlq\"",
                    )
                })?;
            if kafka.topics.matches(&topic) {
                return Err(ConfigError::invalid(
                    "errors.dlq_topic",
                    format!(
                        "{topic:?} is one of the topics Floe consumes; a dead letter would be read again"
                    ),
                ));
            }
            Ok(ErrorsConfig::Dlq { topic })
        }
    }
}
