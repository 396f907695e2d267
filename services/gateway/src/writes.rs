//! Tutor's writes (docs/design/api.md §2): each request's candidates go to the writer,
//! and the answer is built in Tutor's exact JSON shape once they are accepted.

use std::collections::BTreeSet;
use std::sync::Arc;

use biglearn_domain::ids::EventUuid;
use serde_json::{json, Value};

use crate::error::HandlerError;
use crate::requests::{candidates, Candidate, WriteRequest};
use crate::GatewayState;

/// Answers a write (docs/design/api.md §2) once the writer has accepted every item.
pub async fn answer_write(
    state: &Arc<GatewayState>,
    request: WriteRequest,
) -> Result<Value, HandlerError> {
    let writer = state
        .writer
        .as_ref()
        .ok_or_else(HandlerError::not_the_writer)?;
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
