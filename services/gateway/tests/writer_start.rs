//! A writer refuses writes until its index has caught up with the log (issue 16): at
//! start the event-log consumers may still be reading what earlier writers appended, and a
//! write checked against an index that is behind could take a slot already taken. The
//! refusal is a 503-class `Unavailable` that appends nothing; writes resume by themselves
//! once every partition of both event topics is indexed up to its high watermark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_gateway::requests::{candidates, parse_request, Endpoint, Request};
use biglearn_gateway::resync_when_caught_up;
use biglearn_gateway::writer::{WriteError, Writer, WriterConfig};
use biglearn_projector::event_log::EventLog;
use biglearn_runtime::ConsumerProgress;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{OutgoingRecord, SharedStreamStore, Topics};
use serde_json::json;
use tokio::sync::watch;

async fn high_watermarks(store: &SharedStreamStore, topic: &str) -> Vec<i64> {
    store.high_watermarks(topic).await.expect("high watermarks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_refuses_writes_until_its_index_has_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStreamStore =
        Arc::new(EmbeddedStore::open(&dir.path().join("log")).expect("the log opens"));
    let topics = Topics::new("start");
    store
        .ensure_topics(&topics.all_specs(1))
        .await
        .expect("topics");
    // What an earlier writer appended, not yet indexed by this process.
    let outcomes = store
        .append(
            &topics.course_events(),
            vec![OutgoingRecord {
                key: b"earlier".to_vec(),
                value: b"an event of an earlier writer".to_vec(),
                headers: Vec::new(),
            }],
        )
        .await
        .expect("append");
    assert!(outcomes.iter().all(Result::is_ok));
    let course_high = high_watermarks(&store, &topics.course_events()).await;
    let ecosystem_high = high_watermarks(&store, &topics.ecosystem_events()).await;

    let db = sled::Config::new().temporary(true).open().unwrap();
    let log = EventLog::open(&db, "event_log").unwrap();
    let (course_tx, course_rx) = watch::channel(ConsumerProgress::default());
    let (ecosystem_tx, ecosystem_rx) = watch::channel(ConsumerProgress::default());
    let progresses = vec![
        (topics.course_events(), course_rx),
        (topics.ecosystem_events(), ecosystem_rx),
    ];
    let writer = Arc::new(Writer::new(
        store.clone(),
        log,
        WriterConfig {
            writer_id: "test".into(),
            topics: topics.clone(),
        },
        biglearn_telemetry::Metrics::new("test"),
        progresses.iter().cloned().collect(),
    ));
    let resync = tokio::spawn(resync_when_caught_up(
        writer.clone(),
        store.clone(),
        progresses,
    ));

    let body = json!({
        "course_uuid": "c2b8a4a6-3a52-4a8e-9d52-6f0f4b1f8e11",
        "ecosystem_uuid": "0f5c6f7e-1f1e-4f55-8d3c-1b7a3c1e2d44",
        "is_real_course": true,
        "starts_at": "2017-03-27T23:26:43.502491Z",
        "ends_at": "2017-09-27T23:26:43.502707Z",
        "created_at": "2017-06-27T23:26:45.704487Z",
    });
    let Request::Write(request) = parse_request(Endpoint::CreateCourse, &body).unwrap() else {
        panic!("a write");
    };
    let refuse = |what: &str, outcome: Result<_, WriteError>| match outcome {
        Err(WriteError::Unavailable { detail }) => {
            assert!(detail.contains("catching up"), "{what}: {detail}")
        }
        other => panic!("{what}: refused while the index is behind, got {other:?}"),
    };

    // The consumers have not opened their partitions yet: no position known, which is not
    // "caught up" (given the resync task time to look, several of its 200 ms rounds).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(writer.is_resyncing());
    refuse(
        "before any position",
        writer.write(candidates(&request)).await,
    );
    // Opened, but one record behind on the course topic.
    let behind: Vec<i64> = course_high.iter().map(|high| (high - 1).max(0)).collect();
    course_tx.send_replace(ConsumerProgress {
        positions: behind,
        ..ConsumerProgress::default()
    });
    ecosystem_tx.send_replace(ConsumerProgress {
        positions: ecosystem_high.clone(),
        ..ConsumerProgress::default()
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    refuse(
        "one record behind",
        writer.write(candidates(&request)).await,
    );
    // Nothing of the refused writes was appended.
    assert_eq!(
        high_watermarks(&store, &topics.course_events()).await,
        course_high
    );

    // Caught up: writes are accepted again, by themselves.
    course_tx.send_replace(ConsumerProgress {
        positions: course_high.clone(),
        ..ConsumerProgress::default()
    });
    let started = Instant::now();
    while writer.is_resyncing() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the writer never resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    resync.abort();
}
