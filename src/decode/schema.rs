//! Compiled schemas: what a Kafka Connect schema (or an inferred one, or an existing Iceberg
//! table's) says about the columns of a table, in the form the decoder reads values with.
//!
//! Debezium repeats the same Connect schema in every message. It is compiled once and found
//! again by its raw bytes ([`SchemaCache`]); this module must never be asked to parse the
//! `schema` part of every message into a tree.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema as IcebergSchema,
    StructType, Type,
};
use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::config::{SchemalessTimeUnit, VariableScaleDecimalAs};

/// Iceberg's widest decimal.
pub const MAX_DECIMAL_PRECISION: u32 = 38;

/// How a column's JSON value is read, which also fixes its Iceberg type (the README's type
/// mapping table).
#[derive(Debug, Clone, PartialEq)]
pub enum Codec {
    Boolean,
    /// int8, int16, int32 (and `io.debezium.time.Year`): Iceberg int.
    Int,
    /// int64 (and `MicroDuration`): Iceberg long.
    Long,
    Float,
    Double,
    /// string, and the string-shaped logical types (Json, Xml, Enum, EnumSet, Uuid, ZonedTime).
    String,
    /// bytes (base64 in JSON) and `io.debezium.data.Bits`: Iceberg binary.
    Binary,
    /// `org.apache.kafka.connect.data.Decimal` up to 38 digits: base64 two's-complement
    /// big-endian unscaled bytes, Iceberg decimal(p, s).
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// A Connect Decimal wider than Iceberg allows (or with a negative scale): the exact text,
    /// or a double, per `decode.variable_scale_decimal`.
    WideDecimal {
        scale: i32,
        target: VariableScaleDecimalAs,
    },
    /// `io.debezium.data.VariableScaleDecimal`: struct {scale, value}; text or double.
    VariableScaleDecimal(VariableScaleDecimalAs),
    /// Days since the epoch (`io.debezium.time.Date`, Connect Date).
    Date,
    /// Milliseconds since midnight (`io.debezium.time.Time`, Connect Time).
    TimeMillis,
    /// `io.debezium.time.MicroTime`.
    TimeMicros,
    /// `io.debezium.time.NanoTime`; Iceberg time has microseconds, so nanoseconds are floored.
    TimeNanos,
    /// Milliseconds since the epoch, no zone (`io.debezium.time.Timestamp`, Connect Timestamp).
    TimestampMillis,
    /// `io.debezium.time.MicroTimestamp`.
    TimestampMicros,
    /// `io.debezium.time.NanoTimestamp`; floored to microseconds like NanoTime.
    TimestampNanos,
    /// `io.debezium.time.ZonedTimestamp`: an ISO-8601 string with offset, stored in UTC.
    ZonedTimestamp,
    /// A time column of a record without a Connect schema and no `decode.schemaless_time_unit`:
    /// read from ISO-8601 text only, since an integer's unit is unknown.
    TimeText,
    /// A timestamp column likewise.
    TimestampText,
    List(Box<Field>),
    Struct(Vec<Field>),
    Map(Box<Field>, Box<Field>),
}

