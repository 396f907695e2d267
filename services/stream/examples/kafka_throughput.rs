//! Append then read back small keyed records on a Kafka broker (tansu by default) and print one JSON line of records/s.
//!
//! `cargo run --release -p biglearn-stream --example kafka_throughput -- [records] [courses] [batch]`
//! Uses `BIGLEARN_TEST_KAFKA=host:port` if set, else starts tansu like the tests do.

use std::time::{Duration, Instant};

use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{OutgoingRecord, StreamStore, TopicSpec};
use biglearn_testkit::{unique_topic_prefix, TestBroker};

const PARTITIONS: i32 = 12;

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n_records, n_courses, batch) = (arg(1, 20_000), arg(2, 100), arg(3, 1_000));
    let broker = TestBroker::try_start()?;
    let config = KafkaConfig::new(broker.bootstrap(), "kafka-throughput").single_broker();
    let store = KafkaStore::connect(config).await?;
    let topic = format!("{}.course-events", unique_topic_prefix("throughput"));
    store
        .ensure_topics(&[TopicSpec {
            name: topic.clone(),
            partitions: PARTITIONS,
            compacted: false,
            retention_ms: None,
            max_message_bytes: 8 * 1024 * 1024,
        }])
        .await?;
    let records: Vec<OutgoingRecord> = (0..n_records)
        .map(|i| OutgoingRecord {
            key: format!("00000000-0000-4000-8000-{:012}", i % n_courses).into_bytes(),
            value: format!(
                "{{\"course\":{},\"sequence_number\":{}}}",
                i % n_courses,
                i / n_courses
            )
            .into_bytes(),
            headers: vec![("bl-event-type".to_owned(), b"record_response".to_vec())],
        })
        .collect();

    let started = Instant::now();
    let mut n_failed = 0;
    for chunk in records.chunks(batch.max(1)) {
        let outcomes = store.append(&topic, chunk.to_vec()).await?;
        n_failed += outcomes.iter().filter(|outcome| outcome.is_err()).count();
    }
    let append_s = started.elapsed().as_secs_f64();

    let start: Vec<(i32, i64)> = (0..PARTITIONS).map(|partition| (partition, 0)).collect();
    let started = Instant::now();
    let mut reader = store.open_reader(&topic, &start).await?;
    let mut n_read = 0;
    while n_read < n_records && started.elapsed() < Duration::from_secs(300) {
        n_read += reader.poll(10_000, Duration::from_millis(500)).await?.len();
    }
    let read_s = started.elapsed().as_secs_f64();
    println!(
        "{{\"broker\":\"{}\",\"records\":{n_records},\"courses\":{n_courses},\"append_batch\":{batch},\"failed\":{n_failed},\"append_records_per_s\":{:.0},\"read\":{n_read},\"read_records_per_s\":{:.0}}}",
        if broker.is_owned() { "tansu" } else { "external" },
        n_records as f64 / append_s,
        n_read as f64 / read_s,
    );
    Ok(())
}
