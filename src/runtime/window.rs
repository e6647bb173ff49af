//! The window: per table, what was read since its last commit. Buffers are flushed to staged
//! deltas on rows, bytes or age; a flush is encoded (on the blocking pool) and written by a
//! task of its own while the loop goes on reading, and joins the table's staged work once it
//! is written, in the order the flushes started.
//!
//! Memory: buffers plus flushes in flight are held under `flush.max_buffered_bytes` (above it
//! the largest buffer is flushed, and reading waits for the oldest flushes). Staged changes
//! waiting for a commit are held under `flush.max_window_bytes`, at their in-memory size (what
//! the commit reads back): reaching it starts a commit
//! round early, and while a round is in flight (or a table's commits keep failing) the
//! partitions are paused there rather than the window growing.

use std::collections::VecDeque;
use std::time::Instant;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use tokio::task::JoinHandle;

use super::{Runtime, RuntimeError, fault};
use crate::buffer::TableBuffer;
use crate::commit::CommittedOffsets;
use crate::config::TableName;
use crate::decode::{BatchPart, Change, KafkaPosition, Op};
use crate::stage::{StagedDelta, Stager};

#[derive(Default)]
pub(super) struct TableState {
    pub buffer: TableBuffer,
    /// Flushes being encoded and written, oldest first.
    pub flushing: VecDeque<Flushing>,
    /// Written flushes, in order.
    pub staged: Vec<StagedDelta>,
    /// Positions covered by `staged` (and by flushes that produced no rows).
    pub staged_offsets: CommittedOffsets,
    /// The source table was truncated here in this window; `staged` holds only what came after.
    pub truncated_at: Option<KafkaPosition>,
    /// The primary key the decoder found for the table (Kafka key or configured override).
    pub primary_key: Vec<String>,
    /// Consecutive failed commits, for backoff.
    pub failures: u32,
    pub retry_at: Option<Instant>,
}

/// One flush on its way to staging.
pub(super) struct Flushing {
    pub task: JoinHandle<Result<Vec<StagedDelta>, RuntimeError>>,
    /// The positions the flush covers; they join the window when it is written.
    pub offsets: CommittedOffsets,
    /// What its buffer held, until it is written.
    pub bytes: u64,
}

impl TableState {
    pub fn staged_bytes(&self) -> u64 {
        self.staged.iter().map(|d| d.bytes).sum()
    }

    /// The in-memory size of the staged deltas: what committing them reads back.
    pub fn window_bytes(&self) -> u64 {
        self.staged.iter().map(|d| d.memory).sum()
    }

    fn flushing_bytes(&self) -> u64 {
        self.flushing.iter().map(|f| f.bytes).sum()
    }

    /// Drops the table's uncommitted work: waits for its flushes in flight, then deletes
    /// every staged delta (best effort; the lifecycle rule removes what is left).
    pub async fn discard(self, stager: &Stager) {
        let mut staged = self.staged;
        for flushing in self.flushing {
            if let Ok(Ok(deltas)) = flushing.task.await {
                staged.extend(deltas);
            }
        }
        for delta in &staged {
            stager.delete(delta).await;
        }
    }

    /// Not waiting out the backoff of a failed commit at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    pub fn has_work(&self) -> bool {
        !self.staged.is_empty() || !self.staged_offsets.is_empty() || self.truncated_at.is_some()
    }
}

/// Converts one flush's changes to Arrow and Parquet (on the blocking pool) and stages them:
/// one delta per run of changes with one schema.
async fn stage_changes(
    stager: &Stager,
    table: &TableName,
    changes: Vec<Change>,
) -> Result<Vec<StagedDelta>, RuntimeError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let parts = tokio::task::spawn_blocking(move || crate::decode::to_batches(&changes))
        .await
        .map_err(|e| RuntimeError::Setup(format!("converting changes to Arrow: {e}")))?
        .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    let mut deltas = Vec::new();
    for part in parts {
        if let BatchPart::Rows(rows) = part {
            let delta = stager.write(table, &[rows.batch]).await?;
            tracing::debug!(%table, rows = delta.rows, bytes = delta.bytes, location = %delta.location, "staged");
            deltas.push(delta);
            fault::point("staged");
        }
    }
    Ok(deltas)
}

