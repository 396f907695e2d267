//! Tutor's requests published to `<prefix>.inbox` (docs/design/events.md §6.4): the writer
//! applies each exactly as the HTTP endpoint would, and dead-letters rejected ones with
//! their error body, keyed like the request.

use biglearn_stream::clock::now_micros;
use std::time::Duration;

use biglearn_events::DeadLetterReason;
use biglearn_projector::consumer::dead_letter_for;
use biglearn_projector::event_log::EventLog;
use biglearn_runtime::{Applied, ApplyError, Batch, Projection, RunOptions, TopicConsumer};
use biglearn_stream::{ConsumedRecord, SharedStreamStore};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::requests::{candidates, parse_request, Endpoint, Request};
use crate::writer::{SlotConflict, WriteError, Writer};

/// What became of one inbox record.
#[derive(Clone, Debug, PartialEq)]
pub enum InboxOutcome {
    /// Written (or an idempotent no-op).
    Accepted,
    /// Would have been a 400 or 422: dead-lettered with this reason and error body.
    Rejected {
        reason: DeadLetterReason,
        body: Value,
    },
    /// The log was unavailable (503): retry the record later.
    Retry,
}

fn conflict_body(conflicts: &[SlotConflict]) -> Value {
    json!({"errors": conflicts.iter().map(|conflict| json!({
        "path": conflict.path,
        "message": format!(
            "{} {}: sequence_number {} is already taken by event {}",
            conflict.stream.as_str(), conflict.aggregate, conflict.sequence_number, conflict.taken_by
        ),
    })).collect::<Vec<_>>()})
}

fn invalid(message: String, request_id: &Value) -> InboxOutcome {
    invalid_at("", message, request_id)
}

/// Refused with the error at `path`, a JSON pointer into the inbox record.
fn invalid_at(path: &str, message: String, request_id: &Value) -> InboxOutcome {
    InboxOutcome::Rejected {
        reason: DeadLetterReason::InvalidPayload,
        body: json!({"errors": [{"path": path, "message": message}], "request_id": request_id}),
    }
}

/// Applies one inbox record value with the HTTP rules.
pub async fn apply_inbox_request(writer: &Writer, value: &[u8]) -> InboxOutcome {
    let envelope: Value = match crate::requests::parse_json_body(value) {
        Ok(envelope) => envelope,
        Err(error) => {
            return invalid_at(
                error.pointer(),
                format!("the inbox record is refused: {error}"),
                &Value::Null,
            )
        }
    };
    let request_id = envelope.get("request_id").cloned().unwrap_or(Value::Null);
    let Some(path) = envelope.get("endpoint").and_then(Value::as_str) else {
        return invalid("the inbox record has no \"endpoint\"".into(), &request_id);
    };
    let Some(endpoint) = Endpoint::from_path(path) else {
        return invalid(format!("unknown endpoint {path}"), &request_id);
    };
    if !endpoint.is_write() {
        return invalid(
            format!("{path} is not a write endpoint; only writes go through the inbox"),
            &request_id,
        );
    }
    let Some(body) = envelope.get("request") else {
        return invalid("the inbox record has no \"request\"".into(), &request_id);
    };
    let request = match parse_request(endpoint, body) {
        Ok(Request::Write(request)) => request,
        Ok(_) => return invalid(format!("{path} is not a write endpoint"), &request_id),
        Err(errors) => {
            return InboxOutcome::Rejected {
                reason: DeadLetterReason::InvalidPayload,
                body: json!({
                    "errors": errors.0.iter().map(|error| json!({"path": error.path, "message": error.message})).collect::<Vec<_>>(),
                    "request_id": request_id,
                }),
            }
        }
    };
    match writer.write(candidates(&request)).await {
        Ok(_) => InboxOutcome::Accepted,
        Err(WriteError::Conflicts(conflicts)) => {
            let mut body = conflict_body(&conflicts);
            body["request_id"] = request_id;
            InboxOutcome::Rejected {
                reason: DeadLetterReason::SlotConflict,
                body,
            }
        }
        Err(WriteError::Unavailable { .. }) | Err(WriteError::Internal { .. }) => {
            InboxOutcome::Retry
        }
    }
}

