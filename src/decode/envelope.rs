//! The [`Decoder`]: one Kafka record in, one [`Change`] out. Reads Debezium's envelope
//! (`before`, `after`, `op`, `source`, `ts_ms`) with or without the Connect `schema`/`payload`
//! wrapper, record keys, tombstones, and (through [`super::flattened`]) flattened rows.
//!
//! The message is split into raw JSON parts first (`serde_json::value::RawValue`): the schema
//! part is only looked up by its bytes, and the row images are read straight into typed
//! datums. Nothing here may panic on input from Kafka; every failure is a [`DecodeError`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use iceberg::spec::Schema as IcebergSchema;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed};
use serde_json::value::RawValue;

use super::avro::{AvroReader, SchemaSource};
use super::error::{DecodeErrorKind, RecordPart};
use super::flattened::{self, FlatMeta};
use super::infer;
use super::logical::{Ctx, Datum, Key, MetaSink, Placeholder, RowSeed};
use super::schema::{ConnectSchema, Field, RowSchema, SchemaCache, TableSchema};
use super::{
    Change, DecodeError, Decoded, KafkaPosition, KafkaRecord, Op, SourceInfo, SourcePosition,
};
use crate::config::{
    Converter, DecodeConfig, DecodeFormat, SchemalessTimeUnit, TableName, TablesConfig,
    VariableScaleDecimalAs,
};
use crate::source::registry::Registry;

/// How many distinct schemas (value and key each) stay compiled.
const SCHEMA_CACHE_CAPACITY: usize = 1024;

/// Decodes records of any number of topics. Keeps per topic and per table what it learned
/// (compiled schemas, inferred columns, whether the table is keyed, the last delete per
/// partition), so one decoder should see all records of a partition in order.
pub struct Decoder {
    format: DecodeFormat,
    variable_scale_decimal: VariableScaleDecimalAs,
    schemaless_time_unit: Option<SchemalessTimeUnit>,
    tables: TablesConfig,
    topics: FxHashMap<String, TopicState>,
    value_schemas: SchemaCache<Arc<RowSchema>>,
    key_schemas: SchemaCache<Arc<RowSchema>>,
    state: FxHashMap<TableName, TableState>,
    /// Reads Avro keys and values, when either converter is Avro.
    avro: Option<AvroReader>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("format", &self.format)
            .field("tables", &self.state.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct TopicState {
    topic: Arc<str>,
    table: TableName,
    /// Per partition, the key of the last record if it was a delete: its tombstone follows.
    last_delete: FxHashMap<i32, Box<[u8]>>,
    /// The Connect schemas of the topic's last enveloped key and value ([`Decoder::json`]).
    key_schema: Option<Arc<str>>,
    value_schema: Option<Arc<str>>,
}

struct TableState {
    /// How the connector marks a value it does not have, for this table.
    placeholder: Arc<Placeholder>,
    current: Option<Arc<TableSchema>>,
    /// The table as it exists in the catalog, for field ids and schemaless types.
    existing: Option<IcebergSchema>,
    /// Columns learned from schemaless rows.
    inferred: Option<Arc<RowSchema>>,
    /// The primary key once one was seen: later records without a key are errors.
    keyed: Option<Vec<String>>,
    append_only_logged: bool,
}

/// What the record key says about the primary key.
struct KeyInfo<'a> {
    names: Vec<String>,
    /// The names come from the record key (not a `primary_key` override).
    from_record: bool,
    /// The key struct's JSON, when there is one.
    payload: Option<&'a str>,
    schema: Option<Arc<RowSchema>>,
}

impl Decoder {
    /// A decoder for the configured converters; Avro schemas come from the configured
    /// Schema Registry.
    pub fn new(decode: &DecodeConfig, tables: &TablesConfig) -> Decoder {
        let registry = decode
            .schema_registry
            .clone()
            .map(|r| Arc::new(Registry::new(r)) as Arc<dyn SchemaSource>);
        Decoder::with_schemas(decode, tables, registry)
    }

    /// A decoder that takes Avro schemas from `schemas` (needed when a converter is Avro).
    pub fn with_schemas(
        decode: &DecodeConfig,
        tables: &TablesConfig,
        schemas: Option<Arc<dyn SchemaSource>>,
    ) -> Decoder {
        let avro = schemas.map(|s| {
            AvroReader::new(
                s,
                decode.key_converter == Converter::Avro,
                decode.converter == Converter::Avro,
            )
        });
        Decoder {
            avro,
            format: decode.format,
            variable_scale_decimal: decode.variable_scale_decimal,
            schemaless_time_unit: decode.schemaless_time_unit,
            tables: tables.clone(),
            topics: FxHashMap::default(),
            value_schemas: SchemaCache::new(SCHEMA_CACHE_CAPACITY),
            key_schemas: SchemaCache::new(SCHEMA_CACHE_CAPACITY),
            state: FxHashMap::default(),
        }
    }

