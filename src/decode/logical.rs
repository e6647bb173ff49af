//! Reading one JSON value into a typed [`Datum`] by its column's [`Codec`]: the Debezium and
//! Kafka Connect logical types (decimals from base64 bytes, dates, times, timestamps, zoned
//! timestamps, variable-scale decimals) and the nested types.
//!
//! Values are read straight from the JSON tokens (a serde `DeserializeSeed`), never through a
//! `serde_json::Value` tree on the fast path. Nothing here may panic or round silently on
//! input from Kafka: a value that does not fit its type is an error naming the column.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use num_bigint::BigInt;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use serde_json::value::RawValue;

use super::schema::{Codec, Field};
use crate::config::VariableScaleDecimalAs;

/// Debezium's default placeholder for a column whose value it does not have (an unchanged
/// TOASTed PostgreSQL column): the connector setting `unavailable.value.placeholder`.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// The placeholder as it appears in each kind of column, as Debezium's PostgreSQL connector
/// writes it for an unchanged TOASTed value:
/// - string-like columns (text, json, xml, enum, and bytea in `binary.handling.mode=hex`):
///   the text itself;
/// - bytes columns: the text's UTF-8 bytes, which the JsonConverter writes as base64;
/// - text[] (and other string arrays), bytea[]: a one-element array of the above;
/// - int[], bigint[], date[]: the text's bytes as numbers, one element per byte;
/// - uuid[]: a one-element array of Java's `UUID.nameUUIDFromBytes` of those bytes;
/// - hstore: the map `{placeholder: placeholder}` (`hstore.handling.mode=map`), or its JSON text
///   (`json`).
///
/// Other PostgreSQL column types (numeric[], PostGIS, ...) get no placeholder from the
/// connector: it leaves them null, and so does the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    text: String,
    base64: String,
    hstore_json: String,
    uuid: String,
}

impl Placeholder {
    pub fn new(text: &str) -> Placeholder {
        use md5::Digest as _;
        let digest: [u8; 16] = md5::Md5::digest(text.as_bytes()).into();
        Placeholder {
            text: text.to_owned(),
            base64: BASE64.encode(text.as_bytes()),
            hstore_json: serde_json::json!({ text: text }).to_string(),
            uuid: uuid::Builder::from_md5_bytes(digest)
                .into_uuid()
                .hyphenated()
                .to_string(),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `value`, read for a column of `codec`, is the placeholder.
    fn is(&self, codec: &Codec, value: &str) -> bool {
        match codec {
            Codec::Binary => value == self.base64 || value == self.text,
            Codec::String => value == self.text || value == self.hstore_json,
            _ => value == self.text,
        }
    }

    /// Whether a whole array is the placeholder.
    fn is_list(&self, items: &[Datum]) -> bool {
        let bytes = self.text.as_bytes();
        match items {
            [Datum::Unchanged] => true,
            [Datum::String(u)] if *u == self.uuid => true,
            _ => {
                items.len() == bytes.len()
                    && items.iter().zip(bytes).all(|(d, &b)| match d {
                        Datum::Int(v) | Datum::Date(v) => *v == i32::from(b),
                        Datum::Long(v) => *v == i64::from(b),
                        _ => false,
                    })
            }
        }
    }

    /// Whether a whole map is the placeholder.
    fn is_map(&self, entries: &[(Datum, Datum)]) -> bool {
        matches!(entries, [(Datum::String(k), Datum::String(v))] if *k == self.text && *v == self.text)
    }
}

impl Default for Placeholder {
    fn default() -> Self {
        Placeholder::new(UNAVAILABLE_VALUE)
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One typed value. Temporal values are in Iceberg's units: dates in days since the epoch,
/// times in microseconds since midnight, timestamps in microseconds since the epoch
/// (`TimestampTz` in UTC). Decimals are unscaled; the scale is the column's.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// The source did not send this column's value (`__debezium_unavailable_value`): it is
    /// unchanged, and whatever the table holds must stay. Only ever a top-level column.
    Unchanged,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Decimal(i128),
    String(String),
    Binary(Vec<u8>),
    Date(i32),
    Time(i64),
    Timestamp(i64),
    TimestampTz(i64),
    List(Vec<Datum>),
    /// Values in the order of the struct's fields.
    Struct(Vec<Datum>),
    Map(Vec<(Datum, Datum)>),
}

impl Datum {
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }
}

/// Shared state of one row decode: where in the row we are (for error messages), and
/// whether a mismatch only means "the inferred schema is out of date".
pub(crate) struct Ctx<'s> {
    pub path: RefCell<Vec<&'s str>>,
    pub placeholder: &'s Placeholder,
    /// Schemaless decoding against an inferred schema: unknown fields and mismatching values
    /// set `miss` so the caller can widen the schema and try again.
    pub lenient: bool,
    /// Fields the schema does not have are skipped (a record key read for some columns).
    pub ignore_unknown: bool,
    pub miss: Cell<bool>,
}

impl<'s> Ctx<'s> {
    pub fn new(lenient: bool, placeholder: &'s Placeholder) -> Self {
        Ctx {
            path: RefCell::new(Vec::new()),
            placeholder,
            lenient,
            ignore_unknown: false,
            miss: Cell::new(false),
        }
    }

