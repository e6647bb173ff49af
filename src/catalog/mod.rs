//! catalog: where tables live. Loads table metadata and commits new metadata through one of
//! the backends: `s3tables` (the S3 Tables control plane), `rest` (any Iceberg REST catalog)
//! and `local` (an embedded SQLite catalog over a directory).
//!
//! A backend only stores and swaps metadata; what goes into a snapshot is the commit engine's
//! business. Inside a table's warehouse location a backend never LISTs, and DELETEs only where
//! [`TableCatalog::expires_snapshots`] says Floe maintains the table: S3 Tables forbids both.

pub mod aws;
pub mod local;
mod metadata_cache;
pub mod names;
pub mod rest;
pub mod s3_storage;
pub mod s3tables;
pub mod sigv4;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{TableCreation, TableRequirement, TableUpdate};

pub(crate) use metadata_cache::MetadataCache;
pub use names::{NameRegistry, TableIdent};

use crate::config::CatalogConfig;

/// Opens the configured catalog. Remote catalogs take their credentials from the AWS default
/// chain (and, for `rest`, from the configured OAuth2 credential or token).
pub async fn open_catalog(config: &CatalogConfig) -> Result<Arc<dyn TableCatalog>, CatalogError> {
    Ok(match config {
        CatalogConfig::Local(local) => Arc::new(local::LocalCatalog::open(&local.path)?),
        CatalogConfig::S3Tables(s3tables) => {
            Arc::new(s3tables::S3TablesCatalog::connect(s3tables).await?)
        }
        CatalogConfig::Rest(rest) => Arc::new(rest::RestCatalog::connect(rest).await?),
    })
}

/// A table as loaded from its catalog: the metadata a commit builds on, and how to reach the
/// table's files.
#[derive(Debug, Clone)]
pub struct LoadedTable {
    pub ident: TableIdent,
    pub metadata: TableMetadata,
    pub metadata_location: String,
    /// The backend's optimistic-concurrency token for this version (S3 Tables' version token;
    /// the metadata location itself for the local catalog).
    pub version: String,
    pub file_io: FileIO,
}

impl LoadedTable {
    /// The table whose current metadata is at `location`: the metadata the caller just wrote
    /// there (with the file's size), else the metadata `cache` holds for that file, else read
    /// from it. What the caller wrote or what was read is held in `cache`.
    pub(crate) async fn at(
        kind: &'static str,
        file_io: &FileIO,
        cache: &MetadataCache,
        ident: &TableIdent,
        location: String,
        version: String,
        written: Option<(TableMetadata, usize)>,
    ) -> Result<Self, CatalogError> {
        let metadata = match written {
            Some((metadata, bytes)) => {
                cache.put(ident, &location, &metadata, bytes);
                metadata
            }
            None => match cache.get(ident, &location) {
                Some(metadata) => metadata,
                None => {
                    let (metadata, bytes) = read_metadata(kind, file_io, &location).await?;
                    cache.put(ident, &location, &metadata, bytes);
                    metadata
                }
            },
        };
        Ok(LoadedTable {
            ident: ident.clone(),
            metadata,
            metadata_location: location,
            version,
            file_io: file_io.clone(),
        })
    }
}

/// A new table's metadata at `location`, with one `id` column (for unit tests).
#[cfg(test)]
pub(crate) fn test_metadata(location: &str) -> TableMetadata {
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
    let schema = Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
        ])
        .build()
        .unwrap();
    let creation = TableCreation::builder()
        .name("t".into())
        .location(location.into())
        .schema(schema)
        .build();
    TableMetadataBuilder::from_table_creation(creation)
        .unwrap()
        .build()
        .unwrap()
        .metadata
}

/// A file found under a table's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub path: String,
    pub modified: std::time::SystemTime,
}