    /// Tells the decoder what an existing table looks like: its field ids are reused for
    /// columns of the same name, its identifier fields make it keyed, and schemaless records
    /// are read with its column types. Call again after the table's schema changed.
    pub fn register_table(
        &mut self,
        table: &TableName,
        schema: &IcebergSchema,
    ) -> Result<(), String> {
        let time_unit = self.schemaless_time_unit;
        let fields = schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| {
                Ok(Field {
                    name: f.name.clone(),
                    id: 0,
                    required: false,
                    codec: super::Codec::for_iceberg_type(&f.field_type, time_unit)
                        .map_err(|e| format!("table {table}, column {}: {e}", f.name))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let keys: Vec<String> = schema
            .identifier_field_ids()
            .filter_map(|id| schema.name_by_field_id(id).map(str::to_string))
            .collect();
        let st = self.table_state(table);
        st.existing = Some(schema.clone());
        st.inferred = Some(Arc::new(RowSchema { fields }));
        if !keys.is_empty() {
            st.keyed = Some(keys);
        }
        st.current = None;
        Ok(())
    }

    /// Decodes one record. Records of one partition must come in offset order.
    pub fn decode(&mut self, rec: &KafkaRecord<'_>) -> Result<Decoded, DecodeError> {
        let Some(avro) = &mut self.avro else {
            return self.decode_json(rec);
        };
        let avro = avro.transcode(rec)?;
        let json_key = KafkaRecord {
            key: avro.key.as_deref().map(str::as_bytes).or(rec.key),
            headers: rec.headers.clone(),
            ..*rec
        };
        let value = avro
            .value
            .as_ref()
            .map(|v| (v.schema(), v.payload.as_str()));
        self.decode_parts(&json_key, value)
    }

    /// Decodes a record whose key and value are JSON (as the JsonConverter writes them).
    fn decode_json(&mut self, rec: &KafkaRecord<'_>) -> Result<Decoded, DecodeError> {
        self.decode_parts(rec, None)
    }

    /// Decodes a record with a JSON key; its value is JSON, or (`known`) a payload whose
    /// Connect schema is already known.
    fn decode_parts(
        &mut self,
        rec: &KafkaRecord<'_>,
        known: Option<(SchemaText<'_>, &str)>,
    ) -> Result<Decoded, DecodeError> {
        let (topic, table) = self.route(rec)?;
        let position = KafkaPosition {
            topic,
            partition: rec.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
        };
        if rec.value.is_none()
            && let (Some(key), Some(ts)) = (rec.key, self.topics.get_mut(rec.topic))
            && ts
                .last_delete
                .get(&rec.partition)
                .is_some_and(|k| **k == *key)
        {
            ts.last_delete.remove(&rec.partition);
            return Ok(Decoded::TombstoneAfterDelete(position));
        }
        let result = match (rec.value, known) {
            (None, _) => self.tombstone(rec, &table, position),
            (Some(_), Some((schema, payload))) => {
                self.payload(rec, &table, Some(schema), payload, position)
            }
            (Some(value), None) => self.value(rec, &table, value, position),
        };
        if let Some(ts) = self.topics.get_mut(rec.topic) {
            match (&result, rec.key) {
                (Ok(c), Some(key)) if c.op == Op::Delete && rec.value.is_some() => {
                    ts.last_delete.insert(rec.partition, key.into());
                }
                _ => {
                    ts.last_delete.remove(&rec.partition);
                }
            }
        }
        result.map(Decoded::Change)
    }

    fn route(&mut self, rec: &KafkaRecord<'_>) -> Result<(Arc<str>, TableName), DecodeError> {
        if let Some(ts) = self.topics.get(rec.topic) {
            return Ok((ts.topic.clone(), ts.table.clone()));
        }
        let table = self
            .tables
            .route(rec.topic)
            .map_err(|e| rec.error(DecodeErrorKind::Route(e)))?;
        let topic: Arc<str> = rec.topic.into();
        self.topics.insert(
            rec.topic.to_string(),
            TopicState {
                topic: topic.clone(),
                table: table.clone(),
                last_delete: FxHashMap::default(),
                key_schema: None,
                value_schema: None,
            },
        );
        Ok((topic, table))
    }

    fn table_state(&mut self, table: &TableName) -> &mut TableState {
        if !self.state.contains_key(table) {
            let placeholder = &self.tables.settings(table).unavailable_value_placeholder;
            let state = TableState {
                placeholder: Arc::new(Placeholder::new(placeholder)),
                current: None,
                existing: None,
                inferred: None,
                keyed: None,
                append_only_logged: false,
            };
            self.state.insert(table.clone(), state);
        }
        self.state
            .get_mut(table)
            .expect("the entry was inserted just above")
    }

    fn value(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        value: &[u8],
        position: KafkaPosition,
    ) -> Result<Change, DecodeError> {
        let malformed = |message: String| {
            rec.error(DecodeErrorKind::MalformedJson {
                part: RecordPart::Value,
                message,
            })
        };
        let text = std::str::from_utf8(value).map_err(|e| malformed(e.to_string()))?;
        if text.trim() == "null" {
            // The JsonConverter's rendering of a null value without a schema: what
            // ExtractNewRecordState's default delete handling (a null value with the row's
            // schema) becomes with schemas.enable=false.
            return self.tombstone(rec, table, position);
        }
        match self
            .json(rec.topic, RecordPart::Value, text)
            .map_err(|e| malformed(e.to_string()))?
        {
            Json::Enveloped { schema, payload } => self.payload(
                rec,
                table,
                Some(SchemaText::Json(&schema)),
                payload,
                position,
            ),
            Json::Object(top) => match self.format {
                DecodeFormat::Envelope => self.envelope(rec, table, None, &top, position),
                DecodeFormat::Flattened => self.flattened(rec, table, None, text, position),
            },
        }
    }

    /// A value's payload and its Connect schema.
    fn payload(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        schema: Option<SchemaText<'_>>,
        payload: &str,
        position: KafkaPosition,
    ) -> Result<Change, DecodeError> {
        if payload == "null" {
            // The JsonConverter's rendering of a null value with a schema.
            return self.tombstone(rec, table, position);
        }
        match self.format {
            DecodeFormat::Envelope => {
                let object = RawObject::parse(payload).map_err(|e| {
                    rec.error(DecodeErrorKind::MalformedJson {
                        part: RecordPart::Value,
                        message: e.to_string(),
                    })
                })?;
                self.envelope(rec, table, schema, &object, position)
            }
            DecodeFormat::Flattened => self.flattened(rec, table, schema, payload, position),
        }
    }

    fn envelope(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        schema: Option<SchemaText<'_>>,
        payload: &RawObject<'_>,
        position: KafkaPosition,
    ) -> Result<Change, DecodeError> {
        let bad = |field: &'static str, message: String| {
            rec.error(DecodeErrorKind::Envelope {
                part: RecordPart::Value,
                field,
                message,
            })
        };
        let op_raw = payload
            .get("op")
            .ok_or_else(|| bad("op", "it is missing".into()))?;
        let op_code: Cow<str> = serde_json::from_str::<Cow<str>>(op_raw.get())
            .map_err(|_| bad("op", format!("{} is not a string", op_raw.get())))?;
        let op = Op::from_code(&op_code)
            .ok_or_else(|| rec.error(DecodeErrorKind::UnknownOp(op_code.into_owned())))?;
        let source = match payload.get("source") {
            Some(raw) if raw.get() != "null" => serde_json::from_str::<RawSource>(raw.get())
                .map_err(|e| bad("source", e.to_string()))?
                .into_info(),
            _ => SourceInfo::default(),
        };
        let event_ts_ms = match payload.get("ts_ms") {
            Some(raw) => serde_json::from_str::<Option<i64>>(raw.get())
                .map_err(|e| bad("ts_ms", e.to_string()))?,
            None => None,
        };
        let image = |name| payload.get(name).filter(|r| r.get() != "null");
        let (before, after) = (image("before"), image("after"));
        if op == Op::Truncate {
            let schema = self
                .table_state(table)
                .current
                .clone()
                .unwrap_or_else(|| Arc::new(TableSchema::empty()));
            return Ok(Change {
                table: table.clone(),
                op,
                schema,
                key: Vec::new(),
                before: None,
                after: None,
                source,
                event_ts_ms,
                position,
            });
        }
        if op != Op::Delete && after.is_none() {
            return Err(bad(
                "after",
                format!("op {} needs an after image", op.code()),
            ));
        }
        let key = self.key_info(rec, table)?;
        let row_schema = schema
            .map(|schema| self.compile_value_schema(rec, schema))
            .transpose()?;
        let (schema, [before, after]) = self.rows(
            rec,
            table,
            row_schema,
            &key,
            [before.map(RawValue::get), after.map(RawValue::get)],
            None,
        )?;
        let image = if op == Op::Delete { &before } else { &after };
        let key = key_values(
            &schema,
            &key,
            image.as_ref(),
            table,
            &self.table_state(table).placeholder,
        )
        .map_err(|e| rec.error(e))?;
        if op != Op::Delete {
            image_has_key(&schema, after.as_ref(), table).map_err(|e| rec.error(e))?;
        }
        Ok(Change {
            table: table.clone(),
            op,
            schema,
            key,
            before,
            after,
            source,
            event_ts_ms,
            position,
        })
    }

    fn flattened(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        schema: Option<SchemaText<'_>>,
        row: &str,
        position: KafkaPosition,
    ) -> Result<Change, DecodeError> {
        let key = self.key_info(rec, table)?;
        let row_schema = schema
            .map(|schema| self.compile_value_schema(rec, schema))
            .transpose()?;
        let sink = MetaSink::default();
        let (schema, [_, row]) =
            self.rows(rec, table, row_schema, &key, [None, Some(row)], Some(&sink))?;
        let FlatMeta {
            op,
            source,
            event_ts_ms,
        } = flattened::read_meta(sink.into_inner()).map_err(|e| rec.error(e))?;
        let (before, after) = match op {
            Op::Delete => (row, None),
            Op::Truncate => (None, None),
            _ => (None, row),
        };
        let key = if op == Op::Truncate {
            Vec::new()
        } else {
            let image = before.as_ref().or(after.as_ref());
            image_has_key(&schema, after.as_ref(), table).map_err(|e| rec.error(e))?;
            let placeholder = &self.table_state(table).placeholder;
            key_values(&schema, &key, image, table, placeholder).map_err(|e| rec.error(e))?
        };
        Ok(Change {
            table: table.clone(),
            op,
            schema,
            key,
            before,
            after,
            source,
            event_ts_ms,
            position,
        })
    }

    fn tombstone(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        position: KafkaPosition,
    ) -> Result<Change, DecodeError> {
        if rec.key.is_none() {
            return Err(rec.error(DecodeErrorKind::Envelope {
                part: RecordPart::Key,
                field: "key",
                message: "a tombstone (null value) without a key deletes nothing".into(),
            }));
        }
        let key = self.key_info(rec, table)?;
        if key.names.is_empty() {
            return Err(rec.error(DecodeErrorKind::Envelope {
                part: RecordPart::Key,
                field: "key",
                message: "a tombstone's key names no primary key column".into(),
            }));
        }
        let current = self.table_state(table).current.clone();
        let schema = match current {
            Some(s) if key.names.iter().all(|n| s.column_index(n).is_some()) => {
                self.table_schema(rec, table, s.source.clone(), &key.names)?
            }
            _ => {
                // Nothing known about the table's columns yet: the key's own columns are
                // enough to delete by.
                let row = match (&key.schema, key.payload) {
                    (Some(s), _) => s.clone(),
                    (None, Some(p)) => {
                        let mut fields = Vec::new();
                        let placeholder = self.table_state(table).placeholder.clone();
                        infer::merge_row(&mut fields, p, &|_| false, &placeholder).map_err(
                            |(column, message)| {
                                rec.error(DecodeErrorKind::ValueMismatch { column, message })
                            },
                        )?;
                        Arc::new(RowSchema { fields })
                    }
                    (None, None) => Arc::new(RowSchema { fields: Vec::new() }),
                };
                self.table_schema(rec, table, row, &key.names)?
            }
        };
        let placeholder = &self.table_state(table).placeholder;
        let key = key_values(&schema, &key, None, table, placeholder).map_err(|e| rec.error(e))?;
        Ok(Change {
            table: table.clone(),
            op: Op::Delete,
            schema,
            key,
            before: None,
            after: None,
            source: SourceInfo::default(),
            event_ts_ms: None,
            position,
        })
    }

    /// A JSON key or value as the JsonConverter writes it: its schema and payload when it is the
    /// `schemas.enable=true` wrapper, else the object. The records of a topic mostly carry the
    /// schema the one before carried: that is found by comparing bytes ([`split_envelope`]),
    /// not read over as JSON, which was most of the cost of decoding a record with its schema.
    fn json<'t>(
        &mut self,
        topic: &str,
        part: RecordPart,
        text: &'t str,
    ) -> Result<Json<'t>, serde_json::Error> {
        let Some(state) = self.topics.get_mut(topic) else {
            return Ok(Json::of(RawObject::parse(text)?));
        };
        let last = match part {
            RecordPart::Key => &mut state.key_schema,
            RecordPart::Value => &mut state.value_schema,
        };
        if let Some(schema) = last.as_ref()
            && let Some(payload) = split_envelope(text, schema)
        {
            return Ok(Json::Enveloped {
                schema: schema.clone(),
                payload,
            });
        }
        let json = Json::of(RawObject::parse(text)?);
        if let Json::Enveloped { schema, .. } = &json {
            *last = Some(schema.clone());
        }
        Ok(json)
    }

    /// Forgets the topics' last schemas, so the next records' are read as JSON again.
    #[cfg(test)]
    pub(crate) fn forget_schemas(&mut self) {
        for t in self.topics.values_mut() {
            (t.key_schema, t.value_schema) = (None, None);
        }
    }

    fn compile_value_schema(
        &mut self,
        rec: &KafkaRecord<'_>,
        schema: SchemaText<'_>,
    ) -> Result<Arc<RowSchema>, DecodeError> {
        let (format, vsd) = (self.format, self.variable_scale_decimal);
        let (key, text) = match schema {
            SchemaText::Json(text) => (text.as_bytes(), text),
            SchemaText::Known { key, json } => (key, json),
        };
        self.value_schemas
            .get_or_compile(key, || {
                let schema = ConnectSchema::parse(text)?;
                let row = match format {
                    DecodeFormat::Envelope => schema
                        .field("after")
                        .or_else(|| schema.field("before"))
                        .ok_or("the envelope schema has neither an `after` nor a `before` field")?
                        .compile_struct(vsd, |_| false)?,
                    DecodeFormat::Flattened => {
                        schema.compile_struct(vsd, flattened::is_metadata_field)?
                    }
                };
                Ok(Arc::new(row))
            })
            .map_err(|message| {
                rec.error(DecodeErrorKind::Schema {
                    part: RecordPart::Value,
                    message,
                })
            })
    }

    /// The primary key columns: the table's `primary_key` override, else the fields of the
    /// record key struct, else none (append-only).
    fn key_info<'r>(
        &mut self,
        rec: &KafkaRecord<'r>,
        table: &TableName,
    ) -> Result<KeyInfo<'r>, DecodeError> {
        let overridden = self.tables.settings(table).primary_key.clone();
        let bad_key = |message: String| {
            rec.error(DecodeErrorKind::MalformedJson {
                part: RecordPart::Key,
                message,
            })
        };
        let mut info = KeyInfo {
            names: Vec::new(),
            from_record: false,
            payload: None,
            schema: None,
        };
        if let Some(key) = rec.key {
            let text = std::str::from_utf8(key).map_err(|e| bad_key(e.to_string()))?;
            match self.json(rec.topic, RecordPart::Key, text) {
                Ok(Json::Enveloped { schema, payload }) => {
                    let vsd = self.variable_scale_decimal;
                    let compiled = self
                        .key_schemas
                        .get_or_compile(schema.as_bytes(), || {
                            Ok(Arc::new(
                                ConnectSchema::parse(&schema)?.compile_struct(vsd, |_| false)?,
                            ))
                        })
                        .map_err(|message| {
                            rec.error(DecodeErrorKind::Schema {
                                part: RecordPart::Key,
                                message,
                            })
                        })?;
                    info.names = compiled.fields.iter().map(|f| f.name.clone()).collect();
                    info.payload = Some(payload).filter(|p| *p != "null");
                    info.schema = Some(compiled);
                }
                Ok(Json::Object(obj)) => {
                    info.names = obj.entries.iter().map(|(k, _)| k.to_string()).collect();
                    info.payload = Some(text);
                }
                // A key that is not a struct cannot name key columns, but an override does.
                Err(e) if overridden.is_none() => {
                    return Err(bad_key(format!(
                        "{e}; a Debezium record key is a JSON object (the key struct)"
                    )));
                }
                Err(_) => {}
            }
            info.from_record = true;
        }
        if let Some(names) = overridden {
            info.names = names;
            info.from_record = false;
        }
        let st = self.table_state(table);
        if info.names.is_empty() {
            if let Some(keyed) = &st.keyed {
                return Err(rec.error(DecodeErrorKind::MissingKey {
                    table: table.to_string(),
                    key: keyed.join(", "),
                    message: "the record has no key".into(),
                }));
            }
            if !st.append_only_logged {
                st.append_only_logged = true;
                tracing::info!(
                    table = %table,
                    topic = rec.topic,
                    "records without a key and no tables.overrides primary_key: the table is append-only"
                );
            }
        } else if st.keyed.as_ref() != Some(&info.names) {
            st.keyed = Some(info.names.clone());
        }
        Ok(info)
    }

