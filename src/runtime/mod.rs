//! runtime: `floe run`. Wires the stages together in one loop: Kafka records are decoded,
//! buffered per table, flushed to staged deltas on rows / bytes / interval, and committed per
//! table on the commit interval; group offsets are committed to Kafka only after the table
//! commit that holds them.
//!
//! Exactly once: the table is the record of what was applied. Every assigned partition starts
//! paused; the loop reads the offsets its table holds (`floe.offsets.<group>`), seeks there and
//! only then resumes it, so neither an older group offset nor a missing one (expired, or reset
//! to `latest`) decides where reading starts. Partitions a table holds nothing for start at the
//! group's committed offset, or at `start_from`. The commit engine still drops every re-read
//! change the table already holds, and group offsets are committed only after the table commit.
//!
//! Rebalances are a protocol, not a callback side effect: the consumer context only forwards
//! them over a channel (and pauses what it was given); the loop drops in-flight work when
//! partitions are revoked (it will be re-read by whoever owns them next) before it handles
//! another record.

mod backfill;
mod context;
pub(crate) mod fault;

pub use backfill::{BackfillOptions, BackfillReport, TableReport};

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::buffer::TableBuffer;
use crate::commit::{
    CommitEngine, CommitError, CommitSettings, CommittedOffsets, FileSettings, TableChanges,
    TableSpec,
};
use crate::config::{Config, StartFrom, TableName, TopicSelection};
use crate::decode::{
    BatchPart, Decoded, Decoder, ErrorPolicy, KafkaPosition, KafkaRecord, PolicyError,
};
use crate::stage::{StageError, StagedDelta, Stager};
use crate::telemetry::{Metrics, TableOp};
use context::{RebalanceEvent, RebalanceForwarder};

/// Why `floe run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Policy(#[from] Box<PolicyError>),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{0}")]
    Setup(String),
    #[error("shutdown: could not flush and commit within the drain timeout ({0:?})")]
    DrainTimeout(Duration),
    #[error("interrupted: what was committed stays; run it again to continue")]
    Interrupted,
}

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub commits: u64,
    pub rows_written: u64,
}

#[derive(Default)]
struct TableState {
    buffer: TableBuffer,
    staged: Vec<StagedDelta>,
    /// Positions covered by `staged` (and by flushes that produced no rows).
    staged_offsets: CommittedOffsets,
    /// The source table was truncated here in this window; `staged` holds only what came after.
    truncated_at: Option<KafkaPosition>,
    /// The primary key the decoder found for the table (Kafka key or configured override).
    primary_key: Vec<String>,
    /// Consecutive failed commits, for backoff.
    failures: u32,
    retry_at: Option<Instant>,
}

pub struct Runtime {
    config: Config,
    consumer: Arc<StreamConsumer<RebalanceForwarder>>,
    events: std::sync::mpsc::Receiver<RebalanceEvent>,
    /// Notified with every rebalance event, so the loop sees them while partitions are paused.
    rebalanced: Arc<tokio::sync::Notify>,
    decoder: Decoder,
    policy: ErrorPolicy,
    engine: CommitEngine,
    stager: Stager,
    tables: HashMap<TableName, TableState>,
    summary: RunSummary,
    /// What was committed per table, for the backfill report.
    committed: HashMap<TableName, Committed>,
    metrics: Arc<Metrics>,
}

/// Totals of one table's commits in this process.
#[derive(Debug, Default, Clone, Copy)]
struct Committed {
    rows: u64,
    files: u64,
    bytes: u64,
}