/// Why a catalog call failed. Conflicts and unknown outcomes are distinct from other errors
/// because the commit engine handles them differently: a conflict is retried on a fresh base;
/// an unknown outcome is first reconciled by looking for the commit in the table.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {catalog}: table {table} changed since it was loaded: {message}")]
    Conflict {
        catalog: &'static str,
        table: String,
        message: String,
    },
    #[error("catalog {catalog}: the commit to {table} may or may not have been applied: {message}")]
    CommitStateUnknown {
        catalog: &'static str,
        table: String,
        message: String,
    },
    #[error("catalog {catalog}: table {table} does not exist")]
    NoSuchTable {
        catalog: &'static str,
        table: String,
    },
    #[error("catalog {catalog}: table {table} already exists")]
    TableExists {
        catalog: &'static str,
        table: String,
    },
    #[error("catalog {catalog}: {message}")]
    Other {
        catalog: &'static str,
        message: String,
        retryable: bool,
    },
}

impl CatalogError {
    /// Whether the same call may succeed when repeated later (throttling, 5xx, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CatalogError::Other {
                retryable: true,
                ..
            }
        )
    }

    pub(crate) fn other(catalog: &'static str, message: impl std::fmt::Display) -> Self {
        CatalogError::Other {
            catalog,
            message: message.to_string(),
            retryable: false,
        }
    }
}

/// What the commit engine needs from a catalog. Implementations must make `commit` atomic: the
/// requirements are checked against the current table and the updates applied in one step, or
/// nothing changes and [`CatalogError::Conflict`] is returned.
#[async_trait]
pub trait TableCatalog: Send + Sync {
    /// The backend's name for messages: `local`, `s3tables`, `rest`.
    fn kind(&self) -> &'static str;

    async fn ensure_namespace(&self, namespace: &str) -> Result<(), CatalogError>;

    /// Whether the namespace exists, without creating it (for `floe check`).
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, CatalogError> {
        Err(CatalogError::other(
            self.kind(),
            format!("cannot look up namespace {namespace} without creating it"),
        ))
    }