    fn table_schema(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        row: Arc<RowSchema>,
        key: &[String],
    ) -> Result<Arc<TableSchema>, DecodeError> {
        let st = self.table_state(table);
        if let Some(current) = &st.current
            && Arc::ptr_eq(&current.source, &row)
            && current.has_primary_key(key)
        {
            return Ok(current.clone());
        }
        let new = TableSchema::new(row, key, st.existing.as_ref()).map_err(|message| {
            rec.error(DecodeErrorKind::MissingKey {
                table: table.to_string(),
                key: key.join(", "),
                message,
            })
        })?;
        if let Some(current) = &st.current
            && **current == new
        {
            return Ok(current.clone());
        }
        let new = Arc::new(new);
        st.current = Some(new.clone());
        Ok(new)
    }

    /// Reads the row images: against the compiled schema when the record has one, else
    /// against the columns inferred so far, widening them when a row does not fit.
    fn rows(
        &mut self,
        rec: &KafkaRecord<'_>,
        table: &TableName,
        row_schema: Option<Arc<RowSchema>>,
        key: &KeyInfo<'_>,
        images: [Option<&str>; 2],
        meta: Option<&MetaSink>,
    ) -> Result<(Arc<TableSchema>, Images), DecodeError> {
        let placeholder = self.table_state(table).placeholder.clone();
        if let Some(row) = row_schema {
            let schema = self.table_schema(rec, table, row, &key.names)?;
            let rows = read_images(&schema, images, meta, false, &placeholder)
                .map_err(|(_, e)| rec.error(e))?;
            return Ok((schema, rows));
        }
        let inferred = self.table_state(table).inferred.clone();
        if let Some(row) = inferred
            && key
                .names
                .iter()
                .all(|n| row.fields.iter().any(|f| &f.name == n))
        {
            let schema = self.table_schema(rec, table, row, &key.names)?;
            match read_images(&schema, images, meta, true, &placeholder) {
                Ok(rows) => return Ok((schema, rows)),
                Err((false, e)) => return Err(rec.error(e)),
                Err((true, _)) => {}
            }
        }
        // The inferred columns are missing or too narrow for this record: learn from it.
        let mut fields = self
            .table_state(table)
            .inferred
            .as_ref()
            .map(|r| r.fields.clone())
            .unwrap_or_default();
        for image in images.into_iter().flatten() {
            let skip = |name: &str| meta.is_some() && flattened::is_metadata_field(name);
            infer::merge_row(&mut fields, image, &skip, &placeholder).map_err(
                |(column, message)| rec.error(DecodeErrorKind::ValueMismatch { column, message }),
            )?;
        }
        if let Some(payload) = key.payload.filter(|_| key.from_record) {
            // Key columns the rows left null still get a type.
            let _ = infer::merge_row(&mut fields, payload, &|_| false, &placeholder);
        }
        let row = Arc::new(RowSchema { fields });
        self.table_state(table).inferred = Some(row.clone());
        let schema = self.table_schema(rec, table, row, &key.names)?;
        if let Some(meta) = meta {
            meta.borrow_mut().clear();
        }
        let rows = read_images(&schema, images, meta, true, &placeholder)
            .map_err(|(_, e)| rec.error(e))?;
        Ok((schema, rows))
    }
}

