//! stage: each flush of a table's buffer becomes one Parquet delta file (every change with
//! its op and Kafka position) in the staging area: an S3 bucket with an expiration rule, or a
//! local directory for the local catalog. Staging frees memory between commits and lets one
//! commit cover many flushes.
//!
//! A staged delta is only a cache of what Kafka still holds: nothing is acknowledged to Kafka
//! before the table commit, so a lost or left-over delta never loses or duplicates a change.
//! Deltas are deleted after their commit; the bucket's lifecycle rule catches leftovers.
//!
//! S3 calls that fail in a way that may pass (5xx, throttling, timeouts, dropped connections,
//! expired credentials) are retried with backoff for about a minute, on top of the SDK's own
//! quick retries, and each retry is logged. Writes and reads of a delta are idempotent: a
//! delta's key is fixed before its first attempt.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::Metadata;

use crate::config::{StagingConfig, TableName};
use crate::retry::Backoff;

/// Every S3 operation Floe sends to the staging bucket (`floe run` and `floe check`), with the
/// IAM action it needs. `floe policy` prints these and `floe check` names them; an operation
/// missing here is logged as a warning when it is sent.
pub const S3_ACTIONS: &[(&str, &str)] = &[
    ("PutObject", "s3:PutObject"),
    ("GetObject", "s3:GetObject"),
    ("DeleteObject", "s3:DeleteObject"),
    (
        "GetBucketLifecycleConfiguration",
        "s3:GetLifecycleConfiguration",
    ),
    (
        "PutBucketLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
    ),
    ("GetBucketEncryption", "s3:GetEncryptionConfiguration"),
];

/// The action only needed with `staging.manage_lifecycle = true`.
pub const MANAGE_LIFECYCLE_ACTION: &str = "s3:PutLifecycleConfiguration";

/// KMS actions for staged files encrypted with `staging.kms_key_arn` (written, then read).
pub const KMS_ACTIONS: &[&str] = &["kms:GenerateDataKey", "kms:Decrypt"];

/// The IAM action of an S3 operation in [`S3_ACTIONS`].
pub fn s3_action(operation: &str) -> Option<&'static str> {
    S3_ACTIONS
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, action)| *action)
}

/// Warns about any staging operation that [`S3_ACTIONS`] does not list.
#[derive(Debug)]
struct CheckActions;

impl Intercept for CheckActions {
    fn name(&self) -> &'static str {
        "floe-check-staging-actions"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>()
            && s3_action(metadata.name()).is_none()
        {
            tracing::warn!(
                operation = metadata.name(),
                "staging S3 operation missing from stage::S3_ACTIONS"
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("staging {location}: {message}")]
pub struct StageError {
    pub location: String,
    pub message: String,
}

fn stage_err(location: impl Into<String>, message: impl std::fmt::Display) -> StageError {
    StageError {
        location: location.into(),
        message: message.to_string(),
    }
}

/// How a failing S3 call is tried again: 7 retries, waiting 1, 2, 4, 8, 16, 16, 16 s (each
/// with up to as much again of jitter): one to two minutes.
const S3_RETRIES: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16), 7);

/// A failed S3 call: its message, and whether trying again may help.
struct S3Failure {
    message: String,
    transient: bool,
}

impl<E> From<SdkError<E, aws_sdk_s3::config::http::HttpResponse>> for S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn from(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Self {
        let transient = crate::catalog::aws::s3_transient(&e);
        S3Failure {
            message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            transient,
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or has been retried as [`S3_RETRIES`] allows.
async fn retrying<T, F, Fut>(location: &str, operation: &str, call: F) -> Result<T, StageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S3Failure>>,
{
    let mut retry = 0;
    S3_RETRIES
        .retry(
            call,
            |failure: &S3Failure| failure.transient,
            |failure, wait| {
                retry += 1;
                tracing::warn!(
                    location,
                    operation,
                    error = %failure.message,
                    retry,
                    retry_in = ?wait,
                    "staging call failed; retrying"
                );
            },
        )
        .await
        .map_err(|failure| stage_err(location, failure.message))
}

/// One staged flush of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedDelta {
    pub table: TableName,
    pub location: String,
    pub rows: usize,
    /// Its size in the staging bucket (compressed Parquet).
    pub bytes: u64,
    /// The in-memory (Arrow) size of its rows: what reading it back for the commit holds.
    pub memory: u64,
    /// When it was written (the lifecycle rule counts from then).
    pub staged_at: std::time::Instant,
}

/// What [`Stager::ensure_expiration`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleState {
    /// A local directory.
    NotApplicable,
    /// The bucket already expires objects: after this many days (its shortest rule).
    Expires(u32),
    /// No expiration rule, and Floe was not asked to add one.
    Missing,
    /// Floe added its rule.
    Added,
}

/// Where staged deltas live.
pub enum Stager {
    Local {
        dir: PathBuf,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        /// SSE-KMS key for staged files; `None`: the bucket's default encryption.
        kms_key: Option<String>,
    },
}

impl std::fmt::Debug for Stager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stager::Local { dir } => write!(f, "Stager::Local({})", dir.display()),
            Stager::S3 { bucket, prefix, .. } => write!(f, "Stager::S3(s3://{bucket}/{prefix})"),
        }
    }
}