impl Runtime {
    pub async fn new(config: Config) -> Result<Self, RuntimeError> {
        let (tx, events) = std::sync::mpsc::channel();
        let rebalanced = Arc::new(tokio::sync::Notify::new());
        let metrics = Arc::new(Metrics::default());
        let mut consumer_config = crate::source::consumer_config(&config.kafka);
        if consumer_config.get("statistics.interval.ms").is_none() {
            // librdkafka reports consumer lag per partition in its statistics.
            consumer_config.set("statistics.interval.ms", "15000");
        }
        if consumer_config.get("fetch.queue.backoff.ms").is_none() {
            // librdkafka waits this long to fetch again once its queue is full (1 s by default),
            // which idles a consumer that empties the queue faster than that.
            consumer_config.set("fetch.queue.backoff.ms", "10");
        }
        let consumer: StreamConsumer<RebalanceForwarder> = consumer_config.create_with_context(
            RebalanceForwarder::new(tx, rebalanced.clone(), metrics.clone()),
        )?;
        let catalog = crate::catalog::open_catalog(&config.catalog)
            .await
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        let mut commit_settings = CommitSettings::new(
            config.kafka.group_id.clone(),
            FileSettings {
                target_file_size: config.flush.target_file_size,
                zstd_level: config.flush.zstd_level,
            },
        );
        commit_settings.index_memory = config.tables.index_memory;
        let engine = CommitEngine::new(catalog, commit_settings);
        let stager = Stager::open(&config.staging, &uuid::Uuid::new_v4().to_string()).await?;
        if let crate::config::StagingConfig::S3(s3) = &config.staging {
            stager
                .ensure_expiration(s3.manage_lifecycle, s3.expire_after_days)
                .await?;
        }
        let policy = ErrorPolicy::new(&config.errors, &config.kafka)?;
        let mut decoder = Decoder::new(&config.decode, &config.tables);
        // Existing tables tell the decoder their column types (for records without a schema)
        // and field ids; tables of regex-selected topics are registered on their first commit.
        if let TopicSelection::List(topics) = &config.kafka.topics {
            for topic in topics {
                let table = config
                    .tables
                    .route(topic)
                    .map_err(|e| RuntimeError::Setup(format!("topic {topic}: {e}")))?;
                register_table(&engine, &mut decoder, &table).await?;
            }
        }
        Ok(Runtime {
            config,
            consumer: Arc::new(consumer),
            events,
            rebalanced,
            decoder,
            policy,
            engine,
            stager,
            tables: HashMap::new(),
            summary: RunSummary::default(),
            committed: HashMap::new(),
            metrics,
        })
    }

