//! The backend-agnostic conformance suite of `StreamStore`: every backend must pass each of these functions.
//!
//! Each function takes a store and a topic prefix unique to the run (so the suite can
//! run against a shared Kafka broker), creates its own topics, and asserts. Record
//! counts stay in the low thousands so that a run against Kafka stays quick.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use biglearn_stream::{
    partition_for_key, ConsumedRecord, OutgoingRecord, StreamError, StreamStore, TopicSpec,
};

/// How long a read loop waits for records it knows were acknowledged.
const READ_DEADLINE: Duration = Duration::from_secs(60);
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs every check of the suite.
pub async fn run_all(store: Arc<dyn StreamStore>, prefix: &str) {
    per_key_order_without_gaps_or_duplicates(Arc::clone(&store), prefix).await;
    resume_from_a_stored_position(Arc::clone(&store), prefix).await;
    offsets_outside_the_log_are_errors(Arc::clone(&store), prefix).await;
    high_watermarks_track_appends(Arc::clone(&store), prefix).await;
    keys_values_and_headers_round_trip(Arc::clone(&store), prefix).await;
    poll_waits_for_new_records(Arc::clone(&store), prefix).await;
    ensure_topics_is_idempotent(Arc::clone(&store), prefix).await;
}

/// A topic spec for suite topics.
pub fn spec(name: String, partitions: i32) -> TopicSpec {
    TopicSpec {
        name,
        partitions,
        compacted: false,
        retention_ms: None,
        max_message_bytes: 8 * 1024 * 1024,
    }
}

async fn create(store: &Arc<dyn StreamStore>, name: String, partitions: i32) -> String {
    store
        .ensure_topics(&[spec(name.clone(), partitions)])
        .await
        .expect("creating a suite topic");
    name
}

fn record(key: &str, value: String) -> OutgoingRecord {
    OutgoingRecord {
        key: key.as_bytes().to_vec(),
        value: value.into_bytes(),
        headers: vec![("bl-test".to_owned(), b"1".to_vec())],
    }
}

/// Reads `partition` from `start` until `expected` records arrived (bounded in time).
async fn read_exactly(
    store: &Arc<dyn StreamStore>,
    topic: &str,
    start: &[(i32, i64)],
    expected: usize,
) -> Vec<ConsumedRecord> {
    let mut reader = store
        .open_reader(topic, start)
        .await
        .expect("opening a reader");
    let mut records = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    while records.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {} of {expected} records of {topic} before the deadline",
            records.len()
        );
        let batch = reader
            .poll(expected - records.len(), POLL_TIMEOUT)
            .await
            .expect("polling");
        assert!(
            batch.len() <= expected - records.len(),
            "poll returned more than asked"
        );
        records.extend(batch);
    }
    // Nothing beyond what was appended.
    let extra = reader
        .poll(100, Duration::from_millis(200))
        .await
        .expect("polling");
    assert!(
        extra.is_empty(),
        "{} unexpected extra records in {topic}",
        extra.len()
    );
    records
}

