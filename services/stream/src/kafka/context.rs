//! The client context of every Kafka client: librdkafka statistics handed to an observer (never logged), partition EOF kept out of ERROR.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

/// One broker as a client sees it, from one statistics report.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerStats {
    /// The broker's node id.
    pub node_id: i32,
    /// Average request round trip over the last statistics window, in seconds (`None`
    /// before any request).
    pub rtt_seconds: Option<f64>,
    /// Transmission errors, receive errors and request timeouts since the previous report
    /// of this client.
    pub new_request_errors: u64,
}

/// Consumer lag of one partition as librdkafka sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Messages between the client's position and the end of the partition (last stable
    /// offset under `read_committed`).
    pub messages: i64,
}

/// What one statistics report says, reduced to what Biglearn exports.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientStats {
    /// The client's role (`producer`, `reader`, `group`, …).
    pub role: &'static str,
    /// Real brokers only (not the bootstrap or coordinator pseudo-brokers).
    pub brokers: Vec<BrokerStats>,
    /// Producer: messages waiting in librdkafka's queues.
    pub queue_messages: u64,
    /// Producer: bytes waiting in librdkafka's queues.
    pub queue_bytes: u64,
    /// Consumers: lag of every partition the client fetches.
    pub lags: Vec<PartitionLag>,
}

/// Receives every statistics report of every client (e.g. to update metrics).
#[derive(Clone, Default)]
pub struct StatsObserver(Option<Arc<ObserveFn>>);

type ObserveFn = dyn Fn(&ClientStats) + Send + Sync;

impl StatsObserver {
    /// An observer calling `observe` for every report.
    pub fn new(observe: impl Fn(&ClientStats) + Send + Sync + 'static) -> StatsObserver {
        StatsObserver(Some(Arc::new(observe)))
    }

    fn observe(&self, stats: &ClientStats) {
        if let Some(observe) = &self.0 {
            observe(stats);
        }
    }
}

impl fmt::Debug for StatsObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "StatsObserver(set)"
        } else {
            "StatsObserver(none)"
        })
    }
}

/// Observers compare equal: configurations are compared by their properties.
impl PartialEq for StatsObserver {
    fn eq(&self, _other: &StatsObserver) -> bool {
        true
    }
}

impl Eq for StatsObserver {}

/// The context of Biglearn's Kafka clients.
pub struct BiglearnContext {
    role: &'static str,
    observer: StatsObserver,
    /// Cumulative error counts per broker at the previous report.
    previous_errors: Mutex<HashMap<i32, u64>>,
}

impl BiglearnContext {
    /// A context for a client of `role`.
    pub fn new(role: &'static str, observer: StatsObserver) -> BiglearnContext {
        BiglearnContext {
            role,
            observer,
            previous_errors: Mutex::new(HashMap::new()),
        }
    }

    /// Reduces a report (the deltas are against this client's previous report).
    pub fn reduce(&self, statistics: &Statistics) -> ClientStats {
        let mut previous = self.previous_errors.lock();
        let mut brokers: Vec<BrokerStats> = statistics
            .brokers
            .values()
            .filter(|broker| broker.nodeid >= 0)
            .map(|broker| {
                let total = broker.txerrs + broker.rxerrs + broker.req_timeouts;
                let before = previous.insert(broker.nodeid, total).unwrap_or(0);
                BrokerStats {
                    node_id: broker.nodeid,
                    rtt_seconds: broker
                        .rtt
                        .as_ref()
                        .filter(|window| window.cnt > 0)
                        .map(|window| window.avg as f64 / 1e6),
                    new_request_errors: total.saturating_sub(before),
                }
            })
            .collect();
        brokers.sort_by_key(|broker| broker.node_id);
        let mut lags: Vec<PartitionLag> = statistics
            .topics
            .iter()
            .flat_map(|(topic, entry)| {
                entry
                    .partitions
                    .values()
                    .filter(|partition| partition.partition >= 0)
                    .filter_map(move |partition| {
                        let messages = if partition.consumer_lag >= 0 {
                            partition.consumer_lag
                        } else if partition.app_offset >= 0 && partition.ls_offset >= 0 {
                            // Nothing committed (readers assign and never commit): the
                            // lag is the end minus the position handed to the application.
                            (partition.ls_offset - partition.app_offset).max(0)
                        } else {
                            return None;
                        };
                        Some(PartitionLag {
                            topic: topic.clone(),
                            partition: partition.partition,
                            messages,
                        })
                    })
            })
            .collect();
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        ClientStats {
            role: self.role,
            brokers,
            queue_messages: statistics.msg_cnt,
            queue_bytes: statistics.msg_size,
            lags,
        }
    }
}

impl ClientContext for BiglearnContext {
    fn stats(&self, statistics: Statistics) {
        let reduced = self.reduce(&statistics);
        self.observer.observe(&reduced);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(self.role, &error, reason);
    }
}

impl ConsumerContext for BiglearnContext {}

