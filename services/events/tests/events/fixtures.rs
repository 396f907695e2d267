//! Sample events of every type, with every optional field present or absent.

use biglearn_domain::events::*;
use biglearn_domain::ids::*;
use uuid::Uuid;

/// Whether optional fields are filled in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Optionals {
    Present,
    Absent,
}

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x5a1e_0000_0000_4000_8000_0000_0000_0000 | n)
}

fn ts(text: &str) -> Timestamp {
    Timestamp(text.to_owned())
}

fn pick<T>(optionals: Optionals, value: T) -> Option<T> {
    (optionals == Optionals::Present).then_some(value)
}

pub fn meta(seq: i64, optionals: Optionals) -> EnvelopeMeta {
    EnvelopeMeta {
        event_uuid: EventUuid(id(1000 + seq as u128)),
        sequence_number: SequenceNumber(seq),
        accepted_at_micros: 1_700_000_000_123_456 + seq,
        writer_id: "writer-0".to_owned(),
        settings_version: 7,
        metadata_sequence_number: pick(optionals, 42),
    }
}

pub const COURSE: u128 = 1;

fn no_op(optionals: Optionals) -> NoOp {
    NoOp {
        reason: if optionals == Optionals::Present {
            NoOpReason::PreparationUnknown
        } else {
            NoOpReason::AdminFill
        },
        actor: pick(optionals, "ops@example.org".to_owned()),
        detail_json: pick(optionals, r#"{"request_uuid":"x"}"#.to_owned()),
        // A range no_op (docs/design/api.md D13); its slot is the envelope's sequence number.
        through_sequence_number: pick(optionals, SequenceNumber(2_147_483_646)),
    }
}

pub fn record_response(seq: i64) -> CourseEvent {
    CourseEvent {
        meta: meta(seq, Optionals::Absent),
        course_uuid: CourseUuid(id(COURSE)),
        payload: CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(id(2_000_000 + seq as u128)),
            course_uuid: CourseUuid(id(COURSE)),
            sequence_number: SequenceNumber(seq),
            ecosystem_uuid: EcosystemUuid(id(2)),
            trial_uuid: TrialUuid(id(3)),
            student_uuid: StudentUuid(id(4)),
            exercise_uuid: ExerciseUuid(id(5)),
            is_correct: seq % 2 == 0,
            is_real_response: true,
            responded_at: ts("2017-08-15T12:34:56.123456Z"),
        }),
    }
}

fn exclusions(optionals: Optionals, seq: i64) -> UpdateExcludedExercises {
    let list = if optionals == Optionals::Present {
        vec![
            ExerciseExclusion {
                exercise_uuid: Some(ExerciseUuid(id(60))),
                exercise_group_uuid: None,
            },
            ExerciseExclusion {
                exercise_uuid: None,
                exercise_group_uuid: Some(ExerciseGroupUuid(id(61))),
            },
        ]
    } else {
        Vec::new()
    };
    UpdateExcludedExercises {
        request_uuid: RequestUuid(id(300 + seq as u128)),
        course_uuid: CourseUuid(id(COURSE)),
        sequence_number: SequenceNumber(seq),
        exclusions: list,
        updated_at: ts("2017-09-01T00:00:00Z"),
    }
}

