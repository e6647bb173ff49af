//! Kafka positions in change batches: the engine's exactly-once filter.
//!
//! Change batches may carry each row's Kafka position (`_floe_topic`, `_floe_partition`,
//! `_floe_offset`, as the decoder and the staged deltas lay them out). Rows at a position the
//! table already holds (below its committed next offset for that partition) were applied by an
//! earlier commit and are dropped, so re-reading after a crash or a rebalance never applies a
//! change twice. These and Floe's other internal columns never reach the table.

use arrow::array::{Array, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;

use super::offsets::CommittedOffsets;
use crate::decode::arrow::{
    OFFSET_COLUMN, OP_COLUMN, PARTITION_COLUMN, SOURCE_TS_COLUMN, TOPIC_COLUMN, UNCHANGED_COLUMN,
};

/// Columns that describe a change rather than the row.
pub fn is_internal_column(name: &str) -> bool {
    [
        OP_COLUMN,
        UNCHANGED_COLUMN,
        TOPIC_COLUMN,
        PARTITION_COLUMN,
        OFFSET_COLUMN,
        SOURCE_TS_COLUMN,
    ]
    .contains(&name)
}

/// The batch without the rows `held` already covers, and how many were dropped. A batch
/// without position columns is returned as it is.
pub fn drop_applied(
    batch: &RecordBatch,
    held: &CommittedOffsets,
) -> Result<(RecordBatch, usize), String> {
    let schema = batch.schema();
    let (Ok(t), Ok(p), Ok(o)) = (
        schema.index_of(TOPIC_COLUMN),
        schema.index_of(PARTITION_COLUMN),
        schema.index_of(OFFSET_COLUMN),
    ) else {
        return Ok((batch.clone(), 0));
    };
    if held.is_empty() {
        return Ok((batch.clone(), 0));
    }
    let column = |i: usize, what: &str| {
        let c = batch.column(i);
        if c.null_count() > 0 {
            Err(format!("{what} has nulls"))
        } else {
            Ok(c)
        }
    };
    let topics = column(t, TOPIC_COLUMN)?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| format!("{TOPIC_COLUMN} must be utf8"))?;
    let partitions = column(p, PARTITION_COLUMN)?
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| format!("{PARTITION_COLUMN} must be int32"))?;
    let offsets = column(o, OFFSET_COLUMN)?
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| format!("{OFFSET_COLUMN} must be int64"))?;
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let next = held.get(topics.value(i), partitions.value(i));
            Some(next.is_none_or(|next| offsets.value(i) >= next))
        })
        .collect();
    let dropped = keep.false_count();
    if dropped == 0 {
        return Ok((batch.clone(), 0));
    }
    let filtered = filter_record_batch(batch, &keep).map_err(|e| e.to_string())?;
    Ok((filtered, dropped))
}

/// The batch's row columns, in order, without Floe's internal columns.
pub fn data_columns(batch: &RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !is_internal_column(schema.field(*i).name()))
        .collect();
    batch
        .project(&keep)
        .expect("projection indices come from the batch's own schema")
}

/// A partition of `ours` whose committed offset changed between `before` and `now`: another
/// writer committed it meanwhile (a zombie, or a rebalance we did not see yet).
pub fn moved(
    before: &CommittedOffsets,
    now: &CommittedOffsets,
    ours: &CommittedOffsets,
) -> Option<(String, i32)> {
    for (topic, partitions) in &ours.0 {
        for partition in partitions.keys() {
            if before.get(topic, *partition) != now.get(topic, *partition) {
                return Some((topic.clone(), *partition));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new(OP_COLUMN, DataType::Utf8, false),
                Field::new(TOPIC_COLUMN, DataType::Utf8, false),
                Field::new(PARTITION_COLUMN, DataType::Int32, false),
                Field::new(OFFSET_COLUMN, DataType::Int64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec!["c", "c", "c", "c"])),
                Arc::new(StringArray::from(vec!["t", "t", "t", "u"])),
                Arc::new(Int32Array::from(vec![0, 0, 1, 0])),
                Arc::new(Int64Array::from(vec![5, 6, 2, 0])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_below_the_held_offsets_are_dropped() {
        let mut held = CommittedOffsets::default();
        held.advance("t", 0, 6);
        held.advance("t", 1, 2);
        let (kept, dropped) = drop_applied(&batch(), &held).unwrap();
        assert_eq!(dropped, 1);
        let ids = kept
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec();
        // t/0@5 is held; t/0@6 and t/1@2 are the next to apply; topic u is not held at all.
        assert_eq!(ids, vec![2, 3, 4]);
        let data = data_columns(&kept);
        assert_eq!(data.num_columns(), 1);
        assert_eq!(data.schema().field(0).name(), "id");
    }

    #[test]
    fn a_partition_moved_by_another_writer_is_found() {
        let mut before = CommittedOffsets::default();
        before.advance("t", 0, 6);
        let mut now = before.clone();
        let mut ours = CommittedOffsets::default();
        ours.advance("t", 0, 9);
        assert_eq!(moved(&before, &now, &ours), None);
        now.advance("t", 1, 4);
        assert_eq!(moved(&before, &now, &ours), None, "not our partition");
        now.advance("t", 0, 8);
        assert_eq!(moved(&before, &now, &ours), Some(("t".into(), 0)));
    }
}