/// Many keys appended by concurrent tasks, interleaved: every record is read back
/// exactly once, on the key's partition, at the acknowledged offset; offsets are
/// contiguous from 0 in every partition; each key's records come in append order.
pub async fn per_key_order_without_gaps_or_duplicates(store: Arc<dyn StreamStore>, prefix: &str) {
    const N_PARTITIONS: i32 = 4;
    const N_TASKS: usize = 8;
    const KEYS_PER_TASK: usize = 5;
    const APPENDS_PER_TASK: usize = 25;
    const RECORDS_PER_APPEND: usize = 10;
    let topic = create(&store, format!("{prefix}.conformance-order"), N_PARTITIONS).await;

    let mut tasks = Vec::new();
    for task_idx in 0..N_TASKS {
        let store = Arc::clone(&store);
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut seq_per_key = [0usize; KEYS_PER_TASK];
            for append_idx in 0..APPENDS_PER_TASK {
                let records: Vec<OutgoingRecord> = (0..RECORDS_PER_APPEND)
                    .map(|record_idx| {
                        let key_idx = (append_idx + record_idx) % KEYS_PER_TASK;
                        let seq = seq_per_key[key_idx];
                        seq_per_key[key_idx] += 1;
                        let key = format!("course-{task_idx}-{key_idx}");
                        record(&key, format!("{key}#{seq}"))
                    })
                    .collect();
                let outcomes = store
                    .append(&topic, records.clone())
                    .await
                    .expect("appending");
                assert_eq!(outcomes.len(), records.len());
                for (record, outcome) in records.into_iter().zip(outcomes) {
                    let delivered = outcome.expect("every record is delivered");
                    acknowledged.push((record, delivered));
                }
                tokio::task::yield_now().await;
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("append task"));
    }
    let n_records = N_TASKS * APPENDS_PER_TASK * RECORDS_PER_APPEND;
    assert_eq!(acknowledged.len(), n_records);

    let high_watermarks = store
        .high_watermarks(&topic)
        .await
        .expect("high watermarks");
    assert_eq!(high_watermarks.len(), N_PARTITIONS as usize);
    assert_eq!(high_watermarks.iter().sum::<i64>(), n_records as i64);

    let start: Vec<(i32, i64)> = (0..N_PARTITIONS).map(|partition| (partition, 0)).collect();
    let records = read_exactly(&store, &topic, &start, n_records).await;

    // Offsets contiguous from 0 in every partition, in order, no duplicates.
    let mut next_per_partition: HashMap<i32, i64> = HashMap::new();
    let mut by_position: HashMap<(i32, i64), &ConsumedRecord> = HashMap::new();
    let mut last_seq_per_key: HashMap<Vec<u8>, i64> = HashMap::new();
    for consumed in &records {
        let next = next_per_partition.entry(consumed.partition).or_insert(0);
        assert_eq!(
            consumed.offset, *next,
            "offsets of partition {} are not contiguous",
            consumed.partition
        );
        *next += 1;
        let key = consumed.key.clone().expect("a key");
        assert_eq!(
            consumed.partition,
            partition_for_key(&key, N_PARTITIONS),
            "record on the wrong partition"
        );
        let value =
            String::from_utf8(consumed.value.clone().expect("a value")).expect("utf-8 value");
        let (value_key, seq) = value.split_once('#').expect("key#seq");
        assert_eq!(value_key.as_bytes(), key.as_slice());
        let seq: i64 = seq.parse().expect("a sequence");
        let last = last_seq_per_key.insert(key, seq);
        assert_eq!(
            last.map_or(0, |last| last + 1),
            seq,
            "key {value_key} out of order or with a gap"
        );
        assert!(by_position
            .insert((consumed.partition, consumed.offset), consumed)
            .is_none());
    }
    for (partition, high_watermark) in high_watermarks.iter().enumerate() {
        assert_eq!(
            next_per_partition
                .get(&(partition as i32))
                .copied()
                .unwrap_or(0),
            *high_watermark
        );
    }
    // Every acknowledged record is where its acknowledgement said.
    for (appended, delivered) in &acknowledged {
        let consumed = by_position
            .get(&(delivered.partition, delivered.offset))
            .unwrap_or_else(|| panic!("acknowledged {delivered:?} not read back"));
        assert_eq!(consumed.key.as_deref(), Some(appended.key.as_slice()));
        assert_eq!(consumed.value.as_deref(), Some(appended.value.as_slice()));
    }
    let distinct: HashSet<(i32, i64)> = acknowledged
        .iter()
        .map(|(_, delivered)| (delivered.partition, delivered.offset))
        .collect();
    assert_eq!(
        distinct.len(),
        n_records,
        "two acknowledgements share a position"
    );
}

