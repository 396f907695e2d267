//! Helpers shared by the embedded-log test binaries.

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{ConsumedRecord, OutgoingRecord, StreamStore, TopicSpec};

use crate::conformance;

pub fn spec(name: &str, partitions: i32) -> TopicSpec {
    conformance::spec(name.to_owned(), partitions)
}

pub fn record(key: &str, value: &str) -> OutgoingRecord {
    OutgoingRecord {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        headers: vec![("bl-event-type".to_owned(), b"test".to_vec())],
    }
}

pub async fn append_ok(
    store: &EmbeddedStore,
    topic: &str,
    records: Vec<OutgoingRecord>,
) -> Vec<(i32, i64)> {
    store
        .append(topic, records)
        .await
        .expect("appending")
        .into_iter()
        .map(|outcome| {
            let delivered = outcome.expect("delivered");
            (delivered.partition, delivered.offset)
        })
        .collect()
}

/// Everything durable in `partition`, read to the high watermark.
pub async fn read_partition(
    store: &EmbeddedStore,
    topic: &str,
    partition: i32,
    from: i64,
) -> Vec<ConsumedRecord> {
    let high = store.high_watermarks(topic).await.expect("high watermarks")[partition as usize];
    let mut reader = store
        .open_reader(topic, &[(partition, from)])
        .await
        .expect("opening a reader");
    let mut records = Vec::new();
    for _ in 0..10_000 {
        if records.len() as i64 >= high - from {
            break;
        }
        records.extend(
            reader
                .poll(10_000, Duration::from_secs(5))
                .await
                .expect("polling"),
        );
    }
    assert_eq!(
        records.len() as i64,
        high - from,
        "read {topic}/{partition} from {from}"
    );
    for (record_idx, consumed) in records.iter().enumerate() {
        assert_eq!(consumed.offset, from + record_idx as i64);
    }
    records
}

pub fn segment_files(dir: &Path, topic: &str, partition: i32) -> Vec<PathBuf> {
    let partition_dir = dir.join(topic).join(format!("partition-{partition:04}"));
    let mut files: Vec<PathBuf> = fs::read_dir(&partition_dir)
        .expect("listing a partition")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}
