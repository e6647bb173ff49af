//! Writes a commit's Parquet files into the table's own storage with iceberg-rust's writers:
//! data files for new row images, and for old rows that must go either position-delete files
//! (file and row of each, from the table's key index) or equality-delete files (primary-key
//! columns only).

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, PartitionKey, Schema, TableMetadata,
};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::base_writer::equality_delete_writer::{
    EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::index::PositionDelete;
use super::partition::Splitter;
use crate::catalog::LoadedTable;

/// How files are written.
#[derive(Debug, Clone, Copy)]
pub struct FileSettings {
    pub target_file_size: u64,
    pub zstd_level: i32,
}

/// A failure writing or reading a table's files, and whether the commit may succeed if tried
/// again: it may when the storage answered with an error that passes (throttling, 5xx,
/// timeouts), anywhere in the error's chain; not when the data, the table or the writer is
/// wrong.
#[derive(Debug, Clone)]
pub struct FileError {
    pub message: String,
    pub retryable: bool,
}

impl FileError {
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        FileError {
            message: message.to_string(),
            retryable: false,
        }
    }

    /// The same failure, with where it happened in front.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        FileError {
            message: format!("{what}: {}", self.message),
            ..self
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + 'static> From<E> for FileError {
    fn from(e: E) -> Self {
        FileError {
            retryable: crate::catalog::io_retryable(&e),
            message: e.to_string(),
        }
    }
}

/// iceberg-rust's Parquet writer ignores the table's `write.parquet.*` properties and would
/// write uncompressed files; Floe always passes zstd.
fn writer_properties(settings: FileSettings) -> Result<WriterProperties, FileError> {
    let level = ZstdLevel::try_new(settings.zstd_level).map_err(FileError::from)?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .build())
}

fn rolling(
    table: &LoadedTable,
    schema: Arc<Schema>,
    settings: FileSettings,
    file_prefix: String,
) -> Result<
    RollingFileWriterBuilder<
        ParquetWriterBuilder,
        DefaultLocationGenerator,
        DefaultFileNameGenerator,
    >,
    FileError,
> {
    let metadata: &TableMetadata = &table.metadata;
    Ok(RollingFileWriterBuilder::new(
        ParquetWriterBuilder::new(writer_properties(settings)?, schema),
        settings.target_file_size as usize,
        table.file_io.clone(),
        DefaultLocationGenerator::new(metadata).map_err(FileError::from)?,
        DefaultFileNameGenerator::new(file_prefix, None, DataFileFormat::Parquet),
    ))
}

/// Writes rows (in the table's Arrow schema, split by partition) as data files: each group's
/// rows into files of its own partition, in the order given.
pub async fn write_data_files(
    table: &LoadedTable,
    groups: Vec<super::partition::PartitionRows>,
    settings: FileSettings,
    commit_id: &str,
) -> Result<Vec<DataFile>, FileError> {
    write_groups(&data_writers(table, settings, commit_id)?, groups).await
}

/// Data-file writers of the target size, named after the commit.
fn data_writers(
    table: &LoadedTable,
    settings: FileSettings,
    commit_id: &str,
) -> Result<impl IcebergWriterBuilder, FileError> {
    let schema = table.metadata.current_schema().clone();
    Ok(DataFileWriterBuilder::new(rolling(
        table,
        schema,
        settings,
        format!("{commit_id}-data"),
    )?))
}

/// A writer of data files for an unpartitioned table: batches (in the table's Arrow schema)
/// go into files of the target size in the order written, each dropped once written.
pub async fn unpartitioned_data_writer(
    table: &LoadedTable,
    settings: FileSettings,
    commit_id: &str,
) -> Result<impl IcebergWriter, FileError> {
    data_writers(table, settings, commit_id)?
        .build(None)
        .await
        .map_err(FileError::from)
}

/// Writes each group of rows with a writer of its own partition, one group after another,
/// dropping each batch once written.
async fn write_groups<B: IcebergWriterBuilder>(
    builder: &B,
    groups: Vec<super::partition::PartitionRows>,
) -> Result<Vec<DataFile>, FileError> {
    let mut files = Vec::new();
    for (key, batches) in groups {
        let mut writer = builder.build(key).await.map_err(FileError::from)?;
        for rows in batches {
            writer.write(rows).await.map_err(FileError::from)?;
        }
        files.extend(writer.close().await.map_err(FileError::from)?);
    }
    Ok(files)
}

/// Writes a stream of batches (each projected onto the table's Arrow schema) as data files of
/// the target size, holding one batch at a time (and, for a partitioned table, one open file
/// per partition).
pub async fn write_data_stream<S>(
    table: &LoadedTable,
    mut batches: S,
    settings: FileSettings,
    file_prefix: &str,
) -> Result<(Vec<DataFile>, u64), FileError>
where
    S: futures::Stream<Item = Result<RecordBatch, FileError>> + Unpin,
{
    use futures::StreamExt;
    let schema = table.metadata.current_schema().clone();
    let target = super::schema::arrow_schema(&schema).map_err(FileError::permanent)?;
    let splitter = Splitter::new(table).map_err(FileError::permanent)?;
    let builder = DataFileWriterBuilder::new(rolling(
        table,
        schema,
        settings,
        format!("{file_prefix}-data"),
    )?);
    let mut writer = FanoutWriter::new(builder);
    let mut rows = 0u64;
    // The fan-out writer takes a key for every batch: an unpartitioned table's is empty.
    let unpartitioned = || {
        PartitionKey::new(
            table.metadata.default_partition_spec().as_ref().clone(),
            table.metadata.current_schema().clone(),
            iceberg::spec::Struct::empty(),
        )
    };
    while let Some(batch) = batches.next().await {
        let batch = super::schema::project(&batch?, &target).map_err(FileError::permanent)?;
        rows += batch.num_rows() as u64;
        for (key, group) in splitter.split(batch).map_err(FileError::permanent)? {
            let key = key.unwrap_or_else(unpartitioned);
            writer.write(key, group).await.map_err(FileError::from)?;
        }
    }
    Ok((writer.close().await.map_err(FileError::from)?, rows))
}

