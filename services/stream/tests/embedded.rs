//! Tests of the embedded backend: the conformance suite, restart, torn tails, group commit
//! (the kill -9 test is `embedded_crash.rs`).

mod common;
mod conformance;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::Arc;

use biglearn_stream::embedded::{EmbeddedOptions, EmbeddedStore};
use biglearn_stream::{DeliveryError, OutgoingRecord, StreamError, StreamStore};

use common::{append_ok, read_partition, record, segment_files, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn StreamStore> = Arc::new(EmbeddedStore::open(dir.path()).expect("opening"));
    assert_eq!(store.backend_name(), "embedded");
    conformance::run_all(store, "suite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_holds_across_many_small_segments() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = EmbeddedOptions {
        segment_bytes: 4096,
    };
    let store: Arc<dyn StreamStore> =
        Arc::new(EmbeddedStore::open_with(dir.path(), options).expect("opening"));
    conformance::per_key_order_without_gaps_or_duplicates(Arc::clone(&store), "small").await;
    conformance::resume_from_a_stored_position(Arc::clone(&store), "small").await;
    conformance::keys_values_and_headers_round_trip(store, "small").await;
    assert!(
        segment_files(dir.path(), "small.conformance-order", 0).len() > 5,
        "the log rolled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart_and_appends_continue() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = EmbeddedOptions {
        segment_bytes: 8192,
    };
    let topic = "restart.course-events";
    let mut appended = Vec::new();
    {
        let store = EmbeddedStore::open_with(dir.path(), options.clone()).expect("opening");
        store
            .ensure_topics(&[spec(topic, 3)])
            .await
            .expect("creating");
        for round in 0..20 {
            let records: Vec<OutgoingRecord> = (0..50)
                .map(|idx| {
                    record(
                        &format!("course-{}", idx % 9),
                        &format!("round {round} record {idx} {}", "x".repeat(idx)),
                    )
                })
                .collect();
            let positions = append_ok(&store, topic, records.clone()).await;
            appended.extend(records.into_iter().zip(positions));
        }
    }
    let store = EmbeddedStore::open_with(dir.path(), options).expect("reopening");
    assert_eq!(
        store.partition_count(topic).await.expect("partition count"),
        3
    );
    let high_watermarks = store.high_watermarks(topic).await.expect("high watermarks");
    assert_eq!(high_watermarks.iter().sum::<i64>(), 1000);
    let mut by_position = std::collections::HashMap::new();
    for partition in 0..3 {
        assert!(
            segment_files(dir.path(), topic, partition).len() > 3,
            "several segments"
        );
        for consumed in read_partition(&store, topic, partition, 0).await {
            by_position.insert((consumed.partition, consumed.offset), consumed);
        }
        // Readers can start anywhere, across segment and index boundaries.
        for from in [
            1,
            17,
            high_watermarks[partition as usize] / 2,
            high_watermarks[partition as usize] - 1,
        ] {
            let tail = read_partition(&store, topic, partition, from).await;
            assert_eq!(tail[0].offset, from);
        }
    }
    for (appended, position) in &appended {
        let consumed = &by_position[position];
        assert_eq!(consumed.value.as_deref(), Some(appended.value.as_slice()));
        assert_eq!(consumed.headers, appended.headers);
    }
    let next = append_ok(&store, topic, vec![record("course-0", "after restart")]).await;
    assert_eq!(
        next[0].1, high_watermarks[next[0].0 as usize],
        "appends continue at the high watermark"
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("opening");
    match EmbeddedStore::open(dir.path()) {
        Err(error @ StreamError::Locked { .. }) => {
            assert!(error.to_string().contains("stop that one first"), "{error}")
        }
        Err(other) => panic!("a held lock is not an I/O error: {other}"),
        Ok(_) => panic!("a second open succeeded"),
    }
    // The lock goes with the store: once it is dropped, the directory opens again.
    drop(store);
    EmbeddedStore::open(dir.path()).expect("reopening after the first store is gone");
}

#[tokio::test]
async fn an_oversized_record_is_refused_definitely_and_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("opening");
    let mut small = spec("limits.dlq", 1);
    small.max_message_bytes = 1000;
    store.ensure_topics(&[small]).await.expect("creating");
    let outcomes = store
        .append(
            "limits.dlq",
            vec![
                record("a", "fits"),
                record("a", &"x".repeat(2000)),
                record("a", "fits too"),
            ],
        )
        .await
        .expect("appending");
    assert_eq!(
        outcomes[0].as_ref().map(|delivered| delivered.offset),
        Ok(0)
    );
    assert!(matches!(outcomes[1], Err(DeliveryError::Definite(_))));
    assert_eq!(
        outcomes[2].as_ref().map(|delivered| delivered.offset),
        Ok(1)
    );
}

/// How a torn tail is simulated on a closed log whose last segment holds `n_acknowledged`
/// acknowledged records followed by `extra`, the bytes of one more record.
enum Damage {
    Garbage,
    HalfOfTheNextRecord,
    FlippedByteInTheNextRecord,
    Zeros,
}

