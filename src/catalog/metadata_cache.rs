//! The metadata files a catalog read or wrote last, kept parsed by location.
//!
//! A metadata file never changes once written: a commit writes a new one at a new location. So
//! when a table's current location is one held here, its metadata is not read and parsed
//! again. At thousands of snapshots that parse (and the GET before it, on S3 Tables) is the
//! larger part of a commit. One entry per table; the least recently used tables go first once
//! the files held add up to more than the budget.

use std::collections::HashMap;
use std::sync::Mutex;

use iceberg::spec::TableMetadata;

use super::TableIdent;

/// The size of the metadata files held, in bytes of JSON (parsed, they take about 2-3x that).
pub const BUDGET_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub(crate) struct MetadataCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tables: HashMap<TableIdent, Entry>,
    bytes: usize,
    tick: u64,
}

struct Entry {
    location: String,
    metadata: TableMetadata,
    bytes: usize,
    used: u64,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MetadataCache")
            .field("tables", &inner.tables.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

impl MetadataCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The table's metadata if the file at `location` is the one held for it.
    pub(crate) fn get(&self, ident: &TableIdent, location: &str) -> Option<TableMetadata> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.tables.get_mut(ident)?;
        if entry.location != location {
            return None;
        }
        entry.used = tick;
        Some(entry.metadata.clone())
    }

    /// Holds `metadata`, the file at `location` of `bytes` bytes, as the table's latest.
    pub(crate) fn put(
        &self,
        ident: &TableIdent,
        location: &str,
        metadata: &TableMetadata,
        bytes: usize,
    ) {
        self.put_within(ident, location, metadata, bytes, BUDGET_BYTES);
    }

    fn put_within(
        &self,
        ident: &TableIdent,
        location: &str,
        metadata: &TableMetadata,
        bytes: usize,
        budget: usize,
    ) {
        let mut inner = self.lock();
        inner.remove(ident);
        if bytes > budget {
            return;
        }
        while inner.bytes + bytes > budget {
            let Some(oldest) = inner
                .tables
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(ident, _)| ident.clone())
            else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.bytes += bytes;
        inner.tables.insert(
            ident.clone(),
            Entry {
                location: location.to_string(),
                metadata: metadata.clone(),
                bytes,
                used,
            },
        );
    }

    /// Forgets the table (it was dropped).
    pub(crate) fn forget(&self, ident: &TableIdent) {
        self.lock().remove(ident);
    }
}

impl Inner {
    fn remove(&mut self, ident: &TableIdent) {
        if let Some(old) = self.tables.remove(ident) {
            self.bytes -= old.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_metadata as metadata;

    fn ident(name: &str) -> TableIdent {
        TableIdent {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_table_is_served_only_at_the_location_held_for_it() {
        let cache = MetadataCache::default();
        let m = metadata("/w/a");
        cache.put(&ident("a"), "/w/a/metadata/00001.json", &m, 10);
        assert!(cache.get(&ident("a"), "/w/a/metadata/00001.json").is_some());
        assert!(cache.get(&ident("a"), "/w/a/metadata/00002.json").is_none());
        assert!(cache.get(&ident("b"), "/w/a/metadata/00001.json").is_none());
        // A newer file replaces the older one.
        cache.put(&ident("a"), "/w/a/metadata/00002.json", &m, 10);
        assert!(cache.get(&ident("a"), "/w/a/metadata/00001.json").is_none());
        assert!(cache.get(&ident("a"), "/w/a/metadata/00002.json").is_some());
        cache.forget(&ident("a"));
        assert!(cache.get(&ident("a"), "/w/a/metadata/00002.json").is_none());
        assert_eq!(cache.lock().bytes, 0);
    }

    #[test]
    fn the_least_recently_used_tables_go_first_past_the_budget() {
        let cache = MetadataCache::default();
        let m = metadata("/w");
        cache.put_within(&ident("a"), "a1", &m, 40, 100);
        cache.put_within(&ident("b"), "b1", &m, 40, 100);
        assert!(cache.get(&ident("a"), "a1").is_some());
        // c needs room: b, used longest ago, goes; a stays.
        cache.put_within(&ident("c"), "c1", &m, 40, 100);
        assert!(cache.get(&ident("b"), "b1").is_none());
        assert!(cache.get(&ident("a"), "a1").is_some());
        assert!(cache.get(&ident("c"), "c1").is_some());
        assert_eq!(cache.lock().bytes, 80);
        // A file larger than the whole budget is not held, and drops the table's older one.
        cache.put_within(&ident("a"), "a2", &m, 101, 100);
        assert!(cache.get(&ident("a"), "a1").is_none());
        assert!(cache.get(&ident("a"), "a2").is_none());
        assert_eq!(cache.lock().bytes, 40);
    }
}
