//! Result reads: results with their statuses and defaults (docs/design/api.md §4), from the
//! results stored in the event-log projection.

use std::collections::HashSet;
use std::sync::Arc;

use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::{CourseUuid, EcosystemUuid, SequenceNumber};
use biglearn_events::{ResultClueData, ResultKey, ResultKind, ResultRecord};
use biglearn_projector::event_log::{EventLog, KnownKind};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::HandlerError;
use crate::requests::{AssignmentExercisesRequest, ReadRequest};
use crate::GatewayState;

/// The result served under `key`: `None` when nothing is stored or the result was
/// withdrawn (docs/design/scheduler.md S9: reads then answer `*_unready`).
fn stored(log: &EventLog, key: &ResultKey) -> Result<Option<ResultRecord>, HandlerError> {
    Ok(log
        .result(&key.text())?
        .filter(|record| !record.is_withdrawal()))
}

/// A result's `spy_info` as Tutor reads it: the stored JSON object, `{}` if there is none.
fn spy_info(record: &ResultRecord) -> Value {
    serde_json::from_str(&record.spy_info_json).unwrap_or_else(|_| json!({}))
}

/// A result's exercises as served: each exercise once, in ranked order, at most `max`.
fn exercise_list(record: &ResultRecord, max: Option<u32>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    let mut uuids: Vec<Uuid> = record
        .exercise_uuids
        .iter()
        .flatten()
        .filter(|uuid| seen.insert(**uuid))
        .copied()
        .collect();
    if let Some(max) = max {
        uuids.truncate(max as usize);
    }
    uuids
}

/// A CLUE's `clue_data` as Tutor reads it.
fn clue_json(clue: &ResultClueData) -> Value {
    let mut value = json!({
        "minimum": clue.minimum,
        "most_likely": clue.most_likely,
        "maximum": clue.maximum,
        "is_real": clue.is_real,
    });
    if let Some(ecosystem) = clue.ecosystem_uuid {
        value["ecosystem_uuid"] = json!(ecosystem);
    }
    value
}

/// What a stored result says, as JSON (`/admin/results/list`): its answer fields; for a
/// withdrawal, `{"withdrawn": true}`.
pub(crate) fn result_content(record: &ResultRecord) -> Value {
    if record.is_withdrawal() {
        return json!({"withdrawn": true});
    }
    match record.kind {
        ResultKind::StudentClue | ResultKind::TeacherClue => json!({
            "calculation_uuid": record.calculation_uuid,
            "clue_data": record.clue_data.as_ref().map(clue_json),
        }),
        ResultKind::AssignmentPes | ResultKind::AssignmentSpes | ResultKind::PracticeWorstAreas => {
            json!({
                "calculation_uuid": record.calculation_uuid,
                "ecosystem_matrix_uuid": record.ecosystem_matrix_uuid,
                "exercise_uuids": record.exercise_uuids.clone().unwrap_or_default(),
                "spy_info": spy_info(record),
            })
        }
    }
}

fn assignment_exercises(
    state: &Arc<GatewayState>,
    endpoint: &str,
    kind: ResultKind,
    items: &[AssignmentExercisesRequest],
) -> Result<Vec<Value>, HandlerError> {
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let key = ResultKey::assignment(kind, item.assignment_uuid.0, item.algorithm_name.as_str());
        let answer = match stored(&state.log, &key)? {
            Some(record) => json!({
                "request_uuid": item.request_uuid,
                "assignment_uuid": item.assignment_uuid,
                "calculation_uuid": record.calculation_uuid,
                "ecosystem_matrix_uuid": record.ecosystem_matrix_uuid,
                "exercise_uuids": exercise_list(&record, item.max_num_exercises),
                "assignment_status": "assignment_ready",
                "spy_info": spy_info(&record),
            }),
            None => {
                let status = if state
                    .log
                    .is_known(KnownKind::Assignment, item.assignment_uuid.0)?
                {
                    "assignment_unready"
                } else {
                    "assignment_unknown"
                };
                json!({
                    "request_uuid": item.request_uuid,
                    "assignment_uuid": item.assignment_uuid,
                    "calculation_uuid": null,
                    "ecosystem_matrix_uuid": null,
                    "exercise_uuids": [],
                    "assignment_status": status,
                    "spy_info": {},
                })
            }
        };
        state.metrics.read_result(
            endpoint,
            answer["assignment_status"].as_str().unwrap_or_default(),
        );
        answers.push(answer);
    }
    Ok(answers)
}