impl Stager {
    /// A stager for `config`; `instance` keeps this process's files apart from other
    /// replicas' in a shared location.
    pub async fn open(config: &StagingConfig, instance: &str) -> Result<Self, StageError> {
        match config {
            StagingConfig::Local { directory } => {
                let dir = directory.join(instance);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| stage_err(dir.display().to_string(), e))?;
                Ok(Stager::Local { dir })
            }
            StagingConfig::S3(s3) => {
                let sdk = crate::catalog::aws::load_sdk_config(
                    s3.region.as_deref().unwrap_or("us-east-1"),
                )
                .await;
                let region = s3
                    .region
                    .clone()
                    .or_else(|| sdk.region().map(|r| r.to_string()))
                    .unwrap_or_else(|| "us-east-1".into());
                let client = aws_sdk_s3::Client::from_conf(
                    crate::catalog::aws::s3_client(
                        &sdk,
                        &region,
                        s3.endpoint.as_deref(),
                        s3.force_path_style,
                    )
                    .config()
                    .to_builder()
                    .interceptor(CheckActions)
                    .build(),
                );
                let prefix = if s3.prefix.is_empty() {
                    instance.to_string()
                } else {
                    format!("{}/{instance}", s3.prefix)
                };
                Ok(Stager::S3 {
                    client,
                    bucket: s3.bucket.clone(),
                    prefix,
                    kms_key: s3.kms_key_arn.clone(),
                })
            }
        }
    }

    /// The S3 client, bucket, object prefix of this process and SSE-KMS key (for `floe check`).
    pub fn s3(&self) -> Option<(&aws_sdk_s3::Client, &str, &str, Option<&str>)> {
        match self {
            Stager::S3 {
                client,
                bucket,
                prefix,
                kms_key,
            } => Some((client, bucket, prefix, kms_key.as_deref())),
            Stager::Local { .. } => None,
        }
    }

    /// Checks that the staging bucket expires old objects, so leftovers of crashed runs do not
    /// pile up. Without a rule Floe warns, or, with `manage`, adds one for its prefix (keeping
    /// the bucket's other rules). A local directory needs nothing.
    pub async fn ensure_expiration(
        &self,
        manage: bool,
        days: u32,
    ) -> Result<LifecycleState, StageError> {
        let Stager::S3 {
            client,
            bucket,
            prefix,
            ..
        } = self
        else {
            return Ok(LifecycleState::NotApplicable);
        };
        let location = format!("s3://{bucket}");
        let rules = match client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => out.rules().to_vec(),
            Err(e) => {
                let no_rules = e
                    .as_service_error()
                    .and_then(|se| aws_sdk_s3::error::ProvideErrorMetadata::code(se))
                    == Some("NoSuchLifecycleConfiguration");
                if !no_rules {
                    return Err(stage_err(
                        &location,
                        aws_sdk_s3::error::DisplayErrorContext(e),
                    ));
                }
                Vec::new()
            }
        };
        let expires = rules
            .iter()
            .filter(|r| r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
            .filter_map(|r| r.expiration().and_then(|e| e.days()))
            .filter_map(|days| u32::try_from(days).ok())
            .min();
        if let Some(days) = expires {
            return Ok(LifecycleState::Expires(days));
        }
        if !manage {
            tracing::warn!(
                bucket = %bucket,
                "the staging bucket has no expiration rule: staged files left by crashed runs \
                 are never removed (set staging.manage_lifecycle = true to let Floe add one)"
            );
            return Ok(LifecycleState::Missing);
        }
        let build = |e: aws_sdk_s3::error::BuildError| stage_err(&location, e);
        let rule = aws_sdk_s3::types::LifecycleRule::builder()
            .id("floe-expire-staged-deltas")
            .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
            .filter(
                aws_sdk_s3::types::LifecycleRuleFilter::builder()
                    // Every instance's files, under the configured prefix.
                    .prefix(
                        prefix
                            .rsplit_once('/')
                            .map_or(String::new(), |(p, _)| format!("{p}/")),
                    )
                    .build(),
            )
            .expiration(
                aws_sdk_s3::types::LifecycleExpiration::builder()
                    .days(days as i32)
                    .build(),
            )
            .build()
            .map_err(build)?;
        let mut all = rules;
        all.push(rule);
        client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(
                aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                    .set_rules(Some(all))
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| stage_err(&location, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        tracing::info!(bucket = %bucket, days, "added an expiration rule to the staging bucket");
        Ok(LifecycleState::Added)
    }

    /// Writes `batches` (one table's changes, in order) as one zstd Parquet file.
    pub async fn write(
        &self,
        table: &TableName,
        batches: &[RecordBatch],
    ) -> Result<StagedDelta, StageError> {
        let name = format!("{table}/{}.parquet", uuid::Uuid::new_v4());
        // Parquet and zstd are CPU work: off the async threads.
        let owned = batches.to_vec();
        let body = tokio::task::spawn_blocking(move || encode(&owned))
            .await
            .map_err(|e| stage_err(&name, e))?
            .map_err(|e| stage_err(&name, e))?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let memory = batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum();
        let bytes = body.len() as u64;
        let location = match self {
            Stager::Local { dir } => {
                let path = dir.join(&name);
                let tmp = path.with_extension("parquet.tmp");
                let location = path.display().to_string();
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| stage_err(&location, e))?;
                }
                tokio::fs::write(&tmp, &body)
                    .await
                    .map_err(|e| stage_err(&location, e))?;
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| stage_err(&location, e))?;
                location
            }
            Stager::S3 {
                client,
                bucket,
                prefix,
                kms_key,
            } => {
                let key = format!("{prefix}/{name}");
                let location = format!("s3://{bucket}/{key}");
                let body = Bytes::from(body);
                retrying(&location, "PutObject", || {
                    let mut put = client.put_object().bucket(bucket).key(&key);
                    if let Some(kms_key) = kms_key {
                        put = put
                            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                            .ssekms_key_id(kms_key);
                    }
                    let put = put.body(body.clone().into());
                    async move { put.send().await.map_err(S3Failure::from) }
                })
                .await?;
                location
            }
        };
        Ok(StagedDelta {
            table: table.clone(),
            location,
            rows,
            bytes,
            memory,
            staged_at: std::time::Instant::now(),
        })
    }

    pub async fn read(&self, delta: &StagedDelta) -> Result<Vec<RecordBatch>, StageError> {
        let body: Bytes = match self {
            Stager::Local { .. } => tokio::fs::read(&delta.location)
                .await
                .map_err(|e| stage_err(&delta.location, e))?
                .into(),
            Stager::S3 { client, bucket, .. } => {
                let key = self.key_of(delta)?;
                retrying(&delta.location, "GetObject", || async {
                    let object = client.get_object().bucket(bucket).key(key).send().await?;
                    // A body cut off midway is worth reading again.
                    let body = object.body.collect().await.map_err(|e| S3Failure {
                        message: e.to_string(),
                        transient: true,
                    })?;
                    Ok(body.into_bytes())
                })
                .await?
            }
        };
        tokio::task::spawn_blocking(move || decode(body))
            .await
            .map_err(|e| stage_err(&delta.location, e))?
            .map_err(|e| stage_err(&delta.location, e))
    }

    /// Removes a committed delta. A failure is logged, not returned: the lifecycle rule (or,
    /// locally, the next cleanup) removes leftovers, and nothing reads them again.
    pub async fn delete(&self, delta: &StagedDelta) {
        let result = match self {
            Stager::Local { .. } => tokio::fs::remove_file(&delta.location)
                .await
                .map_err(|e| e.to_string()),
            Stager::S3 { client, bucket, .. } => match self.key_of(delta) {
                Ok(key) => client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(error) = result {
            tracing::warn!(location = %delta.location, %error, "could not delete a committed staged delta");
        }
    }

    fn key_of<'a>(&self, delta: &'a StagedDelta) -> Result<&'a str, StageError> {
        let Stager::S3 { bucket, .. } = self else {
            return Err(stage_err(&delta.location, "not an S3 stager"));
        };
        delta
            .location
            .strip_prefix(&format!("s3://{bucket}/"))
            .ok_or_else(|| stage_err(&delta.location, "not in the staging bucket"))
    }
}

pub(crate) fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let first = batches.first().ok_or("nothing to stage")?;
    // Staged deltas are read once, soon: the cheapest zstd level keeps flushes fast.
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| e.to_string())?,
        ))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, first.schema(), Some(props)).map_err(|e| e.to_string())?;
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.close().map_err(|e| e.to_string())?;
    Ok(out)
}

pub(crate) fn decode(body: Bytes) -> Result<Vec<RecordBatch>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}
