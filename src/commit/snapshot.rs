//! Builds one `overwrite` snapshot on a given base: a data manifest and a delete manifest for
//! the new files, the base snapshot's manifests carried over unchanged, a manifest list, the
//! summary with correct totals and Floe's offsets, and the catalog updates that install it.
//!
//! Called again with a fresh base after a conflict: the data and delete files are the same,
//! only manifests, manifest list and snapshot are written anew.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, MAIN_BRANCH, Manifest, ManifestContentType,
    ManifestFile, ManifestList, ManifestListWriter, ManifestWriter, ManifestWriterBuilder,
    Operation, Snapshot, SnapshotReference, SnapshotRetention, SnapshotSummaryCollector, Summary,
};
use iceberg::{TableRequirement, TableUpdate};

use super::expire::{self, Expiry};
use super::files::FileError;
use super::offsets::{CommittedOffsets, SUMMARY_COMMIT_ID, SUMMARY_GROUP, SUMMARY_OFFSETS};
use crate::catalog::LoadedTable;

pub struct SnapshotPlan {
    pub updates: Vec<TableUpdate>,
    pub requirements: Vec<TableRequirement>,
    pub snapshot_id: i64,
    /// The new snapshot's manifest list.
    pub manifest_list: String,
    /// The snapshots the same update expires.
    pub expiry: Option<Expiry>,
}

/// The ids of the files of one logical commit, and how it is recognised in the table.
pub struct CommitFiles<'a> {
    pub commit_id: &'a str,
    pub group: &'a str,
    pub offsets: &'a CommittedOffsets,
    pub data_files: &'a [DataFile],
    pub delete_files: &'a [DataFile],
    /// The new files replace every file of the base (the source table was truncated).
    pub replace_all: bool,
    /// Expire old snapshots in the same update (no catalog service does).
    pub expire: bool,
}

fn err(e: iceberg::Error) -> FileError {
    FileError::from(e)
}

pub async fn plan(base: &LoadedTable, files: CommitFiles<'_>) -> Result<SnapshotPlan, FileError> {
    let metadata = &base.metadata;
    if metadata.format_version() != FormatVersion::V2 {
        return Err(FileError::permanent(format!(
            "table format version {} is not supported; Floe writes format version 2 tables",
            metadata.format_version()
        )));
    }
    let io = &base.file_io;
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut summary = SnapshotSummaryCollector::default();
    let mut out = ManifestOut::new(base, files.commit_id);
    for (content, files_of) in [
        (ManifestContentType::Data, files.data_files),
        (ManifestContentType::Deletes, files.delete_files),
    ] {
        manifests.extend(out.write_added(content, files_of, &mut summary).await?);
    }

    // The base snapshot's manifests are carried over (small ones merged, as Iceberg's own
    // writers do), unless everything is replaced: then the new snapshot lists only the new
    // files, and the base's files stay for older snapshots.
    let merge_counts: (usize, usize, usize);
    if let Some(current) = metadata.current_snapshot().filter(|_| !files.replace_all) {
        let mut carried =
            read_manifest_list(io, current.manifest_list(), metadata.format_version()).await?;
        // A manifest with no live entry (only files an earlier snapshot removed, as a
        // compaction leaves) is not carried: readers would go through it for nothing. Its
        // DELETED entries stay with the snapshot that wrote them, where expiry finds them.
        carried.retain(lists_live_files);
        let policy = MergePolicy::of(metadata.properties());
        let new_manifests = out.next;
        let kept = out.merge(carried, &policy).await?;
        let created = out.next - new_manifests;
        if created > 0 || kept.replaced > 0 {
            tracing::debug!(created, replaced = kept.replaced, "merged small manifests");
        }
        merge_counts = (
            new_manifests + created,
            kept.manifests.len() - created,
            kept.replaced,
        );
        manifests.extend(kept.manifests);
    } else {
        merge_counts = (manifests.len(), 0, 0);
    }

    // Everything replaced: the base's live files are recorded as deleted by this snapshot,
    // so that expiry removes them once no kept snapshot needs them. Files written under an
    // earlier partition spec cannot go in this spec's manifests: then the snapshot only says
    // how much was removed, and those files are left for orphan removal (`floe maintain`).
    let mut removed_all = false;
    if files.replace_all && metadata.current_snapshot().is_some() {
        let (data, deletes) = live_files(base).await?;
        let spec_id = out.spec.spec_id();
        let of_this_spec = data.iter().chain(&deletes).all(|l| l.spec_id == spec_id);
        if of_this_spec {
            let removed: Vec<LiveFile> = data.into_iter().chain(deletes).collect();
            manifests.extend(out.write_removed(&removed, &mut summary).await?);
        } else {
            removed_all = true;
        }
    }
    let mut offsets =
        CommittedOffsets::of_table(metadata, files.group).map_err(FileError::permanent)?;
    offsets.merge(files.offsets);
    let mut properties = summary.build();
    if removed_all && let Some(parent) = metadata.current_snapshot() {
        removed_everything(&mut properties, &parent.summary().additional_properties);
    }
    add_totals(
        &mut properties,
        metadata
            .current_snapshot()
            .map(|s| &s.summary().additional_properties),
    );
    let (created, kept, replaced) = merge_counts;
    properties.insert("manifests-created".into(), created.to_string());
    properties.insert("manifests-kept".into(), kept.to_string());
    properties.insert("manifests-replaced".into(), replaced.to_string());
    finish(Tail {
        base,
        out: &out,
        manifests,
        properties,
        operation: Operation::Overwrite,
        group: files.group,
        offsets: &offsets,
        set_offsets: true,
        expire: files.expire,
    })
    .await
}