impl Runtime {
    /// Starts flushing a table's buffer. A truncate in it first drops everything of the
    /// window before it, staged or on its way.
    pub(super) async fn flush_table(&mut self, table: &TableName) -> Result<(), RuntimeError> {
        let Some(state) = self.tables.get_mut(table) else {
            return Ok(());
        };
        if state.buffer.is_empty() {
            return Ok(());
        }
        let bytes = state.buffer.bytes() as u64;
        let mut flushed = state.buffer.take();
        if let Some(last) = flushed.changes.iter().rposition(|c| c.op == Op::Truncate) {
            let position = flushed.changes[last].position.clone();
            tracing::info!(
                %table,
                topic = %position.topic,
                partition = position.partition,
                offset = position.offset,
                "the source table was truncated: the next commit replaces all its rows"
            );
            let mut dropped = std::mem::take(&mut state.staged);
            for earlier in std::mem::take(&mut state.flushing) {
                state.staged_offsets.merge(&earlier.offsets);
                if let Ok(Ok(deltas)) = earlier.task.await {
                    dropped.extend(deltas);
                }
            }
            for delta in &dropped {
                self.stager.delete(delta).await;
            }
            state.truncated_at = Some(position);
            flushed.changes.drain(..=last);
        }
        let stager = self.stager.clone();
        let done = self.flushed.clone();
        let name = table.clone();
        let changes = flushed.changes;
        let task = tokio::spawn(async move {
            let result = stage_changes(&stager, &name, changes).await;
            done.notify_one();
            result
        });
        state.flushing.push_back(Flushing {
            task,
            offsets: flushed.offsets,
            bytes,
        });
        self.update_buffer_gauges();
        Ok(())
    }

    /// Starts flushing every buffer that is older than `flush.interval`.
    pub(super) async fn flush_due(&mut self) -> Result<(), RuntimeError> {
        let interval = self.config.flush.interval;
        let due: Vec<TableName> = self
            .tables
            .iter()
            .filter(|(_, s)| s.buffer.opened().is_some_and(|t| t.elapsed() >= interval))
            .map(|(t, _)| t.clone())
            .collect();
        for table in due {
            self.flush_table(&table).await?;
        }
        Ok(())
    }

    /// Starts flushing every buffer.
    pub(super) async fn flush_all(&mut self) -> Result<(), RuntimeError> {
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        for table in tables {
            self.flush_table(&table).await?;
        }
        Ok(())
    }

    /// Moves written flushes into their tables' staged work, in order; with `wait`, waits for
    /// every flush in flight. A flush that failed (staging beyond its retries) is the run's
    /// error: nothing of it was acknowledged.
    pub(super) async fn settle_flushes(&mut self, wait: bool) -> Result<(), RuntimeError> {
        for state in self.tables.values_mut() {
            settle(state, wait).await?;
        }
        self.update_buffer_gauges();
        Ok(())
    }

    /// Flushes and settles one table (backfill commits table by table).
    pub(super) async fn settle_table(&mut self, table: &TableName) -> Result<(), RuntimeError> {
        self.flush_table(table).await?;
        if let Some(state) = self.tables.get_mut(table) {
            settle(state, true).await?;
        }
        self.update_buffer_gauges();
        Ok(())
    }

    /// Keeps buffers and flushes in flight under `flush.max_buffered_bytes`: flushes the
    /// largest buffer, then waits for the oldest flushes while those alone hold more than
    /// half of it.
    pub(super) async fn bound_buffers(&mut self) -> Result<(), RuntimeError> {
        let limit = self.config.flush.max_buffered_bytes;
        if self.buffered_bytes() < limit {
            return Ok(());
        }
        let largest = self
            .tables
            .iter()
            .max_by_key(|(_, s)| s.buffer.bytes())
            .map(|(t, _)| t.clone());
        if let Some(table) = largest {
            self.flush_table(&table).await?;
        }
        while self
            .tables
            .values()
            .map(TableState::flushing_bytes)
            .sum::<u64>()
            > limit / 2
        {
            let Some(state) = self
                .tables
                .values_mut()
                .filter(|s| !s.flushing.is_empty())
                .max_by_key(|s| s.flushing_bytes())
            else {
                break;
            };
            settle_one(state).await?;
        }
        self.update_buffer_gauges();
        Ok(())
    }

