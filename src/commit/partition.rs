//! Partitioned tables: the spec a new table is created with, and rows split by the partition
//! values of the table's current spec (computed by iceberg-rust's transforms, exactly as the
//! Iceberg spec defines them).
//!
//! Floe writes into whatever spec a table has now, whoever created it. What it cannot write
//! correctly it refuses: equality deletes on a table whose partition columns are not all in
//! the primary key (an equality delete reaches only rows of its own partition, so it would
//! miss a row that moved) or that has had another spec, and position deletes against files of
//! an earlier spec.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::row::{Row, RowConverter, SortField};
use iceberg::arrow::{PartitionValueCalculator, arrow_struct_to_literal};
use iceberg::spec::{
    Literal, PartitionKey, PartitionSpec, Schema, Struct, Transform, UnboundPartitionSpec,
};

use crate::catalog::LoadedTable;
use crate::config::{PartitionField, PartitionTransform};

/// Partition values come from the source database, not from an adversary.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The partition a data file belongs to: the spec it was written under and its values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilePartition {
    pub spec_id: i32,
    pub values: Struct,
}

/// The spec of a new table with `schema`, from the configured fields: each source column by
/// name, each field named as Iceberg's own writers name them (`ts_day`, `id_bucket`, ...).
pub fn creation_spec(
    fields: &[PartitionField],
    schema: &Schema,
) -> Result<UnboundPartitionSpec, String> {
    let mut builder = UnboundPartitionSpec::builder();
    for field in fields {
        let source = schema.field_by_name(&field.source).ok_or_else(|| {
            format!(
                "partition column `{}` is not a column of the table",
                field.source
            )
        })?;
        let (transform, suffix) = match field.transform {
            PartitionTransform::Identity => (Transform::Identity, ""),
            PartitionTransform::Year => (Transform::Year, "_year"),
            PartitionTransform::Month => (Transform::Month, "_month"),
            PartitionTransform::Day => (Transform::Day, "_day"),
            PartitionTransform::Hour => (Transform::Hour, "_hour"),
            PartitionTransform::Bucket(n) => (Transform::Bucket(n), "_bucket"),
            PartitionTransform::Truncate(w) => (Transform::Truncate(w), "_trunc"),
        };
        builder = builder
            .add_partition_field(source.id, format!("{}{suffix}", source.name), transform)
            .map_err(|e| format!("partition field {field}: {e}"))?;
    }
    let spec = builder.build();
    // Bound here so that a transform the column's type does not take (day of a string) is
    // refused before the table exists.
    spec.clone()
        .bind(Arc::new(schema.clone()))
        .map_err(|e| format!("partition spec: {e}"))?;
    Ok(spec)
}

/// Whether the table's current spec is the one `fields` would create (same sources and
/// transforms, in order; names aside).
pub fn is_configured(fields: &[PartitionField], table: &LoadedTable) -> bool {
    let metadata = &table.metadata;
    let Ok(wanted) = creation_spec(fields, metadata.current_schema()) else {
        return false;
    };
    let current = metadata.default_partition_spec().fields();
    wanted.fields().len() == current.len()
        && wanted
            .fields()
            .iter()
            .zip(current)
            .all(|(w, c)| w.source_id == c.source_id && w.transform == c.transform)
}

