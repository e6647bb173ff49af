//! Commit rounds. On the commit interval (or when the staged window is full) the loop freezes
//! the window: every table's staged work leaves its state as a [`TableWork`], and a task
//! commits the tables, at most `flush.max_concurrent_commits` at a time, while the loop goes
//! on reading into a new window. One round is in flight at a time.
//!
//! Per table, in the task: the commit engine reads the staged deltas back and commits them as
//! one snapshot (streaming them where it can, holding a delta or two rather than the window),
//! and only then are the group offsets the snapshot holds committed to Kafka and the deltas
//! deleted. A table whose commit failed in a way that may pass goes back in front of its newer
//! work and is tried again after a backoff; any other failure stops the run, with nothing
//! after the last table commit acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::StreamExt;
use futures::future::BoxFuture;
use iceberg::spec::Schema;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::context::RebalanceForwarder;
use super::window::TableState;
use super::{Runtime, RuntimeError, fault};
use crate::commit::{ChangeParts, CommitEngine, CommittedOffsets, TableSpec};
use crate::config::TableName;
use crate::decode::KafkaPosition;
use crate::stage::{StagedDelta, Stager};
use crate::telemetry::Metrics;

/// What a round task needs, shared with the loop.
#[derive(Clone)]
pub(super) struct Shared {
    pub engine: Arc<CommitEngine>,
    pub stager: Arc<Stager>,
    pub consumer: Arc<StreamConsumer<RebalanceForwarder>>,
    pub metrics: Arc<Metrics>,
}

/// One table's frozen window.
pub(super) struct TableWork {
    pub spec: TableSpec,
    pub staged: Vec<StagedDelta>,
    pub offsets: CommittedOffsets,
    pub truncated_at: Option<KafkaPosition>,
}

/// How one table's commit ended.
pub(super) enum Settled {
    Committed(Box<Done>),
    /// This member lost its partitions before the commit: the work was dropped.
    Lost,
    Failed(RuntimeError),
}

/// A landed table commit, for the loop's totals.
pub(super) struct Done {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    /// A commit was made (a window of only skipped positions makes none).
    pub committed: bool,
    /// The table's schema when the commit created the table or changed its schema.
    pub schema: Option<Schema>,
}

pub(super) type RoundResults = Vec<(TableWork, Settled)>;

