//! buffer: one table's changes since its last flush, deduplicated by primary key (last change
//! wins; Debezium keys land in one partition, so partition order is event order for a key).
//!
//! Merging two changes of one key keeps what the commit needs to know: the last change wins,
//! an insert followed by updates stays an insert, an insert followed by a delete stays a
//! delete (the insert may have been a re-send of a row the table already holds: Debezium is
//! at-least-once), and an unchanged (TOASTed) column takes the value of the previous image in
//! the window.
//! A column that stays unchanged is resolved later against the table, never written as the
//! placeholder. The buffer never talks to Kafka, staging or the catalog.

use std::collections::HashMap;
use std::time::Instant;

use crate::commit::CommittedOffsets;
use crate::decode::{ALLOCATION_OVERHEAD, Change, Datum, Op};

/// A change's slot in the buffer.
const SLOT: usize = std::mem::size_of::<Option<Change>>();
/// An entry of the map of keys: the key's string and its place, and the map's control byte,
/// at the map's load factor of up to 7/8.
const KEY_ENTRY: usize = (std::mem::size_of::<(String, usize)>() + 1) * 8 / 7;

#[derive(Debug, Default)]
pub struct TableBuffer {
    /// In arrival order; `None` where a later change of the same key replaced the change.
    changes: Vec<Option<Change>>,
    by_key: HashMap<String, usize>,
    live: usize,
    bytes: usize,
    opened: Option<Instant>,
    /// Positions consumed for this table since the last flush, including records that
    /// produced no row (tombstones after deletes, skipped bad records).
    offsets: CommittedOffsets,
    /// The table keeps deleted rows (soft deletes): a delete is a row of its own, even of a
    /// key inserted in this window, and carries the key's last image.
    keep_deletes: bool,
}

/// A flushed buffer: the changes in order and the positions they cover.
#[derive(Debug, Default)]
pub struct Flushed {
    pub changes: Vec<Change>,
    pub offsets: CommittedOffsets,
}

impl TableBuffer {
    /// Rows waiting for a flush.
    pub fn rows(&self) -> usize {
        self.live
    }

    /// About the memory the buffer holds: each change's slot and heap bytes, and each key's
    /// entry in the map of keys. Not the size of the records: a change without the Connect
    /// schema envelope is a quarter of the record's size with it, and takes the same memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest waiting change or position arrived.
    pub fn opened(&self) -> Option<Instant> {
        self.opened
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0 && self.offsets.is_empty()
    }

    /// Makes deletes rows of their own (the table soft-deletes).
    pub fn keep_deletes(&mut self) {
        self.keep_deletes = true;
    }

    /// Records that `topic`/`partition` was read up to `offset` with nothing to apply.
    pub fn note_position(&mut self, topic: &str, partition: i32, offset: i64) {
        self.offsets.advance(topic, partition, offset + 1);
        self.opened.get_or_insert_with(Instant::now);
    }

    /// Adds a change.
    pub fn push(&mut self, mut change: Change) {
        self.note_position(
            &change.position.topic,
            change.position.partition,
            change.position.offset,
        );
        if change.op == Op::Truncate {
            // Nothing after a truncate merges with what came before it: that is all dropped.
            self.by_key.clear();
        }
        if change.key.is_empty() || change.op == Op::Truncate {
            // Append-only tables and truncates are never merged.
            self.add(change);
            return;
        }
        let key = key_of(&change.key);
        let Some(&at) = self.by_key.get(&key) else {
            self.bytes += KEY_ENTRY + key.capacity() + ALLOCATION_OVERHEAD;
            self.by_key.insert(key, self.changes.len());
            self.add(change);
            return;
        };
        let previous = self.changes[at].take();
        self.live -= usize::from(previous.is_some());
        if let Some(previous) = previous {
            // Its slot stays, empty; what it held on the heap is freed.
            self.bytes -= previous.heap_bytes();
            fill_unchanged(&mut change, &previous);
            let first_was_insert = previous.op == Op::Create;
            match change.op {
                // The deleted row keeps its last values, whatever the delete carries.
                Op::Delete if self.keep_deletes => fill_deleted(&mut change, &previous),
                Op::Update | Op::Read | Op::Create if first_was_insert => change.op = Op::Create,
                // The key may be in the table (it was updated or deleted in this window), so a
                // re-insert must still replace the table's row.
                Op::Create => change.op = Op::Update,
                _ => {}
            }
        }
        // The merged change takes the latest position in arrival order.
        self.by_key.insert(key, self.changes.len());
        self.add(change);
    }