    pub fn column(&self) -> String {
        self.path.borrow().join(".")
    }

    fn fail<E: de::Error>(&self, message: impl fmt::Display) -> E {
        if self.lenient {
            self.miss.set(true);
        }
        E::custom(message)
    }
}

/// A JSON object key, borrowed when the input allows it.
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Where a row's `__`-prefixed fields go when the flattened format reads them as metadata.
pub(crate) type MetaSink = RefCell<Vec<(String, serde_json::Value)>>;

/// Reads a JSON object into one [`Datum`] per field (absent fields are null).
pub(crate) struct RowSeed<'s, 'c> {
    pub fields: &'s [Field],
    pub ctx: &'c Ctx<'s>,
    /// The fields are table columns (so may be [`Datum::Unchanged`]).
    pub top: bool,
    pub meta: Option<&'c MetaSink>,
}

impl<'de, 's, 'c> DeserializeSeed<'de> for RowSeed<'s, 'c> {
    type Value = Vec<Datum>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's, 'c> de::Visitor<'de> for RowSeed<'s, 'c> {
    type Value = Vec<Datum>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let fields = self.fields;
        let mut out = vec![Datum::Null; fields.len()];
        // Debezium writes fields in schema order, so the next field is almost always the
        // one after the last; the scan is only the fallback.
        let mut hint = 0;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if let Some(meta) = self.meta
                && key.starts_with("__")
            {
                let value: serde_json::Value = map.next_value()?;
                meta.borrow_mut().push((key.into_owned(), value));
                continue;
            }
            let i = if fields.get(hint).is_some_and(|f| f.name == key) {
                Some(hint)
            } else {
                fields.iter().position(|f| f.name == key)
            };
            let Some(i) = i else {
                let value: serde_json::Value = map.next_value()?;
                if self.ctx.ignore_unknown || value.is_null() && self.ctx.lenient {
                    continue;
                }
                return Err(self
                    .ctx
                    .fail(format_args!("field `{key}` is not in the schema")));
            };
            self.ctx.path.borrow_mut().push(&fields[i].name);
            out[i] = map.next_value_seed(DatumSeed {
                field: &fields[i],
                ctx: self.ctx,
                top: self.top,
            })?;
            self.ctx.path.borrow_mut().pop();
            hint = i + 1;
        }
        Ok(out)
    }
}

/// Reads one JSON value by `field`'s codec.
pub(crate) struct DatumSeed<'s, 'c> {
    pub field: &'s Field,
    pub ctx: &'c Ctx<'s>,
    pub top: bool,
}