/// Logs a client error: partition EOF is a notice (debug), everything else an error.
pub(crate) fn log_client_error(role: &str, error: &KafkaError, reason: &str) {
    // Readers with `enable.partition.eof` report it as a global error too.
    if matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF)
    {
        tracing::debug!(client = role, %error, "librdkafka: partition EOF");
    } else {
        tracing::error!(client = role, %error, %reason, "librdkafka error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report shaped as librdkafka 2.x writes it (trimmed to the fields read here
    /// plus the ones rdkafka requires).
    fn report(txerrs: u64, app_offset: i64) -> Statistics {
        let json = serde_json::json!({
            "name": "biglearn-up-host-reader#consumer-2", "client_id": "biglearn-up-host-reader",
            "type": "consumer", "ts": 1, "time": 1, "age": 1, "replyq": 0,
            "msg_cnt": 3, "msg_size": 300, "msg_max": 100000, "msg_size_max": 1000000,
            "simple_cnt": 0, "metadata_cache_cnt": 1, "tx": 1, "tx_bytes": 1, "rx": 1,
            "rx_bytes": 1, "txmsgs": 0, "txmsg_bytes": 0, "rxmsgs": 0, "rxmsg_bytes": 0,
            "brokers": {
                "127.0.0.1:9092/bootstrap": broker(-1, txerrs, 0),
                "127.0.0.1:9092/1": broker(1, txerrs, 1500),
            },
            "topics": {
                "biglearn.course-events": {
                    "topic": "biglearn.course-events", "age": 1, "metadata_age": 1,
                    "batchsize": window(0), "batchcnt": window(0),
                    "partitions": {
                        "0": partition(0, app_offset, 10),
                        "-1": partition(-1, -1, -1),
                    }
                }
            }
        });
        serde_json::from_value(json).expect("a librdkafka report")
    }

    fn broker(nodeid: i32, txerrs: u64, rtt_avg: i64) -> serde_json::Value {
        serde_json::json!({
            "name": "b", "nodeid": nodeid, "nodename": "127.0.0.1:9092", "source": "learned",
            "state": "UP", "stateage": 1, "outbuf_cnt": 0, "outbuf_msg_cnt": 0,
            "waitresp_cnt": 0, "waitresp_msg_cnt": 0, "tx": 1, "txbytes": 1,
            "txerrs": txerrs, "txretries": 0, "txidle": 0, "req_timeouts": 1, "rxidle": 0,
            "zbuf_grow": 0, "buf_grow": 0, "rx": 1, "rxbytes": 1,
            "rxerrs": 0, "rxcorriderrs": 0, "rxpartial": 0, "connects": 1,
            "disconnects": 0, "int_latency": window(0), "outbuf_latency": window(0),
            "rtt": window(rtt_avg), "throttle": window(0), "req": {}, "toppars": {}
        })
    }

    fn window(avg: i64) -> serde_json::Value {
        serde_json::json!({
            "min": 0, "max": 0, "avg": avg, "sum": 0, "cnt": i64::from(avg > 0),
            "stddev": 0, "hdrsize": 0, "p50": 0, "p75": 0, "p90": 0, "p95": 0,
            "p99": 0, "p99_99": 0, "outofrange": 0
        })
    }

    fn partition(id: i32, app_offset: i64, ls_offset: i64) -> serde_json::Value {
        serde_json::json!({
            "partition": id, "broker": 1, "leader": 1, "desired": true, "unknown": false,
            "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
            "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "active",
            "query_offset": 0, "next_offset": 0, "app_offset": app_offset,
            "stored_offset": -1, "committed_offset": -1, "eof_offset": -1,
            "lo_offset": 0, "hi_offset": ls_offset, "ls_offset": ls_offset,
            "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 0,
            "txbytes": 0, "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0,
            "msgs_inflight": 0, "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0
        })
    }

    #[test]
    fn a_report_becomes_rtt_errors_queue_and_lag() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let context = BiglearnContext::new(
            "reader",
            StatsObserver::new(move |stats| sink.lock().push(stats.clone())),
        );
        context.stats(report(2, 4));
        context.stats(report(5, 10));
        let seen = seen.lock();
        let first = &seen[0];
        assert_eq!(first.role, "reader");
        assert_eq!(
            first.brokers,
            vec![BrokerStats {
                node_id: 1,
                rtt_seconds: Some(0.0015),
                // txerrs 2 + req_timeouts 1 since the start.
                new_request_errors: 3,
            }]
        );
        assert_eq!((first.queue_messages, first.queue_bytes), (3, 300));
        assert_eq!(
            first.lags,
            vec![PartitionLag {
                topic: "biglearn.course-events".to_owned(),
                partition: 0,
                messages: 6,
            }]
        );
        // The second report counts only the new errors; the reader has caught up.
        assert_eq!(seen[1].brokers[0].new_request_errors, 3);
        assert_eq!(seen[1].lags[0].messages, 0);
    }
}