/// One course event of every type, in catalogue order.
pub fn course_events(optionals: Optionals) -> Vec<CourseEvent> {
    let present = optionals == Optionals::Present;
    let course = CourseUuid(id(COURSE));
    let payloads = vec![
        CoursePayload::NoOp(no_op(optionals)),
        CoursePayload::CreateCourse(CreateCourse {
            course_uuid: course,
            sequence_number: SequenceNumber(1),
            ecosystem_uuid: EcosystemUuid(id(2)),
            is_real_course: present,
            starts_at: ts("2017-08-01T00:00:00Z"),
            ends_at: ts("2017-12-31T23:59:59Z"),
            created_at: ts("2017-07-30T10:00:00.5Z"),
        }),
        CoursePayload::PrepareCourseEcosystem(PrepareCourseEcosystem {
            preparation_uuid: PreparationUuid(id(20)),
            course_uuid: course,
            sequence_number: SequenceNumber(2),
            ecosystem_uuid: EcosystemUuid(id(21)),
            ecosystem_map: EcosystemMap {
                from_ecosystem_uuid: EcosystemUuid(id(2)),
                to_ecosystem_uuid: EcosystemUuid(id(21)),
                book_container_mappings: if present {
                    vec![
                        BookContainerMapping {
                            from_book_container_uuid: BookContainerUuid(id(22)),
                            to_book_container_uuid: BookContainerUuid(id(23)),
                        },
                        BookContainerMapping {
                            from_book_container_uuid: BookContainerUuid(id(24)),
                            to_book_container_uuid: BookContainerUuid(id(25)),
                        },
                    ]
                } else {
                    Vec::new()
                },
                exercise_mappings: if present {
                    vec![ExerciseMapping {
                        from_exercise_uuid: ExerciseUuid(id(26)),
                        to_book_container_uuid: BookContainerUuid(id(23)),
                    }]
                } else {
                    Vec::new()
                },
            },
            prepared_at: ts("2017-10-01T00:00:00Z"),
        }),
        CoursePayload::UpdateCourseEcosystem(UpdateCourseEcosystem {
            request_uuid: RequestUuid(id(30)),
            course_uuid: course,
            sequence_number: SequenceNumber(3),
            preparation_uuid: PreparationUuid(id(20)),
            updated_at: ts("2017-10-02T00:00:00Z"),
        }),
        CoursePayload::UpdateRoster(UpdateRoster {
            request_uuid: RequestUuid(id(40)),
            course_uuid: course,
            sequence_number: SequenceNumber(4),
            course_containers: vec![
                RosterCourseContainer {
                    container_uuid: CourseContainerUuid(id(41)),
                    parent_container_uuid: CourseContainerUuid(id(COURSE)),
                    created_at: ts("2017-08-01T00:00:00Z"),
                    archived_at: pick(optionals, ts("2017-11-01T00:00:00Z")),
                },
                RosterCourseContainer {
                    container_uuid: CourseContainerUuid(id(42)),
                    parent_container_uuid: CourseContainerUuid(id(41)),
                    created_at: ts("2017-08-02T00:00:00Z"),
                    archived_at: None,
                },
            ],
            students: vec![RosterStudent {
                student_uuid: StudentUuid(id(4)),
                container_uuid: CourseContainerUuid(id(42)),
                enrolled_at: ts("2017-08-03T00:00:00Z"),
                last_course_container_change_at: ts("2017-08-04T00:00:00Z"),
                dropped_at: pick(optionals, ts("2017-09-04T00:00:00Z")),
            }],
        }),
        CoursePayload::UpdateCourseActiveDates(UpdateCourseActiveDates {
            request_uuid: RequestUuid(id(50)),
            course_uuid: course,
            sequence_number: SequenceNumber(5),
            starts_at: ts("2017-08-05T00:00:00Z"),
            ends_at: ts("2018-01-05T00:00:00Z"),
            updated_at: ts("2017-08-06T00:00:00Z"),
        }),
        CoursePayload::UpdateGloballyExcludedExercises(exclusions(optionals, 6)),
        CoursePayload::UpdateCourseExcludedExercises(exclusions(optionals, 7)),
        CoursePayload::CreateUpdateAssignment(CreateUpdateAssignment {
            request_uuid: RequestUuid(id(80)),
            course_uuid: course,
            sequence_number: SequenceNumber(8),
            assignment_uuid: AssignmentUuid(id(81)),
            is_deleted: !present,
            ecosystem_uuid: EcosystemUuid(id(2)),
            student_uuid: StudentUuid(id(4)),
            assignment_type: "homework".to_owned(),
            exclusion_info: pick(
                optionals,
                ExclusionInfo {
                    opens_at: Some(ts("2017-08-10T00:00:00Z")),
                    due_at: Some(ts("2017-08-17T00:00:00Z")),
                    feedback_at: Some(ts("2017-08-18T00:00:00Z")),
                },
            ),
            pes: pick(
                optionals,
                CalculationRef {
                    calculation_uuid: Some(CalculationUuid(id(82))),
                    ecosystem_matrix_uuid: Some(MatrixUuid(id(83))),
                },
            ),
            spes: pick(optionals, CalculationRef::default()),
            assigned_book_container_uuids: if present {
                vec![BookContainerUuid(id(23)), BookContainerUuid(id(25))]
            } else {
                Vec::new()
            },
            goal_num_tutor_assigned_spes: pick(optionals, 3),
            spes_are_assigned: present,
            goal_num_tutor_assigned_pes: pick(optionals, -1),
            pes_are_assigned: !present,
            assigned_exercises: if present {
                vec![
                    AssignedExercise {
                        trial_uuid: TrialUuid(id(84)),
                        exercise_uuid: ExerciseUuid(id(5)),
                        is_spe: false,
                        is_pe: true,
                    },
                    AssignedExercise {
                        trial_uuid: TrialUuid(id(85)),
                        exercise_uuid: ExerciseUuid(id(6)),
                        is_spe: true,
                        is_pe: false,
                    },
                ]
            } else {
                Vec::new()
            },
            created_at: ts("2017-08-09T00:00:00Z"),
            updated_at: ts("2017-08-09T00:00:01Z"),
        }),
        record_response(9).payload,
    ];
    payloads
        .into_iter()
        .enumerate()
        .map(|(idx, payload)| CourseEvent {
            meta: meta(idx as i64, optionals),
            course_uuid: course,
            payload,
        })
        .collect()
}