/// The table's current spec as text, e.g. `ts_day=day(ts), id_bucket=bucket[8](id)`;
/// `unpartitioned` when it has no field.
pub fn describe(spec: &PartitionSpec, schema: &Schema) -> String {
    if spec.is_unpartitioned() {
        return "unpartitioned".into();
    }
    spec.fields()
        .iter()
        .map(|f| {
            let source = schema
                .name_by_field_id(f.source_id)
                .unwrap_or("<dropped column>");
            format!("{}={}({source})", f.name, f.transform)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One partition's rows (no key: an unpartitioned table), as batches.
pub type PartitionRows = (Option<PartitionKey>, Vec<RecordBatch>);

/// Splits rows in the table's Arrow schema by their partition under the table's current spec:
/// partition values computed by iceberg-rust's transforms for the whole batch, rows grouped by
/// them in one pass (Arrow's row format as the hash key), each group taken out once.
pub struct Splitter {
    inner: Option<Partitioned>,
}

struct Partitioned {
    calculator: PartitionValueCalculator,
    spec: PartitionSpec,
    schema: iceberg::spec::SchemaRef,
}

impl Splitter {
    pub fn new(table: &LoadedTable) -> Result<Self, String> {
        let metadata = &table.metadata;
        let spec = metadata.default_partition_spec();
        if spec.is_unpartitioned() {
            return Ok(Splitter { inner: None });
        }
        let schema = metadata.current_schema().clone();
        let calculator = PartitionValueCalculator::try_new(spec, &schema)
            .map_err(|e| format!("partition spec {}: {e}", spec.spec_id()))?;
        Ok(Splitter {
            inner: Some(Partitioned {
                calculator,
                spec: spec.as_ref().clone(),
                schema,
            }),
        })
    }

    /// The rows of several batches by partition: each partition's rows in batch order, the
    /// partitions in order of first appearance; one group without a key for an unpartitioned
    /// table. Each batch is dropped once split.
    pub fn split_all(&self, batches: Vec<RecordBatch>) -> Result<Vec<PartitionRows>, String> {
        let batches = batches.into_iter().filter(|b| b.num_rows() > 0);
        if self.inner.is_none() {
            let all: Vec<RecordBatch> = batches.collect();
            return Ok(if all.is_empty() {
                Vec::new()
            } else {
                vec![(None, all)]
            });
        }
        let mut groups: Vec<PartitionRows> = Vec::new();
        let mut at: HashMap<iceberg::spec::Struct, usize> = HashMap::default();
        for batch in batches {
            for (key, rows) in self.split(batch)? {
                let values = key
                    .as_ref()
                    .map_or_else(iceberg::spec::Struct::empty, |k| k.data().clone());
                match at.get(&values) {
                    Some(i) => groups[*i].1.push(rows),
                    None => {
                        at.insert(values, groups.len());
                        groups.push((key, vec![rows]));
                    }
                }
            }
        }
        Ok(groups)
    }

    /// The rows of each partition, in a stable order (by partition values); one group without
    /// a key for an unpartitioned table. No group is empty; rows keep their order within a
    /// group.
    pub fn split(
        &self,
        rows: RecordBatch,
    ) -> Result<Vec<(Option<PartitionKey>, RecordBatch)>, String> {
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let Some(p) = &self.inner else {
            return Ok(vec![(None, rows)]);
        };
        let failed = |e: &dyn std::fmt::Display| format!("computing partition values: {e}");
        let values = p.calculator.calculate(&rows).map_err(|e| failed(&e))?;
        let columns = values.as_struct().columns();
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )
        .map_err(|e| failed(&e))?;
        let keys = converter.convert_columns(columns).map_err(|e| failed(&e))?;
        let mut groups: HashMap<Row<'_>, Vec<u32>> = HashMap::default();
        for i in 0..rows.num_rows() {
            groups.entry(keys.row(i)).or_default().push(i as u32);
        }
        let mut groups: Vec<(Row<'_>, Vec<u32>)> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
            .into_iter()
            .map(|(_, indices)| {
                let first = values.slice(indices[0] as usize, 1);
                let data = match arrow_struct_to_literal(&first, p.calculator.partition_type())
                    .map_err(|e| failed(&e))?
                    .pop()
                {
                    Some(Some(Literal::Struct(data))) => data,
                    other => return Err(failed(&format!("not a partition tuple: {other:?}"))),
                };
                let group = take_record_batch(&rows, &UInt32Array::from(indices))
                    .map_err(|e| failed(&e))?;
                let key = PartitionKey::new(p.spec.clone(), p.schema.clone(), data);
                Ok((Some(key), group))
            })
            .collect()
    }
}

/// Why equality deletes cannot be written into `table`, if they cannot: Iceberg applies an
/// equality delete only to data files of its own partition, so every partition column must be
/// derived from the primary key, or a row that moved partitions would be missed.
pub fn equality_deletes_refused(table: &LoadedTable) -> Option<String> {
    let metadata = &table.metadata;
    let spec = metadata.default_partition_spec();
    let schema = metadata.current_schema();
    let keys: Vec<i32> = schema.identifier_field_ids().collect();
    let outside: Vec<String> = spec
        .fields()
        .iter()
        .filter(|f| f.transform != Transform::Void && !keys.contains(&f.source_id))
        .map(|f| {
            schema
                .name_by_field_id(f.source_id)
                .unwrap_or("<dropped column>")
                .to_string()
        })
        .collect();
    let by_position = "so Floe removes old rows of this table by position only \
                       (tables.deletes = \"position\", with a key index that fits \
                       tables.index_memory)";
    if !outside.is_empty() {
        return Some(format!(
            "the table is partitioned by {} outside the primary key ({}): an equality delete \
             reaches only rows of its own partition, {by_position}",
            outside.join(", "),
            describe(spec, schema)
        ));
    }
    // A partitioned equality delete reaches only files of its own spec.
    let specs = metadata.partition_specs_iter().count();
    (!spec.is_unpartitioned() && specs > 1).then(|| {
        format!(
            "the table has had {specs} partition specs: an equality delete written under the \
             current one ({}) does not reach rows written under another, {by_position}",
            describe(spec, schema)
        )
    })
}

/// The partition key of a delete file for data files of `partition`, under the table's current
/// spec; an error for files of an earlier spec.
pub fn key_for(
    table: &LoadedTable,
    partition: Option<&FilePartition>,
) -> Result<Option<PartitionKey>, String> {
    let metadata = &table.metadata;
    let spec = metadata.default_partition_spec();
    match partition {
        None if spec.is_unpartitioned() => Ok(None),
        Some(p) if p.spec_id == spec.spec_id() => Ok((!spec.is_unpartitioned()).then(|| {
            PartitionKey::new(
                spec.as_ref().clone(),
                metadata.current_schema().clone(),
                p.values.clone(),
            )
        })),
        Some(p) if spec.is_unpartitioned() && p.values.fields().is_empty() => Ok(None),
        _ => Err(format!(
            "a row to remove is in a data file written under an earlier partition spec ({}); \
             rewrite the table under its current spec first (`floe maintain` does)",
            partition.map_or("unknown".into(), |p| p.spec_id.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    fn schema() -> Schema {
        Schema::builder()
            .with_fields([
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::optional(3, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            ])
            .with_identifier_field_ids([1])
            .build()
            .unwrap()
    }

    fn fields(spec: &[&str]) -> Vec<PartitionField> {
        spec.iter().map(|f| f.parse().unwrap()).collect()
    }

    #[test]
    fn configured_fields_become_a_spec_named_as_iceberg_names_them() {
        let spec = creation_spec(
            &fields(&["day(ts)", "bucket(16, id)", "truncate(4, name)", "name"]),
            &schema(),
        )
        .unwrap();
        let got: Vec<(i32, String, String)> = spec
            .fields()
            .iter()
            .map(|f| (f.source_id, f.name.clone(), f.transform.to_string()))
            .collect();
        let want = [
            (3, "ts_day", "day"),
            (1, "id_bucket", "bucket[16]"),
            (2, "name_trunc", "truncate[4]"),
            (2, "name", "identity"),
        ]
        .map(|(id, n, t)| (id, n.to_string(), t.to_string()));
        assert_eq!(got, want);
        let bound = spec.bind(Arc::new(schema())).unwrap();
        assert_eq!(
            describe(&bound, &schema()),
            "ts_day=day(ts), id_bucket=bucket[16](id), name_trunc=truncate[4](name), \
             name=identity(name)"
        );
    }

    #[test]
    fn a_column_that_is_missing_or_of_the_wrong_type_is_refused() {
        let e = creation_spec(&fields(&["day(created_at)"]), &schema()).unwrap_err();
        assert!(
            e.contains("partition column `created_at` is not a column of the table"),
            "{e}"
        );
        let e = creation_spec(&fields(&["day(name)"]), &schema()).unwrap_err();
        assert!(e.contains("partition"), "{e}");
        // Two time transforms of one column, as Iceberg refuses them.
        assert!(creation_spec(&fields(&["day(ts)", "hour(ts)"]), &schema()).is_err());
        // Two fields on the same column and transform.
        assert!(creation_spec(&fields(&["bucket(4, id)", "bucket(4, id)"]), &schema()).is_err());
    }

    #[test]
    fn config_text_of_a_field_reads_back_as_the_same_field() {
        for text in [
            "id",
            "year(ts)",
            "month(ts)",
            "day(ts)",
            "hour(ts)",
            "bucket(8, id)",
            "truncate(3, name)",
        ] {
            let field: PartitionField = text.parse().unwrap();
            assert_eq!(field.to_string(), text);
        }
    }
}