impl<'de, 's, 'c> DeserializeSeed<'de> for DatumSeed<'s, 'c> {
    type Value = Datum;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if matches!(
            self.field.codec,
            Codec::Float | Codec::Decimal { .. } | Codec::WideDecimal { .. }
        ) {
            // serde_json reads every number as an f64. Rounding that to an f32 rounds twice
            // (a text close to the midpoint of two f32s can land on the wrong one), and a
            // decimal written as a JSON number (the JsonConverter's decimal.format=NUMERIC)
            // can have more digits than an f64 holds. These columns read the text itself.
            let raw = Box::<RawValue>::deserialize(d)?;
            return self.number_text(raw.get());
        }
        d.deserialize_any(self)
    }
}

impl DatumSeed<'_, '_> {
    /// A float or decimal column's value from its JSON text: a number, null, or a string
    /// ("NaN", "Infinity", base64 decimal bytes, the placeholder).
    fn number_text<E: de::Error>(self, text: &str) -> Result<Datum, E> {
        match text.as_bytes().first() {
            Some(b'n') => Ok(Datum::Null),
            Some(b'"') => {
                let s: Cow<str> = serde_json::from_str(text).map_err(E::custom)?;
                de::Visitor::visit_str(self, &s)
            }
            Some(b'-' | b'0'..=b'9') => {
                let shown = || format!("number {}", truncate(text));
                match &self.field.codec {
                    Codec::Float => match text.parse::<f32>() {
                        // A JSON number has no text for infinity: infinite is an overflow.
                        Ok(v) if v.is_finite() => Ok(Datum::Float(v)),
                        _ => Err(self.out_of_range(shown())),
                    },
                    Codec::Decimal { scale, .. } => {
                        self.decimal(parse_decimal_text(text, *scale), &shown())
                    }
                    Codec::WideDecimal { scale, target } => decimal_parts(text)
                        .map(|(unscaled, own)| match rescale(&unscaled, own, *scale) {
                            Some(v) => scaled_text(&v, *scale),
                            None => scaled_text(&unscaled, own),
                        })
                        .and_then(|t| text_or_double(&t, *target))
                        .ok_or_else(|| self.out_of_range(shown())),
                    _ => Err(self.mismatch(shown())),
                }
            }
            Some(b't' | b'f') => Err(self.mismatch(format_args!("boolean {text}"))),
            Some(b'[') => Err(self.mismatch("an array")),
            _ => Err(self.mismatch("an object")),
        }
    }

    fn mismatch<E: de::Error>(&self, got: impl fmt::Display) -> E {
        self.ctx.fail(format_args!(
            "expected {}, got {got}",
            expected(&self.field.codec)
        ))
    }

    fn out_of_range<E: de::Error>(&self, got: impl fmt::Display) -> E {
        self.ctx.fail(format_args!(
            "{got} does not fit {}",
            self.field.codec.describe()
        ))
    }

    fn time<E: de::Error>(&self, micros: Option<i64>, raw: i64) -> Result<Datum, E> {
        match micros {
            Some(m) if (0..MICROS_PER_DAY).contains(&m) => Ok(Datum::Time(m)),
            _ => Err(self.out_of_range(format_args!("{raw} (a time of day)"))),
        }
    }

    fn decimal<E: de::Error>(&self, unscaled: Option<i128>, shown: &str) -> Result<Datum, E> {
        let Codec::Decimal { precision, .. } = self.field.codec else {
            return Err(self.mismatch(shown));
        };
        match unscaled {
            Some(v) if fits_precision(v, precision) => Ok(Datum::Decimal(v)),
            _ => Err(self.out_of_range(shown)),
        }
    }
}