impl Codec {
    /// The Iceberg type of a column read with this codec (nested ids come from the fields).
    pub fn iceberg_type(&self) -> Type {
        let p = |t| Type::Primitive(t);
        let text_or_double = |t: &VariableScaleDecimalAs| match t {
            VariableScaleDecimalAs::String => p(PrimitiveType::String),
            VariableScaleDecimalAs::Double => p(PrimitiveType::Double),
        };
        match self {
            Codec::Boolean => p(PrimitiveType::Boolean),
            Codec::Int => p(PrimitiveType::Int),
            Codec::Long => p(PrimitiveType::Long),
            Codec::Float => p(PrimitiveType::Float),
            Codec::Double => p(PrimitiveType::Double),
            Codec::String => p(PrimitiveType::String),
            Codec::Binary => p(PrimitiveType::Binary),
            Codec::Decimal { precision, scale } => p(PrimitiveType::Decimal {
                precision: *precision,
                scale: *scale,
            }),
            Codec::WideDecimal { target, .. } => text_or_double(target),
            Codec::VariableScaleDecimal(target) => text_or_double(target),
            Codec::Date => p(PrimitiveType::Date),
            Codec::TimeMillis | Codec::TimeMicros | Codec::TimeNanos | Codec::TimeText => {
                p(PrimitiveType::Time)
            }
            Codec::TimestampMillis
            | Codec::TimestampMicros
            | Codec::TimestampNanos
            | Codec::TimestampText => p(PrimitiveType::Timestamp),
            Codec::ZonedTimestamp => p(PrimitiveType::Timestamptz),
            Codec::List(element) => Type::List(ListType::new(element.to_nested_field())),
            Codec::Struct(fields) => Type::Struct(StructType::new(
                fields.iter().map(Field::to_nested_field).collect(),
            )),
            Codec::Map(key, value) => {
                Type::Map(MapType::new(key.to_nested_field(), value.to_nested_field()))
            }
        }
    }

