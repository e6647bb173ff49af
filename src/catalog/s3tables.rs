//! The `s3tables` catalog: the Amazon S3 Tables control plane (aws-sdk-s3tables) for
//! namespaces, tables and the metadata pointer, and S3 ([`super::s3_storage`]) for the files
//! in each table's warehouse location.
//!
//! A commit writes a new metadata file into the table's warehouse, then swaps the pointer with
//! `UpdateTableMetadataLocation` and the version token it was loaded with; a stale token is a
//! [`CatalogError::Conflict`]. It calls only the control-plane actions in [`ACTIONS`] (from
//! which `floe policy` and `floe check` are derived), and never LISTs or DELETEs in a warehouse.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3tables::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3tables::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3tables::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3tables::types::OpenTableFormat;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{TableCreation, TableRequirement, TableUpdate};

use super::s3_storage::{self, S3RequestCounts, S3RequestStats};
use super::{CatalogError, LoadedTable, MetadataCache, TableCatalog, TableIdent};
use crate::config::S3TablesCatalog as S3TablesConfig;

const KIND: &str = "s3tables";

/// Every S3 Tables control-plane action this backend may call (IAM action names). Table data
/// access (`GetTableData`, `PutTableData`) covers the GET/HEAD/PUT/multipart requests on the
/// warehouse locations.
pub const ACTIONS: &[&str] = &[
    "s3tables:GetTableBucket",
    "s3tables:CreateNamespace",
    "s3tables:GetNamespace",
    "s3tables:ListNamespaces",
    "s3tables:CreateTable",
    "s3tables:GetTable",
    "s3tables:ListTables",
    "s3tables:GetTableMetadataLocation",
    "s3tables:UpdateTableMetadataLocation",
    "s3tables:GetTableData",
    "s3tables:PutTableData",
    "s3tables:DeleteTable",
];

/// Needed only to drop tables (`floe backfill --drop-and-recreate`).
pub const DROP_ACTION: &str = "s3tables:DeleteTable";

/// The actions for reading and writing a table's files (the S3 requests on its warehouse).
pub const DATA_ACTIONS: &[&str] = &["s3tables:GetTableData", "s3tables:PutTableData"];

pub struct S3TablesCatalog {
    client: aws_sdk_s3tables::Client,
    bucket_arn: String,
    file_io: FileIO,
    /// The tables' metadata by location: a commit does not GET and parse the file it wrote.
    metadata: MetadataCache,
    stats: Arc<S3RequestStats>,
    called: Arc<Mutex<BTreeSet<String>>>,
}

/// Remembers which control-plane actions were called (a handful of names), and warns about
/// any that [`ACTIONS`] does not list, since the IAM policy Floe prints would not grant it.
#[derive(Debug)]
struct RecordActions {
    called: Arc<Mutex<BTreeSet<String>>>,
}

impl Intercept for RecordActions {
    fn name(&self) -> &'static str {
        "floe-record-s3tables-actions"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let action = format!("s3tables:{}", metadata.name());
            if !ACTIONS.contains(&action.as_str()) {
                tracing::warn!(%action, "S3 Tables action missing from s3tables::ACTIONS");
            }
            self.called
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(action);
        }
        Ok(())
    }
}

impl std::fmt::Debug for S3TablesCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TablesCatalog")
            .field("table_bucket", &self.bucket_arn)
            .finish_non_exhaustive()
    }
}

/// How a control-plane call failed.
enum Failure {
    NotFound,
    Conflict,
    /// Throttling, 5xx before anything changed, a connection that was never made.
    Transient(String),
    /// The request may or may not have been applied (timeout, lost response, 5xx).
    Unknown(String),
    Fatal(String),
}

fn classify<E>(e: SdkError<E, aws_sdk_s3tables::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = aws_sdk_s3tables::error::DisplayErrorContext(&e).to_string();
    match &e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match service.err().code() {
                Some("NotFoundException") => Failure::NotFound,
                Some("ConflictException") => Failure::Conflict,
                Some("TooManyRequestsException") => Failure::Transient(text),
                _ if status == 404 => Failure::NotFound,
                _ if status == 409 => Failure::Conflict,
                _ if status == 429 => Failure::Transient(text),
                _ if status >= 500 => Failure::Unknown(text),
                _ => Failure::Fatal(text),
            }
        }
        // Without an answer the request may or may not have been applied (the SDK cannot
        // tell a refused connection from one reset after sending).
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Failure::Unknown(text)
        }
        _ => Failure::Fatal(text),
    }
}

impl S3TablesCatalog {
    /// Connects with the AWS default credential chain.
    pub async fn connect(config: &S3TablesConfig) -> Result<Self, CatalogError> {
        let sdk = super::aws::load_sdk_config(&config.region).await;
        Ok(Self::new(&sdk, config))
    }

