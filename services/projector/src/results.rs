//! The results projection: `<prefix>.results` into the event-log tree, by result key,
//! where a lower version never replaces a higher one (D11).

use std::sync::Arc;

use async_trait::async_trait;
use biglearn_events::{decode_result_record, ResultKind, ResultRecord};
use biglearn_runtime::{Applied, ApplyError, Batch, Projection, TopicConsumer};
use biglearn_stream::{ConsumedRecord, SharedStreamStore};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::consumer::ConsumerProgress;
use crate::event_log::{EventLog, ResultVersion};
use crate::ProjectionError;

/// What the read API serves for a result: its answer fields as JSON; for a withdrawal,
/// `{"withdrawn": true}` ([`is_withdrawn`]).
pub fn stored_content(record: &ResultRecord) -> Value {
    if record.is_withdrawal() {
        return json!({"withdrawn": true});
    }
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

/// Whether stored content is a withdrawal: the read API answers as if nothing were stored.
pub fn is_withdrawn(content: &Value) -> bool {
    content.get("withdrawn") == Some(&Value::Bool(true))
}

/// The version of a result.
pub fn version_of(record: &ResultRecord) -> ResultVersion {
    ResultVersion {
        input_seq: record.input_seq,
        model_seq: record.model_seq,
        computed_at_micros: record.computed_at_micros,
    }
}

/// The results projection, fed by a [`TopicConsumer`] of `<prefix>.results`.
/// Undecodable records are skipped with an error log: results are derived data that
/// their producer can publish again, unlike the system of record.
pub struct ResultsProjection {
    log: EventLog,
}

impl ResultsProjection {
    pub fn new(log: EventLog) -> ResultsProjection {
        ResultsProjection { log }
    }
}

/// A result record decoded once: the stored row, or why it could not be.
pub type DecodedResult = Result<(String, ResultVersion, String), String>;

/// Decodes a `<prefix>.results` record into its stored row.
pub fn decode_result(record: &ConsumedRecord) -> DecodedResult {
    decode_result_record(record.value.as_deref().unwrap_or_default())
        .map(|result| {
            (
                result.key(),
                version_of(&result),
                stored_content(&result).to_string(),
            )
        })
        .map_err(|error| error.to_string())
}

#[async_trait]
impl Projection<DecodedResult> for ResultsProjection {
    fn positions(&self, topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        (0..n_partitions)
            .map(|partition| Ok(self.log.position(topic, partition)?.unwrap_or(0)))
            .collect()
    }

    async fn apply(&self, batch: &Batch<'_, DecodedResult>) -> Result<Applied, ApplyError> {
        let mut results = Vec::with_capacity(batch.records.len());
        for (decoded, record) in batch.decoded.iter().zip(&batch.records) {
            match decoded {
                Ok(row) => results.push(row.clone()),
                Err(error) => {
                    tracing::error!(%error, topic = %record.topic, partition = record.partition, offset = record.offset, "An undecodable result was skipped.");
                }
            }
        }
        let positions: Vec<(&str, i32, i64)> = batch
            .positions
            .iter()
            .map(|(partition, offset)| (batch.topic, *partition, *offset))
            .collect();
        let stored = self.log.apply_results(&results, &positions)?;
        let n_stored = stored.iter().filter(|stored| **stored).count() as u64;
        Ok(Applied {
            n_applied: n_stored,
            n_duplicates: stored.len() as u64 - n_stored,
            ..Applied::default()
        })
    }
}

/// Consumes `topic` (`<prefix>.results`) into `log` until `shutdown` turns true.
pub async fn run_results_consumer(
    log: EventLog,
    store: SharedStreamStore,
    topic: String,
    progress: watch::Sender<ConsumerProgress>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    TopicConsumer::new(topic, "results", decode_result)
        .feed("results", Arc::new(ResultsProjection::new(log)), progress)
        .run(store, shutdown)
        .await
        .map_err(|error| ProjectionError::Consumer {
            detail: error.to_string(),
        })
}
