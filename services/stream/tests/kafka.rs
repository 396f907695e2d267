//! The conformance suite and Kafka-specific checks against a real broker (tansu, via `biglearn-testkit`).

mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{partition_for_key, DeliveryError, OutgoingRecord, StreamStore};
use biglearn_testkit::{unique_topic_prefix, TestBroker};

async fn store_on(broker: &TestBroker) -> Arc<KafkaStore> {
    let config = KafkaConfig::new(broker.bootstrap(), "biglearn-stream-tests").single_broker();
    Arc::new(
        KafkaStore::connect(config)
            .await
            .expect("connect to the test broker"),
    )
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let broker = TestBroker::start();
            let store = store_on(&broker).await;
            conformance::$name(store, &unique_topic_prefix(stringify!($name))).await;
        }
    )*};
}

conformance_tests!(
    per_key_order_without_gaps_or_duplicates,
    resume_from_a_stored_position,
    offsets_outside_the_log_are_errors,
    high_watermarks_track_appends,
    keys_values_and_headers_round_trip,
    poll_waits_for_new_records,
    ensure_topics_is_idempotent,
);

fn course_key(course: usize) -> Vec<u8> {
    format!("00000000-0000-4000-8000-{course:012}").into_bytes()
}

/// rdkafka's `murmur2_random` partitioner and [`partition_for_key`] agree, so Java
/// tooling, the embedded log and this backend put a course on the same partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_murmur2_partition() {
    const PARTITIONS: i32 = 12;
    let broker = TestBroker::start();
    let store = store_on(&broker).await;
    let topic = format!("{}.keys", unique_topic_prefix("keys"));
    store
        .ensure_topics(&[conformance::spec(topic.clone(), PARTITIONS)])
        .await
        .expect("create topic");
    let records: Vec<OutgoingRecord> = (0..600)
        .map(|i| OutgoingRecord {
            key: course_key(i % 200),
            value: i.to_string().into_bytes(),
            headers: vec![],
        })
        .collect();
    let outcomes = store.append(&topic, records.clone()).await.expect("append");
    let mut used = BTreeMap::new();
    for (record, outcome) in records.iter().zip(&outcomes) {
        let delivered = outcome.as_ref().expect("delivered");
        assert_eq!(
            delivered.partition,
            partition_for_key(&record.key, PARTITIONS),
            "key {}",
            String::from_utf8_lossy(&record.key)
        );
        *used.entry(delivered.partition).or_insert(0) += 1;
    }
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "200 keys spread over every partition"
    );

    let start: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut reader = store.open_reader(&topic, &start).await.expect("reader");
    let mut read = 0;
    for _ in 0..200 {
        for record in reader
            .poll(1000, Duration::from_millis(200))
            .await
            .expect("poll")
        {
            let key = record.key.expect("key");
            assert_eq!(record.partition, partition_for_key(&key, PARTITIONS));
            read += 1;
        }
        if read == records.len() {
            break;
        }
    }
    assert_eq!(read, records.len());
}

/// A fatal producer error fails the records it touches as `Fatal`, and the next append
/// goes through a recreated producer (librdkafka: a fatal producer is unusable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_recreates_the_producer() {
    let broker = TestBroker::start();
    let store = store_on(&broker).await;
    let topic = format!("{}.fatal", unique_topic_prefix("fatal"));
    store
        .ensure_topics(&[conformance::spec(topic.clone(), 2)])
        .await
        .expect("create topic");
    let record = |value: &str| OutgoingRecord {
        key: course_key(1),
        value: value.as_bytes().to_vec(),
        headers: vec![],
    };
    let before = store
        .append(&topic, vec![record("before")])
        .await
        .expect("append");
    assert!(before[0].is_ok(), "{before:?}");

    store.inject_fatal_error_for_tests("test: simulated OUT_OF_ORDER_SEQUENCE_NUMBER");
    let during = store
        .append(&topic, vec![record("during")])
        .await
        .expect("append");
    assert!(
        matches!(during[0], Err(DeliveryError::Fatal(_))),
        "{during:?}"
    );
    assert_eq!(store.producers_created(), 2);

    let after = store
        .append(&topic, vec![record("after")])
        .await
        .expect("append");
    let delivered = after[0].as_ref().expect("the recreated producer delivers");
    assert_eq!(
        delivered.offset, 1,
        "the fatal record never reached the log"
    );
}

/// A read-only store reads what a writing store appended, refuses appends before any
/// client exists for them, creates no topic, and never had a producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_reads_and_never_writes() {
    let broker = TestBroker::start();
    let writer = store_on(&broker).await;
    let topic = format!("{}.source", unique_topic_prefix("read-only"));
    writer
        .ensure_topics(&[conformance::spec(topic.clone(), 2)])
        .await
        .expect("create topic");
    let records: Vec<OutgoingRecord> = (0..10)
        .map(|i| OutgoingRecord {
            key: course_key(i),
            value: i.to_string().into_bytes(),
            headers: vec![],
        })
        .collect();
    writer.append(&topic, records).await.expect("append");

    let config = KafkaConfig::new(broker.bootstrap(), "staging.read-only-test").single_broker();
    let reader = KafkaStore::connect_read_only(config)
        .await
        .expect("connect read-only");
    assert!(reader.is_read_only());
    assert_eq!(reader.producers_created(), 0);
    let highs = reader.high_watermarks(&topic).await.expect("watermarks");
    assert_eq!(highs.iter().sum::<i64>(), 10);
    let mut source = reader
        .open_reader(&topic, &[(0, 0), (1, 0)])
        .await
        .expect("reader");
    let mut read = 0;
    for _ in 0..50 {
        read += source
            .poll(100, Duration::from_millis(200))
            .await
            .expect("poll")
            .len();
        if read == 10 {
            break;
        }
    }
    assert_eq!(read, 10);

    let refused = reader
        .append(
            &topic,
            vec![OutgoingRecord {
                key: course_key(1),
                value: b"x".to_vec(),
                headers: vec![],
            }],
        )
        .await;
    assert!(
        matches!(&refused, Err(biglearn_stream::StreamError::ReadOnly { topic: t }) if *t == topic),
        "{refused:?}"
    );
    let missing = format!("{}.never-created", unique_topic_prefix("read-only"));
    let ensured = reader
        .ensure_topics(&[conformance::spec(missing.clone(), 1)])
        .await;
    assert!(
        matches!(
            &ensured,
            Err(biglearn_stream::StreamError::UnknownTopic { .. })
        ),
        "{ensured:?}"
    );
    assert!(
        matches!(
            writer.partition_count(&missing).await,
            Err(biglearn_stream::StreamError::UnknownTopic { .. })
        ),
        "the read-only store created nothing"
    );
    assert_eq!(
        writer.high_watermarks(&topic).await.expect("watermarks"),
        highs
    );
    assert_eq!(reader.producers_created(), 0);
}
