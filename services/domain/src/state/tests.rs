//! Ingestion scenarios of docs/design/scheduler.md §17 (1–7) and the completion rule of §10.1 (18).

use uuid::Uuid;

use super::*;
use crate::events::*;
use crate::ids::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const COURSE: CourseUuid = CourseUuid(Uuid::from_u128(0xC0));
const ECO_A: EcosystemUuid = EcosystemUuid(Uuid::from_u128(0xEA));
const ECO_B: EcosystemUuid = EcosystemUuid(Uuid::from_u128(0xEB));
const ECO_C: EcosystemUuid = EcosystemUuid(Uuid::from_u128(0xEC));

fn meta(seq: i64) -> EnvelopeMeta {
    EnvelopeMeta {
        event_uuid: EventUuid(Uuid::from_u128(0xE000 + seq as u128)),
        sequence_number: SequenceNumber(seq),
        accepted_at_micros: 0,
        writer_id: "test".into(),
        settings_version: 0,
        metadata_sequence_number: None,
    }
}

fn course_event(seq: i64, payload: CoursePayload) -> CourseEvent {
    CourseEvent {
        meta: meta(seq),
        course_uuid: COURSE,
        payload,
    }
}

fn apply(state: &mut MemoryState, seq: i64, payload: CoursePayload) -> Vec<Effect> {
    match apply_course_event(state, &course_event(seq, payload)).unwrap() {
        Applied::Done(effects) => effects,
        other => panic!("not applied: {other:?}"),
    }
}