fn default_clue(ecosystem: Option<EcosystemUuid>) -> Value {
    let mut clue = json!({"minimum": 0, "most_likely": 0.5, "maximum": 1, "is_real": false});
    if let Some(ecosystem) = ecosystem {
        clue["ecosystem_uuid"] = json!(ecosystem);
    }
    clue
}

/// Answers a result read (docs/design/api.md §4).
pub fn answer_read(state: &Arc<GatewayState>, request: ReadRequest) -> Result<Value, HandlerError> {
    let log = &state.log;
    match request {
        ReadRequest::FetchAssignmentPes(request) => Ok(json!({
            "pe_responses": assignment_exercises(state, "/fetch_assignment_pes", ResultKind::AssignmentPes, &request.pe_requests)?
        })),
        ReadRequest::FetchAssignmentSpes(request) => Ok(json!({
            "spe_responses": assignment_exercises(state, "/fetch_assignment_spes", ResultKind::AssignmentSpes, &request.spe_requests)?
        })),
        ReadRequest::FetchPracticeWorstAreasExercises(request) => {
            let mut answers = Vec::new();
            for item in &request.worst_areas_requests {
                let key = ResultKey::practice_worst_areas(
                    item.student_uuid.0,
                    item.algorithm_name.as_str(),
                );
                let answer = match stored(log, &key)? {
                    Some(record) => json!({
                        "request_uuid": item.request_uuid,
                        "student_uuid": item.student_uuid,
                        "calculation_uuid": record.calculation_uuid,
                        "ecosystem_matrix_uuid": record.ecosystem_matrix_uuid,
                        "exercise_uuids": exercise_list(&record, item.max_num_exercises),
                        "student_status": "student_ready",
                        "spy_info": spy_info(&record),
                    }),
                    None => json!({
                        "request_uuid": item.request_uuid,
                        "student_uuid": item.student_uuid,
                        "calculation_uuid": null,
                        "ecosystem_matrix_uuid": null,
                        "exercise_uuids": [],
                        "student_status": if log.is_known(KnownKind::Student, item.student_uuid.0)? { "student_unready" } else { "student_unknown" },
                        "spy_info": {},
                    }),
                };
                state.metrics.read_result(
                    "/fetch_practice_worst_areas_exercises",
                    answer["student_status"].as_str().unwrap_or_default(),
                );
                answers.push(answer);
            }
            Ok(json!({"worst_areas_responses": answers}))
        }
        ReadRequest::FetchStudentClues(request) => {
            let mut answers = Vec::new();
            for item in &request.student_clue_requests {
                let key = ResultKey::student_clue(
                    item.student_uuid.0,
                    item.book_container_uuid.0,
                    item.algorithm_name.as_str(),
                );
                let student_known =
                    |log: &EventLog| log.is_known(KnownKind::Student, item.student_uuid.0);
                let answer = clue_answer(
                    log,
                    &key,
                    item.request_uuid,
                    item.book_container_uuid,
                    student_known,
                    "student_unknown",
                )?;
                state.metrics.read_result(
                    "/fetch_student_clues",
                    answer["clue_status"].as_str().unwrap_or_default(),
                );
                answers.push(answer);
            }
            Ok(json!({"student_clue_responses": answers}))
        }
        ReadRequest::FetchTeacherClues(request) => {
            let mut answers = Vec::new();
            for item in &request.teacher_clue_requests {
                let key = ResultKey::teacher_clue(
                    item.course_container_uuid.0,
                    item.book_container_uuid.0,
                    item.algorithm_name.as_str(),
                );
                let container_known = |log: &EventLog| {
                    log.is_known(KnownKind::CourseContainer, item.course_container_uuid.0)
                };
                let answer = clue_answer(
                    log,
                    &key,
                    item.request_uuid,
                    item.book_container_uuid,
                    container_known,
                    "course_container_unknown",
                )?;
                state.metrics.read_result(
                    "/fetch_teacher_clues",
                    answer["clue_status"].as_str().unwrap_or_default(),
                );
                answers.push(answer);
            }
            Ok(json!({"teacher_clue_responses": answers}))
        }
        ReadRequest::FetchCourseEcosystemStatuses(request) => {
            let mut statuses = Vec::new();
            for course in &request.course_uuids {
                statuses.push(course_status(log, *course)?);
            }
            Ok(json!({"course_statuses": statuses}))
        }
    }
}

