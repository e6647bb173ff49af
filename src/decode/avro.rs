//! Avro records in the Confluent wire format (a zero byte, a 4-byte big-endian schema id, the
//! Avro binary), as Confluent's AvroConverter writes them: read with the writer's schema from
//! a Schema Registry and rewritten as the JSON Kafka Connect's JsonConverter writes for the
//! same Connect record. A key becomes the JsonConverter's whole `{"schema", "payload"}`; a
//! value only its payload, handed over with the Connect schema compiled once per schema id.
//! The rest of the decoder then reads both converters' records the same way, so an Avro
//! topic and a JSON topic of the same changes give the same table.
//!
//! The Connect schema comes from the Avro schema as the AvroConverter maps it back: records
//! are structs, a union of null and one type is an optional field, `connect.name`,
//! `connect.parameters`, `connect.version` and `connect.type` carry the Connect names
//! (Debezium's logical types among them), and Avro's own logical types (decimal, date,
//! time-millis, timestamp-millis, timestamp-micros) map to the Connect or Debezium type of the
//! same meaning. Each schema id is fetched and converted once per decoder.

use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value as Avro;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustc_hash::FxHashMap;
use serde_json::{Map, Value as Json, json};

use super::envelope::SchemaText;
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
    /// The decoder's cache key for `connect`: a zero byte (which no JSON text starts with)
    /// and the schema id.
    key: [u8; 5],
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
    /// The key as the JsonConverter writes it, schema and payload.
    pub key: Option<String>,
    pub value: Option<AvroValue>,
}

/// A value's payload as JSON, with its Connect schema: the schema is not written into the
/// JSON, so the decoder need not read over it for every record.
pub(crate) struct AvroValue {
    compiled: Arc<Compiled>,
    pub payload: String,
}

impl AvroValue {
    pub fn schema(&self) -> SchemaText<'_> {
        SchemaText::Known {
            key: &self.compiled.key,
            json: &self.compiled.connect,
        }
    }
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
            Some(bytes) if self.keys => {
                let (compiled, payload) = self.part(rec, RecordPart::Key, bytes)?;
                let mut key = String::with_capacity(compiled.connect.len() + payload.len() + 24);
                key.push_str("{\"schema\":");
                key.push_str(&compiled.connect);
                key.push_str(",\"payload\":");
                key.push_str(&payload);
                key.push('}');
                Some(key)
            }
            _ => None,
        };
        let value = match rec.value {
            Some(bytes) if self.values => {
                let (compiled, payload) = self.part(rec, RecordPart::Value, bytes)?;
                Some(AvroValue { compiled, payload })
            }
            _ => None,
        };
        Ok(Transcoded { key, value })
    }

    /// The part's Connect schema and its payload as JSON.
    fn part(
        &mut self,
        rec: &KafkaRecord<'_>,
        part: RecordPart,
        bytes: &[u8],
    ) -> Result<(Arc<Compiled>, String), DecodeError> {
        let bad = |message: String| rec.error(DecodeErrorKind::Avro { part, message });
        let (id, body) = frame(bytes, rec).map_err(bad)?;
        let compiled = self.compiled(id).map_err(|e| match e {
            FetchError::Unusable(message) => bad(message),
            FetchError::Unavailable(message) => {
                rec.error(DecodeErrorKind::Registry { part, message })
            }
        })?;
        let mut reader = body;
        let value =
            apache_avro::from_avro_datum_schemata(&compiled.avro, Vec::new(), &mut reader, None)
                .map_err(|e| {
                    bad(format!(
                        "the Avro binary does not match schema id {id}: {e}"
                    ))
                })?;
        if !reader.is_empty() {
            return Err(bad(format!(
                "{} bytes left over after the record of schema id {id}",
                reader.len()
            )));
        }
        let mut out = Vec::with_capacity(body.len() * 2 + 16);
        write_json(&mut out, &value);
        let out = String::from_utf8(out).expect("the JSON written is UTF-8");
        Ok((compiled, out))
    }

    fn compiled(&mut self, id: u32) -> Result<Arc<Compiled>, FetchError> {
        if let Some(c) = self.compiled.get(&id) {
            return Ok(c.clone());
        }
        let text = self.source.fetch(id)?;
        let compiled = Arc::new(
            compile(id, &text).map_err(|e| FetchError::Unusable(format!("schema id {id}: {e}")))?,
        );
        self.compiled.insert(id, compiled.clone());
        Ok(compiled)
    }
}

