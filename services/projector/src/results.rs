//! The results projection: `<prefix>.results` into the event-log tree, by result key,
//! typed (the record as consumed, see `event_log::results`), where a lower version never
//! replaces a higher one (D11).

use std::sync::Arc;

use async_trait::async_trait;
use biglearn_runtime::{Applied, ApplyError, Batch, Projection, TopicConsumer};
use biglearn_stream::{ConsumedRecord, SharedStreamStore};
use tokio::sync::watch;

use crate::consumer::ConsumerProgress;
use crate::event_log::{EventLog, ResultRow};
use crate::ProjectionError;

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
pub type DecodedResult = Result<ResultRow, String>;

/// Decodes a `<prefix>.results` record into its stored row (the value's bytes as they are).
pub fn decode_result(record: &ConsumedRecord) -> DecodedResult {
    ResultRow::decode(record.value.as_deref().unwrap_or_default())
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