    /// Reaches the table bucket / warehouse and says what it is (for `floe check`).
    async fn describe(&self) -> Result<String, CatalogError> {
        Ok(self.kind().to_string())
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CatalogError>;

    /// Creates the table; [`CatalogError::TableExists`] when another writer was first.
    async fn create_table(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<LoadedTable, CatalogError>;

    /// Applies `updates` if `requirements` hold for the current table; returns the new state.
    async fn commit(
        &self,
        base: &LoadedTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<LoadedTable, CatalogError>;

    /// Every file under the table's location, where Floe may list it (local; a REST catalog
    /// Floe expires snapshots on); `None` elsewhere (S3 Tables forbids listing).
    async fn list_files(
        &self,
        table: &LoadedTable,
    ) -> Result<Option<Vec<ListedFile>>, CatalogError> {
        let _ = table;
        Ok(None)
    }

    /// Whether commits expire old snapshots and delete the files only they referenced: true
    /// where no catalog service maintains the tables and the storage allows deletes.
    fn expires_snapshots(&self) -> bool {
        false
    }

    /// Deletes the table (for `backfill --drop-and-recreate`).
    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError>;
}

/// For catalogs that store a pointer to a metadata file (local, S3 Tables): checks the
/// requirements against `base` and applies the updates, giving the new metadata, the path
/// of the metadata file to write it to, and the earlier metadata files that dropped out of
/// the metadata log (`write.metadata.previous-versions-max`).
pub(crate) fn apply_updates(
    catalog: &'static str,
    base: &LoadedTable,
    requirements: &[TableRequirement],
    updates: Vec<TableUpdate>,
) -> Result<(TableMetadata, String, Vec<String>), CatalogError> {
    for requirement in requirements {
        requirement
            .check(Some(&base.metadata))
            .map_err(|e| CatalogError::Conflict {
                catalog,
                table: base.ident.to_string(),
                message: e.to_string(),
            })?;
    }
    let mut builder = TableMetadataBuilder::new_from_metadata(
        base.metadata.clone(),
        Some(base.metadata_location.clone()),
    );
    for update in updates {
        builder = update
            .apply(builder)
            .map_err(|e| CatalogError::other(catalog, format!("table {}: {e}", base.ident)))?;
    }
    let built = builder
        .build()
        .map_err(|e| CatalogError::other(catalog, format!("table {}: {e}", base.ident)))?;
    let location = next_metadata_location(&built.metadata, &base.metadata_location);
    let dropped = built
        .expired_metadata_logs
        .into_iter()
        .map(|log| log.metadata_file)
        .collect();
    Ok((built.metadata, location, dropped))
}

/// `<table location>/metadata/<version>-<uuid>.metadata.json`, the version one more than the
/// previous file's (as Java and pyiceberg name them).
pub(crate) fn next_metadata_location(metadata: &TableMetadata, previous: &str) -> String {
    let version = previous
        .rsplit('/')
        .next()
        .and_then(|name| name.split('-').next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |v| v + 1);
    format!(
        "{}/metadata/{version:05}-{}.metadata.json",
        metadata.location().trim_end_matches('/'),
        uuid::Uuid::new_v4()
    )
}

/// Writes a metadata file with a plain PUT (no listing, no delete); returns its size.
pub(crate) async fn write_metadata(
    catalog: &'static str,
    file_io: &FileIO,
    location: &str,
    metadata: &TableMetadata,
) -> Result<usize, CatalogError> {
    let json = serde_json::to_vec(metadata)
        .map_err(|e| CatalogError::other(catalog, format!("serialize metadata: {e}")))?;
    let bytes = json.len();
    file_io
        .new_output(location)
        .map_err(|e| CatalogError::other(catalog, format!("{location}: {e}")))?
        .write(json.into())
        .await
        .map_err(|e| CatalogError::Other {
            catalog,
            message: format!("write {location}: {e}"),
            retryable: io_retryable(&e),
        })?;
    Ok(bytes)
}

/// Whether a failed read or write of a table's files may succeed when tried again: the
/// storage marked the error (or one it caused) retryable, as S3 throttling, 5xx answers and
/// timeouts are. Access denied, a missing bucket or a local file system error is not.
pub(crate) fn io_retryable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(error) = next {
        if error
            .downcast_ref::<iceberg::Error>()
            .is_some_and(iceberg::Error::retryable)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Reads and parses a metadata file; returns it with its size.
pub(crate) async fn read_metadata(
    catalog: &'static str,
    file_io: &FileIO,
    location: &str,
) -> Result<(TableMetadata, usize), CatalogError> {
    let bytes = file_io
        .new_input(location)
        .map_err(|e| CatalogError::other(catalog, format!("{location}: {e}")))?
        .read()
        .await
        .map_err(|e| CatalogError::Other {
            catalog,
            message: format!("read {location}: {e}"),
            retryable: io_retryable(&e),
        })?;
    let metadata = serde_json::from_slice(&bytes).map_err(|e| {
        CatalogError::other(catalog, format!("{location} is not table metadata: {e}"))
    })?;
    Ok((metadata, bytes.len()))
}

/// Iceberg's table property: delete metadata files that drop out of the metadata log.
pub const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// Table properties Floe sets on every new table, before the configured ones.
pub fn default_table_properties() -> HashMap<String, String> {
    HashMap::from([
        // S3 Tables compaction rejects lz4 and brotli; zstd is what Floe writes.
        ("write.parquet.compression-codec".into(), "zstd".into()),
        ("write.format.default".into(), "parquet".into()),
        ("write.delete.mode".into(), "merge-on-read".into()),
        ("write.update.mode".into(), "merge-on-read".into()),
        // Where Floe keeps the table (the local catalog), metadata files that dropped out of
        // the metadata log are deleted. S3 Tables and REST catalogs keep their own.
        (DELETE_AFTER_COMMIT.into(), "true".into()),
    ])
}
