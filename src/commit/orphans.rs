//! Orphan files: files under a table's location that no snapshot, metadata file or statistics
//! file of the table references, such as the files of a commit attempt whose outcome was
//! unknown, or of a process killed between writing files and committing them. `floe maintain`
//! deletes those older than a given age (so that files a concurrent commit has written but not
//! committed yet are never taken), where the catalog lists and deletes for Floe.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::files::FileError;
use super::snapshot::{load_manifest, read_manifest_list};
use crate::catalog::{ListedFile, LoadedTable};

/// Every file the table's metadata references: the current and logged metadata files,
/// statistics files, and per snapshot its manifest list, manifests and live data and delete
/// files.
pub async fn referenced(base: &LoadedTable) -> Result<HashSet<String>, FileError> {
    let metadata = &base.metadata;
    let io = &base.file_io;
    let mut paths: HashSet<String> = HashSet::new();
    paths.insert(base.metadata_location.clone());
    paths.extend(
        metadata
            .metadata_log()
            .iter()
            .map(|l| l.metadata_file.clone()),
    );
    paths.extend(
        metadata
            .statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    paths.extend(
        metadata
            .partition_statistics_iter()
            .map(|s| s.statistics_path.clone()),
    );
    let mut manifests_read: HashSet<String> = HashSet::new();
    for snapshot in metadata.snapshots() {
        paths.insert(snapshot.manifest_list().to_string());
        for m in read_manifest_list(io, snapshot.manifest_list(), metadata.format_version()).await?
        {
            if !manifests_read.insert(m.manifest_path.clone()) {
                continue;
            }
            let manifest = load_manifest(io, &m).await?;
            paths.extend(
                manifest
                    .entries()
                    .iter()
                    .filter(|e| e.is_alive())
                    .map(|e| e.file_path().to_string()),
            );
            paths.insert(m.manifest_path);
        }
    }
    Ok(paths)
}

/// The listed files no metadata references and last written before `now - older_than`.
pub fn orphans(
    listed: Vec<ListedFile>,
    referenced: &HashSet<String>,
    older_than: Duration,
    now: SystemTime,
) -> Vec<String> {
    let cutoff = now
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let referenced: HashSet<&str> = referenced.iter().map(|p| normal(p)).collect();
    listed
        .into_iter()
        .filter(|f| f.modified < cutoff && !referenced.contains(normal(&f.path)))
        .map(|f| f.path)
        .collect()
}

/// A path as compared: `file://` and `s3a://` spellings are the same file as the plain path
/// and `s3://`.
fn normal(path: &str) -> &str {
    path.strip_prefix("file://")
        .or_else(|| path.strip_prefix("s3a://"))
        .or_else(|| path.strip_prefix("s3://"))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_unreferenced_files_are_orphans() {
        let now = SystemTime::now();
        let file = |path: &str, age_s: u64| ListedFile {
            path: path.into(),
            modified: now - Duration::from_secs(age_s),
        };
        let referenced: HashSet<String> = [
            "/t/data/live.parquet".to_string(),
            "file:///t/metadata/v1.metadata.json".to_string(),
        ]
        .into();
        let found = orphans(
            vec![
                file("/t/data/live.parquet", 10_000),
                file("/t/metadata/v1.metadata.json", 10_000),
                file("/t/data/stray.parquet", 10_000),
                file("/t/data/in-flight.parquet", 10),
            ],
            &referenced,
            Duration::from_secs(3600),
            now,
        );
        assert_eq!(found, vec!["/t/data/stray.parquet".to_string()]);
    }
}
