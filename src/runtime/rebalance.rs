//! Rebalances: revoked partitions lose their uncommitted work (whoever owns them next re-reads
//! it from the offsets the tables hold); assigned partitions stay paused until each is sought
//! to the offset its table holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::context::RebalanceEvent;
use super::{KAFKA_TIMEOUT, Runtime, RuntimeError, SEEK_TIMEOUT};
use crate::commit::{CommitError, CommittedOffsets};
use crate::config::{StartFrom, TableName};
use crate::retry::Backoff;

impl Runtime {
    /// Acts on the rebalance events librdkafka delivered in its last poll. The records read
    /// before them are taken in from the decode thread, and a commit round in flight is
    /// finished first: their work was read while the partitions were this member's, and the
    /// tables' offsets must be current before new partitions are positioned.
    pub(super) async fn handle_rebalances(&mut self) -> Result<(), RuntimeError> {
        let mut events = std::mem::take(&mut self.queued_events);
        events.extend(self.events.try_iter());
        if events.is_empty() {
            return Ok(());
        }
        self.take_in_decoded().await?;
        self.finish_round_in_flight(false).await?;
        for event in events {
            match event {
                RebalanceEvent::Revoked(partitions) => {
                    tracing::info!(
                        ?partitions,
                        "partitions revoked: dropping uncommitted work; it will be re-read"
                    );
                    self.drop_uncommitted().await;
                }
                RebalanceEvent::Assigned(partitions) => {
                    tracing::info!(?partitions, "partitions assigned");
                    self.start_at_table_offsets(&partitions).await?;
                    self.metrics.set_ready(true);
                }
                RebalanceEvent::Error(e) => tracing::warn!(error = %e, "rebalance error"),
                RebalanceEvent::PauseFailed(e) => {
                    return Err(RuntimeError::Setup(format!(
                        "could not pause newly assigned partitions: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Forgets every table's buffered, staging and staged work (whoever owns the partitions
    /// next reads it again from the offsets the tables hold) and removes the staged files.
    pub(super) async fn drop_uncommitted(&mut self) {
        let tables = std::mem::take(&mut self.tables);
        for state in tables.into_values() {
            state.discard(&self.stager).await;
        }
        self.update_buffer_gauges();
    }

    /// Seeks each newly assigned (and paused) partition to the next offset its table needs,
    /// then resumes them all. A partition its table holds no offset for keeps the position
    /// librdkafka chose (the group's committed offset, else `start_from`; a `latest` start is
    /// pinned in the group at once, see [`Runtime::pin_latest`]).
    pub(super) async fn start_at_table_offsets(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<(), RuntimeError> {
        let mut by_table: HashMap<TableName, Vec<(&str, i32)>> = HashMap::new();
        for (topic, partition) in partitions {
            by_table
                .entry(self.route(topic)?)
                .or_default()
                .push((topic, *partition));
        }
        let mut resume = TopicPartitionList::new();
        let mut positioned = CommittedOffsets::default();
        let mut unheld = Vec::new();
        for (table, parts) in by_table {
            let held = self.table_offsets(&table).await?;
            for (topic, partition) in parts {
                if let Some(next) = held.get(topic, partition) {
                    self.seek_when_started(topic, partition, next).await?;
                    positioned.advance(topic, partition, next);
                    tracing::info!(%table, topic, partition, offset = next, "starting at the table's offset");
                } else {
                    unheld.push((topic, partition));
                }
                resume.add_partition(topic, partition);
            }
        }
        if self.config.kafka.start_from == StartFrom::Latest {
            self.pin_latest(&unheld, &mut positioned).await?;
        }
        match &mut self.paused {
            // While the window is full, the new partitions wait with the rest of the assignment.
            Some(held) => held.extend(partitions.iter().cloned()),
            None => self.consumer.resume(&resume)?,
        }
        // The group learns what the tables hold (a crash may have kept it from hearing), so
        // its lag is right even before anything new arrives.
        super::round::commit_kafka_offsets(&self.consumer, &positioned).await;
        Ok(())
    }

    /// With `start_from = "latest"`, a partition that neither its table nor the group holds an
    /// offset for starts at its current end, and the group is told so at once: otherwise a
    /// member that dies or loses the partition before its table's first commit leaves the next
    /// owner starting at a later end, and what came between is never read.
    pub(super) async fn pin_latest(
        &self,
        partitions: &[(&str, i32)],
        positioned: &mut CommittedOffsets,
    ) -> Result<(), RuntimeError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let wanted: Vec<(String, i32)> = partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
        // Both calls block on the broker: off the async thread.
        let ends = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in &wanted {
                tpl.add_partition(topic, *partition);
            }
            let committed = consumer.committed_offsets(tpl, KAFKA_TIMEOUT)?;
            let mut ends = Vec::new();
            for (topic, partition) in wanted {
                let has_offset = committed
                    .find_partition(&topic, partition)
                    .is_some_and(|p| matches!(p.offset(), Offset::Offset(_)));
                if !has_offset {
                    let (_, high) = consumer.fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)?;
                    ends.push((topic, partition, high));
                }
            }
            Ok::<_, rdkafka::error::KafkaError>(ends)
        })
        .await
        .map_err(|e| RuntimeError::Setup(format!("reading partition ends: {e}")))??;
        for (topic, partition, end) in ends {
            self.seek_when_started(&topic, partition, end).await?;
            positioned.advance(&topic, partition, end);
            tracing::info!(
                topic,
                partition,
                offset = end,
                "starting at the partition's end (start_from = latest); the group holds it from now"
            );
        }
        Ok(())
    }

    pub(super) fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.consumer
            .assignment()
            .is_ok_and(|tpl| tpl.find_partition(topic, partition).is_some())
    }

    /// The offsets `table` holds, retrying catalog failures that may pass.
    pub(super) async fn table_offsets(
        &self,
        table: &TableName,
    ) -> Result<CommittedOffsets, RuntimeError> {
        const RETRIES: Backoff =
            Backoff::new(Duration::from_millis(500), Duration::from_secs(8), 5);
        let offsets = RETRIES
            .retry(
                || self.engine.committed_offsets(table),
                CommitError::is_retryable,
                |e, wait| {
                    self.metrics.error("assign", "retryable");
                    tracing::warn!(%table, error = %e, retry_in = ?wait, "reading the table's offsets failed; retrying");
                },
            )
            .await?;
        Ok(offsets)
    }

    /// Seeks a partition once librdkafka has started fetching it: right after an assignment it
    /// is still fetching the group's committed offset, and a seek then fails with a state
    /// error (librdkafka never lets that lookup override a seek that succeeded).
    pub(super) async fn seek_when_started(
        &self,
        topic: &str,
        partition: i32,
        next: i64,
    ) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + SEEK_TIMEOUT;
        loop {
            match self.consumer.seek(
                topic,
                partition,
                Offset::Offset(next),
                Duration::from_secs(5),
            ) {
                Ok(()) => return Ok(()),
                // A later rebalance took it away again; its event is next in the queue.
                Err(_) if !self.is_assigned(topic, partition) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(topic, partition, error = %e, "partition not started yet; seeking again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(RuntimeError::Setup(format!(
                        "could not seek {topic} [{partition}] to offset {next}, the offset its table holds, within {SEEK_TIMEOUT:?}: {e}"
                    )));
                }
            }
        }
    }
}