/// The schema id and the Avro binary of a Confluent-framed part.
fn frame<'b>(bytes: &'b [u8], rec: &KafkaRecord<'_>) -> Result<(u32, &'b [u8]), String> {
    match bytes {
        // Confluent's ids start at 1. A zero is the top half of Apicurio's default 8-byte id.
        [0, 0, 0, 0, 0, ..] => Err(
            "schema id 0 in the Confluent wire format: this is what Apicurio's converter writes \
             with its default 8-byte ids; set apicurio.registry.as-confluent=true (4-byte ids) \
             and apicurio.registry.headers.enabled=false"
                .to_string(),
        ),
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

fn compile(id: u32, text: &str) -> Result<Compiled, String> {
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
    // Without references the reader needs no table of names, which it would otherwise build
    // for every record.
    let avro = Inliner::default()
        .inline(&json, None)
        .ok_or("a recursive schema, which no Connect schema is")?;
    let avro = AvroSchema::parse(&avro).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    let mut key = [0; 5];
    key[1..].copy_from_slice(&id.to_be_bytes());
    Ok(Compiled { avro, connect, key })
}

fn shown(json: &Json) -> String {
    let text = json.to_string();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// Rewrites a schema without references to named types: each use after the first gets a
/// copy of the definition, its named types renamed (names do not change the binary form).
/// Leaves out `logicalType` everywhere, so that the Avro reader hands back the underlying
/// values. `None` for a recursive schema, which cannot be written out.
#[derive(Default)]
struct Inliner {
    defined: FxHashMap<String, Json>,
    open: Vec<String>,
    copies: usize,
}

impl Inliner {
    fn inline(&mut self, avro: &Json, namespace: Option<&str>) -> Option<Json> {
        match avro {
            Json::String(name) if primitive(name).is_some() || name == "null" => Some(avro.clone()),
            Json::String(name) => {
                let full = full_name(name, namespace);
                let full = if self.defined.contains_key(&full) {
                    full
                } else {
                    name.clone()
                };
                if self.open.contains(&full) {
                    return None;
                }
                let mut copy = self.defined.get(&full)?.clone();
                self.copies += 1;
                rename(&mut copy, &format!("__floe_copy{}", self.copies));
                Some(copy)
            }
            Json::Array(branches) => branches
                .iter()
                .map(|b| self.inline(b, namespace))
                .collect::<Option<Vec<_>>>()
                .map(Json::Array),
            Json::Object(obj) => {
                let mut out = obj.clone();
                out.remove("logicalType");
                let named = matches!(
                    obj.get("type").and_then(Json::as_str),
                    Some("record" | "enum" | "fixed")
                );
                let full = defined_name(obj, namespace).filter(|_| named);
                let inner = full
                    .as_deref()
                    .and_then(|f| f.rsplit_once('.').map(|(ns, _)| ns.to_string()))
                    .or_else(|| namespace.map(str::to_string));
                if let Some(full) = &full {
                    self.open.push(full.clone());
                }
                if let Some(Json::Array(fields)) = obj.get("fields") {
                    let mut done = Vec::with_capacity(fields.len());
                    for f in fields {
                        let mut f = f.as_object()?.clone();
                        let ty = self.inline(f.get("type")?, inner.as_deref())?;
                        f.insert("type".into(), ty);
                        done.push(Json::Object(f));
                    }
                    out.insert("fields".into(), Json::Array(done));
                }
                for key in ["items", "values"] {
                    if let Some(v) = obj.get(key) {
                        out.insert(key.into(), self.inline(v, namespace)?);
                    }
                }
                if let Some(ty @ (Json::Object(_) | Json::Array(_))) = obj.get("type") {
                    out.insert("type".into(), self.inline(ty, namespace)?);
                }
                if let Some(full) = full {
                    self.open.pop();
                    // Written with its full name, so that a copy elsewhere keeps it.
                    out.insert("name".into(), Json::String(full.clone()));
                    out.remove("namespace");
                    self.defined.insert(full, Json::Object(out.clone()));
                }
                Some(Json::Object(out))
            }
            _ => Some(avro.clone()),
        }
    }
}

/// Gives every named type in `avro` (written with full names, without references) a new
/// name ending in `suffix`.
fn rename(avro: &mut Json, suffix: &str) {
    match avro {
        Json::Object(obj) => {
            if matches!(
                obj.get("type").and_then(Json::as_str),
                Some("record" | "enum" | "fixed")
            ) && let Some(name) = obj.get("name").and_then(Json::as_str)
            {
                let renamed = format!("{name}{suffix}");
                obj.insert("name".into(), Json::String(renamed));
            }
            obj.values_mut().for_each(|v| rename(v, suffix));
        }
        Json::Array(items) => items.iter_mut().for_each(|v| rename(v, suffix)),
        _ => {}
    }
}

/// The Connect schemas of the named types (records, enums, fixed) seen so far, by full name.
type Names = FxHashMap<String, Map<String, Json>>;

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
                    .map(|schema| (schema.clone(), false))
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
                    schema.insert("keys".into(), json!({"type": "string", "optional": false}));
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
    let full = defined_name(obj, namespace).ok_or("a record without a name")?;
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
    names.insert(full, schema.clone());
    Ok(schema)
}

fn register(
    obj: &Map<String, Json>,
    namespace: Option<&str>,
    names: &mut Names,
    schema: &Map<String, Json>,
) {
    if let Some(full) = defined_name(obj, namespace) {
        let mut schema = schema.clone();
        annotate(obj, &mut schema);
        names.insert(full, schema);
    }
}

/// The full name a named type's definition gives it: its own namespace, else the enclosing
/// one.
fn defined_name(obj: &Map<String, Json>, namespace: Option<&str>) -> Option<String> {
    let name = obj.get("name").and_then(Json::as_str)?;
    let own = obj
        .get("namespace")
        .and_then(Json::as_str)
        .filter(|ns| !ns.is_empty());
    Some(full_name(name, own.or(namespace)))
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
            // 64 is what the AvroConverter writes for a Decimal without a precision.
            if let Some(p) = obj
                .get("precision")
                .and_then(Json::as_u64)
                .filter(|p| *p != 64)
            {
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
        (Some("timestamp-micros"), "int64") => name(&mut schema, "io.debezium.time.MicroTimestamp"),
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
    // The Connect schema's own parameters, where the converter kept them: they replace what
    // the Avro logical type says (a Decimal without a stated precision gets the Avro
    // default of 64 there, which is not the Connect schema's).
    if let Some(p @ Json::Object(_)) = obj.get("connect.parameters") {
        schema.insert("parameters".into(), p.clone());
    }
}

/// Writes an Avro value as the JsonConverter writes the Connect value it stands for: bytes in
/// base64, floats as the exact double, NaN and the infinities as strings.
fn write_json(out: &mut Vec<u8>, value: &Avro) {
    match value {
        Avro::Null => out.extend_from_slice(b"null"),
        Avro::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
        }
        Avro::Long(i)
        | Avro::TimeMicros(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::TimestampNanos(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i)
        | Avro::LocalTimestampNanos(i) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
        }
        // Widened to the double of the same value, which reads back as exactly this float.
        Avro::Float(f) => write_double(out, f64::from(*f)),
        Avro::Double(d) => write_double(out, *d),
        Avro::Bytes(b) | Avro::Fixed(_, b) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
            let written = BASE64
                .encode_slice(b, &mut out[start..])
                .expect("room for the base64 was made above");
            out.truncate(start + written);
            out.push(b'"');
        }
        Avro::String(s) | Avro::Enum(_, s) => write_string(out, s),
        Avro::Uuid(u) => write_string(out, &u.to_string()),
        Avro::Union(_, inner) => write_json(out, inner),
        Avro::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Avro::Map(entries) => write_object(out, entries.iter()),
        Avro::Record(fields) => write_object(out, fields.iter().map(|(k, v)| (k, v))),
        // Logical types are stripped from the schema before reading, so these never come
        // back; written as text rather than lost if they ever do.
        other => write_string(out, &format!("{other:?}")),
    }
}

fn write_object<'v>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'v String, &'v Avro)>) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_json(out, v);
    }
    out.push(b'}');
}