    /// The codec that reads a schemaless JSON value into an existing table column of type `ty`.
    /// Dates are days (every Debezium mode sends days); integer times and timestamps are in
    /// `time_unit`, and without one only their ISO-8601 text is read.
    pub fn for_iceberg_type(
        ty: &Type,
        time_unit: Option<SchemalessTimeUnit>,
    ) -> Result<Codec, String> {
        use SchemalessTimeUnit as U;
        Ok(match ty {
            Type::Primitive(p) => match p {
                PrimitiveType::Boolean => Codec::Boolean,
                PrimitiveType::Int => Codec::Int,
                PrimitiveType::Long => Codec::Long,
                PrimitiveType::Float => Codec::Float,
                PrimitiveType::Double => Codec::Double,
                PrimitiveType::Decimal { precision, scale } => Codec::Decimal {
                    precision: *precision,
                    scale: *scale,
                },
                PrimitiveType::Date => Codec::Date,
                PrimitiveType::Time => match time_unit {
                    Some(U::Millis) => Codec::TimeMillis,
                    Some(U::Micros) => Codec::TimeMicros,
                    Some(U::Nanos) => Codec::TimeNanos,
                    None => Codec::TimeText,
                },
                PrimitiveType::Timestamp => match time_unit {
                    Some(U::Millis) => Codec::TimestampMillis,
                    Some(U::Micros) => Codec::TimestampMicros,
                    Some(U::Nanos) => Codec::TimestampNanos,
                    None => Codec::TimestampText,
                },
                PrimitiveType::Timestamptz => Codec::ZonedTimestamp,
                PrimitiveType::String => Codec::String,
                PrimitiveType::Binary => Codec::Binary,
                other => return Err(format!("Floe does not write Iceberg {other} columns")),
            },
            Type::Struct(s) => Codec::Struct(
                s.fields()
                    .iter()
                    .map(|f| Field::from_iceberg(f, time_unit))
                    .collect::<Result<_, _>>()?,
            ),
            Type::List(l) => {
                Codec::List(Box::new(Field::from_iceberg(&l.element_field, time_unit)?))
            }
            Type::Map(m) => Codec::Map(
                Box::new(Field::from_iceberg(&m.key_field, time_unit)?),
                Box::new(Field::from_iceberg(&m.value_field, time_unit)?),
            ),
        })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Codec::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
            Codec::List(_) => "list".into(),
            Codec::Struct(_) => "struct".into(),
            Codec::Map(_, _) => "map".into(),
            Codec::TimeText => "time".into(),
            Codec::TimestampText => "timestamp".into(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// One column (or nested field, list element, map key or value).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// The Iceberg field id; 0 until the field belongs to a [`TableSchema`].
    pub id: i32,
    /// Iceberg `required`: primary key columns and map keys only. Everything else is optional,
    /// so that key-only delete images, vanished columns and new columns all fit.
    pub required: bool,
    pub codec: Codec,
}

impl Field {
    pub fn new(name: impl Into<String>, codec: Codec) -> Self {
        Field {
            name: name.into(),
            id: 0,
            required: false,
            codec,
        }
    }

    pub fn to_nested_field(&self) -> NestedFieldRef {
        Arc::new(NestedField::new(
            self.id,
            &self.name,
            self.codec.iceberg_type(),
            self.required,
        ))
    }

    fn from_iceberg(
        f: &NestedField,
        time_unit: Option<SchemalessTimeUnit>,
    ) -> Result<Field, String> {
        Ok(Field {
            name: f.name.clone(),
            id: f.id,
            required: f.required,
            codec: Codec::for_iceberg_type(&f.field_type, time_unit)
                .map_err(|e| format!("column {}: {e}", f.name))?,
        })
    }
}

/// The columns of a row as one Connect schema (or one inference step) describes them, before
/// field ids and the primary key are known. Shared by every message with the same schema.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSchema {
    pub fields: Vec<Field>,
}

/// A table's columns with Iceberg field ids and its primary key: what rows are decoded against
/// and what Arrow batches are built with. Equal schemas compare equal even when compiled from
/// different bytes; a different schema starts a new batch.
#[derive(Debug)]
pub struct TableSchema {
    columns: Vec<Field>,
    primary_key: Vec<usize>,
    /// The primary key columns, in key order, to read a record key with.
    pub(crate) key_fields: Vec<Field>,
    /// The row schema this was made from, to recognise the next message's schema by pointer.
    pub(crate) source: Arc<RowSchema>,
    pub(crate) arrow: OnceLock<arrow::datatypes::SchemaRef>,
}

impl PartialEq for TableSchema {
    fn eq(&self, other: &Self) -> bool {
        self.columns == other.columns && self.primary_key == other.primary_key
    }
}

impl TableSchema {
    /// Assigns field ids (reusing `existing`'s by column name, fresh ids after its highest
    /// otherwise; without `existing` fresh ids from 1, in order, like Iceberg's own fresh-id
    /// assignment: a struct's fields first, then their nested types) and marks the primary
    /// key columns required.
    pub fn new(
        source: Arc<RowSchema>,
        primary_key: &[String],
        existing: Option<&IcebergSchema>,
    ) -> Result<TableSchema, String> {
        let mut columns = source.fields.clone();
        let mut ids = IdAssigner {
            next: existing.map_or(1, |s| s.highest_field_id() + 1),
            existing,
        };
        ids.assign(&mut columns, "");
        let mut pk = Vec::with_capacity(primary_key.len());
        for name in primary_key {
            let i = columns
                .iter()
                .position(|c| &c.name == name)
                .ok_or_else(|| format!("primary key column `{name}` is not a column of the row"))?;
            if !matches!(columns[i].codec.iceberg_type(), Type::Primitive(_)) {
                return Err(format!(
                    "primary key column `{name}` is a {}; Iceberg identifier fields must be primitive",
                    columns[i].codec.describe()
                ));
            }
            columns[i].required = true;
            pk.push(i);
        }
        let key_fields = pk.iter().map(|&i| columns[i].clone()).collect();
        Ok(TableSchema {
            columns,
            primary_key: pk,
            key_fields,
            source,
            arrow: OnceLock::new(),
        })
    }

    pub fn columns(&self) -> &[Field] {
        &self.columns
    }

    /// Indices into [`columns`](Self::columns) of the primary key, in key order; empty for an
    /// append-only table.
    pub fn primary_key(&self) -> &[usize] {
        &self.primary_key
    }

    pub fn primary_key_names(&self) -> Vec<&str> {
        self.primary_key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }

    pub(crate) fn has_primary_key(&self, names: &[String]) -> bool {
        self.primary_key.len() == names.len()
            && self
                .primary_key
                .iter()
                .zip(names)
                .all(|(&i, n)| self.columns[i].name == *n)
    }