/// The inbox as a projection: each request applied through the writer, positions kept
/// in the event-log projection. A record is re-applied after a crash or a retried batch,
/// which is harmless because writes are idempotent by identity.
struct InboxProjection {
    writer: std::sync::Arc<Writer>,
    log: EventLog,
    store: SharedStreamStore,
    dlq_topic: String,
}

#[async_trait::async_trait]
impl Projection<()> for InboxProjection {
    fn positions(&self, topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        (0..n_partitions)
            .map(|partition| {
                self.log
                    .position(topic, partition)
                    .map(|position| position.unwrap_or(0))
                    .map_err(|error| ApplyError::fatal(error.to_string()))
            })
            .collect()
    }

    async fn apply(&self, batch: &Batch<'_, ()>) -> Result<Applied, ApplyError> {
        let mut applied = Applied::default();
        for record in &batch.records {
            let value = record.value.as_deref().unwrap_or_default();
            match apply_inbox_request(&self.writer, value).await {
                InboxOutcome::Accepted => applied.n_applied += 1,
                InboxOutcome::Rejected { reason, body } => {
                    let outcomes = self
                        .store
                        .append(
                            &self.dlq_topic,
                            vec![
                                dead_letter_for("writer.inbox", record, reason, body.to_string()).0,
                            ],
                        )
                        .await?;
                    if let Some(Err(error)) = outcomes.into_iter().find(Result::is_err) {
                        return Err(ApplyError::transient(format!(
                            "a rejected inbox request could not be dead-lettered: {error}"
                        )));
                    }
                    applied.n_dead_lettered += 1;
                }
                InboxOutcome::Retry => {
                    return Err(ApplyError::transient(
                        "the log is unavailable to the writer; the inbox request is retried",
                    ))
                }
            }
        }
        let positions: Vec<(&str, i32, i64)> = batch
            .positions
            .iter()
            .map(|(partition, offset)| (batch.topic, *partition, *offset))
            .collect();
        self.log
            .apply(&[], &positions, now_micros())
            .map_err(ApplyError::from)?;
        Ok(applied)
    }
}

/// Consumes `inbox_topic` into the writer until `shutdown` turns true.
pub async fn run_inbox_consumer(
    writer: std::sync::Arc<Writer>,
    log: EventLog,
    store: SharedStreamStore,
    inbox_topic: String,
    dlq_topic: String,
    shutdown: watch::Receiver<bool>,
) -> Result<(), biglearn_projector::ProjectionError> {
    let projection = InboxProjection {
        writer,
        log,
        store: store.clone(),
        dlq_topic,
    };
    TopicConsumer::new(inbox_topic, "inbox", |_: &ConsumedRecord| ())
        .feed(
            "inbox",
            std::sync::Arc::new(projection),
            watch::channel(Default::default()).0,
        )
        .options(RunOptions {
            max_batch: 100,
            poll_timeout: Duration::from_millis(200),
            ..RunOptions::default()
        })
        .run(store, shutdown)
        .await
        .map_err(|error| biglearn_projector::ProjectionError::Consumer {
            detail: error.to_string(),
        })
}

/// The key an inbox record of `request` is published under: the course or ecosystem
/// uuid it is about (so a course's requests stay in order), else empty.
pub fn inbox_key(request: &Value) -> Vec<u8> {
    fn find(value: &Value) -> Option<String> {
        for field in ["course_uuid", "ecosystem_uuid"] {
            if let Some(uuid) = value.get(field).and_then(Value::as_str) {
                return Some(uuid.to_lowercase());
            }
        }
        value
            .as_object()?
            .values()
            .filter_map(Value::as_array)
            .find_map(|items| items.first().and_then(find))
    }
    find(request).map(String::into_bytes).unwrap_or_default()
}