fn write_double(out: &mut Vec<u8>, d: f64) {
    if d.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if d.is_infinite() {
        out.extend_from_slice(if d > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        // The shortest text that reads back as the same double.
        serde_json::to_writer(&mut *out, &d).expect("a finite double is valid JSON");
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to memory does not fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_types_used_twice_are_written_out_for_the_reader() {
        // Debezium's envelope names its row record once, for `before`, and refers to it for
        // `after`; a nested namespace and an enum used twice too.
        let schema = r#"{"type":"record","name":"Envelope","namespace":"srv.t","fields":[
            {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
                {"name":"id","type":"long"},
                {"name":"mood","type":{"type":"enum","name":"Mood","namespace":"x","symbols":["a","b"]}},
                {"name":"again","type":["null","x.Mood"]}]}]},
            {"name":"after","type":["null","Value"]},
            {"name":"op","type":"string"}]}"#;
        let compiled = compile(1, schema).expect("compiles");
        let value = Avro::Record(vec![
            ("before".into(), Avro::Union(0, Box::new(Avro::Null))),
            (
                "after".into(),
                Avro::Union(
                    1,
                    Box::new(Avro::Record(vec![
                        ("id".into(), Avro::Long(3)),
                        ("mood".into(), Avro::Enum(1, "b".into())),
                        (
                            "again".into(),
                            Avro::Union(1, Box::new(Avro::Enum(0, "a".into()))),
                        ),
                    ])),
                ),
            ),
            ("op".into(), Avro::String("c".into())),
        ]);
        let bytes = apache_avro::to_avro_datum(&AvroSchema::parse_str(schema).unwrap(), value)
            .expect("encodes");
        let read = apache_avro::from_avro_datum_schemata(
            &compiled.avro,
            Vec::new(),
            &mut &bytes[..],
            None,
        )
        .expect("reads without names");
        let mut json = Vec::new();
        write_json(&mut json, &read);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"before":null,"after":{"id":3,"mood":"b","again":"a"},"op":"c"}"#
        );
    }
}