/// Read half of every partition, drop the reader, reopen at the recorded next offsets:
/// exactly the rest arrives.
pub async fn resume_from_a_stored_position(store: Arc<dyn StreamStore>, prefix: &str) {
    const N_PARTITIONS: i32 = 3;
    const N_RECORDS: usize = 600;
    let topic = create(&store, format!("{prefix}.conformance-resume"), N_PARTITIONS).await;
    let records: Vec<OutgoingRecord> = (0..N_RECORDS)
        .map(|record_idx| {
            record(
                &format!("course-{}", record_idx % 17),
                format!("value-{record_idx}"),
            )
        })
        .collect();
    for outcome in store.append(&topic, records).await.expect("appending") {
        outcome.expect("delivered");
    }
    let start: Vec<(i32, i64)> = (0..N_PARTITIONS).map(|partition| (partition, 0)).collect();
    let everything = read_exactly(&store, &topic, &start, N_RECORDS).await;

    // Read about half, in small polls, remembering the next offset per partition.
    let mut reader = store
        .open_reader(&topic, &start)
        .await
        .expect("opening a reader");
    let mut first_half = Vec::new();
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    while first_half.len() < N_RECORDS / 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reading the first half timed out"
        );
        first_half.extend(reader.poll(7, POLL_TIMEOUT).await.expect("polling"));
    }
    drop(reader);
    let mut next_offsets: BTreeMap<i32, i64> =
        (0..N_PARTITIONS).map(|partition| (partition, 0)).collect();
    for consumed in &first_half {
        next_offsets.insert(consumed.partition, consumed.offset + 1);
    }
    let resume_at: Vec<(i32, i64)> = next_offsets.into_iter().collect();
    let rest = read_exactly(&store, &topic, &resume_at, N_RECORDS - first_half.len()).await;

    let positions = |records: &[ConsumedRecord]| -> Vec<(i32, i64, Vec<u8>)> {
        let mut positions: Vec<_> = records
            .iter()
            .map(|consumed| {
                (
                    consumed.partition,
                    consumed.offset,
                    consumed.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        positions.sort();
        positions
    };
    let mut combined = first_half;
    combined.extend(rest);
    assert_eq!(
        positions(&combined),
        positions(&everything),
        "first half + rest != everything"
    );
}

/// Offsets below 0 or above the high watermark are `OffsetOutOfRange`; the high
/// watermark itself is a valid start with nothing to read yet. Unknown topics and
/// partitions are errors too.
pub async fn offsets_outside_the_log_are_errors(store: Arc<dyn StreamStore>, prefix: &str) {
    let topic = create(&store, format!("{prefix}.conformance-range"), 2).await;
    let records: Vec<OutgoingRecord> = (0..20)
        .map(|idx| record(&format!("k{idx}"), format!("v{idx}")))
        .collect();
    for outcome in store.append(&topic, records).await.expect("appending") {
        outcome.expect("delivered");
    }
    let high_watermarks = store
        .high_watermarks(&topic)
        .await
        .expect("high watermarks");
    for partition in 0..2 {
        let high = high_watermarks[partition as usize];
        for offset in [-1, high + 1, high + 1000] {
            match store.open_reader(&topic, &[(partition, offset)]).await {
                Err(StreamError::OffsetOutOfRange {
                    offset: reported, ..
                }) => assert_eq!(reported, offset),
                Err(other) => panic!("offset {offset}: expected OffsetOutOfRange, got {other}"),
                Ok(_) => {
                    panic!("offset {offset} of partition {partition} (high {high}) was accepted")
                }
            }
        }
        let mut at_end = store
            .open_reader(&topic, &[(partition, high)])
            .await
            .expect("the high watermark is a valid start");
        let nothing = at_end
            .poll(10, Duration::from_millis(200))
            .await
            .expect("polling");
        assert!(nothing.is_empty());
    }
    assert!(matches!(
        store
            .open_reader(&format!("{prefix}.conformance-no-such-topic"), &[(0, 0)])
            .await,
        Err(StreamError::UnknownTopic { .. })
    ));
    assert!(
        store.open_reader(&topic, &[(2, 0)]).await.is_err(),
        "partition 2 of a 2-partition topic"
    );
    assert!(matches!(
        store
            .append(
                &format!("{prefix}.conformance-no-such-topic"),
                vec![record("k", "v".to_owned())]
            )
            .await,
        Err(StreamError::UnknownTopic { .. })
    ));
}

/// The high watermark of each partition is the next offset, and moves by exactly the
/// number of records appended to it.
pub async fn high_watermarks_track_appends(store: Arc<dyn StreamStore>, prefix: &str) {
    const N_PARTITIONS: i32 = 5;
    let topic = create(
        &store,
        format!("{prefix}.conformance-watermarks"),
        N_PARTITIONS,
    )
    .await;
    assert_eq!(
        store
            .partition_count(&topic)
            .await
            .expect("partition count"),
        N_PARTITIONS
    );
    assert_eq!(
        store
            .high_watermarks(&topic)
            .await
            .expect("high watermarks"),
        vec![0; N_PARTITIONS as usize]
    );
    let mut expected = vec![0i64; N_PARTITIONS as usize];
    for round in 0..3 {
        let records: Vec<OutgoingRecord> = (0..(round * 40 + 13))
            .map(|idx| {
                record(
                    &format!("course-{}", idx * 7 + round),
                    format!("{round}-{idx}"),
                )
            })
            .collect();
        for (appended, outcome) in records.iter().zip(
            store
                .append(&topic, records.clone())
                .await
                .expect("appending"),
        ) {
            let delivered = outcome.expect("delivered");
            let partition = partition_for_key(&appended.key, N_PARTITIONS);
            assert_eq!(delivered.partition, partition);
            assert_eq!(
                delivered.offset, expected[partition as usize],
                "offsets are handed out in order"
            );
            expected[partition as usize] += 1;
        }
        assert_eq!(
            store
                .high_watermarks(&topic)
                .await
                .expect("high watermarks"),
            expected
        );
    }
    assert!(store
        .append(&topic, Vec::new())
        .await
        .expect("an empty append")
        .is_empty());
    assert_eq!(
        store
            .high_watermarks(&topic)
            .await
            .expect("high watermarks"),
        expected
    );
}

/// Keys, values and headers (repeated names, empty values, binary bytes, order) come
/// back as they went in.
pub async fn keys_values_and_headers_round_trip(store: Arc<dyn StreamStore>, prefix: &str) {
    let topic = create(&store, format!("{prefix}.conformance-round-trip"), 1).await;
    let binary: Vec<u8> = (0..=255u8).collect();
    let large: Vec<u8> = (0..200_000u32).map(|idx| (idx % 251) as u8).collect();
    let appended = vec![
        OutgoingRecord {
            key: b"581df776-a323-44bd-8cb1-346cd664b974".to_vec(),
            value: b"avro bytes".to_vec(),
            headers: vec![
                ("bl-event-type".to_owned(), b"record_responses".to_vec()),
                ("bl-sequence-number".to_owned(), b"42".to_vec()),
                ("bl-repeated".to_owned(), b"first".to_vec()),
                ("bl-repeated".to_owned(), b"second".to_vec()),
                ("bl-empty".to_owned(), Vec::new()),
            ],
        },
        OutgoingRecord {
            key: binary.clone(),
            value: binary.clone(),
            headers: vec![("bl-binary".to_owned(), binary.clone())],
        },
        OutgoingRecord {
            key: b"no-headers".to_vec(),
            value: large,
            headers: Vec::new(),
        },
    ];
    for outcome in store
        .append(&topic, appended.clone())
        .await
        .expect("appending")
    {
        outcome.expect("delivered");
    }
    let consumed = read_exactly(&store, &topic, &[(0, 0)], appended.len()).await;
    for (appended, consumed) in appended.iter().zip(&consumed) {
        assert_eq!(consumed.topic, topic);
        assert_eq!(consumed.key.as_deref(), Some(appended.key.as_slice()));
        assert_eq!(consumed.value.as_deref(), Some(appended.value.as_slice()));
        assert_eq!(consumed.headers, appended.headers);
    }
    assert_eq!(consumed[0].header("bl-repeated"), Some(&b"first"[..]));
    assert_eq!(consumed[0].header("bl-sequence-number"), Some(&b"42"[..]));
}

/// A reader at the end waits for a record appended while it polls, and gets it
/// without waiting out its whole timeout.
pub async fn poll_waits_for_new_records(store: Arc<dyn StreamStore>, prefix: &str) {
    let topic = create(&store, format!("{prefix}.conformance-wait"), 1).await;
    let mut reader = store
        .open_reader(&topic, &[(0, 0)])
        .await
        .expect("opening a reader");
    let appender = {
        let store = Arc::clone(&store);
        let topic = topic.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store
                .append(&topic, vec![record("late", "arrival".to_owned())])
                .await
        })
    };
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    while received.is_empty() && started.elapsed() < READ_DEADLINE {
        received = reader
            .poll(10, Duration::from_secs(20))
            .await
            .expect("polling");
    }
    let waited = started.elapsed();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].value.as_deref(), Some(&b"arrival"[..]));
    assert!(
        waited < Duration::from_secs(15),
        "poll took {waited:?}: it did not wake on the append"
    );
    let outcome = appender.await.expect("append task").expect("appending");
    assert_eq!(outcome[0].as_ref().expect("delivered").offset, 0);
}

/// Ensuring existing topics again changes nothing, even with another partition count.
pub async fn ensure_topics_is_idempotent(store: Arc<dyn StreamStore>, prefix: &str) {
    let topic = create(&store, format!("{prefix}.conformance-ensure"), 3).await;
    for outcome in store
        .append(&topic, vec![record("k", "v".to_owned())])
        .await
        .expect("appending")
    {
        outcome.expect("delivered");
    }
    let before = store
        .high_watermarks(&topic)
        .await
        .expect("high watermarks");
    store
        .ensure_topics(&[spec(topic.clone(), 3)])
        .await
        .expect("ensuring again");
    store
        .ensure_topics(&[spec(topic.clone(), 7)])
        .await
        .expect("ensuring with another count");
    assert_eq!(
        store
            .partition_count(&topic)
            .await
            .expect("partition count"),
        3
    );
    assert_eq!(
        store
            .high_watermarks(&topic)
            .await
            .expect("high watermarks"),
        before
    );
}
