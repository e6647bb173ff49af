//! S3 access for tables' files: an iceberg [`Storage`] on aws-sdk-s3 (iceberg 0.10 ships only
//! local and in-memory storage). Both remote catalogs (`s3tables`, `rest`) hand the commit
//! engine a [`FileIO`] built here, configured by the usual Iceberg properties (`s3.endpoint`,
//! `s3.region`, `s3.path-style-access`, `s3.access-key-id`, `s3.secret-access-key`,
//! `s3.session-token`), falling back to the AWS default credential chain.
//!
//! It GETs, HEADs and PUTs objects (multipart for large files), and never LISTs. It DELETEs
//! only where the catalog allows it ([`Deletes::Allowed`]: a REST catalog that Floe expires
//! snapshots on); S3 Tables refuses deletes inside a table's warehouse, so there `delete*` are
//! refused here before any request is sent. Every request sent is counted by kind
//! ([`S3RequestCounts`]) so tests can prove that.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::stream::BoxStream;
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind};
use serde::{Deserialize, Serialize};

/// Files up to this size are one PUT; larger ones are multipart uploads of parts this size.
const PART_SIZE: usize = 16 * 1024 * 1024;

pub const S3_ENDPOINT: &str = "s3.endpoint";
pub const S3_REGION: &str = "s3.region";
pub const S3_PATH_STYLE_ACCESS: &str = "s3.path-style-access";
pub const S3_ACCESS_KEY_ID: &str = "s3.access-key-id";
pub const S3_SECRET_ACCESS_KEY: &str = "s3.secret-access-key";
pub const S3_SESSION_TOKEN: &str = "s3.session-token";

/// How many S3 requests of each kind a [`FileIO`] from [`file_io`] has sent.
#[derive(Debug, Default)]
pub struct S3RequestStats {
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    multipart: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    other: AtomicU64,
}

/// The IAM actions of the requests this storage sends for table files (GET/HEAD, PUT and
/// multipart uploads), where the files live in a plain S3 bucket (MinIO AIStor Tables).
pub const DATA_ACTIONS: &[&str] = &["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"];

/// A copy of [`S3RequestStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct S3RequestCounts {
    pub get: u64,
    pub head: u64,
    pub put: u64,
    /// CreateMultipartUpload, CompleteMultipartUpload and AbortMultipartUpload.
    pub multipart: u64,
    /// Any listing (ListObjects, ListObjectsV2, ListObjectVersions, ListMultipartUploads).
    pub list: u64,
    /// DeleteObject(s).
    pub delete: u64,
    pub other: u64,
}

impl S3RequestStats {
    pub fn counts(&self) -> S3RequestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        S3RequestCounts {
            get: get(&self.get),
            head: get(&self.head),
            put: get(&self.put),
            multipart: get(&self.multipart),
            list: get(&self.list),
            delete: get(&self.delete),
            other: get(&self.other),
        }
    }

    fn record(&self, method: &str, uri: &str, path_style: bool) {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, q),
            None => (uri, ""),
        };
        // The object key is what follows the host (and, path-style, the bucket).
        let after_host = path.split_once("://").map_or(path, |(_, rest)| {
            rest.split_once('/').map_or("", |(_, p)| p)
        });
        let key = if path_style {
            after_host.split_once('/').map_or("", |(_, k)| k)
        } else {
            after_host
        };
        let has = |name: &str| {
            query
                .split('&')
                .any(|kv| kv.split('=').next() == Some(name))
        };
        let counter = match method {
            "GET" if key.is_empty() || has("list-type") || has("uploads") || has("versions") => {
                &self.list
            }
            "GET" => &self.get,
            "HEAD" => &self.head,
            "PUT" => &self.put,
            "POST" if has("uploads") || has("uploadId") => &self.multipart,
            "DELETE" if has("uploadId") => &self.multipart,
            "DELETE" => &self.delete,
            "POST" if has("delete") => &self.delete,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct CountRequests {
    stats: Arc<S3RequestStats>,
    path_style: bool,
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "floe-count-s3-requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        self.stats
            .record(request.method(), request.uri(), self.path_style);
        Ok(())
    }
}

