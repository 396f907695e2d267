//! The ten write endpoints (docs/design/api.md §2): schemas, typed requests, and their candidate
//! events.

use serde::Deserialize;
use uuid::Uuid;

use biglearn_domain::events::{
    Book, CoursePayload, CreateCourse, CreateEcosystem, CreateUpdateAssignment, EcosystemMap,
    EcosystemPayload, Exercise, NoOp, NoOpReason, PrepareCourseEcosystem, RecordResponse,
    StreamKind, Timestamp, UpdateCourseActiveDates, UpdateCourseEcosystem, UpdateExcludedExercises,
    UpdateRoster,
};
use biglearn_domain::ids::{CourseUuid, EcosystemUuid, EventUuid, PreparationUuid, SequenceNumber};

use super::validate::{
    array, object, opt, req, Schema, BOOL, CNX_IDENTITY, COURSE_SEQUENCE_NUMBER, DATETIME,
    EXERCISE_EXCLUSION, NON_NEGATIVE_INTEGER, UUID, UUIDS_0_500,
};

// ---------------------------------------------------------------------------------------
// Schemas, field for field as in docs/design/api.md §2.

static POOL: Schema = object(&[
    req("use_for_clue", &BOOL),
    req(
        "use_for_personalized_for_assignment_types",
        &array(
            &Schema::Str {
                min_chars: 3,
                max_chars: 100,
            },
            0,
            20,
        ),
    ),
    req("exercise_uuids", &UUIDS_0_500),
]);

static BOOK_CONTAINER: Schema = object(&[
    req("container_uuid", &UUID),
    req("container_parent_uuid", &UUID),
    opt("container_cnx_identity", &CNX_IDENTITY),
    req("pools", &array(&POOL, 0, 20)),
]);

static EXERCISE: Schema = object(&[
    req("exercise_uuid", &UUID),
    req("group_uuid", &UUID),
    req("version", &NON_NEGATIVE_INTEGER),
    req(
        "los",
        &array(
            &Schema::Str {
                min_chars: 1,
                max_chars: 100,
            },
            1,
            100,
        ),
    ),
]);

pub(crate) static CREATE_ECOSYSTEM: Schema = object(&[
    req("ecosystem_uuid", &UUID),
    req(
        "book",
        &object(&[
            opt("cnx_identity", &CNX_IDENTITY),
            req("contents", &array(&BOOK_CONTAINER, 1, 500)),
        ]),
    ),
    req("exercises", &array(&EXERCISE, 0, 10_000)),
    req("imported_at", &DATETIME),
]);

pub(crate) static CREATE_COURSE: Schema = object(&[
    req("course_uuid", &UUID),
    req("ecosystem_uuid", &UUID),
    req("is_real_course", &BOOL),
    req("starts_at", &DATETIME),
    req("ends_at", &DATETIME),
    req("created_at", &DATETIME),
]);

