//! Calculated results pushed by external algorithms (docs/design/api.md §5.3, the
//! `update_*` endpoints): the items as results, appended to the results topic.

use std::sync::Arc;

use biglearn_domain::ids::RequestUuid;
use biglearn_events::{ResultClueData, ResultKind, ResultRecord};
use biglearn_projector::event_log::ResultRow;
use biglearn_stream::clock::now_micros;
use biglearn_stream::OutgoingRecord;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::HandlerError;
use crate::requests::{AlgorithmName, AssignmentExercisesUpdate, ClueData, PushRequest};
use crate::writer::outgoing_record;
use crate::GatewayState;

/// Answers a result push: appends the results, then applies them in this process too.
pub async fn answer_push(
    state: &Arc<GatewayState>,
    request: PushRequest,
) -> Result<Value, HandlerError> {
    let (array_name, items) = push_results(&request, now_micros());
    let records: Vec<OutgoingRecord> = items
        .iter()
        .map(|(_, result)| outgoing_record(biglearn_events::result_record(result)))
        .collect();
    if !records.is_empty() {
        let unavailable = |error: String| HandlerError::Unavailable {
            message: format!("event log unavailable; retry with the same body ({error})"),
        };
        let outcomes = state
            .store
            .append(&state.topics.results(), records)
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
            return Err(unavailable(error.to_string()));
        }
        // Applied here too, so that a read in this process sees the push at once; the
        // results consumer applies the same records again, which changes nothing.
        let results: Vec<ResultRow> = items
            .iter()
            .map(|(_, result)| ResultRow::of(result))
            .collect();
        let stored = state.log.apply_results(&results, &[])?;
        for ((_, result), stored) in items.iter().zip(stored) {
            if stored {
                state
                    .metrics
                    .result_published(result.kind.as_str(), "external");
            } else {
                state.metrics.stale_result_dropped(result.kind.as_str());
            }
        }
    }
    Ok(json!({
        array_name: items.iter().map(|(request_uuid, _)| json!({
            "request_uuid": request_uuid,
            "update_status": "accepted",
        })).collect::<Vec<_>>()
    }))
}

/// The response array name and the items of a push request as results, in request
/// order, each with its `request_uuid` (docs/design/api.md §5.3: version `(0, 0, received_at)`).
pub fn push_results(
    request: &PushRequest,
    received_at_micros: i64,
) -> (&'static str, Vec<(RequestUuid, ResultRecord)>) {
    let base = |kind: ResultKind, algorithm: &AlgorithmName, calculation: Uuid| ResultRecord {
        kind,
        student_uuid: None,
        course_container_uuid: None,
        book_container_uuid: None,
        assignment_uuid: None,
        algorithm_name: algorithm.storage_key(),
        calculation_uuid: calculation,
        ecosystem_matrix_uuid: None,
        exercise_uuids: None,
        clue_data: None,
        spy_info_json: "{}".into(),
        input_seq: 0,
        model_seq: 0,
        computed_at_micros: received_at_micros,
        course_uuid: None,
        producer: "http".into(),
    };
    let exercises = |kind: ResultKind, item: &AssignmentExercisesUpdate| ResultRecord {
        assignment_uuid: Some(item.assignment_uuid.0),
        ecosystem_matrix_uuid: Some(item.ecosystem_matrix_uuid.0),
        exercise_uuids: Some(item.exercise_uuids.iter().map(|uuid| uuid.0).collect()),
        spy_info_json: Value::Object(item.spy_info.clone()).to_string(),
        ..base(kind, &item.algorithm_name, item.calculation_uuid.0)
    };
    let clue = |clue: &ClueData| ResultClueData {
        minimum: clue.minimum,
        most_likely: clue.most_likely,
        maximum: clue.maximum,
        is_real: clue.is_real,
        ecosystem_uuid: clue.ecosystem_uuid.map(|uuid| uuid.0),
    };
    match request {
        PushRequest::UpdateAssignmentPes(request) => (
            "pe_update_responses",
            request
                .pe_updates
                .iter()
                .map(|item| {
                    (
                        item.request_uuid,
                        exercises(ResultKind::AssignmentPes, item),
                    )
                })
                .collect(),
        ),
        PushRequest::UpdateAssignmentSpes(request) => (
            "spe_update_responses",
            request
                .spe_updates
                .iter()
                .map(|item| {
                    (
                        item.request_uuid,
                        exercises(ResultKind::AssignmentSpes, item),
                    )
                })
                .collect(),
        ),
        PushRequest::UpdatePracticeWorstAreasExercises(request) => (
            "practice_worst_areas_update_responses",
            request
                .practice_worst_areas_updates
                .iter()
                .map(|item| {
                    (
                        item.request_uuid,
                        ResultRecord {
                            student_uuid: Some(item.student_uuid.0),
                            ecosystem_matrix_uuid: Some(item.ecosystem_matrix_uuid.0),
                            exercise_uuids: Some(
                                item.exercise_uuids.iter().map(|uuid| uuid.0).collect(),
                            ),
                            spy_info_json: Value::Object(item.spy_info.clone()).to_string(),
                            ..base(
                                ResultKind::PracticeWorstAreas,
                                &item.algorithm_name,
                                item.calculation_uuid.0,
                            )
                        },
                    )
                })
                .collect(),
        ),
        PushRequest::UpdateStudentClues(request) => (
            "student_clue_update_responses",
            request
                .student_clue_updates
                .iter()
                .map(|item| {
                    (
                        item.request_uuid,
                        ResultRecord {
                            student_uuid: Some(item.student_uuid.0),
                            book_container_uuid: Some(item.book_container_uuid.0),
                            clue_data: Some(clue(&item.clue_data)),
                            ..base(
                                ResultKind::StudentClue,
                                &item.algorithm_name,
                                item.calculation_uuid.0,
                            )
                        },
                    )
                })
                .collect(),
        ),
        PushRequest::UpdateTeacherClues(request) => (
            "teacher_clue_update_responses",
            request
                .teacher_clue_updates
                .iter()
                .map(|item| {
                    (
                        item.request_uuid,
                        ResultRecord {
                            course_container_uuid: Some(item.course_container_uuid.0),
                            book_container_uuid: Some(item.book_container_uuid.0),
                            clue_data: Some(clue(&item.clue_data)),
                            ..base(
                                ResultKind::TeacherClue,
                                &item.algorithm_name,
                                item.calculation_uuid.0,
                            )
                        },
                    )
                })
                .collect(),
        ),
    }
}