    /// Connects with the given AWS configuration (credentials, retry, timeouts).
    pub fn new(sdk: &SdkConfig, config: &S3TablesConfig) -> Self {
        let called = Arc::new(Mutex::new(BTreeSet::new()));
        let client = aws_sdk_s3tables::Client::from_conf(
            super::aws::s3tables_client(sdk, config)
                .config()
                .to_builder()
                .interceptor(RecordActions {
                    called: called.clone(),
                })
                .build(),
        );
        let mut properties =
            HashMap::from([(s3_storage::S3_REGION.to_string(), config.region.clone())]);
        if let Some(endpoint) = &config.s3_endpoint {
            properties.insert(s3_storage::S3_ENDPOINT.into(), endpoint.clone());
            properties.insert(s3_storage::S3_PATH_STYLE_ACCESS.into(), "true".into());
        }
        let stats = Arc::new(S3RequestStats::default());
        S3TablesCatalog {
            client,
            bucket_arn: config.table_bucket.arn.clone(),
            file_io: s3_storage::file_io(
                sdk,
                properties,
                stats.clone(),
                s3_storage::Deletes::Refused,
            ),
            metadata: MetadataCache::default(),
            stats,
            called,
        }
    }

    /// The control-plane actions called so far (`s3tables:<Action>`), each once.
    pub fn actions_called(&self) -> BTreeSet<String> {
        self.called
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The S3 requests sent for table files so far, by kind.
    pub fn s3_requests(&self) -> S3RequestCounts {
        self.stats.counts()
    }

    fn error(&self, ident: &TableIdent, action: &str, failure: Failure) -> CatalogError {
        let table = ident.to_string();
        match failure {
            Failure::NotFound => CatalogError::NoSuchTable {
                catalog: KIND,
                table,
            },
            Failure::Conflict => CatalogError::Conflict {
                catalog: KIND,
                table,
                message: format!("{action}: the table changed"),
            },
            Failure::Transient(message) | Failure::Unknown(message) => CatalogError::Other {
                catalog: KIND,
                message: format!("table {table}: {action}: {message}"),
                retryable: true,
            },
            Failure::Fatal(message) => CatalogError::Other {
                catalog: KIND,
                message: format!("table {table}: {action} on {}: {message}", self.bucket_arn),
                retryable: false,
            },
        }
    }

    /// (metadata location, warehouse location, version token); `None` when there is no table.
    async fn pointer(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<(Option<String>, String, String)>, CatalogError> {
        match self
            .client
            .get_table_metadata_location()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(&ident.namespace)
            .name(&ident.name)
            .send()
            .await
        {
            Ok(out) => Ok(Some((
                out.metadata_location().map(str::to_string),
                out.warehouse_location().trim_end_matches('/').to_string(),
                out.version_token().to_string(),
            ))),
            Err(e) => match classify(e) {
                Failure::NotFound => Ok(None),
                f => Err(self.error(ident, "GetTableMetadataLocation", f)),
            },
        }
    }

    /// Points the table at `location`; the returned token is the new version's.
    async fn swap(
        &self,
        ident: &TableIdent,
        token: &str,
        location: &str,
    ) -> Result<String, CatalogError> {
        match self
            .client
            .update_table_metadata_location()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(&ident.namespace)
            .name(&ident.name)
            .version_token(token)
            .metadata_location(location)
            .send()
            .await
        {
            Ok(out) => Ok(out.version_token().to_string()),
            Err(e) => Err(match classify(e) {
                Failure::Unknown(message) => CatalogError::CommitStateUnknown {
                    catalog: KIND,
                    table: ident.to_string(),
                    message: format!("UpdateTableMetadataLocation: {message}"),
                },
                f => self.error(ident, "UpdateTableMetadataLocation", f),
            }),
        }
    }

    async fn loaded(
        &self,
        ident: &TableIdent,
        location: String,
        version: String,
        written: Option<(TableMetadata, usize)>,
    ) -> Result<LoadedTable, CatalogError> {
        LoadedTable::at(
            KIND,
            &self.file_io,
            &self.metadata,
            ident,
            location,
            version,
            written,
        )
        .await
    }
}

#[async_trait]
impl TableCatalog for S3TablesCatalog {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn ensure_namespace(&self, namespace: &str) -> Result<(), CatalogError> {
        let fail = |action: &str, f: Failure| {
            let (message, retryable) = match f {
                Failure::Transient(m) | Failure::Unknown(m) => (m, true),
                Failure::Fatal(m) => (m, false),
                Failure::NotFound => ("table bucket not found".into(), false),
                Failure::Conflict => ("conflict".into(), true),
            };
            CatalogError::Other {
                catalog: KIND,
                message: format!(
                    "namespace {namespace} in {}: {action}: {message}",
                    self.bucket_arn
                ),
                retryable,
            }
        };
        match self
            .client
            .get_namespace()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(namespace)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => match classify(e) {
                Failure::NotFound => {}
                f => return Err(fail("GetNamespace", f)),
            },
        }
        match self
            .client
            .create_namespace()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(namespace)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                // Another writer created it first.
                Failure::Conflict => Ok(()),
                f => Err(fail("CreateNamespace", f)),
            },
        }
    }

    async fn namespace_exists(&self, namespace: &str) -> Result<bool, CatalogError> {
        match self
            .client
            .get_namespace()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(namespace)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match classify(e) {
                Failure::NotFound => Ok(false),
                Failure::Transient(m) | Failure::Unknown(m) | Failure::Fatal(m) => Err(
                    CatalogError::other(KIND, format!("namespace {namespace}: GetNamespace: {m}")),
                ),
                Failure::Conflict => Err(CatalogError::other(
                    KIND,
                    format!("namespace {namespace}: GetNamespace: conflict"),
                )),
            },
        }
    }

    async fn describe(&self) -> Result<String, CatalogError> {
        match self
            .client
            .get_table_bucket()
            .table_bucket_arn(&self.bucket_arn)
            .send()
            .await
        {
            Ok(bucket) => Ok(format!("table bucket {} ({})", bucket.name(), bucket.arn())),
            Err(e) => Err(CatalogError::other(
                KIND,
                format!(
                    "GetTableBucket {}: {}",
                    self.bucket_arn,
                    match classify(e) {
                        Failure::NotFound => "the table bucket does not exist".to_string(),
                        Failure::Conflict => "conflict".to_string(),
                        Failure::Transient(m) | Failure::Unknown(m) | Failure::Fatal(m) => m,
                    }
                ),
            )),
        }
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CatalogError> {
        match self.pointer(ident).await? {
            // A table without metadata was created but never initialised (a writer stopped
            // between CreateTable and its first update): `create_table` finishes it.
            None | Some((None, _, _)) => Ok(None),
            Some((Some(location), _, token)) => {
                Ok(Some(self.loaded(ident, location, token, None).await?))
            }
        }
    }

    async fn create_table(
        &self,
        ident: &TableIdent,
        mut creation: TableCreation,
    ) -> Result<LoadedTable, CatalogError> {
        match self
            .client
            .create_table()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(&ident.namespace)
            .name(&ident.name)
            .format(OpenTableFormat::Iceberg)
            .send()
            .await
        {
            Ok(_) => {}
            // Exists: fine if nobody initialised it yet (checked below), else TableExists.
            Err(e) => match classify(e) {
                Failure::Conflict => {}
                f => return Err(self.error(ident, "CreateTable", f)),
            },
        }
        let exists = || CatalogError::TableExists {
            catalog: KIND,
            table: ident.to_string(),
        };
        let Some((current, warehouse, token)) = self.pointer(ident).await? else {
            return Err(CatalogError::Other {
                catalog: KIND,
                message: format!("table {ident}: gone right after CreateTable"),
                retryable: true,
            });
        };
        if current.is_some() {
            return Err(exists());
        }
        creation.location = Some(warehouse);
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .and_then(|b| b.build())
            .map_err(|e| CatalogError::other(KIND, format!("table {ident}: {e}")))?
            .metadata;
        let location = super::next_metadata_location(&metadata, "");
        let bytes = super::write_metadata(KIND, &self.file_io, &location, &metadata).await?;
        match self.swap(ident, &token, &location).await {
            Ok(version) => {
                self.loaded(ident, location, version, Some((metadata, bytes)))
                    .await
            }
            Err(CatalogError::Conflict { .. }) => Err(exists()),
            Err(e) => Err(e),
        }
    }

    async fn commit(
        &self,
        base: &LoadedTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<LoadedTable, CatalogError> {
        // S3 Tables keeps (and expires) the table's metadata files itself.
        let (metadata, location, _) = super::apply_updates(KIND, base, &requirements, updates)?;
        let bytes = super::write_metadata(KIND, &self.file_io, &location, &metadata).await?;
        let version = self.swap(&base.ident, &base.version, &location).await?;
        self.loaded(&base.ident, location, version, Some((metadata, bytes)))
            .await
    }

    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError> {
        let Some((_, _, token)) = self.pointer(ident).await? else {
            return Err(CatalogError::NoSuchTable {
                catalog: KIND,
                table: ident.to_string(),
            });
        };
        self.client
            .delete_table()
            .table_bucket_arn(&self.bucket_arn)
            .namespace(&ident.namespace)
            .name(&ident.name)
            .version_token(token)
            .send()
            .await
            .map_err(|e| self.error(ident, "DeleteTable", classify(e)))?;
        self.metadata.forget(ident);
        Ok(())
    }
}