/// Commits every table of a round, a few at once.
pub(super) async fn commit_round(
    shared: Shared,
    works: Vec<TableWork>,
    concurrency: usize,
) -> RoundResults {
    futures::stream::iter(works)
        .map(|work| {
            let shared = shared.clone();
            async move {
                let settled = commit_table(&shared, &work).await;
                (work, settled)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Commits one table's work, then its group offsets, then deletes its staged deltas.
pub(super) async fn commit_table(shared: &Shared, work: &TableWork) -> Settled {
    let table = &work.spec.name;
    if lost_assignment(&shared.consumer, &shared.metrics, Some(table)) {
        for delta in &work.staged {
            shared.stager.delete(delta).await;
        }
        return Settled::Lost;
    }
    match commit_work(shared, work).await {
        Ok(done) => {
            fault::point("table-committed");
            // Only now may Kafka hear that these records are done.
            commit_kafka_offsets(&shared.consumer, &work.offsets).await;
            for delta in &work.staged {
                shared.stager.delete(delta).await;
            }
            Settled::Committed(Box::new(done))
        }
        Err(e) => Settled::Failed(e),
    }
}

async fn commit_work(shared: &Shared, work: &TableWork) -> Result<Done, RuntimeError> {
    let table = &work.spec.name;
    // A truncate with nothing after it still commits, unless there is no table to empty.
    let truncates_a_table = match &work.truncated_at {
        Some(_) if work.staged.is_empty() => shared.engine.exists(table).await?,
        _ => false,
    };
    let mut done = Done {
        rows: 0,
        files: 0,
        bytes: 0,
        committed: false,
        schema: None,
    };
    if work.staged.is_empty() && !truncates_a_table {
        return Ok(done);
    }
    let started = Instant::now();
    let outcome = shared
        .engine
        .commit_parts(
            &work.spec,
            &StagedParts {
                stager: &shared.stager,
                staged: &work.staged,
            },
            work.offsets.clone(),
            work.truncated_at.clone(),
        )
        .await?;
    let metrics = &shared.metrics;
    let label = Metrics::table(&outcome.table);
    metrics.commits.get_or_create(&label).inc();
    metrics
        .rows_committed
        .get_or_create(&label)
        .inc_by(outcome.rows_written);
    metrics
        .keys_deleted
        .get_or_create(&label)
        .inc_by(outcome.keys_deleted);
    metrics
        .table_indexed
        .get_or_create(&label)
        .set(i64::from(outcome.indexed));
    metrics
        .key_index_bytes
        .get_or_create(&label)
        .set(outcome.index_bytes as i64);
    metrics
        .commit_duration
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        table = %outcome.table,
        snapshot = outcome.snapshot_id,
        rows = outcome.rows_written,
        deleted_keys = outcome.keys_deleted,
        data_files = outcome.data_files,
        delete_files = outcome.delete_files,
        attempts = outcome.attempts,
        streamed = outcome.streamed,
        seconds = started.elapsed().as_secs_f64(),
        "committed"
    );
    done.committed = true;
    done.rows = outcome.rows_written;
    done.files = (outcome.data_files + outcome.delete_files) as u64;
    done.bytes = outcome.bytes_written;
    if outcome.created_table || outcome.schema_changed {
        done.schema = current_schema(&shared.engine, table).await?;
    }
    Ok(done)
}

/// A window's staged deltas, read back by the commit (twice when it streams them).
struct StagedParts<'a> {
    stager: &'a Stager,
    staged: &'a [StagedDelta],
}

impl ChangeParts for StagedParts<'_> {
    fn count(&self) -> usize {
        self.staged.len()
    }

    fn read(&self, part: usize) -> BoxFuture<'_, Result<Vec<RecordBatch>, String>> {
        Box::pin(async move {
            self.stager
                .read(&self.staged[part])
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The table's current schema, if it exists.
pub(super) async fn current_schema(
    engine: &CommitEngine,
    table: &TableName,
) -> Result<Option<Schema>, RuntimeError> {
    let ident = engine.ident(table)?;
    let loaded = engine
        .catalog()
        .load_table(&ident)
        .await
        .map_err(|e| RuntimeError::Setup(format!("table {ident}: {e}")))?;
    Ok(loaded.map(|t| t.metadata.current_schema().as_ref().clone()))
}

/// Tells the group the offsets a table commit holds, for the partitions this member still
/// has. A failure is harmless: the table holds the offsets, and whatever is re-read after a
/// restart is skipped by the commit engine.
pub(super) async fn commit_kafka_offsets(
    consumer: &Arc<StreamConsumer<RebalanceForwarder>>,
    offsets: &CommittedOffsets,
) {
    let assigned = consumer.assignment().unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in &offsets.0 {
        for (partition, next) in partitions {
            if assigned.find_partition(topic, *partition).is_none() {
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::warn!(%topic, partition, error = %e, "bad offset");
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let consumer = consumer.clone();
    // A synchronous commit waits for the broker (librdkafka without a time limit): off the
    // async threads, and the round does not wait for it past a limit of its own.
    let commit = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync));
    match tokio::time::timeout(super::KAFKA_TIMEOUT * 3, commit).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "committing offsets to Kafka failed; the tables hold them")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "committing offsets to Kafka failed"),
        Err(_) => tracing::warn!(
            "committing offsets to Kafka took over {:?}; going on (the tables hold them)",
            super::KAFKA_TIMEOUT * 3
        ),
    }
}

/// Whether this member lost its partitions to the group. A loop that stalled (a round of slow
/// work outlasting `max.poll.interval.ms`, or the session) may have: another member then
/// re-reads the uncommitted work from the tables' offsets, and this one must not commit it as
/// well. Says so, and counts it, when it happened.
fn lost_assignment(
    consumer: &StreamConsumer<RebalanceForwarder>,
    metrics: &Metrics,
    table: Option<&TableName>,
) -> bool {
    if !consumer.assignment_lost() {
        return false;
    }
    tracing::warn!(
        table = table.map(tracing::field::display),
        "this member lost its partitions to the group (max.poll.interval.ms or the session \
         lapsed): dropping uncommitted work; the partitions' next owner re-reads it"
    );
    metrics.error("commit", "assignment_lost");
    true
}

/// A round task that panicked or was cancelled.
pub(super) fn round_failed(e: tokio::task::JoinError) -> RuntimeError {
    RuntimeError::Setup(format!("a commit round failed: {e}"))
}

impl Runtime {
    pub(super) fn shared(&self) -> Shared {
        Shared {
            engine: self.engine.clone(),
            stager: self.stager.clone(),
            consumer: self.consumer.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Takes a table's staged work out of its state, leaving a new window.
    fn take_work(&mut self, table: &TableName) -> Option<TableWork> {
        let settings = self.config.tables.settings(table);
        let state = self.tables.get_mut(table)?;
        if !state.has_work() {
            return None;
        }
        let spec = TableSpec {
            name: table.clone(),
            primary_key: settings
                .primary_key
                .clone()
                .unwrap_or_else(|| state.primary_key.clone()),
            properties: settings.properties.clone(),
            extras: crate::commit::extras::Extras {
                soft_delete: settings.soft_delete,
                metadata_columns: settings.metadata_columns.clone(),
            },
            deletes: settings.deletes,
            partition_spec: settings.partition_spec.clone(),
        };
        Some(TableWork {
            spec,
            staged: std::mem::take(&mut state.staged),
            offsets: std::mem::take(&mut state.staged_offsets),
            truncated_at: state.truncated_at.take(),
        })
    }

    /// Freezes the window and starts a round committing it. With `force`, tables waiting
    /// for a retry are included. `None`: nothing to commit.
    pub(super) async fn start_round(&mut self, force: bool) -> Result<(), RuntimeError> {
        debug_assert!(self.round.is_none());
        self.flush_all().await?;
        self.settle_flushes(true).await?;
        let now = Instant::now();
        let tables: Vec<TableName> = self
            .tables
            .iter()
            .filter(|(_, s)| s.has_work() && (force || s.due(now)))
            .map(|(t, _)| t.clone())
            .collect();
        if tables.is_empty() {
            return Ok(());
        }
        fault::pause("table-commit");
        if lost_assignment(&self.consumer, &self.metrics, None) {
            self.drop_uncommitted().await;
            return Ok(());
        }
        self.retrying_bytes = tables
            .iter()
            .filter_map(|t| self.tables.get(t))
            .filter(|s| s.failures > 0)
            .map(TableState::window_bytes)
            .sum();
        let works: Vec<TableWork> = tables.iter().filter_map(|t| self.take_work(t)).collect();
        self.update_buffer_gauges();
        if works.is_empty() {
            return Ok(());
        }
        let round = commit_round(
            self.shared(),
            works,
            self.config.flush.max_concurrent_commits,
        );
        self.round = Some(tokio::spawn(round));
        Ok(())
    }

    /// Waits for the round in flight, if any, and takes in its results (with `force`, as
    /// [`Runtime::take_results`] does).
    pub(super) async fn finish_round_in_flight(&mut self, force: bool) -> Result<(), RuntimeError> {
        let Some(round) = self.round.take() else {
            return Ok(());
        };
        self.take_results(round.await.map_err(round_failed)?, force)
            .await
    }

    /// Takes in a round's results. Retryable failures go back in front of their table's newer
    /// work with a backoff (with `force`, they are returned); other failures are returned.
    pub(super) async fn take_results(
        &mut self,
        results: RoundResults,
        force: bool,
    ) -> Result<(), RuntimeError> {
        self.retrying_bytes = 0;
        let mut lost = false;
        let mut failure = None;
        for (work, settled) in results {
            let table = work.spec.name.clone();
            match settled {
                Settled::Committed(done) => {
                    if done.committed {
                        if let Ok(mut written) = self.written.lock() {
                            written.insert(table.clone());
                        }
                        self.summary.commits += 1;
                        self.summary.rows_written += done.rows;
                        let totals = self.committed.entry(table.clone()).or_default();
                        totals.rows += done.rows;
                        totals.files += done.files;
                        totals.bytes += done.bytes;
                    }
                    if let Some(schema) = &done.schema {
                        self.decoding.register(&table, schema).await?;
                    }
                    if let Some(state) = self.tables.get_mut(&table) {
                        state.failures = 0;
                        state.retry_at = None;
                    }
                }
                Settled::Lost => lost = true,
                Settled::Failed(RuntimeError::Commit(e))
                    if e.is_retryable() && !force && self.waited_too_long(&work).is_some() =>
                {
                    self.metrics.error("commit", "permanent");
                    let age = self.waited_too_long(&work).unwrap_or_default();
                    let e = RuntimeError::UncommittedTooLong {
                        table: table.clone(),
                        age,
                        limit: self.max_uncommitted_age.unwrap_or_default(),
                        last: Box::new(e),
                    };
                    tracing::error!(%table, error = %e, "commit failed for too long; stopping");
                    failure.get_or_insert(e);
                }
                Settled::Failed(RuntimeError::Commit(e)) if e.is_retryable() && !force => {
                    self.metrics.error("commit", "retryable");
                    let state = self.tables.entry(table.clone()).or_default();
                    state.failures += 1;
                    let wait = Duration::from_secs(1 << state.failures.min(6));
                    state.retry_at = Some(Instant::now() + wait);
                    tracing::warn!(%table, error = %e, retry_in = ?wait, "commit failed; will retry");
                    self.put_back(work).await;
                }
                Settled::Failed(e) => {
                    self.metrics.error("commit", "permanent");
                    tracing::error!(%table, error = %e, "commit failed; stopping");
                    failure.get_or_insert(e);
                }
            }
        }
        if lost {
            self.drop_uncommitted().await;
        }
        self.update_buffer_gauges();
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// How long the oldest staged change of `work` has waited, once that is past
    /// [`Runtime::max_uncommitted_age`].
    fn waited_too_long(&self, work: &TableWork) -> Option<Duration> {
        let limit = self.max_uncommitted_age?;
        let age = work.staged.iter().map(|d| d.staged_at.elapsed()).max()?;
        (age > limit).then_some(age)
    }

    /// Puts a table's uncommitted work back in front of what was read since.
    async fn put_back(&mut self, work: TableWork) {
        let state: &mut TableState = self.tables.entry(work.spec.name.clone()).or_default();
        state.staged_offsets.merge(&work.offsets);
        if state.truncated_at.is_some() {
            // The table was truncated since: the older work is void.
            for delta in &work.staged {
                self.stager.delete(delta).await;
            }
            return;
        }
        state.truncated_at = work.truncated_at;
        let newer = std::mem::replace(&mut state.staged, work.staged);
        state.staged.extend(newer);
    }

    /// Commits one table now, in this task (backfill commits table by table). A failure puts
    /// the work back and is returned.
    pub(super) async fn commit_one(&mut self, table: &TableName) -> Result<(), RuntimeError> {
        self.settle_table(table).await?;
        let Some(work) = self.take_work(table) else {
            return Ok(());
        };
        let settled = commit_table(&self.shared(), &work).await;
        match settled {
            Settled::Failed(e) => {
                self.put_back(work).await;
                Err(e)
            }
            settled => self.take_results(vec![(work, settled)], true).await,
        }
    }
}
