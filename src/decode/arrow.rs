//! Changes into Arrow `RecordBatch`es for the commit engine: one batch per table and schema,
//! the table's columns with Iceberg field ids (Arrow field metadata `PARQUET:field_id`, as
//! `iceberg::arrow::schema_to_arrow_schema` makes them) followed by Floe's change columns:
//!
//! | column | type | what |
//! |---|---|---|
//! | `_floe_op` | utf8, required | c, u, d or r |
//! | `_floe_unchanged` | list<int>, optional | field ids of columns whose value the source did not send (TOAST); their data column is null |
//! | `_floe_topic`, `_floe_partition`, `_floe_offset` | utf8, int, long, required | the Kafka position |
//! | `_floe_source_ts_ms` | long, optional | when the source committed the change |
//!
//! A row holds the after image for c/u/r and the before image (or just the key) for d.
//! Truncates are not rows: [`to_batches`] ends the table's batch and emits a
//! [`BatchPart::Truncate`]. This module never decides what a change does to a table.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, LargeBinaryBuilder, ListArray, MapArray, RecordBatch,
    StringBuilder, StructArray, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

use super::logical::Datum;
use super::schema::TableSchema;
use super::{Change, KafkaPosition, Op};
use crate::config::TableName;

pub const OP_COLUMN: &str = "_floe_op";
pub const UNCHANGED_COLUMN: &str = "_floe_unchanged";
pub const TOPIC_COLUMN: &str = "_floe_topic";
pub const PARTITION_COLUMN: &str = "_floe_partition";
pub const OFFSET_COLUMN: &str = "_floe_offset";
pub const SOURCE_TS_COLUMN: &str = "_floe_source_ts_ms";

/// Field ids of the change columns. Iceberg's own metadata columns live just below
/// `i32::MAX` (`_file` = 2147483646 ...); these sit well below those and far above any id a
/// table assigns, and never reach a table schema.
pub const OP_FIELD_ID: i32 = 2_147_482_000;
pub const UNCHANGED_FIELD_ID: i32 = 2_147_482_001;
pub const UNCHANGED_ELEMENT_FIELD_ID: i32 = 2_147_482_002;
pub const TOPIC_FIELD_ID: i32 = 2_147_482_003;
pub const PARTITION_FIELD_ID: i32 = 2_147_482_004;
pub const OFFSET_FIELD_ID: i32 = 2_147_482_005;
pub const SOURCE_TS_FIELD_ID: i32 = 2_147_482_006;

/// The rows of one table with one schema.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    pub table: TableName,
    pub schema: Arc<TableSchema>,
    pub batch: RecordBatch,
}