    /// Buffers plus flushes in flight.
    pub(super) fn buffered_bytes(&self) -> u64 {
        self.tables
            .values()
            .map(|s| s.buffer.bytes() as u64 + s.flushing_bytes())
            .sum()
    }

    /// Staged bytes waiting for a commit (not those of a round in flight).
    pub(super) fn staged_bytes(&self) -> u64 {
        self.tables.values().map(TableState::staged_bytes).sum()
    }

    /// The in-memory size of the staged deltas waiting for a commit (not those of a round in
    /// flight).
    pub(super) fn window_bytes(&self) -> u64 {
        self.tables.values().map(TableState::window_bytes).sum()
    }

    /// Whether the staged window is at `flush.max_window_bytes`: it is committed before more
    /// is read, so that a commit holds no more than the bound.
    pub(super) fn window_full(&self) -> bool {
        self.window_bytes() >= self.config.flush.max_window_bytes
    }

    /// Pauses every assigned partition while the staged window is at `flush.max_window_bytes`
    /// and cannot be committed now (a round is in flight, or the tables are waiting to retry),
    /// and resumes them once it has room. Call only with no rebalance event pending, so that
    /// every assigned partition has been positioned.
    pub(super) fn hold_window(&mut self) -> Result<(), RuntimeError> {
        // Work a round is trying again is still part of the window: while commits keep
        // failing, the window must not make room by handing it to the next attempt.
        let window = self.window_bytes() + self.retrying_bytes;
        let hold = window >= self.config.flush.max_window_bytes && self.committing();
        match (&self.paused, hold) {
            (None, true) => {
                let assignment = self.consumer.assignment()?;
                let held: Vec<(String, i32)> = assignment
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                self.consumer.pause(&assignment)?;
                tracing::info!(
                    partitions = ?held,
                    window_bytes = window,
                    limit = self.config.flush.max_window_bytes,
                    "the window is full while a commit is in flight or failing: reading paused"
                );
                self.metrics.paused.set(1);
                self.paused = Some(held);
            }
            (Some(_), false) => {
                let held = self.paused.take().unwrap_or_default();
                let assignment = self.consumer.assignment()?;
                let mut resume = TopicPartitionList::new();
                for (topic, partition) in &held {
                    if assignment.find_partition(topic, *partition).is_some() {
                        resume.add_partition(topic, *partition);
                    }
                }
                self.consumer.resume(&resume)?;
                tracing::info!("the window has room again: reading resumed");
                self.metrics.paused.set(0);
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn update_buffer_gauges(&self) {
        self.metrics.staged_bytes.set(self.staged_bytes() as i64);
        self.metrics
            .buffered_bytes
            .set(self.buffered_bytes() as i64);
    }
}

pub(super) async fn settle(state: &mut TableState, wait: bool) -> Result<(), RuntimeError> {
    while let Some(front) = state.flushing.front() {
        if !wait && !front.task.is_finished() {
            break;
        }
        settle_one(state).await?;
    }
    Ok(())
}

/// Waits for the table's oldest flush in flight and adds it to the staged work.
async fn settle_one(state: &mut TableState) -> Result<(), RuntimeError> {
    let Some(flushing) = state.flushing.pop_front() else {
        return Ok(());
    };
    let deltas = flushing
        .task
        .await
        .map_err(|e| RuntimeError::Setup(format!("a flush task failed: {e}")))??;
    state.staged.extend(deltas);
    state.staged_offsets.merge(&flushing.offsets);
    Ok(())
}
