//! Tutor's requests published to `<prefix>.inbox` (docs/design/events.md §6.4): the writer
//! applies each exactly as the HTTP endpoint would, and dead-letters rejected ones with
//! their error body, keyed like the request.

use std::time::Duration;

use biglearn_events::{encode_dead_letter, DeadLetter, DeadLetterReason};
use biglearn_projector::event_log::EventLog;
use biglearn_stream::{ConsumedRecord, OutgoingRecord, SharedStreamStore};
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
    InboxOutcome::Rejected {
        reason: DeadLetterReason::InvalidPayload,
        body: json!({"errors": [{"path": "", "message": message}], "request_id": request_id}),
    }
}

/// Applies one inbox record value with the HTTP rules.
pub async fn apply_inbox_request(writer: &Writer, value: &[u8]) -> InboxOutcome {
    let envelope: Value = match serde_json::from_slice(value) {
        Ok(envelope) => envelope,
        Err(error) => {
            return invalid(
                format!("the inbox record is not JSON: {error}"),
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

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
}

fn dead_letter(record: &ConsumedRecord, reason: DeadLetterReason, body: &Value) -> OutgoingRecord {
    let letter = DeadLetter {
        source_topic: record.topic.clone(),
        source_partition: record.partition,
        source_offset: record.offset,
        consumer_group_or_component: "writer.inbox".into(),
        reason,
        detail: body.to_string(),
        original_key: record.key.clone(),
        original_value: record.value.clone(),
        original_headers: record.headers.clone(),
        observed_at_micros: now_micros(),
    };
    OutgoingRecord {
        key: record.key.clone().unwrap_or_default(),
        value: encode_dead_letter(&letter),
        headers: Vec::new(),
    }
}

/// Consumes `inbox_topic` into the writer until `shutdown` turns true. Positions are
/// kept in the event-log projection; a record is re-applied after a crash, which is
/// harmless because writes are idempotent by identity.
pub async fn run_inbox_consumer(
    writer: std::sync::Arc<Writer>,
    log: EventLog,
    store: SharedStreamStore,
    inbox_topic: String,
    dlq_topic: String,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), biglearn_projector::ProjectionError> {
    let n_partitions = store.partition_count(&inbox_topic).await?;
    let mut start = Vec::new();
    for partition in 0..n_partitions {
        start.push((
            partition,
            log.position(&inbox_topic, partition)?.unwrap_or(0),
        ));
    }
    let mut reader = store.open_reader(&inbox_topic, &start).await?;
    while !*shutdown.borrow() {
        let records = tokio::select! {
            biased;
            _ = shutdown.changed() => continue,
            records = reader.poll(100, Duration::from_millis(200)) => records?,
        };
        for record in records {
            loop {
                let value = record.value.as_deref().unwrap_or_default();
                match apply_inbox_request(&writer, value).await {
                    InboxOutcome::Accepted => break,
                    InboxOutcome::Rejected { reason, body } => {
                        let outcomes = store
                            .append(&dlq_topic, vec![dead_letter(&record, reason, &body)])
                            .await?;
                        if outcomes.iter().all(Result::is_ok) {
                            break;
                        }
                    }
                    InboxOutcome::Retry => {}
                }
                if *shutdown.borrow() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            log.apply(
                &[],
                &[(inbox_topic.as_str(), record.partition, record.offset + 1)],
                now_micros(),
            )?;
        }
    }
    Ok(())
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
