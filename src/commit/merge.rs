//! Merges a commit window's changes into what the snapshot writes: per primary key the last
//! change wins; new row images become data rows and touched keys are removed first (the
//! commit turns them into position deletes from the key index, or equality deletes without
//! it).
//!
//! It never reads the table: whether a key exists there is unknown, so every touched key gets
//! a delete entry unless the table holds no rows at all. An insert is no proof that a key is
//! new: Debezium is at-least-once and re-sends inserts (and snapshot reads) after its own
//! restarts, so an insert without its delete would become a second row for the key.

use std::hash::Hash;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::DataType;

use super::FastHashMap as HashMap;
use super::keys::{KeyForm, Keys};

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
    /// Rows for data files (the table's columns), in window order of each key's last image.
    /// Batches of the window that are kept whole are passed on as they are, not copied.
    pub upserts: Vec<RecordBatch>,
    /// The key columns (in `key_columns` order) of every key that needs a delete, in window
    /// order of the key's last change.
    pub deleted_keys: Vec<ArrayRef>,
    /// Those keys' whole rows, when asked for (equality-delete files are written from them).
    pub deletes: Option<RecordBatch>,
    /// Deletes in an append-only table (no primary key), which cannot be applied.
    pub ignored_deletes: usize,
}

impl Merged {
    pub fn upserted_rows(&self) -> usize {
        self.upserts.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Which rows of a window a commit writes, and which keys it removes.
#[derive(Debug)]
pub struct Selection {
    /// Per batch, the rows to write, ascending.
    pub kept: Vec<Vec<u32>>,
    /// (batch, row) of each key that needs a delete, in window order of the key's last change.
    pub deleted: Vec<(usize, usize)>,
    /// Deletes in an append-only table (no primary key), which cannot be applied.
    pub ignored_deletes: usize,
}

/// Picks each key's last change from `rows` (the window's batches in event order, holding at
/// least the `key_columns`; any other columns are not read) and `ops` (the op of each row
/// across them). `key_columns` empty: append-only, every row but a delete is kept.
/// `table_is_empty`: the table has no rows, so no key needs a delete.
pub fn select(
    rows: &[RecordBatch],
    ops: &[ChangeOp],
    key_columns: &[usize],
    table_is_empty: bool,
) -> Result<Selection, String> {
    let changes: usize = rows.iter().map(RecordBatch::num_rows).sum();
    if changes != ops.len() {
        return Err(format!("{changes} changes but {} ops", ops.len()));
    }
    let mut selection = Selection {
        kept: Vec::with_capacity(rows.len()),
        deleted: Vec::new(),
        ignored_deletes: 0,
    };
    if key_columns.is_empty() {
        let mut start = 0;
        for batch in rows {
            let batch_ops = &ops[start..start + batch.num_rows()];
            start += batch.num_rows();
            let keep: Vec<u32> = (0..batch_ops.len() as u32)
                .filter(|i| batch_ops[*i as usize] != ChangeOp::Delete)
                .collect();
            selection.ignored_deletes += batch_ops.len() - keep.len();
            selection.kept.push(keep);
        }
        return Ok(selection);
    }
    let Some(first) = rows.first() else {
        return Ok(selection);
    };
    if u32::try_from(ops.len()).is_err() {
        return Err(format!(
            "a commit window of {} changes: at most 2^32",
            ops.len()
        ));
    }
    let schema = first.schema();
    for i in key_columns {
        let nulls: usize = rows.iter().map(|b| b.column(*i).null_count()).sum();
        if nulls > 0 {
            return Err(format!(
                "primary key column {} is null in {nulls} change(s)",
                schema.field(*i).name(),
            ));
        }
    }
    // Every batch's key columns must have the first batch's types: a cast could read one
    // form's keys as the other's (text as integers gives nulls).
    for batch in &rows[1..] {
        for i in key_columns {
            let (here, first) = (batch.schema_ref().field(*i), schema.field(*i));
            if here.data_type() != first.data_type() {
                return Err(format!(
                    "primary key column {} is {} in one batch of the window and {} in the first",
                    first.name(),
                    here.data_type(),
                    first.data_type()
                ));
            }
        }
    }
    let types: Vec<DataType> = key_columns
        .iter()
        .map(|i| schema.field(*i).data_type().clone())
        .collect();
    let form = KeyForm::new(&types)?;
    let keys = rows
        .iter()
        .map(|b| {
            let columns: Vec<ArrayRef> = key_columns.iter().map(|i| b.column(*i).clone()).collect();
            form.keys(&columns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let last = if form.is_long() {
        last_changes(
            keys.iter().flat_map(|k| k.longs().iter().copied()),
            ops.len(),
        )
    } else {
        last_changes(keys.iter().flat_map(Keys::bytes), ops.len())
    };

    selection.kept = vec![Vec::new(); rows.len()];
    let mut batch = 0;
    let mut batch_start = 0;
    for at in last {
        let at = at as usize;
        while at >= batch_start + rows[batch].num_rows() {
            batch_start += rows[batch].num_rows();
            batch += 1;
        }
        let row = at - batch_start;
        if !table_is_empty {
            selection.deleted.push((batch, row));
        }
        if ops[at] != ChangeOp::Delete {
            selection.kept[batch].push(row as u32);
        }
    }
    Ok(selection)
}

/// Where each key of `keys` (the window's keys in event order, `rows` of them) changed last,
/// as places in the window, ascending. One slot a key: the key and a `u32`.
fn last_changes<K: Hash + Eq>(keys: impl Iterator<Item = K>, rows: usize) -> Vec<u32> {
    let mut last: HashMap<K, u32> = HashMap::with_capacity_and_hasher(rows, Default::default());
    for (at, key) in keys.enumerate() {
        last.insert(key, at as u32);
    }
    let mut last: Vec<u32> = last.into_values().collect();
    last.sort_unstable();
    last
}

/// The key columns of the selected deletes, from the window's batches.
pub fn deleted_keys(
    rows: &[RecordBatch],
    key_columns: &[usize],
    deleted: &[(usize, usize)],
) -> Result<Vec<ArrayRef>, String> {
    if deleted.is_empty() {
        return Ok(Vec::new());
    }
    key_columns
        .iter()
        .map(|i| {
            let arrays: Vec<&dyn Array> = rows.iter().map(|b| b.column(*i).as_ref()).collect();
            arrow::compute::interleave(&arrays, deleted).map_err(|e| format!("select rows: {e}"))
        })
        .collect()
}

/// `rows` holds the window's changes in event order, in the table's schema, as batches; `ops`
/// the op of each row across them; `key_columns` the indices of the primary-key columns
/// (empty: append-only). `table_is_empty`: the table has no rows, so no key needs a delete
/// entry. `whole_deletes`: also return the deleted keys' whole rows.
///
/// Each input batch is dropped as soon as its rows moved on, so the window is held about once,
/// plus the keys.
pub fn merge(
    rows: Vec<RecordBatch>,
    ops: &[ChangeOp],
    key_columns: &[usize],
    table_is_empty: bool,
    whole_deletes: bool,
) -> Result<Merged, String> {
    let Selection {
        kept,
        deleted,
        ignored_deletes,
    } = select(&rows, ops, key_columns, table_is_empty)?;
    let mut merged = Merged {
        upserts: Vec::new(),
        deleted_keys: Vec::new(),
        deletes: None,
        ignored_deletes,
    };
    if whole_deletes && !deleted.is_empty() {
        let all: Vec<&RecordBatch> = rows.iter().collect();
        let deletes = arrow::compute::interleave_record_batch(&all, &deleted)
            .map_err(|e| format!("select rows: {e}"))?;
        merged.deleted_keys = key_columns
            .iter()
            .map(|i| deletes.column(*i).clone())
            .collect();
        merged.deletes = Some(deletes);
    } else {
        merged.deleted_keys = deleted_keys(&rows, key_columns, &deleted)?;
    }
    for (batch, keep) in rows.into_iter().zip(kept) {
        merged.upserts.extend(keep_rows(batch, keep)?);
    }
    Ok(merged)
}

/// The rows of `batch` at `indices` (ascending): the batch itself when that is all of them.
pub fn keep_rows(batch: RecordBatch, indices: Vec<u32>) -> Result<Option<RecordBatch>, String> {
    if indices.is_empty() {
        return Ok(None);
    }
    if indices.len() == batch.num_rows() {
        return Ok(Some(batch));
    }
    take_record_batch(&batch, &UInt32Array::from(indices))
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

    use arrow::array::{AsArray, Int64Array, StringArray};
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

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn names(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .iter()
                    .map(|s| s.unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn key_ids(m: &Merged) -> Vec<i64> {
        m.deleted_keys.first().map_or(vec![], |k| {
            k.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
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
        let m = merge(vec![rows], &ops, &[0], false, true).unwrap();
        // 1: inserted then updated -> new row, with a delete (the insert may be a re-send of a
        // key the table holds). 2: updated then deleted -> delete only. 3: snapshot read ->
        // upsert with delete. 4: inserted and deleted -> delete only (a re-sent insert's row
        // must still go).
        assert_eq!(ids(&m.upserts), vec![1, 3]);
        assert_eq!(names(&m.upserts), vec!["a2", "c"]);
        // Deleted in window order of each key's last change.
        assert_eq!(key_ids(&m), vec![1, 3, 2, 4]);
        let deletes = m.deletes.unwrap();
        assert_eq!(ids(std::slice::from_ref(&deletes)), vec![1, 3, 2, 4]);
        // The last image of each key.
        assert_eq!(names(&[deletes]), vec!["a2", "c", "b2", "d2"]);
    }

    #[test]
    fn a_window_of_many_batches_merges_as_one_and_whole_batches_are_not_copied() {
        let ops = [Insert, Insert, Update, Insert, Delete, Insert, Update];
        let one = batch(
            &[1, 2, 1, 3, 2, 4, 4],
            &["a", "b", "a2", "c", "b2", "d", "d2"],
        );
        let whole = merge(vec![one], &ops, &[0], false, false).unwrap();
        let parts = vec![
            batch(&[1, 2], &["a", "b"]),
            batch(&[1, 3, 2], &["a2", "c", "b2"]),
            batch(&[5, 6], &["e", "f"]),
            batch(&[4, 4], &["d", "d2"]),
        ];
        let untouched = parts[2].column(1).clone();
        let ops = [
            Insert, Insert, Update, Insert, Delete, Insert, Insert, Insert, Update,
        ];
        let split = merge(parts, &ops, &[0], false, false).unwrap();
        assert_eq!(ids(&split.upserts), vec![1, 3, 5, 6, 4]);
        assert_eq!(names(&split.upserts), vec!["a2", "c", "e", "f", "d2"]);
        assert_eq!(key_ids(&split), vec![1, 3, 2, 5, 6, 4]);
        assert!(split.deletes.is_none(), "only the keys were asked for");
        // Batch 3 is kept whole: the same arrays, not a copy.
        assert!(
            split
                .upserts
                .iter()
                .any(|b| Arc::ptr_eq(b.column(1), &untouched))
        );
        // The same changes, without keys 5 and 6, in one batch: the same rows.
        assert_eq!(names(&whole.upserts), vec!["a2", "c", "d2"]);
        assert_eq!(split.upserted_rows(), 5);
    }

    #[test]
    fn an_empty_table_needs_no_deletes() {
        let rows = batch(&[1, 2, 2], &["a", "b", "b2"]);
        let m = merge(vec![rows], &[Read, Read, Update], &[0], true, true).unwrap();
        assert_eq!(ids(&m.upserts), vec![1, 2]);
        assert_eq!(names(&m.upserts), vec!["a", "b2"]);
        assert!(m.deletes.is_none());
        assert!(m.deleted_keys.is_empty());
    }

    #[test]
    fn append_only_tables_keep_every_row_and_count_deletes() {
        let rows = batch(&[1, 1, 2], &["a", "a", "b"]);
        let m = merge(vec![rows], &[Insert, Delete, Insert], &[], false, true).unwrap();
        assert_eq!(ids(&m.upserts), vec![1, 2]);
        assert_eq!(m.ignored_deletes, 1);
    }

    proptest::proptest! {
        /// The streamed commit picks rows from the key columns alone and takes them from the
        /// batches afterwards; the merge of whole batches does it at once. Both must give a
        /// model's rows and deleted keys, however the window is cut into batches.
        #[test]
        fn selecting_on_the_keys_alone_picks_what_the_merge_picks(
            changes in proptest::collection::vec((0i64..12, 0u8..4), 0..60),
            cuts in proptest::collection::vec(0usize..60, 0..4),
            table_is_empty: bool,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c < changes.len()).collect();
            cuts.push(changes.len());
            cuts.sort_unstable();
            let mut batches = Vec::new();
            let mut start = 0;
            for end in cuts {
                let part = &changes[start..end];
                let ids: Vec<i64> = part.iter().map(|c| c.0).collect();
                let names: Vec<String> = (start..end).map(|i| format!("v{i}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                batches.push(batch(&ids, &names));
                start = end;
            }
            let ops: Vec<ChangeOp> = changes
                .iter()
                .map(|c| [Insert, Update, Delete, Read][c.1 as usize])
                .collect();
            let merged = merge(batches.clone(), &ops, &[0], table_is_empty, false).unwrap();

            let keys: Vec<RecordBatch> = batches.iter().map(|b| b.project(&[0]).unwrap()).collect();
            let selection = select(&keys, &ops, &[0], table_is_empty).unwrap();
            // The same keys as text take the other way (Arrow's row format): the same pick.
            let text_keys: Vec<RecordBatch> = keys
                .iter()
                .map(|b| {
                    let ids = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                    let text: StringArray = ids.iter().map(|id| id.map(|id| format!("k{id}"))).collect();
                    RecordBatch::try_from_iter([("key", Arc::new(text) as ArrayRef)]).unwrap()
                })
                .collect();
            let by_text = select(&text_keys, &ops, &[0], table_is_empty).unwrap();
            proptest::prop_assert_eq!(&by_text.kept, &selection.kept);
            proptest::prop_assert_eq!(&by_text.deleted, &selection.deleted);
            let removed = deleted_keys(&keys, &[0], &selection.deleted).unwrap();
            let upserts: Vec<RecordBatch> = batches
                .into_iter()
                .zip(selection.kept)
                .filter_map(|(b, keep)| keep_rows(b, keep).unwrap())
                .collect();
            // The model: each key's last change; its row when that is not a delete, in event
            // order; every key deleted first, in order of its last change, unless the table
            // is empty.
            let mut last = std::collections::BTreeMap::new();
            for (i, (id, _)) in changes.iter().enumerate() {
                last.insert(*id, i);
            }
            let mut last_changes: Vec<usize> = last.values().copied().collect();
            last_changes.sort_unstable();
            let by_last_change: Vec<i64> = last_changes.iter().map(|i| changes[*i].0).collect();
            let mut winners: Vec<usize> = last
                .values()
                .copied()
                .filter(|i| ops[*i] != Delete)
                .collect();
            winners.sort_unstable();
            let want: Vec<String> = winners.iter().map(|i| format!("v{i}")).collect();
            let want_removed = if table_is_empty { Vec::new() } else { by_last_change };
            let removed_ids: Vec<i64> = removed
                .first()
                .map(|a| a.as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
                .unwrap_or_default();
            proptest::prop_assert_eq!(names(&upserts), want.clone());
            proptest::prop_assert_eq!(names(&merged.upserts), want);
            proptest::prop_assert_eq!(removed_ids, want_removed.clone());
            proptest::prop_assert_eq!(key_ids(&merged), want_removed);
        }
    }

    #[test]
    fn null_keys_and_bad_ops_are_refused() {
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        let err = merge(vec![rows], &[Insert, Insert], &[0], false, true).unwrap_err();
        assert_eq!(err, "primary key column id is null in 1 change(s)");
        let err = parse_ops(&StringArray::from(vec!["c", "x"])).unwrap_err();
        assert_eq!(err, "row 1: op Some(\"x\") is not one of c, u, d, r");
        // Ops that do not match the rows, and a key column whose type changes within the
        // window, are refused, not read wrongly.
        let err = merge(
            vec![batch(&[1, 2], &["a", "b"])],
            &[Insert],
            &[0],
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(err, "2 changes but 1 ops");
        let text = RecordBatch::try_from_iter([(
            "id",
            Arc::new(StringArray::from(vec!["3"])) as ArrayRef,
        )])
        .unwrap();
        let keys = [batch(&[1], &["a"]).project(&[0]).unwrap(), text];
        let err = select(&keys, &[Insert, Insert], &[0], false).unwrap_err();
        assert_eq!(
            err,
            "primary key column id is Utf8 in one batch of the window and Int64 in the first"
        );
    }
}
