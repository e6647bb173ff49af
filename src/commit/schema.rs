//! Table schemas from incoming Arrow batches: the schema of a new table, evolution of an
//! existing one, and projection of a batch onto the table's schema.
//!
//! Allowed evolution: new columns (added as optional), int -> long, float -> double, and decimal
//! precision growth at the same scale. A column that disappears from the source stays in the
//! table and gets nulls. Anything else is refused, naming the column; data is never coerced
//! into a type that could lose it.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{Field, Schema as ArrowSchema, SchemaRef as ArrowSchemaRef};
use iceberg::arrow::{arrow_schema_to_schema_auto_assign_ids, schema_to_arrow_schema};
use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type,
};

/// The schema of a new table for rows shaped like `arrow` (without Floe's op column): fresh
/// field ids, primary-key columns required and set as the identifier fields.
pub fn creation_schema(arrow: &ArrowSchema, primary_key: &[String]) -> Result<Schema, String> {
    let auto = arrow_schema_to_schema_auto_assign_ids(arrow).map_err(|e| e.to_string())?;
    let mut fields = Vec::with_capacity(auto.as_struct().fields().len());
    let mut identifier_ids = Vec::with_capacity(primary_key.len());
    for key in primary_key {
        if !auto.as_struct().fields().iter().any(|f| &f.name == key) {
            return Err(format!("primary key column {key} is not among the columns"));
        }
    }
    for field in auto.as_struct().fields() {
        let is_key = primary_key.contains(&field.name);
        if is_key {
            if !matches!(*field.field_type, Type::Primitive(_)) {
                return Err(format!(
                    "primary key column {} has type {}; a key must be a primitive type",
                    field.name, field.field_type
                ));
            }
            identifier_ids.push(field.id);
        }
        fields.push(Arc::new(NestedField::new(
            field.id,
            field.name.clone(),
            (*field.field_type).clone(),
            is_key,
        )));
    }
    Schema::builder()
        .with_fields(fields)
        .with_identifier_field_ids(identifier_ids)
        .build()
        .map_err(|e| e.to_string())
}

/// Why incoming rows do not fit the table's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatible {
    pub column: String,
    pub message: String,
}

