//! `floe backfill`: a bounded run. It records each partition's end offset at start, reads up to
//! it (from the beginning, or from what the tables already hold), commits, and reports per
//! table. With drop-and-recreate the destination tables are deleted first and created anew
//! from the records' schema on their first commit; snapshot reads into them are appended
//! without delete files.
//!
//! A table that fails stops alone: its partitions are paused and its uncommitted work dropped,
//! while the other tables go on and are committed. Everything committed is recorded in the
//! tables' offsets, so a re-run (without drop-and-recreate) continues where a killed one
//! stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::decoding::{Decoding, Outcome, OwnedRecord, Ready, detach, take_ready};
use super::{Runtime, RuntimeError};
use crate::catalog::CatalogError;
use crate::config::{TableName, TopicSelection};
use crate::decode::Decoder;
use crate::retry::Backoff;

/// Retries of a retryable commit failure at the end of a backfill (2, 4, 8, 16 s and jitter).
const FINAL_COMMIT_RETRIES: Backoff =
    Backoff::new(Duration::from_secs(2), Duration::from_secs(32), 4);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct BackfillOptions {
    /// Delete each destination table before loading it.
    pub drop_and_recreate: bool,
    /// Only these destination tables; empty: every table the topics route to.
    pub tables: Vec<TableName>,
    /// Draw progress bars (on a terminal); otherwise progress is logged.
    pub progress_bars: bool,
}

/// One table's outcome.
#[derive(Debug, Clone)]
pub struct TableReport {
    pub table: TableName,
    /// Records read from its topics in this run.
    pub records: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub duration: Duration,
    /// Why the table failed; `None` when everything up to the end offsets is committed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct BackfillReport {
    pub tables: Vec<TableReport>,
}

impl BackfillReport {
    pub fn failed(&self) -> usize {
        self.tables.iter().filter(|t| t.error.is_some()).count()
    }

    /// A plain-text table, one line per destination table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<40} {:>12} {:>12} {:>7} {:>12} {:>9}  status\n",
            "table", "records", "rows", "files", "bytes", "seconds"
        );
        for t in &self.tables {
            out.push_str(&format!(
                "{:<40} {:>12} {:>12} {:>7} {:>12} {:>9.1}  {}\n",
                t.table.to_string(),
                t.records,
                t.rows,
                t.files,
                t.bytes,
                t.duration.as_secs_f64(),
                t.error
                    .as_deref()
                    .map_or("ok".to_string(), |e| format!("FAILED: {e}"))
            ));
        }
        out
    }
}

/// A partition to read: from `next` up to (not including) `end`.
struct Bound {
    table: TableName,
    next: i64,
    end: i64,
}

struct Progress {
    bars: HashMap<TableName, ProgressBar>,
    _multi: Option<MultiProgress>,
    logged: Instant,
}

impl Progress {
    fn new(show_bars: bool, totals: &BTreeMap<TableName, u64>) -> Self {
        let mut bars = HashMap::new();
        let multi = show_bars.then(MultiProgress::new);
        if let Some(multi) = &multi {
            let style = ProgressStyle::with_template(
                "{prefix:<32} [{bar:30}] {pos}/{len} records {per_sec} eta {eta}",
            )
            .expect("a valid progress template")
            .progress_chars("=> ");
            for (table, total) in totals {
                let bar = multi.add(ProgressBar::new(*total));
                bar.set_style(style.clone());
                bar.set_prefix(table.to_string());
                bars.insert(table.clone(), bar);
            }
        }
        Progress {
            bars,
            _multi: multi,
            logged: Instant::now(),
        }
    }

    fn advance(&self, table: &TableName, by: u64) {
        if let Some(bar) = self.bars.get(table) {
            bar.inc(by);
        }
    }

    fn finish(&self, table: &TableName, message: &str) {
        if let Some(bar) = self.bars.get(table) {
            bar.abandon_with_message(message.to_string());
        }
    }

    fn log_if_due(&mut self, done: &BTreeMap<TableName, (u64, u64)>) {
        if !self.bars.is_empty() || self.logged.elapsed() < LOG_EVERY {
            return;
        }
        self.logged = Instant::now();
        for (table, (read, total)) in done {
            tracing::info!(%table, read, total, "backfill progress");
        }
    }
}

