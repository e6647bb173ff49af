//! The `local` catalog: a SQLite database in the layout of Iceberg's JDBC catalog and
//! pyiceberg's `SqlCatalog` (tables `iceberg_tables` and `iceberg_namespace_properties`), over
//! a directory warehouse. pyiceberg opens it as
//! `SqlCatalog("floe", uri="sqlite:///<path>/catalog.db", warehouse="file://<path>/warehouse")`.
//!
//! A commit writes a new metadata file and swaps the table's `metadata_location` with a
//! compare-and-swap UPDATE, so concurrent writers (several Floe processes) cannot lose updates.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{TableCreation, TableRequirement, TableUpdate};
use rusqlite::{Connection, OptionalExtension, params};

use super::{CatalogError, LoadedTable, MetadataCache, TableCatalog, TableIdent};

const KIND: &str = "local";
/// The catalog name rows are stored under (pyiceberg's `SqlCatalog` name).
pub const CATALOG_NAME: &str = "floe";

pub struct LocalCatalog {
    warehouse: PathBuf,
    db: Mutex<Connection>,
    file_io: FileIO,
    /// The tables' metadata by location: a commit does not read and parse the file it wrote.
    metadata: MetadataCache,
}

impl std::fmt::Debug for LocalCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCatalog")
            .field("warehouse", &self.warehouse)
            .finish_non_exhaustive()
    }
}

fn db_err(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Other {
        catalog: KIND,
        message: format!("catalog database: {e}"),
        retryable: false,
    }
}