/// The S3 settings of a set of Iceberg properties.
#[derive(Clone)]
struct S3Settings {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    credentials: Option<Credentials>,
}

impl S3Settings {
    fn from_properties(props: &HashMap<String, String>) -> Self {
        let get = |k: &str| props.get(k).filter(|v| !v.is_empty()).cloned();
        let credentials = match (get(S3_ACCESS_KEY_ID), get(S3_SECRET_ACCESS_KEY)) {
            (Some(key), Some(secret)) => Some(Credentials::new(
                key,
                secret,
                get(S3_SESSION_TOKEN),
                None,
                "iceberg-properties",
            )),
            _ => None,
        };
        S3Settings {
            endpoint: get(S3_ENDPOINT),
            region: get(S3_REGION),
            path_style: get(S3_PATH_STYLE_ACCESS).is_some_and(|v| v.eq_ignore_ascii_case("true")),
            credentials,
        }
    }

    fn client(&self, sdk: &SdkConfig, stats: Arc<S3RequestStats>) -> aws_sdk_s3::Client {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk);
        if let Some(region) = &self.region {
            builder = builder.region(Region::new(region.clone()));
        } else if sdk.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        // Test servers and MinIO-like endpoints rarely resolve bucket subdomains.
        let path_style = self.path_style || self.endpoint.is_some();
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(credentials) = &self.credentials {
            builder =
                builder.credentials_provider(SharedCredentialsProvider::new(credentials.clone()));
        }
        builder = builder
            .force_path_style(path_style)
            .interceptor(CountRequests { stats, path_style });
        aws_sdk_s3::Client::from_conf(builder.build())
    }
}

/// A [`FileIO`] for `s3://` locations configured by `properties`; credentials not given
/// there come from `sdk` (the AWS default chain). Requests are counted in `stats`.
pub fn file_io(
    sdk: &SdkConfig,
    properties: HashMap<String, String>,
    stats: Arc<S3RequestStats>,
    deletes: Deletes,
) -> FileIO {
    FileIOBuilder::new(Arc::new(S3StorageFactory {
        sdk: Some(sdk.clone()),
        stats,
        deletes,
    }))
    .with_props(properties)
    .build()
}

/// Every object under `location` (`s3://bucket/prefix`), for orphan-file removal on catalogs
/// Floe maintains. Never used on S3 Tables.
pub async fn list(
    sdk: &SdkConfig,
    properties: &HashMap<String, String>,
    stats: Arc<S3RequestStats>,
    location: &str,
) -> iceberg::Result<Vec<super::ListedFile>> {
    let (bucket, prefix) = split_location(location.trim_end_matches('/'))?;
    let client = S3Settings::from_properties(properties).client(sdk, stats);
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .into_paginator()
        .send();
    let mut files = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("LIST", location, e))?;
        for object in page.contents() {
            let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                continue;
            };
            files.push(super::ListedFile {
                path: format!("s3://{bucket}/{key}"),
                modified: std::time::SystemTime::try_from(*modified)
                    .unwrap_or(std::time::SystemTime::now()),
            });
        }
    }
    Ok(files)
}

/// Builds [`S3Storage`] from a FileIO's properties. Not meant to cross process boundaries:
/// a deserialized factory has no AWS configuration and refuses to build.
#[derive(Clone, Serialize, Deserialize)]
pub struct S3StorageFactory {
    #[serde(skip)]
    sdk: Option<SdkConfig>,
    #[serde(skip)]
    stats: Arc<S3RequestStats>,
    #[serde(skip)]
    deletes: Deletes,
}

/// Whether the storage may delete objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deletes {
    /// Every delete is refused before a request is sent (S3 Tables).
    #[default]
    Refused,
    Allowed,
}

impl std::fmt::Debug for S3StorageFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3StorageFactory").finish_non_exhaustive()
    }
}