impl Runtime {
    /// Runs the backfill. `confirm` is asked (with the tables) before anything is dropped and
    /// may refuse. `shutdown` interrupts: what is staged is committed, and the result is
    /// [`RuntimeError::Interrupted`].
    pub async fn backfill(
        mut self,
        options: BackfillOptions,
        confirm: impl FnOnce(&[TableName]) -> bool,
        shutdown: impl Future<Output = ()>,
    ) -> Result<BackfillReport, RuntimeError> {
        let started = Instant::now();
        let topics = self.topics()?;
        let mut table_topics: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
        for topic in topics {
            let table = self.route(&topic)?;
            if options.tables.is_empty() || options.tables.contains(&table) {
                table_topics.entry(table).or_default().push(topic);
            }
        }
        if let Some(unknown) = options
            .tables
            .iter()
            .find(|t| !table_topics.contains_key(*t))
        {
            return Err(RuntimeError::Setup(format!(
                "--tables {unknown}: no configured topic routes to this table"
            )));
        }
        if table_topics.is_empty() {
            return Err(RuntimeError::Setup(
                "no topic to backfill: the configured topics do not exist".into(),
            ));
        }
        let tables: Vec<TableName> = table_topics.keys().cloned().collect();

        if options.drop_and_recreate {
            if !confirm(&tables) {
                return Err(RuntimeError::Setup(
                    "not confirmed: no table was dropped".into(),
                ));
            }
            for table in &tables {
                self.drop_table(table).await?;
            }
            // The decoder knew the dropped tables' schemas; the new tables take the records'.
            self.decoding =
                Decoding::start(Decoder::new(&self.config.decode, &self.config.tables))?;
        }

        // The end of each partition now; records produced later are left for `floe run`.
        let mut bounds: HashMap<(String, i32), Bound> = HashMap::new();
        let mut totals: BTreeMap<TableName, u64> = BTreeMap::new();
        for (table, topics) in &table_topics {
            let held = if options.drop_and_recreate {
                Default::default()
            } else {
                self.engine.committed_offsets(table).await?
            };
            for topic in topics {
                for partition in self.partitions(topic)? {
                    let (low, high) =
                        self.consumer
                            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
                    let next = held.get(topic, partition).unwrap_or(low).max(low);
                    *totals.entry(table.clone()).or_default() += (high - next).max(0) as u64;
                    bounds.insert(
                        (topic.clone(), partition),
                        Bound {
                            table: table.clone(),
                            next,
                            end: high,
                        },
                    );
                }
            }
        }
        let mut assignment = TopicPartitionList::new();
        for ((topic, partition), b) in &bounds {
            if b.next < b.end {
                assignment.add_partition_offset(topic, *partition, Offset::Offset(b.next))?;
            }
        }
        tracing::info!(
            tables = tables.len(),
            partitions = bounds.len(),
            records = totals.values().sum::<u64>(),
            drop_and_recreate = options.drop_and_recreate,
            "backfill started"
        );
        self.consumer.assign(&assignment)?;

        let mut progress = Progress::new(options.progress_bars, &totals);
        let mut read: BTreeMap<TableName, (u64, u64)> =
            totals.iter().map(|(t, n)| (t.clone(), (0, *n))).collect();
        let mut failed: HashMap<TableName, String> = HashMap::new();
        let mut flush_tick = tokio::time::interval(super::tick_of(self.config.flush.interval));
        let mut commit_tick = tokio::time::interval(self.config.flush.commit_interval);
        commit_tick.tick().await;
        tokio::pin!(shutdown);
        let consumer = self.consumer.clone();
        let mut interrupted = false;
        while bounds.values().any(|b| b.next < b.end) {
            tokio::select! {
                biased;
                _ = &mut shutdown => { interrupted = true; break }
                _ = commit_tick.tick() => {
                    self.commit_each(false, &mut failed).await;
                    self.stop_failed(&failed, &mut bounds)?;
                }
                _ = flush_tick.tick() => {
                    self.catch_up_positions(&mut bounds)?;
                    progress.log_if_due(&read);
                }
                outcomes = self.decoding.next() => {
                    self.apply_backfill(outcomes?, &mut failed, &mut bounds).await?;
                    self.settle_written(&mut failed).await;
                    self.stop_failed(&failed, &mut bounds)?;
                    if self.window_full() {
                        // Commit the full window now rather than at the interval. If that
                        // fails, reading waits (below) for the next round at the interval.
                        self.commit_each(false, &mut failed).await;
                        self.stop_failed(&failed, &mut bounds)?;
                    }
                }
                message = consumer.recv(), if !self.decoding.busy() && !self.window_full() => {
                    let first = match message {
                        Ok(m) => detach(m),
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consumer error; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    };
                    // Only what lies between where each partition starts and its end offset,
                    // for tables that have not failed.
                    let keep = |m: &OwnedRecord| {
                        let Some(b) = bounds.get_mut(&(m.topic.clone(), m.partition)) else {
                            return false;
                        };
                        if m.offset >= b.end || m.offset < b.next || failed.contains_key(&b.table) {
                            return false;
                        }
                        let advanced = (m.offset + 1 - b.next) as u64;
                        b.next = m.offset + 1;
                        if let Some(entry) = read.get_mut(&b.table) {
                            entry.0 += advanced;
                        }
                        progress.advance(&b.table, advanced);
                        true
                    };
                    // Partitions are assigned, never rebalanced.
                    let (batch, ready) = take_ready(&consumer, first, keep, || false);
                    self.decoding.submit(batch)?;
                    if let Ready::Failed(e) = ready {
                        tracing::warn!(error = %e, "kafka consumer error; retrying");
                    }
                }
            }
        }
        while self.decoding.in_flight() {
            let outcomes = self.decoding.next().await?;
            self.apply_backfill(outcomes, &mut failed, &mut bounds)
                .await?;
        }
        self.commit_each(true, &mut failed).await;
        self.consumer.unassign()?;

        let mut report = BackfillReport::default();
        for table in &tables {
            let committed = self.committed.get(table).copied().unwrap_or_default();
            let error = failed.get(table).cloned();
            progress.finish(table, if error.is_some() { "failed" } else { "done" });
            report.tables.push(TableReport {
                table: table.clone(),
                records: read.get(table).map_or(0, |r| r.0),
                rows: committed.rows,
                files: committed.files,
                bytes: committed.bytes,
                duration: started.elapsed(),
                error,
            });
        }
        if interrupted {
            return Err(RuntimeError::Interrupted);
        }
        Ok(report)
    }