/// A file the table holds, with the sequence numbers it was committed with.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub file: DataFile,
    pub sequence_number: i64,
    pub file_sequence_number: Option<i64>,
    /// The snapshot that added it.
    pub snapshot_id: i64,
    /// The partition spec of the manifest that lists it.
    pub spec_id: i32,
}

/// The live data and delete files of the table's current snapshot.
pub async fn live_files(base: &LoadedTable) -> Result<(Vec<LiveFile>, Vec<LiveFile>), FileError> {
    let mut data = Vec::new();
    let mut deletes = Vec::new();
    let Some(current) = base.metadata.current_snapshot() else {
        return Ok((data, deletes));
    };
    let io = &base.file_io;
    let list =
        read_manifest_list(io, current.manifest_list(), base.metadata.format_version()).await?;
    let mut manifests = std::pin::pin!(load_manifests(io, &list));
    while let Some((m, manifest)) = manifests.try_next().await? {
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            let sequence_number = entry.sequence_number().unwrap_or(m.sequence_number);
            let live = LiveFile {
                file: entry.data_file().clone(),
                sequence_number,
                file_sequence_number: Some(entry.file_sequence_number.unwrap_or(sequence_number)),
                snapshot_id: entry.snapshot_id().unwrap_or(m.added_snapshot_id),
                spec_id: m.partition_spec_id,
            };
            match live.file.content_type() {
                DataContentType::Data => data.push(live),
                _ => deletes.push(live),
            }
        }
    }
    Ok((data, deletes))
}

/// A `replace` snapshot (a compaction): `added` data files hold the same rows as `removed`
/// (live data files of `base`, and every delete file that applies to them), which the
/// snapshot's manifests record as deleted; `kept` (the other live data files, all of the
/// table's current partition spec, none with a delete that applies to it) stay as they are. The
/// offsets the table holds are kept.
pub async fn plan_replace(
    base: &LoadedTable,
    commit_id: &str,
    group: &str,
    added: &[DataFile],
    kept: &[LiveFile],
    removed: &[LiveFile],
    expire: bool,
) -> Result<SnapshotPlan, FileError> {
    if base.metadata.current_snapshot().is_none() {
        return Err(FileError::permanent("the table has no snapshot to replace"));
    }
    let mut out = ManifestOut::new(base, commit_id);
    let mut summary = SnapshotSummaryCollector::default();
    let mut manifests = Vec::new();
    let is_data = |f: &DataFile| f.content_type() == DataContentType::Data;
    // The new files and the removed ones go in manifests of their own: the next commit
    // carries only the first (see `plan`), so readers stop going through the removed entries.
    for (content, data) in [
        (ManifestContentType::Data, true),
        (ManifestContentType::Deletes, false),
    ] {
        let new = added.iter().filter(|f| is_data(f) == data);
        manifests.extend(out.write_added(content, new, &mut summary).await?);
    }
    manifests.extend(out.write_kept(kept).await?);
    manifests.extend(out.write_removed(removed, &mut summary).await?);
    finish_replace(base, &out, manifests, summary.build(), group, expire).await
}

