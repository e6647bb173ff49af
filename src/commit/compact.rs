//! Compaction, for tables no service maintains (`floe maintain`): the rows of the data files
//! that need it (small ones, and those a delete file applies to), with every delete applied,
//! read by iceberg-rust's reader and written again as data files of the target size, in one
//! `replace` snapshot that records those files and every delete file as deleted. Data files of
//! the target size that no delete applies to stay as they are. The rows and the Kafka offsets
//! the table holds do not change.
//!
//! A commit by another writer meanwhile (Floe's own `run`) makes the compaction's commit
//! conflict: it then starts over from the new table, never applies its files on a base it did
//! not read.

use std::collections::HashSet;

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::spec::DataContentType;

use super::files::{self, FileError, FileSettings};
use super::index::{IndexError, read_columns};
use super::snapshot::{self, LiveFile};
use crate::catalog::LoadedTable;

/// Position-delete files read at once.
const READ_AHEAD: usize = 8;

/// What a compaction would rewrite and what it keeps.
pub struct Candidates {
    /// Data files to rewrite: those under three quarters of the target size, those a delete
    /// file applies to, and those of an earlier partition spec.
    pub rewrite: Vec<LiveFile>,
    /// The other data files: kept as they are.
    pub kept: Vec<LiveFile>,
    /// Every delete file. None applies to a kept file, so the rewrite removes them all.
    pub deletes: Vec<LiveFile>,
}

impl Candidates {
    pub async fn of(base: &LoadedTable, target_file_size: u64) -> Result<Self, FileError> {
        let (data, deletes) = snapshot::live_files(base).await?;
        let touched = touched_by(base, &data, &deletes).await?;
        let spec_id = base.metadata.default_partition_spec_id();
        let (kept, rewrite) = data.into_iter().partition(|l| {
            l.spec_id == spec_id
                && l.file.file_size_in_bytes() >= target_file_size * 3 / 4
                && !touched.contains(l.file.file_path())
        });
        Ok(Candidates {
            rewrite,
            kept,
            deletes,
        })
    }

    /// Worth a snapshot when there is a delete file to apply or two data files to join.
    pub fn worth_it(&self) -> bool {
        !self.deletes.is_empty() || self.rewrite.len() > 1
    }

    /// The files the compaction's snapshot records as removed.
    pub fn removed(&self) -> Vec<LiveFile> {
        self.rewrite.iter().chain(&self.deletes).cloned().collect()
    }
}

/// The paths of the data files in `data` that a delete file in `deletes` applies to, by
/// Iceberg's rules: a position delete to the files it names, of its sequence number or
/// below; an equality delete to files of a lower sequence number in its partition (in every
/// partition when the delete's spec is unpartitioned).
async fn touched_by(
    base: &LoadedTable,
    data: &[LiveFile],
    deletes: &[LiveFile],
) -> Result<HashSet<String>, FileError> {
    let is_position = |d: &&LiveFile| d.file.content_type() == DataContentType::PositionDeletes;
    // The position-delete files are read a few at a time.
    let named: Vec<HashSet<String>> = futures::stream::iter(deletes.iter().filter(is_position))
        .map(|d| named_paths(base, d))
        .buffered(READ_AHEAD)
        .try_collect()
        .await?;
    let mut touched = HashSet::new();
    for (delete, named) in deletes.iter().filter(is_position).zip(named) {
        touched.extend(
            data.iter()
                .filter(|d| d.sequence_number <= delete.sequence_number)
                .map(|d| d.file.file_path())
                .filter(|p| named.contains(*p))
                .map(str::to_string),
        );
    }
    let equality = deletes
        .iter()
        .filter(|d| d.file.content_type() == DataContentType::EqualityDeletes);
    for delete in equality {
        let file = &delete.file;
        let global = file.partition().fields().is_empty();
        touched.extend(
            data.iter()
                .filter(|d| {
                    d.sequence_number < delete.sequence_number
                        && (global
                            || (d.spec_id == delete.spec_id
                                && d.file.partition() == file.partition()))
                })
                .map(|d| d.file.file_path().to_string()),
        );
    }
    Ok(touched)
}

/// The data file paths a position-delete file names: its referenced data file when it has
/// one, else the distinct values of its `file_path` column.
async fn named_paths(base: &LoadedTable, delete: &LiveFile) -> Result<HashSet<String>, FileError> {
    let file = &delete.file;
    if let Some(path) = file.referenced_data_file() {
        return Ok(HashSet::from([path]));
    }
    let path = file.file_path();
    let unread = |e: IndexError| FileError {
        retryable: matches!(e, IndexError::Read(_)),
        message: format!("read position deletes: {e}"),
    };
    let batches = read_columns(
        base,
        path,
        file.file_size_in_bytes(),
        &[iceberg::metadata_columns::RESERVED_FIELD_ID_DELETE_FILE_PATH],
    )
    .await
    .map_err(unread)?;
    let mut named = HashSet::new();
    for batch in batches {
        let paths = cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| FileError::permanent(format!("{path}: file_path: {e}")))?;
        named.extend(
            paths
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string),
        );
    }
    Ok(named)
}

/// Reads the rows of `rewrite` (data files of `base`'s current snapshot, every delete that
/// applies to them applied) and writes them as new data files. Returns the files and the
/// number of rows.
pub async fn rewrite(
    base: &LoadedTable,
    rewrite: &[LiveFile],
    settings: FileSettings,
    file_prefix: &str,
) -> Result<(Vec<iceberg::spec::DataFile>, u64), FileError> {
    let ident = iceberg::TableIdent::from_strs([&base.ident.namespace, &base.ident.name])
        .map_err(FileError::from)?;
    let runtime = iceberg::Runtime::try_current().map_err(FileError::from)?;
    let table = iceberg::table::Table::builder()
        .metadata(base.metadata.clone())
        .metadata_location(base.metadata_location.clone())
        .identifier(ident)
        .file_io(base.file_io.clone())
        .readonly(true)
        .runtime(runtime.clone())
        .build()
        .map_err(FileError::from)?;
    let scan = table.scan().select_all().build().map_err(FileError::from)?;
    let wanted: HashSet<&str> = rewrite.iter().map(|l| l.file.file_path()).collect();
    let tasks: Vec<_> = scan
        .plan_files()
        .await
        .map_err(|e| FileError::from(e).context("plan the scan"))?
        .try_filter(|t| futures::future::ready(wanted.contains(t.data_file_path.as_str())))
        .try_collect()
        .await
        .map_err(|e| FileError::from(e).context("plan the scan"))?;
    if tasks.len() != wanted.len() {
        return Err(FileError::permanent(format!(
            "the scan planned {} of the {} data files to rewrite",
            tasks.len(),
            wanted.len()
        )));
    }
    let stream = ArrowReaderBuilder::new(base.file_io.clone(), runtime)
        .build()
        .read(futures::stream::iter(tasks.into_iter().map(Ok)).boxed())
        .map_err(|e| FileError::from(e).context("scan the table"))?
        .stream()
        .map_err(|e| FileError::from(e).context("scan the table"))
        .boxed();
    files::write_data_stream(base, stream, settings, file_prefix).await
}
