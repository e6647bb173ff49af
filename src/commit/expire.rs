//! Snapshot expiry, for catalogs where no service maintains the table (the local catalog, and
//! REST catalogs unless configured otherwise; never S3 Tables, which expires snapshots itself
//! and refuses deletes inside its warehouse).
//!
//! Each commit removes, in the same catalog update that adds its snapshot, the oldest
//! snapshots the table's retention allows, Iceberg's `history.expire.max-snapshot-age-ms`
//! (default 5 days) and `history.expire.min-snapshots-to-keep` (default 1), at most
//! [`MAX_PER_COMMIT`] at a time. Once the commit landed, the files only those snapshots
//! referenced are deleted: their manifest lists, manifests no kept snapshot lists, and data and
//! delete files the snapshots removed from the table.
//!
//! Only a table whose history is one line is expired: every snapshot an ancestor of the
//! current one and no branch or tag but `main`. Then a file the oldest kept snapshot does not
//! reference is referenced by no kept snapshot, because a line of snapshots never adds back a
//! file it removed. A table with branches, tags or snapshots off the line is left alone.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use iceberg::io::FileIO;
use iceberg::spec::{FormatVersion, MAIN_BRANCH, ManifestFile, ManifestStatus, TableMetadata};

use super::files::FileError;
use super::snapshot::{load_manifest, read_manifest_list};

/// Snapshots one commit expires at most; a longer backlog is worked off over the next commits.
pub const MAX_PER_COMMIT: usize = 100;

/// Iceberg's default `history.expire.max-snapshot-age-ms`: 5 days.
pub const DEFAULT_MAX_AGE_MS: i64 = 5 * 24 * 3600 * 1000;

/// How long a table keeps its snapshots: Iceberg's table properties. (A retention set on the
/// `main` branch itself is not read.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// `history.expire.max-snapshot-age-ms`.
    pub max_age_ms: i64,
    /// `history.expire.min-snapshots-to-keep`, counting the snapshot being committed.
    pub min_to_keep: usize,
}

impl ExpiryPolicy {
    pub fn of(properties: &HashMap<String, String>) -> Self {
        let get = |key: &str| {
            properties
                .get(key)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        ExpiryPolicy {
            max_age_ms: get("history.expire.max-snapshot-age-ms")
                .filter(|v| *v >= 0)
                .unwrap_or(DEFAULT_MAX_AGE_MS),
            min_to_keep: get("history.expire.min-snapshots-to-keep")
                .filter(|v| *v >= 1)
                .map_or(1, |v| v as usize),
        }
    }
}

/// The snapshots a commit expires, and the oldest one it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Snapshot ids and manifest lists, oldest first.
    pub expired: Vec<(i64, String)>,
    /// The oldest snapshot kept (`None`: the one being committed), id and manifest list.
    pub oldest_kept: Option<(i64, String)>,
}

impl Expiry {
    pub fn ids(&self) -> Vec<i64> {
        self.expired.iter().map(|(id, _)| *id).collect()
    }
}

/// Which snapshots of `metadata` a commit at `now_ms`, adding one snapshot to `main`, expires.
/// `None` when nothing expires or the table's history is not one line.
pub fn select(metadata: &TableMetadata, now_ms: i64) -> Option<Expiry> {
    let current = metadata.current_snapshot()?;
    let policy = ExpiryPolicy::of(metadata.properties());
    // Newest first.
    let mut line = vec![current];
    while let Some(parent) = line
        .last()
        .and_then(|s| s.parent_snapshot_id())
        .and_then(|id| metadata.snapshot_by_id(id))
    {
        line.push(parent);
    }
    if line.len() != metadata.snapshots().len() {
        return None;
    }
    let cutoff = now_ms.saturating_sub(policy.max_age_ms);
    // Snapshot `i` (newest first) leaves `i + 1` newer ones, with the one being committed.
    let expirable = |i: usize, timestamp: i64| i + 1 >= policy.min_to_keep && timestamp < cutoff;
    let oldest = line.len() - 1;
    if !expirable(oldest, line[oldest].timestamp_ms()) {
        return None;
    }
    // Branches and tags are only visible in the serialized metadata; a table with any ref but
    // `main` is left to the tools that made them.
    if !only_main(metadata) {
        return None;
    }
    let count = (0..line.len())
        .rev()
        .take_while(|&i| expirable(i, line[i].timestamp_ms()))
        .take(MAX_PER_COMMIT)
        .count();
    if count == 0 {
        return None;
    }
    let entry = |i: usize| (line[i].snapshot_id(), line[i].manifest_list().to_string());
    Some(Expiry {
        expired: (line.len() - count..line.len()).rev().map(entry).collect(),
        oldest_kept: (line.len() > count).then(|| entry(line.len() - count - 1)),
    })
}