/// A `replace` snapshot that changes no file: `base`'s current manifests without those that
/// list no live file. Committed right after a compaction, so that readers stop going through
/// the entries of every file it removed at once, not only from the next commit on. Those
/// entries stay in the compaction's own snapshot, where expiry finds them. `None` when every
/// manifest lists a live file.
pub async fn plan_without_dead_manifests(
    base: &LoadedTable,
    commit_id: &str,
    group: &str,
) -> Result<Option<SnapshotPlan>, FileError> {
    let metadata = &base.metadata;
    let Some(parent) = metadata.current_snapshot() else {
        return Ok(None);
    };
    let mut manifests = read_manifest_list(
        &base.file_io,
        parent.manifest_list(),
        metadata.format_version(),
    )
    .await?;
    let before = manifests.len();
    manifests.retain(lists_live_files);
    let dropped = before - manifests.len();
    if dropped == 0 {
        return Ok(None);
    }
    let properties = HashMap::from([
        ("manifests-created".to_string(), "0".to_string()),
        ("manifests-kept".to_string(), manifests.len().to_string()),
        ("manifests-replaced".to_string(), dropped.to_string()),
    ]);
    let out = ManifestOut::new(base, commit_id);
    finish_replace(base, &out, manifests, properties, group, false)
        .await
        .map(Some)
}

/// Whether a manifest lists a file the table holds (an added or existing entry). One that
/// lists only files an earlier snapshot removed, as a compaction leaves, is not carried on:
/// readers would go through it for nothing.
fn lists_live_files(m: &ManifestFile) -> bool {
    m.has_added_files() || m.has_existing_files()
}

/// The end of a `replace` snapshot on `base`'s current one: the same rows, so the parent's
/// totals carried with this snapshot's `properties` added, and the offsets the table holds
/// kept (the table property is left as it is).
async fn finish_replace(
    base: &LoadedTable,
    out: &ManifestOut<'_>,
    manifests: Vec<ManifestFile>,
    mut properties: HashMap<String, String>,
    group: &str,
    expire: bool,
) -> Result<SnapshotPlan, FileError> {
    let metadata = &base.metadata;
    let parent = metadata
        .current_snapshot()
        .map(|p| &p.summary().additional_properties);
    add_totals(&mut properties, parent);
    let offsets = CommittedOffsets::of_table(metadata, group).map_err(FileError::permanent)?;
    finish(Tail {
        base,
        out,
        manifests,
        properties,
        operation: Operation::Replace,
        group,
        offsets: &offsets,
        set_offsets: false,
        expire,
    })
    .await
}

/// What every snapshot Floe commits ends with, on `base`'s current snapshot.
struct Tail<'a> {
    base: &'a LoadedTable,
    /// The snapshot's manifest writer: its directory, commit id, snapshot id and sequence
    /// number.
    out: &'a ManifestOut<'a>,
    manifests: Vec<ManifestFile>,
    /// The summary with its totals; Floe's own keys are added here.
    properties: HashMap<String, String>,
    operation: Operation,
    group: &'a str,
    /// The offsets the table holds once the snapshot is in.
    offsets: &'a CommittedOffsets,
    /// Record `offsets` in the table property too (a compaction leaves it as it is).
    set_offsets: bool,
    /// Expire old snapshots in the same update.
    expire: bool,
}