/// The Connect schema of a record value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SchemaText<'a> {
    /// The `schema` of the JsonConverter's envelope (its JSON text), found again by its bytes.
    Json(&'a str),
    /// One already known (derived from an Avro schema): its JSON, found again by `key`, which
    /// no JSON text equals.
    Known { key: &'a [u8], json: &'a str },
}

/// The before and after images of a record, one datum per column.
type Images = [Option<Vec<Datum>>; 2];

/// Reads the row images; on failure says whether it was only a schemaless miss.
fn read_images(
    schema: &TableSchema,
    images: [Option<&str>; 2],
    meta: Option<&MetaSink>,
    lenient: bool,
    placeholder: &Placeholder,
) -> Result<Images, (bool, DecodeErrorKind)> {
    let mut out = [None, None];
    for (slot, image) in out.iter_mut().zip(images) {
        if let Some(json) = image {
            if let Some(meta) = meta {
                meta.borrow_mut().clear();
            }
            *slot = Some(read_row(
                schema.columns(),
                json,
                meta,
                lenient,
                false,
                placeholder,
            )?);
        }
    }
    Ok(out)
}

fn read_row(
    fields: &[Field],
    json: &str,
    meta: Option<&MetaSink>,
    lenient: bool,
    ignore_unknown: bool,
    placeholder: &Placeholder,
) -> Result<Vec<Datum>, (bool, DecodeErrorKind)> {
    let mut ctx = Ctx::new(lenient, placeholder);
    ctx.ignore_unknown = ignore_unknown;
    let mut de = serde_json::Deserializer::from_str(json);
    let result = RowSeed {
        fields,
        ctx: &ctx,
        top: true,
        meta,
    }
    .deserialize(&mut de)
    .and_then(|row| de.end().map(|()| row));
    result.map_err(|e| {
        let kind = if e.is_syntax() || e.is_eof() {
            DecodeErrorKind::MalformedJson {
                part: RecordPart::Value,
                message: e.to_string(),
            }
        } else {
            let column = ctx.column();
            DecodeErrorKind::ValueMismatch {
                column: if column.is_empty() {
                    "(row)".into()
                } else {
                    column
                },
                message: strip_position(&e),
            }
        };
        (ctx.miss.get(), kind)
    })
}

