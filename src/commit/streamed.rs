//! A commit that reads its window part by part (the staged deltas), twice, instead of holding
//! it: first each part's keys and ops, to pick each key's last change; then each part's rows,
//! the picked ones written into the data file and the part dropped. The commit then holds one
//! or two parts and the window's keys, not the window.
//!
//! It covers the common case: an unpartitioned table (existing, or created from the first
//! part's columns), written with its key index (or without a primary key). Anything else is
//! committed from memory, as [`CommitEngine::commit`] does: a partitioned table (its rows are
//! written partition by partition, which needs them all), equality deletes (written from whole
//! rows), unchanged (TOASTed) values to fill in from earlier images, a truncate, and a window
//! holding only rows the table has already.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt, TryStreamExt};
use iceberg::writer::IcebergWriter;

use super::{
    CommitEngine, CommitError, CommitOutcome, CommittedOffsets, TableChanges, TableSpec, Written,
    files, key_column_indices, merge, prepare, schema,
};
use crate::config::DeleteMode;
use crate::decode::KafkaPosition;

/// A commit window's changes as parts that can be read (more than once), in event order.
pub trait ChangeParts: Send + Sync {
    fn count(&self) -> usize;
    /// The batches of one part; an error names where the part is.
    fn read(&self, part: usize) -> BoxFuture<'_, Result<Vec<RecordBatch>, String>>;
}

/// Parts read ahead while one is merged.
const READ_AHEAD: usize = 2;

/// Parts read at once when the whole window is read into memory.
const PARALLEL_READS: usize = 4;

/// A part that cannot be read. As before the commit read them, this stops the run (a restart
/// reads its records from Kafka again).
fn read_failed(table: &str, message: String) -> CommitError {
    CommitError::Files {
        table: table.to_string(),
        message: format!("reading the staged changes: {message}"),
        retryable: false,
    }
}

/// The parts in order from `from`, `ahead` of them being read at once.
fn read_parts<'a>(
    parts: &'a dyn ChangeParts,
    table: &'a str,
    from: usize,
    ahead: usize,
) -> impl Stream<Item = Result<Vec<RecordBatch>, CommitError>> + 'a {
    futures::stream::iter(from..parts.count())
        .map(move |i| parts.read(i))
        .buffered(ahead)
        .map_err(move |message| read_failed(table, message))
}

impl CommitEngine {
    /// Commits one window given as parts: streamed where it can be (see the module), else
    /// read into memory and committed by [`CommitEngine::commit`].
    pub async fn commit_parts(
        &self,
        spec: &TableSpec,
        parts: &dyn ChangeParts,
        offsets: CommittedOffsets,
        truncated_at: Option<KafkaPosition>,
    ) -> Result<CommitOutcome, CommitError> {
        // The streamed commit may create the table before it finds it cannot go on.
        let mut created = false;
        if truncated_at.is_none()
            && let Some(outcome) = self
                .commit_streamed(spec, parts, &offsets, &mut created)
                .await?
        {
            return Ok(outcome);
        }
        let table = self.ident(&spec.name)?.to_string();
        let batches: Vec<RecordBatch> = read_parts(parts, &table, 0, PARALLEL_READS)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let outcome = self
            .commit(
                spec,
                TableChanges {
                    batches,
                    offsets,
                    truncated_at,
                },
            )
            .await?;
        Ok(CommitOutcome {
            created_table: created || outcome.created_table,
            ..outcome
        })
    }

