//! Helpers of the integration tests: event records, bounded waits, reading a topic back.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use biglearn_domain::events::{
    Book, BookContainer, CourseEvent, CoursePayload, CreateEcosystem, EcosystemEvent,
    EcosystemPayload, EnvelopeMeta, Exercise, Pool, RecordResponse, Timestamp,
};
use biglearn_domain::ids::{
    BookContainerUuid, CourseUuid, EcosystemUuid, EventUuid, ExerciseGroupUuid, ExerciseUuid,
    ResponseUuid, SequenceNumber, StudentUuid, TrialUuid,
};
use biglearn_events::{
    course_event_record, decode_model_computed, ecosystem_event_record, EncodedRecord,
    ModelComputed,
};
use biglearn_stream::{OutgoingRecord, SharedStreamStore};
use uuid::Uuid;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn outgoing(record: EncodedRecord) -> OutgoingRecord {
    OutgoingRecord {
        key: record.key,
        value: record.value,
        headers: record.headers,
    }
}

fn meta(event: u128, seq: i64) -> EnvelopeMeta {
    EnvelopeMeta {
        event_uuid: EventUuid(id(event)),
        sequence_number: SequenceNumber(seq),
        accepted_at_micros: 1_500_000_000_000_000 + seq,
        writer_id: "test".into(),
        settings_version: 0,
        metadata_sequence_number: None,
    }
}

/// The group of exercise `g` of ecosystem `eco` (one version each, exercise = group + 1).
pub fn group(eco: u128, g: u128) -> ExerciseGroupUuid {
    ExerciseGroupUuid(id(eco << 32 | 0x100 | (g << 1)))
}

fn exercise(eco: u128, g: u128) -> ExerciseUuid {
    ExerciseUuid(id((eco << 32 | 0x100 | (g << 1)) + 1))
}

/// `create_ecosystem` of `eco`: one page holding `groups` groups.
pub fn create_ecosystem(eco: u128, groups: u128) -> OutgoingRecord {
    let root = BookContainerUuid(id(eco << 32 | 1));
    let page = BookContainerUuid(id(eco << 32 | 2));
    let event = EcosystemEvent {
        meta: meta(eco << 32 | 3, 0),
        ecosystem_uuid: EcosystemUuid(id(eco)),
        payload: EcosystemPayload::CreateEcosystem(Box::new(CreateEcosystem {
            ecosystem_uuid: EcosystemUuid(id(eco)),
            sequence_number: SequenceNumber(0),
            book: Book {
                cnx_identity: None,
                contents: vec![
                    BookContainer {
                        container_uuid: root,
                        container_parent_uuid: BookContainerUuid(id(eco)),
                        container_cnx_identity: None,
                        pools: vec![],
                    },
                    BookContainer {
                        container_uuid: page,
                        container_parent_uuid: root,
                        container_cnx_identity: None,
                        pools: vec![Pool {
                            use_for_clue: true,
                            use_for_personalized_for_assignment_types: vec![],
                            exercise_uuids: (0..groups).map(|g| exercise(eco, g)).collect(),
                        }],
                    },
                ],
            },
            exercises: (0..groups)
                .map(|g| Exercise {
                    exercise_uuid: exercise(eco, g),
                    group_uuid: group(eco, g),
                    version: 1,
                    los: vec![],
                })
                .collect(),
            imported_at: Timestamp::from("2017-01-01T00:00:00Z"),
        })),
    };
    let mut event = event;
    event.meta.metadata_sequence_number = Some(0);
    outgoing(ecosystem_event_record(&event))
}

/// Response `n` (unique) of student `student` of course `course` to group `g` of `eco`,
/// at course sequence `seq`.
pub fn response(
    eco: u128,
    course: u128,
    seq: i64,
    n: u128,
    student: u128,
    g: u128,
    correct: bool,
) -> OutgoingRecord {
    let event = CourseEvent {
        meta: meta(0xe000_0000 + n, seq),
        course_uuid: CourseUuid(id(course)),
        payload: CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(id(0xa000_0000 + n)),
            course_uuid: CourseUuid(id(course)),
            sequence_number: SequenceNumber(seq),
            ecosystem_uuid: EcosystemUuid(id(eco)),
            trial_uuid: TrialUuid(id(0xb000_0000 + n)),
            student_uuid: StudentUuid(id(0xc000_0000 + student)),
            exercise_uuid: exercise(eco, g),
            is_correct: correct,
            is_real_response: true,
            responded_at: Timestamp::from("2017-01-01T00:00:00Z"),
        }),
    };
    outgoing(course_event_record(&event))
}

/// Appends and checks every delivery.
pub async fn append(store: &SharedStreamStore, topic: &str, records: Vec<OutgoingRecord>) {
    for outcome in store.append(topic, records).await.expect("append") {
        outcome.expect("delivered");
    }
}

/// Every model on `topic`, in partition then offset order.
pub async fn models_on(store: &SharedStreamStore, topic: &str) -> Vec<ModelComputed> {
    let high = store.high_watermarks(topic).await.expect("high watermarks");
    let start: Vec<(i32, i64)> = (0..high.len() as i32).map(|p| (p, 0)).collect();
    let total: i64 = high.iter().sum();
    let mut reader = store.open_reader(topic, &start).await.expect("reader");
    let mut models = Vec::new();
    for _ in 0..200 {
        if models.len() as i64 >= total {
            break;
        }
        for record in reader
            .poll(1000, Duration::from_millis(100))
            .await
            .expect("poll")
        {
            models.push(decode_model_computed(&record.value.expect("value")).expect("model"));
        }
    }
    models
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
