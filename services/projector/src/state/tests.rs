//! The state projection without a stream: ordering under shuffled delivery, gaps filled by
//! the real event and by a no_op, duplicates, conflicts, opaque entries, the wait for an
//! unknown preparation, and hash equality however the log is batched.

use biglearn_domain::events::*;
use biglearn_domain::ids::*;
use biglearn_domain::state::{StateView, TrialState};
use biglearn_events::encode_course_event;
use uuid::Uuid;

use super::*;

const COURSE: CourseUuid = CourseUuid(Uuid::from_u128(0xC0));
const OTHER_COURSE: CourseUuid = CourseUuid(Uuid::from_u128(0xC1));
const ECO: EcosystemUuid = EcosystemUuid(Uuid::from_u128(0xEA));

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn event(course: CourseUuid, seq: i64, payload: CoursePayload) -> CourseEvent {
    CourseEvent {
        meta: EnvelopeMeta {
            event_uuid: EventUuid(id(course.0.as_u128() << 32 | seq as u128)),
            sequence_number: SequenceNumber(seq),
            accepted_at_micros: 1_700_000_000_000_000 + seq,
            writer_id: "test".into(),
            settings_version: 0,
            metadata_sequence_number: (seq == 0).then_some(1),
        },
        course_uuid: course,
        payload,
    }
}

fn create_course(course: CourseUuid) -> CourseEvent {
    event(
        course,
        0,
        CoursePayload::CreateCourse(CreateCourse {
            course_uuid: course,
            sequence_number: SequenceNumber(0),
            ecosystem_uuid: ECO,
            is_real_course: true,
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: "2026-06-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }),
    )
}

fn no_op(course: CourseUuid, seq: i64) -> CourseEvent {
    let mut e = event(
        course,
        seq,
        CoursePayload::NoOp(NoOp {
            reason: NoOpReason::AdminFill,
            actor: Some("ops".into()),
            detail_json: None,
            through_sequence_number: None,
        }),
    );
    e.meta.event_uuid = EventUuid(uuid_v5(&format!("no_op/course/{}/{seq}", course.0)));
    e
}

fn roster(course: CourseUuid, seq: i64) -> CourseEvent {
    event(
        course,
        seq,
        CoursePayload::UpdateRoster(UpdateRoster {
            request_uuid: RequestUuid(id(0x1000 + seq as u128)),
            course_uuid: course,
            sequence_number: SequenceNumber(seq),
            course_containers: vec![RosterCourseContainer {
                container_uuid: CourseContainerUuid(id(0x50)),
                parent_container_uuid: CourseContainerUuid(course.0),
                created_at: "2026-01-01T00:00:00Z".into(),
                archived_at: None,
            }],
            students: vec![RosterStudent {
                student_uuid: StudentUuid(id(1)),
                container_uuid: CourseContainerUuid(id(0x50)),
                enrolled_at: "2026-01-01T00:00:00Z".into(),
                last_course_container_change_at: "2026-01-01T00:00:00Z".into(),
                dropped_at: None,
            }],
        }),
    )
}

fn assignment(course: CourseUuid, seq: i64) -> CourseEvent {
    event(
        course,
        seq,
        CoursePayload::CreateUpdateAssignment(CreateUpdateAssignment {
            request_uuid: RequestUuid(id(0x2000 + seq as u128)),
            course_uuid: course,
            sequence_number: SequenceNumber(seq),
            assignment_uuid: AssignmentUuid(id(0xA1)),
            is_deleted: false,
            ecosystem_uuid: ECO,
            student_uuid: StudentUuid(id(1)),
            assignment_type: "homework".into(),
            exclusion_info: None,
            pes: None,
            spes: None,
            assigned_book_container_uuids: vec![BookContainerUuid(id(0xB1))],
            goal_num_tutor_assigned_spes: None,
            spes_are_assigned: false,
            goal_num_tutor_assigned_pes: None,
            pes_are_assigned: false,
            assigned_exercises: (0..3)
                .map(|n| AssignedExercise {
                    trial_uuid: TrialUuid(id(0x7000 + n)),
                    exercise_uuid: ExerciseUuid(id(0x70 + n)),
                    is_spe: false,
                    is_pe: false,
                })
                .collect(),
            created_at: "2026-01-04T00:00:00Z".into(),
            updated_at: "2026-01-04T00:00:00Z".into(),
        }),
    )
}

fn response(course: CourseUuid, seq: i64, n: u128) -> CourseEvent {
    event(
        course,
        seq,
        CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(id(0x8000 + seq as u128)),
            course_uuid: course,
            sequence_number: SequenceNumber(seq),
            ecosystem_uuid: ECO,
            trial_uuid: TrialUuid(id(0x7000 + n % 3)),
            student_uuid: StudentUuid(id(1)),
            exercise_uuid: ExerciseUuid(id(0x70 + n % 3)),
            is_correct: n % 2 == 0,
            is_real_response: true,
            responded_at: "2026-01-10T00:00:00Z".into(),
        }),
    )
}