    /// A table without columns, for changes that carry none (a truncate before any row).
    pub(crate) fn empty() -> TableSchema {
        TableSchema {
            columns: Vec::new(),
            primary_key: Vec::new(),
            key_fields: Vec::new(),
            source: Arc::new(RowSchema { fields: Vec::new() }),
            arrow: OnceLock::new(),
        }
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The Iceberg schema for creating the table: these columns and ids, identifier fields =
    /// the primary key.
    pub fn to_iceberg_schema(&self) -> iceberg::Result<IcebergSchema> {
        IcebergSchema::builder()
            .with_schema_id(0)
            .with_fields(self.columns.iter().map(Field::to_nested_field))
            .with_identifier_field_ids(self.primary_key.iter().map(|&i| self.columns[i].id))
            .build()
    }
}

struct IdAssigner<'a> {
    next: i32,
    existing: Option<&'a IcebergSchema>,
}

impl IdAssigner<'_> {
    fn id_for(&mut self, path: &str) -> i32 {
        if let Some(f) = self.existing.and_then(|s| s.field_by_name(path)) {
            return f.id;
        }
        let id = self.next;
        self.next += 1;
        id
    }

    fn assign(&mut self, fields: &mut [Field], prefix: &str) {
        for f in fields.iter_mut() {
            f.id = self.id_for(&join(prefix, &f.name));
        }
        for f in fields.iter_mut() {
            let path = join(prefix, &f.name);
            self.nested(&mut f.codec, &path);
        }
    }

    fn nested(&mut self, codec: &mut Codec, path: &str) {
        match codec {
            Codec::Struct(fields) => self.assign(fields, path),
            Codec::List(element) => {
                let p = join(path, "element");
                element.id = self.id_for(&p);
                self.nested(&mut element.codec, &p);
            }
            Codec::Map(key, value) => {
                let (kp, vp) = (join(path, "key"), join(path, "value"));
                key.id = self.id_for(&kp);
                value.id = self.id_for(&vp);
                self.nested(&mut key.codec, &kp);
                self.nested(&mut value.codec, &vp);
            }
            _ => {}
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A Kafka Connect schema as the JsonConverter writes it (`schemas.enable=true`).
#[derive(Debug, Deserialize)]
pub(crate) struct ConnectSchema {
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub keys: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub values: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
}

impl ConnectSchema {
    pub fn parse(raw: &str) -> Result<ConnectSchema, String> {
        serde_json::from_str(raw).map_err(|e| format!("not a Connect schema: {e}"))
    }

    pub fn field(&self, name: &str) -> Option<&ConnectSchema> {
        self.fields
            .iter()
            .find(|f| f.field.as_deref() == Some(name))
    }

    fn param_i64(&self, key: &str) -> Result<Option<i64>, String> {
        match self.parameters.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("parameter {key} = {s:?} is not an integer")),
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("parameter {key} = {n} is not an integer")),
            Some(other) => Err(format!("parameter {key} = {other} is not an integer")),
        }
    }

