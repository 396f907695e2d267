//! The event-log consumer against a real (embedded) log: a second event at a taken slot
//! (split-brain) and poison records go to the dead-letter topic while the consumer
//! continues; positions are stored with the state, so a restart re-reads nothing.

use std::sync::Arc;
use std::time::Duration;

use biglearn_domain::events::{
    CourseEvent, CoursePayload, CreateCourse, EnvelopeMeta, NoOp, NoOpReason, StreamKind,
};
use biglearn_domain::ids::{CourseUuid, EcosystemUuid, EventUuid, SequenceNumber};
use biglearn_events::{
    course_event_record, decode_dead_letter, DeadLetterReason, HEADER_AGGREGATE_UUID,
    HEADER_EVENT_TYPE, HEADER_EVENT_UUID, HEADER_SEQUENCE_NUMBER,
};
use biglearn_projector::consumer::{
    run_event_log_consumer, ConsumerProgress, EventLogConsumerConfig,
};
use biglearn_projector::event_log::EventLog;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{OutgoingRecord, SharedStreamStore, Topics};
use tokio::sync::watch;
use uuid::Uuid;

fn event(course: u128, seq: i64, identity: u128) -> CourseEvent {
    let course_uuid = CourseUuid(Uuid::from_u128(course));
    let meta = EnvelopeMeta {
        event_uuid: EventUuid(Uuid::from_u128(identity)),
        sequence_number: SequenceNumber(seq),
        accepted_at_micros: 1_700_000_000_000_000,
        writer_id: "test".into(),
        settings_version: 0,
        metadata_sequence_number: (seq == 0).then_some(course as i64),
    };
    let payload = if seq == 0 {
        CoursePayload::CreateCourse(CreateCourse {
            course_uuid,
            sequence_number: SequenceNumber(0),
            ecosystem_uuid: EcosystemUuid(Uuid::from_u128(99)),
            is_real_course: true,
            starts_at: "2017-01-01T00:00:00Z".into(),
            ends_at: "2017-06-01T00:00:00Z".into(),
            created_at: "2017-01-01T00:00:00Z".into(),
        })
    } else {
        CoursePayload::NoOp(NoOp {
            reason: NoOpReason::Imported,
            actor: None,
            detail_json: None,
            through_sequence_number: None,
        })
    };
    CourseEvent {
        meta,
        course_uuid,
        payload,
    }
}

fn record(event: &CourseEvent) -> OutgoingRecord {
    let encoded = course_event_record(event);
    OutgoingRecord {
        key: encoded.key,
        value: encoded.value,
        headers: encoded.headers,
    }
}

