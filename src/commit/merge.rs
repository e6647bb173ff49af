//! Merges a commit window's changes into what the snapshot writes: per primary key the last
//! change wins; new row images become data rows and touched keys become equality deletes.
//!
//! It never reads the table: whether a key exists there is unknown, so every touched key gets
//! a delete entry unless the table holds no rows at all. An insert is no proof that a key is
//! new: Debezium is at-least-once and re-sends inserts (and snapshot reads) after its own
//! restarts, so an insert without its delete would become a second row for the key.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::row::{RowConverter, SortField};

/// A Debezium op as the commit engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// `c`: a new row.
    Insert,
    /// `u`: a new image of an existing row.
    Update,
    /// `d`: the row is gone.
    Delete,
    /// `r`: a snapshot read of a row that may or may not be in the table already.
    Read,
}

impl ChangeOp {
    pub fn parse(op: &str) -> Option<Self> {
        match op {
            "c" => Some(ChangeOp::Insert),
            "u" => Some(ChangeOp::Update),
            "d" => Some(ChangeOp::Delete),
            "r" => Some(ChangeOp::Read),
            _ => None,
        }
    }
}

/// What one commit writes.
#[derive(Debug)]
pub struct Merged {
    /// Rows for data files (the table's columns).
    pub upserts: Option<RecordBatch>,
    /// Rows whose key columns go into equality-delete files.
    pub deletes: Option<RecordBatch>,
    /// Deletes in an append-only table (no primary key), which cannot be applied.
    pub ignored_deletes: usize,
}

struct KeyState {
    last_row: u32,
    last_op: ChangeOp,
}

/// `rows` holds the window's changes in event order, in the table's schema; `ops` the op of
/// each row; `key_columns` the indices of the primary-key columns (empty: append-only).
/// `table_is_empty`: the table has no rows, so no key needs a delete entry.
pub fn merge(
    rows: &RecordBatch,
    ops: &[ChangeOp],
    key_columns: &[usize],
    table_is_empty: bool,
) -> Result<Merged, String> {
    debug_assert_eq!(rows.num_rows(), ops.len());
    if key_columns.is_empty() {
        let keep: Vec<u32> = (0..ops.len() as u32)
            .filter(|i| ops[*i as usize] != ChangeOp::Delete)
            .collect();
        return Ok(Merged {
            upserts: take(rows, keep)?,
            deletes: None,
            ignored_deletes: ops.len() - rows_kept(ops),
        });
    }

    let fields = key_columns
        .iter()
        .map(|i| SortField::new(rows.column(*i).data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(|e| format!("primary key: {e}"))?;
    let key_arrays: Vec<_> = key_columns
        .iter()
        .map(|i| rows.column(*i).clone())
        .collect();
    for (i, array) in key_columns.iter().zip(&key_arrays) {
        if array.null_count() > 0 {
            return Err(format!(
                "primary key column {} is null in {} change(s)",
                rows.schema().field(*i).name(),
                array.null_count()
            ));
        }
    }
    let keys = converter
        .convert_columns(&key_arrays)
        .map_err(|e| format!("primary key: {e}"))?;

    // Keys in order of first appearance, so output order is deterministic.
    let mut order: Vec<arrow::row::Row<'_>> = Vec::new();
    let mut state: HashMap<arrow::row::Row<'_>, KeyState> = HashMap::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let key = keys.row(i);
        match state.get_mut(&key) {
            Some(s) => {
                s.last_row = i as u32;
                s.last_op = *op;
            }
            None => {
                order.push(key);
                state.insert(
                    key,
                    KeyState {
                        last_row: i as u32,
                        last_op: *op,
                    },
                );
            }
        }
    }

    let mut upsert_rows = Vec::new();
    let mut delete_rows = Vec::new();
    for key in &order {
        let s = &state[key];
        if !table_is_empty {
            delete_rows.push(s.last_row);
        }
        if s.last_op != ChangeOp::Delete {
            upsert_rows.push(s.last_row);
        }
    }
    Ok(Merged {
        upserts: take(rows, upsert_rows)?,
        deletes: take(rows, delete_rows)?,
        ignored_deletes: 0,
    })
}

fn rows_kept(ops: &[ChangeOp]) -> usize {
    ops.iter().filter(|op| **op != ChangeOp::Delete).count()
}

fn take(rows: &RecordBatch, indices: Vec<u32>) -> Result<Option<RecordBatch>, String> {
    if indices.is_empty() {
        return Ok(None);
    }
    take_record_batch(rows, &UInt32Array::from(indices))
        .map(Some)
        .map_err(|e| format!("select rows: {e}"))
}

/// Reads an op column (`c`, `u`, `d`, `r`).
pub fn parse_ops(column: &dyn Array) -> Result<Vec<ChangeOp>, String> {
    let ops = column
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| format!("the op column must be utf8, not {}", column.data_type()))?;
    ops.iter()
        .enumerate()
        .map(|(i, op)| match op.and_then(ChangeOp::parse) {
            Some(op) => Ok(op),
            None => Err(format!("row {i}: op {op:?} is not one of c, u, d, r")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    fn ids(b: &Option<RecordBatch>) -> Vec<i64> {
        b.as_ref().map_or(vec![], |b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
    }

    fn names(b: &Option<RecordBatch>) -> Vec<String> {
        b.as_ref().map_or(vec![], |b| {
            b.column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect()
        })
    }

    use ChangeOp::*;

    #[test]
    fn last_change_per_key_wins_and_every_touched_key_is_deleted_first() {
        let rows = batch(
            &[1, 2, 1, 3, 2, 4, 4],
            &["a", "b", "a2", "c", "b2", "d", "d2"],
        );
        let ops = [Insert, Update, Update, Read, Delete, Insert, Delete];
        let m = merge(&rows, &ops, &[0], false).unwrap();
        // 1: inserted then updated -> new row, with a delete (the insert may be a re-send of a
        // key the table holds). 2: updated then deleted -> delete only. 3: snapshot read ->
        // upsert with delete. 4: inserted and deleted -> delete only (a re-sent insert's row
        // must still go).
        assert_eq!(ids(&m.upserts), vec![1, 3]);
        assert_eq!(names(&m.upserts), vec!["a2", "c"]);
        assert_eq!(ids(&m.deletes), vec![1, 2, 3, 4]);
    }

    #[test]
    fn an_empty_table_needs_no_deletes() {
        let rows = batch(&[1, 2, 2], &["a", "b", "b2"]);
        let m = merge(&rows, &[Read, Read, Update], &[0], true).unwrap();
        assert_eq!(ids(&m.upserts), vec![1, 2]);
        assert_eq!(names(&m.upserts), vec!["a", "b2"]);
        assert!(m.deletes.is_none());
    }

    #[test]
    fn append_only_tables_keep_every_row_and_count_deletes() {
        let rows = batch(&[1, 1, 2], &["a", "a", "b"]);
        let m = merge(&rows, &[Insert, Delete, Insert], &[], false).unwrap();
        assert_eq!(ids(&m.upserts), vec![1, 2]);
        assert_eq!(m.ignored_deletes, 1);
    }

    #[test]
    fn null_keys_and_bad_ops_are_refused() {
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        let err = merge(&rows, &[Insert, Insert], &[0], false).unwrap_err();
        assert_eq!(err, "primary key column id is null in 1 change(s)");
        let err = parse_ops(&StringArray::from(vec!["c", "x"])).unwrap_err();
        assert_eq!(err, "row 1: op Some(\"x\") is not one of c, u, d, r");
    }
}
