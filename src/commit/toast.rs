//! Unchanged (TOASTed) columns: Debezium sends `__debezium_unavailable_value` for a large
//! column that did not change. The decoder marks such cells (null, with the column's field id
//! in the row's `_floe_unchanged` list); here they take the value they had: from the previous
//! image of the same key in the commit window, else from the table's current row: read at
//! its position when the table has a key index, else by a scan filtered by key. The placeholder is never written, and neither is a null in its place
//! where the table has a value.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, ArrayRef, Int32Array, ListArray, RecordBatch};
use arrow::compute::{concat_batches, interleave};
use arrow::datatypes::SchemaRef as ArrowSchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use futures::TryStreamExt;
use iceberg::expr::Reference;
use iceberg::table::Table;

use super::index::KeyIndex;
use super::merge::ChangeOp;
use crate::catalog::LoadedTable;
use crate::decode::arrow::UNCHANGED_COLUMN;

/// Where a cell's value comes from: (0, row) in the window, (1, row) in the table's rows.
type Origin = (usize, usize);

/// Per row of `batch`, the names of its unchanged columns (empty when the batch has no
/// `_floe_unchanged` column).
pub fn unchanged_columns(batch: &RecordBatch) -> Result<Vec<Vec<String>>, String> {
    let schema = batch.schema();
    let Ok(index) = schema.index_of(UNCHANGED_COLUMN) else {
        return Ok(vec![Vec::new(); batch.num_rows()]);
    };
    let lists = batch
        .column(index)
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| format!("{UNCHANGED_COLUMN} must be a list of field ids"))?;
    let name_of: HashMap<i32, &str> = schema
        .fields()
        .iter()
        .filter_map(|f| {
            let id = f.metadata().get("PARQUET:field_id")?.parse().ok()?;
            Some((id, f.name().as_str()))
        })
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            if lists.is_null(row) {
                return Ok(Vec::new());
            }
            let ids = lists.value(row);
            let ids = ids
                .as_any()
                .downcast_ref::<Int32Array>()
                .ok_or_else(|| format!("{UNCHANGED_COLUMN} must hold int32 field ids"))?;
            ids.iter()
                .flatten()
                .map(|id| {
                    name_of.get(&id).map(|n| n.to_string()).ok_or_else(|| {
                        format!(
                            "{UNCHANGED_COLUMN} names field id {id}, which the batch does not have"
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// `rows` (the window in the table's schema) with every unchanged cell resolved; returns the
/// batch and how many cells no image had (left null, and logged by the caller).
/// `table` is None when the window starts from an empty table (it truncated it): cells with no
/// earlier image in the window then have none at all.
pub async fn resolve(
    table: Option<&LoadedTable>,
    index: Option<&KeyIndex>,
    target: &ArrowSchemaRef,
    rows: RecordBatch,
    ops: &[ChangeOp],
    key_columns: &[usize],
    unchanged: &[Vec<String>],
) -> Result<(RecordBatch, usize), String> {
    if unchanged.iter().all(Vec::is_empty) {
        return Ok((rows, 0));
    }
    if key_columns.is_empty() {
        // Without a key there is no previous image to take values from.
        return Ok((rows, unchanged.iter().map(Vec::len).sum()));
    }
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|i| SortField::new(rows.column(*i).data_type().clone()))
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    let key_arrays: Vec<ArrayRef> = key_columns
        .iter()
        .map(|i| rows.column(*i).clone())
        .collect();
    let keys = converter
        .convert_columns(&key_arrays)
        .map_err(|e| e.to_string())?;

    // Where each unchanged cell's value comes from: (0, row) in the window, or a table lookup.
    let column_index: HashMap<&str, usize> = target
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();
    let mut source: HashMap<(usize, usize), Origin> = HashMap::new();
    let mut from_table: Vec<(usize, usize)> = Vec::new();
    // Cells whose previous image in the window was itself unchanged and waits for the table:
    // (cell, the earlier cell it takes its value from), in window order.
    let mut follows: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut waiting: HashSet<(usize, usize)> = HashSet::new();
    let mut last_image: HashMap<OwnedRow, usize> = HashMap::new();
    for (row, op) in ops.iter().enumerate() {
        let key = keys.row(row).owned();
        for name in &unchanged[row] {
            let Some(&col) = column_index.get(name.as_str()) else {
                continue;
            };
            match last_image.get(&key) {
                Some(&previous) if waiting.contains(&(previous, col)) => {
                    follows.push(((row, col), (previous, col)));
                    waiting.insert((row, col));
                }
                Some(&previous) => {
                    let origin = source
                        .get(&(previous, col))
                        .copied()
                        .unwrap_or((0, previous));
                    source.insert((row, col), origin);
                }
                None => {
                    from_table.push((row, col));
                    waiting.insert((row, col));
                }
            }
        }
        if *op == ChangeOp::Delete {
            last_image.remove(&key);
        } else {
            last_image.insert(key, row);
        }
    }

    let mut unresolved = 0;
    let current = match table {
        _ if from_table.is_empty() => None,
        None => {
            unresolved += from_table.len();
            None
        }
        Some(table) => {
            let wanted: Vec<usize> = {
                let mut r: Vec<usize> = from_table.iter().map(|(row, _)| *row).collect();
                r.dedup();
                r
            };
            Some(match index {
                Some(index) => {
                    let keys: Vec<ArrayRef> = key_columns
                        .iter()
                        .map(|i| {
                            arrow::compute::take(
                                rows.column(*i),
                                &arrow::array::UInt32Array::from_iter_values(
                                    wanted.iter().map(|r| *r as u32),
                                ),
                                None,
                            )
                            .map_err(|e| e.to_string())
                        })
                        .collect::<Result<_, _>>()?;
                    index.read_rows(table, target, &keys).await?
                }
                None => current_rows(table, target, &rows, key_columns, &wanted).await?,
            })
        }
    };
    if let Some(current) = &current {
        let current_keys = converter
            .convert_columns(
                &key_columns
                    .iter()
                    .map(|i| current.column(*i).clone())
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| e.to_string())?;
        let mut by_key: HashMap<OwnedRow, usize> = HashMap::with_capacity(current.num_rows());
        for i in 0..current.num_rows() {
            if by_key.insert(current_keys.row(i).owned(), i).is_some() {
                // The scan applies delete files; a key twice means the table breaks its own
                // identifier fields, and no single value is the one to keep.
                return Err("the table holds two rows for one primary key".into());
            }
        }
        for (row, col) in &from_table {
            match by_key.get(&keys.row(*row).owned()) {
                Some(&found) => {
                    source.insert((*row, *col), (1, found));
                }
                None => unresolved += 1,
            }
        }
    }
    // A later unchanged cell of the same key takes what its earlier one got (in order, so
    // chains resolve); where that had nothing, neither has this one.
    for (cell, earlier) in follows {
        match source.get(&earlier).copied() {
            Some(origin) => {
                source.insert(cell, origin);
            }
            None => unresolved += 1,
        }
    }

    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    let mut by_column: HashMap<usize, Vec<(usize, Origin)>> = HashMap::new();
    for ((row, col), origin) in &source {
        by_column.entry(*col).or_default().push((*row, *origin));
    }
    for (col, cells) in by_column {
        let mut indices: Vec<(usize, usize)> = (0..rows.num_rows()).map(|r| (0, r)).collect();
        for (row, origin) in cells {
            indices[row] = origin;
        }
        let window = rows.column(col).clone();
        let sources: Vec<&dyn Array> = match &current {
            Some(c) => vec![window.as_ref(), c.column(col).as_ref()],
            None => vec![window.as_ref()],
        };
        columns[col] = interleave(&sources, &indices).map_err(|e| e.to_string())?;
    }
    let batch = RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())?;
    Ok((batch, unresolved))
}

/// The table's current rows for the keys of `wanted` rows, in `target`'s shape. Filters by
/// key where the key is one column; reads the whole table otherwise.
async fn current_rows(
    table: &LoadedTable,
    target: &ArrowSchemaRef,
    rows: &RecordBatch,
    key_columns: &[usize],
    wanted: &[usize],
) -> Result<RecordBatch, String> {
    if table.metadata.current_snapshot().is_none() {
        return Ok(RecordBatch::new_empty(target.clone()));
    }
    let ident = iceberg::TableIdent::from_strs([&table.ident.namespace, &table.ident.name])
        .map_err(|e| e.to_string())?;
    let iceberg_table = Table::builder()
        .metadata(table.metadata.clone())
        .metadata_location(table.metadata_location.clone())
        .identifier(ident)
        .file_io(table.file_io.clone())
        .runtime(iceberg::Runtime::try_current().map_err(|e| e.to_string())?)
        .readonly(true)
        .build()
        .map_err(|e| e.to_string())?;
    let mut scan = iceberg_table.scan().select_all();
    if let [key] = key_columns {
        let name = target.field(*key).name().clone();
        let column = rows.column(*key);
        let literals: Option<Vec<iceberg::spec::Datum>> = wanted
            .iter()
            .map(|row| key_literal(column.as_ref(), *row))
            .collect();
        if let Some(literals) = literals {
            scan = scan.with_filter(Reference::new(name).is_in(literals));
        }
    }
    let batches: Vec<RecordBatch> = scan
        .build()
        .map_err(|e| e.to_string())?
        .to_arrow()
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let projected = batches
        .iter()
        .map(|b| super::schema::project(b, target))
        .collect::<Result<Vec<_>, _>>()?;
    concat_batches(target, &projected).map_err(|e| e.to_string())
}

fn key_literal(column: &dyn Array, row: usize) -> Option<iceberg::spec::Datum> {
    use arrow::array::{AsArray, LargeStringArray, StringArray};
    use arrow::datatypes::{DataType, Int32Type, Int64Type};
    use iceberg::spec::Datum;
    match column.data_type() {
        DataType::Int32 => Some(Datum::int(column.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => Some(Datum::long(column.as_primitive::<Int64Type>().value(row))),
        DataType::Utf8 => Some(Datum::string(
            column.as_any().downcast_ref::<StringArray>()?.value(row),
        )),
        DataType::LargeUtf8 => Some(Datum::string(
            column
                .as_any()
                .downcast_ref::<LargeStringArray>()?
                .value(row),
        )),
        _ => None,
    }
}
