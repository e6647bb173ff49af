//! Writes a commit's Parquet files into the table's own storage with iceberg-rust's writers:
//! data files for new row images, equality-delete files (primary-key columns only) for keys
//! whose old rows must go.

use std::sync::Arc;

use arrow::array::RecordBatch;
use iceberg::spec::{DataFile, DataFileFormat, Schema, TableMetadata};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::base_writer::equality_delete_writer::{
    EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::catalog::LoadedTable;

/// How files are written.
#[derive(Debug, Clone, Copy)]
pub struct FileSettings {
    pub target_file_size: u64,
    pub zstd_level: i32,
}

/// iceberg-rust's Parquet writer ignores the table's `write.parquet.*` properties and would
/// write uncompressed files; Floe always passes zstd.
fn writer_properties(settings: FileSettings) -> Result<WriterProperties, String> {
    let level = ZstdLevel::try_new(settings.zstd_level).map_err(|e| e.to_string())?;
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
    String,
> {
    let metadata: &TableMetadata = &table.metadata;
    Ok(RollingFileWriterBuilder::new(
        ParquetWriterBuilder::new(writer_properties(settings)?, schema),
        settings.target_file_size as usize,
        table.file_io.clone(),
        DefaultLocationGenerator::new(metadata).map_err(|e| e.to_string())?,
        DefaultFileNameGenerator::new(file_prefix, None, DataFileFormat::Parquet),
    ))
}

/// Writes `rows` (in the table's Arrow schema) as data files.
pub async fn write_data_files(
    table: &LoadedTable,
    rows: RecordBatch,
    settings: FileSettings,
    commit_id: &str,
) -> Result<Vec<DataFile>, String> {
    let schema = table.metadata.current_schema().clone();
    let builder = DataFileWriterBuilder::new(rolling(
        table,
        schema,
        settings,
        format!("{commit_id}-data"),
    )?);
    let mut writer = builder.build(None).await.map_err(|e| e.to_string())?;
    writer.write(rows).await.map_err(|e| e.to_string())?;
    writer.close().await.map_err(|e| e.to_string())
}

/// Writes the primary-key columns of `rows` as equality-delete files on the identifier fields.
pub async fn write_equality_deletes(
    table: &LoadedTable,
    rows: RecordBatch,
    settings: FileSettings,
    commit_id: &str,
) -> Result<Vec<DataFile>, String> {
    let schema = table.metadata.current_schema().clone();
    let key_ids: Vec<i32> = schema.identifier_field_ids().collect();
    let config =
        EqualityDeleteWriterConfig::new(key_ids, schema.clone()).map_err(|e| e.to_string())?;
    // The delete file holds only the key columns: its Parquet schema is the projection.
    let delete_schema = iceberg::arrow::arrow_schema_to_schema(config.projected_arrow_schema_ref())
        .map_err(|e| e.to_string())?;
    let builder = EqualityDeleteFileWriterBuilder::new(
        rolling(
            table,
            Arc::new(delete_schema),
            settings,
            format!("{commit_id}-eq-delete"),
        )?,
        config,
    );
    let mut writer = builder.build(None).await.map_err(|e| e.to_string())?;
    writer.write(rows).await.map_err(|e| e.to_string())?;
    writer.close().await.map_err(|e| e.to_string())
}