/// Writes the manifest list, builds the snapshot with Floe's summary keys, and the catalog
/// updates that install it (expiring old snapshots with `expire`) on the base it was built on.
async fn finish(tail: Tail<'_>) -> Result<SnapshotPlan, FileError> {
    let Tail {
        base,
        out,
        manifests,
        mut properties,
        operation,
        group,
        offsets,
        set_offsets,
        expire,
    } = tail;
    let metadata = &base.metadata;
    let (snapshot_id, commit_id, sequence_number) =
        (out.snapshot_id, out.commit_id, out.sequence_number);
    let list_path = format!("{}/snap-{snapshot_id}-{commit_id}.avro", out.meta_dir);
    let mut list_writer = ManifestListWriter::v2(
        out.io
            .new_output(&list_path)
            .map_err(err)?
            .writer()
            .await
            .map_err(err)?,
        snapshot_id,
        metadata.current_snapshot_id(),
        sequence_number,
    );
    list_writer
        .add_manifests(manifests.into_iter())
        .map_err(err)?;
    list_writer.close().await.map_err(err)?;

    properties.insert(SUMMARY_GROUP.into(), group.into());
    properties.insert(SUMMARY_OFFSETS.into(), offsets.to_json());
    properties.insert(SUMMARY_COMMIT_ID.into(), commit_id.into());
    properties.insert("floe.version".into(), env!("CARGO_PKG_VERSION").into());
    let now = chrono::Utc::now().timestamp_millis();
    let expiry = if expire {
        expire::select(metadata, now)
    } else {
        None
    };
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(metadata.current_snapshot_id())
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now)
        .with_manifest_list(list_path.clone())
        .with_summary(Summary {
            operation,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let mut updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ];
    if set_offsets {
        updates.push(TableUpdate::SetProperties {
            updates: HashMap::from([(CommittedOffsets::property_key(group), offsets.to_json())]),
        });
    }
    if let Some(expiry) = &expiry {
        updates.push(TableUpdate::RemoveSnapshots {
            snapshot_ids: expiry.ids(),
        });
    }
    Ok(SnapshotPlan {
        updates,
        requirements: vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: metadata.current_snapshot_id(),
            },
        ],
        snapshot_id,
        manifest_list: list_path,
        expiry,
    })
}

/// A manifest, read through `io`.
pub(crate) async fn load_manifest(io: &FileIO, m: &ManifestFile) -> Result<Manifest, FileError> {
    m.load_manifest(io)
        .await
        .map_err(|e| err(e).context(format!("read manifest {}", m.manifest_path)))
}

/// Manifests read at the same time when one step goes through several, so that their reads
/// (GETs, on S3) overlap.
const MANIFEST_READS: usize = 16;

/// Each of `list` with its manifest, read a few at a time, in the order of `list`. Each read
/// is a task of its own, so that decoding the manifests (Avro) uses every core.
pub(crate) fn load_manifests<'a>(
    io: &'a FileIO,
    list: &'a [ManifestFile],
) -> impl futures::Stream<Item = Result<(&'a ManifestFile, Manifest), FileError>> + 'a {
    futures::stream::iter(list)
        .map(move |m| {
            let (io, file) = (io.clone(), m.clone());
            let read = tokio::spawn(async move { load_manifest(&io, &file).await });
            async move {
                let manifest = read.await.map_err(|e| {
                    FileError::permanent(format!("read manifest {}: {e}", m.manifest_path))
                })??;
                Ok((m, manifest))
            }
        })
        .buffered(MANIFEST_READS)
}

/// The manifests a manifest list names.
pub(crate) async fn read_manifest_list(
    io: &FileIO,
    path: &str,
    version: FormatVersion,
) -> Result<Vec<ManifestFile>, FileError> {
    let bytes = io
        .new_input(path)
        .map_err(err)?
        .read()
        .await
        .map_err(|e| err(e).context(format!("read manifest list {path}")))?;
    let list = ManifestList::parse_with_version(&bytes, version)
        .map_err(|e| err(e).context(format!("manifest list {path}")))?;
    Ok(list.consume_entries().into_iter().collect())
}

/// When a commit merges the manifests it carries over: Iceberg's table properties, with the
/// defaults of Iceberg's Java writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePolicy {
    /// `commit.manifest-merge.enabled` (default true).
    pub enabled: bool,
    /// `commit.manifest.min-count-to-merge` (default 100): manifests of one kind a snapshot
    /// must carry before they are merged.
    pub min_count: usize,
    /// `commit.manifest.target-size-bytes` (default 8 MiB): the size merged manifests grow to;
    /// larger ones are kept as they are.
    pub target_size: u64,
}

impl MergePolicy {
    pub fn of(properties: &HashMap<String, String>) -> Self {
        let get = |key: &str| properties.get(key).map(|v| v.trim());
        MergePolicy {
            enabled: get("commit.manifest-merge.enabled")
                .is_none_or(|v| !v.eq_ignore_ascii_case("false")),
            min_count: get("commit.manifest.min-count-to-merge")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100),
            target_size: get("commit.manifest.target-size-bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(8 * 1024 * 1024),
        }
    }