/// serde_json's message without its " at line 1 column 123" suffix: the column name says
/// where, and positions inside the embedded payload mean nothing to a reader of the record.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The primary key values: from the record key struct when it defines the key, else from the
/// row image, else (a tombstone with an overridden key) from the key struct's matching fields.
fn key_values(
    schema: &TableSchema,
    key: &KeyInfo<'_>,
    image: Option<&Vec<Datum>>,
    table: &TableName,
    placeholder: &Placeholder,
) -> Result<Vec<Datum>, DecodeErrorKind> {
    if schema.primary_key().is_empty() {
        return Ok(Vec::new());
    }
    let missing = |message: String| DecodeErrorKind::MissingKey {
        table: table.to_string(),
        key: schema.primary_key_names().join(", "),
        message,
    };
    let values = match (key.from_record, key.payload, image) {
        (true, Some(payload), _) | (false, Some(payload), None) => read_row(
            &schema.key_fields,
            payload,
            None,
            false,
            !key.from_record,
            placeholder,
        )
        .map_err(|(_, e)| match e {
            DecodeErrorKind::ValueMismatch { column, message } => DecodeErrorKind::ValueMismatch {
                column: format!("key.{column}"),
                message,
            },
            other => other,
        })?,
        (_, _, Some(row)) => schema
            .primary_key()
            .iter()
            .map(|&i| row.get(i).cloned().unwrap_or(Datum::Null))
            .collect(),
        _ => {
            return Err(missing(
                "the record has neither a key nor a row image".into(),
            ));
        }
    };
    if let Some(i) = values
        .iter()
        .position(|v| matches!(v, Datum::Null | Datum::Unchanged))
    {
        return Err(missing(format!(
            "primary key column `{}` is null",
            schema.key_fields[i].name
        )));
    }
    // Debezium's record key and row image name the same row. A record whose two disagree
    // would write one row and delete (or merge with) another: refused.
    if key.from_record
        && key.payload.is_some()
        && let Some(row) = image
    {
        for (k, &i) in schema.primary_key().iter().enumerate() {
            let (from_key, from_row) = (&values[k], row.get(i).unwrap_or(&Datum::Null));
            let comparable = std::mem::discriminant(from_key) == std::mem::discriminant(from_row);
            if comparable && from_key != from_row {
                return Err(missing(format!(
                    "the record key has `{}` = {from_key:?} while the row image has {from_row:?}",
                    schema.key_fields[k].name
                )));
            }
        }
    }
    Ok(values)
}