/// A range no_op (docs/design/api.md D13) at `seq` covering through `through`.
fn range_no_op(course: CourseUuid, seq: i64, through: i64) -> CourseEvent {
    let mut e = no_op(course, seq);
    if let CoursePayload::NoOp(no_op) = &mut e.payload {
        no_op.through_sequence_number = Some(SequenceNumber(through));
    }
    e.meta.event_uuid = EventUuid(uuid_v5(&format!(
        "no_op/course/{}/{seq}-{through}",
        course.0
    )));
    e
}

/// A course's log: create, roster, assignment, then `n_responses` responses.
fn course_log(course: CourseUuid, n_responses: i64) -> Vec<CourseEvent> {
    let mut log = vec![
        create_course(course),
        roster(course, 1),
        assignment(course, 2),
    ];
    for seq in 3..3 + n_responses {
        log.push(response(course, seq, seq as u128));
    }
    log
}

fn projection() -> StateProjection {
    let db = sled::Config::new().temporary(true).open().unwrap();
    StateProjection::open(&db, "state").unwrap()
}

/// Offers `events` in batches of `batch` and commits each; returns the outcomes.
fn offer(projection: &StateProjection, events: &[CourseEvent], batch: usize) -> Vec<RecordOutcome> {
    let raws: Vec<Vec<u8>> = events.iter().map(encode_course_event).collect();
    let mut outcomes = Vec::new();
    for (chunk, raws) in events.chunks(batch).zip(raws.chunks(batch)) {
        let records: Vec<StateRecord<'_>> = chunk
            .iter()
            .zip(raws)
            .map(|(event, raw)| StateRecord::Course { event, raw })
            .collect();
        let staged = projection.stage(&records, &[("t", 0, 1)], 0).unwrap();
        outcomes.extend(staged.report.outcomes.clone());
        staged.commit().unwrap();
    }
    outcomes
}

fn n_responses(projection: &StateProjection, course: CourseUuid) -> usize {
    projection.with_view(|view| {
        view.student_responses(course, StudentUuid(id(1)))
            .unwrap()
            .len()
    })
}

#[test]
fn shuffled_delivery_gives_the_in_order_state_and_hash() {
    let log: Vec<CourseEvent> = course_log(COURSE, 40)
        .into_iter()
        .chain(course_log(OTHER_COURSE, 25))
        .collect();
    let in_order = projection();
    offer(&in_order, &log, 1000);

    // A deterministic shuffle: reverse blocks of 7, interleave the courses differently.
    let mut shuffled = log.clone();
    for chunk in shuffled.chunks_mut(7) {
        chunk.reverse();
    }
    shuffled.rotate_left(11);
    for batch in [1, 3, 50] {
        let other = projection();
        offer(&other, &shuffled, batch);
        assert_eq!(
            other.state_hash().unwrap(),
            in_order.state_hash().unwrap(),
            "batch {batch}"
        );
        assert_eq!(n_responses(&other, COURSE), 40);
        assert_eq!(n_responses(&other, OTHER_COURSE), 25);
        assert!(other.blocked().unwrap().is_empty());
    }
    let trial = in_order.with_view(|view| view.trial(COURSE, TrialUuid(id(0x7001))).unwrap());
    assert_eq!(
        trial,
        Some(TrialState {
            assignment: AssignmentUuid(id(0xA1)),
            exercise: ExerciseUuid(id(0x71)),
            is_spe: false,
            is_pe: false
        })
    );
}

