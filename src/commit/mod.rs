//! commit: turns a table's changes of one commit window into ONE Iceberg snapshot.
//!
//! The changes arrive as Arrow batches in event order, each row with its Debezium op in the
//! [`OP_COLUMN`]. Per primary key the last change wins ([`merge`]); new row images are written
//! as Parquet data files, and the old rows of updated and deleted keys the table holds are
//! removed by position-delete files (found in the table's key index, [`index`]) or, without
//! the index, by equality-delete files on the key ([`files`]); both, with the Kafka offsets
//! the window covers, become one `overwrite` snapshot ([`snapshot`]). Tables and namespaces
//! are created on first use, and the schema evolves within the rules of [`schema`].
//!
//! The runtime gives a window as its staged parts ([`CommitEngine::commit_parts`]): for an
//! unpartitioned table written with its key index, [`streamed`] reads them twice instead of
//! holding the window; otherwise they are read into memory and committed by
//! [`CommitEngine::commit`].
//!
//! A conflict (another writer, compaction) reloads the table and re-applies the SAME files on
//! the new base; it never rewrites data. When a commit's outcome is unknown (a timeout, a 5xx),
//! the table is searched for the commit's id before anything is committed again.

pub mod compact;
pub mod expire;
pub mod extras;
pub mod files;
pub mod index;
mod keys;
pub mod merge;
pub mod offsets;
pub mod orphans;
pub mod partition;
pub mod positions;
pub mod schema;
mod shards;
pub mod snapshot;
pub mod streamed;
pub mod toast;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::Schema as ArrowSchema;
use iceberg::spec::{MAIN_BRANCH, Schema};
use iceberg::{TableCreation, TableRequirement, TableUpdate};

use crate::catalog::{
    CatalogError, LoadedTable, NameRegistry, TableCatalog, TableIdent, default_table_properties,
};
use crate::config::{DeleteMode, TableName};
use crate::decode::KafkaPosition;
pub use files::FileSettings;
pub use merge::ChangeOp;
pub use offsets::CommittedOffsets;
pub use streamed::ChangeParts;

/// The column that carries each row's Debezium op (`c`, `u`, `d`, `r`) into the engine.
pub use crate::decode::arrow::OP_COLUMN;
use positions::is_internal_column;

/// A fast hash (keys come from the source database, not from an adversary), seeded per process.
type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Why a commit failed. Every variant names the table.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("table {table}: {source}")]
    Catalog {
        table: String,
        #[source]
        source: CatalogError,
    },
    #[error("table {table}, column {column}: incompatible schema change: {message}")]
    IncompatibleSchema {
        table: String,
        column: String,
        message: String,
    },
    #[error("table {table}: {message}")]
    Invalid { table: String, message: String },
    #[error("table {table}: {message}")]
    Files {
        table: String,
        message: String,
        /// The storage answered with an error that may pass.
        retryable: bool,
    },
    #[error(
        "table {table}: another writer committed {topic} partition {partition} meanwhile; \
         the uncommitted changes must be re-read"
    )]
    Superseded {
        table: String,
        topic: String,
        partition: i32,
    },
    #[error("table {table}: commit gave up after {attempts} attempts; last error: {last}")]
    Exhausted {
        table: String,
        attempts: u32,
        last: CatalogError,
    },
}

impl CommitError {
    /// Makes a failure with the table's files into the table's error.
    fn files(table: &str) -> impl Fn(files::FileError) -> CommitError + Copy + '_ {
        move |e| CommitError::Files {
            table: table.to_string(),
            message: e.message,
            retryable: e.retryable,
        }
    }

    /// Whether the whole commit may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            CommitError::Catalog { source, .. } => source.is_retryable(),
            CommitError::Exhausted { .. } => true,
            CommitError::Files { retryable, .. } => *retryable,
            CommitError::IncompatibleSchema { .. }
            | CommitError::Invalid { .. }
            | CommitError::Superseded { .. } => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommitSettings {
    /// The consumer group whose offsets the snapshots record.
    pub group: String,
    pub files: FileSettings,
    /// Attempts per commit when the catalog reports conflicts or transient errors.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to [`CommitSettings::max_backoff`].
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// What the key indexes of all tables may hold in memory together; a table whose index
    /// would not fit is written with equality deletes.
    pub index_memory: u64,
}

impl CommitSettings {
    pub fn new(group: impl Into<String>, files: FileSettings) -> Self {
        CommitSettings {
            group: group.into(),
            files,
            max_attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            index_memory: 2 << 30,
        }
    }
}

/// The destination table and how to create it.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: TableName,
    /// Primary-key columns for a new table; empty: append-only. An existing table's
    /// identifier fields are used as they are.
    pub primary_key: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// Soft deletes and metadata columns.
    pub extras: extras::Extras,
    /// How old rows of changed keys are removed.
    pub deletes: DeleteMode,
    /// The partition spec of a new table (empty: unpartitioned). An existing table is written
    /// under its own current spec.
    pub partition_spec: Vec<crate::config::PartitionField>,
}

