//! Columns Floe adds to a table on request: `__floe_deleted` for soft deletes, and the
//! metadata columns `__floe_op`, `__floe_source_ts` and `__floe_updated_at`.
//!
//! With soft deletes a delete becomes a new image of the row, marked deleted, that keeps the
//! row's last values. The buffer completes a delete from the key's earlier image in its window;
//! a delete that still carries only its key (Debezium sends only the key unless the source
//! table has REPLICA IDENTITY FULL) takes its values, like unchanged TOASTed cells, from the
//! previous image in the commit window or from the table's current row. Inserts are no longer known
//! to be new either: the table may hold a soft-deleted row of the key, which a re-insert
//! must replace.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::merge::ChangeOp;
use crate::config::MetadataColumn;
use crate::decode::arrow::{OP_COLUMN, SOURCE_TS_COLUMN};

pub const DELETED_COLUMN: &str = "__floe_deleted";
pub const OP_META_COLUMN: &str = "__floe_op";
pub const SOURCE_TS_META_COLUMN: &str = "__floe_source_ts";
pub const UPDATED_AT_COLUMN: &str = "__floe_updated_at";

/// What a table asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub soft_delete: bool,
    pub metadata_columns: Vec<MetadataColumn>,
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        !self.soft_delete && self.metadata_columns.is_empty()
    }

    /// The added columns, in the order they are appended to the table.
    pub fn fields(&self) -> Vec<Field> {
        let mut fields = Vec::new();
        if self.soft_delete {
            fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, true));
        }
        for column in &self.metadata_columns {
            fields.push(match column {
                MetadataColumn::Op => Field::new(OP_META_COLUMN, DataType::Utf8, true),
                MetadataColumn::SourceTs => Field::new(SOURCE_TS_META_COLUMN, timestamp(), true),
                MetadataColumn::UpdatedAt => Field::new(UPDATED_AT_COLUMN, timestamp(), true),
            });
        }
        fields
    }

    /// Appends the added columns to `data` (the data columns of `changes`, a change batch with
    /// Floe's internal columns). With soft deletes, rewrites `ops` (deletes and inserts become
    /// updates) and marks the cells a delete does not carry as unchanged in `unchanged`.
    /// `key` names the primary-key columns; `committed_at` is the commit's time (µs).
    pub fn apply(
        &self,
        changes: &RecordBatch,
        data: RecordBatch,
        ops: &mut [ChangeOp],
        unchanged: &mut [Vec<String>],
        key: &[String],
        committed_at: i64,
    ) -> Result<RecordBatch, String> {
        if self.is_empty() {
            return Ok(data);
        }
        let rows = data.num_rows();
        let mut fields: Vec<Field> = data
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns: Vec<ArrayRef> = data.columns().to_vec();
        let mut added = self.fields().into_iter();
        if self.soft_delete {
            let deleted: BooleanArray =
                ops.iter().map(|op| Some(*op == ChangeOp::Delete)).collect();
            let schema = data.schema();
            let values: Vec<(usize, &String)> = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !key.contains(f.name()))
                .map(|(i, f)| (i, f.name()))
                .collect();
            for (row, op) in ops.iter_mut().enumerate() {
                // A delete with nothing but its key: its values come from the table. A delete
                // with any value is a whole image (REPLICA IDENTITY FULL, or completed from
                // earlier in the window) and its nulls are real.
                if *op == ChangeOp::Delete
                    && !values.is_empty()
                    && values.iter().all(|(i, _)| data.column(*i).is_null(row))
                {
                    unchanged[row].extend(values.iter().map(|(_, name)| (*name).clone()));
                }
                if matches!(*op, ChangeOp::Delete | ChangeOp::Insert) {
                    *op = ChangeOp::Update;
                }
            }
            fields.push(added.next().expect("the deleted field"));
            columns.push(Arc::new(deleted));
        }
        for column in &self.metadata_columns {
            let array: ArrayRef = match column {
                MetadataColumn::Op => {
                    let op = changes
                        .column_by_name(OP_COLUMN)
                        .ok_or_else(|| format!("a change batch has no {OP_COLUMN} column"))?;
                    if op.as_any().downcast_ref::<StringArray>().is_none() {
                        return Err(format!("{OP_COLUMN} must be utf8"));
                    }
                    op.clone()
                }
                MetadataColumn::SourceTs => {
                    let ms = changes
                        .column_by_name(SOURCE_TS_COLUMN)
                        .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
                    let micros: TimestampMicrosecondArray = (0..rows)
                        .map(|i| ms.filter(|ms| ms.is_valid(i)).map(|ms| ms.value(i) * 1000))
                        .collect();
                    Arc::new(micros.with_timezone("UTC"))
                }
                MetadataColumn::UpdatedAt => Arc::new(
                    TimestampMicrosecondArray::from(vec![committed_at; rows]).with_timezone("UTC"),
                ),
            };
            fields.push(added.next().expect("one field per metadata column"));
            columns.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
    }
}
