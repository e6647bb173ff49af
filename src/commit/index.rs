//! The primary-key index of a table: for each key the table holds, where its live row is
//! (data file, row position).
//!
//! With it a commit removes a key's old row by position (an Iceberg position-delete file)
//! instead of by value, and only when the table holds the key: a re-sent insert, a snapshot
//! read or an update of a key the table holds replaces its row; a key the table does not hold
//! is a plain insert. Position deletes are what every engine reads (pyiceberg and others refuse
//! equality deletes) and cheap to apply.
//!
//! The index lives in memory and is never persisted: it is built from the table itself (the
//! key columns of the live data files, minus the table's position and equality deletes) when
//! Floe first writes the table in a process, and again whenever the table's current snapshot
//! is not the one the index was brought to (another writer committed, a conflict, a restart).
//! Each of Floe's own commits updates it in place. A crash loses nothing: the table is the
//! truth, the index is derived.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema as ArrowSchema, SchemaRef as ArrowSchemaRef,
};
use futures::TryStreamExt;
use iceberg::arrow::ArrowFileReader;
use iceberg::io::FileMetadata;
use iceberg::spec::{DataContentType, Schema};
use parquet::arrow::arrow_reader::RowSelection;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};

use super::FastHashMap as HashMap;
use super::files::FileError;
use super::keys::{Key, KeyBytes, KeyForm, Keys};
use super::partition::FilePartition;
use super::shards::Shards;
use super::snapshot::{load_manifests, read_manifest_list};
use crate::catalog::LoadedTable;

/// What the allocator adds to each heap allocation, roughly.
const MALLOC_OVERHEAD: usize = 16;

/// Where a live row is: an index into [`KeyIndex`]'s file list, and the row's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    file: u32,
    pos: u32,
}

/// Why an index cannot be built for a table; the table then falls back to equality deletes.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The table's contents cannot be indexed by key (for example an equality delete on other
    /// columns than the primary key): not retryable.
    #[error("{0}")]
    Unsupported(String),
    /// Reading the table failed; the commit may succeed later.
    #[error("{0}")]
    Read(String),
}

pub struct KeyIndex {
    table_uuid: uuid::Uuid,
    /// The snapshot whose rows the index describes (`None`: an empty table).
    snapshot_id: Option<i64>,
    key_ids: Vec<i32>,
    form: KeyForm,
    /// Path, size and partition of each data file the index points into.
    files: Vec<(Arc<str>, u64, Option<FilePartition>)>,
    file_ids: HashMap<Arc<str>, u32>,
    rows: KeyMap,
    /// Keys the table holds more than once (written before Floe kept an index, or by another
    /// writer): every row is removed at the key's next change, which repairs the table.
    extra: HashMap<KeyBytes, Vec<Location>>,
    /// Heap bytes of keys longer than [`KeyBytes`]' inline capacity.
    spilled_bytes: usize,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("snapshot_id", &self.snapshot_id)
            .field("keys", &self.rows.len())
            .field("files", &self.files.len())
            .finish()
    }
}

/// A table's keys: one integer column as itself (16 bytes a slot), any other key in Arrow's
/// row format (32 bytes a slot, plus the key's bytes beyond 16).
enum KeyMap {
    Long(Shards<i64, Location>),
    Bytes(Shards<KeyBytes, Location>),
}

impl KeyMap {
    fn get(&self, key: Key<'_>) -> Option<Location> {
        match (self, key) {
            (KeyMap::Long(m), Key::Long(k)) => m.get(&k),
            (KeyMap::Bytes(m), Key::Bytes(k)) => m.get(k),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            KeyMap::Long(m) => m.len(),
            KeyMap::Bytes(m) => m.len(),
        }
    }

    fn clear(&mut self) {
        match self {
            KeyMap::Long(m) => m.clear(),
            KeyMap::Bytes(m) => m.clear(),
        }
    }

    /// Bytes of the hash table's slots.
    fn table_bytes(&self) -> usize {
        match self {
            KeyMap::Long(m) => m.capacity() * (std::mem::size_of::<(i64, Location)>() + 1),
            KeyMap::Bytes(m) => m.capacity() * (std::mem::size_of::<(KeyBytes, Location)>() + 1),
        }
    }
}