    fn add(&mut self, change: Change) {
        self.bytes += SLOT + change.heap_bytes();
        self.changes.push(Some(change));
        self.live += 1;
    }

    /// Empties the buffer.
    pub fn take(&mut self) -> Flushed {
        let changes = std::mem::take(&mut self.changes)
            .into_iter()
            .flatten()
            .collect();
        self.by_key.clear();
        self.live = 0;
        self.bytes = 0;
        self.opened = None;
        Flushed {
            changes,
            offsets: std::mem::take(&mut self.offsets),
        }
    }
}

/// A map key for a primary key. Datum has floats, so it is neither `Eq` nor `Hash`; its debug
/// form is exact for every variant.
fn key_of(key: &[Datum]) -> String {
    format!("{key:?}")
}

/// Gives a delete the last image of its row, for a table that keeps deleted rows: Debezium's
/// delete usually carries only the key. Columns are matched by name and type, as in
/// [`fill_unchanged`]; a value the delete does carry is kept.
fn fill_deleted(change: &mut Change, previous: &Change) {
    let Some(prev) = previous.after.as_ref() else {
        return;
    };
    let columns = change.schema.columns();
    let mut image = change
        .before
        .take()
        .unwrap_or_else(|| vec![Datum::Null; columns.len()]);
    for (i, value) in image.iter_mut().enumerate() {
        if !matches!(value, Datum::Null | Datum::Unchanged) {
            continue;
        }
        let column = &columns[i];
        let from = previous
            .schema
            .columns()
            .iter()
            .position(|c| c.name == column.name && c.codec == column.codec);
        if let Some(old) = from.and_then(|j| prev.get(j)) {
            *value = old.clone();
        }
    }
    change.before = Some(image);
}