    /// The streamed commit; `None` (before anything is written) when the window must be
    /// committed from memory.
    async fn commit_streamed(
        &self,
        spec: &TableSpec,
        parts: &dyn ChangeParts,
        offsets: &CommittedOffsets,
        created: &mut bool,
    ) -> Result<Option<CommitOutcome>, CommitError> {
        let ident = self.ident(&spec.name)?;
        let table = ident.to_string();
        let invalid = |message: String| CommitError::Invalid {
            table: table.clone(),
            message,
        };
        let files_error = CommitError::files(&table);
        // A table the commit creates is created from the first part's columns, as the
        // in-memory commit does; that part is then not read again.
        let mut first_part = None;
        let (mut base, created_table) = match self.load(&ident).await? {
            Some(t) => (t, false),
            None => {
                if parts.count() == 0 {
                    return Ok(None);
                }
                let first = parts
                    .read(0)
                    .await
                    .map_err(|message| read_failed(&table, message))?;
                let Some(columns) = first.first().map(RecordBatch::schema) else {
                    return Ok(None);
                };
                first_part = Some(first);
                (
                    self.create_from_changes(&ident, spec, &columns).await?,
                    true,
                )
            }
        };
        *created |= created_table;
        if !base.metadata.default_partition_spec().is_unpartitioned() {
            return Ok(None);
        }
        let key_names: Vec<String> = {
            let schema = base.metadata.current_schema();
            schema
                .identifier_field_ids()
                .filter_map(|id| schema.name_by_field_id(id).map(str::to_string))
                .collect()
        };
        if !key_names.is_empty() && spec.deletes != DeleteMode::Position {
            return Ok(None);
        }
        let held =
            CommittedOffsets::of_table(&base.metadata, &self.settings.group).map_err(&invalid)?;
        let committed_at = chrono::Utc::now().timestamp_micros();

        // First pass: the keys and ops of the rows the table does not hold yet; the schema
        // evolves as the parts come, in order.
        let mut keys = Vec::new();
        let mut ops = Vec::new();
        let mut already_applied = 0usize;
        let mut schema_changed = false;
        let read_from = usize::from(first_part.is_some());
        let mut reads = std::pin::pin!(
            futures::stream::iter(first_part.map(Ok))
                .chain(read_parts(parts, &table, read_from, READ_AHEAD))
        );
        while let Some(batches) = reads.try_next().await? {
            for batch in batches {
                let prepared = prepare(spec, &held, &batch, committed_at).map_err(&invalid)?;
                if prepared.unchanged.iter().any(|u| !u.is_empty()) {
                    return Ok(None);
                }
                already_applied += prepared.already_applied;
                if let Some(t) = self
                    .evolve_schema(&ident, base.clone(), &prepared.data.schema())
                    .await?
                {
                    base = t;
                    schema_changed = true;
                }
                keys.push(columns_named(&prepared.data, &key_names).map_err(&invalid)?);
                ops.extend(prepared.ops);
            }
        }
        if ops.is_empty() {
            return Ok(None);
        }
        let table_schema = base.metadata.current_schema().clone();
        let target = schema::arrow_schema(&table_schema).map_err(&invalid)?;
        let key_columns = key_column_indices(&table_schema, &target);
        let key_target = Arc::new(
            target
                .project(&key_columns)
                .map_err(|e| invalid(e.to_string()))?,
        );
        // Without a primary key the batches have no columns, only their row counts.
        let keys = if key_columns.is_empty() {
            keys
        } else {
            keys.iter()
                .map(|b| schema::project(b, &key_target))
                .collect::<Result<Vec<_>, _>>()
                .map_err(&invalid)?
        };

        let mut slot = self.index_slot(&ident).lock_owned().await;
        let indexed = !key_columns.is_empty();
        if indexed {
            self.ensure_index(&mut slot, &base).await?;
            if slot.usable(spec.deletes).is_none() {
                return Ok(None);
            }
        }
        if already_applied > 0 {
            tracing::info!(table = %ident, rows = already_applied, "skipped changes the table already holds");
        }
        let in_keys: Vec<usize> = (0..key_columns.len()).collect();
        let merge::Selection {
            mut kept,
            deleted,
            ignored_deletes,
        } = merge::select(&keys, &ops, &in_keys, false).map_err(&invalid)?;
        let removed_keys = merge::deleted_keys(&keys, &in_keys, &deleted).map_err(&invalid)?;
        let rows_per_batch: Vec<usize> = keys.iter().map(RecordBatch::num_rows).collect();
        drop((keys, ops, deleted));
        if ignored_deletes > 0 {
            tracing::warn!(
                table = %ident,
                deletes = ignored_deletes,
                "table has no primary key: deletes cannot be applied and were ignored"
            );
        }

        // Second pass: the rows again, the picked ones written, each part dropped once done.
        let commit_id = uuid::Uuid::new_v4().to_string();
        let mut writer = None;
        let mut written_keys: Vec<Vec<ArrayRef>> = vec![Vec::new(); key_columns.len()];
        let mut rows_written = 0u64;
        let mut at = 0usize;
        let read_again = || invalid("the staged changes did not read the same twice".to_string());
        let mut reads = std::pin::pin!(read_parts(parts, &table, 0, READ_AHEAD));
        while let Some(batches) = reads.try_next().await? {
            for batch in batches {
                let nth = at;
                at += 1;
                let prepared = prepare(spec, &held, &batch, committed_at).map_err(&invalid)?;
                drop(batch);
                if rows_per_batch.get(nth) != Some(&prepared.data.num_rows()) {
                    return Err(read_again());
                }
                let data = schema::project(&prepared.data, &target).map_err(&invalid)?;
                drop(prepared);
                let Some(rows) =
                    merge::keep_rows(data, std::mem::take(&mut kept[nth])).map_err(&invalid)?
                else {
                    continue;
                };
                for (columns, i) in written_keys.iter_mut().zip(&key_columns) {
                    columns.push(rows.column(*i).clone());
                }
                rows_written += rows.num_rows() as u64;
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => writer.insert(
                        files::unpartitioned_data_writer(&base, self.settings.files, &commit_id)
                            .await
                            .map_err(files_error)?,
                    ),
                };
                w.write(rows)
                    .await
                    .map_err(|e| files_error(files::FileError::from(e)))?;
            }
        }
        if at != rows_per_batch.len() {
            return Err(read_again());
        }
        let data_files = match writer.as_mut() {
            Some(w) => w
                .close()
                .await
                .map_err(|e| files_error(files::FileError::from(e)))?,
            None => Vec::new(),
        };
        let written_keys = if rows_written == 0 {
            Vec::new()
        } else {
            written_keys
                .iter()
                .map(|columns| {
                    let arrays: Vec<&dyn arrow::array::Array> =
                        columns.iter().map(|c| c.as_ref()).collect();
                    arrow::compute::concat(&arrays)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(e.to_string()))?
        };
        let written_spec = base.metadata.default_partition_spec_id();
        self.finish(Written {
            ident: &ident,
            spec,
            base,
            slot,
            commit_id,
            offsets,
            held: &held,
            data_files,
            written_keys,
            written_spec,
            removed_keys,
            deletes: None,
            truncating: false,
            indexed,
            rows_written,
            ignored_deletes,
            created_table,
            schema_changed,
            streamed: true,
        })
        .await
        .map(Some)
    }
}

/// The columns of `batch` with these names, in this order (the row count kept when there are
/// none).
fn columns_named(batch: &RecordBatch, names: &[String]) -> Result<RecordBatch, String> {
    let indices = names
        .iter()
        .map(|name| {
            batch
                .schema()
                .index_of(name)
                .map_err(|_| format!("required column {name} is missing from the changes"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    batch.project(&indices).map_err(|e| e.to_string())
}
