//! The results projection: `<prefix>.results` into the event-log tree, by result key,
//! where a lower version never replaces a higher one (D11).

use std::collections::BTreeMap;
use std::time::Duration;

use biglearn_events::{decode_result_record, ResultKind, ResultRecord};
use biglearn_stream::SharedStreamStore;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::consumer::ConsumerProgress;
use crate::event_log::{EventLog, ResultVersion};
use crate::ProjectionError;

/// What the read API serves for a result: its answer fields as JSON.
pub fn stored_content(record: &ResultRecord) -> Value {
    let spy_info: Value = serde_json::from_str(&record.spy_info_json).unwrap_or_else(|_| json!({}));
    match record.kind {
        ResultKind::StudentClue | ResultKind::TeacherClue => {
            let clue = record.clue_data.as_ref().map(|clue| {
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
            });
            json!({"calculation_uuid": record.calculation_uuid, "clue_data": clue})
        }
        ResultKind::AssignmentPes | ResultKind::AssignmentSpes | ResultKind::PracticeWorstAreas => {
            json!({
                "calculation_uuid": record.calculation_uuid,
                "ecosystem_matrix_uuid": record.ecosystem_matrix_uuid,
                "exercise_uuids": record.exercise_uuids.clone().unwrap_or_default(),
                "spy_info": spy_info,
            })
        }
    }
}

/// The version of a result.
pub fn version_of(record: &ResultRecord) -> ResultVersion {
    ResultVersion {
        input_seq: record.input_seq,
        model_seq: record.model_seq,
        computed_at_micros: record.computed_at_micros,
    }
}

/// Consumes `topic` (`<prefix>.results`) into `log` until `shutdown` turns true.
/// Undecodable records are skipped with an error log: results are derived data that
/// their producer can publish again, unlike the system of record.
pub async fn run_results_consumer(
    log: EventLog,
    store: SharedStreamStore,
    topic: String,
    progress: watch::Sender<ConsumerProgress>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let n_partitions = store.partition_count(&topic).await?;
    let mut positions = Vec::with_capacity(n_partitions as usize);
    for partition in 0..n_partitions {
        positions.push(log.position(&topic, partition)?.unwrap_or(0));
    }
    let start_high_watermarks = store.high_watermarks(&topic).await?;
    let start: Vec<(i32, i64)> = positions
        .iter()
        .enumerate()
        .map(|(partition, offset)| (partition as i32, *offset))
        .collect();
    let mut reader = store.open_reader(&topic, &start).await?;
    let caught_up = |positions: &[i64], high: &[i64]| {
        positions
            .iter()
            .zip(high)
            .all(|(position, high)| position >= high)
    };
    let mut state = ConsumerProgress {
        caught_up: caught_up(&positions, &start_high_watermarks),
        positions,
        start_high_watermarks,
        ..ConsumerProgress::default()
    };
    progress.send_replace(state.clone());
    while !*shutdown.borrow() {
        let records = tokio::select! {
            biased;
            _ = shutdown.changed() => continue,
            records = reader.poll(2000, Duration::from_millis(100)) => records?,
        };
        if records.is_empty() {
            continue;
        }
        let mut results = Vec::with_capacity(records.len());
        let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        for record in &records {
            next_offsets.insert(record.partition, record.offset + 1);
            match decode_result_record(record.value.as_deref().unwrap_or_default()) {
                Ok(result) => results.push((
                    result.key(),
                    version_of(&result),
                    stored_content(&result).to_string(),
                )),
                Err(error) => {
                    tracing::error!(%error, topic = %record.topic, partition = record.partition, offset = record.offset, "An undecodable result was skipped.");
                }
            }
        }
        let positions: Vec<(&str, i32, i64)> = next_offsets
            .iter()
            .map(|(partition, offset)| (topic.as_str(), *partition, *offset))
            .collect();
        let stored = log.apply_results(&results, &positions)?;
        state.n_applied += stored.iter().filter(|stored| **stored).count() as u64;
        state.n_duplicates += stored.iter().filter(|stored| !**stored).count() as u64;
        for (partition, offset) in next_offsets {
            if let Some(position) = state.positions.get_mut(partition as usize) {
                *position = offset;
            }
        }
        state.caught_up =
            state.caught_up || caught_up(&state.positions, &state.start_high_watermarks);
        progress.send_replace(state.clone());
    }
    Ok(())
}