/// A piece of a stream of changes, in order per table.
#[derive(Debug, Clone)]
pub enum BatchPart {
    Rows(ChangeBatch),
    /// Everything before this in the table's stream is gone; rows after it stay.
    Truncate {
        table: TableName,
        position: KafkaPosition,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("table {table}: cannot build an Arrow batch: {message}")]
pub struct BatchError {
    pub table: String,
    pub message: String,
}

/// The Arrow schema of [`ChangeBatch::batch`] for `schema`: the Iceberg columns exactly as
/// `iceberg::arrow::schema_to_arrow_schema` renders them, then the change columns.
pub fn arrow_schema(schema: &TableSchema) -> Result<SchemaRef, String> {
    if let Some(s) = schema.arrow.get() {
        return Ok(s.clone());
    }
    let iceberg = schema.to_iceberg_schema().map_err(|e| e.to_string())?;
    let data = iceberg::arrow::schema_to_arrow_schema(&iceberg).map_err(|e| e.to_string())?;
    let with_id = |f: ArrowField, id: i32| {
        f.with_metadata(HashMap::from([(
            PARQUET_FIELD_ID_META_KEY.to_string(),
            id.to_string(),
        )]))
    };
    let mut fields: Vec<ArrowField> = data.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend([
        with_id(
            ArrowField::new(OP_COLUMN, DataType::Utf8, false),
            OP_FIELD_ID,
        ),
        with_id(
            ArrowField::new(
                UNCHANGED_COLUMN,
                DataType::List(Arc::new(with_id(
                    ArrowField::new("element", DataType::Int32, false),
                    UNCHANGED_ELEMENT_FIELD_ID,
                ))),
                true,
            ),
            UNCHANGED_FIELD_ID,
        ),
        with_id(
            ArrowField::new(TOPIC_COLUMN, DataType::Utf8, false),
            TOPIC_FIELD_ID,
        ),
        with_id(
            ArrowField::new(PARTITION_COLUMN, DataType::Int32, false),
            PARTITION_FIELD_ID,
        ),
        with_id(
            ArrowField::new(OFFSET_COLUMN, DataType::Int64, false),
            OFFSET_FIELD_ID,
        ),
        with_id(
            ArrowField::new(SOURCE_TS_COLUMN, DataType::Int64, true),
            SOURCE_TS_FIELD_ID,
        ),
    ]);
    let arrow = Arc::new(ArrowSchema::new(fields));
    let _ = schema.arrow.set(arrow.clone());
    Ok(arrow)
}

/// Splits a stream of changes into batches: per table, in order, a new batch whenever the
/// table's schema changes, and a [`BatchPart::Truncate`] where the table was truncated.
pub fn to_batches(changes: &[Change]) -> Result<Vec<BatchPart>, BatchError> {
    let mut open: Vec<(&TableName, &Arc<TableSchema>, Vec<&Change>)> = Vec::new();
    let mut out = Vec::new();
    let close = |run: (&TableName, &Arc<TableSchema>, Vec<&Change>),
                 out: &mut Vec<BatchPart>|
     -> Result<(), BatchError> {
        let (table, schema, rows) = run;
        out.push(BatchPart::Rows(ChangeBatch {
            table: table.clone(),
            schema: schema.clone(),
            batch: build_batch(table, schema, &rows)?,
        }));
        Ok(())
    };
    for change in changes {
        let at = open.iter().position(|(t, _, _)| **t == change.table);
        if change.op == Op::Truncate {
            if let Some(i) = at {
                close(open.remove(i), &mut out)?;
            }
            out.push(BatchPart::Truncate {
                table: change.table.clone(),
                position: change.position.clone(),
            });
            continue;
        }
        match at {
            Some(i) if same_schema(open[i].1, &change.schema) => open[i].2.push(change),
            Some(i) => {
                close(open.remove(i), &mut out)?;
                open.push((&change.table, &change.schema, vec![change]));
            }
            None => open.push((&change.table, &change.schema, vec![change])),
        }
    }
    for run in open {
        close(run, &mut out)?;
    }
    Ok(out)
}

fn same_schema(a: &Arc<TableSchema>, b: &Arc<TableSchema>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// One batch of rows that all have `schema` (truncates are refused).
pub fn build_batch(
    table: &TableName,
    schema: &TableSchema,
    changes: &[&Change],
) -> Result<RecordBatch, BatchError> {
    let fail = |message: String| BatchError {
        table: table.to_string(),
        message,
    };
    let arrow = arrow_schema(schema).map_err(fail)?;
    let columns = schema.columns();
    let mut images: Vec<Cow<'_, [Datum]>> = Vec::with_capacity(changes.len());
    for c in changes {
        if c.op == Op::Truncate {
            return Err(fail(format!(
                "a truncate ({}@{}) is not a row",
                c.position.topic, c.position.offset
            )));
        }
        if c.schema.columns() != columns {
            return Err(fail(format!(
                "change at {}@{} has another schema",
                c.position.topic, c.position.offset
            )));
        }
        images.push(row_image(c, schema));
    }

    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(arrow.fields().len());
    for (i, field) in arrow.fields().iter().take(columns.len()).enumerate() {
        let values: Vec<&Datum> = images
            .iter()
            .map(|row| row.get(i).unwrap_or(&NULL))
            .collect();
        arrays.push(
            build_array(field, &values)
                .map_err(|e| fail(format!("column {}: {e}", field.name())))?,
        );
    }

    let mut op = StringBuilder::with_capacity(changes.len(), changes.len());
    let unchanged_field = match arrow
        .field_with_name(UNCHANGED_COLUMN)
        .map(|f| f.data_type())
    {
        Ok(DataType::List(element)) => element.clone(),
        _ => return Err(fail("the change columns are missing".into())),
    };
    let mut unchanged_ids = Int32Builder::new();
    let mut unchanged_lengths = Vec::with_capacity(changes.len());
    let mut unchanged_valid = Vec::with_capacity(changes.len());
    let mut topic = StringBuilder::with_capacity(changes.len(), changes.len() * 16);
    let mut partition = Int32Builder::with_capacity(changes.len());
    let mut offset = Int64Builder::with_capacity(changes.len());
    let mut source_ts = Int64Builder::with_capacity(changes.len());
    for (c, row) in changes.iter().zip(&images) {
        op.append_value(c.op.code());
        let mut n = 0;
        for (datum, col) in row.iter().zip(columns) {
            if *datum == Datum::Unchanged {
                unchanged_ids.append_value(col.id);
                n += 1;
            }
        }
        unchanged_lengths.push(n);
        unchanged_valid.push(n > 0);
        topic.append_value(&c.position.topic);
        partition.append_value(c.position.partition);
        offset.append_value(c.position.offset);
        source_ts.append_option(c.source.ts_ms);
    }
    let unchanged = ListArray::try_new(
        unchanged_field,
        OffsetBuffer::from_lengths(unchanged_lengths),
        Arc::new(unchanged_ids.finish()),
        nulls(unchanged_valid),
    )
    .map_err(|e| fail(e.to_string()))?;
    arrays.extend([
        Arc::new(op.finish()) as ArrayRef,
        Arc::new(unchanged),
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(source_ts.finish()),
    ]);
    RecordBatch::try_new(arrow, arrays).map_err(|e| fail(e.to_string()))
}

static NULL: Datum = Datum::Null;

/// The image a change writes: after for c/u/r; for d the before image when it carries the
/// key, else a row of just the key.
fn row_image<'c>(c: &'c Change, schema: &TableSchema) -> Cow<'c, [Datum]> {
    match (c.op, &c.before, &c.after) {
        (Op::Delete, Some(before), _)
            if schema
                .primary_key()
                .iter()
                .zip(&c.key)
                .all(|(&i, k)| before.get(i) == Some(k)) =>
        {
            Cow::Borrowed(before)
        }
        (Op::Delete, _, _) => {
            let mut row = vec![Datum::Null; schema.columns().len()];
            for (&i, k) in schema.primary_key().iter().zip(&c.key) {
                row[i] = k.clone();
            }
            Cow::Owned(row)
        }
        (_, _, Some(after)) => Cow::Borrowed(after),
        _ => Cow::Owned(vec![Datum::Null; schema.columns().len()]),
    }
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

fn wrong(field: &ArrowField, got: &Datum) -> String {
    format!("a {got:?} value in a {} column", field.data_type())
}

macro_rules! primitive {
    ($field:expr, $values:expr, $builder:ty, $variant:ident) => {{
        let mut b = <$builder>::with_capacity($values.len());
        for v in $values {
            match v {
                Datum::$variant(x) => b.append_value(*x),
                Datum::Null | Datum::Unchanged => b.append_null(),
                other => return Err(wrong($field, other)),
            }
        }
        b.finish()
    }};
}

fn build_array(field: &ArrowField, values: &[&Datum]) -> Result<ArrayRef, String> {
    Ok(match field.data_type() {
        DataType::Boolean => Arc::new(primitive!(field, values, BooleanBuilder, Boolean)),
        DataType::Int32 => Arc::new(primitive!(field, values, Int32Builder, Int)),
        DataType::Int64 => Arc::new(primitive!(field, values, Int64Builder, Long)),
        DataType::Float32 => Arc::new(primitive!(field, values, Float32Builder, Float)),
        DataType::Float64 => Arc::new(primitive!(field, values, Float64Builder, Double)),
        DataType::Date32 => Arc::new(primitive!(field, values, Date32Builder, Date)),
        DataType::Time64(_) => Arc::new(primitive!(field, values, Time64MicrosecondBuilder, Time)),
        DataType::Timestamp(_, None) => Arc::new(primitive!(
            field,
            values,
            TimestampMicrosecondBuilder,
            Timestamp
        )),
        DataType::Timestamp(_, Some(tz)) => Arc::new(
            primitive!(field, values, TimestampMicrosecondBuilder, TimestampTz)
                .with_timezone(tz.clone()),
        ),
        DataType::Decimal128(p, s) => Arc::new(
            primitive!(field, values, Decimal128Builder, Decimal)
                .with_precision_and_scale(*p, *s)
                .map_err(|e| e.to_string())?,
        ),
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                match v {
                    Datum::String(s) => b.append_value(s),
                    Datum::Null | Datum::Unchanged => b.append_null(),
                    other => return Err(wrong(field, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::LargeBinary => {
            let mut b = LargeBinaryBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                match v {
                    Datum::Binary(s) => b.append_value(s),
                    Datum::Null | Datum::Unchanged => b.append_null(),
                    other => return Err(wrong(field, other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Struct(children) => {
            let mut arrays = Vec::with_capacity(children.len());
            for (j, child) in children.iter().enumerate() {
                let column: Vec<&Datum> = values
                    .iter()
                    .map(|v| match v {
                        Datum::Struct(items) => items.get(j).unwrap_or(&NULL),
                        _ => &NULL,
                    })
                    .collect();
                arrays.push(
                    build_array(child, &column).map_err(|e| format!("{}.{e}", child.name()))?,
                );
            }
            let valid = values
                .iter()
                .map(|v| match v {
                    Datum::Struct(_) => Ok(true),
                    Datum::Null | Datum::Unchanged => Ok(false),
                    other => Err(wrong(field, other)),
                })
                .collect::<Result<Vec<bool>, String>>()?;
            Arc::new(
                StructArray::try_new(children.clone(), arrays, nulls(valid))
                    .map_err(|e| e.to_string())?,
            )
        }
        DataType::List(element) => {
            let mut lengths = Vec::with_capacity(values.len());
            let mut valid = Vec::with_capacity(values.len());
            let mut items: Vec<&Datum> = Vec::new();
            for v in values {
                match v {
                    Datum::List(xs) => {
                        lengths.push(xs.len());
                        valid.push(true);
                        items.extend(xs.iter());
                    }
                    Datum::Null | Datum::Unchanged => {
                        lengths.push(0);
                        valid.push(false);
                    }
                    other => return Err(wrong(field, other)),
                }
            }
            let child = build_array(element, &items)?;
            Arc::new(
                ListArray::try_new(
                    element.clone(),
                    OffsetBuffer::from_lengths(lengths),
                    child,
                    nulls(valid),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(format!("map entries of type {}", entries.data_type()));
            };
            let [key_field, value_field] = kv.iter().collect::<Vec<_>>()[..] else {
                return Err("map entries without exactly a key and a value".into());
            };
            let mut lengths = Vec::with_capacity(values.len());
            let mut valid = Vec::with_capacity(values.len());
            let (mut keys, mut vals): (Vec<&Datum>, Vec<&Datum>) = (Vec::new(), Vec::new());
            for v in values {
                match v {
                    Datum::Map(pairs) => {
                        lengths.push(pairs.len());
                        valid.push(true);
                        for (k, x) in pairs {
                            keys.push(k);
                            vals.push(x);
                        }
                    }
                    Datum::Null | Datum::Unchanged => {
                        lengths.push(0);
                        valid.push(false);
                    }
                    other => return Err(wrong(field, other)),
                }
            }
            let entries_array = StructArray::try_new(
                kv.clone(),
                vec![
                    build_array(key_field, &keys)?,
                    build_array(value_field, &vals)?,
                ],
                None,
            )
            .map_err(|e| e.to_string())?;
            Arc::new(
                MapArray::try_new(
                    entries.clone(),
                    OffsetBuffer::from_lengths(lengths),
                    entries_array,
                    nulls(valid),
                    *sorted,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        other => return Err(format!("Floe does not build {other} columns")),
    })
}
