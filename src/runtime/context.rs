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
//!
//! It also watches librdkafka's statistics for an assigned partition whose fetcher is not
//! running ([`FetchWatch`]): that is a partition Floe waits on forever without an error, so it
//! is logged and counted.

use std::collections::HashMap;
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
    watch: Mutex<FetchWatch>,
}

impl RebalanceForwarder {
    pub fn new(tx: Sender<RebalanceEvent>, wake: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        RebalanceForwarder {
            tx: Mutex::new(tx),
            wake,
            metrics,
            watch: Mutex::new(FetchWatch::default()),
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
        let Ok(mut watch) = self.watch.lock() else {
            return;
        };
        for (topic, partition, state, seconds) in watch.observe(&statistics) {
            self.metrics.error("consume", "partition_not_fetched");
            tracing::warn!(
                %topic,
                partition,
                fetch_state = %state,
                seconds,
                "librdkafka is not fetching an assigned partition; its records are not read \
                 (restarting floe run starts it again, and loses nothing)"
            );
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
        let event = match rebalance {
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(list(tpl)),
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(list(tpl)),
            Rebalance::Error(e) => RebalanceEvent::Error(e.to_string()),
        };
        if let Ok(mut watch) = self.watch.lock() {
            match &event {
                RebalanceEvent::Assigned(partitions) => watch.assigned(partitions),
                RebalanceEvent::Revoked(partitions) => watch.revoked(partitions),
                RebalanceEvent::Error(_) => {}
            }
        }
        self.send(event);
    }
}

/// Assigned partitions whose fetcher librdkafka has not started, or has stopped, in two
/// statistics reports in a row (right after an assignment a partition is briefly not started
/// while the group's offset is looked up; a paused partition's fetcher stays active).
#[derive(Default)]
pub struct FetchWatch {
    /// Assigned partitions, and for those seen not fetching: the time of the first such report
    /// (seconds) and how many reports in a row.
    assigned: HashMap<(String, i32), Option<(i64, u32)>>,
}

/// Fetch states in which librdkafka does not fetch and will not start by itself.
const NOT_FETCHING: [&str; 3] = ["none", "stopping", "stopped"];

/// How often a partition still not fetched is reported again, in statistics reports.
const REPEAT_EVERY: u32 = 20;

impl FetchWatch {
    pub fn assigned(&mut self, partitions: &[(String, i32)]) {
        for p in partitions {
            self.assigned.insert(p.clone(), None);
        }
    }

    pub fn revoked(&mut self, partitions: &[(String, i32)]) {
        for p in partitions {
            self.assigned.remove(p);
        }
    }

    /// Takes in a statistics report; returns each assigned partition not fetching for a
    /// second report in a row (and every [`REPEAT_EVERY`] reports after), with its fetch
    /// state and since how many seconds.
    pub fn observe(&mut self, statistics: &Statistics) -> Vec<(String, i32, String, i64)> {
        let now = statistics.time;
        let mut stalled = Vec::new();
        for ((topic, partition), seen) in &mut self.assigned {
            let state = statistics
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(partition))
                .map(|p| p.fetch_state.as_str());
            match state {
                Some(state) if NOT_FETCHING.contains(&state) => {
                    let (first, reports) = seen.get_or_insert((now, 0));
                    *reports += 1;
                    if *reports >= 2 && (*reports - 2) % REPEAT_EVERY == 0 {
                        stalled.push((topic.clone(), *partition, state.to_string(), now - *first));
                    }
                }
                _ => *seen = None,
            }
        }
        stalled.sort();
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statistics report with the fields librdkafka writes, for partitions of topic `t`.
    fn report(time: i64, states: &[(i32, &str)]) -> Statistics {
        let partitions: Vec<String> = states
            .iter()
            .map(|(p, state)| format!(r#""{p}": {}"#, partition(*p, state)))
            .collect();
        let json = format!(
            r#"{{"name": "rdkafka#consumer-1", "client_id": "rdkafka", "type": "consumer",
            "ts": {ts}, "time": {time}, "age": 0, "replyq": 0, "msg_cnt": 0, "msg_size": 0,
            "msg_max": 0, "msg_size_max": 0, "simple_cnt": 0, "metadata_cache_cnt": 0,
            "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0, "txmsg_bytes": 0,
            "rxmsgs": 0, "rxmsg_bytes": 0, "brokers": {{}},
            "topics": {{"t": {{"topic": "t", "age": 0, "metadata_age": 0,
                "batchsize": {window}, "batchcnt": {window},
                "partitions": {{{partitions}}}}}}}}}"#,
            ts = time * 1_000_000,
            window = r#"{"min": 0, "max": 0, "avg": 0, "sum": 0, "stddev": 0, "p50": 0,
                "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0,
                "hdrsize": 0, "cnt": 0}"#,
            partitions = partitions.join(", "),
        );
        serde_json::from_str(&json).expect("a statistics report")
    }

    fn partition(p: i32, state: &str) -> String {
        format!(
            r#"{{"partition": {p}, "broker": 1, "leader": 1, "desired": false,
            "unknown": false, "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0,
            "xmit_msgq_bytes": 0, "fetchq_cnt": 0, "fetchq_size": 0,
            "fetch_state": "{state}", "query_offset": -1, "next_offset": 0,
            "app_offset": -1001, "stored_offset": -1001, "stored_leader_epoch": -1,
            "commited_offset": -1001, "committed_offset": -1001,
            "committed_leader_epoch": -1, "eof_offset": -1001, "lo_offset": -1,
            "hi_offset": -1, "ls_offset": -1, "consumer_lag": -1, "consumer_lag_stored": -1,
            "leader_epoch": -1, "txmsgs": 0, "txbytes": 0, "rxmsgs": 0, "rxbytes": 0,
            "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0, "next_ack_seq": 0,
            "next_err_seq": 0, "acked_msgid": 0}}"#
        )
    }

    #[test]
    fn an_assigned_partition_not_fetching_in_two_reports_is_reported_then_every_twentieth() {
        let mut watch = FetchWatch::default();
        watch.assigned(&[("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]);
        // Just assigned: not started yet is normal once.
        assert!(
            watch
                .observe(&report(
                    100,
                    &[(0, "none"), (1, "offset-query"), (2, "none")]
                ))
                .is_empty()
        );
        // Partition 0 started; 2 did not.
        let stalled = watch.observe(&report(115, &[(0, "active"), (1, "active"), (2, "none")]));
        assert_eq!(stalled, [("t".to_string(), 2, "none".to_string(), 15)]);
        let mut reported = 0;
        for i in 2..=41 {
            reported += watch
                .observe(&report(
                    100 + 15 * i,
                    &[(0, "active"), (1, "active"), (2, "stopped")],
                ))
                .len();
        }
        // Reports 22 and 42 of the stall.
        assert_eq!(reported, 2);
        // Revoked: no longer watched, whatever its state.
        watch.revoked(&[("t".into(), 2)]);
        for i in 0..3 {
            assert!(
                watch
                    .observe(&report(1000 + 15 * i, &[(2, "none")]))
                    .is_empty()
            );
        }
        // A partition that stops fetching once and starts again is not reported.
        assert!(
            watch
                .observe(&report(2000, &[(0, "stopped"), (1, "active")]))
                .is_empty()
        );
        assert!(
            watch
                .observe(&report(2015, &[(0, "active"), (1, "active")]))
                .is_empty()
        );
        assert!(
            watch
                .observe(&report(2030, &[(0, "stopped"), (1, "active")]))
                .is_empty()
        );
    }
}
