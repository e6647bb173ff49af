//! Table schemas from incoming Arrow batches: the schema of a new table, evolution of an
//! existing one, and projection of a batch onto the table's schema.
//!
//! Allowed evolution: new columns and new fields of struct columns at any depth (added as
//! optional), int -> long, float -> double, and decimal precision growth at the same scale,
//! also inside structs, lists and map values. A column or nested field that disappears from the
//! source stays in the table and gets nulls. Anything else is refused, naming the column; data is never coerced
//! into a type that could lose it.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, RecordBatch, StructArray, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef as ArrowSchemaRef};
use arrow::error::ArrowError;
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
    let mut incoming_fields = Vec::with_capacity(incoming.fields().len());
    for arrow_field in incoming.fields() {
        let ty = iceberg_type_of(arrow_field).map_err(|message| Incompatible {
            column: arrow_field.name().clone(),
            message,
        })?;
        incoming_fields.push((arrow_field.name().clone(), ty));
    }
    let evolved = evolve_fields(
        current.as_struct().fields(),
        &incoming_fields,
        &mut next_id,
        "",
    )?;
    let Some(fields) = evolved else {
        return Ok(None);
    };
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

/// The fields of a struct (or of the table) that also fit `incoming`: fields the table lacks
/// are added as optional with fresh ids, at any depth (Iceberg allows adding optional nested
/// fields); fields that narrowed or vanished stay. `None` when nothing changed.
fn evolve_fields(
    current: &[NestedFieldRef],
    incoming: &[(String, Type)],
    next_id: &mut i32,
    prefix: &str,
) -> Result<Option<Vec<NestedFieldRef>>, Incompatible> {
    let mut fields = current.to_vec();
    let mut changed = false;
    for (name, incoming_type) in incoming {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match fields.iter().position(|f| &f.name == name) {
            None => {
                let ty = renumber(incoming_type, next_id);
                *next_id += 1;
                fields.push(Arc::new(NestedField::optional(*next_id, name.clone(), ty)));
                changed = true;
            }
            Some(i) => {
                if let Some(ty) = evolve_type(&fields[i].field_type, incoming_type, next_id, &path)?
                {
                    let mut widened = (*fields[i]).clone();
                    widened.field_type = Box::new(ty);
                    fields[i] = Arc::new(widened);
                    changed = true;
                }
            }
        }
    }
    Ok(changed.then_some(fields))
}