fn expected(codec: &Codec) -> String {
    match codec {
        Codec::Boolean => "a boolean".into(),
        Codec::Int | Codec::Long => format!("an integer ({})", codec.describe()),
        Codec::Float | Codec::Double => "a number".into(),
        Codec::String => "a string".into(),
        Codec::Binary => "base64 bytes".into(),
        Codec::Decimal { .. } => format!("base64 bytes of a {}", codec.describe()),
        Codec::WideDecimal { .. } => "base64 bytes of a decimal".into(),
        Codec::VariableScaleDecimal(_) => {
            "a VariableScaleDecimal {\"scale\": int, \"value\": base64}".into()
        }
        Codec::Date => "days since the epoch (io.debezium.time.Date)".into(),
        Codec::TimeMillis => "milliseconds since midnight (io.debezium.time.Time)".into(),
        Codec::TimeMicros => "microseconds since midnight (io.debezium.time.MicroTime)".into(),
        Codec::TimeNanos => "nanoseconds since midnight (io.debezium.time.NanoTime)".into(),
        Codec::TimestampMillis => {
            "milliseconds since the epoch (io.debezium.time.Timestamp)".into()
        }
        Codec::TimestampMicros => {
            "microseconds since the epoch (io.debezium.time.MicroTimestamp)".into()
        }
        Codec::TimestampNanos => {
            "nanoseconds since the epoch (io.debezium.time.NanoTimestamp)".into()
        }
        Codec::ZonedTimestamp => {
            "an ISO-8601 timestamp with offset (io.debezium.time.ZonedTimestamp)".into()
        }
        Codec::TimeText => "an ISO-8601 time of day".into(),
        Codec::TimestampText => "an ISO-8601 timestamp".into(),
        Codec::List(_) => "an array".into(),
        Codec::Struct(_) => "an object".into(),
        Codec::Map(_, _) => "an object or an array of [key, value] pairs".into(),
    }
}