/// A row of a position-delete file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PositionDelete {
    pub file_path: Arc<str>,
    pub pos: i64,
}

/// A data file a commit wrote: where, how many rows, how many bytes, in which partition.
#[derive(Debug, Clone)]
pub struct WrittenFile<'a> {
    pub path: &'a str,
    pub rows: u64,
    pub bytes: u64,
    pub partition: Option<FilePartition>,
}

/// The key columns of `schema` (identifier fields) as Arrow types, in identifier order.
pub fn key_types(schema: &Schema) -> Result<(Vec<i32>, Vec<DataType>), String> {
    let arrow = super::schema::arrow_schema(schema)?;
    let mut ids = Vec::new();
    let mut types = Vec::new();
    for id in schema.identifier_field_ids() {
        let name = schema
            .name_by_field_id(id)
            .ok_or_else(|| format!("identifier field {id} is not in the schema"))?;
        let field = arrow
            .field_with_name(name)
            .map_err(|e| format!("identifier field {name}: {e}"))?;
        ids.push(id);
        types.push(field.data_type().clone());
    }
    Ok((ids, types))
}

impl KeyIndex {
    /// An empty index for a table with these key columns.
    pub fn empty(
        table_uuid: uuid::Uuid,
        snapshot_id: Option<i64>,
        key_ids: Vec<i32>,
        key_types: Vec<DataType>,
    ) -> Result<Self, String> {
        let form = KeyForm::new(&key_types)?;
        let integer = form.is_long();
        Ok(KeyIndex {
            table_uuid,
            snapshot_id,
            key_ids,
            form,
            files: Vec::new(),
            file_ids: HashMap::default(),
            rows: if integer {
                KeyMap::Long(Shards::default())
            } else {
                KeyMap::Bytes(Shards::default())
            },
            extra: HashMap::default(),
            spilled_bytes: 0,
        })
    }

    /// Whether the index describes `table` as it is now (same table, same current snapshot,
    /// same key columns and types).
    pub fn describes(&self, table: &LoadedTable) -> bool {
        self.table_uuid == table.metadata.uuid()
            && self.snapshot_id == table.metadata.current_snapshot_id()
            && key_types(table.metadata.current_schema())
                .is_ok_and(|(ids, types)| ids == self.key_ids && types == self.form.types())
    }