/// The table schema that also fits `incoming`, or `None` when the current one already does.
pub fn evolve(
    current: &Schema,
    last_column_id: i32,
    incoming: &ArrowSchema,
) -> Result<Option<Schema>, Incompatible> {
    let mut next_id = last_column_id;
    let mut fields: Vec<NestedFieldRef> = current.as_struct().fields().to_vec();
    let mut changed = false;
    for arrow_field in incoming.fields() {
        let name = arrow_field.name();
        let incompatible = |message: String| Incompatible {
            column: name.clone(),
            message,
        };
        let incoming_type = iceberg_type_of(arrow_field).map_err(incompatible)?;
        match fields.iter().position(|f| &f.name == name) {
            None => {
                let ty = renumber(&incoming_type, &mut next_id);
                next_id += 1;
                fields.push(Arc::new(NestedField::optional(next_id, name.clone(), ty)));
                changed = true;
            }
            Some(i) => {
                let existing = &fields[i];
                match widen(&existing.field_type, &incoming_type) {
                    Fit::Same => {}
                    Fit::Widen(ty) => {
                        let mut widened = (**existing).clone();
                        widened.field_type = Box::new(ty);
                        fields[i] = Arc::new(widened);
                        changed = true;
                    }
                    Fit::No => {
                        return Err(incompatible(format!(
                            "the table has type {}, the source now sends {}",
                            existing.field_type, incoming_type
                        )));
                    }
                }
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    Schema::builder()
        .with_schema_id(current.schema_id() + 1)
        .with_fields(fields)
        .with_identifier_field_ids(current.identifier_field_ids())
        .build()
        .map(Some)
        .map_err(|e| Incompatible {
            column: String::new(),
            message: e.to_string(),
        })
}

enum Fit {
    Same,
    Widen(Type),
    No,
}

fn widen(table: &Type, incoming: &Type) -> Fit {
    use PrimitiveType as P;
    match (table, incoming) {
        (Type::Primitive(t), Type::Primitive(i)) => match (t, i) {
            _ if t == i => Fit::Same,
            (P::Long, P::Int) | (P::Double, P::Float) => Fit::Same,
            (P::Int, P::Long) => Fit::Widen(Type::Primitive(P::Long)),
            (P::Float, P::Double) => Fit::Widen(Type::Primitive(P::Double)),
            (
                P::Decimal {
                    precision: tp,
                    scale: ts,
                },
                P::Decimal {
                    precision: ip,
                    scale: is,
                },
            ) if ts == is => {
                if ip <= tp {
                    Fit::Same
                } else {
                    Fit::Widen(Type::Primitive(P::Decimal {
                        precision: *ip,
                        scale: *is,
                    }))
                }
            }
            _ => Fit::No,
        },
        // Nested columns must keep their shape; casting handles ids and nullability.
        _ => match (
            iceberg::arrow::type_to_arrow_type(table),
            iceberg::arrow::type_to_arrow_type(incoming),
        ) {
            (Ok(t), Ok(i)) if same_shape(table, incoming) && can_cast_types(&i, &t) => Fit::Same,
            _ => Fit::No,
        },
    }
}

fn same_shape(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields()
                    .iter()
                    .zip(y.fields())
                    .all(|(f, g)| f.name == g.name && same_shape(&f.field_type, &g.field_type))
        }
        (Type::List(x), Type::List(y)) => {
            same_shape(&x.element_field.field_type, &y.element_field.field_type)
        }
        (Type::Map(x), Type::Map(y)) => {
            same_shape(&x.key_field.field_type, &y.key_field.field_type)
                && same_shape(&x.value_field.field_type, &y.value_field.field_type)
        }
        _ => false,
    }
}

fn iceberg_type_of(field: &Field) -> Result<Type, String> {
    let schema = ArrowSchema::new(vec![field.clone()]);
    let converted = arrow_schema_to_schema_auto_assign_ids(&schema)
        .map_err(|e| format!("type {} has no Iceberg equivalent: {e}", field.data_type()))?;
    Ok((*converted.as_struct().fields()[0].field_type).clone())
}

/// Gives every nested field of `ty` a fresh id above `*next_id`.
fn renumber(ty: &Type, next_id: &mut i32) -> Type {
    let field = |f: &NestedFieldRef, next_id: &mut i32| {
        *next_id += 1;
        let id = *next_id;
        let mut nf = (**f).clone();
        nf.id = id;
        nf.field_type = Box::new(renumber(&f.field_type, next_id));
        Arc::new(nf)
    };
    match ty {
        Type::Primitive(_) => ty.clone(),
        Type::Struct(s) => Type::Struct(StructType::new(
            s.fields().iter().map(|f| field(f, next_id)).collect(),
        )),
        Type::List(l) => Type::List(ListType::new(field(&l.element_field, next_id))),
        Type::Map(m) => {
            let key = field(&m.key_field, next_id);
            let value = field(&m.value_field, next_id);
            Type::Map(MapType::new(key, value))
        }
    }
}

/// The Arrow schema, with Iceberg field ids, that files of `schema` are written with.
pub fn arrow_schema(schema: &Schema) -> Result<ArrowSchemaRef, String> {
    schema_to_arrow_schema(schema)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// `batch` in the shape of `target`: columns matched by name, cast where the table's type is
/// wider or carries field ids, and nulls for table columns the batch does not have.
pub fn project(batch: &RecordBatch, target: &ArrowSchemaRef) -> Result<RecordBatch, String> {
    let source = batch.schema();
    let columns: Vec<ArrayRef> = target
        .fields()
        .iter()
        .map(|field| match source.index_of(field.name()) {
            Ok(i) => {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    cast(column, field.data_type()).map_err(|e| {
                        format!(
                            "column {}: cannot convert {} to {}: {e}",
                            field.name(),
                            column.data_type(),
                            field.data_type()
                        )
                    })
                }
            }
            Err(_) if field.is_nullable() => {
                Ok(new_null_array(field.data_type(), batch.num_rows()))
            }
            Err(_) => Err(format!(
                "required column {} is missing from the changes",
                field.name()
            )),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;

    use super::*;

    fn arrow(fields: Vec<Field>) -> ArrowSchema {
        ArrowSchema::new(fields)
    }

    fn base() -> Schema {
        creation_schema(
            &arrow(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("qty", DataType::Int32, true),
                Field::new("price", DataType::Decimal128(10, 2), true),
                Field::new("ratio", DataType::Float32, true),
            ]),
            &["id".to_string()],
        )
        .unwrap()
    }

    #[test]
    fn new_tables_require_and_identify_their_key() {
        let s = base();
        let id = s.field_by_name("id").unwrap();
        assert!(id.required);
        assert_eq!(s.identifier_field_ids().collect::<Vec<_>>(), vec![id.id]);
        assert!(!s.field_by_name("qty").unwrap().required);
        let err = creation_schema(
            &arrow(vec![Field::new("id", DataType::Int64, true)]),
            &["nope".to_string()],
        )
        .unwrap_err();
        assert_eq!(err, "primary key column nope is not among the columns");
    }

    #[test]
    fn widening_and_new_columns_evolve_the_schema() {
        let s = base();
        let evolved = evolve(
            &s,
            4,
            &arrow(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("qty", DataType::Int64, true),
                Field::new("price", DataType::Decimal128(12, 2), true),
                Field::new("ratio", DataType::Float64, true),
                Field::new("note", DataType::Utf8, true),
            ]),
        )
        .unwrap()
        .expect("changed");
        assert_eq!(evolved.schema_id(), s.schema_id() + 1);
        let ty = |n: &str| evolved.field_by_name(n).unwrap().field_type.to_string();
        assert_eq!(ty("qty"), "long");
        assert_eq!(ty("price"), "decimal(12, 2)");
        assert_eq!(ty("ratio"), "double");
        let note = evolved.field_by_name("note").unwrap();
        assert_eq!((note.id, note.required), (5, false));
        assert_eq!(
            evolved.identifier_field_ids().collect::<Vec<_>>(),
            s.identifier_field_ids().collect::<Vec<_>>()
        );
    }

    #[test]
    fn narrower_or_missing_columns_change_nothing() {
        let s = base();
        let unchanged = evolve(
            &s,
            4,
            &arrow(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("price", DataType::Decimal128(8, 2), true),
            ]),
        )
        .unwrap();
        assert!(unchanged.is_none());
    }

    #[test]
    fn incompatible_changes_name_the_column() {
        let s = base();
        let err = evolve(&s, 4, &arrow(vec![Field::new("qty", DataType::Utf8, true)])).unwrap_err();
        assert_eq!(err.column, "qty");
        assert_eq!(
            err.message,
            "the table has type int, the source now sends string"
        );
        let err = evolve(
            &s,
            4,
            &arrow(vec![Field::new("price", DataType::Decimal128(12, 3), true)]),
        )
        .unwrap_err();
        assert_eq!(err.column, "price");
    }
}