    /// Moves written flushes into their tables' windows (those in flight stay there); a table
    /// whose flush failed fails, as at commit.
    async fn settle_written(&mut self, failed: &mut HashMap<TableName, String>) {
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        for table in tables {
            let Some(state) = self.tables.get_mut(&table) else {
                continue;
            };
            if let Err(e) = super::window::settle(state, false).await {
                tracing::error!(%table, error = %e, "backfill of this table failed");
                self.fail(&table, e.to_string(), failed).await;
            }
        }
        self.update_buffer_gauges();
    }

    /// The topics to read: the configured list, or those matching the regex now.
    fn topics(&self) -> Result<Vec<String>, RuntimeError> {
        match &self.config.kafka.topics {
            TopicSelection::List(topics) => Ok(topics.clone()),
            TopicSelection::Regex(re) => {
                let metadata = self.consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
                let mut topics: Vec<String> = metadata
                    .topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|n| re.is_match(n))
                    .collect();
                topics.sort();
                Ok(topics)
            }
        }
    }

    fn partitions(&self, topic: &str) -> Result<Vec<i32>, RuntimeError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| RuntimeError::Setup(format!("topic {topic}: not in the metadata")))?;
        if let Some(e) = t.error() {
            return Err(RuntimeError::Setup(format!(
                "topic {topic}: {}",
                rdkafka::error::RDKafkaErrorCode::from(e)
            )));
        }
        Ok(t.partitions().iter().map(|p| p.id()).collect())
    }

    async fn drop_table(&self, table: &TableName) -> Result<(), RuntimeError> {
        let ident = self.engine.ident(table)?;
        match self.engine.catalog().drop_table(&ident).await {
            Ok(()) => {
                tracing::warn!(%table, "dropped the table; it is created anew on its first commit");
                Ok(())
            }
            Err(CatalogError::NoSuchTable { .. }) => {
                tracing::info!(%table, "table does not exist; nothing to drop");
                Ok(())
            }
            Err(e) => Err(RuntimeError::Setup(format!("dropping {table}: {e}"))),
        }
    }

    /// Commits every table with staged work; a table that fails is recorded in `failed` and
    /// its work dropped. Retryable failures wait for the next round, or, at the end
    /// (`last`), are retried here with backoff.
    async fn commit_each(&mut self, last: bool, failed: &mut HashMap<TableName, String>) {
        if let Err(e) = self.flush_all().await {
            // A staging failure is not one table's: every table with a buffer fails.
            let tables: Vec<TableName> = self
                .tables
                .iter()
                .filter(|(_, s)| !s.buffer.is_empty())
                .map(|(t, _)| t.clone())
                .collect();
            for table in tables {
                self.fail(&table, e.to_string(), failed).await;
            }
        }
        let tables: Vec<TableName> = self.tables.keys().cloned().collect();
        for table in tables {
            let state = &self.tables[&table];
            if !state.has_work() && state.flushing.is_empty() {
                continue;
            }
            let mut waits = FINAL_COMMIT_RETRIES.delays();
            loop {
                match self.commit_one(&table).await {
                    Ok(()) => break,
                    Err(RuntimeError::Commit(e)) if e.is_retryable() => {
                        self.metrics.error("commit", "retryable");
                        if !last {
                            tracing::warn!(%table, error = %e, "commit failed; will retry");
                            break;
                        }
                        let Some(wait) = waits.next() else {
                            self.fail(&table, e.to_string(), failed).await;
                            break;
                        };
                        tracing::warn!(%table, error = %e, retry_in = ?wait, "commit failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        tracing::error!(%table, error = %e, "backfill of this table failed");
                        self.fail(&table, e.to_string(), failed).await;
                        break;
                    }
                }
            }
        }
    }

    /// Takes in decoded records in order; a table whose record fails stops alone.
    async fn apply_backfill(
        &mut self,
        outcomes: Vec<Outcome>,
        failed: &mut HashMap<TableName, String>,
        bounds: &mut HashMap<(String, i32), Bound>,
    ) -> Result<(), RuntimeError> {
        for Outcome { record, decoded } in outcomes {
            let Some(table) = bounds
                .get(&(record.topic.clone(), record.partition))
                .map(|b| b.table.clone())
            else {
                continue;
            };
            if failed.contains_key(&table) {
                continue;
            }
            if let Err(e) = self.handle_decoded(&record, decoded).await {
                tracing::error!(%table, error = %e, "backfill of this table failed");
                self.fail(&table, e.to_string(), failed).await;
                self.stop_failed(failed, bounds)?;
            }
        }
        Ok(())
    }

    /// Records the failure and drops the table's uncommitted work; what it committed stays.
    async fn fail(
        &mut self,
        table: &TableName,
        error: String,
        failed: &mut HashMap<TableName, String>,
    ) {
        failed.entry(table.clone()).or_insert(error);
        if let Some(state) = self.tables.remove(table) {
            state.discard(&self.stager).await;
        }
    }

    /// Stops reading the partitions of failed tables.
    fn stop_failed(
        &self,
        failed: &HashMap<TableName, String>,
        bounds: &mut HashMap<(String, i32), Bound>,
    ) -> Result<(), RuntimeError> {
        let mut pause = TopicPartitionList::new();
        for ((topic, partition), b) in bounds.iter_mut() {
            if failed.contains_key(&b.table) && b.next < b.end {
                b.end = b.next;
                pause.add_partition(topic, *partition);
            }
        }
        if pause.count() > 0 {
            self.consumer.pause(&pause)?;
        }
        Ok(())
    }

    /// A partition may end in offsets that hold no record (transaction markers, compacted
    /// records): the consumer's position tells when it is past them.
    fn catch_up_positions(
        &self,
        bounds: &mut HashMap<(String, i32), Bound>,
    ) -> Result<(), RuntimeError> {
        let waiting: HashSet<(String, i32)> = bounds
            .iter()
            .filter(|(_, b)| b.next < b.end)
            .map(|(k, _)| k.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let positions = self.consumer.position()?;
        for e in positions.elements() {
            let key = (e.topic().to_string(), e.partition());
            if !waiting.contains(&key) {
                continue;
            }
            if let (Offset::Offset(p), Some(b)) = (e.offset(), bounds.get_mut(&key))
                && p >= b.end
            {
                // Every record before the position was handed to this loop and handled.
                b.next = b.end;
            }
        }
        Ok(())
    }
}