async fn consume_until_caught_up(
    log: &EventLog,
    store: &SharedStreamStore,
    topics: &Topics,
) -> ConsumerProgress {
    let (progress_tx, mut progress_rx) = watch::channel(ConsumerProgress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = EventLogConsumerConfig {
        checkpoint: Default::default(),
        write_dead_letters: true,
        component: "event_log".into(),
        stream: StreamKind::Course,
        topic: topics.course_events(),
        dlq_topic: topics.dlq(),
        max_batch: 3,
        poll_timeout: Duration::from_millis(20),
        metrics: biglearn_telemetry::Metrics::new("test"),
    };
    let task = tokio::spawn(run_event_log_consumer(
        log.clone(),
        store.clone(),
        config,
        progress_tx,
        stop_rx,
    ));
    let high = store
        .high_watermarks(&topics.course_events())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            {
                let progress = progress_rx.borrow_and_update();
                if progress.caught_up && progress.positions == high {
                    break;
                }
            }
            progress_rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the consumer catches up");
    let last = progress_rx.borrow().clone();
    stop_tx.send_replace(true);
    task.await.unwrap().unwrap();
    last
}

async fn dead_letters(
    store: &SharedStreamStore,
    topics: &Topics,
) -> Vec<biglearn_events::DeadLetter> {
    let n_partitions = store.partition_count(&topics.dlq()).await.unwrap();
    let start: Vec<(i32, i64)> = (0..n_partitions).map(|partition| (partition, 0)).collect();
    let mut reader = store.open_reader(&topics.dlq(), &start).await.unwrap();
    let mut letters = Vec::new();
    loop {
        let records = reader.poll(100, Duration::from_millis(50)).await.unwrap();
        if records.is_empty() {
            break;
        }
        for record in records {
            letters.push(decode_dead_letter(record.value.as_deref().unwrap()).unwrap());
        }
    }
    letters.sort_by_key(|letter| letter.source_offset);
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_poison_go_to_the_dlq_and_the_consumer_continues() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStreamStore = Arc::new(EmbeddedStore::open(&dir.path().join("log")).unwrap());
    let topics = Topics::new("t");
    store.ensure_topics(&topics.all_specs(1)).await.unwrap();
    let course = 1;
    let first = event(course, 1, 101);
    let split_brain = event(course, 1, 102);
    let routable_poison = OutgoingRecord {
        key: Uuid::from_u128(course).to_string().into_bytes(),
        value: b"\xc3\x01not avro at all".to_vec(),
        headers: vec![
            (HEADER_EVENT_TYPE.into(), b"record_response".to_vec()),
            (
                HEADER_EVENT_UUID.into(),
                Uuid::from_u128(103).to_string().into_bytes(),
            ),
            (
                HEADER_AGGREGATE_UUID.into(),
                Uuid::from_u128(course).to_string().into_bytes(),
            ),
            (HEADER_SEQUENCE_NUMBER.into(), b"2".to_vec()),
        ],
    };
    let unroutable_poison = OutgoingRecord {
        key: Uuid::from_u128(course).to_string().into_bytes(),
        value: vec![0xff; 7],
        headers: Vec::new(),
    };
    let records = vec![
        record(&event(course, 0, 100)),
        record(&first),
        record(&split_brain),
        routable_poison,
        unroutable_poison,
        record(&event(course, 3, 104)),
        record(&event(2, 0, 200)),
    ];
    let outcomes = store
        .append(&topics.course_events(), records)
        .await
        .unwrap();
    assert!(outcomes.iter().all(Result::is_ok));

    let db = sled::Config::new().temporary(true).open().unwrap();
    let log = EventLog::open(&db, "event_log").unwrap();
    let progress = consume_until_caught_up(&log, &store, &topics).await;
    assert_eq!(progress.n_dead_lettered, 3);

    // The first event of the slot wins; the other is a dead letter, never applied.
    let slot = log
        .event(
            StreamKind::Course,
            Uuid::from_u128(course),
            SequenceNumber(1),
        )
        .unwrap()
        .unwrap();
    assert_eq!(slot.event_uuid, first.meta.event_uuid);
    // The routable poison holds its slot as an opaque entry; the consumer went on.
    let opaque = log
        .event(
            StreamKind::Course,
            Uuid::from_u128(course),
            SequenceNumber(2),
        )
        .unwrap()
        .unwrap();
    assert_eq!(opaque.event_data, None);
    assert!(log
        .event(
            StreamKind::Course,
            Uuid::from_u128(course),
            SequenceNumber(3)
        )
        .unwrap()
        .is_some());
    assert!(log
        .event(StreamKind::Course, Uuid::from_u128(2), SequenceNumber(0))
        .unwrap()
        .is_some());

    let letters = dead_letters(&store, &topics).await;
    let reasons: Vec<DeadLetterReason> = letters.iter().map(|letter| letter.reason).collect();
    assert_eq!(
        reasons,
        vec![
            DeadLetterReason::SlotConflict,
            DeadLetterReason::Undecodable,
            DeadLetterReason::Undecodable
        ]
    );
    assert_eq!(
        letters[0].source_offset, 2,
        "the second event at the slot is the dead letter"
    );
    assert_eq!(letters[0].consumer_group_or_component, "event_log");

    // Positions were stored with the state: a restart re-reads nothing.
    let again = consume_until_caught_up(&log, &store, &topics).await;
    assert_eq!(
        again.n_applied + again.n_duplicates + again.n_dead_lettered,
        0
    );
    assert_eq!(dead_letters(&store, &topics).await.len(), 3);
}