pub(crate) static UPDATE_COURSE_ACTIVE_DATES: Schema = object(&[
    req("request_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req("starts_at", &DATETIME),
    req("ends_at", &DATETIME),
    req("updated_at", &DATETIME),
]);

static ROSTER_COURSE_CONTAINER: Schema = object(&[
    req("container_uuid", &UUID),
    req("parent_container_uuid", &UUID),
    req("created_at", &DATETIME),
    opt("archived_at", &DATETIME),
]);

static ROSTER_STUDENT: Schema = object(&[
    req("student_uuid", &UUID),
    req("container_uuid", &UUID),
    req("enrolled_at", &DATETIME),
    req("last_course_container_change_at", &DATETIME),
    opt("dropped_at", &DATETIME),
]);

static ROSTER: Schema = object(&[
    req("request_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req(
        "course_containers",
        &array(&ROSTER_COURSE_CONTAINER, 1, 100),
    ),
    req("students", &array(&ROSTER_STUDENT, 0, 1000)),
]);

pub(crate) static UPDATE_ROSTERS: Schema = object(&[req("rosters", &array(&ROSTER, 0, 100))]);

pub(crate) static PREPARE_COURSE_ECOSYSTEM: Schema = object(&[
    req("preparation_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req("next_ecosystem_uuid", &UUID),
    req(
        "ecosystem_map",
        &object(&[
            req("from_ecosystem_uuid", &UUID),
            req("to_ecosystem_uuid", &UUID),
            req(
                "book_container_mappings",
                &array(
                    &object(&[
                        req("from_book_container_uuid", &UUID),
                        req("to_book_container_uuid", &UUID),
                    ]),
                    0,
                    500,
                ),
            ),
            req(
                "exercise_mappings",
                &array(
                    &object(&[
                        req("from_exercise_uuid", &UUID),
                        req("to_book_container_uuid", &UUID),
                    ]),
                    0,
                    10_000,
                ),
            ),
        ]),
    ),
    req("prepared_at", &DATETIME),
]);

static UPDATE_COURSE_ECOSYSTEM_ITEM: Schema = object(&[
    req("request_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req("preparation_uuid", &UUID),
    req("updated_at", &DATETIME),
]);

pub(crate) static UPDATE_COURSE_ECOSYSTEMS: Schema = object(&[req(
    "update_requests",
    &array(&UPDATE_COURSE_ECOSYSTEM_ITEM, 0, 1000),
)]);

/// Both exclusion endpoints share one schema (docs/design/api.md §2.7, §2.8).
pub(crate) static UPDATE_EXCLUDED_EXERCISES: Schema = object(&[
    req("request_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req("exclusions", &array(&EXERCISE_EXCLUSION, 0, 10_000)),
    req("updated_at", &DATETIME),
]);

static CALCULATION_REF: Schema = object(&[
    opt("calculation_uuid", &UUID),
    opt("ecosystem_matrix_uuid", &UUID),
]);

static ASSIGNMENT: Schema = object(&[
    req("request_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req("assignment_uuid", &UUID),
    req("is_deleted", &BOOL),
    req("ecosystem_uuid", &UUID),
    req("student_uuid", &UUID),
    req(
        "assignment_type",
        &Schema::Str {
            min_chars: 1,
            max_chars: 100,
        },
    ),
    opt(
        "exclusion_info",
        &object(&[
            opt("opens_at", &DATETIME),
            opt("due_at", &DATETIME),
            opt("feedback_at", &DATETIME),
        ]),
    ),
    opt("pes", &CALCULATION_REF),
    opt("spes", &CALCULATION_REF),
    req("assigned_book_container_uuids", &UUIDS_0_500),
    opt("goal_num_tutor_assigned_spes", &NON_NEGATIVE_INTEGER),
    req("spes_are_assigned", &BOOL),
    opt("goal_num_tutor_assigned_pes", &NON_NEGATIVE_INTEGER),
    req("pes_are_assigned", &BOOL),
    req(
        "assigned_exercises",
        &array(
            &object(&[
                req("trial_uuid", &UUID),
                req("exercise_uuid", &UUID),
                req("is_spe", &BOOL),
                req("is_pe", &BOOL),
            ]),
            0,
            1000,
        ),
    ),
    req("created_at", &DATETIME),
    req("updated_at", &DATETIME),
]);

pub(crate) static CREATE_UPDATE_ASSIGNMENTS: Schema =
    object(&[req("assignments", &array(&ASSIGNMENT, 0, 1000))]);

static RESPONSE: Schema = object(&[
    req("response_uuid", &UUID),
    req("course_uuid", &UUID),
    req("sequence_number", &COURSE_SEQUENCE_NUMBER),
    req("ecosystem_uuid", &UUID),
    req("trial_uuid", &UUID),
    req("student_uuid", &UUID),
    req("exercise_uuid", &UUID),
    req("is_correct", &BOOL),
    req("is_real_response", &BOOL),
    req("responded_at", &DATETIME),
]);

pub(crate) static RECORD_RESPONSES: Schema =
    object(&[req("responses", &array(&RESPONSE, 0, 1000))]);

// ---------------------------------------------------------------------------------------
// Typed requests. Where a request item has exactly the fields of its event payload
// (docs/design/events.md §3), the payload type is the item type.

/// `/create_ecosystem`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEcosystemRequest {
    pub ecosystem_uuid: EcosystemUuid,
    pub book: Book,
    pub exercises: Vec<Exercise>,
    pub imported_at: Timestamp,
}

/// `/create_course`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCourseRequest {
    pub course_uuid: CourseUuid,
    pub ecosystem_uuid: EcosystemUuid,
    pub is_real_course: bool,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_at: Timestamp,
}

/// `/update_rosters`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRostersRequest {
    pub rosters: Vec<UpdateRoster>,
}

/// `/prepare_course_ecosystem`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareCourseEcosystemRequest {
    pub preparation_uuid: PreparationUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub next_ecosystem_uuid: EcosystemUuid,
    pub ecosystem_map: EcosystemMap,
    pub prepared_at: Timestamp,
}

/// `/update_course_ecosystems`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCourseEcosystemsRequest {
    pub update_requests: Vec<UpdateCourseEcosystem>,
}

