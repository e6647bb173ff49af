//! Background maintenance (`maintenance.interval`): every interval, each table this run writes
//! is compacted and its orphan files removed, as `floe maintain` does, on a thread beside the
//! commits. A compaction that meets one of the run's own commits starts over on the new table
//! (the commit engine retries it); a commit that meets a compaction is retried the same way.
//! Catalogs that maintain their tables themselves (S3 Tables) get none.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::commit::CommitEngine;
use crate::config::{MaintenanceConfig, TableName};
use crate::telemetry::Metrics;

/// The tables the run writes: those its topics route to, and any a commit created.
pub(super) type Tables = Arc<Mutex<BTreeSet<TableName>>>;

/// The maintenance thread; it stops when this is dropped (at once between tables, or by
/// dropping a compaction in progress: what it wrote is an orphan a later round removes).
pub(super) struct Maintenance {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts maintenance when configured and the catalog does not maintain its tables itself. It
/// runs on a thread of its own (compaction decodes and encodes whole tables), driving its
/// futures on the run's runtime.
pub(super) fn spawn(
    engine: Arc<CommitEngine>,
    tables: Tables,
    config: MaintenanceConfig,
    metrics: Arc<Metrics>,
) -> Result<Option<Maintenance>, std::io::Error> {
    let Some(interval) = config.interval else {
        return Ok(None);
    };
    if !engine.catalog().expires_snapshots() {
        tracing::info!(
            catalog = engine.catalog().kind(),
            "maintenance.interval is set, but this catalog maintains its tables itself: no background maintenance"
        );
        return Ok(None);
    }
    tracing::info!(interval = %humantime::format_duration(interval), "background maintenance on");
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("floe-maintain".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The first tick is immediate: the first round comes one interval after the
                // start.
                tick.tick().await;
                loop {
                    let round = async {
                        tick.tick().await;
                        let names: Vec<TableName> = match tables.lock() {
                            Ok(t) => t.iter().cloned().collect(),
                            Err(_) => return,
                        };
                        for name in names {
                            maintain(&engine, &name, config.orphans_older_than, &metrics).await;
                        }
                    };
                    tokio::select! {
                        _ = &mut stopped => return,
                        () = round => {}
                    }
                }
            })
        })?;
    Ok(Some(Maintenance { _stop: stop }))
}

/// Compacts one table and removes its orphan files; a failure is logged and counted, and the
/// next interval tries again.
async fn maintain(engine: &CommitEngine, name: &TableName, orphans: Duration, metrics: &Metrics) {
    let done = match engine.maintain(name, orphans).await {
        Ok(Some(done)) => done,
        Ok(None) => return,
        Err(error) => {
            metrics.error("maintain", "failed");
            tracing::warn!(table = %name, %error, "maintenance: loading or compacting the table failed; trying again at the next interval");
            return;
        }
    };
    let c = &done.compacted;
    match c.snapshot_id {
        None => {
            tracing::debug!(table = %name, data_files = c.data_files_before, "maintenance: compact already")
        }
        Some(snapshot) => tracing::info!(
            table = %name,
            data_files_before = c.data_files_before,
            delete_files_before = c.delete_files_before,
            data_files_after = c.data_files_after,
            rows = c.rows,
            snapshot,
            attempts = c.attempts,
            expired_snapshots = c.expired_snapshots,
            removed_files = c.removed_files,
            "maintenance: compacted"
        ),
    }
    match done.orphans {
        Ok(Some((found, deleted))) if found > 0 => tracing::info!(
            table = %name,
            found,
            deleted,
            older_than = %humantime::format_duration(orphans),
            "maintenance: orphan files removed"
        ),
        Ok(_) => {}
        Err(error) => {
            metrics.error("maintain", "failed");
            tracing::warn!(table = %name, %error, "maintenance: removing orphan files failed; trying again at the next interval");
        }
    }
}