    /// The columns of a struct schema. `skip` leaves out fields by name (the flattened
    /// format's `__` metadata fields).
    pub fn compile_struct(
        &self,
        vsd: VariableScaleDecimalAs,
        skip: impl Fn(&str) -> bool,
    ) -> Result<RowSchema, String> {
        if self.ty != "struct" {
            return Err(format!("expected a struct schema, got {:?}", self.ty));
        }
        let mut seen = HashSet::new();
        let mut fields = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let name = f
                .field
                .as_deref()
                .ok_or("a struct field without a `field` name")?;
            if skip(name) {
                continue;
            }
            if !seen.insert(name) {
                return Err(format!("field `{name}` appears twice"));
            }
            fields.push(f.compile(name, vsd)?);
        }
        Ok(RowSchema { fields })
    }

    fn compile(&self, name: &str, vsd: VariableScaleDecimalAs) -> Result<Field, String> {
        let at = |e: String| format!("field `{name}`: {e}");
        let ty = self.ty.as_str();
        let codec = match (self.name.as_deref().unwrap_or(""), ty) {
            ("org.apache.kafka.connect.data.Decimal", "bytes") => {
                let scale = self
                    .param_i64("scale")
                    .map_err(at)?
                    .ok_or_else(|| at("Decimal without a scale parameter".into()))?;
                let precision = self.param_i64("connect.decimal.precision").map_err(at)?;
                let scale = i32::try_from(scale).map_err(|_| at(format!("scale {scale}")))?;
                match precision {
                    Some(p) if p > MAX_DECIMAL_PRECISION as i64 => {
                        Codec::WideDecimal { scale, target: vsd }
                    }
                    _ if scale < 0 || scale > MAX_DECIMAL_PRECISION as i32 => {
                        Codec::WideDecimal { scale, target: vsd }
                    }
                    // Without a precision parameter the widest decimal holds every value
                    // that has this scale and fits Iceberg at all.
                    p => {
                        let scale = scale as u32;
                        let precision = p
                            .map_or(MAX_DECIMAL_PRECISION, |p| p.max(1) as u32)
                            .max(scale);
                        Codec::Decimal { precision, scale }
                    }
                }
            }
            ("io.debezium.data.VariableScaleDecimal", "struct") => Codec::VariableScaleDecimal(vsd),
            ("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date", "int32") => {
                Codec::Date
            }
            ("io.debezium.time.Time" | "org.apache.kafka.connect.data.Time", "int32") => {
                Codec::TimeMillis
            }
            ("io.debezium.time.MicroTime", "int64") => Codec::TimeMicros,
            ("io.debezium.time.NanoTime", "int64") => Codec::TimeNanos,
            ("io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp", "int64") => {
                Codec::TimestampMillis
            }
            ("io.debezium.time.MicroTimestamp", "int64") => Codec::TimestampMicros,
            ("io.debezium.time.NanoTimestamp", "int64") => Codec::TimestampNanos,
            ("io.debezium.time.ZonedTimestamp", "string") => Codec::ZonedTimestamp,
            // Other logical types are read as their physical type: Json, Xml, Enum, EnumSet,
            // Uuid and ZonedTime are strings, Bits is bytes, Year is int32, MicroDuration is
            // int64, geometries are structs.
            // The type names are the JsonConverter's (Kafka's `JsonSchema`): FLOAT32 and
            // FLOAT64 are written "float" and "double", not by their `Schema.Type` names.
            (_, "int8" | "int16" | "int32") => Codec::Int,
            (_, "int64") => Codec::Long,
            (_, "float") => Codec::Float,
            (_, "double") => Codec::Double,
            (_, "boolean") => Codec::Boolean,
            (_, "string") => Codec::String,
            (_, "bytes") => Codec::Binary,
            (_, "array") => {
                let items = self
                    .items
                    .as_deref()
                    .ok_or_else(|| at("array without items".into()))?;
                Codec::List(Box::new(items.compile("element", vsd).map_err(at)?))
            }
            (_, "map") => {
                let (Some(k), Some(v)) = (self.keys.as_deref(), self.values.as_deref()) else {
                    return Err(at("map without keys or values".into()));
                };
                let mut key = k.compile("key", vsd).map_err(at)?;
                key.required = true;
                Codec::Map(
                    Box::new(key),
                    Box::new(v.compile("value", vsd).map_err(at)?),
                )
            }
            (_, "struct") => {
                if self.fields.is_empty() {
                    return Err(at(
                        "a struct without fields cannot be an Iceberg column".into()
                    ));
                }
                Codec::Struct(self.compile_struct(vsd, |_| false).map_err(at)?.fields)
            }
            (_, other) => {
                return Err(at(format!(
                    "unknown Connect type {other:?}; the JsonConverter writes boolean, int8, \
                     int16, int32, int64, float, double, bytes, string, array, map or struct"
                )));
            }
        };
        Ok(Field::new(name, codec))
    }
}

/// Compiled schemas found by their raw JSON bytes. Bounded: when full it starts over, which
/// only costs recompiling the schemas still in use.
#[derive(Debug)]
pub(crate) struct SchemaCache<T> {
    map: FxHashMap<Box<[u8]>, T>,
    capacity: usize,
}