#[typetag::serde]
impl StorageFactory for S3StorageFactory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        let sdk = self.sdk.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "S3 storage factory without AWS configuration (deserialized?)",
            )
        })?;
        let settings = S3Settings::from_properties(config.props());
        Ok(Arc::new(S3Storage {
            client: Some(settings.client(sdk, self.stats.clone())),
            deletes: self.deletes,
        }))
    }
}

/// iceberg [`Storage`] over aws-sdk-s3: GET, HEAD, PUT and multipart upload, and DELETE where
/// allowed.
#[derive(Clone, Serialize, Deserialize)]
pub struct S3Storage {
    #[serde(skip)]
    client: Option<aws_sdk_s3::Client>,
    #[serde(skip)]
    deletes: Deletes,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage").finish_non_exhaustive()
    }
}

/// `s3://bucket/key` (or `s3a://`) -> (bucket, key).
fn split_location(path: &str) -> iceberg::Result<(&str, &str)> {
    let rest = path
        .strip_prefix("s3://")
        .or_else(|| path.strip_prefix("s3a://"))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::DataInvalid,
                format!("{path}: not an s3:// location"),
            )
        })?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok((bucket, key)),
        _ => Err(Error::new(
            ErrorKind::DataInvalid,
            format!("{path}: an s3:// location needs a bucket and a key"),
        )),
    }
}

/// A failed S3 call, retryable when the failure may pass (see [`super::aws::s3_transient`]):
/// the commit engine then tries the commit again later instead of stopping the run.
fn s3_error<E>(
    op: &str,
    path: &str,
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = super::aws::s3_transient(&e);
    Error::new(
        ErrorKind::Unexpected,
        format!("S3 {op} {path}: {}", DisplayErrorContext(&e)),
    )
    .with_retryable(retryable)
}

/// A response body cut off midway: reading it again may work.
fn body_error(path: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unexpected, format!("S3 GET {path} (body): {e}")).with_retryable(true)
}

fn refused(op: &str, path: &str) -> Error {
    Error::new(
        ErrorKind::FeatureUnsupported,
        format!(
            "{op} {path}: Floe does not delete or list inside this table storage (S3 Tables forbids it)"
        ),
    )
}

impl S3Storage {
    fn client(&self) -> iceberg::Result<&aws_sdk_s3::Client> {
        self.client.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "S3 storage without a client (deserialized?)",
            )
        })
    }

    async fn head(&self, path: &str) -> iceberg::Result<Option<u64>> {
        let (bucket, key) = split_location(path)?;
        match self
            .client()?
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            )),
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found,
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(s3_error("HEAD", path, e)),
        }
    }
}

async fn get_range(
    client: &aws_sdk_s3::Client,
    path: &str,
    range: Option<Range<u64>>,
) -> iceberg::Result<Bytes> {
    let (bucket, key) = split_location(path)?;
    let mut request = client.get_object().bucket(bucket).key(key);
    if let Some(range) = range {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        request = request.range(format!("bytes={}-{}", range.start, range.end - 1));
    }
    let out = request.send().await.map_err(|e| s3_error("GET", path, e))?;
    let body = out.body.collect().await.map_err(|e| body_error(path, e))?;
    Ok(body.into_bytes())
}