#[test]
fn a_gap_parks_only_its_course_until_the_real_event_or_a_no_op_fills_it() {
    for fill_with_no_op in [false, true] {
        let projection = projection();
        let log = course_log(COURSE, 5);
        let mut without_4: Vec<CourseEvent> = log.clone();
        let missing = without_4.remove(4);
        // The other course shares the partition and keeps flowing.
        without_4.extend(course_log(OTHER_COURSE, 5));
        let outcomes = offer(&projection, &without_4, 4);
        assert_eq!(outcomes[4], RecordOutcome::Parked);
        assert_eq!(
            n_responses(&projection, COURSE),
            1,
            "only seq 3 applied before the gap"
        );
        assert_eq!(n_responses(&projection, OTHER_COURSE), 5);
        let blocked = projection.blocked().unwrap();
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].1, COURSE.0);
        assert_eq!(blocked[0].2.n_pending, 3);
        let before = projection.state_hash().unwrap();

        let filler = if fill_with_no_op {
            no_op(COURSE, 4)
        } else {
            missing
        };
        let outcomes = offer(&projection, &[filler], 1);
        assert_eq!(outcomes, vec![RecordOutcome::Applied { released: 3 }]);
        assert!(projection.blocked().unwrap().is_empty());
        let expected = if fill_with_no_op { 4 } else { 5 };
        assert_eq!(n_responses(&projection, COURSE), expected);
        assert_ne!(
            projection.state_hash().unwrap(),
            before,
            "applying changes the hash"
        );
    }
}

#[test]
fn duplicates_are_dropped_and_conflicts_reported() {
    let projection = projection();
    let log = course_log(COURSE, 3);
    offer(&projection, &log, 10);
    let hash = projection.state_hash().unwrap();
    // A re-delivery of an applied event: duplicate.
    assert_eq!(
        offer(&projection, &log[3..4], 1),
        vec![RecordOutcome::Duplicate]
    );
    // A parked event re-delivered with another identity: conflict (first received wins).
    let ahead = response(COURSE, 9, 1);
    assert_eq!(
        offer(&projection, std::slice::from_ref(&ahead), 1),
        vec![RecordOutcome::Parked]
    );
    let mut impostor = response(COURSE, 9, 2);
    impostor.meta.event_uuid = EventUuid(id(0xBAD));
    assert_eq!(
        offer(&projection, &[impostor], 1),
        vec![RecordOutcome::Conflict {
            taken_by: ahead.meta.event_uuid
        }]
    );
    assert_eq!(
        offer(&projection, &[ahead], 1),
        vec![RecordOutcome::Duplicate]
    );
    assert_ne!(
        projection.state_hash().unwrap(),
        hash,
        "a parked event is part of the state"
    );
}

#[test]
fn an_opaque_entry_blocks_its_course_until_a_build_decodes_it() {
    let projection = projection();
    let log = course_log(COURSE, 3);
    offer(&projection, &log[..3], 10);
    let raw = b"not avro".to_vec();
    let opaque = StateRecord::Opaque {
        stream: StreamKind::Course,
        aggregate: COURSE.0,
        sequence_number: SequenceNumber(3),
        event_uuid: log[3].meta.event_uuid,
        raw: &raw,
    };
    let staged = projection.stage(&[opaque], &[], 0).unwrap();
    assert_eq!(staged.report.outcomes, vec![RecordOutcome::Parked]);
    staged.commit().unwrap();
    // The next event parks behind the opaque entry.
    assert_eq!(
        offer(&projection, &log[4..5], 1),
        vec![RecordOutcome::Parked]
    );
    assert_eq!(n_responses(&projection, COURSE), 0);
    // An upgraded build re-reads the record and decodes it: the run is released.
    assert_eq!(
        offer(&projection, &log[3..4], 1),
        vec![RecordOutcome::Applied { released: 1 }]
    );
    assert_eq!(n_responses(&projection, COURSE), 2);
}