impl<T: Clone> SchemaCache<T> {
    pub fn new(capacity: usize) -> Self {
        SchemaCache {
            map: FxHashMap::default(),
            capacity,
        }
    }

    pub fn get_or_compile(
        &mut self,
        raw: &[u8],
        compile: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        if let Some(hit) = self.map.get(raw) {
            return Ok(hit.clone());
        }
        let compiled = compile()?;
        if self.map.len() >= self.capacity {
            self.map.clear();
        }
        self.map.insert(raw.into(), compiled.clone());
        Ok(compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(json: &str) -> RowSchema {
        ConnectSchema::parse(json)
            .unwrap()
            .compile_struct(VariableScaleDecimalAs::String, |_| false)
            .unwrap()
    }

    #[test]
    fn fresh_ids_go_to_top_level_columns_first_then_nested() {
        let row = compile(
            r#"{"type":"struct","fields":[
                {"type":"int32","optional":false,"field":"id"},
                {"type":"array","items":{"type":"string"},"field":"tags"},
                {"type":"map","keys":{"type":"string"},"values":{"type":"int64"},"field":"m"},
                {"type":"struct","fields":[{"type":"string","field":"city"}],"field":"addr"}]}"#,
        );
        let t = TableSchema::new(Arc::new(row), &["id".into()], None).unwrap();
        let ids: Vec<i32> = t.columns().iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        let Codec::List(e) = &t.columns()[1].codec else {
            panic!()
        };
        assert_eq!(e.id, 5);
        let Codec::Map(k, v) = &t.columns()[2].codec else {
            panic!()
        };
        assert_eq!((k.id, v.id, k.required), (6, 7, true));
        let Codec::Struct(f) = &t.columns()[3].codec else {
            panic!()
        };
        assert_eq!(f[0].id, 8);
        let iceberg = t.to_iceberg_schema().unwrap();
        assert_eq!(iceberg.identifier_field_ids().collect::<Vec<_>>(), [1]);
        assert!(iceberg.field_by_id(1).unwrap().required);
        assert!(!iceberg.field_by_id(2).unwrap().required);
        assert_eq!(iceberg.highest_field_id(), 8);
    }

    #[test]
    fn ids_are_reused_from_an_existing_table_by_name() {
        let existing = IcebergSchema::builder()
            .with_fields([
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Int)).into(),
                NestedField::optional(7, "name", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .unwrap();
        let row = compile(
            r#"{"type":"struct","fields":[
                {"type":"string","field":"name"},{"type":"int32","field":"id"},
                {"type":"boolean","field":"new_col"}]}"#,
        );
        let t = TableSchema::new(Arc::new(row), &["id".into()], Some(&existing)).unwrap();
        let ids: Vec<i32> = t.columns().iter().map(|c| c.id).collect();
        assert_eq!(ids, [7, 1, 8]);
    }

    #[test]
    fn decimals_follow_their_parameters() {
        let row = compile(
            r#"{"type":"struct","fields":[
              {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"a"},
              {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"0","connect.decimal.precision":"50"},"field":"b"},
              {"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"3"},"field":"c"}]}"#,
        );
        let codecs: Vec<&Codec> = row.fields.iter().map(|f| &f.codec).collect();
        assert_eq!(
            codecs,
            [
                &Codec::Decimal {
                    precision: 10,
                    scale: 2
                },
                &Codec::WideDecimal {
                    scale: 0,
                    target: VariableScaleDecimalAs::String
                },
                &Codec::Decimal {
                    precision: 38,
                    scale: 3
                },
            ]
        );
    }

    #[test]
    fn a_primary_key_must_name_a_primitive_column() {
        let row = Arc::new(compile(
            r#"{"type":"struct","fields":[{"type":"array","items":{"type":"string"},"field":"a"}]}"#,
        ));
        assert_eq!(
            TableSchema::new(row.clone(), &["x".into()], None).unwrap_err(),
            "primary key column `x` is not a column of the row"
        );
        assert!(
            TableSchema::new(row, &["a".into()], None)
                .unwrap_err()
                .contains("must be primitive")
        );
    }
}