fn only_main(metadata: &TableMetadata) -> bool {
    serde_json::to_value(metadata)
        .ok()
        .and_then(|v| {
            v.get("refs")
                .and_then(|r| r.as_object())
                .map(|refs| refs.len() == 1 && refs.contains_key(MAIN_BRANCH))
        })
        .unwrap_or(false)
}

/// The files that only the expired snapshots referenced. `new_list` is the manifest list of
/// the snapshot that expired them (the oldest kept when no older one is).
pub async fn unreferenced(
    io: &FileIO,
    version: FormatVersion,
    expiry: &Expiry,
    new_snapshot: (i64, &str),
) -> Result<Vec<String>, FileError> {
    let (kept_id, kept_list) = match &expiry.oldest_kept {
        Some((id, list)) => (*id, list.as_str()),
        None => new_snapshot,
    };
    let kept = read_manifest_list(io, kept_list, version).await?;
    let kept_paths: HashSet<&str> = kept.iter().map(|m| m.manifest_path.as_str()).collect();
    let mut gone: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // A file the oldest kept snapshot removed is referenced by expired snapshots only.
    gone.extend(removed_by(io, kept_id, &kept).await?);
    for (id, list) in &expiry.expired {
        let manifests = read_manifest_list(io, list, version).await?;
        gone.extend(removed_by(io, *id, &manifests).await?);
        for m in manifests {
            if !kept_paths.contains(m.manifest_path.as_str()) {
                gone.push(m.manifest_path);
            }
        }
        gone.push(list.clone());
    }
    gone.retain(|path| seen.insert(path.clone()));
    Ok(gone)
}

/// The data and delete files snapshot `id` removed from the table: the DELETED entries of the
/// manifests it wrote.
async fn removed_by(
    io: &FileIO,
    id: i64,
    manifests: &[ManifestFile],
) -> Result<Vec<String>, FileError> {
    let mut removed = Vec::new();
    for m in manifests
        .iter()
        .filter(|m| m.added_snapshot_id == id && m.deleted_files_count != Some(0))
    {
        let manifest = load_manifest(io, m).await?;
        removed.extend(
            manifest
                .entries()
                .iter()
                .filter(|e| e.status() == ManifestStatus::Deleted)
                .map(|e| e.file_path().to_string()),
        );
    }
    Ok(removed)
}

/// Deletes `paths`, a few at a time. A file already gone counts as deleted. Returns how many
/// were deleted and the first error.
pub async fn delete_all(io: &FileIO, paths: Vec<String>) -> (usize, Option<String>) {
    let results: Vec<Result<(), String>> = futures::stream::iter(paths)
        .map(|path| async move {
            io.delete(&path)
                .await
                .map_err(|e| format!("delete {path}: {e}"))
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let deleted = results.iter().filter(|r| r.is_ok()).count();
    let first_error = results.into_iter().find_map(Result::err);
    (deleted, first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_comes_from_the_table_properties_with_icebergs_defaults() {
        assert_eq!(
            ExpiryPolicy::of(&HashMap::new()),
            ExpiryPolicy {
                max_age_ms: DEFAULT_MAX_AGE_MS,
                min_to_keep: 1
            }
        );
        let props = HashMap::from([
            (
                "history.expire.max-snapshot-age-ms".to_string(),
                "60000".to_string(),
            ),
            (
                "history.expire.min-snapshots-to-keep".to_string(),
                " 5".to_string(),
            ),
        ]);
        assert_eq!(
            ExpiryPolicy::of(&props),
            ExpiryPolicy {
                max_age_ms: 60_000,
                min_to_keep: 5
            }
        );
        let bad = HashMap::from([
            (
                "history.expire.max-snapshot-age-ms".to_string(),
                "-1".to_string(),
            ),
            (
                "history.expire.min-snapshots-to-keep".to_string(),
                "0".to_string(),
            ),
        ]);
        assert_eq!(ExpiryPolicy::of(&bad), ExpiryPolicy::of(&HashMap::new()));
    }
}
