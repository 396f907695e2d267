//! Tests of the embedded backend: the conformance suite, restart, torn tails, a real kill -9, group commit.

mod conformance;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_stream::embedded::{EmbeddedOptions, EmbeddedStore};
use biglearn_stream::{
    ConsumedRecord, DeliveryError, OutgoingRecord, StreamError, StreamStore, TopicSpec,
};

fn spec(name: &str, partitions: i32) -> TopicSpec {
    conformance::spec(name.to_owned(), partitions)
}

fn record(key: &str, value: &str) -> OutgoingRecord {
    OutgoingRecord {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        headers: vec![("bl-event-type".to_owned(), b"test".to_vec())],
    }
}

async fn append_ok(
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
async fn read_partition(
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

fn segment_files(dir: &Path, topic: &str, partition: i32) -> Vec<PathBuf> {
    let partition_dir = dir.join(topic).join(format!("partition-{partition:04}"));
    let mut files: Vec<PathBuf> = fs::read_dir(&partition_dir)
        .expect("listing a partition")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

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
        Err(StreamError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock);
            assert_eq!(source.to_string(), "another process has this log open");
        }
        other => panic!("a second open was not refused: {:?}", other.map(|_| ())),
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

const CRASH_CHILD_ENV: &str = "BIGLEARN_STREAM_CRASH_CHILD_DIR";
const CRASH_TEST_NAME: &str = "a_kill_during_appends_keeps_every_acknowledged_record";
const CRASH_TOPIC: &str = "crash.course-events";
const CRASH_PARTITIONS: i32 = 4;
const ACKED_MARKER: &str = "ACKED ";

fn crash_record(task_idx: usize, seq: usize) -> OutgoingRecord {
    let key = format!("course-{task_idx}-{}", seq % 10);
    OutgoingRecord {
        value: format!("task {task_idx} seq {seq} {}", "v".repeat(200 + seq % 100)).into_bytes(),
        headers: vec![(
            "bl-sequence-number".to_owned(),
            seq.to_string().into_bytes(),
        )],
        key: key.into_bytes(),
    }
}

/// The child: appends from several tasks forever (bounded), printing every acknowledgement.
fn run_crashing_writer(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir).expect("opening"));
        store
            .ensure_topics(&[spec(CRASH_TOPIC, CRASH_PARTITIONS)])
            .await
            .expect("creating");
        let tasks: Vec<_> = (0..6)
            .map(|task_idx| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    // Bounded: the parent kills the child long before this ends.
                    for seq in (0..200_000).step_by(2) {
                        let records =
                            vec![crash_record(task_idx, seq), crash_record(task_idx, seq + 1)];
                        let outcomes = store.append(CRASH_TOPIC, records).await.expect("appending");
                        let mut stdout = std::io::stdout().lock();
                        for (record_idx, outcome) in outcomes.into_iter().enumerate() {
                            let delivered = outcome.expect("delivered");
                            writeln!(
                                stdout,
                                "\n{ACKED_MARKER}{} {} {task_idx} {}",
                                delivered.partition,
                                delivered.offset,
                                seq + record_idx
                            )
                            .expect("writing to stdout");
                        }
                        stdout.flush().expect("flushing stdout");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("append task");
        }
    });
}

#[test]
fn a_kill_during_appends_keeps_every_acknowledged_record() {
    if let Some(child_dir) = std::env::var_os(CRASH_CHILD_ENV) {
        run_crashing_writer(Path::new(&child_dir));
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            CRASH_TEST_NAME,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the crashing writer");
    let stdout = child.stdout.take().expect("the child's stdout");
    let (lines_sender, lines) = std::sync::mpsc::channel();
    let reader_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(position) = line.find(ACKED_MARKER) {
                let fields: Vec<i64> = line[position + ACKED_MARKER.len()..]
                    .split_whitespace()
                    .map(|field| field.parse().expect("a number"))
                    .collect();
                if lines_sender.send(fields).is_err() {
                    break;
                }
            }
        }
    });
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.len() < 3000 && Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(fields) => acknowledged.push(fields),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    child.kill().expect("SIGKILL to the writer");
    let status = child.wait().expect("reaping the writer");
    assert!(
        !status.success(),
        "the writer was killed, it did not finish"
    );
    reader_thread.join().expect("the stdout reader");
    // Acknowledgements the child printed before it died are still in the pipe.
    acknowledged.extend(lines.try_iter());
    assert!(
        acknowledged.len() >= 3000,
        "only {} acknowledgements before the deadline",
        acknowledged.len()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path()).expect("reopening after the crash");
        let high_watermarks = store
            .high_watermarks(CRASH_TOPIC)
            .await
            .expect("high watermarks");
        let mut by_position = std::collections::HashMap::new();
        for partition in 0..CRASH_PARTITIONS {
            // Every record in the log, acknowledged or not, is whole and exactly what
            // some task appended: nothing half-written is visible.
            for consumed in read_partition(&store, CRASH_TOPIC, partition, 0).await {
                let value =
                    String::from_utf8(consumed.value.clone().expect("a value")).expect("utf-8");
                let fields: Vec<&str> = value.split_whitespace().collect();
                let task_idx: usize = fields[1].parse().expect("a task");
                let seq: usize = fields[3].parse().expect("a seq");
                let expected = crash_record(task_idx, seq);
                assert_eq!(consumed.key.as_deref(), Some(expected.key.as_slice()));
                assert_eq!(consumed.value.as_deref(), Some(expected.value.as_slice()));
                assert_eq!(consumed.headers, expected.headers);
                by_position.insert((consumed.partition, consumed.offset), (task_idx, seq));
            }
        }
        for fields in &acknowledged {
            let (partition, offset, task_idx, seq) = (
                fields[0] as i32,
                fields[1],
                fields[2] as usize,
                fields[3] as usize,
            );
            assert_eq!(
                by_position.get(&(partition, offset)),
                Some(&(task_idx, seq)),
                "acknowledged record {partition}/{offset} lost after the crash"
            );
        }
        eprintln!(
            "{} acknowledged before SIGKILL, {} records in the log after recovery",
            acknowledged.len(),
            by_position.len()
        );
        let next = append_ok(&store, CRASH_TOPIC, vec![crash_record(0, 0)]).await;
        assert_eq!(next[0].1, high_watermarks[next[0].0 as usize]);
    });
}