async fn check_torn_tail(damage: Damage) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let topic = "torn.course-events";
    let n_acknowledged = 25;
    let segment;
    let acknowledged_len;
    {
        let store = EmbeddedStore::open(dir.path()).expect("opening");
        store
            .ensure_topics(&[spec(topic, 1)])
            .await
            .expect("creating");
        for idx in 0..n_acknowledged {
            append_ok(
                &store,
                topic,
                vec![record("course", &format!("acknowledged {idx}"))],
            )
            .await;
        }
        segment = segment_files(dir.path(), topic, 0)
            .pop()
            .expect("a segment");
        acknowledged_len = fs::metadata(&segment).expect("segment metadata").len();
        append_ok(
            &store,
            topic,
            vec![record("course", "the record that gets torn")],
        )
        .await;
    }
    let full_len = fs::metadata(&segment).expect("segment metadata").len();
    let extra = full_len - acknowledged_len;
    match damage {
        Damage::Garbage => {
            let file = OpenOptions::new()
                .write(true)
                .open(&segment)
                .expect("opening the segment");
            file.set_len(acknowledged_len).expect("cutting");
            let mut file = OpenOptions::new()
                .append(true)
                .open(&segment)
                .expect("opening the segment");
            file.write_all(b"\x13\x00\x00\x00garbage that is not a record")
                .expect("writing garbage");
        }
        Damage::HalfOfTheNextRecord => {
            let file = OpenOptions::new()
                .write(true)
                .open(&segment)
                .expect("opening the segment");
            file.set_len(acknowledged_len + extra / 2).expect("cutting");
        }
        Damage::FlippedByteInTheNextRecord => {
            let mut bytes = fs::read(&segment).expect("reading the segment");
            bytes[(acknowledged_len + extra - 3) as usize] ^= 0x40;
            fs::write(&segment, bytes).expect("writing the segment");
        }
        Damage::Zeros => {
            let file = OpenOptions::new()
                .write(true)
                .open(&segment)
                .expect("opening the segment");
            file.set_len(acknowledged_len).expect("cutting");
            file.set_len(acknowledged_len + 4096)
                .expect("extending with zeros");
        }
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopening truncates the torn tail");
    assert_eq!(
        store.high_watermarks(topic).await.expect("high watermarks"),
        vec![n_acknowledged]
    );
    assert_eq!(
        fs::metadata(&segment).expect("segment metadata").len(),
        acknowledged_len
    );
    let records = read_partition(&store, topic, 0, 0).await;
    for (idx, consumed) in records.iter().enumerate() {
        assert_eq!(
            consumed.value.as_deref(),
            Some(format!("acknowledged {idx}").as_bytes())
        );
    }
    let next = append_ok(&store, topic, vec![record("course", "after recovery")]).await;
    assert_eq!(next, vec![(0, n_acknowledged)]);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("reopening once more");
    let records = read_partition(&store, topic, 0, 0).await;
    assert_eq!(
        records.last().and_then(|last| last.value.as_deref()),
        Some(&b"after recovery"[..])
    );
}

#[tokio::test]
async fn a_garbage_tail_is_truncated() {
    check_torn_tail(Damage::Garbage).await;
}

#[tokio::test]
async fn a_half_written_record_is_truncated() {
    check_torn_tail(Damage::HalfOfTheNextRecord).await;
}

#[tokio::test]
async fn a_record_failing_its_checksum_is_truncated() {
    check_torn_tail(Damage::FlippedByteInTheNextRecord).await;
}

#[tokio::test]
async fn a_zero_filled_tail_is_truncated() {
    check_torn_tail(Damage::Zeros).await;
}

#[tokio::test]
async fn corruption_in_a_sealed_segment_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let topic = "sealed.course-events";
    {
        let store = EmbeddedStore::open_with(
            dir.path(),
            EmbeddedOptions {
                segment_bytes: 4096,
            },
        )
        .expect("opening");
        store
            .ensure_topics(&[spec(topic, 1)])
            .await
            .expect("creating");
        for idx in 0..200 {
            append_ok(
                &store,
                topic,
                vec![record("course", &format!("record {idx}"))],
            )
            .await;
        }
    }
    let first = segment_files(dir.path(), topic, 0).remove(0);
    let mut bytes = fs::read(&first).expect("reading the first segment");
    bytes[100] ^= 0xff;
    fs::write(&first, bytes).expect("writing the first segment");
    assert!(matches!(
        EmbeddedStore::open(dir.path()),
        Err(StreamError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    const N_APPENDS: usize = 100;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("opening"));
    store
        .ensure_topics(&[spec("group.commit", 1)])
        .await
        .expect("creating");
    let fsyncs_before = store.fsync_count();
    let commits_before = store.commit_count();
    let barrier = Arc::new(tokio::sync::Barrier::new(N_APPENDS));
    let tasks: Vec<_> = (0..N_APPENDS)
        .map(|idx| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                append_ok(
                    &store,
                    "group.commit",
                    vec![record(&format!("course-{idx}"), "response")],
                )
                .await[0]
            })
        })
        .collect();
    let mut offsets = Vec::new();
    for task in tasks {
        offsets.push(task.await.expect("append task").1);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..N_APPENDS as i64).collect::<Vec<_>>());
    let fsyncs = store.fsync_count() - fsyncs_before;
    let commits = store.commit_count() - commits_before;
    eprintln!("{N_APPENDS} concurrent appends took {fsyncs} fsyncs in {commits} group commits");
    assert!(fsyncs >= 1);
    assert!(
        fsyncs <= 25,
        "{N_APPENDS} concurrent appends took {fsyncs} fsyncs"
    );
}
