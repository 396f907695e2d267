//! Operator endpoints for derived state: blue/green rebuilds and the dead-letter topic.

use std::sync::Arc;
use std::time::Duration;

use biglearn_events::decode_dead_letter;
use biglearn_projector::service::RebuildStatus;
use biglearn_stream::{ConsumedRecord, OutgoingRecord};
use serde_json::{json, Value};

use crate::handlers::HandlerError;
use crate::requests::{DlqListRequest, DlqReplayRequest};
use crate::GatewayState;

fn stream_error(error: biglearn_stream::StreamError) -> HandlerError {
    HandlerError::Unavailable {
        message: format!("the stream store is unavailable; retry ({error})"),
    }
}

/// `/admin/rebuild`: starts a rebuild in the background and answers at once.
pub(crate) async fn start_rebuild(
    state: &Arc<GatewayState>,
    actor: &str,
) -> Result<Value, HandlerError> {
    if !state.flags.is_enabled("online_rebuild") {
        return Err(HandlerError::Disabled {
            message: "online rebuilds are off in this environment (feature flag online_rebuild); stop the process and run `biglearn rebuild --data-dir DIR`, or start it with --feature-flags online_rebuild=on".into(),
        });
    }
    let projections = state
        .projections
        .clone()
        .ok_or_else(|| HandlerError::Unavailable {
            message: "this process keeps no state projection".into(),
        })?;
    if let RebuildStatus::Running(progress) = projections.rebuild_status() {
        return Ok(
            json!({"status": "running", "applied": progress.applied, "total": progress.total}),
        );
    }
    let generation = projections.generation() + 1;
    tracing::info!(
        actor,
        generation,
        "An operator started a rebuild of the derived state."
    );
    tokio::spawn(async move {
        match projections.rebuild(|_| {}).await {
            Ok(report) => tracing::info!(
                generation = report.generation,
                records = report.records,
                seconds = report.seconds,
                "Rebuild finished."
            ),
            Err(error) => {
                tracing::error!(%error, "Rebuild failed; the previous state stays active.")
            }
        }
    });
    Ok(json!({"status": "started", "generation": generation}))
}

/// `/admin/rebuild_status`.
pub(crate) fn rebuild_status(state: &Arc<GatewayState>) -> Result<Value, HandlerError> {
    let projections = state
        .projections
        .as_ref()
        .ok_or_else(|| HandlerError::Unavailable {
            message: "this process keeps no state projection".into(),
        })?;
    let generation = projections.generation();
    // The digest of the live state, so that an operator can compare it with a rebuild's.
    let state_hash = projections.current().state_hash()?;
    Ok(match projections.rebuild_status() {
        RebuildStatus::Idle => {
            json!({"status": "idle", "generation": generation, "state_hash": state_hash})
        }
        RebuildStatus::Running(progress) => {
            let remaining = progress.total.saturating_sub(progress.applied) as f64;
            json!({
                "status": "running",
                "generation": generation,
                "applied": progress.applied,
                "total": progress.total,
                "events_per_second": progress.rate,
                "eta_seconds": if progress.rate > 0.0 { remaining / progress.rate } else { 0.0 },
                "state_hash": state_hash,
            })
        }
        RebuildStatus::Finished(report) => json!({
            "status": "finished",
            "generation": report.generation,
            "records": report.records,
            "seconds": report.seconds,
            "rebuilt_state_hash": report.state_hash,
            "state_hash": state_hash,
        }),
        RebuildStatus::Failed(error) => json!({
            "status": "failed",
            "generation": generation,
            "error": error,
            "state_hash": state_hash,
        }),
    })
}