/// One commit window's changes for one table.
#[derive(Debug, Clone, Default)]
pub struct TableChanges {
    /// Rows in event order; every batch has the [`OP_COLUMN`] and any subset of the columns.
    pub batches: Vec<RecordBatch>,
    /// What the window covers: `topic -> partition -> next offset`.
    pub offsets: CommittedOffsets,
    /// The window truncated the table at this position before `batches`: the commit replaces
    /// every row the table holds (unless the table already holds that position).
    pub truncated_at: Option<KafkaPosition>,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    pub table: TableIdent,
    pub snapshot_id: i64,
    pub data_files: usize,
    pub delete_files: usize,
    pub rows_written: u64,
    /// Bytes of the data and delete files written.
    pub bytes_written: u64,
    /// Rows removed (position deletes) or keys deleted (equality deletes).
    pub keys_deleted: u64,
    pub ignored_deletes: usize,
    /// Whether the old rows were found through the table's key index (position deletes).
    pub indexed: bool,
    /// Approximate memory of the table's key index after the commit (0 without one).
    pub index_bytes: u64,
    pub attempts: u32,
    pub created_table: bool,
    pub schema_changed: bool,
    /// Whether the window was read part by part, twice, rather than held in memory
    /// ([`CommitEngine::commit_parts`]).
    pub streamed: bool,
    /// Old snapshots the commit expired, and how many of their files were deleted.
    pub expired_snapshots: usize,
    pub removed_files: usize,
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub table: TableIdent,
    /// The `replace` snapshot; `None` when the table was compact already (or empty).
    pub snapshot_id: Option<i64>,
    /// Rows in the rewritten data files.
    pub rows: u64,
    pub data_files_before: usize,
    pub delete_files_before: usize,
    /// Data files rewritten; the others were kept as they are.
    pub data_files_rewritten: usize,
    pub data_files_after: usize,
    pub attempts: u32,
    pub expired_snapshots: usize,
    pub removed_files: usize,
}

/// What maintaining a table did (`floe maintain`, or `floe run`'s background maintenance).
#[derive(Debug)]
pub struct Maintained {
    pub compacted: Compacted,
    /// Orphan files found and deleted (`None` where Floe does not list the table's files), or
    /// why that failed after the compaction landed.
    pub orphans: Result<Option<(usize, usize)>, CommitError>,
}

pub struct CommitEngine {
    catalog: Arc<dyn TableCatalog>,
    settings: CommitSettings,
    names: Mutex<NameRegistry>,
    indexes: Mutex<HashMap<TableIdent, Arc<tokio::sync::Mutex<IndexSlot>>>>,
    /// Bytes each table's index holds, against [`CommitSettings::index_memory`].
    index_bytes: Mutex<HashMap<TableIdent, usize>>,
}

/// A table's key index, or why the table is written without one.
#[derive(Debug, Default)]
struct IndexSlot {
    index: Option<index::KeyIndex>,
    fallback: Option<String>,
}

impl IndexSlot {
    /// The index a commit in `mode` finds old rows with (none in equality mode).
    fn usable(&self, mode: DeleteMode) -> Option<&index::KeyIndex> {
        self.index.as_ref().filter(|_| mode == DeleteMode::Position)
    }
}

impl CommitEngine {
    pub fn new(catalog: Arc<dyn TableCatalog>, settings: CommitSettings) -> Self {
        CommitEngine {
            catalog,
            settings,
            names: Mutex::new(NameRegistry::default()),
            indexes: Mutex::new(HashMap::new()),
            index_bytes: Mutex::new(HashMap::new()),
        }
    }

    pub fn catalog(&self) -> &Arc<dyn TableCatalog> {
        &self.catalog
    }

    /// The catalog name `table` is written to (normalised; collisions refused).
    pub fn ident(&self, table: &TableName) -> Result<TableIdent, CommitError> {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolve(table)
            .map_err(|message| CommitError::Invalid {
                table: table.to_string(),
                message,
            })
    }

    /// The offsets `table` holds for this engine's consumer group (empty for a new table).
    pub async fn committed_offsets(
        &self,
        table: &TableName,
    ) -> Result<CommittedOffsets, CommitError> {
        let ident = self.ident(table)?;
        match self.load(&ident).await? {
            None => Ok(CommittedOffsets::default()),
            Some(t) => {
                CommittedOffsets::of_table(&t.metadata, &self.settings.group).map_err(|message| {
                    CommitError::Invalid {
                        table: ident.to_string(),
                        message,
                    }
                })
            }
        }
    }

    /// Whether `table` exists in the catalog.
    pub async fn exists(&self, table: &TableName) -> Result<bool, CommitError> {
        Ok(self.load(&self.ident(table)?).await?.is_some())
    }

    async fn load(&self, ident: &TableIdent) -> Result<Option<LoadedTable>, CommitError> {
        self.catalog
            .load_table(ident)
            .await
            .map_err(|source| CommitError::Catalog {
                table: ident.to_string(),
                source,
            })
    }

    async fn reload(&self, ident: &TableIdent) -> Result<LoadedTable, CommitError> {
        self.load(ident).await?.ok_or_else(|| CommitError::Catalog {
            table: ident.to_string(),
            source: CatalogError::NoSuchTable {
                catalog: self.catalog.kind(),
                table: ident.to_string(),
            },
        })
    }