/// `/create_update_assignments`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpdateAssignmentsRequest {
    pub assignments: Vec<CreateUpdateAssignment>,
}

/// `/record_responses`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordResponsesRequest {
    pub responses: Vec<RecordResponse>,
}

/// A validated write request: one variant per write endpoint (docs/design/api.md §2.1–§2.10).
#[derive(Clone, PartialEq, Debug)]
pub enum WriteRequest {
    CreateEcosystem(Box<CreateEcosystemRequest>),
    CreateCourse(CreateCourseRequest),
    UpdateCourseActiveDates(UpdateCourseActiveDates),
    UpdateRosters(UpdateRostersRequest),
    PrepareCourseEcosystem(PrepareCourseEcosystemRequest),
    UpdateCourseEcosystems(UpdateCourseEcosystemsRequest),
    UpdateGloballyExcludedExercises(UpdateExcludedExercises),
    UpdateCourseExcludedExercises(UpdateExcludedExercises),
    CreateUpdateAssignments(CreateUpdateAssignmentsRequest),
    RecordResponses(RecordResponsesRequest),
}

// ---------------------------------------------------------------------------------------
// Candidate events (docs/design/api.md §2 table, §3.3).

/// The payload of a candidate event, on its stream.
// Course payloads are nearly every candidate; boxing them would add an allocation per
// item to make the rare ecosystem variant no smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Debug)]
pub enum CandidatePayload {
    Course(CoursePayload),
    Ecosystem(EcosystemPayload),
}

/// One event a write request asks for, before the writer checks identities and slots.
#[derive(Clone, PartialEq, Debug)]
pub struct Candidate {
    /// Course or ecosystem events.
    pub stream: StreamKind,
    /// The course or ecosystem uuid: the Kafka key and the owner of the sequence.
    pub aggregate: Uuid,
    /// The slot: forced 0 for `create_course` / `create_ecosystem`, else Tutor's.
    pub sequence_number: SequenceNumber,
    /// The identity used for deduplication (docs/design/api.md §2 table).
    pub event_uuid: EventUuid,
    /// The event payload (docs/design/events.md §3).
    pub payload: CandidatePayload,
    /// JSON pointer of the request item, `""` for single-item endpoints, e.g.
    /// `/responses/3`; a 422 appends `/sequence_number`.
    pub item_path: String,
}

impl Candidate {
    /// The same slot and identity with the payload replaced by the `no_op` of an
    /// `update_course_ecosystem` whose preparation is unknown (docs/design/api.md §2.6, D7).
    /// Other candidates are returned unchanged.
    pub fn into_preparation_unknown_no_op(self) -> Candidate {
        match &self.payload {
            CandidatePayload::Course(CoursePayload::UpdateCourseEcosystem(item)) => Candidate {
                payload: CandidatePayload::Course(preparation_unknown_no_op(item)),
                ..self
            },
            _ => self,
        }
    }
}

/// The `no_op` payload written instead of an `update_course_ecosystem` item whose
/// preparation this course never prepared: reason `preparation_unknown`, and
/// `detail_json` = the validated item as compact JSON (uuids lower case, the request's
/// key order).
pub fn preparation_unknown_no_op(item: &UpdateCourseEcosystem) -> CoursePayload {
    CoursePayload::NoOp(NoOp {
        reason: NoOpReason::PreparationUnknown,
        actor: None,
        detail_json: serde_json::to_string(item).ok(),
        through_sequence_number: None,
    })
}

