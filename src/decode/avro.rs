//! Avro records in the Confluent wire format (a zero byte, a 4-byte big-endian schema id, the
//! Avro binary), as Confluent's AvroConverter writes them: read with the writer's schema from
//! a Schema Registry and rewritten as the JSON Kafka Connect's JsonConverter writes for the
//! same Connect record (`{"schema": ..., "payload": ...}`). The rest of the decoder then reads
//! both converters' records the same way, so an Avro topic and a JSON topic of the same
//! changes give the same table.
//!
//! The Connect schema comes from the Avro schema as the AvroConverter maps it back: records
//! are structs, a union of null and one type is an optional field, `connect.name`,
//! `connect.parameters`, `connect.version` and `connect.type` carry the Connect names
//! (Debezium's logical types among them), and Avro's own logical types (decimal, date,
//! time-millis, timestamp-millis, timestamp-micros) map to the Connect or Debezium type of the
//! same meaning. Each schema id is fetched and converted once per decoder.

use std::fmt::Write as _;
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value as AvroValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustc_hash::FxHashMap;
use serde_json::{Map, Value as Json, json};

use super::error::{DecodeErrorKind, RecordPart};
use super::{DecodeError, KafkaRecord};

/// Where schemas are fetched from by id (the Schema Registry; a fixed set in tests).
pub trait SchemaSource: Send + Sync {
    /// The Avro schema (its JSON text) registered under `id`.
    fn fetch(&self, id: u32) -> Result<String, FetchError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The registry answered, and this id cannot be used (unknown, not Avro): the record's
    /// fault.
    Unusable(String),
    /// The registry could not be asked (down, refusing Floe's credentials): not the record's
    /// fault; the run stops before it.
    Unavailable(String),
}

/// One registered schema, ready to read records with.
struct Compiled {
    /// The writer's schema with Avro's logical types left out: values come back as the plain
    /// ints, longs and bytes the JsonConverter would write for them.
    avro: AvroSchema,
    /// The Connect schema the JsonConverter would write, as JSON text.
    connect: String,
}

/// Reads Confluent-framed Avro keys and values into the JsonConverter's JSON.
pub(crate) struct AvroReader {
    source: Arc<dyn SchemaSource>,
    compiled: FxHashMap<u32, Arc<Compiled>>,
    keys: bool,
    values: bool,
}

/// A record's key and value rewritten as JSON; `None` where the part is absent or was not Avro.
pub(crate) struct Transcoded {
    pub key: Option<String>,
    pub value: Option<String>,
}

impl AvroReader {
    pub fn new(source: Arc<dyn SchemaSource>, keys: bool, values: bool) -> AvroReader {
        AvroReader {
            source,
            compiled: FxHashMap::default(),
            keys,
            values,
        }
    }

    pub fn transcode(&mut self, rec: &KafkaRecord<'_>) -> Result<Transcoded, DecodeError> {
        let key = match rec.key {
            Some(bytes) if self.keys => Some(self.part(rec, RecordPart::Key, bytes)?),
            _ => None,
        };
        let value = match rec.value {
            Some(bytes) if self.values => Some(self.part(rec, RecordPart::Value, bytes)?),
            _ => None,
        };
        Ok(Transcoded { key, value })
    }

    fn part(
        &mut self,
        rec: &KafkaRecord<'_>,
        part: RecordPart,
        bytes: &[u8],
    ) -> Result<String, DecodeError> {
        let bad = |message: String| rec.error(DecodeErrorKind::Avro { part, message });
        let (id, body) = frame(bytes, rec).map_err(bad)?;
        let compiled = self.compiled(id).map_err(|e| match e {
            FetchError::Unusable(message) => bad(message),
            FetchError::Unavailable(message) => {
                rec.error(DecodeErrorKind::Registry { part, message })
            }
        })?;
        let mut reader = body;
        let value = apache_avro::from_avro_datum(&compiled.avro, &mut reader, None)
            .map_err(|e| bad(format!("the Avro binary does not match schema id {id}: {e}")))?;
        if !reader.is_empty() {
            return Err(bad(format!(
                "{} bytes left over after the record of schema id {id}",
                reader.len()
            )));
        }
        let mut out = String::with_capacity(compiled.connect.len() + body.len() * 2 + 32);
        out.push_str("{\"schema\":");
        out.push_str(&compiled.connect);
        out.push_str(",\"payload\":");
        write_json(&mut out, &value);
        out.push('}');
        Ok(out)
    }