impl LocalCatalog {
    /// Opens (creating if needed) `<path>/catalog.db` and `<path>/warehouse/`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(path.join("warehouse"))
            .map_err(|e| CatalogError::other(KIND, format!("create {}: {e}", path.display())))?;
        let path = path
            .canonicalize()
            .map_err(|e| CatalogError::other(KIND, format!("{}: {e}", path.display())))?;
        let db = Connection::open(path.join("catalog.db")).map_err(db_err)?;
        // Several Floe processes may share one catalog; wait for each other's short writes.
        db.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                catalog_name VARCHAR(255) NOT NULL,
                table_namespace VARCHAR(255) NOT NULL,
                table_name VARCHAR(255) NOT NULL,
                metadata_location VARCHAR(1000),
                previous_metadata_location VARCHAR(1000),
                iceberg_type VARCHAR(5),
                PRIMARY KEY (catalog_name, table_namespace, table_name)
            );
            CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                catalog_name VARCHAR(255) NOT NULL,
                namespace VARCHAR(255) NOT NULL,
                property_key VARCHAR(255) NOT NULL,
                property_value VARCHAR(1000) NOT NULL,
                PRIMARY KEY (catalog_name, namespace, property_key)
            );",
        )
        .map_err(db_err)?;
        Ok(LocalCatalog {
            warehouse: path.join("warehouse"),
            db: Mutex::new(db),
            file_io: FileIO::new_with_fs(),
            metadata: MetadataCache::default(),
        })
    }

    pub fn warehouse(&self) -> &Path {
        &self.warehouse
    }

    fn table_location(&self, ident: &TableIdent) -> String {
        self.warehouse
            .join(&ident.namespace)
            .join(&ident.name)
            .display()
            .to_string()
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every statement is atomic).
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current_location(&self, ident: &TableIdent) -> Result<Option<String>, CatalogError> {
        self.db()
            .query_row(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![CATALOG_NAME, ident.namespace, ident.name],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map_err(db_err)
            .map(Option::flatten)
    }

    /// The table at `location`; the local catalog's version token is the location itself.
    async fn loaded(
        &self,
        ident: &TableIdent,
        location: String,
        written: Option<(TableMetadata, usize)>,
    ) -> Result<LoadedTable, CatalogError> {
        let version = location.clone();
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
impl TableCatalog for LocalCatalog {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn expires_snapshots(&self) -> bool {
        true
    }

    async fn list_files(
        &self,
        table: &LoadedTable,
    ) -> Result<Option<Vec<super::ListedFile>>, CatalogError> {
        let location = table.metadata.location().to_string();
        let (scheme, root) = match location.strip_prefix("file://") {
            Some(path) => ("file://", path.to_string()),
            None => ("", location.clone()),
        };
        let listed = tokio::task::spawn_blocking(move || {
            let mut files = Vec::new();
            let mut dirs = vec![PathBuf::from(&root)];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(format!("list {}: {e}", dir.display())),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| format!("list {}: {e}", dir.display()))?;
                    let meta = entry
                        .metadata()
                        .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                    if meta.is_dir() {
                        dirs.push(entry.path());
                    } else {
                        files.push(super::ListedFile {
                            path: format!("{scheme}{}", entry.path().display()),
                            modified: meta.modified().unwrap_or(std::time::SystemTime::now()),
                        });
                    }
                }
            }
            Ok(files)
        })
        .await
        .map_err(|e| CatalogError::other(KIND, e))?
        .map_err(|e| CatalogError::other(KIND, e))?;
        Ok(Some(listed))
    }

    async fn ensure_namespace(&self, namespace: &str) -> Result<(), CatalogError> {
        self.db()
            .execute(
                "INSERT OR IGNORE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
                 VALUES (?1, ?2, 'exists', 'true')",
                params![CATALOG_NAME, namespace],
            )
            .map_err(db_err)?;
        Ok(())
    }

    async fn namespace_exists(&self, namespace: &str) -> Result<bool, CatalogError> {
        self.db()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM iceberg_namespace_properties
                                WHERE catalog_name = ?1 AND namespace = ?2)
                     OR EXISTS (SELECT 1 FROM iceberg_tables
                                WHERE catalog_name = ?1 AND table_namespace = ?2)",
                params![CATALOG_NAME, namespace],
                |row| row.get(0),
            )
            .map_err(db_err)
    }

    async fn describe(&self) -> Result<String, CatalogError> {
        Ok(format!("local warehouse {}", self.warehouse.display()))
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CatalogError> {
        match self.current_location(ident)? {
            Some(location) => Ok(Some(self.loaded(ident, location, None).await?)),
            None => Ok(None),
        }
    }

    async fn create_table(
        &self,
        ident: &TableIdent,
        mut creation: TableCreation,
    ) -> Result<LoadedTable, CatalogError> {
        if self.current_location(ident)?.is_some() {
            return Err(CatalogError::TableExists {
                catalog: KIND,
                table: ident.to_string(),
            });
        }
        creation.location = Some(self.table_location(ident));
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .and_then(|b| b.build())
            .map_err(|e| CatalogError::other(KIND, format!("table {ident}: {e}")))?
            .metadata;
        let location = super::next_metadata_location(&metadata, "");
        let bytes = super::write_metadata(KIND, &self.file_io, &location, &metadata).await?;
        let inserted = self.db().execute(
            "INSERT INTO iceberg_tables
             (catalog_name, table_namespace, table_name, metadata_location,
              previous_metadata_location, iceberg_type)
             VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
            params![CATALOG_NAME, ident.namespace, ident.name, location],
        );
        match inserted {
            Ok(_) => self.loaded(ident, location, Some((metadata, bytes))).await,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(CatalogError::TableExists {
                    catalog: KIND,
                    table: ident.to_string(),
                })
            }
            Err(e) => Err(db_err(e)),
        }
    }

    async fn commit(
        &self,
        base: &LoadedTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<LoadedTable, CatalogError> {
        let (metadata, location, dropped) =
            super::apply_updates(KIND, base, &requirements, updates)?;
        let bytes = super::write_metadata(KIND, &self.file_io, &location, &metadata).await?;
        let swapped = self
            .db()
            .execute(
                "UPDATE iceberg_tables
                 SET metadata_location = ?1, previous_metadata_location = ?2
                 WHERE catalog_name = ?3 AND table_namespace = ?4 AND table_name = ?5
                   AND metadata_location = ?2",
                params![
                    location,
                    base.metadata_location,
                    CATALOG_NAME,
                    base.ident.namespace,
                    base.ident.name
                ],
            )
            .map_err(db_err)?;
        if swapped != 1 {
            // Nothing references the file just written.
            let _ = self.file_io.delete(&location).await;
            return Err(CatalogError::Conflict {
                catalog: KIND,
                table: base.ident.to_string(),
                message: format!("its metadata is no longer {}", base.metadata_location),
            });
        }
        let delete_dropped = metadata
            .properties()
            .get(super::DELETE_AFTER_COMMIT)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if delete_dropped {
            for file in dropped {
                if let Err(e) = self.file_io.delete(&file).await {
                    tracing::warn!(table = %base.ident, file, error = %e, "an old metadata file could not be deleted");
                }
            }
        }
        self.loaded(&base.ident, location, Some((metadata, bytes)))
            .await
    }

    async fn drop_table(&self, ident: &TableIdent) -> Result<(), CatalogError> {
        let deleted = self
            .db()
            .execute(
                "DELETE FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![CATALOG_NAME, ident.namespace, ident.name],
            )
            .map_err(db_err)?;
        if deleted == 0 {
            return Err(CatalogError::NoSuchTable {
                catalog: KIND,
                table: ident.to_string(),
            });
        }
        self.metadata.forget(ident);
        // The local warehouse is Floe's own directory: purge the files as a drop with purge
        // does elsewhere.
        let dir = PathBuf::from(self.table_location(ident));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CatalogError::other(
                KIND,
                format!("purge {}: {e}", dir.display()),
            )),
        }
    }
}