/// One candidate event per item of a write request, in request order (docs/design/api.md §2).
///
/// Items whose identity already appeared earlier in the same request collapse to
/// their first occurrence (§2.10, §3.3: first occurrence wins). Empty batches give
/// no candidates.
pub fn candidates(request: &WriteRequest) -> Vec<Candidate> {
    let mut all = Vec::new();
    match request {
        WriteRequest::CreateEcosystem(create) => all.push(Candidate {
            stream: StreamKind::Ecosystem,
            aggregate: create.ecosystem_uuid.as_uuid(),
            sequence_number: SequenceNumber::ZERO,
            event_uuid: EventUuid(create.ecosystem_uuid.as_uuid()),
            payload: CandidatePayload::Ecosystem(EcosystemPayload::CreateEcosystem(Box::new(
                CreateEcosystem {
                    ecosystem_uuid: create.ecosystem_uuid,
                    sequence_number: SequenceNumber::ZERO,
                    book: create.book.clone(),
                    exercises: create.exercises.clone(),
                    imported_at: create.imported_at.clone(),
                },
            ))),
            item_path: String::new(),
        }),
        WriteRequest::CreateCourse(create) => all.push(course_candidate(
            create.course_uuid,
            SequenceNumber::ZERO,
            create.course_uuid.as_uuid(),
            CoursePayload::CreateCourse(CreateCourse {
                course_uuid: create.course_uuid,
                sequence_number: SequenceNumber::ZERO,
                ecosystem_uuid: create.ecosystem_uuid,
                is_real_course: create.is_real_course,
                starts_at: create.starts_at.clone(),
                ends_at: create.ends_at.clone(),
                created_at: create.created_at.clone(),
            }),
            String::new(),
        )),
        WriteRequest::UpdateCourseActiveDates(update) => all.push(course_candidate(
            update.course_uuid,
            update.sequence_number,
            update.request_uuid.as_uuid(),
            CoursePayload::UpdateCourseActiveDates(update.clone()),
            String::new(),
        )),
        WriteRequest::UpdateRosters(request) => {
            for (idx, roster) in request.rosters.iter().enumerate() {
                all.push(course_candidate(
                    roster.course_uuid,
                    roster.sequence_number,
                    roster.request_uuid.as_uuid(),
                    CoursePayload::UpdateRoster(roster.clone()),
                    format!("/rosters/{idx}"),
                ));
            }
        }
        WriteRequest::PrepareCourseEcosystem(prepare) => all.push(course_candidate(
            prepare.course_uuid,
            prepare.sequence_number,
            prepare.preparation_uuid.as_uuid(),
            CoursePayload::PrepareCourseEcosystem(PrepareCourseEcosystem {
                preparation_uuid: prepare.preparation_uuid,
                course_uuid: prepare.course_uuid,
                sequence_number: prepare.sequence_number,
                // The next ecosystem is stored under `ecosystem_uuid` (docs/design/events.md §3).
                ecosystem_uuid: prepare.next_ecosystem_uuid,
                ecosystem_map: prepare.ecosystem_map.clone(),
                prepared_at: prepare.prepared_at.clone(),
            }),
            String::new(),
        )),
        WriteRequest::UpdateCourseEcosystems(request) => {
            for (idx, item) in request.update_requests.iter().enumerate() {
                all.push(course_candidate(
                    item.course_uuid,
                    item.sequence_number,
                    item.request_uuid.as_uuid(),
                    CoursePayload::UpdateCourseEcosystem(item.clone()),
                    format!("/update_requests/{idx}"),
                ));
            }
        }
        WriteRequest::UpdateGloballyExcludedExercises(update) => all.push(course_candidate(
            update.course_uuid,
            update.sequence_number,
            update.request_uuid.as_uuid(),
            CoursePayload::UpdateGloballyExcludedExercises(update.clone()),
            String::new(),
        )),
        WriteRequest::UpdateCourseExcludedExercises(update) => all.push(course_candidate(
            update.course_uuid,
            update.sequence_number,
            update.request_uuid.as_uuid(),
            CoursePayload::UpdateCourseExcludedExercises(update.clone()),
            String::new(),
        )),
        WriteRequest::CreateUpdateAssignments(request) => {
            for (idx, assignment) in request.assignments.iter().enumerate() {
                all.push(course_candidate(
                    assignment.course_uuid,
                    assignment.sequence_number,
                    assignment.request_uuid.as_uuid(),
                    CoursePayload::CreateUpdateAssignment(assignment.clone()),
                    format!("/assignments/{idx}"),
                ));
            }
        }
        WriteRequest::RecordResponses(request) => {
            for (idx, response) in request.responses.iter().enumerate() {
                all.push(course_candidate(
                    response.course_uuid,
                    response.sequence_number,
                    response.response_uuid.as_uuid(),
                    CoursePayload::RecordResponse(response.clone()),
                    format!("/responses/{idx}"),
                ));
            }
        }
    }
    dedupe_by_identity(all)
}

fn course_candidate(
    course_uuid: CourseUuid,
    sequence_number: SequenceNumber,
    identity: Uuid,
    payload: CoursePayload,
    item_path: String,
) -> Candidate {
    Candidate {
        stream: StreamKind::Course,
        aggregate: course_uuid.as_uuid(),
        sequence_number,
        event_uuid: EventUuid(identity),
        payload: CandidatePayload::Course(payload),
        item_path,
    }
}

/// Keeps the first candidate of each (stream, identity).
fn dedupe_by_identity(all: Vec<Candidate>) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    all.into_iter()
        .filter(|candidate| seen.insert((candidate.stream, candidate.event_uuid)))
        .collect()
}