    /// Reads the index of `table`'s current snapshot from its files.
    pub async fn build(table: &LoadedTable) -> Result<Self, IndexError> {
        let metadata = &table.metadata;
        let (key_ids, key_types) =
            key_types(metadata.current_schema()).map_err(IndexError::Unsupported)?;
        if key_ids.is_empty() {
            return Err(IndexError::Unsupported(
                "the table has no primary key".into(),
            ));
        }
        let mut index = KeyIndex::empty(
            metadata.uuid(),
            metadata.current_snapshot_id(),
            key_ids,
            key_types,
        )
        .map_err(IndexError::Unsupported)?;
        let Some(snapshot) = metadata.current_snapshot() else {
            return Ok(index);
        };
        let read = |what: &str, e: &dyn std::fmt::Display| IndexError::Read(format!("{what}: {e}"));
        let unread = |e: FileError| IndexError::Read(e.message);
        let io = &table.file_io;
        let list = read_manifest_list(io, snapshot.manifest_list(), metadata.format_version())
            .await
            .map_err(unread)?;

        let mut data = Vec::new();
        let mut position_deletes = Vec::new();
        let mut equality_deletes = Vec::new();
        let mut manifests = std::pin::pin!(load_manifests(io, &list));
        while let Some((manifest, m)) = manifests.try_next().await.map_err(unread)? {
            for entry in m.entries().iter().filter(|e| e.is_alive()) {
                let seq = entry.sequence_number().unwrap_or(0);
                let file = entry.data_file();
                let item = (file.file_path().to_string(), file.file_size_in_bytes(), seq);
                match file.content_type() {
                    DataContentType::Data => data.push((
                        item,
                        FilePartition {
                            spec_id: manifest.partition_spec_id,
                            values: file.partition().clone(),
                        },
                    )),
                    DataContentType::PositionDeletes => position_deletes.push(item),
                    DataContentType::EqualityDeletes => {
                        let ids: HashSet<i32> = file
                            .equality_ids()
                            .unwrap_or_default()
                            .into_iter()
                            .collect();
                        if ids != index.key_ids.iter().copied().collect::<HashSet<_>>() {
                            return Err(IndexError::Unsupported(format!(
                                "equality-delete file {} deletes by columns {:?}, not by the \
                                 primary key",
                                file.file_path(),
                                file.equality_ids()
                            )));
                        }
                        equality_deletes.push(item);
                    }
                }
            }
        }

        // Deleted positions per data file, with the sequence number of each delete: a position
        // delete applies to data files of a sequence number up to its own.
        let mut deleted_at: HashMap<String, Vec<(u64, i64)>> = HashMap::default();
        let delete_ids = [
            iceberg::metadata_columns::RESERVED_FIELD_ID_DELETE_FILE_PATH,
            iceberg::metadata_columns::RESERVED_FIELD_ID_DELETE_FILE_POS,
        ];
        for (path, size, seq) in &position_deletes {
            for batch in read_columns(table, path, *size, &delete_ids).await? {
                let paths = cast(batch.column(0), &DataType::Utf8)
                    .map_err(|e| read(path, &e))?
                    .as_string::<i32>()
                    .clone();
                let positions = batch.column(1).as_primitive::<Int64Type>();
                for (p, pos) in paths.iter().zip(positions.iter()) {
                    if let (Some(p), Some(pos)) = (p, pos) {
                        deleted_at
                            .entry(p.to_string())
                            .or_default()
                            .push((pos as u64, *seq));
                    }
                }
            }
        }
        // Deleted keys, with the newest sequence number that deletes each: an equality delete
        // applies to data files of a LOWER sequence number.
        let mut deleted_keys: HashMap<KeyBytes, i64> = HashMap::default();
        for (path, size, seq) in &equality_deletes {
            for batch in read_columns(table, path, *size, &index.key_ids).await? {
                let keys = index.keys(batch.columns()).map_err(|e| read(path, &e))?;
                for i in 0..keys.len() {
                    let slot = deleted_keys.entry(keys.get(i).owned()).or_insert(*seq);
                    *slot = (*slot).max(*seq);
                }
            }
        }

        let key_ids = index.key_ids.clone();
        for ((path, size, seq), partition) in data {
            let (path, size, seq) = (&path, &size, &seq);
            let deleted: HashSet<u64> = deleted_at
                .get(path)
                .map(|d| {
                    d.iter()
                        .filter(|(_, s)| *s >= *seq)
                        .map(|(p, _)| *p)
                        .collect()
                })
                .unwrap_or_default();
            let file = index.file_id(path, *size, Some(partition));
            let mut pos: u64 = 0;
            for batch in read_columns(table, path, *size, &key_ids).await? {
                let keys = index.keys(batch.columns()).map_err(|e| read(path, &e))?;
                for i in 0..keys.len() {
                    let key = keys.get(i);
                    let here = pos;
                    pos += 1;
                    if deleted.contains(&here)
                        || (!deleted_keys.is_empty()
                            && deleted_keys
                                .get(key.owned().as_slice())
                                .is_some_and(|s| *s > *seq))
                    {
                        continue;
                    }
                    let at = Location {
                        file,
                        pos: u32::try_from(here).map_err(|_| {
                            IndexError::Unsupported(format!(
                                "data file {path} has more than 2^32 rows"
                            ))
                        })?,
                    };
                    index.insert(key, at);
                }
            }
        }
        Ok(index)
    }

    /// The keys of `columns` (the key columns in identifier order) in the index's form.
    fn keys(&self, columns: &[ArrayRef]) -> Result<Keys, String> {
        self.form.keys(columns)
    }

    fn file_id(&mut self, path: &str, size: u64, partition: Option<FilePartition>) -> u32 {
        if let Some(id) = self.file_ids.get(path) {
            return *id;
        }
        let id = self.files.len() as u32;
        let path: Arc<str> = Arc::from(path);
        self.files.push((path.clone(), size, partition));
        self.file_ids.insert(path, id);
        id
    }

