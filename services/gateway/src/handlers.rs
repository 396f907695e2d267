//! What each validated request does: writes go to the writer, reads to the projections;
//! every answer is built in Tutor's exact JSON shape here.

use biglearn_stream::clock::now_micros;
use std::collections::BTreeSet;
use std::sync::Arc;

use biglearn_domain::ids::EventUuid;
use biglearn_stream::OutgoingRecord;
use serde_json::{json, Value};

use crate::error::HandlerError;
use crate::reads;
use crate::requests::{candidates, AdminRequest, Candidate, PushRequest, Request, WriteRequest};
use crate::GatewayState;

fn not_the_writer() -> HandlerError {
    HandlerError::Unavailable {
        message: "not the writer".into(),
    }
}

/// Answers one validated request.
pub async fn handle(
    state: &Arc<GatewayState>,
    request: Request,
    actor: Option<&str>,
) -> Result<Value, HandlerError> {
    match request {
        Request::Write(write) => handle_write(state, write).await,
        Request::Read(read) => reads::answer_read(state, read),
        Request::EventStream(read) => reads::answer_event_stream(state, read),
        Request::Push(push) => handle_push(state, push).await,
        Request::Admin(admin) => handle_admin(state, admin, actor.unwrap_or("unknown")).await,
    }
}

async fn handle_write(
    state: &Arc<GatewayState>,
    request: WriteRequest,
) -> Result<Value, HandlerError> {
    let writer = state.writer.as_ref().ok_or_else(not_the_writer)?;
    let candidates: Vec<Candidate> = candidates(&request);
    let receipt = writer.write(candidates).await?;
    let body = match &request {
        WriteRequest::CreateEcosystem(create) => {
            json!({"created_ecosystem_uuid": create.ecosystem_uuid})
        }
        WriteRequest::CreateCourse(create) => json!({"created_course_uuid": create.course_uuid}),
        WriteRequest::UpdateCourseActiveDates(update) => {
            json!({"updated_course_uuid": update.course_uuid})
        }
        WriteRequest::UpdateRosters(update) => json!({
            "updated_rosters": update.rosters.iter().map(|roster| json!({
                "request_uuid": roster.request_uuid,
                "updated_course_uuid": roster.course_uuid,
            })).collect::<Vec<_>>()
        }),
        WriteRequest::PrepareCourseEcosystem(_) => json!({"status": "accepted"}),
        WriteRequest::UpdateCourseEcosystems(update) => json!({
            "update_responses": update.update_requests.iter().map(|item| {
                let status = receipt
                    .update_statuses
                    .get(&EventUuid(item.request_uuid.0))
                    .map(|status| status.as_str())
                    .unwrap_or("updated_but_unready");
                json!({"request_uuid": item.request_uuid, "update_status": status})
            }).collect::<Vec<_>>()
        }),
        WriteRequest::UpdateGloballyExcludedExercises(_)
        | WriteRequest::UpdateCourseExcludedExercises(_) => json!({"status": "success"}),
        WriteRequest::CreateUpdateAssignments(update) => json!({
            "updated_assignments": update.assignments.iter().map(|assignment| json!({
                "request_uuid": assignment.request_uuid,
                "updated_assignment_uuid": assignment.assignment_uuid,
            })).collect::<Vec<_>>()
        }),
        WriteRequest::RecordResponses(record) => {
            let mut seen = BTreeSet::new();
            let uuids: Vec<Value> = record
                .responses
                .iter()
                .filter(|response| seen.insert(response.response_uuid))
                .map(|response| json!(response.response_uuid))
                .collect();
            json!({"recorded_response_uuids": uuids})
        }
    };
    Ok(body)
}

async fn handle_push(
    state: &Arc<GatewayState>,
    request: PushRequest,
) -> Result<Value, HandlerError> {
    let (array_name, items) = reads::push_results(&request, now_micros());
    let records: Vec<OutgoingRecord> = items
        .iter()
        .map(|(_, result)| {
            let encoded = biglearn_events::result_record(result);
            OutgoingRecord {
                key: encoded.key,
                value: encoded.value,
                headers: encoded.headers,
            }
        })
        .collect();
    if !records.is_empty() {
        let outcomes = state
            .store
            .append(&state.topics.results(), records)
            .await
            .map_err(|error| HandlerError::Unavailable {
                message: format!("event log unavailable; retry with the same body ({error})"),
            })?;
        if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
            return Err(HandlerError::Unavailable {
                message: format!("event log unavailable; retry with the same body ({error})"),
            });
        }
        // Applied here too, so that a read in this process sees the push at once; the
        // results consumer applies the same records again, which changes nothing.
        let results: Vec<_> = items
            .iter()
            .map(|(_, result)| {
                (
                    result.key(),
                    biglearn_projector::results::version_of(result),
                    biglearn_projector::results::stored_content(result).to_string(),
                )
            })
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

async fn handle_admin(
    state: &Arc<GatewayState>,
    request: AdminRequest,
    actor: &str,
) -> Result<Value, HandlerError> {
    match request {
        AdminRequest::FillSequenceGap(fill) => {
            let writer = state.writer.as_ref().ok_or_else(not_the_writer)?;
            let outcome = writer
                .fill_sequence_gap(
                    fill.stream,
                    fill.aggregate_uuid,
                    fill.sequence_number,
                    fill.sequence_number_to,
                    actor,
                    &fill.reason,
                )
                .await?;
            let filled_count = match outcome {
                crate::writer::GapFill::Filled(count) => count,
                crate::writer::GapFill::TooManyRuns(n_runs) => {
                    return Err(HandlerError::BadRequest {
                        path: "/sequence_number_to".into(),
                        message: format!(
                            "the range holds {n_runs} separate missing runs, more than the {} one call fills; fill a smaller range",
                            crate::writer::MAX_FILL_RUNS
                        ),
                    })
                }
            };
            tracing::info!(
                stream = fill.stream.as_str(),
                aggregate = %fill.aggregate_uuid,
                sequence_number = fill.sequence_number.0,
                sequence_number_to = fill.sequence_number_to.map(|seq| seq.0),
                actor,
                reason = %fill.reason,
                filled_count,
                "An operator filled a sequence gap."
            );
            Ok(json!({
                "status": if filled_count > 0 { "filled" } else { "already_filled" },
                "filled_count": filled_count,
            }))
        }
        AdminRequest::ListSequenceGaps(list) => {
            let now = now_micros();
            let gaps = state.log.gaps(list.stream, list.limit as usize)?;
            Ok(json!({
                "gaps": gaps.iter().map(|gap| json!({
                    "aggregate_uuid": gap.aggregate,
                    "first_missing": gap.first_missing,
                    "missing_count": gap.missing_count,
                    "highest_received": gap.highest_received,
                    "blocked_since": biglearn_domain::time::format_datetime_micros(gap.blocked_since_micros),
                    "age_seconds": ((now - gap.blocked_since_micros).max(0) as f64) / 1e6,
                })).collect::<Vec<_>>()
            }))
        }
        AdminRequest::Rebuild => crate::operations::start_rebuild(state, actor).await,
        AdminRequest::RebuildStatus => crate::operations::rebuild_status(state),
        AdminRequest::DlqList(list) => crate::operations::list_dead_letters(state, list).await,
        AdminRequest::DlqReplay(replay) => {
            crate::operations::replay_dead_letters(state, replay, actor).await
        }
        AdminRequest::StateDigest(digest) => crate::operations::state_digest(state, &digest),
        AdminRequest::ResultsList(list) => crate::operations::list_results(state, &list),
        settings => crate::settings_admin::answer_settings(state, settings, actor).await,
    }
}
