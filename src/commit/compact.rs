//! Compaction, for tables no service maintains (`floe maintain`): the table's rows, with every
//! delete applied, read by iceberg-rust's scan and written again as data files of the target
//! size, in one `replace` snapshot that records every earlier data and delete file as deleted.
//! The rows and the Kafka offsets the table holds do not change.
//!
//! A commit by another writer meanwhile (Floe's own `run`) makes the compaction's commit
//! conflict: it then starts over from the new table, never applies its files on a base it did
//! not read.

use futures::{StreamExt, TryStreamExt};

use super::files::{self, FileError, FileSettings};
use super::snapshot::{self, LiveFile};
use crate::catalog::LoadedTable;

/// The files a compaction would replace, or why it is not worth it.
pub struct Candidates {
    pub data: Vec<LiveFile>,
    pub deletes: Vec<LiveFile>,
}

impl Candidates {
    pub async fn of(base: &LoadedTable) -> Result<Self, FileError> {
        let (data, deletes) = snapshot::live_files(base).await?;
        Ok(Candidates { data, deletes })
    }

    /// One data file and no delete file is as compact as a table gets.
    pub fn worth_it(&self, target_file_size: u64) -> bool {
        if !self.deletes.is_empty() {
            return true;
        }
        let small = self
            .data
            .iter()
            .filter(|l| l.file.file_size_in_bytes() < target_file_size * 3 / 4)
            .count();
        small > 1
    }

    pub fn all(self) -> Vec<LiveFile> {
        self.data.into_iter().chain(self.deletes).collect()
    }
}

/// Reads the rows of `base`'s current snapshot (deletes applied) and writes them as new data
/// files. Returns the files and the number of rows.
pub async fn rewrite(
    base: &LoadedTable,
    settings: FileSettings,
    file_prefix: &str,
) -> Result<(Vec<iceberg::spec::DataFile>, u64), FileError> {
    let ident = iceberg::TableIdent::from_strs([&base.ident.namespace, &base.ident.name])
        .map_err(FileError::from)?;
    let table = iceberg::table::Table::builder()
        .metadata(base.metadata.clone())
        .metadata_location(base.metadata_location.clone())
        .identifier(ident)
        .file_io(base.file_io.clone())
        .readonly(true)
        .runtime(iceberg::Runtime::try_current().map_err(FileError::from)?)
        .build()
        .map_err(FileError::from)?;
    let scan = table.scan().select_all().build().map_err(FileError::from)?;
    let stream = scan
        .to_arrow()
        .await
        .map_err(|e| FileError::from(e).context("scan the table"))?
        .map_err(|e| FileError::from(e).context("scan the table"))
        .boxed();
    files::write_data_stream(base, stream, settings, file_prefix).await
}