    /// Commits `changes` to the table as one snapshot, creating the table and evolving its
    /// schema first when needed.
    pub async fn commit(
        &self,
        spec: &TableSpec,
        changes: TableChanges,
    ) -> Result<CommitOutcome, CommitError> {
        let ident = self.ident(&spec.name)?;
        let table = ident.to_string();
        // Taken apart so that each batch is dropped as soon as its rows moved on: the window
        // is held once, not once per step.
        let TableChanges {
            batches,
            offsets,
            truncated_at,
        } = changes;
        let invalid = |message: String| CommitError::Invalid {
            table: table.clone(),
            message,
        };

        let (mut base, created_table) = match self.load(&ident).await? {
            Some(t) => (t, false),
            None => {
                let first = batches.first().map(|b| b.schema()).ok_or_else(|| {
                    invalid(
                        "the table does not exist and there are no rows to create it from".into(),
                    )
                })?;
                (self.create_from_changes(&ident, spec, &first).await?, true)
            }
        };
        // Exactly once: rows at positions the table already holds are dropped here, whatever
        // the consumer re-read after a crash or a rebalance.
        let held =
            CommittedOffsets::of_table(&base.metadata, &self.settings.group).map_err(&invalid)?;
        // A truncate the table already holds was applied by an earlier commit.
        let truncating = !created_table
            && truncated_at.as_ref().is_some_and(|at| {
                held.get(&at.topic, at.partition)
                    .is_none_or(|next| next <= at.offset)
            });
        if truncating {
            tracing::info!(table = %ident, "the source table was truncated: this commit replaces every row");
        }
        let mut rows = Vec::with_capacity(batches.len());
        let mut ops = Vec::new();
        let mut already_applied = 0usize;
        let mut unchanged = Vec::new();
        let committed_at = chrono::Utc::now().timestamp_micros();
        for batch in batches {
            let prepared = prepare(spec, &held, &batch, committed_at).map_err(&invalid)?;
            already_applied += prepared.already_applied;
            unchanged.extend(prepared.unchanged);
            ops.extend(prepared.ops);
            rows.push(prepared.data);
        }
        if already_applied > 0 {
            tracing::info!(table = %ident, rows = already_applied, "skipped changes the table already holds");
        }

        let mut schema_changed = false;
        for batch in &rows {
            if let Some(t) = self
                .evolve_schema(&ident, base.clone(), &batch.schema())
                .await?
            {
                base = t;
                schema_changed = true;
            }
        }

        let table_schema = base.metadata.current_schema().clone();
        let target = schema::arrow_schema(&table_schema).map_err(&invalid)?;
        let window = rows
            .into_iter()
            .map(|b| schema::project(&b, &target))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&invalid)?;
        let key_columns = key_column_indices(&table_schema, &target);

        // With the table's key index, only keys the table holds get a delete, by position;
        // without it, every changed key gets an equality delete.
        let mut slot = self.index_slot(&ident).lock_owned().await;
        if spec.deletes == DeleteMode::Position && !key_columns.is_empty() {
            self.ensure_index(&mut slot, &base).await?;
        }
        let indexed = slot.usable(spec.deletes).is_some();
        if !indexed
            && !key_columns.is_empty()
            && let Some(reason) = partition::equality_deletes_refused(&base)
        {
            let why = match (&slot.fallback, spec.deletes) {
                (Some(fallback), _) => format!(" (the key index cannot be used: {fallback})"),
                (None, DeleteMode::Equality) => " (tables.deletes = \"equality\")".into(),
                (None, _) => String::new(),
            };
            return Err(invalid(format!("{reason}{why}")));
        }

        // Unchanged (TOASTed) values are taken from earlier images of the key: that needs the
        // window as one batch. Without them, the window stays in its batches.
        let window = if unchanged.iter().all(Vec::is_empty) {
            window
        } else {
            let combined = concat_batches(&target, &window).map_err(|e| invalid(e.to_string()))?;
            drop(window);
            let (combined, unresolved) = toast::resolve(
                (!truncating).then_some(&base),
                slot.usable(spec.deletes),
                &target,
                combined,
                &ops,
                &key_columns,
                &unchanged,
            )
            .await
            .map_err(|e| invalid(format!("unchanged (TOASTed) columns: {e}")))?;
            if unresolved > 0 {
                tracing::warn!(
                    table = %ident,
                    cells = unresolved,
                    "unchanged (TOASTed) values with no earlier image in the window or the table were left null"
                );
            }
            vec![combined]
        };
        let table_is_empty = truncating
            || base.metadata.current_snapshot().is_none_or(|s| {
                s.summary()
                    .additional_properties
                    .get("total-records")
                    .is_some_and(|n| n == "0")
            });
        // Equality deletes are written from whole rows; the key index needs only the keys.
        let merged = merge::merge(
            window,
            &ops,
            &key_columns,
            !indexed && table_is_empty,
            !indexed,
        )
        .map_err(&invalid)?;
        if merged.ignored_deletes > 0 {
            tracing::warn!(
                table = %ident,
                deletes = merged.ignored_deletes,
                "table has no primary key: deletes cannot be applied and were ignored"
            );
        }