    fn compiled(&mut self, id: u32) -> Result<Arc<Compiled>, FetchError> {
        if let Some(c) = self.compiled.get(&id) {
            return Ok(c.clone());
        }
        let text = self.source.fetch(id)?;
        let compiled = Arc::new(
            compile(&text).map_err(|e| FetchError::Unusable(format!("schema id {id}: {e}")))?,
        );
        self.compiled.insert(id, compiled.clone());
        Ok(compiled)
    }
}

/// The schema id and the Avro binary of a Confluent-framed part.
fn frame<'b>(bytes: &'b [u8], rec: &KafkaRecord<'_>) -> Result<(u32, &'b [u8]), String> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => {
            let apicurio = rec
                .headers
                .iter()
                .any(|(k, _)| k.starts_with("apicurio.") || k.starts_with("apicurio_"));
            let first = bytes
                .iter()
                .take(5)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            Err(format!(
                "not in the Confluent wire format (a zero byte, then a 4-byte schema id): it \
                 starts with [{first}]{}; Floe reads what io.confluent.connect.avro.AvroConverter \
                 writes, or Apicurio's converter with apicurio.registry.as-confluent=true and \
                 apicurio.registry.headers.enabled=false",
                if apicurio {
                    " and its schema id is in Apicurio's headers"
                } else {
                    ""
                }
            ))
        }
    }
}

fn compile(text: &str) -> Result<Compiled, String> {
    let json: Json =
        serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
    let mut names = FxHashMap::default();
    let connect = match connect_schema(&json, None, &mut names)? {
        (schema, _) if schema["type"] != "struct" => {
            return Err(format!(
                "a record's top-level schema must be an Avro record, not {}",
                shown(&json)
            ));
        }
        (mut schema, optional) => {
            schema.insert("optional".into(), Json::Bool(optional));
            Json::Object(schema).to_string()
        }
    };
    let mut plain = json;
    strip_logical_types(&mut plain);
    let avro = AvroSchema::parse(&plain).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    Ok(Compiled { avro, connect })
}