    fn insert(&mut self, key: Key<'_>, at: Location) {
        if let Some(first) = self.rows.get(key) {
            self.extra
                .entry(key.owned())
                .or_insert_with(|| vec![first])
                .push(at);
            return;
        }
        match (&mut self.rows, key) {
            (KeyMap::Long(m), Key::Long(k)) => m.insert_new(k, at),
            (KeyMap::Bytes(m), Key::Bytes(k)) => {
                let k = KeyBytes::from_slice(k);
                if k.spilled() {
                    self.spilled_bytes += k.capacity() + MALLOC_OVERHEAD;
                }
                m.insert_new(k, at);
            }
            _ => unreachable!("keys take the form of the index's map"),
        }
    }

    fn remove(&mut self, key: Key<'_>) {
        match (&mut self.rows, key) {
            (KeyMap::Long(m), Key::Long(k)) => {
                m.remove(&k);
            }
            (KeyMap::Bytes(m), Key::Bytes(k)) => {
                if let Some(k) = m.remove(k)
                    && k.spilled()
                {
                    self.spilled_bytes -= k.capacity() + MALLOC_OVERHEAD;
                }
            }
            _ => unreachable!("keys take the form of the index's map"),
        }
        if !self.extra.is_empty() {
            self.extra.remove(key.owned().as_slice());
        }
    }

    /// Number of keys the table holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// Keys the table holds more than once.
    pub fn duplicated_keys(&self) -> usize {
        self.extra.len()
    }

    /// The partition of an indexed data file (`None`: not indexed, or of unknown partition).
    pub fn partition_of(&self, path: &str) -> Option<&FilePartition> {
        self.file_ids
            .get(path)
            .and_then(|id| self.files[*id as usize].2.as_ref())
    }

    /// The rows the table holds for the keys of `keys` (the key columns in identifier order),
    /// sorted by file and position as position-delete files must be.
    pub fn locate(&self, keys: &[ArrayRef]) -> Result<Vec<PositionDelete>, String> {
        let keys = self.keys(keys)?;
        let mut found = Vec::new();
        for i in 0..keys.len() {
            let key = keys.get(i);
            let all = if self.extra.is_empty() {
                None
            } else {
                self.extra.get(key.owned().as_slice())
            };
            match all {
                Some(all) => found.extend(all.iter().copied()),
                None => found.extend(self.rows.get(key)),
            }
        }
        let mut deletes: Vec<PositionDelete> = found
            .into_iter()
            .map(|l| PositionDelete {
                file_path: self.files[l.file as usize].0.clone(),
                pos: i64::from(l.pos),
            })
            .collect();
        deletes.sort();
        deletes.dedup();
        Ok(deletes)
    }

    /// Brings the index to what a commit of this engine did: the rows of `removed` keys are
    /// gone, the rows of `written` (key columns of the new rows, in the order they were
    /// written) are in `files` (in write order); the table is now at
    /// `snapshot_id`. `replace_all`: the commit replaced every row of the table.
    pub fn apply(
        &mut self,
        removed: &[ArrayRef],
        written: &[ArrayRef],
        files: &[WrittenFile<'_>],
        snapshot_id: i64,
        replace_all: bool,
    ) -> Result<(), String> {
        if replace_all {
            self.rows.clear();
            self.extra.clear();
            self.files.clear();
            self.file_ids.clear();
            self.spilled_bytes = 0;
        } else if removed.first().is_some_and(|c| !c.is_empty()) {
            let keys = self.keys(removed)?;
            for i in 0..keys.len() {
                self.remove(keys.get(i));
            }
        }
        let written_rows = if written.is_empty() {
            0
        } else {
            written[0].len()
        };
        let in_files: u64 = files.iter().map(|f| f.rows).sum();
        if in_files != written_rows as u64 {
            return Err(format!(
                "the data files hold {in_files} rows, the commit wrote {written_rows}"
            ));
        }
        if written_rows > 0 {
            let keys = self.keys(written)?;
            let mut row = 0;
            for written in files {
                let file = self.file_id(written.path, written.bytes, written.partition.clone());
                for pos in 0..written.rows {
                    self.insert(
                        keys.get(row),
                        Location {
                            file,
                            pos: pos as u32,
                        },
                    );
                    row += 1;
                }
            }
        }
        self.snapshot_id = Some(snapshot_id);
        Ok(())
    }

    /// What the index holds in memory, approximately: hash table slots, spilled key bytes and
    /// file paths.
    pub fn memory_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(KeyBytes, Vec<Location>)>() + 1;
        self.rows.table_bytes()
            + self.spilled_bytes
            + self.extra.len() * (slot + 64)
            + self
                .files
                .iter()
                .map(|(p, _, part)| {
                    p.len() + 88 + part.as_ref().map_or(0, |p| p.values.fields().len() * 32)
                })
                .sum::<usize>()
    }
}

