//! The consumer context: forwards rebalance events to the main loop. librdkafka calls it from
//! inside a poll, so it must not block, spawn or panic.
//!
//! It does not pause newly assigned partitions. A pause (or resume) sent while librdkafka is
//! still starting a partition's fetcher can make librdkafka drop that start (the pause takes a
//! newer op version, and the start is then discarded as outdated), and the partition is never
//! fetched, without an error. The loop positions every assigned partition with a seek first
//! (a seek that succeeds means the fetcher has started); records fetched before the seek are
//! discarded by librdkafka as outdated, and the loop does not poll between the rebalance and
//! the seeks.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};
use tokio::sync::Notify;

use crate::telemetry::{Metrics, PartitionLabel};

#[derive(Debug)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
    Error(String),
}

pub struct RebalanceForwarder {
    tx: Mutex<Sender<RebalanceEvent>>,
    /// Wakes the main loop, which may be waiting on paused partitions that deliver nothing.
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl RebalanceForwarder {
    pub fn new(tx: Sender<RebalanceEvent>, wake: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        RebalanceForwarder {
            tx: Mutex::new(tx),
            wake,
            metrics,
        }
    }

    fn send(&self, event: RebalanceEvent) {
        // The receiver lives as long as the runtime; a send after it is gone has no one to
        // tell, so it is dropped.
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(event);
        }
        self.wake.notify_one();
    }
}

impl ClientContext for RebalanceForwarder {
    /// librdkafka's periodic statistics: consumer lag per partition (only setting gauges).
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&PartitionLabel {
                            topic: topic.clone(),
                            partition: partition.to_string(),
                        })
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceForwarder {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect()
        };
        self.send(match rebalance {
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(list(tpl)),
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(list(tpl)),
            Rebalance::Error(e) => RebalanceEvent::Error(e.to_string()),
        });
    }
}