fn shown(json: &Json) -> String {
    let text = json.to_string();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// Removes `logicalType` everywhere, so that the Avro reader hands back the underlying values.
fn strip_logical_types(json: &mut Json) {
    match json {
        Json::Object(map) => {
            map.remove("logicalType");
            map.values_mut().for_each(strip_logical_types);
        }
        Json::Array(items) => items.iter_mut().for_each(strip_logical_types),
        _ => {}
    }
}

/// The Connect schemas of the named types (records, enums, fixed) seen so far, by full name.
type Names = FxHashMap<String, (Map<String, Json>, bool)>;

/// The Connect schema of one Avro schema, and whether it is optional (a union with null).
fn connect_schema(
    avro: &Json,
    namespace: Option<&str>,
    names: &mut Names,
) -> Result<(Map<String, Json>, bool), String> {
    match avro {
        Json::String(name) => match primitive(name) {
            Some(ty) => Ok((connect_type(ty), false)),
            None if name == "null" => Err("a field of type null holds nothing".into()),
            None => {
                let full = full_name(name, namespace);
                names
                    .get(&full)
                    .or_else(|| names.get(name.as_str()))
                    .cloned()
                    .ok_or_else(|| format!("unknown type name {name:?}"))
            }
        },
        Json::Array(branches) => {
            let others: Vec<&Json> = branches.iter().filter(|b| *b != "null").collect();
            match others.as_slice() {
                [one] => {
                    let (schema, _) = connect_schema(one, namespace, names)?;
                    Ok((schema, others.len() < branches.len()))
                }
                _ => Err(format!(
                    "the union {} is not one type or null; Floe reads unions of null and one \
                     type (Connect's optional fields)",
                    shown(avro)
                )),
            }
        }
        Json::Object(obj) => {
            let ty = obj
                .get("type")
                .ok_or_else(|| format!("a schema without a type: {}", shown(avro)))?;
            let mut schema = match ty.as_str() {
                Some("record") => record(obj, namespace, names)?,
                Some("enum") => {
                    let schema = connect_type("string");
                    register(obj, namespace, names, &schema);
                    schema
                }
                Some("fixed") => {
                    let schema = logical(obj, "bytes")?;
                    register(obj, namespace, names, &schema);
                    schema
                }
                Some("array") => {
                    let items = obj.get("items").ok_or("an array without items")?;
                    let (mut items, optional) = connect_schema(items, namespace, names)?;
                    items.insert("optional".into(), Json::Bool(optional));
                    let mut schema = connect_type("array");
                    schema.insert("items".into(), Json::Object(items));
                    schema
                }
                Some("map") => {
                    let values = obj.get("values").ok_or("a map without values")?;
                    let (mut values, optional) = connect_schema(values, namespace, names)?;
                    values.insert("optional".into(), Json::Bool(optional));
                    let mut schema = connect_type("map");
                    schema.insert(
                        "keys".into(),
                        json!({"type": "string", "optional": false}),
                    );
                    schema.insert("values".into(), Json::Object(values));
                    schema
                }
                Some(p) if primitive(p).is_some() => logical(obj, p)?,
                // {"type": {...}} or {"type": [...]}: a schema wrapped in another.
                _ => return connect_schema(ty, namespace, names),
            };
            annotate(obj, &mut schema);
            Ok((schema, false))
        }
        _ => Err(format!("not an Avro schema: {}", shown(avro))),
    }
}

fn record(
    obj: &Map<String, Json>,
    namespace: Option<&str>,
    names: &mut Names,
) -> Result<Map<String, Json>, String> {
    let name = obj
        .get("name")
        .and_then(Json::as_str)
        .ok_or("a record without a name")?;
    let full = match obj.get("namespace").and_then(Json::as_str) {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => full_name(name, namespace),
    };
    let inner = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
    let mut fields = Vec::new();
    for f in obj
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| format!("record {full} has no fields list"))?
    {
        let field = f
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("a field of record {full} has no name"))?;
        let ty = f
            .get("type")
            .ok_or_else(|| format!("field {full}.{field} has no type"))?;
        let (mut schema, optional) = connect_schema(ty, inner.as_deref(), names)
            .map_err(|e| format!("field {full}.{field}: {e}"))?;
        schema.insert("optional".into(), Json::Bool(optional));
        schema.insert("field".into(), Json::String(field.to_string()));
        fields.push(Json::Object(schema));
    }
    let mut schema = connect_type("struct");
    schema.insert("fields".into(), Json::Array(fields));
    schema.insert("name".into(), Json::String(full.clone()));
    annotate(obj, &mut schema);
    names.insert(full, (schema.clone(), false));
    Ok(schema)
}

fn register(obj: &Map<String, Json>, namespace: Option<&str>, names: &mut Names, schema: &Map<String, Json>) {
    if let Some(name) = obj.get("name").and_then(Json::as_str) {
        let full = match obj.get("namespace").and_then(Json::as_str) {
            Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
            _ => full_name(name, namespace),
        };
        let mut schema = schema.clone();
        annotate(obj, &mut schema);
        names.insert(full, (schema, false));
    }
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// The Connect type of an Avro primitive.
fn primitive(avro: &str) -> Option<&'static str> {
    Some(match avro {
        "boolean" => "boolean",
        "int" => "int32",
        "long" => "int64",
        "float" => "float",
        "double" => "double",
        "bytes" => "bytes",
        "string" => "string",
        _ => return None,
    })
}

fn connect_type(ty: &str) -> Map<String, Json> {
    let mut schema = Map::new();
    schema.insert("type".into(), Json::String(ty.into()));
    schema
}

