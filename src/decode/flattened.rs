//! Rows flattened by Debezium's ExtractNewRecordState SMT (`decode.format = "flattened"`): the
//! row's own columns plus metadata fields the SMT adds with its `__` prefix (`__op`,
//! `__deleted`, `__source_ts_ms`, `__table`, `__lsn`, ...).
//!
//! Only the metadata is read here; the row columns go through the same typed path as
//! envelope images. Every `__`-prefixed field is metadata, never a table column: that is the
//! SMT's naming, and it must never reach a table.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::envelope::RawSource;
use super::error::{DecodeErrorKind, RecordPart};
use super::{Op, SourceInfo};

pub(crate) fn is_metadata_field(name: &str) -> bool {
    name.starts_with("__")
}

/// What the SMT's metadata fields say about a row.
#[derive(Debug)]
pub(crate) struct FlatMeta {
    pub op: Op,
    pub source: SourceInfo,
    pub event_ts_ms: Option<i64>,
}

/// Reads the `__` fields. Without `__op` the row is an upsert ([`Op::Update`]: replace
/// whatever the key held); `__deleted = true` (delete.handling.mode=rewrite) makes it a
/// delete of the row it carries.
pub(crate) fn read_meta(entries: Vec<(String, Value)>) -> Result<FlatMeta, DecodeErrorKind> {
    let bad = |field: &'static str, message: String| DecodeErrorKind::Envelope {
        part: RecordPart::Value,
        field,
        message,
    };
    let mut op = None;
    let mut deleted = false;
    let mut event_ts_ms = None;
    let mut source = Map::new();
    for (name, value) in entries {
        match name.as_str() {
            "__op" => match &value {
                Value::String(code) => {
                    op = Some(
                        Op::from_code(code)
                            .ok_or_else(|| DecodeErrorKind::UnknownOp(code.clone()))?,
                    )
                }
                Value::Null => {}
                other => return Err(bad("__op", format!("{other} is not a string"))),
            },
            "__deleted" => {
                deleted = match &value {
                    Value::Bool(b) => *b,
                    Value::String(s) => s == "true",
                    Value::Null => false,
                    other => return Err(bad("__deleted", format!("{other} is not a boolean"))),
                }
            }
            "__ts_ms" => {
                event_ts_ms = match &value {
                    Value::Null => None,
                    v => Some(
                        v.as_i64()
                            .ok_or_else(|| bad("__ts_ms", format!("{v} is not an integer")))?,
                    ),
                }
            }
            other => {
                let field = other
                    .strip_prefix("__source_")
                    .or_else(|| other.strip_prefix("__"))
                    .unwrap_or(other);
                source.insert(field.to_string(), value);
            }
        }
    }
    let source = RawSource::deserialize(&Value::Object(source))
        .map_err(|e| bad("__source_*", e.to_string()))?
        .into_info();
    let op = match (op, deleted) {
        (_, true) => Op::Delete,
        (Some(op), false) => op,
        (None, false) => Op::Update,
    };
    Ok(FlatMeta {
        op,
        source,
        event_ts_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SourcePosition;
    use serde_json::json;

    #[test]
    fn metadata_fields_become_op_and_source() {
        let meta = read_meta(vec![
            ("__op".into(), json!("u")),
            ("__deleted".into(), json!("false")),
            ("__source_ts_ms".into(), json!(1700000000123i64)),
            ("__table".into(), json!("orders")),
            ("__lsn".into(), json!(33227720)),
        ])
        .unwrap();
        assert_eq!(meta.op, Op::Update);
        assert_eq!(meta.source.ts_ms, Some(1700000000123));
        assert_eq!(meta.source.table.as_deref(), Some("orders"));
        assert_eq!(
            meta.source.position,
            Some(SourcePosition::Lsn {
                lsn: 33227720,
                tx_id: None
            })
        );
    }

    #[test]
    fn deleted_rows_are_deletes_and_bad_ops_are_errors() {
        let meta = read_meta(vec![("__deleted".into(), json!("true"))]).unwrap();
        assert_eq!(meta.op, Op::Delete);
        assert_eq!(read_meta(vec![]).unwrap().op, Op::Update);
        assert_eq!(
            read_meta(vec![("__op".into(), json!("x"))]).unwrap_err(),
            DecodeErrorKind::UnknownOp("x".into())
        );
    }
}