    /// The carried-over manifests of one kind, in groups: a group of one is kept, a larger one
    /// is merged into one manifest. Packed in order, up to the target size.
    fn bins(&self, lengths: &[u64]) -> Vec<Vec<usize>> {
        if !self.enabled || lengths.len() < self.min_count.max(2) {
            return lengths.iter().enumerate().map(|(i, _)| vec![i]).collect();
        }
        let mut bins: Vec<Vec<usize>> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut size = 0u64;
        for (i, &len) in lengths.iter().enumerate() {
            if len >= self.target_size {
                bins.push(vec![i]);
                continue;
            }
            if !open.is_empty() && size + len > self.target_size {
                bins.push(std::mem::take(&mut open));
                size = 0;
            }
            open.push(i);
            size += len;
        }
        if !open.is_empty() {
            bins.push(open);
        }
        bins
    }
}

/// Writes the manifests of one snapshot: those of its new files, and merged ones.
struct ManifestOut<'a> {
    io: &'a iceberg::io::FileIO,
    meta_dir: String,
    commit_id: &'a str,
    snapshot_id: i64,
    /// The new snapshot's sequence number: that of the files it adds.
    sequence_number: i64,
    schema: iceberg::spec::SchemaRef,
    spec: iceberg::spec::PartitionSpecRef,
    /// Number of the next manifest file of this snapshot.
    next: usize,
}

struct Merged {
    manifests: Vec<ManifestFile>,
    /// Carried-over manifests merged into new ones.
    replaced: usize,
}

impl<'a> ManifestOut<'a> {
    /// The manifests of a new snapshot on `base`'s current schema and partition spec.
    fn new(base: &'a LoadedTable, commit_id: &'a str) -> Self {
        let metadata = &base.metadata;
        ManifestOut {
            io: &base.file_io,
            meta_dir: format!("{}/metadata", metadata.location().trim_end_matches('/')),
            commit_id,
            snapshot_id: new_snapshot_id(base),
            sequence_number: metadata.next_sequence_number(),
            schema: metadata.current_schema().clone(),
            spec: metadata.default_partition_spec().clone(),
            next: 0,
        }
    }