        let commit_id = uuid::Uuid::new_v4().to_string();
        let files_error = CommitError::files(&table);
        let merge::Merged {
            upserts,
            deleted_keys: removed_keys,
            deletes,
            ignored_deletes,
        } = merged;
        let rows_written = upserts.iter().map(|b| b.num_rows() as u64).sum();
        // Rows are written partition by partition: the keys in the order of the files.
        let groups = partition::Splitter::new(&base)
            .and_then(|s| s.split_all(upserts))
            .map_err(&invalid)?;
        let written_keys = if indexed && !key_columns.is_empty() && !groups.is_empty() {
            key_columns
                .iter()
                .map(|&i| {
                    let parts: Vec<&dyn arrow::array::Array> = groups
                        .iter()
                        .flat_map(|(_, batches)| batches.iter().map(|b| b.column(i).as_ref()))
                        .collect();
                    arrow::compute::concat(&parts)
                })
                .collect::<Result<Vec<ArrayRef>, _>>()
                .map_err(|e| invalid(e.to_string()))?
        } else {
            Vec::new()
        };
        let written_spec = base.metadata.default_partition_spec_id();
        let data_files = files::write_data_files(&base, groups, self.settings.files, &commit_id)
            .await
            .map_err(files_error)?;
        self.finish(Written {
            ident: &ident,
            spec,
            base,
            slot,
            commit_id,
            offsets: &offsets,
            held: &held,
            data_files,
            written_keys,
            written_spec,
            removed_keys,
            deletes,
            truncating,
            indexed,
            rows_written,
            ignored_deletes,
            created_table,
            schema_changed,
            streamed: false,
        })
        .await
    }

    /// The part of a commit after its rows are written as data files: delete files, the
    /// snapshot (tried again on conflicts), the key index brought to it, expired snapshots'
    /// files removed.
    async fn finish(&self, written: Written<'_>) -> Result<CommitOutcome, CommitError> {
        let Written {
            ident,
            spec,
            mut base,
            mut slot,
            commit_id,
            offsets,
            held,
            data_files,
            written_keys,
            written_spec,
            removed_keys,
            deletes,
            truncating,
            indexed,
            rows_written,
            ignored_deletes,
            created_table,
            schema_changed,
            streamed,
        } = written;
        let table = ident.to_string();
        let invalid = |message: String| CommitError::Invalid {
            table: table.clone(),
            message,
        };
        let files_error = CommitError::files(&table);
        let (mut delete_files, mut keys_deleted) = self
            .delete_files(
                slot.usable(spec.deletes),
                &base,
                &deletes,
                &removed_keys,
                truncating,
                &format!("{commit_id}-0"),
            )
            .await
            .map_err(files_error)?;

        let mut attempt = 0;
        let mut waits = self.backoff().delays();
        let (landed, expired) = loop {
            attempt += 1;
            let plan = snapshot::plan(
                &base,
                snapshot::CommitFiles {
                    commit_id: &commit_id,
                    group: &self.settings.group,
                    offsets,
                    data_files: &data_files,
                    delete_files: &delete_files,
                    replace_all: truncating,
                    expire: self.catalog.expires_snapshots(),
                },
            )
            .await
            .map_err(files_error)?;
            let error = match self
                .catalog
                .commit(&base, plan.requirements, plan.updates)
                .await
            {
                Ok(_) => {
                    break (
                        plan.snapshot_id,
                        plan.expiry.map(|e| (e, plan.manifest_list)),
                    );
                }
                Err(e @ CatalogError::Conflict { .. })
                | Err(e @ CatalogError::CommitStateUnknown { .. }) => e,
                Err(e) if e.is_retryable() => e,
                Err(source) => return Err(CommitError::Catalog { table, source }),
            };
            tracing::info!(table = %ident, attempt, error = %error, "commit not applied; reloading the table");
            if attempt >= self.settings.max_attempts {
                return Err(CommitError::Exhausted {
                    table,
                    attempts: attempt,
                    last: error,
                });
            }
            tokio::time::sleep(waits.next().unwrap_or(self.settings.max_backoff)).await;
            base = self.reload(ident).await?;
            if base.metadata.default_partition_spec_id() != written_spec {
                // The files were written under the spec the table had: the next round
                // writes them again under the new one.
                return Err(CommitError::Files {
                    table,
                    message: "another writer changed the table's partition spec during the \
                              commit"
                        .into(),
                    retryable: true,
                });
            }
            // A timeout or a 5xx may hide a commit that did land: never apply it twice.
            // Which plan landed is not known: its expired snapshots' files are left.
            if let Some(landed) = find_commit(&base, &commit_id) {
                break (landed, None);
            }
            let now = CommittedOffsets::of_table(&base.metadata, &self.settings.group)
                .map_err(&invalid)?;
            if let Some((topic, partition)) = positions::moved(held, &now, offsets) {
                return Err(CommitError::Superseded {
                    table,
                    topic,
                    partition,
                });
            }
            // Another writer changed the table: the rows to remove are where the new base
            // holds them.
            if indexed {
                self.ensure_index(&mut slot, &base).await?;
                (delete_files, keys_deleted) = self
                    .delete_files(
                        slot.usable(spec.deletes),
                        &base,
                        &deletes,
                        &removed_keys,
                        truncating,
                        &format!("{commit_id}-{attempt}"),
                    )
                    .await
                    .map_err(files_error)?;
            }
        };

        if indexed && let Some(index) = slot.index.as_mut() {
            let written: Vec<index::WrittenFile<'_>> = data_files
                .iter()
                .map(|f| index::WrittenFile {
                    path: f.file_path(),
                    rows: f.record_count(),
                    bytes: f.file_size_in_bytes(),
                    partition: Some(partition::FilePartition {
                        spec_id: written_spec,
                        values: f.partition().clone(),
                    }),
                })
                .collect();
            if let Err(e) = index.apply(&removed_keys, &written_keys, &written, landed, truncating)
            {
                tracing::warn!(table = %ident, error = %e, "key index dropped; it is rebuilt from the table before the next commit");
                slot.index = None;
            }
        }
        let index_bytes = slot.index.as_ref().map_or(0, |i| i.memory_bytes());
        self.count_index(ident, index_bytes);
        drop(slot);
        let (expired_snapshots, removed_files) = match expired {
            Some((expiry, list)) => (
                expiry.expired.len(),
                remove_expired(&base, &expiry, (landed, &list)).await,
            ),
            None => (0, 0),
        };
        let bytes_written = data_files
            .iter()
            .chain(&delete_files)
            .map(|f| f.file_size_in_bytes())
            .sum();
        Ok(CommitOutcome {
            table: ident.clone(),
            snapshot_id: landed,
            data_files: data_files.len(),
            delete_files: delete_files.len(),
            rows_written,
            bytes_written,
            keys_deleted,
            ignored_deletes,
            indexed,
            index_bytes: index_bytes as u64,
            attempts: attempt,
            created_table,
            schema_changed,
            streamed,
            expired_snapshots,
            removed_files,
        })
    }

    /// Compacts the table, then removes its orphan files older than `orphans_older_than`.
    /// `None`: the table does not exist (yet). A failed compaction is the error, and no orphan
    /// is removed after it.
    pub async fn maintain(
        &self,
        name: &TableName,
        orphans_older_than: Duration,
    ) -> Result<Option<Maintained>, CommitError> {
        if !self.exists(name).await? {
            return Ok(None);
        }
        let compacted = self.compact(name).await?;
        let orphans = self.remove_orphans(name, orphans_older_than).await;
        Ok(Some(Maintained { compacted, orphans }))
    }

    /// Rewrites the table's rows (deletes applied) into data files of the target size, in one
    /// `replace` snapshot. A commit by another writer meanwhile makes it start over on the new
    /// table; the rows and offsets the table holds never change.
    pub async fn compact(&self, name: &TableName) -> Result<Compacted, CommitError> {
        let ident = self.ident(name)?;
        let table = ident.to_string();
        let invalid = |message: String| CommitError::Invalid {
            table: table.clone(),
            message,
        };
        let files_error = CommitError::files(&table);
        let mut waits = self.backoff().delays();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self
                .load(&ident)
                .await?
                .ok_or_else(|| invalid("the table does not exist".into()))?;
            let candidates = compact::Candidates::of(&base, self.settings.files.target_file_size)
                .await
                .map_err(files_error)?;
            let data_files = candidates.rewrite.len() + candidates.kept.len();
            let mut outcome = Compacted {
                table: ident.clone(),
                snapshot_id: None,
                rows: 0,
                data_files_before: data_files,
                delete_files_before: candidates.deletes.len(),
                data_files_rewritten: 0,
                data_files_after: data_files,
                attempts: attempt,
                expired_snapshots: 0,
                removed_files: 0,
            };
            if !candidates.worth_it() {
                return Ok(outcome);
            }
            let commit_id = uuid::Uuid::new_v4().to_string();
            let (new_files, rows) =
                compact::rewrite(&base, &candidates.rewrite, self.settings.files, &commit_id)
                    .await
                    .map_err(files_error)?;
            let plan = snapshot::plan_replace(
                &base,
                &commit_id,
                &self.settings.group,
                &new_files,
                &candidates.kept,
                &candidates.removed(),
                self.catalog.expires_snapshots(),
            )
            .await
            .map_err(files_error)?;
            outcome.rows = rows;
            outcome.data_files_rewritten = candidates.rewrite.len();
            outcome.data_files_after = candidates.kept.len() + new_files.len();
            let error = match self
                .catalog
                .commit(&base, plan.requirements, plan.updates)
                .await
            {
                Ok(compacted) => {
                    outcome.snapshot_id = Some(plan.snapshot_id);
                    if let Some(expiry) = &plan.expiry {
                        outcome.expired_snapshots = expiry.expired.len();
                        outcome.removed_files =
                            remove_expired(&base, expiry, (plan.snapshot_id, &plan.manifest_list))
                                .await;
                    }
                    self.drop_dead_manifests(&compacted).await;
                    return Ok(outcome);
                }
                Err(e @ CatalogError::Conflict { .. }) => {
                    // Not applied: nothing references the files just written.
                    if self.catalog.expires_snapshots() {
                        let paths = new_files
                            .iter()
                            .map(|f| f.file_path().to_string())
                            .chain([plan.manifest_list.clone()])
                            .collect();
                        expire::delete_all(&base.file_io, paths).await;
                    }
                    e
                }
                Err(e @ CatalogError::CommitStateUnknown { .. }) => e,
                Err(e) if e.is_retryable() => e,
                Err(source) => return Err(CommitError::Catalog { table, source }),
            };
            tracing::info!(table = %ident, attempt, error = %error, "compaction not applied; starting over on the table as it is now");
            if let Some(landed) = find_commit(&self.reload(&ident).await?, &commit_id) {
                outcome.snapshot_id = Some(landed);
                return Ok(outcome);
            }
            if attempt >= self.settings.max_attempts {
                return Err(CommitError::Exhausted {
                    table,
                    attempts: attempt,
                    last: error,
                });
            }
            tokio::time::sleep(waits.next().unwrap_or(self.settings.max_backoff)).await;
        }
    }

    /// On the table as the compaction left it: commits it without its manifests of removed
    /// files (`snapshot::plan_without_dead_manifests`), so readers stop going through them now
    /// rather than from the next commit on. When another commit came first (that one left them
    /// out already) this one conflicts and is dropped; any other failure is logged and changes
    /// nothing.
    async fn drop_dead_manifests(&self, compacted: &LoadedTable) {
        let table = compacted.ident.to_string();
        let commit_id = uuid::Uuid::new_v4().to_string();
        let plan = match snapshot::plan_without_dead_manifests(
            compacted,
            &commit_id,
            &self.settings.group,
        )
        .await
        {
            Ok(Some(plan)) => plan,
            Ok(None) => return,
            Err(e) => {
                let error = CommitError::files(&table)(e);
                tracing::info!(table, %error, "the compacted table keeps its manifests of removed files until the next commit");
                return;
            }
        };
        match self
            .catalog
            .commit(compacted, plan.requirements, plan.updates)
            .await
        {
            Ok(_) => tracing::debug!(
                table,
                "committed the compacted table without its manifests of removed files"
            ),
            Err(CatalogError::Conflict { .. }) => {
                // Another commit came first; nothing references the list just written.
                if self.catalog.expires_snapshots() {
                    expire::delete_all(&compacted.file_io, vec![plan.manifest_list]).await;
                }
            }
            Err(error) => {
                tracing::info!(table, %error, "the compacted table keeps its manifests of removed files until the next commit")
            }
        }
    }

    /// Deletes the files under the table's location that its metadata does not reference and
    /// that were last written more than `older_than` ago. Returns how many were found and how
    /// many deleted; `None` where the catalog does not let Floe list (S3 Tables).
    pub async fn remove_orphans(
        &self,
        name: &TableName,
        older_than: Duration,
    ) -> Result<Option<(usize, usize)>, CommitError> {
        let ident = self.ident(name)?;
        let table = ident.to_string();
        // Listed first: a file committed after the table is loaded was written before that,
        // and only files older than `older_than` are taken.
        let base = self
            .load(&ident)
            .await?
            .ok_or_else(|| CommitError::Invalid {
                table: table.clone(),
                message: "the table does not exist".into(),
            })?;
        let listed = match self.catalog.list_files(&base).await {
            Ok(Some(listed)) => listed,
            Ok(None) => return Ok(None),
            Err(source) => return Err(CommitError::Catalog { table, source }),
        };
        let base = self.reload(&ident).await?;
        let referenced = orphans::referenced(&base)
            .await
            .map_err(CommitError::files(&table))?;
        let found = orphans::orphans(
            listed,
            &referenced,
            older_than,
            std::time::SystemTime::now(),
        );
        let count = found.len();
        let (deleted, error) = expire::delete_all(&base.file_io, found).await;
        if let Some(e) = error {
            tracing::warn!(%table, found = count, deleted, error = %e, "some orphan files could not be deleted");
        }
        Ok(Some((count, deleted)))
    }

    fn index_slot(&self, ident: &TableIdent) -> Arc<tokio::sync::Mutex<IndexSlot>> {
        self.indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ident.clone())
            .or_default()
            .clone()
    }

    fn count_index(&self, ident: &TableIdent, bytes: usize) -> usize {
        let mut all = self.index_bytes.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(ident.clone(), bytes);
        all.values().sum()
    }

    /// Brings the table's key index to `base`: kept when it describes it, built from the
    /// table's files otherwise. A table that cannot be indexed, or whose index does not fit
    /// the memory budget, is written with equality deletes from then on.
    async fn ensure_index(
        &self,
        slot: &mut IndexSlot,
        base: &LoadedTable,
    ) -> Result<(), CommitError> {
        if slot.fallback.is_some() || slot.index.as_ref().is_some_and(|i| i.describes(base)) {
            return Ok(());
        }
        slot.index = None;
        let ident = &base.ident;
        self.count_index(ident, 0);
        let started = std::time::Instant::now();
        match index::KeyIndex::build(base).await {
            Ok(built) => {
                let bytes = built.memory_bytes();
                let total = self.count_index(ident, bytes);
                if total as u64 > self.settings.index_memory {
                    self.count_index(ident, 0);
                    let reason = format!(
                        "its key index ({} keys, {bytes} bytes) does not fit tables.index_memory \
                         ({} bytes for all tables)",
                        built.len(),
                        self.settings.index_memory
                    );
                    tracing::warn!(table = %ident, reason, "writing equality deletes for this table");
                    slot.fallback = Some(reason);
                    return Ok(());
                }
                tracing::info!(
                    table = %ident,
                    keys = built.len(),
                    bytes,
                    millis = started.elapsed().as_millis() as u64,
                    "built the key index"
                );
                if built.duplicated_keys() > 0 {
                    tracing::warn!(
                        table = %ident,
                        keys = built.duplicated_keys(),
                        "the table holds these keys more than once; each key's rows are all replaced at its next change"
                    );
                }
                crate::runtime::fault::point("index-built");
                slot.index = Some(built);
                Ok(())
            }
            Err(index::IndexError::Unsupported(reason)) => {
                tracing::warn!(table = %ident, reason, "the table cannot be indexed by key; writing equality deletes for it");
                slot.fallback = Some(reason);
                Ok(())
            }
            // Reading the table's files: what failed may pass.
            Err(index::IndexError::Read(message)) => Err(CommitError::Files {
                table: ident.to_string(),
                message: format!("building the key index: {message}"),
                retryable: true,
            }),
        }
    }

    /// The delete files that remove the old rows of `deletes`' keys: position deletes from
    /// `index` when there is one, equality deletes otherwise. Returns them and the number of
    /// rows (or keys) they remove.
    async fn delete_files(
        &self,
        index: Option<&index::KeyIndex>,
        base: &LoadedTable,
        deletes: &Option<RecordBatch>,
        keys: &[ArrayRef],
        truncating: bool,
        file_prefix: &str,
    ) -> Result<(Vec<iceberg::spec::DataFile>, u64), files::FileError> {
        match (index, deletes) {
            // A truncating commit replaces every file: nothing older to remove.
            (Some(_), _) if truncating => Ok((Vec::new(), 0)),
            (Some(_), _) if keys.first().is_none_or(|k| k.is_empty()) => Ok((Vec::new(), 0)),
            (Some(index), _) => {
                let positions = index.locate(keys).map_err(files::FileError::permanent)?;
                let n = positions.len() as u64;
                // A position-delete file belongs to the partition of the data files it points
                // into: one set per partition, each still sorted by file and position.
                let mut groups: Vec<(Option<iceberg::spec::PartitionKey>, Vec<_>)> = Vec::new();
                let mut group_of: HashMap<Option<&partition::FilePartition>, usize> =
                    HashMap::new();
                for p in positions {
                    let part = index.partition_of(&p.file_path);
                    let at = match group_of.get(&part) {
                        Some(at) => *at,
                        None => {
                            let key = partition::key_for(base, part)
                                .map_err(files::FileError::permanent)?;
                            groups.push((key, Vec::new()));
                            group_of.insert(part, groups.len() - 1);
                            groups.len() - 1
                        }
                    };
                    groups[at].1.push(p);
                }
                let mut files = Vec::new();
                for (i, (key, positions)) in groups.iter().enumerate() {
                    files.extend(
                        files::write_position_deletes(
                            base,
                            positions,
                            key.as_ref(),
                            self.settings.files,
                            &format!("{file_prefix}-{i}"),
                        )
                        .await?,
                    );
                }
                Ok((files, n))
            }
            (None, Some(batch)) => {
                let n = batch.num_rows() as u64;
                let files = files::write_equality_deletes(
                    base,
                    batch.clone(),
                    self.settings.files,
                    file_prefix,
                )
                .await?;
                Ok((files, n))
            }
            (_, None) => Ok((Vec::new(), 0)),
        }
    }

    /// The waits between attempts of one commit.
    fn backoff(&self) -> crate::retry::Backoff {
        crate::retry::Backoff::new(
            self.settings.backoff,
            self.settings.max_backoff,
            self.settings.max_attempts as usize,
        )
    }

    async fn create_table(
        &self,
        ident: &TableIdent,
        spec: &TableSpec,
        arrow: &ArrowSchema,
    ) -> Result<LoadedTable, CommitError> {
        let table = ident.to_string();
        let schema = schema::creation_schema(arrow, &spec.primary_key).map_err(|message| {
            CommitError::Invalid {
                table: table.clone(),
                message: format!("cannot create the table: {message}"),
            }
        })?;
        let mut properties: HashMap<String, String> = default_table_properties();
        properties.insert(
            "write.parquet.compression-level".into(),
            self.settings.files.zstd_level.to_string(),
        );
        properties.extend(spec.properties.clone());
        let partitions = if spec.partition_spec.is_empty() {
            None
        } else {
            Some(
                partition::creation_spec(&spec.partition_spec, &schema).map_err(|message| {
                    CommitError::Invalid {
                        table: table.clone(),
                        message: format!("cannot create the table: {message}"),
                    }
                })?,
            )
        };
        let creation = TableCreation::builder()
            .name(ident.name.clone())
            .schema(schema)
            .partition_spec_opt(partitions)
            .properties(properties)
            .build();
        let catalog_error = |source| CommitError::Catalog {
            table: table.clone(),
            source,
        };
        self.catalog
            .ensure_namespace(&ident.namespace)
            .await
            .map_err(catalog_error)?;
        match self.catalog.create_table(ident, creation).await {
            Ok(t) => {
                tracing::info!(table = %ident, key = ?spec.primary_key, "created table");
                if spec.primary_key.is_empty() {
                    tracing::warn!(table = %ident, "table has no primary key: it is append-only");
                }
                Ok(t)
            }
            // Another writer created it first: use theirs.
            Err(CatalogError::TableExists { .. }) => self.reload(ident).await,
            Err(source) => Err(catalog_error(source)),
        }
    }

    /// Creates the table with the columns of a change batch (`changes`) and the spec's extra
    /// columns.
    async fn create_from_changes(
        &self,
        ident: &TableIdent,
        spec: &TableSpec,
        changes: &ArrowSchema,
    ) -> Result<LoadedTable, CommitError> {
        let data_schema = ArrowSchema::new(
            changes
                .fields()
                .iter()
                .filter(|f| !is_internal_column(f.name()))
                .cloned()
                .chain(spec.extras.fields().into_iter().map(Arc::new))
                .collect::<Vec<_>>(),
        );
        self.create_table(ident, spec, &data_schema).await
    }

    /// Commits a schema change when `incoming` needs one; returns the reloaded table then.
    async fn evolve_schema(
        &self,
        ident: &TableIdent,
        mut base: LoadedTable,
        incoming: &ArrowSchema,
    ) -> Result<Option<LoadedTable>, CommitError> {
        let mut attempt = 0;
        let mut waits = self.backoff().delays();
        loop {
            attempt += 1;
            let current = base.metadata.current_schema();
            let evolved: Option<Schema> =
                schema::evolve(current, base.metadata.last_column_id(), incoming).map_err(|e| {
                    CommitError::IncompatibleSchema {
                        table: ident.to_string(),
                        column: e.column,
                        message: e.message,
                    }
                })?;
            let Some(evolved) = evolved else {
                return Ok(if attempt == 1 { None } else { Some(base) });
            };
            let requirements = vec![
                TableRequirement::UuidMatch {
                    uuid: base.metadata.uuid(),
                },
                TableRequirement::CurrentSchemaIdMatch {
                    current_schema_id: current.schema_id(),
                },
                TableRequirement::LastAssignedFieldIdMatch {
                    last_assigned_field_id: base.metadata.last_column_id(),
                },
            ];
            let updates = vec![
                TableUpdate::AddSchema { schema: evolved },
                TableUpdate::SetCurrentSchema { schema_id: -1 },
            ];
            match self.catalog.commit(&base, requirements, updates).await {
                Ok(_) => {
                    tracing::info!(table = %ident, "table schema evolved");
                    return self.reload(ident).await.map(Some);
                }
                Err(e)
                    if attempt < self.settings.max_attempts
                        && (matches!(
                            e,
                            CatalogError::Conflict { .. } | CatalogError::CommitStateUnknown { .. }
                        ) || e.is_retryable()) =>
                {
                    tokio::time::sleep(waits.next().unwrap_or(self.settings.max_backoff)).await;
                    base = self.reload(ident).await?;
                }
                Err(source) => {
                    return Err(CommitError::Catalog {
                        table: ident.to_string(),
                        source,
                    });
                }
            }
        }
    }
}