/// The table type that also fits `incoming`, or `None` when `table` already does.
fn evolve_type(
    table: &Type,
    incoming: &Type,
    next_id: &mut i32,
    path: &str,
) -> Result<Option<Type>, Incompatible> {
    let incompatible = || Incompatible {
        column: path.to_string(),
        message: format!("the table has type {table}, the source now sends {incoming}"),
    };
    match (table, incoming) {
        (Type::Primitive(_), Type::Primitive(_)) => match widen(table, incoming) {
            Fit::Same => Ok(None),
            Fit::Widen(ty) => Ok(Some(ty)),
            Fit::No => Err(incompatible()),
        },
        (Type::Struct(t), Type::Struct(i)) => {
            let incoming: Vec<(String, Type)> = i
                .fields()
                .iter()
                .map(|f| (f.name.clone(), (*f.field_type).clone()))
                .collect();
            Ok(evolve_fields(t.fields(), &incoming, next_id, path)?
                .map(|fields| Type::Struct(StructType::new(fields))))
        }
        (Type::List(t), Type::List(i)) => {
            let element = &t.element_field;
            let path = format!("{path}.element");
            Ok(evolve_type(
                &element.field_type,
                &i.element_field.field_type,
                next_id,
                &path,
            )?
            .map(|ty| {
                let mut e = (**element).clone();
                e.field_type = Box::new(ty);
                Type::List(ListType::new(Arc::new(e)))
            }))
        }
        (Type::Map(t), Type::Map(i)) => {
            let key_path = format!("{path}.key");
            if evolve_type(
                &t.key_field.field_type,
                &i.key_field.field_type,
                next_id,
                &key_path,
            )?
            .is_some()
            {
                return Err(incompatible());
            }
            let value = &t.value_field;
            let path = format!("{path}.value");
            Ok(
                evolve_type(&value.field_type, &i.value_field.field_type, next_id, &path)?.map(
                    |ty| {
                        let mut v = (**value).clone();
                        v.field_type = Box::new(ty);
                        Type::Map(MapType::new(t.key_field.clone(), Arc::new(v)))
                    },
                ),
            )
        }
        _ => Err(incompatible()),
    }
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
        _ => Fit::No,
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
                conform(column, field.data_type()).map_err(|e| {
                    format!(
                        "column {}: cannot convert {} to {}: {e}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    )
                })
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

/// `array` as `target`: struct fields matched by name at any depth (a field the array lacks
/// is null), field ids and widenings taken from the target.
fn conform(array: &ArrayRef, target: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    match (array.data_type(), target) {
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let s = array.as_struct();
            let children = fields
                .iter()
                .map(|f| match s.column_by_name(f.name()) {
                    Some(c) => conform(c, f.data_type()),
                    None => Ok(new_null_array(f.data_type(), s.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                s.nulls().cloned(),
            )?))
        }
        (DataType::List(_), DataType::List(element)) => {
            let l = array.as_list::<i32>();
            let values = conform(l.values(), element.data_type())?;
            Ok(Arc::new(ListArray::try_new(
                element.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?))
        }
        (DataType::Map(_, sorted), DataType::Map(entries, _)) => {
            let m = array.as_map();
            let values: ArrayRef = Arc::new(m.entries().clone());
            let conformed = conform(&values, entries.data_type())?;
            Ok(Arc::new(MapArray::try_new(
                entries.clone(),
                m.offsets().clone(),
                conformed.as_struct().clone(),
                m.nulls().cloned(),
                *sorted,
            )?))
        }
        _ => cast(array, target),
    }
}

#[cfg(test)]
mod tests {

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

    fn address(fields: Vec<Field>) -> Field {
        Field::new("address", DataType::Struct(fields.into()), true)
    }

    #[test]
    fn a_new_nested_field_is_added_to_the_struct() {
        let city = Field::new("city", DataType::Utf8, true);
        let zip = Field::new("zip", DataType::Int32, true);
        let s = creation_schema(
            &arrow(vec![
                Field::new("id", DataType::Int64, false),
                address(vec![city.clone()]),
            ]),
            &["id".to_string()],
        )
        .unwrap();
        let last = s.highest_field_id();
        let incoming = arrow(vec![
            Field::new("id", DataType::Int64, false),
            address(vec![city.clone(), zip.clone()]),
        ]);
        let evolved = evolve(&s, last, &incoming).unwrap().expect("changed");
        let zip_field = evolved
            .field_by_name("address.zip")
            .expect("nested field added");
        assert_eq!((zip_field.id, zip_field.required), (last + 1, false));
        assert_eq!(
            evolved.field_by_name("address.city").unwrap().id,
            s.field_by_name("address.city").unwrap().id
        );
        // The same struct again, or one that lost the new field, changes nothing more.
        assert!(evolve(&evolved, last + 1, &incoming).unwrap().is_none());
        let older = arrow(vec![
            Field::new("id", DataType::Int64, false),
            address(vec![city.clone()]),
        ]);
        assert!(evolve(&evolved, last + 1, &older).unwrap().is_none());

        // Rows of the older shape are written with the new field null.
        use arrow::array::{Int64Array, StringArray};
        let rows = RecordBatch::try_new(
            Arc::new(older),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StructArray::from(vec![(
                    Arc::new(city),
                    Arc::new(StringArray::from(vec!["Oslo", "Lima"])) as ArrayRef,
                )])),
            ],
        )
        .unwrap();
        let target = arrow_schema(&evolved).unwrap();
        let projected = project(&rows, &target).unwrap();
        let address = projected.column(1).as_struct();
        assert_eq!(address.num_columns(), 2);
        assert_eq!(
            address
                .column_by_name("city")
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "Lima"
        );
        assert_eq!(address.column_by_name("zip").unwrap().null_count(), 2);
    }

    #[test]
    fn a_nested_field_that_changes_type_names_its_path() {
        let s = creation_schema(
            &arrow(vec![
                Field::new("id", DataType::Int64, false),
                address(vec![Field::new("zip", DataType::Int32, true)]),
            ]),
            &["id".to_string()],
        )
        .unwrap();
        let err = evolve(
            &s,
            s.highest_field_id(),
            &arrow(vec![address(vec![Field::new("zip", DataType::Utf8, true)])]),
        )
        .unwrap_err();
        assert_eq!(err.column, "address.zip");
        let widened = evolve(
            &s,
            s.highest_field_id(),
            &arrow(vec![address(vec![Field::new(
                "zip",
                DataType::Int64,
                true,
            )])]),
        )
        .unwrap()
        .expect("widened");
        assert_eq!(
            widened
                .field_by_name("address.zip")
                .unwrap()
                .field_type
                .to_string(),
            "long"
        );
    }
}
