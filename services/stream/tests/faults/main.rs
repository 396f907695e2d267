//! The 2017 sequence-gap incident and its cousins on librdkafka's MockCluster: slow brokers, retriable Produce errors, a broker outage.
//!
//! Each scenario writes ≥ 20,000 events over 100 courses through `KafkaStore` the way the
//! writer does (send a request's records, await every report, re-send what was not
//! delivered), injects its fault while producing, then reads the whole log back through
//! `biglearn_domain::sequencing` and asserts that every (course, sequence_number) was
//! applied exactly once and in order, and that every delivered position holds its event.

mod support;

use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use support::{run_scenario, BROKERS};

const FAST_REQUEST_TIMEOUT: &str = "1000";

/// August 2017: a backup slowed everything beyond the timeouts. Here every broker's round
/// trip exceeds `request.timeout.ms` for a while; `message.timeout.ms` stays 300 s, so the
/// producer waits and retries instead of dropping numbered writes.
#[test]
fn round_trips_beyond_the_request_timeout_lose_nothing() {
    run_scenario(
        "slow_brokers",
        &[("request.timeout.ms", FAST_REQUEST_TIMEOUT)],
        |mock, writer| async move {
            writer.wait_for_requests(20).await;
            for broker in 1..=BROKERS {
                mock.broker_round_trip_time(broker, Duration::from_millis(2500))
                    .expect("slow broker");
            }
            writer
                .wait_for_time_or_requests(Duration::from_secs(4), 60)
                .await;
            for broker in 1..=BROKERS {
                mock.broker_round_trip_time(broker, Duration::ZERO)
                    .expect("restore broker");
            }
        },
    );
}

/// The 2017 failure itself: a timeout shorter than the slow period. With
/// `message.timeout.ms` cut to 2 s, records time out (possibly persisted) and the writer
/// re-sends them; the log then holds duplicates and out-of-order records, which the
/// per-course sequencing absorbs. Nothing reported delivered is missing.
#[test]
fn timeouts_shorter_than_the_slow_period_cause_resends_not_losses() {
    run_scenario(
        "short_message_timeout",
        &[
            ("request.timeout.ms", FAST_REQUEST_TIMEOUT),
            ("message.timeout.ms", "2000"),
        ],
        |mock, writer| async move {
            writer.wait_for_requests(20).await;
            for broker in 1..=BROKERS {
                mock.broker_round_trip_time(broker, Duration::from_millis(2500))
                    .expect("slow broker");
            }
            writer
                .wait_for_time_or_requests(Duration::from_secs(5), 60)
                .await;
            for broker in 1..=BROKERS {
                mock.broker_round_trip_time(broker, Duration::ZERO)
                    .expect("restore broker");
            }
        },
    );
}

fn retriable_produce_errors(label: &str, error: RDKafkaRespErr) {
    run_scenario(
        label,
        &[
            ("request.timeout.ms", FAST_REQUEST_TIMEOUT),
            // Disconnects are followed by reconnect back-off (up to 10 s by default); keep
            // it short so that recovery is measured in seconds even on a loaded machine.
            ("reconnect.backoff.ms", "50"),
            ("reconnect.backoff.max.ms", "500"),
        ],
        move |mock, writer| async move {
            // Bursts while producing: each Produce request pops one injected error.
            for burst in 1..=4 {
                writer.wait_for_requests(burst * 30).await;
                mock.request_errors(RDKafkaApiKey::Produce, &[error; 12]);
            }
        },
    );
}

#[test]
fn produce_request_timed_out_is_retried() {
    retriable_produce_errors(
        "request_timed_out",
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    );
}

#[test]
fn produce_not_leader_for_partition_is_retried() {
    retriable_produce_errors(
        "not_leader",
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    );
}

#[test]
fn produce_not_enough_replicas_is_retried() {
    retriable_produce_errors(
        "not_enough_replicas",
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    );
}

#[test]
fn produce_transport_failures_are_retried() {
    retriable_produce_errors("transport", RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT);
}

/// A broker goes down while it leads partitions; leadership moves (the mock has no
/// automatic election) and later the broker comes back and leads again.
#[test]
fn a_broker_outage_loses_nothing() {
    run_scenario(
        "broker_outage",
        &[("request.timeout.ms", FAST_REQUEST_TIMEOUT)],
        |mock, writer| async move {
            let topic = writer.topic().to_owned();
            writer.wait_for_requests(20).await;
            mock.broker_down(1).expect("broker down");
            writer
                .wait_for_time_or_requests(Duration::from_secs(1), 40)
                .await;
            for partition in 0..support::PARTITIONS {
                let leader = 2 + partition % 2;
                mock.partition_leader(&topic, partition, Some(leader))
                    .expect("move leader");
            }
            writer
                .wait_for_time_or_requests(Duration::from_secs(2), 80)
                .await;
            mock.broker_up(1).expect("broker up");
            for partition in 0..support::PARTITIONS {
                mock.partition_leader(&topic, partition, Some(1 + partition % BROKERS))
                    .expect("restore leader");
            }
        },
    );
}
