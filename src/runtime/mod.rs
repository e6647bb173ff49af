//! runtime: `floe run`. The consume loop hands Kafka records in batches to a decode thread
//! ([`decoding`]) and puts what comes back, in order, into per-table buffers; flushes stage
//! them as Parquet deltas in tasks of their own ([`window`]); on the commit interval a
//! round commits the frozen window, table by table a few at once, in a task beside the loop
//! ([`round`]); rebalances are handled between records ([`rebalance`]). The loop keeps polling
//! (and so stays in the group) while flushes and commits run. Group offsets are committed to
//! Kafka only after the table commit that holds them.
//!
//! Exactly once: the table is the record of what was applied. On every assignment, before it
//! reads again, the loop reads the offsets each table holds (`floe.offsets.<group>`) and seeks
//! each assigned partition there (what librdkafka fetched before the seek is discarded), so
//! neither an older group offset nor a missing one (expired, or reset to `latest`) decides
//! where reading starts. Partitions a table holds nothing for are sought to the group's
//! committed offset, or to `start_from`. The commit engine still drops every re-read
//! change the table already holds, and group offsets are committed only after the table commit.
//!
//! Rebalances are a protocol, not a callback side effect: the consumer context only forwards
//! them over a channel (and pauses what it was given); the loop takes in every record read
//! before the event from the decode thread, finishes the round in flight, then drops in-flight work when partitions are revoked (it will be re-read by whoever owns
//! them next) before it handles another record.

mod backfill;
mod context;
mod decoding;
pub(crate) mod fault;
mod maintenance;
mod rebalance;
mod round;
mod window;

pub use backfill::{BackfillOptions, BackfillReport, TableReport};

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio::task::JoinHandle;

use crate::commit::{CommitEngine, CommitError, CommitSettings, FileSettings};
use crate::config::{Config, TableName, TopicSelection};
use crate::decode::{DecodeError, Decoded, Decoder, ErrorPolicy, PolicyError};
use crate::stage::{StageError, Stager};
use crate::telemetry::{EventCounters, Metrics};
use context::{RebalanceEvent, RebalanceForwarder};
use decoding::{Decoding, Outcome, OwnedRecord, Ready, detach};
use window::TableState;

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
    #[error(
        "table {table}: changes staged {age:?} ago are still not committed \
         (staging.max_uncommitted_age = {limit:?}); stopping before the staging bucket's \
         lifecycle rule removes them: a restart reads them from Kafka again. Last commit error: {last}"
    )]
    UncommittedTooLong {
        table: TableName,
        age: Duration,
        limit: Duration,
        last: Box<CommitError>,
    },
}

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub records: u64,
    pub commits: u64,
    pub rows_written: u64,
}