impl KeyIndex {
    /// The table's live rows of `keys` (the key columns in identifier order), in `target`'s
    /// schema: each read at its position, from only the files that hold them.
    pub async fn read_rows(
        &self,
        table: &LoadedTable,
        target: &ArrowSchemaRef,
        keys: &[ArrayRef],
    ) -> Result<RecordBatch, String> {
        let found = self.locate(keys)?;
        let schema = table.metadata.current_schema();
        let mut out = Vec::new();
        for group in found.chunk_by(|a, b| a.file_path == b.file_path) {
            let path = &*group[0].file_path;
            let read = |e: &dyn std::fmt::Display| format!("{path}: {e}");
            let size = self.file_ids.get(path).map(|id| self.files[*id as usize].1);
            let builder = open_parquet(table, path, size.expect("located files are indexed"))
                .await
                .map_err(|e| read(&e))?;
            let total = builder.metadata().file_metadata().num_rows() as usize;
            // The file's columns that are columns of the table now, under their current names
            // (another engine may have renamed one since the file was written).
            let mut wanted = Vec::new();
            let mut names = Vec::new();
            for (i, field) in builder
                .parquet_schema()
                .root_schema()
                .get_fields()
                .iter()
                .enumerate()
            {
                let info = field.get_basic_info();
                if let Some(current) = info
                    .has_id()
                    .then(|| {
                        schema
                            .as_struct()
                            .fields()
                            .iter()
                            .find(|f| f.id == info.id())
                    })
                    .flatten()
                {
                    wanted.push(i);
                    names.push(current.name.clone());
                }
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
            let ranges = group.iter().map(|d| d.pos as usize..d.pos as usize + 1);
            let stream = builder
                .with_projection(mask)
                .with_row_selection(RowSelection::from_consecutive_ranges(ranges, total))
                .build()
                .map_err(|e| read(&e))?;
            let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| read(&e))?;
            for batch in batches {
                let fields: Vec<Field> = batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(&names)
                    .map(|(f, name)| f.as_ref().clone().with_name(name))
                    .collect();
                let renamed = RecordBatch::try_new(
                    Arc::new(ArrowSchema::new(fields)),
                    batch.columns().to_vec(),
                )
                .map_err(|e| read(&e))?;
                out.push(super::schema::project(&renamed, target).map_err(|e| read(&e))?);
            }
        }
        concat_batches(target, &out).map_err(|e| e.to_string())
    }
}

/// A reader of the Parquet file at `path` (of `size` bytes) in the table's storage.
async fn open_parquet(
    table: &LoadedTable,
    path: &str,
    size: u64,
) -> Result<ParquetRecordBatchStreamBuilder<ArrowFileReader>, String> {
    let input = table.file_io.new_input(path).map_err(|e| e.to_string())?;
    let reader = ArrowFileReader::new(
        FileMetadata { size },
        input.reader().await.map_err(|e| e.to_string())?,
    );
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| e.to_string())
}