/// One ecosystem event of every type.
pub fn ecosystem_events(optionals: Optionals) -> Vec<EcosystemEvent> {
    let present = optionals == Optionals::Present;
    let ecosystem = EcosystemUuid(id(2));
    let create = CreateEcosystem {
        ecosystem_uuid: ecosystem,
        sequence_number: SequenceNumber(0),
        book: Book {
            cnx_identity: pick(
                optionals,
                "93e2b09d-261c-4007-a987-0b3062fe154b@4.4".to_owned(),
            ),
            contents: vec![
                BookContainer {
                    container_uuid: BookContainerUuid(id(70)),
                    container_parent_uuid: BookContainerUuid(id(2)),
                    container_cnx_identity: pick(optionals, "book@1".to_owned()),
                    pools: Vec::new(),
                },
                BookContainer {
                    container_uuid: BookContainerUuid(id(71)),
                    container_parent_uuid: BookContainerUuid(id(70)),
                    container_cnx_identity: None,
                    pools: if present {
                        vec![
                            Pool {
                                use_for_clue: true,
                                use_for_personalized_for_assignment_types: vec![
                                    "reading".to_owned(),
                                    "homework".to_owned(),
                                ],
                                exercise_uuids: vec![ExerciseUuid(id(5)), ExerciseUuid(id(6))],
                            },
                            Pool {
                                use_for_clue: false,
                                use_for_personalized_for_assignment_types: Vec::new(),
                                exercise_uuids: Vec::new(),
                            },
                        ]
                    } else {
                        Vec::new()
                    },
                },
            ],
        },
        exercises: vec![Exercise {
            exercise_uuid: ExerciseUuid(id(5)),
            group_uuid: ExerciseGroupUuid(id(61)),
            version: 3,
            los: if present {
                vec!["lo:stax-phys:1-2-3".to_owned(), "ost-tag-lo-x".to_owned()]
            } else {
                Vec::new()
            },
        }],
        imported_at: ts("2017-07-01T00:00:00Z"),
    };
    vec![
        EcosystemEvent {
            meta: meta(0, optionals),
            ecosystem_uuid: ecosystem,
            payload: EcosystemPayload::CreateEcosystem(Box::new(create)),
        },
        EcosystemEvent {
            meta: meta(1, optionals),
            ecosystem_uuid: ecosystem,
            payload: EcosystemPayload::NoOp(no_op(optionals)),
        },
    ]
}