/// A row that will be written (an after image) must hold its key: a null key column would
/// be a row no delete can ever reach.
fn image_has_key(
    schema: &TableSchema,
    image: Option<&Vec<Datum>>,
    table: &TableName,
) -> Result<(), DecodeErrorKind> {
    let Some(row) = image else { return Ok(()) };
    for &i in schema.primary_key() {
        if matches!(row.get(i), None | Some(Datum::Null | Datum::Unchanged)) {
            return Err(DecodeErrorKind::MissingKey {
                table: table.to_string(),
                key: schema.primary_key_names().join(", "),
                message: format!(
                    "primary key column `{}` is null in the after image",
                    schema.columns()[i].name
                ),
            });
        }
    }
    Ok(())
}

/// A JSON key or value: the JsonConverter's `schemas.enable=true` wrapper, or an object.
enum Json<'t> {
    Enveloped { schema: Arc<str>, payload: &'t str },
    Object(RawObject<'t>),
}

impl<'t> Json<'t> {
    fn of(object: RawObject<'t>) -> Self {
        match object.envelope() {
            Some((schema, payload)) => Json::Enveloped {
                schema: schema.get().into(),
                payload: payload.get(),
            },
            None => Json::Object(object),
        }
    }
}

/// The payload of `text` when it is exactly `{"schema":<schema>,"payload":<payload>}` (with
/// any whitespace between the tokens) for this `schema` text, as the JsonConverter writes
/// it; `None` when it is anything else, which the caller then parses. A JSON object is
/// self-delimiting, so text starting with a schema's exact bytes holds that schema; the
/// payload is still parsed, as one JSON value.
pub(crate) fn split_envelope<'t>(text: &'t str, schema: &str) -> Option<&'t str> {
    // JSON's whitespace only: str::trim would also pass other Unicode spaces.
    const SPACE: [char; 4] = [' ', '\t', '\n', '\r'];
    fn token<'a>(text: &'a str, token: &str) -> Option<&'a str> {
        text.trim_start_matches(SPACE).strip_prefix(token)
    }
    let rest = token(text, "{")?;
    let rest = token(token(rest, "\"schema\"")?, ":")?;
    let rest = token(rest, schema)?;
    let rest = token(token(token(rest, ",")?, "\"payload\"")?, ":")?;
    let payload = rest.trim_end_matches(SPACE).strip_suffix('}')?;
    serde_json::from_str::<&RawValue>(payload)
        .ok()
        .map(RawValue::get)
}