    /// The metrics this runtime updates (shared with the HTTP endpoints).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Consumes until `shutdown` completes, then flushes, commits and returns.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, RuntimeError> {
        match &self.config.kafka.topics {
            TopicSelection::List(topics) => {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.consumer.subscribe(&topics)?;
            }
            // librdkafka subscribes to a pattern when the name starts with `^`.
            TopicSelection::Regex(re) => {
                let pattern = if re.as_str().starts_with('^') {
                    re.as_str().to_string()
                } else {
                    format!("^{}", re.as_str())
                };
                self.consumer.subscribe(&[&pattern])?;
            }
        }
        let server = if self.config.metrics.enabled {
            Some(
                crate::telemetry::serve(self.config.metrics.listen, self.metrics.clone())
                    .await
                    .map_err(|e| {
                        RuntimeError::Setup(format!(
                            "metrics.listen {}: {e}",
                            self.config.metrics.listen
                        ))
                    })?,
            )
        } else {
            None
        };
        tracing::info!(group = %self.config.kafka.group_id, catalog = self.config.catalog.kind(), "floe run started");
        let mut flush_tick = tokio::time::interval(tick_of(self.config.flush.interval));
        let mut commit_tick = tokio::time::interval(self.config.flush.commit_interval);
        commit_tick.tick().await;
        tokio::pin!(shutdown);
        let consumer = self.consumer.clone();
        let rebalanced = self.rebalanced.clone();
        let outcome = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                _ = rebalanced.notified() => {
                    if let Err(e) = self.handle_rebalances().await { break Err(e) }
                }
                _ = commit_tick.tick() => {
                    if let Err(e) = self.commit_all(false).await { break Err(e) }
                }
                _ = flush_tick.tick() => {
                    if let Err(e) = self.flush_due().await { break Err(e) }
                }
                message = consumer.recv() => {
                    // Rebalance callbacks run inside that poll: act on them before the record.
                    if let Err(e) = self.handle_rebalances().await { break Err(e) }
                    match message {
                        Ok(m) => {
                            let m = detach(m);
                            if let Err(e) = self.handle_record(&m).await {
                                if matches!(e, RuntimeError::Policy(_)) {
                                    // Commit what came before the bad record, then stop before it.
                                    if let Err(commit) = self.commit_all(true).await {
                                        tracing::error!(error = %commit, "commit before stopping failed");
                                    }
                                }
                                break Err(e)
                            }
                        }
                        Err(e) => {
                            self.metrics.error("consume", "kafka");
                            tracing::warn!(error = %e, "kafka consumer error; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        };
        self.metrics.set_ready(false);
        let result = self.finish(outcome).await;
        if let Some(server) = server {
            server.abort();
        }
        result
    }

    async fn finish(
        &mut self,
        outcome: Result<(), RuntimeError>,
    ) -> Result<RunSummary, RuntimeError> {
        match outcome {
            Ok(()) => {
                tracing::info!("shutting down: flushing and committing");
                let drain = self.config.flush.drain_timeout;
                match tokio::time::timeout(drain, self.commit_all(true)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(RuntimeError::DrainTimeout(drain)),
                }
                self.consumer.unsubscribe();
                tracing::info!(
                    records = self.summary.records,
                    commits = self.summary.commits,
                    "floe run stopped"
                );
                Ok(self.summary.clone())
            }
            Err(e) => {
                // Nothing after the failure is acknowledged; what was committed stays.
                self.consumer.unsubscribe();
                Err(e)
            }
        }
    }

    async fn handle_rebalances(&mut self) -> Result<(), RuntimeError> {
        while let Ok(event) = self.events.try_recv() {
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

    /// Forgets every table's buffered and staged work (whoever owns the partitions next reads
    /// it again from the offsets the tables hold) and removes the staged files.
    async fn drop_uncommitted(&mut self) {
        let tables = std::mem::take(&mut self.tables);
        for state in tables.into_values() {
            for delta in &state.staged {
                self.stager.delete(delta).await;
            }
        }
        self.update_buffer_gauges();
    }

    /// Seeks each newly assigned (and paused) partition to the next offset its table needs,
    /// then resumes them all. A partition its table holds no offset for keeps the position
    /// librdkafka chose (the group's committed offset, else `start_from`; a `latest` start is
    /// pinned in the group at once, see [`Runtime::pin_latest`]).
    async fn start_at_table_offsets(
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
        self.consumer.resume(&resume)?;
        // The group learns what the tables hold (a crash may have kept it from hearing), so
        // its lag is right even before anything new arrives.
        self.commit_kafka_offsets(&positioned);
        Ok(())
    }

    /// With `start_from = "latest"`, a partition that neither its table nor the group holds an
    /// offset for starts at its current end, and the group is told so at once: otherwise a
    /// member that dies or loses the partition before its table's first commit leaves the next
    /// owner starting at a later end, and what came between is never read.
    async fn pin_latest(
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

    fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.consumer
            .assignment()
            .is_ok_and(|tpl| tpl.find_partition(topic, partition).is_some())
    }

    /// The offsets `table` holds, retrying catalog failures that may pass.
    async fn table_offsets(&self, table: &TableName) -> Result<CommittedOffsets, RuntimeError> {
        let mut attempt = 0u32;
        loop {
            match self.engine.committed_offsets(table).await {
                Ok(offsets) => return Ok(offsets),
                Err(e) if e.is_retryable() && attempt < 5 => {
                    attempt += 1;
                    let wait = Duration::from_millis(250 << attempt);
                    self.metrics.error("assign", "retryable");
                    tracing::warn!(%table, error = %e, retry_in = ?wait, "reading the table's offsets failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Seeks a partition once librdkafka has started fetching it: right after an assignment it
    /// is still fetching the group's committed offset, and a seek then fails with a state
    /// error (librdkafka never lets that lookup override a seek that succeeded).
    async fn seek_when_started(
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

    async fn handle_record(&mut self, message: &OwnedRecord) -> Result<(), RuntimeError> {
        self.summary.records += 1;
        let record = message.record();
        let bytes =
            message.value.as_ref().map_or(0, Vec::len) + message.key.as_ref().map_or(0, Vec::len);
        let table = match self.decoder.decode(&record) {
            Ok(Decoded::Change(change)) => {
                let table = change.table.clone();
                self.metrics
                    .events
                    .get_or_create(&TableOp {
                        table: table.to_string(),
                        op: change.op.code().to_string(),
                    })
                    .inc();
                let soft_delete = self.config.tables.settings(&table).soft_delete;
                let state = self.tables.entry(table.clone()).or_default();
                if soft_delete {
                    state.buffer.keep_deletes();
                }
                if state.primary_key.is_empty() {
                    state.primary_key = change
                        .schema
                        .primary_key_names()
                        .into_iter()
                        .map(str::to_string)
                        .collect();
                }
                state.buffer.push(change, bytes);
                table
            }
            Ok(Decoded::TombstoneAfterDelete(position)) => {
                let table = self.route(&position.topic)?;
                self.metrics
                    .events
                    .get_or_create(&TableOp {
                        table: table.to_string(),
                        op: "tombstone".to_string(),
                    })
                    .inc();
                self.tables
                    .entry(table.clone())
                    .or_default()
                    .buffer
                    .note_position(&position.topic, position.partition, position.offset);
                table
            }
            Err(error) => {
                let table = self.route(record.topic)?;
                self.metrics.error("decode", error.reason.label());
                match self.policy.handle(error, &record).await {
                    Ok(_) => {
                        self.tables
                            .entry(table.clone())
                            .or_default()
                            .buffer
                            .note_position(record.topic, record.partition, record.offset);
                        table
                    }
                    // The caller commits what came before the bad record and stops before it.
                    Err(e) => return Err(Box::new(e).into()),
                }
            }
        };
        let flush = self.config.flush;
        let state = &self.tables[&table];
        if state.buffer.rows() >= flush.max_rows || state.buffer.bytes() as u64 >= flush.max_bytes {
            self.flush_table(&table).await?;
        }
        let buffered: u64 = self.tables.values().map(|s| s.buffer.bytes() as u64).sum();
        if buffered >= flush.max_buffered_bytes {
            // Staging frees the memory; reading waits meanwhile, so buffers never grow past
            // the limit (librdkafka's own prefetch queue is bounded separately).
            self.flush_all().await?;
        }
        Ok(())
    }

    fn route(&self, topic: &str) -> Result<TableName, RuntimeError> {
        self.config
            .tables
            .route(topic)
            .map_err(|e| RuntimeError::Setup(format!("topic {topic}: {e}")))
    }

    async fn flush_due(&mut self) -> Result<(), RuntimeError> {
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

    async fn flush_all(&mut self) -> Result<(), RuntimeError> {
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        for table in tables {
            self.flush_table(&table).await?;
        }
        Ok(())
    }

    async fn flush_table(&mut self, table: &TableName) -> Result<(), RuntimeError> {
        let Some(state) = self.tables.get_mut(table) else {
            return Ok(());
        };
        if state.buffer.is_empty() {
            return Ok(());
        }
        let flushed = state.buffer.take();
        let mut parts = crate::decode::to_batches(&flushed.changes)
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        // A truncate drops every change before it in the window, staged or not.
        if let Some(last) = parts
            .iter()
            .rposition(|p| matches!(p, BatchPart::Truncate { .. }))
            && let BatchPart::Truncate { position, .. } = parts.drain(..=last).next_back().unwrap()
        {
            tracing::info!(
                %table,
                topic = %position.topic,
                partition = position.partition,
                offset = position.offset,
                "the source table was truncated: the next commit replaces all its rows"
            );
            for delta in state.staged.drain(..) {
                self.stager.delete(&delta).await;
            }
            state.truncated_at = Some(position);
        }
        for part in parts {
            if let BatchPart::Rows(rows) = part {
                let delta = self.stager.write(table, &[rows.batch]).await?;
                tracing::debug!(%table, rows = delta.rows, bytes = delta.bytes, location = %delta.location, "staged");
                state.staged.push(delta);
                fault::point("staged");
            }
        }
        state.staged_offsets.merge(&flushed.offsets);
        self.update_buffer_gauges();
        Ok(())
    }

    /// Flushes every buffer and commits every table with staged work. With `force`, tables
    /// waiting for a retry are committed now too, and failures are returned.
    async fn commit_all(&mut self, force: bool) -> Result<(), RuntimeError> {
        self.flush_all().await?;
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        for table in tables {
            let Some(state) = self.tables.get(&table) else {
                continue;
            };
            if state.staged.is_empty() && state.staged_offsets.is_empty() {
                continue;
            }
            if !force && state.retry_at.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            fault::pause("table-commit");
            // A round of slow commits may outlast `max.poll.interval.ms` (or the session): the
            // group then gives the partitions to another member, which re-reads this work from
            // the tables' offsets. This member must not commit it as well.
            if self.consumer.assignment_lost() {
                tracing::warn!(
                    %table,
                    "this member lost its partitions to the group (max.poll.interval.ms or the \
                     session lapsed during the commit round): dropping uncommitted work; the \
                     partitions' next owner re-reads it"
                );
                self.metrics.error("commit", "assignment_lost");
                self.drop_uncommitted().await;
                return Ok(());
            }
            match self.commit_table(&table).await {
                Ok(()) => {}
                Err(RuntimeError::Commit(e)) if e.is_retryable() && !force => {
                    self.metrics.error("commit", "retryable");
                    let state = self.tables.get_mut(&table).expect("table state exists");
                    state.failures += 1;
                    let wait = Duration::from_secs(1 << state.failures.min(6));
                    state.retry_at = Some(Instant::now() + wait);
                    tracing::warn!(%table, error = %e, retry_in = ?wait, "commit failed; will retry");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn commit_table(&mut self, table: &TableName) -> Result<(), RuntimeError> {
        let state = self.tables.get_mut(table).expect("table state exists");
        let mut batches = Vec::new();
        for delta in &state.staged {
            batches.extend(self.stager.read(delta).await?);
        }
        let offsets = state.staged_offsets.clone();
        let truncated_at = state.truncated_at.clone();
        // A truncate with nothing after it still commits, unless there is no table to empty.
        let truncates_a_table = match &truncated_at {
            Some(_) if batches.is_empty() => self.engine.exists(table).await?,
            _ => false,
        };
        if !batches.is_empty() || truncates_a_table {
            let settings = self.config.tables.settings(table);
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
            };
            let started = Instant::now();
            let outcome = self
                .engine
                .commit(
                    &spec,
                    TableChanges {
                        batches,
                        offsets: offsets.clone(),
                        truncated_at,
                    },
                )
                .await?;
            let label = Metrics::table(&outcome.table);
            self.metrics.commits.get_or_create(&label).inc();
            self.metrics
                .rows_committed
                .get_or_create(&label)
                .inc_by(outcome.rows_written);
            self.metrics
                .keys_deleted
                .get_or_create(&label)
                .inc_by(outcome.keys_deleted);
            self.metrics
                .table_indexed
                .get_or_create(&label)
                .set(i64::from(outcome.indexed));
            self.metrics
                .key_index_bytes
                .get_or_create(&label)
                .set(outcome.index_bytes as i64);
            self.metrics
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
                seconds = started.elapsed().as_secs_f64(),
                "committed"
            );
            self.summary.commits += 1;
            self.summary.rows_written += outcome.rows_written;
            let totals = self.committed.entry(table.clone()).or_default();
            totals.rows += outcome.rows_written;
            totals.files += (outcome.data_files + outcome.delete_files) as u64;
            totals.bytes += outcome.bytes_written;
            if outcome.created_table || outcome.schema_changed {
                register_table(&self.engine, &mut self.decoder, table).await?;
            }
        }
        fault::point("table-committed");
        // Only now may Kafka hear that these records are done.
        self.commit_kafka_offsets(&offsets);
        let state = self.tables.get_mut(table).expect("table state exists");
        let staged = std::mem::take(&mut state.staged);
        state.staged_offsets = CommittedOffsets::default();
        state.truncated_at = None;
        state.failures = 0;
        state.retry_at = None;
        for delta in &staged {
            self.stager.delete(delta).await;
        }
        self.update_buffer_gauges();
        Ok(())
    }

    fn update_buffer_gauges(&self) {
        let staged: u64 = self
            .tables
            .values()
            .flat_map(|s| s.staged.iter().map(|d| d.bytes))
            .sum();
        let buffered: usize = self.tables.values().map(|s| s.buffer.bytes()).sum();
        self.metrics.staged_bytes.set(staged as i64);
        self.metrics.buffered_bytes.set(buffered as i64);
    }

    fn commit_kafka_offsets(&self, offsets: &CommittedOffsets) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in &offsets.0 {
            for (partition, next) in partitions {
                if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                    tracing::warn!(%topic, partition, error = %e, "bad offset");
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        // A failure here is harmless: the table holds the offsets, and whatever is re-read
        // after a restart is skipped by the commit engine.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "committing offsets to Kafka failed; the tables hold them");
        }
    }
}

/// Tells the decoder the table's current schema, if the table exists.
async fn register_table(
    engine: &CommitEngine,
    decoder: &mut Decoder,
    table: &TableName,
) -> Result<(), RuntimeError> {
    let ident = engine.ident(table)?;
    let loaded = engine
        .catalog()
        .load_table(&ident)
        .await
        .map_err(|e| RuntimeError::Setup(format!("table {ident}: {e}")))?;
    if let Some(loaded) = loaded {
        decoder
            .register_table(table, loaded.metadata.current_schema())
            .map_err(RuntimeError::Setup)?;
    }
    Ok(())
}

/// How long a blocking call to the brokers (committed offsets, watermarks) may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an assigned partition may take to start fetching before its seek gives up.
const SEEK_TIMEOUT: Duration = Duration::from_secs(30);

/// Flush checks run a few times per interval so a buffer is not held much past its age.
fn tick_of(interval: Duration) -> Duration {
    (interval / 4).max(Duration::from_millis(50))
}

/// A record copied out of librdkafka's buffer, so the consumer can be polled again while the
/// record is handled (and no librdkafka handle outlives the consumer).
struct OwnedRecord {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn detach(m: BorrowedMessage<'_>) -> OwnedRecord {
    let record = KafkaRecord::from_message(&m);
    OwnedRecord {
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key.map(<[u8]>::to_vec),
        value: record.value.map(<[u8]>::to_vec),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

impl OwnedRecord {
    fn record(&self) -> KafkaRecord<'_> {
        KafkaRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect(),
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
