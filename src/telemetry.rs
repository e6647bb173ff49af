//! telemetry: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.
//!
//! Metric names follow `floe_<noun>_<unit>_total` / `_seconds`, with bounded label sets
//! (`table`, `op`, `stage`, `error_type`, `topic`, `partition`). Retried work is never counted
//! as dropped. Nothing here may hold a lock across an await or block the pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableOp {
    pub table: String,
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub stage: String,
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: String,
}

/// `floe_events` counters by table and op, found again without building a label per event.
#[derive(Default)]
pub struct EventCounters(
    std::collections::HashMap<
        crate::config::TableName,
        std::collections::HashMap<&'static str, Counter>,
    >,
);

impl EventCounters {
    pub fn inc(&mut self, metrics: &Metrics, table: &crate::config::TableName, op: &'static str) {
        if let Some(counter) = self.0.get(table).and_then(|ops| ops.get(op)) {
            counter.inc();
            return;
        }
        let counter = metrics
            .events
            .get_or_create(&TableOp {
                table: table.to_string(),
                op: op.to_string(),
            })
            .clone();
        counter.inc();
        self.0.entry(table.clone()).or_default().insert(op, counter);
    }
}

type HistogramFamily = Family<TableLabel, Histogram, fn() -> Histogram>;

fn commit_buckets() -> Histogram {
    // 10ms .. ~40s
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Every metric Floe exports.
pub struct Metrics {
    registry: Registry,
    pub events: Family<TableOp, Counter>,
    pub rows_committed: Family<TableLabel, Counter>,
    pub keys_deleted: Family<TableLabel, Counter>,
    pub table_indexed: Family<TableLabel, Gauge>,
    pub key_index_bytes: Family<TableLabel, Gauge>,
    pub commits: Family<TableLabel, Counter>,
    pub commit_duration: HistogramFamily,
    pub errors: Family<ErrorLabel, Counter>,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub staged_bytes: Gauge,
    pub buffered_bytes: Gauge,
    pub paused: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let events = Family::<TableOp, Counter>::default();
        registry.register(
            "floe_events",
            "Change events consumed, by destination table and op (c, u, d, r, t, tombstone)",
            events.clone(),
        );
        let rows_committed = Family::<TableLabel, Counter>::default();
        registry.register(
            "floe_rows_committed",
            "Row images written into tables",
            rows_committed.clone(),
        );
        let keys_deleted = Family::<TableLabel, Counter>::default();
        registry.register(
            "floe_keys_deleted",
            "Old rows removed by position deletes, or primary keys written to equality-delete files",
            keys_deleted.clone(),
        );
        let table_indexed = Family::<TableLabel, Gauge>::default();
        registry.register(
            "floe_table_indexed",
            "1 when the table's last commit removed old rows by position through its key index, 0 when it wrote equality deletes",
            table_indexed.clone(),
        );
        let key_index_bytes = Family::<TableLabel, Gauge>::default();
        registry.register(
            "floe_key_index_bytes",
            "Approximate memory held by the table's key index",
            key_index_bytes.clone(),
        );
        let commits = Family::<TableLabel, Counter>::default();
        registry.register("floe_commits", "Snapshots committed", commits.clone());
        let commit_duration: HistogramFamily = Family::new_with_constructor(commit_buckets);
        registry.register(
            "floe_commit_duration_seconds",
            "Time to commit one table's window, from reading staged deltas to the catalog swap",
            commit_duration.clone(),
        );
        let errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "floe_errors",
            "Errors by pipeline stage and type (decode errors count once per record, whatever the policy)",
            errors.clone(),
        );
        let consumer_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "floe_consumer_lag_messages",
            "Messages between the consumer's position and the partition's end",
            consumer_lag.clone(),
        );
        let staged_bytes = Gauge::default();
        registry.register(
            "floe_staged_bytes",
            "Bytes of staged delta files waiting for their commit",
            staged_bytes.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "floe_buffered_bytes",
            "Approximate bytes of changes buffered in memory, with the flushes being written",
            buffered_bytes.clone(),
        );
        let paused = Gauge::default();
        registry.register(
            "floe_reading_paused",
            "Whether reading is paused (1) because the staged window is full and its commit is in flight or failing",
            paused.clone(),
        );
        Metrics {
            registry,
            events,
            rows_committed,
            keys_deleted,
            table_indexed,
            key_index_bytes,
            commits,
            commit_duration,
            errors,
            consumer_lag,
            staged_bytes,
            buffered_bytes,
            paused,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn table(table: &impl ToString) -> TableLabel {
        TableLabel {
            table: table.to_string(),
        }
    }

    pub fn error(&self, stage: &str, error_type: &str) {
        self.errors
            .get_or_create(&ErrorLabel {
                stage: stage.into(),
                error_type: error_type.into(),
            })
            .inc();
    }

    /// Ready: partitions are assigned and the pipeline runs.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Serves the endpoints on `listen` until the returned task is aborted.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn ready_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_by_convention() {
        let m = Metrics::default();
        m.events
            .get_or_create(&TableOp {
                table: "inv.customers".into(),
                op: "c".into(),
            })
            .inc_by(3);
        m.commit_duration
            .get_or_create(&Metrics::table(&"inv.customers"))
            .observe(0.2);
        m.error("decode", "malformed_json");
        let text = m.encode();
        assert!(
            text.contains(r#"floe_events_total{table="inv.customers",op="c"} 3"#),
            "{text}"
        );
        assert!(
            text.contains("floe_commit_duration_seconds_count"),
            "{text}"
        );
        assert!(
            text.contains(r#"floe_errors_total{stage="decode",error_type="malformed_json"} 1"#),
            "{text}"
        );
    }
}