/// A JSON object with its values left as raw JSON text, in order.
pub(crate) struct RawObject<'a> {
    pub entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    pub fn parse(json: &'a str) -> Result<RawObject<'a>, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// `(schema, payload)` when this is the JsonConverter's `schemas.enable=true` wrapper.
    pub fn envelope(&self) -> Option<(&'a RawValue, &'a RawValue)> {
        match self.entries.as_slice() {
            [(a, x), (b, y)] if a == "schema" && b == "payload" => Some((x, y)),
            [(a, x), (b, y)] if a == "payload" && b == "schema" => Some((y, x)),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(8);
                while let Some(Key(k)) = map.next_key::<Key>()? {
                    entries.push((k, map.next_value::<&RawValue>()?));
                }
                Ok(RawObject { entries })
            }
        }
        d.deserialize_map(V)
    }
}

/// Debezium's `source` block; fields of every connector, all optional.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSource<'a> {
    #[serde(borrow, default)]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(borrow, default)]
    db: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
    #[serde(default)]
    snapshot: Option<Snapshot<'a>>,
    #[serde(default)]
    lsn: Option<i64>,
    #[serde(default, rename = "txId")]
    tx_id: Option<i64>,
    #[serde(borrow, default)]
    file: Option<Cow<'a, str>>,
    #[serde(default)]
    pos: Option<i64>,
    #[serde(default)]
    row: Option<i64>,
    #[serde(borrow, default)]
    gtid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    change_lsn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    commit_lsn: Option<Cow<'a, str>>,
    #[serde(default)]
    event_serial_no: Option<i64>,
}

