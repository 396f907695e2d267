//! The writer checks new events against its index in memory and answers once the log has
//! them, without waiting for the event-log projection (issue 16): with the projection's
//! consumer not running at all, writes of new events (creates with their metadata numbers
//! too) are answered and read back as taken by the next check. The rare answers that need a stored row (a slot conflict's holder, a
//! re-sent identity's row) wait until the projection holds every delivered record, and
//! then answer exactly as before.

use std::sync::Arc;
use std::time::Duration;

use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::SequenceNumber;
use biglearn_gateway::requests::{candidates, parse_request, Endpoint, Request};
use biglearn_gateway::writer::{CandidateOutcome, WriteError, WriteReceipt, Writer, WriterConfig};
use biglearn_projector::consumer::{EventLogConsumerConfig, EventLogProjection};
use biglearn_projector::event_log::EventLog;
use biglearn_runtime::ConsumerProgress;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{SharedStreamStore, Topics};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

const COURSE: &str = "c2b8a4a6-3a52-4a8e-9d52-6f0f4b1f8e11";
const SECOND_COURSE: &str = "d3c9b5b7-4b63-4b9f-8e63-7a1f5c2f9f22";

fn active_dates(request_uuid: &str, sequence_number: i64) -> Value {
    json!({
        "request_uuid": request_uuid,
        "course_uuid": COURSE,
        "sequence_number": sequence_number,
        "starts_at": "2017-03-27T23:26:43.502491Z",
        "ends_at": "2017-10-27T23:26:43.502707Z",
        "updated_at": "2017-06-28T23:26:45.704487Z",
    })
}

async fn write(
    writer: &Writer,
    endpoint: Endpoint,
    body: &Value,
) -> Result<WriteReceipt, WriteError> {
    let Request::Write(request) = parse_request(endpoint, body).expect("a valid body") else {
        panic!("a write");
    };
    writer.write(candidates(&request)).await
}