fn create_course(state: &mut MemoryState) {
    apply(
        state,
        0,
        CoursePayload::CreateCourse(CreateCourse {
            course_uuid: COURSE,
            sequence_number: SequenceNumber(0),
            ecosystem_uuid: ECO_A,
            is_real_course: true,
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: "2026-06-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }),
    );
}

fn prepare(
    prep: u128,
    from: EcosystemUuid,
    to: EcosystemUuid,
    pairs: &[(u128, u128)],
) -> PrepareCourseEcosystem {
    PrepareCourseEcosystem {
        preparation_uuid: PreparationUuid(id(prep)),
        course_uuid: COURSE,
        sequence_number: SequenceNumber(1),
        ecosystem_uuid: to,
        ecosystem_map: EcosystemMap {
            from_ecosystem_uuid: from,
            to_ecosystem_uuid: to,
            book_container_mappings: pairs
                .iter()
                .map(|(f, t)| BookContainerMapping {
                    from_book_container_uuid: BookContainerUuid(id(*f)),
                    to_book_container_uuid: BookContainerUuid(id(*t)),
                })
                .collect(),
            exercise_mappings: Vec::new(),
        },
        prepared_at: "2026-01-02T00:00:00Z".into(),
    }
}

fn bc(n: u128) -> BookContainerUuid {
    BookContainerUuid(id(n))
}

#[test]
fn a_course_with_no_events_has_no_state() {
    let state = MemoryState::default();
    assert_eq!(state.course(COURSE).unwrap(), None);
    assert!(state.students(COURSE).unwrap().is_empty());
}

#[test]
fn preparations_chain_and_reverse_only_one_to_one_targets() {
    let mut state = MemoryState::default();
    register_preparation(
        &mut state,
        &prepare(1, ECO_A, ECO_B, &[(1, 11), (2, 11), (3, 13)]),
    )
    .unwrap();
    register_preparation(&mut state, &prepare(2, ECO_B, ECO_C, &[(11, 21), (13, 23)])).unwrap();
    let maps = state.mappings(COURSE).unwrap();
    // Chain: A→B→C.
    assert_eq!(maps.forward(ECO_A, ECO_C, bc(1)), Some(bc(21)));
    assert_eq!(maps.forward(ECO_A, ECO_C, bc(3)), Some(bc(23)));
    // Reverse only where exactly one source: 13 ← 3, but 11 ← {1, 2}.
    assert_eq!(maps.forward(ECO_B, ECO_A, bc(13)), Some(bc(3)));
    assert_eq!(maps.forward(ECO_B, ECO_A, bc(11)), None);
    // rev(E, bc) lists every source, including the reverse of the 1-to-1 B→C mapping.
    assert_eq!(
        maps.reverse(ECO_B, bc(11)),
        vec![(ECO_A, bc(1)), (ECO_A, bc(2)), (ECO_C, bc(21))]
    );
    assert_eq!(maps.forward_or_same(ECO_A, ECO_B, bc(99)), bc(99));
    assert!(state
        .preparation(COURSE, PreparationUuid(id(2)))
        .unwrap()
        .is_some());
}

#[test]
fn update_course_ecosystem_switches_and_waits_without_its_preparation() {
    let mut state = MemoryState::default();
    create_course(&mut state);
    let update = |prep: u128| {
        course_event(
            2,
            CoursePayload::UpdateCourseEcosystem(UpdateCourseEcosystem {
                request_uuid: RequestUuid(id(77)),
                course_uuid: COURSE,
                sequence_number: SequenceNumber(2),
                preparation_uuid: PreparationUuid(id(prep)),
                updated_at: "2026-02-01T00:00:00Z".into(),
            }),
        )
    };
    let before = state.clone();
    assert_eq!(
        apply_course_event(&mut state, &update(5)).unwrap(),
        Applied::WaitForPreparation(PreparationUuid(id(5)))
    );
    assert_eq!(state, before, "a waiting update changes nothing");
    register_preparation(&mut state, &prepare(5, ECO_A, ECO_B, &[])).unwrap();
    assert_eq!(
        apply_course_event(&mut state, &update(5)).unwrap(),
        Applied::Done(vec![Effect::EcosystemSwitched {
            course: COURSE,
            from: ECO_A,
            to: ECO_B
        }])
    );
    let course = state.course(COURSE).unwrap().unwrap();
    assert_eq!(
        (course.initial_ecosystem, course.current_ecosystem),
        (ECO_A, ECO_B)
    );
}

fn roster(containers: &[(u128, u128)], students: &[(u128, u128, bool)]) -> CoursePayload {
    CoursePayload::UpdateRoster(UpdateRoster {
        request_uuid: RequestUuid(id(1000)),
        course_uuid: COURSE,
        sequence_number: SequenceNumber(1),
        course_containers: containers
            .iter()
            .map(|(c, p)| RosterCourseContainer {
                container_uuid: CourseContainerUuid(id(*c)),
                parent_container_uuid: CourseContainerUuid(if *p == 0 { COURSE.0 } else { id(*p) }),
                created_at: "2026-01-01T00:00:00Z".into(),
                archived_at: None,
            })
            .collect(),
        students: students
            .iter()
            .map(|(s, c, dropped)| RosterStudent {
                student_uuid: StudentUuid(id(*s)),
                container_uuid: CourseContainerUuid(id(*c)),
                enrolled_at: "2026-01-01T00:00:00Z".into(),
                last_course_container_change_at: "2026-01-01T00:00:00Z".into(),
                dropped_at: dropped.then(|| "2026-01-05T00:00:00Z".into()),
            })
            .collect(),
    })
}

fn containers_of(state: &MemoryState, student: u128) -> (Vec<CourseContainerUuid>, bool) {
    let s = state
        .student(COURSE, StudentUuid(id(student)))
        .unwrap()
        .unwrap();
    (s.containers, s.active)
}

fn members(state: &MemoryState, container: u128) -> Vec<StudentUuid> {
    state
        .course_containers(COURSE)
        .unwrap()
        .into_iter()
        .find(|(uuid, _)| *uuid == CourseContainerUuid(id(container)))
        .map(|(_, c)| c.student_uuids.into_iter().collect())
        .unwrap_or_default()
}

#[test]
fn rosters_build_ancestry_stop_at_cycles_and_remove_dropped_students() {
    let (p, q) = (0x50, 0x51);
    let mut state = MemoryState::default();
    create_course(&mut state);
    let effects = apply(
        &mut state,
        1,
        roster(&[(p, 0), (q, p)], &[(1, p, false), (2, q, false)]),
    );
    assert_eq!(
        containers_of(&state, 1),
        (vec![CourseContainerUuid(id(p))], true)
    );
    assert_eq!(
        containers_of(&state, 2),
        (
            vec![CourseContainerUuid(id(q)), CourseContainerUuid(id(p))],
            true
        )
    );
    assert_eq!(
        members(&state, p),
        vec![StudentUuid(id(1)), StudentUuid(id(2))]
    );
    assert_eq!(members(&state, q), vec![StudentUuid(id(2))]);
    assert!(
        matches!(&effects[0], Effect::RosterUpdated { newly_active, .. } if newly_active.len() == 2)
    );

    // A cycle Q→P→Q stops the walk.
    apply(&mut state, 2, roster(&[(p, q), (q, p)], &[(2, q, false)]));
    assert_eq!(
        containers_of(&state, 2),
        (
            vec![CourseContainerUuid(id(q)), CourseContainerUuid(id(p))],
            true
        )
    );
    // Student 1 is absent from that snapshot: inactive and out of every container.
    assert_eq!(containers_of(&state, 1), (vec![], false));
    assert_eq!(members(&state, p), vec![StudentUuid(id(2))]);

    // Dropped: out of both containers; an absent container disappears.
    let effects = apply(&mut state, 3, roster(&[(q, 0)], &[(2, q, true)]));
    assert_eq!(containers_of(&state, 2), (vec![], false));
    assert!(members(&state, q).is_empty());
    assert_eq!(state.course_containers(COURSE).unwrap().len(), 1);
    assert!(
        matches!(&effects[0], Effect::RosterUpdated { deactivated, .. } if deactivated == &vec![StudentUuid(id(2))])
    );
}

fn exclusions(global: bool, list: Vec<ExerciseExclusion>) -> CoursePayload {
    let update = UpdateExcludedExercises {
        request_uuid: RequestUuid(id(2000)),
        course_uuid: COURSE,
        sequence_number: SequenceNumber(1),
        exclusions: list,
        updated_at: "2026-01-03T00:00:00Z".into(),
    };
    if global {
        CoursePayload::UpdateGloballyExcludedExercises(update)
    } else {
        CoursePayload::UpdateCourseExcludedExercises(update)
    }
}

#[test]
fn exclusions_split_into_versions_and_groups_and_are_replaced_whole() {
    let mut state = MemoryState::default();
    create_course(&mut state);
    let v1 = ExerciseUuid(id(0x71));
    let g = ExerciseGroupUuid(id(0x91));
    apply(
        &mut state,
        1,
        exclusions(
            false,
            vec![
                ExerciseExclusion {
                    exercise_uuid: Some(v1),
                    exercise_group_uuid: None,
                },
                ExerciseExclusion {
                    exercise_uuid: None,
                    exercise_group_uuid: Some(g),
                },
            ],
        ),
    );
    let course = state.course(COURSE).unwrap().unwrap();
    assert_eq!(course.course_excluded_exercise_uuids, vec![v1]);
    assert_eq!(course.course_excluded_group_uuids, vec![g]);
    assert!(course.global_excluded_exercise_uuids.is_empty());
    apply(&mut state, 2, exclusions(false, vec![]));
    let course = state.course(COURSE).unwrap().unwrap();
    assert!(
        course.course_excluded_exercise_uuids.is_empty()
            && course.course_excluded_group_uuids.is_empty()
    );
    apply(
        &mut state,
        3,
        exclusions(
            true,
            vec![ExerciseExclusion {
                exercise_uuid: Some(v1),
                exercise_group_uuid: None,
            }],
        ),
    );
    assert_eq!(
        state
            .course(COURSE)
            .unwrap()
            .unwrap()
            .global_excluded_exercise_uuids,
        vec![v1]
    );
}

fn assignment(
    due: Option<&str>,
    goal_pes: Option<i64>,
    exercises: &[(u128, u128, bool)],
) -> CoursePayload {
    CoursePayload::CreateUpdateAssignment(CreateUpdateAssignment {
        request_uuid: RequestUuid(id(3000)),
        course_uuid: COURSE,
        sequence_number: SequenceNumber(1),
        assignment_uuid: AssignmentUuid(id(0xA1)),
        is_deleted: false,
        ecosystem_uuid: ECO_A,
        student_uuid: StudentUuid(id(1)),
        assignment_type: "homework".into(),
        exclusion_info: Some(ExclusionInfo {
            opens_at: None,
            due_at: due.map(Timestamp::from),
            feedback_at: None,
        }),
        pes: None,
        spes: None,
        assigned_book_container_uuids: vec![bc(1)],
        goal_num_tutor_assigned_spes: None,
        spes_are_assigned: false,
        goal_num_tutor_assigned_pes: goal_pes,
        pes_are_assigned: false,
        assigned_exercises: exercises
            .iter()
            .map(|(trial, exercise, is_spe)| AssignedExercise {
                trial_uuid: TrialUuid(id(*trial)),
                exercise_uuid: ExerciseUuid(id(*exercise)),
                is_spe: *is_spe,
                is_pe: false,
            })
            .collect(),
        created_at: "2026-01-04T00:00:00Z".into(),
        updated_at: "2026-01-04T00:00:00Z".into(),
    })
}

#[test]
fn assignment_updates_replace_fields_and_keep_the_first_trials() {
    let mut state = MemoryState::default();
    create_course(&mut state);
    apply(
        &mut state,
        1,
        assignment(None, None, &[(0x7001, 0x71, true), (0x7002, 0x72, false)]),
    );
    // The update re-sends trial 0x7001 with other flags and adds 0x7003.
    let effects = apply(
        &mut state,
        2,
        assignment(
            Some("2026-02-01T00:00:00Z"),
            Some(4),
            &[(0x7001, 0x71, false), (0x7003, 0x71, false)],
        ),
    );
    assert!(
        matches!(&effects[0], Effect::AssignmentChanged { new_trials, .. } if new_trials == &vec![TrialUuid(id(0x7003))])
    );
    let a = state
        .assignment(COURSE, AssignmentUuid(id(0xA1)))
        .unwrap()
        .unwrap();
    assert_eq!(a.goal_pes, Some(4));
    assert!(a.due_at.is_some());
    assert_eq!(a.assigned_exercise_uuids, vec![ExerciseUuid(id(0x71))]);
    assert_eq!(a.trial_uuids.len(), 3);
    assert!(
        state
            .trial(COURSE, TrialUuid(id(0x7001)))
            .unwrap()
            .unwrap()
            .is_spe,
        "trials are never updated"
    );
    assert!(a.needs_pes() && a.needs_spes());
}

fn response(seq: i64, trial: u128, exercise: u128, at: &str) -> CoursePayload {
    CoursePayload::RecordResponse(RecordResponse {
        response_uuid: ResponseUuid(id(0x8000 + seq as u128)),
        course_uuid: COURSE,
        sequence_number: SequenceNumber(seq),
        ecosystem_uuid: ECO_A,
        trial_uuid: TrialUuid(id(trial)),
        student_uuid: StudentUuid(id(1)),
        exercise_uuid: ExerciseUuid(id(exercise)),
        is_correct: true,
        is_real_response: true,
        responded_at: at.into(),
    })
}

fn history_at(state: &MemoryState) -> Option<i64> {
    state
        .assignment(COURSE, AssignmentUuid(id(0xA1)))
        .unwrap()
        .unwrap()
        .history_at
}

#[test]
fn student_history_completes_when_every_non_spe_trial_is_answered_by_the_due_date() {
    let due = "2026-02-01T00:00:00Z";
    let exercises = [
        (0x7001, 0x71, false),
        (0x7002, 0x72, false),
        (0x7003, 0x73, true),
    ];
    let mut state = MemoryState::default();
    create_course(&mut state);
    apply(&mut state, 1, roster(&[(0x50, 0)], &[(1, 0x50, false)]));
    apply(&mut state, 2, assignment(Some(due), None, &exercises));
    let effects = apply(
        &mut state,
        3,
        response(3, 0x7001, 0x71, "2026-01-10T00:00:00Z"),
    );
    assert!(matches!(
        &effects[0],
        Effect::ResponseRecorded { counts: true, .. }
    ));
    assert_eq!(history_at(&state), None, "incomplete and not due: no entry");
    // A late answer does not complete it.
    apply(
        &mut state,
        4,
        response(4, 0x7002, 0x72, "2026-02-02T00:00:00Z"),
    );
    assert_eq!(history_at(&state), None);
    let effects = apply(
        &mut state,
        5,
        response(5, 0x7002, 0x72, "2026-01-20T00:00:00Z"),
    );
    let expected = "2026-01-20T00:00:00Z"
        .parse::<String>()
        .ok()
        .and_then(|t| Timestamp(t).micros());
    assert_eq!(
        history_at(&state),
        expected,
        "history_at = the last on-time response"
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::HistoryEntered { .. })));
    // Sticky: a later answer does not move it.
    apply(
        &mut state,
        6,
        response(6, 0x7001, 0x71, "2026-01-25T00:00:00Z"),
    );
    assert_eq!(history_at(&state), expected);
}

