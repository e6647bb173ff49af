//! Column types for records without a Connect schema (`schemas.enable=false`): learned from
//! the values, starting from the existing table's columns when the runtime registered them.
//!
//! Inference only ever widens: a new field becomes a new column, an int column that sees a
//! fraction becomes a double, a struct gains fields. A value that fits no widening is an
//! error, never a silent conversion. Null values teach nothing (the column appears with its
//! first non-null value). This runs only when a record does not fit the columns known so far.

use std::sync::LazyLock;

use serde::de::DeserializeSeed;
use serde_json::Value;

use super::envelope::RawObject;
use super::logical::{Ctx, DatumSeed, Placeholder};
use super::schema::{Codec, Field};

/// Widens `fields` so that the JSON object `row` fits; new columns come in the row's field
/// order. A top-level `placeholder` value says nothing of its column's type. Errors name the
/// column and why.
pub(crate) fn merge_row(
    fields: &mut Vec<Field>,
    row: &str,
    skip: &dyn Fn(&str) -> bool,
    placeholder: &Placeholder,
) -> Result<bool, (String, String)> {
    // Read as ordered raw entries: serde_json's own map would sort the columns by name.
    let object = RawObject::parse(row)
        .map_err(|e| ("(row)".to_string(), format!("expected an object: {e}")))?;
    let mut changed = false;
    for (name, raw) in &object.entries {
        let value: Value =
            serde_json::from_str(raw.get()).map_err(|e| (name.to_string(), e.to_string()))?;
        let mut one = serde_json::Map::new();
        one.insert(name.to_string(), value);
        changed |= merge_object(fields, &one, skip, "", Some(placeholder))?;
    }
    Ok(changed)
}

fn merge_object(
    fields: &mut Vec<Field>,
    object: &serde_json::Map<String, Value>,
    skip: &dyn Fn(&str) -> bool,
    prefix: &str,
    placeholder: Option<&Placeholder>,
) -> Result<bool, (String, String)> {
    let mut changed = false;
    for (name, value) in object {
        if skip(name) || placeholder.is_some_and(|p| value.as_str() == Some(p.text())) {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match fields.iter_mut().find(|f| &f.name == name) {
            Some(field) => changed |= merge_value(field, value, &path)?,
            None => {
                if let Some(codec) = infer(value) {
                    fields.push(Field::new(name.clone(), codec));
                    changed = true;
                }
            }
        }
    }
    Ok(changed)
}

fn merge_value(field: &mut Field, value: &Value, path: &str) -> Result<bool, (String, String)> {
    if value.is_null() {
        return Ok(false);
    }
    let why = match fits(field, value) {
        Ok(()) => return Ok(false),
        Err(why) => why,
    };
    let widened = match (&mut field.codec, value) {
        (Codec::Struct(children), Value::Object(o)) => {
            return merge_object(children, o, &|_| false, path, None);
        }
        (Codec::List(element), Value::Array(items)) => {
            let mut changed = false;
            for item in items {
                changed |= merge_value(element, item, &format!("{path}.element"))?;
            }
            return Ok(changed);
        }
        (Codec::Int, Value::Number(n)) if n.is_i64() => Codec::Long,
        (Codec::Int | Codec::Long | Codec::Float, Value::Number(_)) => Codec::Double,
        // An existing time column: the column's own reason (an integer's unit is unknown).
        (Codec::TimeText | Codec::TimestampText, Value::Number(_)) => {
            return Err((path.to_string(), why));
        }
        (codec, v) => {
            return Err((
                path.to_string(),
                format!(
                    "{} does not fit the column's type {}",
                    kind(v),
                    codec.describe()
                ),
            ));
        }
    };
    field.codec = widened;
    Ok(true)
}

/// Whether the column reads this value as it is, else why not.
fn fits(field: &Field, value: &Value) -> Result<(), String> {
    // Only top-level values can be the placeholder, and this reads none: any placeholder
    // does, and one made once spares an MD5 and a base64 per value.
    static UNUSED: LazyLock<Placeholder> = LazyLock::new(Placeholder::default);
    let ctx = Ctx::new(false, &UNUSED);
    DatumSeed {
        field,
        ctx: &ctx,
        top: false,
    }
    .deserialize(value)
    .map(drop)
    .map_err(|e| e.to_string())
}

/// The type a value suggests; None for nulls and empty containers, which suggest nothing.
fn infer(value: &Value) -> Option<Codec> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => Codec::Boolean,
        Value::Number(n) if n.is_f64() => Codec::Double,
        Value::Number(_) => Codec::Long,
        Value::String(_) => Codec::String,
        Value::Array(items) => {
            let mut element: Option<Field> = None;
            for item in items {
                match &mut element {
                    None => element = infer(item).map(|c| Field::new("element", c)),
                    Some(e) => {
                        merge_value(e, item, "element").ok()?;
                    }
                }
            }
            Codec::List(Box::new(element?))
        }
        Value::Object(o) => {
            let mut fields = Vec::new();
            merge_object(&mut fields, o, &|_| false, "", None).ok()?;
            if fields.is_empty() {
                return None;
            }
            Codec::Struct(fields)
        }
    })
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", s.chars().take(64).collect::<String>()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::UNAVAILABLE_VALUE;
    use serde_json::json;

    fn merge_row(
        fields: &mut Vec<Field>,
        row: &str,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<bool, (String, String)> {
        super::merge_row(fields, row, skip, &Placeholder::default())
    }

    fn codecs(fields: &[Field]) -> Vec<(&str, &Codec)> {
        fields.iter().map(|f| (f.name.as_str(), &f.codec)).collect()
    }

    #[test]
    fn columns_appear_with_their_first_value_and_widen() {
        let mut fields = Vec::new();
        merge_row(
            &mut fields,
            r#"{"id": 1, "name": "a", "score": null, "tags": ["x"], "ok": true}"#,
            &|_| false,
        )
        .unwrap();
        assert_eq!(
            codecs(&fields),
            [
                ("id", &Codec::Long),
                ("name", &Codec::String),
                (
                    "tags",
                    &Codec::List(Box::new(Field::new("element", Codec::String)))
                ),
                ("ok", &Codec::Boolean),
            ]
        );
        assert!(
            merge_row(
                &mut fields,
                &json!({"id": 2, "score": 1.5}).to_string(),
                &|_| false
            )
            .unwrap()
        );
        assert_eq!(fields[4].codec, Codec::Double);
        assert!(!merge_row(&mut fields, &json!({"score": 3}).to_string(), &|_| false).unwrap());
    }

    #[test]
    fn incompatible_values_name_the_column() {
        let mut fields = Vec::new();
        merge_row(&mut fields, &json!({"a": {"b": 1}}).to_string(), &|_| false).unwrap();
        assert_eq!(
            merge_row(&mut fields, &json!({"a": {"b": "x"}}).to_string(), &|_| {
                false
            })
            .unwrap_err(),
            (
                "a.b".to_string(),
                "string \"x\" does not fit the column's type long".to_string()
            )
        );
    }

    #[test]
    fn placeholders_and_skipped_fields_teach_nothing() {
        let mut fields = Vec::new();
        merge_row(
            &mut fields,
            &json!({"t": UNAVAILABLE_VALUE, "__op": "c"}).to_string(),
            &|n: &str| n.starts_with("__"),
        )
        .unwrap();
        assert!(fields.is_empty());
    }
}
