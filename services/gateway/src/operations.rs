//! Operator endpoints for derived state: blue/green rebuilds, the dead-letter topic, and
//! the state digest and result listing that compare two deployments (staging).

use std::sync::Arc;
use std::time::Duration;

use biglearn_domain::events::StreamKind;
use biglearn_events::decode_dead_letter;
use biglearn_projector::service::{ProjectionService, RebuildStatus};
use biglearn_stream::{ConsumedRecord, OutgoingRecord};
use serde_json::{json, Value};

use crate::error::HandlerError;
use crate::requests::{DlqListRequest, DlqReplayRequest, ResultsListRequest, StateDigestRequest};
use crate::GatewayState;

fn stream_error(error: biglearn_stream::StreamError) -> HandlerError {
    HandlerError::Unavailable {
        message: format!("the stream store is unavailable; retry ({error})"),
    }
}

/// The state projection and its rebuilds; 503 in a process that keeps none.
fn projections(state: &GatewayState) -> Result<&Arc<ProjectionService>, HandlerError> {
    state
        .projections
        .as_ref()
        .ok_or_else(|| HandlerError::Unavailable {
            message: "this process keeps no state projection".into(),
        })
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
    let projections = projections(state)?.clone();
    if let Err(progress) = projections.claim_rebuild() {
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
    let projections = projections(state)?;
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
        return Err(HandlerError::not_the_writer());
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

/// `(stream, aggregate, next_sequence_number)` of every aggregate of the state projection,
/// in key order.
fn applied_sequences(
    projection: &biglearn_projector::state::StateProjection,
) -> Result<Vec<(StreamKind, uuid::Uuid, i64)>, HandlerError> {
    // Rows of the projection's per-aggregate sequencing state are keyed
    // `A`, stream byte (`c` or `e`), 16 uuid bytes; the row itself is read back through
    // the projection's own decoder.
    let mut rows = Vec::new();
    for row in projection.tree().scan_prefix(b"A") {
        let (key, _) = row.map_err(|error| HandlerError::Internal {
            detail: format!("reading the state projection: {error}"),
        })?;
        let stream = match key.get(1) {
            Some(b'c') => StreamKind::Course,
            Some(b'e') => StreamKind::Ecosystem,
            _ => continue,
        };
        let Some(aggregate) = key
            .get(2..18)
            .and_then(|bytes| uuid::Uuid::from_slice(bytes).ok())
        else {
            continue;
        };
        let sequence = projection.aggregate(stream, aggregate)?;
        rows.push((stream, aggregate, sequence.next_seq.0));
    }
    Ok(rows)
}

/// One read of everything the digest reports.
#[derive(PartialEq)]
struct DigestRead {
    sequences: Vec<(StreamKind, uuid::Uuid, i64)>,
    settings_version: i64,
    results: Option<String>,
}

fn read_digest_inputs(
    state: &Arc<GatewayState>,
    projection: &biglearn_projector::state::StateProjection,
) -> Result<DigestRead, HandlerError> {
    Ok(DigestRead {
        sequences: applied_sequences(projection)?,
        settings_version: state.settings.last_version(),
        results: state.log.results_digest()?,
    })
}

/// `/admin/state_digest`: the parts of the state hash and what they were computed from
/// (the applied prefix of every aggregate, the settings version), from one consistent
/// read: the inputs read before and after hashing are equal. Deployments whose offsets
/// differ (staging, MirrorMaker 2) compare by these, never by offsets.
pub(crate) fn state_digest(
    state: &Arc<GatewayState>,
    request: &StateDigestRequest,
) -> Result<Value, HandlerError> {
    let projections = projections(state)?;
    // Bounded: a busy process may move between the two reads; the caller retries.
    for _ in 0..20 {
        let projection = projections.current();
        let before = read_digest_inputs(state, &projection)?;
        let state_hash = projection.state_hash()?;
        let after = read_digest_inputs(state, &projection)?;
        if before != after {
            continue;
        }
        let mut parts = vec![json!({"part": "state", "digest": state_hash})];
        if let Some(results) = &after.results {
            parts.push(json!({"part": "results", "digest": results}));
        }
        let rows: Vec<(String, String)> = after
            .sequences
            .iter()
            .map(|(stream, aggregate, next)| {
                (format!("{}/{aggregate}", stream.as_str()), next.to_string())
            })
            .collect();
        let n_applied: i64 = after
            .sequences
            .iter()
            .map(|(_, _, next)| (next - 1).max(0))
            .sum();
        let mut sequences = json!({
            "digest": biglearn_projector::service::combined_hash(&rows),
            "n_aggregates": after.sequences.len(),
            "n_applied": n_applied,
        });
        if request.list_sequences {
            sequences["list"] = after
                .sequences
                .iter()
                .map(|(stream, aggregate, next)| {
                    json!({
                        "stream": stream.as_str(),
                        "aggregate_uuid": aggregate,
                        "next_sequence_number": next,
                    })
                })
                .collect();
        }
        return Ok(json!({
            "parts": parts,
            "sequences": sequences,
            "settings_version": after.settings_version,
            "generation": projections.generation(),
        }));
    }
    Err(HandlerError::Unavailable {
        message: "the state changed during every read; retry".into(),
    })
}

/// `/admin/results/list`: stored results in result-key order after `after_key`, with
/// their versions and content (`biglearn results diff` compares them by key).
pub(crate) fn list_results(
    state: &Arc<GatewayState>,
    request: &ResultsListRequest,
) -> Result<Value, HandlerError> {
    let after = request.after_key.as_deref().unwrap_or("");
    let limit = request.limit as usize;
    let mut results = Vec::with_capacity(limit);
    let mut more = false;
    for (key, record) in state.log.results_with_prefix("")? {
        if request.after_key.is_some() && key.as_str() <= after {
            continue;
        }
        if results.len() == limit {
            more = true;
            break;
        }
        results.push(json!({
            "key": key,
            "version": {
                "input_seq": record.input_seq,
                "model_seq": record.model_seq,
                "computed_at_micros": record.computed_at_micros,
            },
            "content": crate::reads::result_content(&record),
        }));
    }
    let next_after_key = if more {
        results.last().map(|result| result["key"].clone())
    } else {
        None
    };
    Ok(json!({ "results": results, "next_after_key": next_after_key }))
}
