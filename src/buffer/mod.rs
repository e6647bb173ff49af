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
use crate::decode::{Change, Datum, Op};

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

    /// Approximate memory held (the size of the records the changes came from).
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

    /// Adds a change; `record_bytes` is the size of the Kafka record it came from.
    pub fn push(&mut self, mut change: Change, record_bytes: usize) {
        self.note_position(
            &change.position.topic,
            change.position.partition,
            change.position.offset,
        );
        self.bytes += record_bytes;
        if change.op == Op::Truncate {
            // Nothing after a truncate merges with what came before it: that is all dropped.
            self.by_key.clear();
        }
        if change.key.is_empty() || change.op == Op::Truncate {
            // Append-only tables and truncates are never merged.
            self.changes.push(Some(change));
            self.live += 1;
            return;
        }
        let key = key_of(&change.key);
        let Some(&at) = self.by_key.get(&key) else {
            self.by_key.insert(key, self.changes.len());
            self.changes.push(Some(change));
            self.live += 1;
            return;
        };
        let previous = self.changes[at].take();
        self.live -= usize::from(previous.is_some());
        if let Some(previous) = previous {
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