#[test]
fn an_update_with_an_unknown_preparation_waits_until_the_preparation_arrives() {
    let projection = projection();
    let mut log = vec![create_course(COURSE)];
    let update = event(
        COURSE,
        1,
        CoursePayload::UpdateCourseEcosystem(UpdateCourseEcosystem {
            request_uuid: RequestUuid(id(0x3000)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(1),
            preparation_uuid: PreparationUuid(id(0x9)),
            updated_at: "2026-02-01T00:00:00Z".into(),
        }),
    );
    log.push(update);
    log.push(roster(COURSE, 2));
    offer(&projection, &log, 10);
    assert_eq!(
        projection.blocked().unwrap().len(),
        1,
        "the course waits at the update"
    );
    let course = |p: &StateProjection| p.with_view(|v| v.course(COURSE).unwrap().unwrap());
    assert_eq!(course(&projection).current_ecosystem, ECO);
    assert!(projection.with_view(|v| v.students(COURSE).unwrap().is_empty()));

    let next = EcosystemUuid(id(0xEB));
    let prepare = event(
        COURSE,
        3,
        CoursePayload::PrepareCourseEcosystem(PrepareCourseEcosystem {
            preparation_uuid: PreparationUuid(id(0x9)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(3),
            ecosystem_uuid: next,
            ecosystem_map: EcosystemMap {
                from_ecosystem_uuid: ECO,
                to_ecosystem_uuid: next,
                book_container_mappings: vec![],
                exercise_mappings: vec![],
            },
            prepared_at: "2026-02-01T00:00:00Z".into(),
        }),
    );
    offer(&projection, &[prepare], 1);
    assert!(projection.blocked().unwrap().is_empty());
    assert_eq!(course(&projection).current_ecosystem, next);
    assert_eq!(
        projection.with_view(|v| v.students(COURSE).unwrap().len()),
        1
    );
    assert_eq!(
        projection
            .aggregate(StreamKind::Course, COURSE.0)
            .unwrap()
            .next_seq,
        SequenceNumber(4)
    );
}

#[test]
fn positions_are_committed_with_the_state_and_excluded_from_the_hash() {
    let projection = projection();
    let log = course_log(COURSE, 2);
    let raws: Vec<Vec<u8>> = log.iter().map(encode_course_event).collect();
    let records: Vec<StateRecord<'_>> = log
        .iter()
        .zip(&raws)
        .map(|(event, raw)| StateRecord::Course { event, raw })
        .collect();
    let staged = projection.stage(&records, &[("topic", 2, 5)], 0).unwrap();
    assert_eq!(
        projection.position("topic", 2).unwrap(),
        None,
        "nothing before commit"
    );
    staged.commit().unwrap();
    assert_eq!(projection.position("topic", 2).unwrap(), Some(5));
    let hash = projection.state_hash().unwrap();
    projection
        .stage(&[], &[("topic", 2, 9)], 0)
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(projection.state_hash().unwrap(), hash);
}

#[test]
fn the_settings_version_of_the_last_applied_event_is_kept_per_course() {
    let projection = projection();
    assert_eq!(projection.settings_version(COURSE.0).unwrap(), None);
    let mut log = course_log(COURSE, 2);
    for (idx, event) in log.iter_mut().enumerate() {
        event.meta.settings_version = 7 + idx as i64 / 3;
    }
    // Seq 4 is held back: the course's version is that of the last *applied* event.
    let last = log.pop().unwrap();
    offer(&projection, &log, 2);
    assert_eq!(projection.settings_version(COURSE.0).unwrap(), Some(8));
    let mut parked = response(COURSE, 6, 1);
    parked.meta.settings_version = 99;
    offer(&projection, &[parked], 1);
    assert_eq!(
        projection.settings_version(COURSE.0).unwrap(),
        Some(8),
        "parked events do not count"
    );
    offer(&projection, &[last], 1);
    assert_eq!(projection.settings_version(COURSE.0).unwrap(), Some(8));
}

#[test]
fn a_range_no_op_releases_the_events_parked_behind_two_million_missing_slots() {
    for batch in [1, 2, 10] {
        let projection = projection();
        let mut log = course_log(COURSE, 2);
        // 5 ..= 2_000_004 never arrive; two responses and a stray maximal one after them.
        log.push(response(COURSE, 2_000_005, 1));
        log.push(response(COURSE, 2_000_006, 2));
        log.push(response(COURSE, 2_147_483_647, 0));
        let outcomes = offer(&projection, &log, batch);
        assert_eq!(
            outcomes[5..],
            [
                RecordOutcome::Parked,
                RecordOutcome::Parked,
                RecordOutcome::Parked
            ]
        );
        assert_eq!(n_responses(&projection, COURSE), 2);

        let outcomes = offer(&projection, &[range_no_op(COURSE, 5, 2_000_004)], 1);
        assert_eq!(outcomes, [RecordOutcome::Applied { released: 2 }]);
        assert_eq!(n_responses(&projection, COURSE), 4);
        let sequence = projection.aggregate(StreamKind::Course, COURSE.0).unwrap();
        assert_eq!(sequence.next_seq, SequenceNumber(2_000_007));
        assert_eq!(
            sequence.n_pending, 1,
            "the stray one waits behind the next gap"
        );

        // Everything below the stray one, in one record; a re-delivery changes nothing.
        let fill = range_no_op(COURSE, 2_000_007, 2_147_483_646);
        let outcomes = offer(&projection, std::slice::from_ref(&fill), 1);
        assert_eq!(outcomes, [RecordOutcome::Applied { released: 1 }]);
        assert_eq!(offer(&projection, &[fill], 1), [RecordOutcome::Duplicate]);
        assert_eq!(n_responses(&projection, COURSE), 5);
        assert!(projection.blocked().unwrap().is_empty());
        assert_eq!(
            projection
                .aggregate(StreamKind::Course, COURSE.0)
                .unwrap()
                .next_seq,
            SequenceNumber(2_147_483_648)
        );
    }
}

#[test]
fn a_range_parked_behind_a_gap_is_kept_in_its_pending_row_and_applied_with_it() {
    let projection = projection();
    let log = course_log(COURSE, 1);
    // 4 is missing; the range 5..=1_000 and a response after it wait behind it.
    let mut parked = log.clone();
    parked.push(range_no_op(COURSE, 5, 1_000));
    parked.push(response(COURSE, 1_001, 1));
    let outcomes = offer(&projection, &parked, 1);
    assert_eq!(
        outcomes[4..],
        [RecordOutcome::Parked, RecordOutcome::Parked]
    );
    // A later record for a covered slot conflicts with the parked range.
    let outcomes = offer(&projection, &[response(COURSE, 500, 2)], 1);
    assert!(
        matches!(outcomes[0], RecordOutcome::Conflict { .. }),
        "{outcomes:?}"
    );
    let outcomes = offer(&projection, &[response(COURSE, 4, 0)], 1);
    assert_eq!(outcomes, [RecordOutcome::Applied { released: 2 }]);
    assert_eq!(n_responses(&projection, COURSE), 3);
    assert_eq!(
        projection
            .aggregate(StreamKind::Course, COURSE.0)
            .unwrap()
            .next_seq,
        SequenceNumber(1_002)
    );
    assert!(projection.blocked().unwrap().is_empty());
}
