//! The result reads Tutor makes (docs/design/api.md §4): schemas and typed requests.

use serde::Deserialize;

use biglearn_domain::ids::{
    AssignmentUuid, BookContainerUuid, CourseContainerUuid, CourseUuid, RequestUuid, StudentUuid,
};

use super::validate::{
    array, object, opt, req, Schema, ALGORITHM_NAME, MAX_NUM_EXERCISES, UUID, UUIDS_0_1000,
};
use super::AlgorithmName;

static ASSIGNMENT_EXERCISES_ITEM: Schema = object(&[
    req("request_uuid", &UUID),
    req("assignment_uuid", &UUID),
    req("algorithm_name", &ALGORITHM_NAME),
    opt("max_num_exercises", &MAX_NUM_EXERCISES),
]);

pub(crate) static FETCH_ASSIGNMENT_PES: Schema = object(&[req(
    "pe_requests",
    &array(&ASSIGNMENT_EXERCISES_ITEM, 0, 1000),
)]);

pub(crate) static FETCH_ASSIGNMENT_SPES: Schema = object(&[req(
    "spe_requests",
    &array(&ASSIGNMENT_EXERCISES_ITEM, 0, 1000),
)]);

pub(crate) static FETCH_PRACTICE_WORST_AREAS_EXERCISES: Schema = object(&[req(
    "worst_areas_requests",
    &array(
        &object(&[
            req("request_uuid", &UUID),
            req("student_uuid", &UUID),
            req("algorithm_name", &ALGORITHM_NAME),
            opt("max_num_exercises", &MAX_NUM_EXERCISES),
        ]),
        0,
        1000,
    ),
)]);

pub(crate) static FETCH_STUDENT_CLUES: Schema = object(&[req(
    "student_clue_requests",
    &array(
        &object(&[
            req("request_uuid", &UUID),
            req("student_uuid", &UUID),
            req("book_container_uuid", &UUID),
            req("algorithm_name", &ALGORITHM_NAME),
        ]),
        0,
        1000,
    ),
)]);

pub(crate) static FETCH_TEACHER_CLUES: Schema = object(&[req(
    "teacher_clue_requests",
    &array(
        &object(&[
            req("request_uuid", &UUID),
            req("course_container_uuid", &UUID),
            req("book_container_uuid", &UUID),
            req("algorithm_name", &ALGORITHM_NAME),
        ]),
        0,
        1000,
    ),
)]);

pub(crate) static FETCH_COURSE_ECOSYSTEM_STATUSES: Schema = object(&[
    req("request_uuid", &UUID),
    req("course_uuids", &UUIDS_0_1000),
]);

/// One item of `pe_requests` / `spe_requests`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentExercisesRequest {
    pub request_uuid: RequestUuid,
    pub assignment_uuid: AssignmentUuid,
    pub algorithm_name: AlgorithmName,
    pub max_num_exercises: Option<u32>,
}

/// `/fetch_assignment_pes`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchAssignmentPesRequest {
    pub pe_requests: Vec<AssignmentExercisesRequest>,
}

/// `/fetch_assignment_spes`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchAssignmentSpesRequest {
    pub spe_requests: Vec<AssignmentExercisesRequest>,
}

/// One item of `worst_areas_requests`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorstAreasRequest {
    pub request_uuid: RequestUuid,
    pub student_uuid: StudentUuid,
    pub algorithm_name: AlgorithmName,
    pub max_num_exercises: Option<u32>,
}

/// `/fetch_practice_worst_areas_exercises`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchPracticeWorstAreasRequest {
    pub worst_areas_requests: Vec<WorstAreasRequest>,
}

/// One item of `student_clue_requests`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentClueRequest {
    pub request_uuid: RequestUuid,
    pub student_uuid: StudentUuid,
    pub book_container_uuid: BookContainerUuid,
    pub algorithm_name: AlgorithmName,
}

/// `/fetch_student_clues`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchStudentCluesRequest {
    pub student_clue_requests: Vec<StudentClueRequest>,
}

/// One item of `teacher_clue_requests`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherClueRequest {
    pub request_uuid: RequestUuid,
    pub course_container_uuid: CourseContainerUuid,
    pub book_container_uuid: BookContainerUuid,
    pub algorithm_name: AlgorithmName,
}

/// `/fetch_teacher_clues`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchTeacherCluesRequest {
    pub teacher_clue_requests: Vec<TeacherClueRequest>,
}

/// `/fetch_course_ecosystem_statuses`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchCourseEcosystemStatusesRequest {
    pub request_uuid: RequestUuid,
    pub course_uuids: Vec<CourseUuid>,
}

/// A validated result read: one variant per endpoint of docs/design/api.md §4.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ReadRequest {
    FetchAssignmentPes(FetchAssignmentPesRequest),
    FetchAssignmentSpes(FetchAssignmentSpesRequest),
    FetchPracticeWorstAreasExercises(FetchPracticeWorstAreasRequest),
    FetchStudentClues(FetchStudentCluesRequest),
    FetchTeacherClues(FetchTeacherCluesRequest),
    FetchCourseEcosystemStatuses(FetchCourseEcosystemStatusesRequest),
}