/// `snapshot` is a string in current Debezium ("true", "last", "false"), a boolean in old ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Snapshot<'a> {
    Flag(bool),
    Text(#[serde(borrow)] Cow<'a, str>),
}

impl RawSource<'_> {
    pub fn into_info(self) -> SourceInfo {
        let s = |v: Option<Cow<str>>| v.map(Cow::into_owned);
        let position = if let Some(lsn) = self.lsn {
            Some(SourcePosition::Lsn {
                lsn,
                tx_id: self.tx_id,
            })
        } else if let (Some(file), Some(pos)) = (&self.file, self.pos) {
            Some(SourcePosition::Binlog {
                file: file.to_string(),
                pos,
                row: self.row,
                gtid: s(self.gtid.clone()),
            })
        } else if self.change_lsn.is_some() || self.commit_lsn.is_some() {
            Some(SourcePosition::SqlServer {
                commit_lsn: s(self.commit_lsn.clone()),
                change_lsn: s(self.change_lsn.clone()),
                event_serial_no: self.event_serial_no,
            })
        } else {
            None
        };
        SourceInfo {
            connector: s(self.connector),
            name: s(self.name),
            ts_ms: self.ts_ms,
            db: s(self.db),
            schema: s(self.schema),
            table: s(self.table),
            snapshot: self.snapshot.map(|v| match v {
                Snapshot::Flag(b) => b.to_string(),
                Snapshot::Text(t) => t.into_owned(),
            }),
            position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_envelope;

    const SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"int32","field":"id"}]}"#;

    #[test]
    fn a_known_schema_is_found_by_its_bytes_and_the_payload_is_still_parsed() {
        let framed =
            |schema: &str, payload: &str| format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
        assert_eq!(
            split_envelope(&framed(SCHEMA, r#"{"id":1}"#), SCHEMA),
            Some(r#"{"id":1}"#)
        );
        let spaced = format!(" {{ \"schema\" :\n{SCHEMA} ,\t\"payload\": {{\"id\": 2}} }}\n");
        assert_eq!(split_envelope(&spaced, SCHEMA), Some(r#"{"id": 2}"#));
        assert_eq!(
            split_envelope(&framed(SCHEMA, "null"), SCHEMA),
            Some("null")
        );

        // Anything else is left to the parser.
        let other = SCHEMA.replace("int32", "int64");
        for text in [
            framed(&other, r#"{"id":1}"#),
            // The schema's bytes, but followed by more of a longer value.
            framed(&SCHEMA.replace("]}", "],\"name\":\"x\"}"), r#"{"id":1}"#),
            format!(r#"{{"payload":{{"id":1}},"schema":{SCHEMA}}}"#),
            format!(r#"{{"schema":{SCHEMA},"payload":{{"id":1}},"extra":1}}"#),
            format!(r#"{{"schema":{SCHEMA},"payload":{{"id":1}}"#),
            format!(r#"{{"schema":{SCHEMA},"payload":{{"id":}}}}"#),
            format!(r#"{{"schema":{SCHEMA},"payload":{{"id":1}}}} x"#),
            format!(r#"{{"sch\u0065ma":{SCHEMA},"payload":{{"id":1}}}}"#),
            r#"{"id":1}"#.to_string(),
            String::new(),
            // Spaces JSON does not allow, where it allows whitespace.
            format!("{{\u{a0}\"schema\":{SCHEMA},\"payload\":{{\"id\":1}}}}"),
            format!("{{\"schema\":{SCHEMA},\"payload\":{{\"id\":1}}}}\u{2028}"),
        ] {
            assert_eq!(split_envelope(&text, SCHEMA), None, "{text}");
        }
    }
}