    /// One manifest of `files`, added by this snapshot; none when there are none.
    async fn write_added<'f>(
        &mut self,
        content: ManifestContentType,
        files: impl IntoIterator<Item = &'f DataFile>,
        summary: &mut SnapshotSummaryCollector,
    ) -> Result<Option<ManifestFile>, FileError> {
        let mut files = files.into_iter().peekable();
        if files.peek().is_none() {
            return Ok(None);
        }
        let mut writer = self.writer(content)?;
        for file in files {
            summary.add_file(file, self.schema.clone(), self.spec.clone());
            writer
                .add_file(file.clone(), self.sequence_number)
                .map_err(err)?;
        }
        let manifest = writer.write_manifest_file().await.map_err(err)?;
        self.next += 1;
        Ok(Some(manifest))
    }

    /// One manifest listing `kept` (live data files of the base, of its current partition
    /// spec) as existing, each with the snapshot id and sequence numbers it was committed with;
    /// none when there are none.
    async fn write_kept(&mut self, kept: &[LiveFile]) -> Result<Option<ManifestFile>, FileError> {
        if kept.is_empty() {
            return Ok(None);
        }
        let mut writer = self.writer(ManifestContentType::Data)?;
        for live in kept {
            let file = &live.file;
            if file.content_type() != DataContentType::Data || live.spec_id != self.spec.spec_id() {
                return Err(FileError::permanent(format!(
                    "{} ({:?}, partition spec {}) cannot be kept: only data files of the \
                     table's current partition spec {} are",
                    file.file_path(),
                    file.content_type(),
                    live.spec_id,
                    self.spec.spec_id()
                )));
            }
            writer
                .add_existing_file(
                    file.clone(),
                    live.snapshot_id,
                    live.sequence_number,
                    live.file_sequence_number,
                )
                .map_err(err)?;
        }
        let manifest = writer.write_manifest_file().await.map_err(err)?;
        self.next += 1;
        Ok(Some(manifest))
    }

    /// Manifests recording `removed` (live files of the base) as deleted by this snapshot,
    /// one for data files and one for delete files; none when there are none. Expiry finds
    /// the files there once no kept snapshot needs them.
    async fn write_removed(
        &mut self,
        removed: &[LiveFile],
        summary: &mut SnapshotSummaryCollector,
    ) -> Result<Vec<ManifestFile>, FileError> {
        let mut manifests = Vec::new();
        for (content, data) in [
            (ManifestContentType::Data, true),
            (ManifestContentType::Deletes, false),
        ] {
            let gone: Vec<&LiveFile> = removed
                .iter()
                .filter(|l| (l.file.content_type() == DataContentType::Data) == data)
                .collect();
            if gone.is_empty() {
                continue;
            }
            let mut writer = self.writer(content)?;
            for live in gone {
                summary.remove_file(&live.file, self.schema.clone(), self.spec.clone());
                writer
                    .add_delete_file(
                        live.file.clone(),
                        live.sequence_number,
                        live.file_sequence_number,
                    )
                    .map_err(err)?;
            }
            manifests.push(writer.write_manifest_file().await.map_err(err)?);
            self.next += 1;
        }
        Ok(manifests)
    }

    /// A writer for the snapshot's next manifest.
    fn writer(&self, content: ManifestContentType) -> Result<ManifestWriter, FileError> {
        let path = format!(
            "{}/{}-{}-m{}.avro",
            self.meta_dir, self.commit_id, self.snapshot_id, self.next
        );
        let builder = ManifestWriterBuilder::new(
            self.io.new_output(&path).map_err(err)?,
            Some(self.snapshot_id),
            self.schema.clone(),
            self.spec.as_ref().clone(),
        );
        Ok(match content {
            ManifestContentType::Data => builder.build_v2_data(),
            ManifestContentType::Deletes => builder.build_v2_deletes(),
        })
    }

    /// Data and delete manifests of the table's spec are merged apart; manifests of another
    /// partition spec are kept as they are.
    async fn merge(
        &mut self,
        carried: Vec<ManifestFile>,
        policy: &MergePolicy,
    ) -> Result<Merged, FileError> {
        let spec_id = self.spec.spec_id();
        let mut out = Merged {
            manifests: Vec::new(),
            replaced: 0,
        };
        let mut groups: [Vec<ManifestFile>; 2] = [Vec::new(), Vec::new()];
        for m in carried {
            match (m.partition_spec_id == spec_id, m.content) {
                (true, ManifestContentType::Data) => groups[0].push(m),
                (true, ManifestContentType::Deletes) => groups[1].push(m),
                (false, _) => out.manifests.push(m),
            }
        }
        for (content, group) in [ManifestContentType::Data, ManifestContentType::Deletes]
            .into_iter()
            .zip(groups)
        {
            let lengths: Vec<u64> = group.iter().map(|m| m.manifest_length as u64).collect();
            let bins = policy.bins(&lengths);
            let mut group: Vec<Option<ManifestFile>> = group.into_iter().map(Some).collect();
            for bin in bins {
                let members: Vec<ManifestFile> =
                    bin.iter().filter_map(|&i| group[i].take()).collect();
                if members.len() == 1 {
                    out.manifests.extend(members);
                    continue;
                }
                out.replaced += members.len();
                if let Some(merged) = self.write(content, &members).await? {
                    out.manifests.push(merged);
                }
            }
        }
        Ok(out)
    }

    /// One manifest holding the live entries of `members`, each with the snapshot id and
    /// sequence numbers it was committed with (delete files apply by sequence number).
    async fn write(
        &mut self,
        content: ManifestContentType,
        members: &[ManifestFile],
    ) -> Result<Option<ManifestFile>, FileError> {
        let mut writer = self.writer(content)?;
        let mut live = 0usize;
        let mut manifests = std::pin::pin!(load_manifests(self.io, members));
        while let Some((m, manifest)) = manifests.try_next().await? {
            for entry in manifest.entries() {
                if !entry.is_alive() {
                    continue;
                }
                // Inherited from the manifest list when the manifest left them out.
                let sequence_number = entry.sequence_number().unwrap_or(m.sequence_number);
                writer
                    .add_existing_file(
                        entry.data_file().clone(),
                        entry.snapshot_id().unwrap_or(m.added_snapshot_id),
                        sequence_number,
                        Some(entry.file_sequence_number.unwrap_or(sequence_number)),
                    )
                    .map_err(err)?;
                live += 1;
            }
        }
        if live == 0 {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(writer.write_manifest_file().await.map_err(err)?))
    }
}