/// Writes the primary-key columns of `rows` (in the table's Arrow schema) as equality-delete
/// files on the identifier fields, one set per partition of the rows.
pub async fn write_equality_deletes(
    table: &LoadedTable,
    rows: RecordBatch,
    settings: FileSettings,
    commit_id: &str,
) -> Result<Vec<DataFile>, FileError> {
    let schema = table.metadata.current_schema().clone();
    let key_ids: Vec<i32> = schema.identifier_field_ids().collect();
    let config =
        EqualityDeleteWriterConfig::new(key_ids, schema.clone()).map_err(FileError::from)?;
    // The delete file holds only the key columns: its Parquet schema is the projection.
    let delete_schema = iceberg::arrow::arrow_schema_to_schema(config.projected_arrow_schema_ref())
        .map_err(FileError::from)?;
    let builder = EqualityDeleteFileWriterBuilder::new(
        rolling(
            table,
            Arc::new(delete_schema),
            settings,
            format!("{commit_id}-eq-delete"),
        )?,
        config,
    );
    let groups = Splitter::new(table)
        .and_then(|s| s.split_all(vec![rows]))
        .map_err(FileError::permanent)?;
    write_groups(&builder, groups).await
}

/// Writes position deletes (sorted by file and position) of data files of one partition (`key`,
/// `None` for an unpartitioned table) as position-delete files of that partition.
pub async fn write_position_deletes(
    table: &LoadedTable,
    deletes: &[PositionDelete],
    key: Option<&PartitionKey>,
    settings: FileSettings,
    file_prefix: &str,
) -> Result<Vec<DataFile>, FileError> {
    use iceberg::metadata_columns::{
        RESERVED_FIELD_ID_DELETE_FILE_PATH, RESERVED_FIELD_ID_DELETE_FILE_POS,
    };
    use iceberg::spec::{Datum, NestedField, PrimitiveType, Type};
    use std::collections::HashMap;

    if deletes.is_empty() {
        return Ok(Vec::new());
    }
    let schema = Schema::builder()
        .with_fields([
            Arc::new(NestedField::required(
                RESERVED_FIELD_ID_DELETE_FILE_PATH,
                "file_path",
                Type::Primitive(PrimitiveType::String),
            )),
            Arc::new(NestedField::required(
                RESERVED_FIELD_ID_DELETE_FILE_POS,
                "pos",
                Type::Primitive(PrimitiveType::Long),
            )),
        ])
        .build()
        .map_err(FileError::from)?;
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).map_err(FileError::from)?);
    let batch = RecordBatch::try_new(
        arrow,
        vec![
            Arc::new(StringArray::from_iter_values(
                deletes.iter().map(|d| d.file_path.as_ref()),
            )),
            Arc::new(Int64Array::from_iter_values(deletes.iter().map(|d| d.pos))),
        ],
    )
    .map_err(FileError::from)?;
    let mut writer = rolling(
        table,
        Arc::new(schema),
        settings,
        format!("{file_prefix}-pos-delete"),
    )?
    .build();
    let key = key.cloned();
    writer.write(&key, &batch).await.map_err(FileError::from)?;
    writer
        .close()
        .await
        .map_err(FileError::from)?
        .into_iter()
        .map(|mut file| {
            // Bounds on the path let readers skip the file for every other data file (it is
            // file-scoped when both are the same path).
            let (first, last) = (&deletes[0], &deletes[deletes.len() - 1]);
            let (min_pos, max_pos) = deletes.iter().fold((i64::MAX, i64::MIN), |(lo, hi), d| {
                (lo.min(d.pos), hi.max(d.pos))
            });
            if let Some(key) = &key {
                file.partition(key.data().clone())
                    .partition_spec_id(key.spec().spec_id());
            }
            file.content(DataContentType::PositionDeletes)
                .lower_bounds(HashMap::from([
                    (
                        RESERVED_FIELD_ID_DELETE_FILE_PATH,
                        Datum::string(&*first.file_path),
                    ),
                    (RESERVED_FIELD_ID_DELETE_FILE_POS, Datum::long(min_pos)),
                ]))
                .upper_bounds(HashMap::from([
                    (
                        RESERVED_FIELD_ID_DELETE_FILE_PATH,
                        Datum::string(&*last.file_path),
                    ),
                    (RESERVED_FIELD_ID_DELETE_FILE_POS, Datum::long(max_pos)),
                ]));
            file.build().map_err(FileError::permanent)
        })
        .collect()
}