impl<'de> de::Visitor<'de> for DatumSeed<'_, '_> {
    type Value = Datum;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&expected(&self.field.codec))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Datum, E> {
        Ok(Datum::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Datum, E> {
        Ok(Datum::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        match self.field.codec {
            Codec::Boolean => Ok(Datum::Boolean(v)),
            _ => Err(self.mismatch(format_args!("boolean {v}"))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => match self.field.codec {
                Codec::Float => Ok(Datum::Float(v as f32)),
                Codec::Double => Ok(Datum::Double(v as f64)),
                Codec::Decimal { scale, .. } => {
                    self.decimal(scale_up(v as i128, scale), &v.to_string())
                }
                _ => Err(self.out_of_range(v)),
            },
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        Ok(match self.field.codec {
            Codec::Int => Datum::Int(i32::try_from(v).map_err(|_| self.out_of_range(v))?),
            Codec::Long => Datum::Long(v),
            Codec::Float => Datum::Float(v as f32),
            Codec::Double => Datum::Double(v as f64),
            Codec::Date => Datum::Date(i32::try_from(v).map_err(|_| self.out_of_range(v))?),
            Codec::TimeMillis => return self.time(v.checked_mul(1000), v),
            Codec::TimeMicros => return self.time(Some(v), v),
            Codec::TimeNanos => return self.time(Some(v.div_euclid(1000)), v),
            Codec::TimestampMillis => {
                Datum::Timestamp(v.checked_mul(1000).ok_or_else(|| self.out_of_range(v))?)
            }
            Codec::TimestampMicros => Datum::Timestamp(v),
            Codec::TimestampNanos => Datum::Timestamp(v.div_euclid(1000)),
            Codec::TimeText | Codec::TimestampText => {
                return Err(self.ctx.fail(format_args!(
                    "integer {v} in a {} column of a record without a Connect schema: its unit \
                     depends on the connector's time.precision.mode and the column's precision; \
                     set decode.schemaless_time_unit, or send the schema \
                     (value.converter.schemas.enable=true)",
                    self.field.codec.describe()
                )));
            }
            Codec::Decimal { scale, .. } => {
                return self.decimal(scale_up(v as i128, scale), &v.to_string());
            }
            _ => return Err(self.mismatch(format_args!("integer {v}"))),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        match self.field.codec {
            Codec::Float => Ok(Datum::Float(v as f32)),
            Codec::Double => Ok(Datum::Double(v)),
            Codec::Decimal { scale, .. } => {
                // f64's Display is the shortest text that reads back as the same double,
                // never in exponent form, so it is what the producer most likely wrote.
                let text = v.to_string();
                self.decimal(parse_decimal_text(&text, scale), &text)
            }
            _ => Err(self.mismatch(format_args!("number {v}"))),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Datum, E> {
        if self.top && self.ctx.placeholder.is(&self.field.codec, s) {
            return Ok(Datum::Unchanged);
        }
        let shown = || format!("string {:?}", truncate(s));
        match &self.field.codec {
            Codec::String => Ok(Datum::String(s.to_owned())),
            Codec::Binary => BASE64
                .decode(s)
                .map(Datum::Binary)
                .map_err(|_| self.mismatch(shown())),
            Codec::Decimal { scale, .. } => match BASE64.decode(s) {
                Ok(bytes) => self.decimal(unscaled_from_be(&bytes), &shown()),
                // Without a Connect schema the table's decimal may arrive as text
                // (decimal.handling.mode=string).
                Err(_) => self.decimal(parse_decimal_text(s, *scale), &shown()),
            },
            Codec::WideDecimal { scale, target } => {
                let bytes = BASE64.decode(s).map_err(|_| self.mismatch(shown()))?;
                let text = scaled_text(&BigInt::from_signed_bytes_be(&bytes), *scale);
                text_or_double(&text, *target).ok_or_else(|| self.out_of_range(shown()))
            }
            Codec::ZonedTimestamp => DateTime::parse_from_rfc3339(s)
                .map(|t| Datum::TimestampTz(t.timestamp_micros()))
                .map_err(|_| self.mismatch(shown())),
            Codec::Double => s
                .parse()
                .map(Datum::Double)
                .map_err(|_| self.mismatch(shown())),
            Codec::Float => s
                .parse()
                .map(Datum::Float)
                .map_err(|_| self.mismatch(shown())),
            // ISO text for the temporal types only arrives without a Connect schema, from
            // producers other than Debezium's defaults.
            Codec::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| Datum::Date(days_since_epoch(d)))
                .map_err(|_| self.mismatch(shown())),
            Codec::TimeMillis | Codec::TimeMicros | Codec::TimeNanos | Codec::TimeText => {
                NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
                    .map(|t| {
                        Datum::Time(
                            t.num_seconds_from_midnight() as i64 * 1_000_000
                                + (t.nanosecond() / 1000) as i64,
                        )
                    })
                    .map_err(|_| self.mismatch(shown()))
            }
            Codec::TimestampMillis
            | Codec::TimestampMicros
            | Codec::TimestampNanos
            | Codec::TimestampText => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| Datum::Timestamp(t.and_utc().timestamp_micros()))
                .map_err(|_| self.mismatch(shown())),
            _ => Err(self.mismatch(shown())),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Datum, A::Error> {
        match &self.field.codec {
            Codec::Struct(fields) => RowSeed {
                fields,
                ctx: self.ctx,
                top: false,
                meta: None,
            }
            .visit_map(map)
            .map(Datum::Struct),
            Codec::VariableScaleDecimal(target) => {
                let (mut scale, mut value) = (None::<i32>, None::<String>);
                while let Some(Key(k)) = map.next_key::<Key>()? {
                    match k.as_ref() {
                        "scale" => scale = map.next_value()?,
                        "value" => value = map.next_value()?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let (Some(scale), Some(value)) = (scale, value) else {
                    return Err(self.mismatch("an object without scale or value"));
                };
                let bytes = BASE64
                    .decode(&value)
                    .map_err(|_| self.mismatch(format_args!("value {:?}", truncate(&value))))?;
                let text = scaled_text(&BigInt::from_signed_bytes_be(&bytes), scale);
                text_or_double(&text, *target).ok_or_else(|| self.out_of_range(text))
            }
            Codec::Map(key, value) => {
                let mut entries = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key>()? {
                    self.ctx.path.borrow_mut().push("key");
                    let kd: Datum = DatumSeed {
                        field: key,
                        ctx: self.ctx,
                        top: false,
                    }
                    .visit_str::<A::Error>(&k)?;
                    self.ctx.path.borrow_mut().pop();
                    self.ctx.path.borrow_mut().push("value");
                    let vd = map.next_value_seed(DatumSeed {
                        field: value,
                        ctx: self.ctx,
                        top: false,
                    })?;
                    self.ctx.path.borrow_mut().pop();
                    entries.push((kd, vd));
                }
                if self.top && self.ctx.placeholder.is_map(&entries) {
                    return Ok(Datum::Unchanged);
                }
                Ok(Datum::Map(entries))
            }
            _ => Err(self.mismatch("an object")),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        match &self.field.codec {
            Codec::List(element) => {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                self.ctx.path.borrow_mut().push("element");
                while let Some(d) = seq.next_element_seed(DatumSeed {
                    field: element,
                    ctx: self.ctx,
                    // A TOASTed array arrives as a one-element array of the placeholder.
                    top: self.top,
                })? {
                    items.push(d);
                }
                self.ctx.path.borrow_mut().pop();
                if self.top && self.ctx.placeholder.is_list(&items) {
                    return Ok(Datum::Unchanged);
                }
                if items.contains(&Datum::Unchanged) {
                    return Err(self.mismatch(format_args!(
                        "{:?} among other elements",
                        self.ctx.placeholder.text()
                    )));
                }
                Ok(Datum::List(items))
            }
            Codec::Map(key, value) => {
                // The JsonConverter writes maps with non-string keys as [[key, value], ...].
                let mut entries = Vec::new();
                while let Some(pair) = seq.next_element_seed(PairSeed {
                    key,
                    value,
                    ctx: self.ctx,
                })? {
                    entries.push(pair);
                }
                Ok(Datum::Map(entries))
            }
            _ => Err(self.mismatch("an array")),
        }
    }
}

struct PairSeed<'s, 'c> {
    key: &'s Field,
    value: &'s Field,
    ctx: &'c Ctx<'s>,
}

impl<'de> DeserializeSeed<'de> for PairSeed<'_, '_> {
    type Value = (Datum, Datum);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> de::Visitor<'de> for PairSeed<'_, '_> {
    type Value = (Datum, Datum);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a [key, value] pair")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let bad = || self.ctx.fail("a map entry that is not a [key, value] pair");
        let seed = |field| DatumSeed {
            field,
            ctx: self.ctx,
            top: false,
        };
        self.ctx.path.borrow_mut().push("key");
        let k = seq.next_element_seed(seed(self.key))?.ok_or_else(bad)?;
        if k.is_null() {
            // Iceberg map keys are required; Arrow would refuse the column at flush time.
            return Err(self.ctx.fail("a null map key"));
        }
        self.ctx.path.borrow_mut().pop();
        self.ctx.path.borrow_mut().push("value");
        let v = seq.next_element_seed(seed(self.value))?.ok_or_else(bad)?;
        self.ctx.path.borrow_mut().pop();
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(bad());
        }
        Ok((k, v))
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

fn text_or_double(text: &str, target: VariableScaleDecimalAs) -> Option<Datum> {
    match target {
        VariableScaleDecimalAs::String => Some(Datum::String(text.to_owned())),
        VariableScaleDecimalAs::Double => text.parse().ok().map(Datum::Double),
    }
}

/// Big-endian two's-complement bytes (Connect Decimal's encoding) as an i128, if they fit.
pub(crate) fn unscaled_from_be(bytes: &[u8]) -> Option<i128> {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    let (extra, rest) = bytes.split_at(bytes.len().saturating_sub(16));
    // Longer inputs fit only if the extra leading bytes are sign extension.
    if !extra.is_empty()
        && (extra.iter().any(|&b| b != fill)
            || rest.first().is_some_and(|b| (b & 0x80 != 0) != negative))
    {
        return None;
    }
    let mut buf = [fill; 16];
    buf[16 - rest.len()..].copy_from_slice(rest);
    Some(i128::from_be_bytes(buf))
}

pub(crate) fn fits_precision(v: i128, precision: u32) -> bool {
    precision <= 38 && v.unsigned_abs() < 10u128.pow(precision)
}

fn scale_up(v: i128, scale: u32) -> Option<i128> {
    10i128.checked_pow(scale).and_then(|m| v.checked_mul(m))
}

/// Decimal text ("-12.340", "1.5E-7") as an unscaled value with `scale` digits after the
/// point; None when it has more significant fraction digits than the scale, does not fit an
/// i128, or is not a decimal.
pub(crate) fn parse_decimal_text(s: &str, scale: u32) -> Option<i128> {
    let (unscaled, own) = decimal_parts(s)?;
    i128::try_from(rescale(&unscaled, own, i32::try_from(scale).ok()?)?).ok()
}

/// Decimal text as an unscaled integer and its scale: "-12.340" -> (-12340, 3),
/// "1.5E-7" -> (15, 8), "2E3" -> (2, -3). Exponents are bounded, so no text makes a huge number.
pub(crate) fn decimal_parts(s: &str) -> Option<(BigInt, i32)> {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    if !(-400..=400).contains(&exponent) {
        return None;
    }
    let (negative, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all = format!("{int}{frac}");
    let magnitude = BigInt::parse_bytes(all.as_bytes(), 10)?;
    let scale = i32::try_from(frac.len()).ok()? - exponent;
    Some((if negative { -magnitude } else { magnitude }, scale))
}

/// `unscaled` at scale `from` as an unscaled value at scale `to`, when that is exact.
pub(crate) fn rescale(unscaled: &BigInt, from: i32, to: i32) -> Option<BigInt> {
    let pow = |n: i32| BigInt::from(10u8).pow(n.unsigned_abs());
    if to >= from {
        Some(unscaled * pow(to - from))
    } else {
        let divisor = pow(from - to);
        let (q, r) = (unscaled / &divisor, unscaled % &divisor);
        (r == BigInt::ZERO).then_some(q)
    }
}

/// An unscaled integer and a scale as exact decimal text: (12345, 2) -> "123.45",
/// (5, -2) -> "500".
pub(crate) fn scaled_text(unscaled: &BigInt, scale: i32) -> String {
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    if scale <= 0 {
        let zeros = if digits == "0" {
            0
        } else {
            scale.unsigned_abs() as usize
        };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscaled_bytes_are_twos_complement_big_endian() {
        assert_eq!(unscaled_from_be(&[]), Some(0));
        assert_eq!(unscaled_from_be(&[0x30, 0x39]), Some(12345));
        assert_eq!(unscaled_from_be(&[0xcf, 0xc7]), Some(-12345));
        assert_eq!(unscaled_from_be(&[0xff; 20]), Some(-1));
        let mut wide = vec![0x00, 0x01];
        wide.extend([0; 15]);
        assert_eq!(unscaled_from_be(&wide), Some(1 << 120));
        let mut big = vec![0x00];
        big.extend([0x80; 16]);
        assert_eq!(unscaled_from_be(&big), None, "sign bit would flip");
        assert_eq!(
            unscaled_from_be(&[0x7f; 16]),
            Some(i128::from_be_bytes([0x7f; 16]))
        );
    }

    #[test]
    fn decimal_text_is_exact() {
        assert_eq!(parse_decimal_text("12.3", 2), Some(1230));
        assert_eq!(parse_decimal_text("-0.05", 2), Some(-5));
        assert_eq!(parse_decimal_text("7", 3), Some(7000));
        assert_eq!(parse_decimal_text("1.230", 2), Some(123));
        assert_eq!(parse_decimal_text("1.235", 2), None);
        assert_eq!(parse_decimal_text("1e5", 2), Some(10_000_000));
        assert_eq!(parse_decimal_text("1.5E-7", 8), Some(15));
        assert_eq!(parse_decimal_text("1.5E-7", 7), None);
        assert_eq!(parse_decimal_text("-12.340E1", 2), Some(-12340));
        assert_eq!(parse_decimal_text("1e999", 2), None);
        assert_eq!(parse_decimal_text("e5", 2), None);
        assert_eq!(parse_decimal_text(".", 2), None);
        assert_eq!(scaled_text(&BigInt::from(12345), 2), "123.45");
        assert_eq!(scaled_text(&BigInt::from(-5), 3), "-0.005");
        assert_eq!(scaled_text(&BigInt::from(5), -2), "500");
        assert_eq!(scaled_text(&BigInt::from(0), 2), "0.00");
    }
}