/// A commit's rows written as data files, and what its snapshot must remove: what the
/// in-memory and the streamed commit hand to [`CommitEngine::finish`].
struct Written<'a> {
    ident: &'a TableIdent,
    spec: &'a TableSpec,
    base: LoadedTable,
    slot: tokio::sync::OwnedMutexGuard<IndexSlot>,
    commit_id: String,
    offsets: &'a CommittedOffsets,
    /// The offsets the table held when the commit started.
    held: &'a CommittedOffsets,
    data_files: Vec<iceberg::spec::DataFile>,
    /// The key columns of the written rows, in the order of `data_files` (empty without an
    /// index).
    written_keys: Vec<ArrayRef>,
    written_spec: i32,
    /// The key columns of every key whose old row must go.
    removed_keys: Vec<ArrayRef>,
    /// Those keys' whole rows, for equality deletes.
    deletes: Option<RecordBatch>,
    truncating: bool,
    indexed: bool,
    rows_written: u64,
    ignored_deletes: usize,
    created_table: bool,
    schema_changed: bool,
    streamed: bool,
}

/// One change batch made ready for the merge.
struct Prepared {
    /// The rows the table does not hold yet, with the table's extra columns.
    data: RecordBatch,
    ops: Vec<ChangeOp>,
    /// Per row, the columns whose values are unchanged (TOASTed) and not in the change.
    unchanged: Vec<Vec<String>>,
    /// Rows dropped because the table already holds their positions.
    already_applied: usize,
}