/// Reads every record of `topic` (all partitions) from `after + 1` to the high watermarks.
async fn read_topic(
    state: &Arc<GatewayState>,
    topic: &str,
    start: impl Fn(i32) -> i64,
    limit: usize,
) -> Result<Vec<ConsumedRecord>, HandlerError> {
    let high = state
        .store
        .high_watermarks(topic)
        .await
        .map_err(stream_error)?;
    let starts: Vec<(i32, i64)> = (0..high.len() as i32).map(|p| (p, start(p))).collect();
    let mut remaining: i64 = starts
        .iter()
        .zip(&high)
        .map(|((_, from), high)| (high - from).max(0))
        .sum();
    let mut reader = state
        .store
        .open_reader(topic, &starts)
        .await
        .map_err(stream_error)?;
    let mut records = Vec::new();
    // Bounded: at most one empty poll ends the read (the records below the high
    // watermarks are durable and readable at once).
    while remaining > 0 && records.len() < limit {
        let batch = reader
            .poll(limit - records.len(), Duration::from_millis(500))
            .await
            .map_err(stream_error)?;
        if batch.is_empty() {
            break;
        }
        remaining -= batch.len() as i64;
        records.extend(batch);
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    records.truncate(limit);
    Ok(records)
}

/// `/admin/dlq/list`.
pub(crate) async fn list_dead_letters(
    state: &Arc<GatewayState>,
    request: DlqListRequest,
) -> Result<Value, HandlerError> {
    let from = request.after_offset.map_or(0, |after| after + 1);
    let records = read_topic(state, &state.topics.dlq(), |_| from, request.limit as usize).await?;
    let letters: Vec<Value> = records
        .iter()
        .map(|record| match decode_dead_letter(record.value.as_deref().unwrap_or_default()) {
            Ok(letter) => json!({
                "partition": record.partition,
                "offset": record.offset,
                "source_topic": letter.source_topic,
                "source_partition": letter.source_partition,
                "source_offset": letter.source_offset,
                "component": letter.consumer_group_or_component,
                "reason": letter.reason.as_str(),
                "detail": letter.detail,
                "observed_at": biglearn_domain::time::format_datetime_micros(letter.observed_at_micros),
            }),
            Err(error) => json!({
                "partition": record.partition,
                "offset": record.offset,
                "reason": "unreadable_dead_letter",
                "detail": error.to_string(),
            }),
        })
        .collect();
    Ok(json!({ "dead_letters": letters }))
}

/// `/admin/dlq/replay`: the original records go back to their source topics, so that a
/// fixed build (or a filled preparation) applies them; slot and identity dedupe make
/// replaying twice harmless.
pub(crate) async fn replay_dead_letters(
    state: &Arc<GatewayState>,
    request: DlqReplayRequest,
    actor: &str,
) -> Result<Value, HandlerError> {
    if state.writer.is_none() {
        return Err(HandlerError::Unavailable {
            message: "not the writer".into(),
        });
    }
    let topic = state.topics.dlq();
    let n_partitions = state
        .store
        .partition_count(&topic)
        .await
        .map_err(stream_error)?;
    if request.partition >= n_partitions {
        return Err(HandlerError::BadRequest {
            path: "/partition".into(),
            message: format!("{topic} has {n_partitions} partitions"),
        });
    }
    let high = state
        .store
        .high_watermarks(&topic)
        .await
        .map_err(stream_error)?;
    let high = high.get(request.partition as usize).copied().unwrap_or(0);
    // Bad offsets are refused before anything is appended.
    let beyond: Vec<i64> = request
        .offsets
        .iter()
        .copied()
        .filter(|offset| *offset >= high)
        .collect();
    if !beyond.is_empty() {
        return Err(HandlerError::BadRequest {
            path: "/offsets".into(),
            message: format!(
                "partition {} of {topic} holds offsets 0..{high}; nothing at {beyond:?}; nothing was replayed",
                request.partition
            ),
        });
    }
    let mut replayed = Vec::new();
    let mut missing = Vec::new();
    for offset in &request.offsets {
        let mut reader = state
            .store
            .open_reader(&topic, &[(request.partition, *offset)])
            .await
            .map_err(stream_error)?;
        let found = reader
            .poll(1, Duration::from_millis(500))
            .await
            .map_err(stream_error)?
            .into_iter()
            .find(|record| record.offset == *offset);
        let Some(record) = found else {
            missing.push(*offset);
            continue;
        };
        let letter =
            decode_dead_letter(record.value.as_deref().unwrap_or_default()).map_err(|error| {
                HandlerError::BadRequest {
                    path: "/offsets".into(),
                    message: format!("offset {offset} is not a readable dead letter: {error}"),
                }
            })?;
        let Some(value) = letter.original_value.clone() else {
            missing.push(*offset);
            continue;
        };
        let outcome = state
            .store
            .append(
                &letter.source_topic,
                vec![OutgoingRecord {
                    key: letter.original_key.clone().unwrap_or_default(),
                    value,
                    headers: letter.original_headers.clone(),
                }],
            )
            .await
            .map_err(stream_error)?;
        for delivered in outcome {
            delivered.map_err(|error| HandlerError::Unavailable {
                message: format!("the replayed record was not delivered; retry ({error})"),
            })?;
        }
        tracing::info!(actor, reason = %request.reason, partition = request.partition, offset, source_topic = %letter.source_topic, source_offset = letter.source_offset, "An operator replayed a dead letter.");
        replayed.push(json!({"offset": offset, "source_topic": letter.source_topic}));
    }
    if !missing.is_empty() {
        return Err(HandlerError::BadRequest {
            path: "/offsets".into(),
            message: format!(
                "no dead letter with an original record at offsets {missing:?} of partition {}; {} replayed before this error",
                request.partition,
                replayed.len()
            ),
        });
    }
    Ok(json!({ "replayed": replayed }))
}
