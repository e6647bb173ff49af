//! The Kafka offsets a table holds: `topic -> partition -> next offset` per consumer group.
//!
//! Every Floe snapshot records them in its summary (`floe.offsets`, with `floe.consumer-group`)
//! and, so that snapshot expiry or compaction by others cannot lose them, in the table property
//! `floe.offsets.<group>`, set in the same atomic commit.

use std::collections::BTreeMap;

use iceberg::spec::TableMetadata;
use serde::{Deserialize, Serialize};

pub const SUMMARY_OFFSETS: &str = "floe.offsets";
pub const SUMMARY_GROUP: &str = "floe.consumer-group";
pub const SUMMARY_COMMIT_ID: &str = "floe.commit-id";
const PROPERTY_PREFIX: &str = "floe.offsets.";

/// `topic -> partition -> next offset to read`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffsets(pub BTreeMap<String, BTreeMap<i32, i64>>);

impl CommittedOffsets {
    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeMap::is_empty)
    }

    /// Records that everything before `next` in the partition is applied.
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        let entry = self
            .0
            .entry(topic.to_string())
            .or_default()
            .entry(partition)
            .or_insert(next);
        *entry = (*entry).max(next);
    }

    /// Per partition, the furthest of the two: a table's offsets only move forward.
    pub fn merge(&mut self, other: &CommittedOffsets) {
        for (topic, partitions) in &other.0 {
            for (partition, next) in partitions {
                self.advance(topic, *partition, *next);
            }
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic)?.get(&partition).copied()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("maps of strings and integers always serialize")
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a floe offsets document: {e}"))
    }

    pub fn property_key(group: &str) -> String {
        format!("{PROPERTY_PREFIX}{group}")
    }

    /// What `table` holds for `group`: the table property, else the newest snapshot in the
    /// current ancestry that Floe wrote for the group (walking back past snapshots written by
    /// others, such as compaction), else nothing.
    pub fn of_table(metadata: &TableMetadata, group: &str) -> Result<Self, String> {
        if let Some(text) = metadata.properties().get(&Self::property_key(group)) {
            return Self::from_json(text)
                .map_err(|e| format!("table property {}: {e}", Self::property_key(group)));
        }
        let mut next = metadata.current_snapshot();
        while let Some(snapshot) = next {
            let props = &snapshot.summary().additional_properties;
            if props.get(SUMMARY_GROUP).map(String::as_str) == Some(group)
                && let Some(text) = props.get(SUMMARY_OFFSETS)
            {
                return Self::from_json(text).map_err(|e| {
                    format!("snapshot {} {SUMMARY_OFFSETS}: {e}", snapshot.snapshot_id())
                });
            }
            next = snapshot
                .parent_snapshot_id()
                .and_then(|id| metadata.snapshot_by_id(id));
        }
        Ok(Self::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_only_move_forward_and_round_trip_as_json() {
        let mut a = CommittedOffsets::default();
        a.advance("t", 0, 10);
        a.advance("t", 0, 5);
        let mut b = CommittedOffsets::default();
        b.advance("t", 0, 7);
        b.advance("t", 1, 3);
        b.advance("u", 2, 1);
        a.merge(&b);
        assert_eq!(a.get("t", 0), Some(10));
        assert_eq!(a.get("t", 1), Some(3));
        assert_eq!(a.get("u", 2), Some(1));
        assert_eq!(a.to_json(), r#"{"t":{"0":10,"1":3},"u":{"2":1}}"#);
        assert_eq!(CommittedOffsets::from_json(&a.to_json()).unwrap(), a);
        assert!(CommittedOffsets::from_json("[1]").is_err());
    }
}