/// Positive, and unused in this table.
fn new_snapshot_id(base: &LoadedTable) -> i64 {
    loop {
        let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
        if id != 0 && base.metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// `total-*` = the parent's total + added - removed (as Iceberg's Java implementation does).
/// Records that every file of the parent went: its totals become this snapshot's removals.
fn removed_everything(props: &mut HashMap<String, String>, parent: &HashMap<String, String>) {
    for (total, _, removed) in TOTALS {
        if let Some(value) = parent.get(total) {
            props.insert(removed.to_string(), value.clone());
        }
    }
}

/// Each running total, the summary key that adds to it and the one that takes from it.
const TOTALS: [(&str, &str, &str); 6] = [
    ("total-data-files", "added-data-files", "deleted-data-files"),
    (
        "total-delete-files",
        "added-delete-files",
        "removed-delete-files",
    ),
    ("total-records", "added-records", "deleted-records"),
    ("total-files-size", "added-files-size", "removed-files-size"),
    (
        "total-position-deletes",
        "added-position-deletes",
        "removed-position-deletes",
    ),
    (
        "total-equality-deletes",
        "added-equality-deletes",
        "removed-equality-deletes",
    ),
];

fn add_totals(props: &mut HashMap<String, String>, parent: Option<&HashMap<String, String>>) {
    let get = |map: &HashMap<String, String>, key: &str| -> u64 {
        map.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    for (total, added, removed) in TOTALS {
        let previous = parent.map_or(0, |p| get(p, total));
        let value = (previous + get(props, added)).saturating_sub(get(props, removed));
        props.insert(total.to_string(), value.to_string());
    }
}

/// Files of a content type, for counting.
pub fn count_of(files: &[DataFile], content: DataContentType) -> usize {
    files.iter().filter(|f| f.content_type() == content).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_manifests_are_packed_up_to_the_target_size() {
        let policy = |min: &str, target: &str, enabled: &str| {
            MergePolicy::of(&HashMap::from([
                (
                    "commit.manifest.min-count-to-merge".to_string(),
                    min.to_string(),
                ),
                (
                    "commit.manifest.target-size-bytes".to_string(),
                    target.to_string(),
                ),
                (
                    "commit.manifest-merge.enabled".to_string(),
                    enabled.to_string(),
                ),
            ]))
        };
        let defaults = MergePolicy::of(&HashMap::new());
        assert_eq!(
            defaults,
            MergePolicy {
                enabled: true,
                min_count: 100,
                target_size: 8 * 1024 * 1024
            }
        );
        // Under the count, every manifest stays.
        assert_eq!(
            policy("4", "100", "true").bins(&[10, 10, 10]),
            [[0], [1], [2]]
        );
        // At the count: packed in order up to the target; a large one stays alone.
        assert_eq!(
            policy("4", "100", "true").bins(&[40, 40, 40, 200, 30, 90]),
            vec![vec![0, 1], vec![3], vec![2, 4], vec![5]]
        );
        assert_eq!(policy("4", "100", "false").bins(&[1, 1, 1, 1]).len(), 4);
    }

    #[test]
    fn totals_add_to_the_parent() {
        let parent = HashMap::from([
            ("total-records".to_string(), "10".to_string()),
            ("total-equality-deletes".to_string(), "2".to_string()),
            ("total-data-files".to_string(), "1".to_string()),
        ]);
        let mut props = HashMap::from([
            ("added-records".to_string(), "5".to_string()),
            ("added-equality-deletes".to_string(), "3".to_string()),
            ("added-data-files".to_string(), "1".to_string()),
            ("added-delete-files".to_string(), "1".to_string()),
        ]);
        add_totals(&mut props, Some(&parent));
        assert_eq!(props["total-records"], "15");
        assert_eq!(props["total-equality-deletes"], "5");
        assert_eq!(props["total-data-files"], "2");
        assert_eq!(props["total-delete-files"], "1");
        assert_eq!(props["total-position-deletes"], "0");
    }
}