/// A primitive (or fixed) with attributes: Avro's logical types and Connect's `connect.type`.
fn logical(obj: &Map<String, Json>, avro_type: &str) -> Result<Map<String, Json>, String> {
    let connect = match avro_type {
        "fixed" => "bytes",
        other => primitive(other).unwrap_or(other),
    };
    let mut schema = match obj.get("connect.type").and_then(Json::as_str) {
        // AvroConverter writes int8 and int16 as Avro ints marked with connect.type.
        Some(t @ ("int8" | "int16")) if connect == "int32" => connect_type(t),
        _ => connect_type(connect),
    };
    let name = |schema: &mut Map<String, Json>, name: &str| {
        schema.insert("name".into(), Json::String(name.into()));
    };
    match (obj.get("logicalType").and_then(Json::as_str), connect) {
        (Some("decimal"), "bytes") => {
            let scale = obj.get("scale").and_then(Json::as_u64).unwrap_or(0);
            name(&mut schema, "org.apache.kafka.connect.data.Decimal");
            let mut parameters = Map::new();
            parameters.insert("scale".into(), Json::String(scale.to_string()));
            if let Some(p) = obj.get("precision").and_then(Json::as_u64) {
                parameters.insert(
                    "connect.decimal.precision".into(),
                    Json::String(p.to_string()),
                );
            }
            schema.insert("parameters".into(), Json::Object(parameters));
        }
        (Some("date"), "int32") => name(&mut schema, "org.apache.kafka.connect.data.Date"),
        (Some("time-millis"), "int32") => name(&mut schema, "org.apache.kafka.connect.data.Time"),
        (Some("time-micros"), "int64") => name(&mut schema, "io.debezium.time.MicroTime"),
        (Some("timestamp-millis"), "int64") => {
            name(&mut schema, "org.apache.kafka.connect.data.Timestamp")
        }
        (Some("timestamp-micros"), "int64") => {
            name(&mut schema, "io.debezium.time.MicroTimestamp")
        }
        _ => {}
    }
    Ok(schema)
}

/// Copies the Connect annotations AvroConverter keeps on an Avro schema: they name Connect's
/// and Debezium's logical types and carry their parameters.
fn annotate(obj: &Map<String, Json>, schema: &mut Map<String, Json>) {
    if let Some(name) = obj.get("connect.name").and_then(Json::as_str) {
        schema.insert("name".into(), Json::String(name.into()));
    }
    if let Some(v) = obj.get("connect.version") {
        schema.insert("version".into(), v.clone());
    }
    if let Some(Json::Object(p)) = obj.get("connect.parameters") {
        let merged = match schema.remove("parameters") {
            Some(Json::Object(mut own)) => {
                own.extend(p.clone());
                own
            }
            _ => p.clone(),
        };
        schema.insert("parameters".into(), Json::Object(merged));
    }
}

/// Writes an Avro value as the JsonConverter writes the Connect value it stands for: bytes in
/// base64, floats as the exact double, NaN and the infinities as strings.
fn write_json(out: &mut String, value: &AvroValue) {
    match value {
        AvroValue::Null => out.push_str("null"),
        AvroValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        AvroValue::Int(i) | AvroValue::Date(i) | AvroValue::TimeMillis(i) => {
            let _ = write!(out, "{i}");
        }
        AvroValue::Long(i)
        | AvroValue::TimeMicros(i)
        | AvroValue::TimestampMillis(i)
        | AvroValue::TimestampMicros(i)
        | AvroValue::TimestampNanos(i)
        | AvroValue::LocalTimestampMillis(i)
        | AvroValue::LocalTimestampMicros(i)
        | AvroValue::LocalTimestampNanos(i) => {
            let _ = write!(out, "{i}");
        }
        // Widened to the double of the same value, which reads back as exactly this float.
        AvroValue::Float(f) => write_double(out, f64::from(*f)),
        AvroValue::Double(d) => write_double(out, *d),
        AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => {
            out.push('"');
            BASE64.encode_string(b, out);
            out.push('"');
        }
        AvroValue::String(s) | AvroValue::Enum(_, s) => write_string(out, s),
        AvroValue::Uuid(u) => write_string(out, &u.to_string()),
        AvroValue::Union(_, inner) => write_json(out, inner),
        AvroValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        AvroValue::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
        AvroValue::Record(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
        // Logical types are stripped from the schema before reading, so these never come
        // back; written as text rather than lost if they ever do.
        other => write_string(out, &format!("{other:?}")),
    }
}

fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("\"NaN\"");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // serde_json writes the shortest text that reads back as the same double.
        out.push_str(&serde_json::to_string(&d).expect("a finite double is valid JSON"));
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("a string is valid JSON"));
}