/// Drops the rows the table already holds (`held`), reads the ops and the unchanged
/// (TOASTed) columns, and adds the table's extra columns. Gives the same result for the same
/// batch and `committed_at`, which the streamed commit relies on when it reads a part twice.
fn prepare(
    spec: &TableSpec,
    held: &CommittedOffsets,
    batch: &RecordBatch,
    committed_at: i64,
) -> Result<Prepared, String> {
    let (batch, already_applied) = positions::drop_applied(batch, held)?;
    let mut unchanged = toast::unchanged_columns(&batch)?;
    let op_index = batch
        .schema()
        .index_of(OP_COLUMN)
        .map_err(|_| format!("a change batch has no {OP_COLUMN} column"))?;
    let mut ops = merge::parse_ops(batch.column(op_index).as_ref())?;
    let data = spec.extras.apply(
        &batch,
        positions::data_columns(&batch),
        &mut ops,
        &mut unchanged,
        &spec.primary_key,
        committed_at,
    )?;
    Ok(Prepared {
        data,
        ops,
        unchanged,
        already_applied,
    })
}

fn key_column_indices(schema: &Schema, arrow: &ArrowSchema) -> Vec<usize> {
    schema
        .identifier_field_ids()
        .filter_map(|id| schema.name_by_field_id(id))
        .filter_map(|name| arrow.index_of(name).ok())
        .collect()
}

