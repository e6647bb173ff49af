//! Rebalances: revoked partitions lose their uncommitted work (whoever owns them next re-reads
//! it from the offsets the tables hold); every assigned partition is sought to where its table
//! ends (else to the group's offset or `start_from`) before the loop reads from it again, and
//! only then paused or resumed (see [`super::context`] for why not earlier).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::context::{RebalanceEvent, RebalanceForwarder};
use super::{KAFKA_TIMEOUT, Runtime, RuntimeError, SEEK_TIMEOUT};
use crate::commit::{CommitError, CommittedOffsets};
use crate::config::{StartFrom, TableName};
use crate::retry::Backoff;

/// How the reads an assignment needs (the tables' offsets, the group's) are tried again.
const ASSIGN_RETRIES: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8), 5);

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

    /// Seeks each newly assigned partition to the next offset its table needs; a partition its
    /// table holds no offset for is sought to the group's committed offset, else to
    /// `kafka.start_from` (a `latest` start is pinned in the group at once, see
    /// [`Runtime::start_unheld`]). Then resumes them all (a partition this process paused under
    /// an earlier assignment stays paused in librdkafka until resumed), or pauses them with the
    /// rest while the window is full.
    ///
    /// Every partition gets a seek, even where librdkafka would start at the same place: a
    /// seek succeeds only once librdkafka has started fetching the partition, and a pause or
    /// resume sent before that can make it drop the start for good.
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
        let mut positioned = CommittedOffsets::default();
        let mut unheld = Vec::new();
        for (table, parts) in by_table {
            let held = self.table_offsets(&table).await?;
            for (topic, partition) in parts {
                if let Some(next) = held.get(topic, partition) {
                    self.seek_when_started(topic, partition, Offset::Offset(next))
                        .await?;
                    positioned.advance(topic, partition, next);
                    tracing::info!(%table, topic, partition, offset = next, "starting at the table's offset");
                } else {
                    unheld.push((topic, partition));
                }
            }
        }
        self.start_unheld(&unheld, &mut positioned).await?;
        // A later rebalance may already have taken some away (its event is next in the queue).
        let current = self.consumer.assignment()?;
        let mut assigned = TopicPartitionList::new();
        for (topic, partition) in partitions {
            if current.find_partition(topic, *partition).is_some() {
                assigned.add_partition(topic, *partition);
            }
        }
        match &mut self.paused {
            // While the window is full, the new partitions wait with the rest of the assignment.
            Some(held) => {
                self.consumer.pause(&assigned)?;
                held.extend(partitions.iter().cloned());
            }
            None => self.consumer.resume(&assigned)?,
        }
        // The group learns what the tables hold (a crash may have kept it from hearing), so
        // its lag is right even before anything new arrives.
        super::round::commit_kafka_offsets(&self.consumer, &positioned).await;
        Ok(())
    }

    /// Seeks partitions their table holds no offset for: to the group's committed offset, else
    /// to `kafka.start_from`. With `latest`, the partition's current end is
    /// sought and the group told so at once (added to `positioned`): otherwise a member that
    /// dies or loses the partition before its table's first commit leaves the next owner
    /// starting at a later end, and what came between is never read.
    pub(super) async fn start_unheld(
        &self,
        partitions: &[(&str, i32)],
        positioned: &mut CommittedOffsets,
    ) -> Result<(), RuntimeError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let latest = self.config.kafka.start_from == StartFrom::Latest;
        let wanted: Vec<(String, i32)> = partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
        // Both calls block on the broker: off the async thread, and tried again a few times
        // (the broker may be changing its coordinator during the rebalance).
        let starts = ASSIGN_RETRIES
            .retry(
                || {
                    let consumer = consumer.clone();
                    let wanted = wanted.clone();
                    async move {
                        tokio::task::spawn_blocking(move || starts_of(&consumer, wanted, latest))
                            .await
                            .map_err(|e| {
                                RuntimeError::Setup(format!("reading the group's offsets: {e}"))
                            })?
                            .map_err(RuntimeError::Kafka)
                    }
                },
                |e| matches!(e, RuntimeError::Kafka(_)),
                |e, wait| {
                    self.metrics.error("assign", "retryable");
                    tracing::warn!(error = %e, retry_in = ?wait, "reading the group's offsets failed; retrying");
                },
            )
            .await?;
        for (topic, partition, start) in starts {
            match start {
                Start::Committed(next) => {
                    self.seek_when_started(&topic, partition, Offset::Offset(next))
                        .await?;
                    tracing::info!(
                        topic,
                        partition,
                        offset = next,
                        "starting at the group's offset (the table holds none for this partition)"
                    );
                }
                Start::End(end) => {
                    self.seek_when_started(&topic, partition, Offset::Offset(end))
                        .await?;
                    positioned.advance(&topic, partition, end);
                    tracing::info!(
                        topic,
                        partition,
                        offset = end,
                        "starting at the partition's end (start_from = latest); the group holds it from now"
                    );
                }
                Start::Beginning => {
                    self.seek_when_started(&topic, partition, Offset::Beginning)
                        .await?;
                    tracing::info!(
                        topic,
                        partition,
                        "starting at the partition's beginning (start_from = earliest)"
                    );
                }
            }
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
        let offsets = ASSIGN_RETRIES
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
        offset: Offset,
    ) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + SEEK_TIMEOUT;
        loop {
            match self
                .consumer
                .seek(topic, partition, offset, Duration::from_secs(5))
            {
                Ok(()) => return Ok(()),
                // A later rebalance took it away again; its event is next in the queue.
                Err(_) if !self.is_assigned(topic, partition) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(topic, partition, error = %e, "partition not started yet; seeking again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(RuntimeError::Setup(format!(
                        "could not seek {topic} [{partition}] to {offset:?} within {SEEK_TIMEOUT:?}: {e}"
                    )));
                }
            }
        }
    }
}

/// Where each of `wanted` starts: the group's committed offset, else (with `latest`) the
/// partition's end, else its beginning. Blocks on the broker.
fn starts_of(
    consumer: &StreamConsumer<RebalanceForwarder>,
    wanted: Vec<(String, i32)>,
    latest: bool,
) -> Result<Vec<(String, i32, Start)>, rdkafka::error::KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &wanted {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, KAFKA_TIMEOUT)?;
    let mut starts = Vec::new();
    for (topic, partition) in wanted {
        let start = match committed
            .find_partition(&topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(next)) => Start::Committed(next),
            _ if latest => {
                let (_, high) = consumer.fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)?;
                Start::End(high)
            }
            _ => Start::Beginning,
        };
        starts.push((topic, partition, start));
    }
    Ok(starts)
}

/// Where a partition its table holds nothing for starts.
enum Start {
    /// The group's committed offset.
    Committed(i64),
    /// The partition's end when it was assigned (`start_from = latest`).
    End(i64),
    /// The partition's first offset (`start_from = earliest`).
    Beginning,
}
