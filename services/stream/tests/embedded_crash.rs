//! A real kill -9 of a process appending to the embedded log: every acknowledged record survives.
//!
//! Its own test binary: the child it spawns would otherwise inherit, between fork and exec,
//! the lock files of logs that tests running beside it open and reopen.

mod common;
mod conformance;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{OutgoingRecord, StreamStore};

use common::{append_ok, read_partition, spec};

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