/// Deletes the files only the snapshots `expiry` removed referenced. A file that cannot be
/// deleted is left (and named in the log): the table no longer needs it. Returns how many
/// were deleted.
async fn remove_expired(
    base: &LoadedTable,
    expiry: &expire::Expiry,
    new_snapshot: (i64, &str),
) -> usize {
    let table = &base.ident;
    let paths = match expire::unreferenced(
        &base.file_io,
        base.metadata.format_version(),
        expiry,
        new_snapshot,
    )
    .await
    {
        Ok(paths) => paths,
        Err(e) => {
            tracing::warn!(%table, error = %e, snapshots = expiry.expired.len(), "expired snapshots' files were not looked up; they are left in place");
            return 0;
        }
    };
    let found = paths.len();
    let (deleted, error) = expire::delete_all(&base.file_io, paths).await;
    match error {
        None => {
            tracing::debug!(%table, snapshots = expiry.expired.len(), files = deleted, "expired snapshots")
        }
        Some(e) => {
            tracing::warn!(%table, snapshots = expiry.expired.len(), deleted, left = found - deleted, error = %e, "some files of expired snapshots could not be deleted; they are left in place")
        }
    }
    deleted
}

/// The snapshot of `table` that Floe's commit `commit_id` created, if it landed.
fn find_commit(table: &LoadedTable, commit_id: &str) -> Option<i64> {
    table
        .metadata
        .snapshots()
        .find(|s| {
            s.summary()
                .additional_properties
                .get(offsets::SUMMARY_COMMIT_ID)
                .is_some_and(|id| id == commit_id)
        })
        .map(|s| s.snapshot_id())
}

/// The main branch's snapshot id of a table, for tests and `floe check`.
pub fn main_snapshot_id(table: &LoadedTable) -> Option<i64> {
    table
        .metadata
        .snapshot_for_ref(MAIN_BRANCH)
        .map(|s| s.snapshot_id())
}