fn all_written(receipt: &WriteReceipt) -> bool {
    receipt
        .outcomes
        .iter()
        .all(|(_, outcome)| *outcome == CandidateOutcome::Written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_are_checked_in_memory_and_rare_answers_wait_for_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStreamStore =
        Arc::new(EmbeddedStore::open(&dir.path().join("log")).expect("the log opens"));
    let topics = Topics::new("index");
    store
        .ensure_topics(&topics.all_specs(1))
        .await
        .expect("topics");
    let db = sled::Config::new().temporary(true).open().unwrap();
    let log = EventLog::open(&db, "event_log").unwrap();
    let (course_tx, course_rx) = watch::channel(ConsumerProgress::default());
    let (_ecosystem_tx, ecosystem_rx) = watch::channel(ConsumerProgress::default());
    let writer = Arc::new(Writer::new(
        store.clone(),
        log.clone(),
        WriterConfig {
            writer_id: "test".into(),
            topics: topics.clone(),
        },
        biglearn_telemetry::Metrics::new("test"),
        [
            (topics.course_events(), course_rx),
            (topics.ecosystem_events(), ecosystem_rx),
        ]
        .into_iter()
        .collect(),
    ));
    // The log is empty, so the index is in sync (what `resync_when_caught_up` decides once
    // the consumers report their positions; here none runs yet).
    writer.load_index().expect("the index loads");
    writer
        .resync_flag()
        .store(false, std::sync::atomic::Ordering::SeqCst);

    // No event-log consumer runs: these answers cannot come from the projection.
    let create = json!({
        "course_uuid": COURSE,
        "ecosystem_uuid": "0f5c6f7e-1f1e-4f55-8d3c-1b7a3c1e2d44",
        "is_real_course": true,
        "starts_at": "2017-03-27T23:26:43.502491Z",
        "ends_at": "2017-09-27T23:26:43.502707Z",
        "created_at": "2017-06-27T23:26:45.704487Z",
    });
    let first = "5b1d7d1e-0000-4000-8000-000000000001";
    let rival = "5b1d7d1e-0000-4000-8000-000000000002";
    let in_time = |what: &'static str| {
        move |outcome: Result<Result<WriteReceipt, WriteError>, tokio::time::error::Elapsed>| {
            outcome.unwrap_or_else(|_| panic!("{what}: waited for the projection"))
        }
    };
    let created = tokio::time::timeout(
        Duration::from_secs(20),
        write(&writer, Endpoint::CreateCourse, &create),
    )
    .await;
    assert!(all_written(
        &in_time("create_course")(created).expect("accepted")
    ));
    // A second course's create takes the next metadata number from the index too.
    let mut second = create.clone();
    second["course_uuid"] = json!(SECOND_COURSE);
    let created = tokio::time::timeout(
        Duration::from_secs(20),
        write(&writer, Endpoint::CreateCourse, &second),
    )
    .await;
    assert!(all_written(
        &in_time("a second create_course")(created).expect("accepted")
    ));
    for seq in 1..=3 {
        let request_uuid = format!("5b1d7d1e-0000-4000-8000-00000000010{seq}");
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            write(
                &writer,
                Endpoint::UpdateCourseActiveDates,
                &active_dates(if seq == 1 { first } else { &request_uuid }, seq),
            ),
        )
        .await;
        assert!(all_written(
            &in_time("a new slot")(outcome).expect("accepted")
        ));
    }
    let course = Uuid::parse_str(COURSE).unwrap();
    assert!(
        log.event(StreamKind::Course, course, SequenceNumber(1))
            .unwrap()
            .is_none(),
        "the projection holds nothing yet: the answers came from the index in memory"
    );

    // A rival event at slot 1: a conflict, whose holder is read from the projection once
    // it holds every delivered record; a re-send of slot 1's event: a no-op, likewise.
    let conflict = tokio::spawn({
        let writer = writer.clone();
        async move {
            write(
                &writer,
                Endpoint::UpdateCourseActiveDates,
                &active_dates(rival, 1),
            )
            .await
        }
    });
    let resent = tokio::spawn({
        let writer = writer.clone();
        async move {
            write(
                &writer,
                Endpoint::UpdateCourseActiveDates,
                &active_dates(first, 1),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !conflict.is_finished() && !resent.is_finished(),
        "rare answers wait for the projection"
    );

    // Now the event-log consumer runs and catches up; both answers follow.
    let (stop_tx, stop_rx) = watch::channel(false);
    let projection = EventLogProjection::new(
        log.clone(),
        store.clone(),
        EventLogConsumerConfig {
            checkpoint: Default::default(),
            write_dead_letters: true,
            component: "event_log".into(),
            stream: StreamKind::Course,
            topic: topics.course_events(),
            dlq_topic: topics.dlq(),
            max_batch: 2000,
            poll_timeout: Duration::from_millis(100),
            metrics: biglearn_telemetry::Metrics::new("test"),
        },
    );
    let consumer = biglearn_runtime::TopicConsumer::new(
        topics.course_events(),
        "event_log",
        biglearn_projector::decoded::decoder(StreamKind::Course),
    )
    .feed("event_log", Arc::new(projection), course_tx)
    .run(store.clone(), stop_rx);
    let consumer = tokio::spawn(consumer);

    let conflict = tokio::time::timeout(Duration::from_secs(30), conflict)
        .await
        .expect("the conflict is answered once the projection caught up")
        .unwrap();
    match conflict {
        Err(WriteError::Conflicts(conflicts)) => {
            assert_eq!(conflicts.len(), 1);
            assert_eq!(conflicts[0].sequence_number, SequenceNumber(1));
            assert_eq!(conflicts[0].taken_by.0, Uuid::parse_str(first).unwrap());
            assert_eq!(
                conflicts[0].taken_by_type.as_deref(),
                Some("update_course_active_dates")
            );
        }
        other => panic!("a slot conflict, got {other:?}"),
    }
    let resent = tokio::time::timeout(Duration::from_secs(30), resent)
        .await
        .expect("the re-send is answered once the projection caught up")
        .unwrap()
        .expect("a re-send is accepted");
    match &resent.outcomes[..] {
        [(_, CandidateOutcome::Existing(row))] => {
            assert_eq!(row.sequence_number, SequenceNumber(1));
            assert_eq!(row.aggregate, course);
        }
        other => panic!("a no-op by identity, got {other:?}"),
    }
    // Reads in this process see every answered write.
    writer.await_writes_indexed().await;
    for seq in 0..=3 {
        assert!(log
            .event(StreamKind::Course, course, SequenceNumber(seq))
            .unwrap()
            .is_some());
    }
    // The two creates hold metadata numbers 0 and 1, in the order they were accepted.
    let numbers: Vec<(Uuid, i64)> = log
        .metadata_from(StreamKind::Course, 0, 10, true)
        .unwrap()
        .into_iter()
        .map(|row| (row.aggregate, row.metadata_sequence_number))
        .collect();
    assert_eq!(
        numbers,
        [(course, 0), (Uuid::parse_str(SECOND_COURSE).unwrap(), 1)]
    );
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
}