/// Takes unchanged (TOASTed) columns of `change` from the previous image of the same key,
/// matching columns by name and type, so a schema change between the two images (a column
/// added) does not lose the value.
fn fill_unchanged(change: &mut Change, previous: &Change) {
    let (Some(after), Some(prev)) = (change.after.as_mut(), previous.after.as_ref()) else {
        return;
    };
    let same_layout = change.schema.columns() == previous.schema.columns();
    for (i, value) in after.iter_mut().enumerate() {
        if !matches!(value, Datum::Unchanged) {
            continue;
        }
        let from = if same_layout {
            Some(i)
        } else {
            let column = &change.schema.columns()[i];
            previous
                .schema
                .columns()
                .iter()
                .position(|c| c.name == column.name && c.codec == column.codec)
        };
        if let Some(old) = from.and_then(|j| prev.get(j))
            && !matches!(old, Datum::Unchanged)
        {
            *value = old.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use super::*;
    use crate::decode::Decoded;
    use crate::decode::tests::{decoder, record};

    /// The system allocator, counting the bytes this thread holds (asked for, so without the
    /// allocator's own overhead).
    struct Counting;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            HELD.with(|h| h.set(h.get() + layout.size() as isize));
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            HELD.with(|h| h.set(h.get() - layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn held() -> isize {
        HELD.with(Cell::get)
    }

    /// Debezium's PostgreSQL shape (as scripts/fixtures/produce_sample.py writes it), with or
    /// without the Connect schema envelope: key `id`, four text columns, a decimal, a
    /// timestamp, and the source block.
    fn event(id: u32, op: &str, schema: bool) -> (String, String) {
        let row = |v: u32| {
            format!(
                r#"{{"id": {id}, "first_name": "first{id}", "last_name": "last{id}", "email": "user{id}.v{v}@example.com", "balance": "AQI=", "updated_at": {}}}"#,
                1_700_000_000_000_000u64 + u64::from(id)
            )
        };
        let before = if op == "u" { row(0) } else { "null".into() };
        let payload = format!(
            r#"{{"before": {before}, "after": {}, "source": {{"version": "2.7.0.Final", "connector": "postgresql", "name": "dbserver1", "ts_ms": 1700000000000, "snapshot": "false", "db": "postgres", "schema": "inventory", "table": "customers", "txId": 1000, "lsn": {id}}}, "op": "{op}", "ts_ms": 1700000000000}}"#,
            row(1)
        );
        let key = format!(r#"{{"id": {id}}}"#);
        if !schema {
            return (key, payload);
        }
        let text = |f: &str| format!(r#"{{"type": "string", "optional": false, "field": "{f}"}}"#);
        let fields = format!(
            r#"[{{"type": "int32", "optional": false, "field": "id"}}, {}, {}, {}, {{"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": {{"scale": "2", "connect.decimal.precision": "10"}}, "field": "balance"}}, {{"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "updated_at"}}]"#,
            text("first_name"),
            text("last_name"),
            text("email")
        );
        let image = |f: &str| {
            format!(r#"{{"type": "struct", "optional": true, "field": "{f}", "fields": {fields}}}"#)
        };
        let source = r#"{"type": "struct", "optional": false, "field": "source", "fields": [{"type": "string", "optional": false, "field": "version"}, {"type": "string", "optional": false, "field": "connector"}, {"type": "string", "optional": false, "field": "name"}, {"type": "int64", "optional": false, "field": "ts_ms"}, {"type": "string", "optional": true, "field": "snapshot"}, {"type": "string", "optional": false, "field": "db"}, {"type": "string", "optional": false, "field": "schema"}, {"type": "string", "optional": false, "field": "table"}, {"type": "int64", "optional": true, "field": "txId"}, {"type": "int64", "optional": true, "field": "lsn"}]}"#;
        let value = format!(
            r#"{{"schema": {{"type": "struct", "optional": false, "fields": [{}, {}, {source}, {{"type": "string", "optional": false, "field": "op"}}, {{"type": "int64", "optional": true, "field": "ts_ms"}}]}}, "payload": {payload}}}"#,
            image("before"),
            image("after")
        );
        let key = format!(
            r#"{{"schema": {{"type": "struct", "optional": false, "fields": [{{"type": "int32", "optional": false, "field": "id"}}]}}, "payload": {key}}}"#
        );
        (key, value)
    }

    /// What the buffer says it holds is what it holds, within the allocator's rounding and the
    /// slack of its growing list and map, with the envelope or without: the records' sizes
    /// differ four times over, the changes do not.
    #[test]
    fn bytes_are_what_the_changes_hold() {
        for schema in [true, false] {
            let mut decoder = decoder("");
            let mut buffer = TableBuffer::default();
            let mut record_bytes = 0;
            let mut decode = |id: u32, op: &str, record_bytes: &mut usize| {
                let (key, value) = event(id, op, schema);
                *record_bytes += key.len() + value.len();
                let decoded = decoder
                    .decode(&record(
                        "dbserver1.inventory.customers",
                        id.into(),
                        Some(&key),
                        Some(&value),
                    ))
                    .unwrap();
                match decoded {
                    Decoded::Change(change) => change,
                    other => panic!("not a change: {other:?}"),
                }
            };
            // The decoder's caches (schemas, names) are filled before counting.
            drop(decode(1_000_000, "c", &mut 0));
            let before = held();
            // 1,000 keys, a third of them updated: the updates replace their inserts.
            for id in 0..1_000 {
                let change = decode(id, "c", &mut record_bytes);
                buffer.push(change);
            }
            for id in (0..1_000).step_by(3) {
                let change = decode(id, "u", &mut record_bytes);
                buffer.push(change);
            }
            let held = (held() - before) as usize;
            let said = buffer.bytes();
            eprintln!(
                "schema envelope {schema}: buffer says {said} bytes, holds {held}, records {record_bytes}"
            );
            assert_eq!(buffer.rows(), 1_000);
            // The estimate counts 16 bytes of rounding per allocation (not in `held`) and no
            // spare capacity (in `held`: the list and the map grow by doubling).
            assert!(
                held <= said * 9 / 8 && said <= held * 5 / 4,
                "schema envelope {schema}: buffer says {said} bytes, holds {held}"
            );
        }
    }
}