/// Reads the top-level columns with these field ids of a Parquet file, in this order.
pub(super) async fn read_columns(
    table: &LoadedTable,
    path: &str,
    size: u64,
    field_ids: &[i32],
) -> Result<Vec<RecordBatch>, IndexError> {
    let read = |e: &dyn std::fmt::Display| IndexError::Read(format!("{path}: {e}"));
    let builder = open_parquet(table, path, size)
        .await
        .map_err(|e| read(&e))?;
    let roots = builder.parquet_schema().root_schema().get_fields();
    let mut wanted = Vec::with_capacity(field_ids.len());
    for id in field_ids {
        let at = roots
            .iter()
            .position(|f| {
                let info = f.get_basic_info();
                info.has_id() && info.id() == *id
            })
            .ok_or_else(|| {
                IndexError::Unsupported(format!("{path} has no column with field id {id}"))
            })?;
        wanted.push(at);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
    let stream = builder
        .with_projection(mask)
        .build()
        .map_err(|e| read(&e))?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| read(&e))?;
    // The projection keeps the file's column order; put the columns in the order asked for.
    let mut sorted = wanted.clone();
    sorted.sort_unstable();
    let order: Vec<usize> = wanted
        .iter()
        .map(|w| sorted.iter().position(|s| s == w).expect("projected"))
        .collect();
    batches
        .into_iter()
        .map(|b| b.project(&order).map_err(|e| read(&e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int32Array, Int64Array, StringArray};

    use super::*;

    fn longs(v: &[i64]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(v.to_vec()))]
    }

    fn pairs(v: &[(&str, i32)]) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from_iter_values(v.iter().map(|p| p.0))),
            Arc::new(Int32Array::from_iter_values(v.iter().map(|p| p.1))),
        ]
    }

    fn file(path: &str, rows: u64) -> WrittenFile<'_> {
        WrittenFile {
            path,
            rows,
            bytes: 100,
            partition: None,
        }
    }

    fn at(path: &str, pos: i64) -> PositionDelete {
        PositionDelete {
            file_path: Arc::from(path),
            pos,
        }
    }

    #[test]
    fn integer_keys_are_found_where_the_commits_wrote_them() {
        let mut index =
            KeyIndex::empty(uuid::Uuid::nil(), None, vec![1], vec![DataType::Int64]).unwrap();
        index
            .apply(
                &[],
                &longs(&[10, 11, 12]),
                &[file("a", 2), file("b", 1)],
                1,
                false,
            )
            .unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.locate(&longs(&[12, 99, 10])).unwrap(),
            [at("a", 0), at("b", 0)],
            "sorted by file and position; unknown keys have no row"
        );
        // 11 is updated (its old row removed, the new one in c), 12 deleted.
        index
            .apply(&longs(&[11, 12]), &longs(&[11]), &[file("c", 1)], 2, false)
            .unwrap();
        assert_eq!(
            index.locate(&longs(&[10, 11, 12])).unwrap(),
            [at("a", 0), at("c", 0)]
        );
        assert_eq!(index.len(), 2);
        // A commit whose files do not hold the rows it wrote is refused.
        assert!(
            index
                .apply(&[], &longs(&[13]), &[file("d", 2)], 3, false)
                .is_err()
        );
    }

    #[test]
    fn composite_keys_and_keys_held_twice() {
        let types = vec![DataType::Utf8, DataType::Int32];
        let mut index = KeyIndex::empty(uuid::Uuid::nil(), None, vec![1, 2], types).unwrap();
        let keys = pairs(&[("x", 1), ("x", 2), ("a-key-longer-than-sixteen-bytes", 1)]);
        index.apply(&[], &keys, &[file("a", 3)], 1, false).unwrap();
        assert!(index.memory_bytes() > 0);
        // Another writer's second row for ("x", 1): both rows are found, then both go.
        index
            .apply(&[], &pairs(&[("x", 1)]), &[file("b", 1)], 2, false)
            .unwrap();
        assert_eq!(index.duplicated_keys(), 1);
        assert_eq!(
            index.locate(&pairs(&[("x", 1)])).unwrap(),
            [at("a", 0), at("b", 0)]
        );
        index
            .apply(&pairs(&[("x", 1)]), &[], &[], 3, false)
            .unwrap();
        assert_eq!(index.duplicated_keys(), 0);
        assert_eq!(index.locate(&pairs(&[("x", 1)])).unwrap(), []);
        assert_eq!(
            index
                .locate(&pairs(&[("a-key-longer-than-sixteen-bytes", 1), ("x", 2)]))
                .unwrap(),
            [at("a", 1), at("a", 2)]
        );
        // A truncating commit replaces every row.
        index
            .apply(&[], &pairs(&[("y", 1)]), &[file("c", 1)], 4, true)
            .unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.locate(&pairs(&[("x", 2)])).unwrap(), []);
    }
}
