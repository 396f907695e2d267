//! The calculated-result pushes of external algorithms (docs/design/api.md §5.3).

use serde::Deserialize;
use serde_json::{Map, Value};

use biglearn_domain::ids::{
    AssignmentUuid, BookContainerUuid, CalculationUuid, CourseContainerUuid, EcosystemUuid,
    ExerciseUuid, MatrixUuid, RequestUuid, StudentUuid,
};

use super::validate::{
    array, object, opt, req, Field, Schema, ALGORITHM_NAME, CLUE_DATA, SPY_INFO, UUID, UUIDS_0_1000,
};
use super::AlgorithmName;

/// The message for an item that names one of the six built-in algorithms (§5.2, §5.3).
pub const RESERVED_ALGORITHM_MESSAGE: &str = "algorithm_name is reserved for a built-in algorithm";

/// `algorithm_name` on pushes: 1..100 characters and not a built-in name.
static PUSH_ALGORITHM_NAME: Schema = Schema::Checked {
    schema: &ALGORITHM_NAME,
    check: check_not_reserved,
};

fn check_not_reserved(value: &Value) -> Option<String> {
    let name = value.as_str()?;
    AlgorithmName::is_reserved_name(name).then(|| RESERVED_ALGORITHM_MESSAGE.to_owned())
}

/// The members of an exercise-list update item whose owner is `owner`: `assignment_uuid`
/// for pe and spe updates, `student_uuid` for worst-areas updates.
const fn exercises_update(owner: &'static str) -> [Field; 7] {
    [
        req("request_uuid", &UUID),
        req(owner, &UUID),
        req("algorithm_name", &PUSH_ALGORITHM_NAME),
        req("calculation_uuid", &UUID),
        req("ecosystem_matrix_uuid", &UUID),
        req("exercise_uuids", &UUIDS_0_1000),
        opt("spy_info", &SPY_INFO),
    ]
}

/// The members of a CLUE update item whose owner is `owner`: `student_uuid` for student
/// CLUEs, `course_container_uuid` for teacher CLUEs.
const fn clue_update(owner: &'static str) -> [Field; 6] {
    [
        req("request_uuid", &UUID),
        req(owner, &UUID),
        req("book_container_uuid", &UUID),
        req("algorithm_name", &PUSH_ALGORITHM_NAME),
        req("calculation_uuid", &UUID),
        req("clue_data", &CLUE_DATA),
    ]
}

static ASSIGNMENT_EXERCISES_UPDATE: Schema = object(&exercises_update("assignment_uuid"));

pub(crate) static UPDATE_ASSIGNMENT_PES: Schema = object(&[req(
    "pe_updates",
    &array(&ASSIGNMENT_EXERCISES_UPDATE, 0, 1000),
)]);

pub(crate) static UPDATE_ASSIGNMENT_SPES: Schema = object(&[req(
    "spe_updates",
    &array(&ASSIGNMENT_EXERCISES_UPDATE, 0, 1000),
)]);

pub(crate) static UPDATE_PRACTICE_WORST_AREAS_EXERCISES: Schema = object(&[req(
    "practice_worst_areas_updates",
    &array(&object(&exercises_update("student_uuid")), 0, 1000),
)]);

pub(crate) static UPDATE_STUDENT_CLUES: Schema = object(&[req(
    "student_clue_updates",
    &array(&object(&clue_update("student_uuid")), 0, 1000),
)]);

pub(crate) static UPDATE_TEACHER_CLUES: Schema = object(&[req(
    "teacher_clue_updates",
    &array(&object(&clue_update("course_container_uuid")), 0, 1000),
)]);

/// `clue_data` (docs/design/api.md §1.6): values in [0, 1].
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClueData {
    pub minimum: f64,
    pub most_likely: f64,
    pub maximum: f64,
    pub is_real: bool,
    pub ecosystem_uuid: Option<EcosystemUuid>,
}

/// One item of `pe_updates` / `spe_updates`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentExercisesUpdate {
    pub request_uuid: RequestUuid,
    pub assignment_uuid: AssignmentUuid,
    pub algorithm_name: AlgorithmName,
    pub calculation_uuid: CalculationUuid,
    pub ecosystem_matrix_uuid: MatrixUuid,
    pub exercise_uuids: Vec<ExerciseUuid>,
    /// `{}` when absent.
    #[serde(default)]
    pub spy_info: Map<String, Value>,
}

/// `/update_assignment_pes`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAssignmentPesRequest {
    pub pe_updates: Vec<AssignmentExercisesUpdate>,
}

/// `/update_assignment_spes`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAssignmentSpesRequest {
    pub spe_updates: Vec<AssignmentExercisesUpdate>,
}

/// One item of `practice_worst_areas_updates`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorstAreasUpdate {
    pub request_uuid: RequestUuid,
    pub student_uuid: StudentUuid,
    pub algorithm_name: AlgorithmName,
    pub calculation_uuid: CalculationUuid,
    pub ecosystem_matrix_uuid: MatrixUuid,
    pub exercise_uuids: Vec<ExerciseUuid>,
    /// `{}` when absent.
    #[serde(default)]
    pub spy_info: Map<String, Value>,
}

/// `/update_practice_worst_areas_exercises`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePracticeWorstAreasRequest {
    pub practice_worst_areas_updates: Vec<WorstAreasUpdate>,
}

/// One item of `student_clue_updates`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentClueUpdate {
    pub request_uuid: RequestUuid,
    pub student_uuid: StudentUuid,
    pub book_container_uuid: BookContainerUuid,
    pub algorithm_name: AlgorithmName,
    pub calculation_uuid: CalculationUuid,
    pub clue_data: ClueData,
}

/// `/update_student_clues`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStudentCluesRequest {
    pub student_clue_updates: Vec<StudentClueUpdate>,
}

/// One item of `teacher_clue_updates`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherClueUpdate {
    pub request_uuid: RequestUuid,
    pub course_container_uuid: CourseContainerUuid,
    pub book_container_uuid: BookContainerUuid,
    pub algorithm_name: AlgorithmName,
    pub calculation_uuid: CalculationUuid,
    pub clue_data: ClueData,
}

/// `/update_teacher_clues`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeacherCluesRequest {
    pub teacher_clue_updates: Vec<TeacherClueUpdate>,
}

/// A validated result push: one variant per endpoint of docs/design/api.md §5.3. No item
/// names a reserved algorithm.
#[derive(Clone, PartialEq, Debug)]
pub enum PushRequest {
    UpdateAssignmentPes(UpdateAssignmentPesRequest),
    UpdateAssignmentSpes(UpdateAssignmentSpesRequest),
    UpdatePracticeWorstAreasExercises(UpdatePracticeWorstAreasRequest),
    UpdateStudentClues(UpdateStudentCluesRequest),
    UpdateTeacherClues(UpdateTeacherCluesRequest),
}