#[async_trait]
#[typetag::serde]
impl Storage for S3Storage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        Ok(self.head(path).await?.is_some())
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        match self.head(path).await? {
            Some(size) => Ok(FileMetadata { size }),
            None => Err(Error::new(
                ErrorKind::DataInvalid,
                format!("{path}: no such object"),
            )),
        }
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        get_range(self.client()?, path, None).await
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        split_location(path)?;
        Ok(Box::new(S3FileRead {
            client: self.client()?.clone(),
            path: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        let mut writer = self.writer(path).await?;
        writer.write(bs).await?;
        writer.close().await
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let (bucket, key) = split_location(path)?;
        Ok(Box::new(S3FileWrite {
            client: self.client()?.clone(),
            path: path.to_string(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            buffer: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        if self.deletes != Deletes::Allowed {
            return Err(refused("delete", path));
        }
        let (bucket, key) = split_location(path)?;
        // S3 answers a delete of a missing key with success too.
        self.client()?
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("DELETE", path, e))?;
        Ok(())
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        Err(refused("delete prefix", path))
    }

    async fn delete_stream(&self, _paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        Err(refused("delete", "(several files)"))
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

struct S3FileRead {
    client: aws_sdk_s3::Client,
    path: String,
}

#[async_trait]
impl FileRead for S3FileRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        get_range(&self.client, &self.path, Some(range)).await
    }
}

/// Buffers up to [`PART_SIZE`]; a file that stays below is one PUT on close, a larger one
/// becomes a multipart upload.
struct S3FileWrite {
    client: aws_sdk_s3::Client,
    path: String,
    bucket: String,
    key: String,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    closed: bool,
}

impl S3FileWrite {
    async fn upload_part(&mut self, body: Vec<u8>) -> iceberg::Result<()> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .send()
                    .await
                    .map_err(|e| s3_error("CreateMultipartUpload", &self.path, e))?;
                let id = created.upload_id().map(str::to_string).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("{}: CreateMultipartUpload gave no upload id", self.path),
                    )
                })?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let part_number = i32::try_from(self.parts.len() + 1).map_err(|_| {
            Error::new(
                ErrorKind::Unexpected,
                format!("{}: too many parts", self.path),
            )
        })?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("UploadPart", &self.path, e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(uploaded.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    async fn abort(&mut self) {
        // Best effort: an unfinished upload is invisible to readers either way.
        if let Some(id) = self.upload_id.take() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id)
                .send()
                .await;
        }
    }

    async fn finish(&mut self) -> iceberg::Result<()> {
        let rest = std::mem::take(&mut self.buffer);
        let Some(upload_id) = self.upload_id.clone() else {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map_err(|e| s3_error("PUT", &self.path, e))?;
            return Ok(());
        };
        if !rest.is_empty() {
            self.upload_part(rest).await?;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", &self.path, e))?;
        self.upload_id = None;
        Ok(())
    }
}

#[async_trait]
impl FileWrite for S3FileWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        if self.closed {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("{}: write after close", self.path),
            ));
        }
        self.buffer.extend_from_slice(&bs);
        while self.buffer.len() >= PART_SIZE {
            let rest = self.buffer.split_off(PART_SIZE);
            let part = std::mem::replace(&mut self.buffer, rest);
            if let Err(e) = self.upload_part(part).await {
                self.abort().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        if self.closed {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("{}: closed twice", self.path),
            ));
        }
        self.closed = true;
        let result = self.finish().await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_into_bucket_and_key() {
        assert_eq!(
            split_location("s3://b/metadata/v1.json").unwrap(),
            ("b", "metadata/v1.json")
        );
        assert_eq!(split_location("s3a://b/k").unwrap(), ("b", "k"));
        assert!(split_location("s3://b").is_err());
        assert!(split_location("s3:///k").is_err());
        assert!(split_location("file:///tmp/x").is_err());
    }

    #[test]
    fn requests_are_classified() {
        let stats = S3RequestStats::default();
        let path = |m: &str, u: &str| stats.record(m, u, true);
        path("GET", "http://127.0.0.1:1/bucket/data/a.parquet");
        path("GET", "http://127.0.0.1:1/bucket?list-type=2&prefix=x");
        path("GET", "http://127.0.0.1:1/bucket/");
        path("HEAD", "http://127.0.0.1:1/bucket/a");
        path("PUT", "http://127.0.0.1:1/bucket/a?partNumber=1&uploadId=u");
        path("POST", "http://127.0.0.1:1/bucket/a?uploads");
        path("DELETE", "http://127.0.0.1:1/bucket/a");
        path("DELETE", "http://127.0.0.1:1/bucket/a?uploadId=u");
        path("POST", "http://127.0.0.1:1/bucket?delete");
        stats.record("GET", "https://bucket.s3.amazonaws.com/", false);
        stats.record("GET", "https://bucket.s3.amazonaws.com/k", false);
        assert_eq!(
            stats.counts(),
            S3RequestCounts {
                get: 2,
                head: 1,
                put: 1,
                multipart: 2,
                list: 3,
                delete: 2,
                other: 0,
            }
        );
    }
}