pub struct Runtime {
    config: Config,
    consumer: Arc<StreamConsumer<RebalanceForwarder>>,
    events: std::sync::mpsc::Receiver<RebalanceEvent>,
    /// Rebalance events taken from `events` and not yet acted on.
    queued_events: Vec<RebalanceEvent>,
    /// Notified with every rebalance event, so the loop sees them while partitions are paused.
    rebalanced: Arc<tokio::sync::Notify>,
    /// The decoder, on a thread of its own, and the records on their way through it.
    decoding: Decoding,
    policy: ErrorPolicy,
    engine: Arc<CommitEngine>,
    stager: Arc<Stager>,
    /// How long staged changes may wait for their commit before the run stops (S3 staging:
    /// before the bucket's lifecycle rule could remove them).
    max_uncommitted_age: Option<Duration>,
    /// The window: per table, what was read since its last commit.
    tables: HashMap<TableName, TableState>,
    /// Notified when a flush task has written its delta.
    flushed: Arc<tokio::sync::Notify>,
    /// The commit round in flight.
    round: Option<JoinHandle<round::RoundResults>>,
    /// The partitions paused because the window is full (`None`: reading).
    paused: Option<Vec<(String, i32)>>,
    /// Staged bytes the round in flight is trying again (its tables' last commit failed):
    /// they count toward the window's bound until the round lands.
    retrying_bytes: u64,
    summary: RunSummary,
    /// What was committed per table, for the backfill report.
    committed: HashMap<TableName, Committed>,
    metrics: Arc<Metrics>,
    event_counters: EventCounters,
    /// The tables this run writes, for background maintenance.
    written: maintenance::Tables,
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
        let consumer = crate::source::stream_consumer(
            &config.kafka,
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
        let mut max_uncommitted_age = None;
        if let crate::config::StagingConfig::S3(s3) = &config.staging {
            let state = stager
                .ensure_expiration(s3.manage_lifecycle, s3.expire_after_days)
                .await?;
            let mut limit = s3.max_uncommitted_age;
            // A rule of the bucket's own that expires sooner than Floe's would bounds it too.
            if let crate::stage::LifecycleState::Expires(days) = state {
                let half = Duration::from_secs(u64::from(days) * 86_400 / 2);
                if half < limit {
                    tracing::warn!(
                        days,
                        max_uncommitted_age = ?half,
                        "the staging bucket expires objects sooner than staging.expire_after_days; uncommitted changes may wait half of that"
                    );
                    limit = half;
                }
            }
            max_uncommitted_age = Some(limit);
        }
        let policy = ErrorPolicy::new(&config.errors, &config.kafka)?;
        let mut decoder = Decoder::new(&config.decode, &config.tables);
        let written = maintenance::Tables::default();
        // Existing tables tell the decoder their column types (for records without a schema)
        // and field ids; tables of regex-selected topics are registered on their first commit.
        if let TopicSelection::List(topics) = &config.kafka.topics {
            for topic in topics {
                let table = config
                    .tables
                    .route(topic)
                    .map_err(|e| RuntimeError::Setup(format!("topic {topic}: {e}")))?;
                register_table(&engine, &mut decoder, &table).await?;
                if let Ok(mut written) = written.lock() {
                    written.insert(table);
                }
            }
        }
        Ok(Runtime {
            config,
            consumer: Arc::new(consumer),
            events,
            queued_events: Vec::new(),
            rebalanced,
            decoding: Decoding::start(decoder)?,
            policy,
            engine: Arc::new(engine),
            stager: Arc::new(stager),
            max_uncommitted_age,
            tables: HashMap::new(),
            flushed: Arc::new(tokio::sync::Notify::new()),
            round: None,
            paused: None,
            retrying_bytes: 0,
            summary: RunSummary::default(),
            committed: HashMap::new(),
            metrics,
            event_counters: EventCounters::default(),
            written,
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
        let maintenance = maintenance::spawn(
            self.engine.clone(),
            self.written.clone(),
            self.config.maintenance,
            self.metrics.clone(),
        )
        .map_err(|e| RuntimeError::Setup(format!("starting background maintenance: {e}")))?;
        let mut flush_tick = tokio::time::interval(tick_of(self.config.flush.interval));
        let mut commit_tick = tokio::time::interval(self.config.flush.commit_interval);
        commit_tick.tick().await;
        tokio::pin!(shutdown);
        let consumer = self.consumer.clone();
        let rebalanced = self.rebalanced.clone();
        let flushed = self.flushed.clone();
        // A commit tick that came while a round was in flight: the next round starts when it
        // ends.
        let mut round_due = false;
        let outcome = loop {
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                results = wait_round(&mut self.round), if self.round.is_some() => {
                    self.round = None;
                    match results {
                        Ok(results) => self.round_ended(results, &mut round_due).await,
                        Err(e) => Err(round::round_failed(e)),
                    }
                }
                _ = rebalanced.notified() => self.handle_rebalances().await,
                outcomes = self.decoding.next() => match outcomes {
                    Ok(outcomes) => self.apply(outcomes).await,
                    Err(e) => Err(e),
                },
                _ = commit_tick.tick() => {
                    if self.round.is_some() {
                        round_due = true;
                        Ok(())
                    } else {
                        self.start_round(false).await
                    }
                }
                _ = flushed.notified() => self.settle_flushes(false).await,
                // A flush task notifies just before it ends: what that wake-up found
                // unfinished is taken in here.
                _ = flush_tick.tick() => match self.settle_flushes(false).await {
                    Ok(()) => self.flush_due().await,
                    failed => failed,
                },
                message = consumer.recv(), if !self.decoding.busy() => self.on_message(message).await,
            };
            let step = match step {
                Ok(()) => self.after_step().await,
                failed => failed,
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        self.metrics.set_ready(false);
        drop(maintenance);
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
                let applied_and_committed = async {
                    self.take_in_decoded().await?;
                    self.commit_all().await
                };
                match tokio::time::timeout(drain, applied_and_committed).await {
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
                // Nothing after the failure is acknowledged; what was committed stays. A round
                // in flight is stopped wherever it is: a table commit lands whole or not at
                // all, and what it held is re-read and skipped after a restart.
                if let Some(round) = self.round.take() {
                    round.abort();
                }
                self.consumer.unsubscribe();
                Err(e)
            }
        }
    }

    /// Finishes the round in flight, then commits everything read, tables waiting for a retry
    /// included; any failure is returned.
    async fn commit_all(&mut self) -> Result<(), RuntimeError> {
        self.finish_round_in_flight(false).await?;
        self.start_round(true).await?;
        self.finish_round_in_flight(true).await
    }

    /// A round ended: take in its results, and start the next one if a tick came meanwhile.
    async fn round_ended(
        &mut self,
        results: round::RoundResults,
        round_due: &mut bool,
    ) -> Result<(), RuntimeError> {
        self.take_results(results, false).await?;
        if std::mem::take(round_due) {
            self.start_round(false).await?;
        }
        Ok(())
    }

    /// After every step of the loop: act on rebalance events the last poll delivered, commit
    /// a full window early, and pause or resume reading for the window's bound.
    async fn after_step(&mut self) -> Result<(), RuntimeError> {
        self.handle_rebalances().await?;
        if self.round.is_none() && self.window_full() {
            let now = std::time::Instant::now();
            if self.tables.values().any(|s| s.has_work() && s.due(now)) {
                // The window is full: commit it now rather than at the interval.
                self.start_round(false).await?;
            }
        }
        self.hold_window()
    }

    /// Whether the staged window waits on commits: a round in flight, or tables backing off
    /// after failed commits.
    fn committing(&self) -> bool {
        self.round.is_some() || self.tables.values().any(|s| s.retry_at.is_some())
    }

    /// A poll returned: takes the records librdkafka already holds after it (up to a batch)
    /// and sends them to the decode thread. Rebalance events delivered by a poll are acted on
    /// before its record, once every record read before them has been taken in.
    async fn on_message(
        &mut self,
        message: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), RuntimeError> {
        self.handle_rebalances().await?;
        let consumer = self.consumer.clone();
        let mut next = message.map(detach);
        loop {
            let first = match next {
                Ok(record) => record,
                Err(e) => return self.consumer_error(e).await,
            };
            let (events, queued) = (&self.events, &mut self.queued_events);
            let (batch, ready) = decoding::take_ready(
                &consumer,
                first,
                |_| true,
                || {
                    queued.extend(events.try_iter());
                    !queued.is_empty()
                },
            );
            self.decoding.submit(batch)?;
            match ready {
                Ready::Drained | Ready::Full => return Ok(()),
                Ready::Failed(e) => return self.consumer_error(e).await,
                Ready::Rebalanced(record) => {
                    self.handle_rebalances().await?;
                    next = record;
                }
            }
        }
    }

    async fn consumer_error(
        &mut self,
        error: rdkafka::error::KafkaError,
    ) -> Result<(), RuntimeError> {
        self.metrics.error("consume", "kafka");
        tracing::warn!(%error, "kafka consumer error; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    /// Takes in decoded records in order. A record the error policy stops at: what came
    /// before it is committed, and the run stops before it.
    async fn apply(&mut self, outcomes: Vec<Outcome>) -> Result<(), RuntimeError> {
        for Outcome { record, decoded } in outcomes {
            if let Err(e) = self.handle_decoded(&record, decoded).await {
                if matches!(e, RuntimeError::Policy(_))
                    && let Err(commit) = self.commit_all().await
                {
                    tracing::error!(error = %commit, "commit before stopping failed");
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Waits for every batch sent to the decode thread and takes it in.
    async fn take_in_decoded(&mut self) -> Result<(), RuntimeError> {
        while self.decoding.in_flight() {
            let outcomes = self.decoding.next().await?;
            self.apply(outcomes).await?;
        }
        Ok(())
    }

    async fn handle_decoded(
        &mut self,
        message: &OwnedRecord,
        decoded: Result<Decoded, DecodeError>,
    ) -> Result<(), RuntimeError> {
        self.summary.records += 1;
        let record = message.record();
        let table = match decoded {
            Ok(Decoded::Change(change)) => {
                let table = change.table.clone();
                self.event_counters
                    .inc(&self.metrics, &table, change.op.code());
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
                state.buffer.push(change);
                table
            }
            Ok(Decoded::TombstoneAfterDelete(position)) => {
                let table = self.route(&position.topic)?;
                self.event_counters.inc(&self.metrics, &table, "tombstone");
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
        // Staging frees the memory; librdkafka's own prefetch queue is bounded separately.
        self.bound_buffers().await
    }

    fn route(&self, topic: &str) -> Result<TableName, RuntimeError> {
        self.config
            .tables
            .route(topic)
            .map_err(|e| RuntimeError::Setup(format!("topic {topic}: {e}")))
    }
}

/// The round in flight's results (only polled while there is one).
async fn wait_round(
    round: &mut Option<JoinHandle<round::RoundResults>>,
) -> Result<round::RoundResults, tokio::task::JoinError> {
    match round {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Tells the decoder the table's current schema, if the table exists.
async fn register_table(
    engine: &CommitEngine,
    decoder: &mut Decoder,
    table: &TableName,
) -> Result<(), RuntimeError> {
    if let Some(schema) = round::current_schema(engine, table).await? {
        decoder
            .register_table(table, &schema)
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