#[test]
fn responses_before_their_trial_are_stored_and_complete_the_history_when_it_arrives() {
    let mut state = MemoryState::default();
    create_course(&mut state);
    apply(&mut state, 1, roster(&[(0x50, 0)], &[(1, 0x50, false)]));
    let effects = apply(
        &mut state,
        2,
        response(2, 0x7001, 0x71, "2026-01-10T00:00:00Z"),
    );
    assert!(matches!(
        &effects[0],
        Effect::ResponseRecorded { counts: false, .. }
    ));
    let effects = apply(
        &mut state,
        3,
        assignment(Some("2026-02-01T00:00:00Z"), None, &[(0x7001, 0x71, false)]),
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::HistoryEntered { .. })));
    assert!(history_at(&state).is_some());
}

#[test]
fn create_ecosystem_builds_pools_exercises_groups_and_container_lists() {
    let ecosystem = EcosystemUuid(id(0xEE));
    let x = |n: u128| ExerciseUuid(id(n));
    let group = ExerciseGroupUuid(id(0x91));
    let create = CreateEcosystem {
        ecosystem_uuid: ecosystem,
        sequence_number: SequenceNumber(0),
        book: Book {
            cnx_identity: None,
            contents: vec![
                BookContainer {
                    container_uuid: bc(1),
                    container_parent_uuid: BookContainerUuid(ecosystem.0),
                    container_cnx_identity: None,
                    pools: vec![Pool {
                        use_for_clue: true,
                        use_for_personalized_for_assignment_types: vec![],
                        exercise_uuids: vec![x(1), x(2)],
                    }],
                },
                BookContainer {
                    container_uuid: bc(2),
                    container_parent_uuid: bc(1),
                    container_cnx_identity: None,
                    pools: vec![
                        Pool {
                            use_for_clue: true,
                            use_for_personalized_for_assignment_types: vec!["reading".into()],
                            exercise_uuids: vec![x(1)],
                        },
                        Pool {
                            use_for_clue: false,
                            use_for_personalized_for_assignment_types: vec!["practice".into()],
                            exercise_uuids: vec![x(2)],
                        },
                    ],
                },
            ],
        },
        exercises: vec![
            Exercise {
                exercise_uuid: x(1),
                group_uuid: group,
                version: 1,
                los: vec![],
            },
            Exercise {
                exercise_uuid: x(2),
                group_uuid: group,
                version: 2,
                los: vec![],
            },
        ],
        imported_at: "2026-01-01T00:00:00Z".into(),
    };
    let event = EcosystemEvent {
        meta: meta(0),
        ecosystem_uuid: ecosystem,
        payload: EcosystemPayload::CreateEcosystem(Box::new(create)),
    };
    let mut state = MemoryState::default();
    assert_eq!(
        apply_ecosystem_event(&mut state, &event).unwrap(),
        vec![Effect::EcosystemCreated { ecosystem }]
    );
    let eco = state.ecosystem(ecosystem).unwrap().unwrap();
    assert_eq!(eco.pools.len(), 3);
    assert_eq!(eco.pools_of(bc(2)).count(), 2);
    assert_eq!(eco.containers, vec![(bc(1), None), (bc(2), Some(bc(1)))]);
    assert_eq!(eco.leaf_book_containers(), vec![bc(2)]);
    assert_eq!(eco.exercise_book_containers[&x(1)], vec![bc(1), bc(2)]);
    assert_eq!(state.group_versions(group).unwrap().len(), 2);
    assert_eq!(state.exercise(x(2)).unwrap().unwrap().version, 2);
    // Re-applying is harmless.
    let before = state.clone();
    assert!(apply_ecosystem_event(&mut state, &event)
        .unwrap()
        .is_empty());
    assert_eq!(state, before);
}