fn clue_answer(
    log: &EventLog,
    key: &ResultKey,
    request_uuid: biglearn_domain::ids::RequestUuid,
    book_container: biglearn_domain::ids::BookContainerUuid,
    owner_known: impl Fn(&EventLog) -> Result<bool, biglearn_projector::ProjectionError>,
    owner_unknown_status: &str,
) -> Result<Value, HandlerError> {
    if let Some(record) = stored(log, key)? {
        return Ok(json!({
            "request_uuid": request_uuid,
            "calculation_uuid": record.calculation_uuid,
            "clue_data": record.clue_data.as_ref().map(clue_json),
            "clue_status": "clue_ready",
        }));
    }
    let ecosystem = log.book_container_ecosystem(book_container)?;
    let status = match ecosystem {
        None => "book_container_unknown",
        Some(_) if !owner_known(log)? => owner_unknown_status,
        Some(_) => "clue_unready",
    };
    Ok(json!({
        "request_uuid": request_uuid,
        "calculation_uuid": null,
        "clue_data": default_clue(ecosystem),
        "clue_status": status,
    }))
}

fn ecosystem_status(
    log: &EventLog,
    ecosystem: Option<EcosystemUuid>,
    is_prepared: bool,
) -> Result<Value, HandlerError> {
    Ok(match ecosystem {
        None => json!({
            "ecosystem_uuid": null,
            "ecosystem_is_known": false,
            "ecosystem_is_prepared": false,
            "precompute_is_complete": false,
        }),
        Some(ecosystem) => json!({
            "ecosystem_uuid": ecosystem,
            "ecosystem_is_known": log.is_known(KnownKind::Ecosystem, ecosystem.0)?,
            "ecosystem_is_prepared": is_prepared,
            "precompute_is_complete": log.is_known(KnownKind::EcosystemWithModel, ecosystem.0)?,
        }),
    })
}

/// `fetch_course_ecosystem_statuses`, with the fixed rules of D10.
fn course_status(log: &EventLog, course: CourseUuid) -> Result<Value, HandlerError> {
    let is_known = log.is_known(KnownKind::Course, course.0)?;
    let last_update = log.last_ecosystem_update(course)?;
    let preparations = log.preparations(course)?;
    let current_preparation = last_update.map(|(_, preparation)| preparation);
    let current_ecosystem = match current_preparation {
        Some(preparation) => preparations
            .iter()
            .find(|(uuid, _, _)| *uuid == preparation)
            .map(|(_, _, ecosystem)| *ecosystem),
        None if is_known => initial_ecosystem(log, course)?,
        None => None,
    };
    let after = last_update
        .map(|(seq, _)| seq)
        .unwrap_or(SequenceNumber::ZERO);
    let next = preparations
        .iter()
        .filter(|(_, seq, _)| *seq > after)
        .max_by_key(|(_, seq, _)| *seq);
    Ok(json!({
        "course_uuid": course,
        "course_is_known": is_known,
        "current_ecosystem_preparation_uuid": current_preparation,
        "current_ecosystem_status": ecosystem_status(log, current_ecosystem, current_preparation.is_some())?,
        "next_ecosystem_status": ecosystem_status(log, next.map(|(_, _, ecosystem)| *ecosystem), next.is_some())?,
    }))
}

fn initial_ecosystem(
    log: &EventLog,
    course: CourseUuid,
) -> Result<Option<EcosystemUuid>, HandlerError> {
    let Some(row) = log.event(StreamKind::Course, course.0, SequenceNumber::ZERO)? else {
        return Ok(None);
    };
    let data: Value = row
        .event_data
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    Ok(data["ecosystem_uuid"]
        .as_str()
        .and_then(|text| text.parse().ok()))
}
