//! The state projection as a [`Projection`] of the consumer runtime: stage a decoded
//! batch, dead-letter conflicts and undecodable records, then commit state and positions
//! together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use biglearn_domain::events::StreamKind;
use biglearn_domain::sequencing::AggregateSequence;
use biglearn_events::DeadLetterReason;
use biglearn_runtime::{Applied, ApplyError, Batch, Projection, RunOptions, TopicConsumer};
use biglearn_stream::{OutgoingRecord, SharedStreamStore};
use tokio::sync::watch;
use uuid::Uuid;

use super::{RecordOutcome, StateProjection, StateRecord};
use crate::consumer::{dead_letter_for, write_dead_letters, ConsumerProgress};
use crate::decoded::{decoder, DecodedEvent};
use crate::ProjectionError;
use biglearn_stream::clock::now_micros;

/// What one state consumer reads, where it reports, and when it stops by itself.
#[derive(Clone, Debug)]
pub struct StateConsumerConfig {
    /// The component name in dead letters and metric labels (`projector`, or
    /// `projector_rebuild` while rebuilding).
    pub component: String,
    pub stream: StreamKind,
    pub topic: String,
    /// `<prefix>.dlq`.
    pub dlq_topic: String,
    /// Records per batch (one sled batch each).
    pub max_batch: usize,
    /// How long one poll waits; also the shutdown reaction time.
    pub poll_timeout: Duration,
    /// Stop once every partition reaches its start high watermark (rebuilds and replays).
    pub stop_when_caught_up: bool,
    /// Off for replays of a log whose dead letters were written by the live pass.
    pub write_dead_letters: bool,
    pub metrics: biglearn_telemetry::Metrics,
    /// When a replay writes its in-memory state back to sled.
    pub checkpoint: crate::overlay::CheckpointPolicy,
    /// Work derived from each batch's effects, committed with the batch.
    pub hook: Option<std::sync::Arc<dyn super::BatchHook>>,
}

impl std::fmt::Debug for dyn super::BatchHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchHook")
    }
}

/// The state projection of one event topic, fed by a [`TopicConsumer`]: stage the decoded
/// batch, dead-letter conflicts and undecodable records, commit state and positions.
pub struct StateApplier {
    projection: StateProjection,
    store: SharedStreamStore,
    config: StateConsumerConfig,
    /// Aggregates of this stream waiting behind a gap (for the gap metrics).
    blocked: parking_lot::Mutex<BTreeMap<Uuid, AggregateSequence>>,
}

impl StateApplier {
    /// Applies to `projection`, starting from the gaps it has stored.
    pub fn new(
        projection: StateProjection,
        store: SharedStreamStore,
        config: StateConsumerConfig,
    ) -> Result<StateApplier, ProjectionError> {
        let blocked = projection
            .blocked()?
            .into_iter()
            .filter(|(stream, _, _)| *stream == config.stream)
            .map(|(_, aggregate, sequence)| (aggregate, sequence))
            .collect();
        Ok(StateApplier {
            projection,
            store,
            config,
            blocked: parking_lot::Mutex::new(blocked),
        })
    }

    /// The projection it applies to.
    pub fn projection(&self) -> &StateProjection {
        &self.projection
    }
}

#[async_trait]
impl Projection<DecodedEvent> for StateApplier {
    fn positions(&self, topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        (0..n_partitions)
            .map(|partition| Ok(self.projection.position(topic, partition)?.unwrap_or(0)))
            .collect()
    }

    async fn apply(&self, batch: &Batch<'_, DecodedEvent>) -> Result<Applied, ApplyError> {
        let applied = apply_batch(
            &self.projection,
            &self.store,
            &self.config,
            batch,
            &self.blocked,
        )
        .await?;
        observe_gaps(&self.config, &self.blocked.lock());
        Ok(applied)
    }

    fn replaying(&self, replaying: bool) -> Result<(), ApplyError> {
        if replaying {
            self.projection.begin_write_back(self.config.checkpoint);
            Ok(())
        } else {
            Ok(self.projection.end_write_back()?)
        }
    }
}

/// Consumes `config.topic` into `projection` until `shutdown` turns true (or, with
/// `stop_when_caught_up`, until the start high watermarks are reached). The effects of
/// applied events go to `config.hook`, inside the batch they belong to.
pub async fn run_state_consumer(
    projection: StateProjection,
    store: SharedStreamStore,
    config: StateConsumerConfig,
    progress: watch::Sender<ConsumerProgress>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let options = RunOptions {
        max_batch: config.max_batch,
        poll_timeout: config.poll_timeout,
        stop_when_caught_up: config.stop_when_caught_up,
        ..RunOptions::default()
    };
    let applier = StateApplier::new(projection, store.clone(), config.clone())?;
    TopicConsumer::new(
        config.topic.clone(),
        config.component.clone(),
        decoder(config.stream),
    )
    .feed(config.component.clone(), Arc::new(applier), progress)
    .options(options)
    .metrics(config.metrics.clone())
    .run(store, shutdown)
    .await
    .map_err(|error| ProjectionError::Consumer {
        detail: error.to_string(),
    })
}

fn observe_gaps(config: &StateConsumerConfig, blocked: &BTreeMap<Uuid, AggregateSequence>) {
    let now = now_micros();
    let oldest = blocked
        .values()
        .filter_map(|sequence| sequence.first_pending_at_micros)
        .min()
        .map_or(0, |first| (now - first).max(0));
    let n_pending: u64 = blocked.values().map(|sequence| sequence.n_pending).sum();
    config.metrics.gaps_observed(
        &config.component,
        config.stream.as_str(),
        blocked.len() as i64,
        Duration::from_micros(oldest as u64),
        n_pending as i64,
    );
}

async fn apply_batch(
    projection: &StateProjection,
    store: &SharedStreamStore,
    config: &StateConsumerConfig,
    batch: &Batch<'_, DecodedEvent>,
    blocked: &parking_lot::Mutex<BTreeMap<Uuid, AggregateSequence>>,
) -> Result<Applied, ProjectionError> {
    let started = Instant::now();
    let mut dead_letters: Vec<(OutgoingRecord, DeadLetterReason)> = Vec::new();
    let mut offered = Vec::with_capacity(batch.records.len());
    let mut offered_records = Vec::with_capacity(batch.records.len());
    for (item, record) in batch.decoded.iter().zip(&batch.records) {
        let raw = record.value.as_deref().unwrap_or_default();
        let offer = match item {
            DecodedEvent::Course(event) => StateRecord::Course { event, raw },
            DecodedEvent::Ecosystem(event) => StateRecord::Ecosystem { event, raw },
            DecodedEvent::Undecodable {
                reason,
                detail,
                routing,
            } => {
                dead_letters.push(dead_letter_for(
                    &config.component,
                    record,
                    *reason,
                    detail.clone(),
                ));
                let Some(routing) = routing else {
                    continue;
                };
                StateRecord::Opaque {
                    stream: config.stream,
                    aggregate: routing.aggregate,
                    sequence_number: routing.sequence_number,
                    event_uuid: routing.event_uuid,
                    raw,
                }
            }
        };
        offered.push(offer);
        offered_records.push(*record);
    }
    let positions: Vec<(&str, i32, i64)> = batch
        .positions
        .iter()
        .map(|(partition, offset)| (batch.topic, *partition, *offset))
        .collect();

    let now = now_micros();
    let mut staged = projection.stage(&offered, &positions, now)?;
    let report = std::mem::take(&mut staged.report);
    if let Some(hook) = &config.hook {
        hook.on_batch(&mut staged.state(), &report.effects)
            .map_err(|error| ProjectionError::Corrupt {
                detail: format!("the batch hook failed: {error}"),
            })?;
    }
    let mut applied = Applied::default();
    for (outcome, record) in report.outcomes.iter().zip(&offered_records) {
        match outcome {
            RecordOutcome::Applied { released } => applied.n_applied += 1 + *released as u64,
            RecordOutcome::Parked => {}
            RecordOutcome::Duplicate => {
                applied.n_duplicates += 1;
                config
                    .metrics
                    .duplicate_dropped(&config.component, config.stream.as_str());
            }
            RecordOutcome::Conflict { taken_by } => dead_letters.push(dead_letter_for(
                &config.component,
                record,
                DeadLetterReason::SlotConflict,
                format!("another event ({taken_by}) already holds this sequence_number; the first in log order wins"),
            )),
        }
    }
    // Dead letters are durable before the positions move past their records.
    if !config.write_dead_letters && !dead_letters.is_empty() {
        tracing::debug!(
            n = dead_letters.len(),
            "Replay: records the live pass dead-lettered."
        );
        dead_letters.clear();
    }
    applied.n_dead_lettered = dead_letters.len() as u64;
    write_dead_letters(
        store,
        &config.dlq_topic,
        dead_letters,
        &config.component,
        &config.metrics,
    )
    .await?;
    staged.commit()?;
    {
        let mut blocked = blocked.lock();
        for ((stream, aggregate), sequence) in &report.aggregates {
            if *stream != config.stream {
                continue;
            }
            if sequence.is_blocked() {
                blocked.insert(*aggregate, *sequence);
            } else {
                blocked.remove(aggregate);
            }
        }
    }
    for _ in 0..report.unknown_preparation_blocks {
        config.metrics.unknown_preparation_block();
    }
    for (event_type, count) in &report.applied_by_type {
        config
            .metrics
            .events_applied(&config.component, event_type, *count);
    }
    let mut ages = Vec::with_capacity(batch.decoded.len());
    for item in &batch.decoded {
        let Some(accepted_at) = item.accepted_at_micros() else {
            continue;
        };
        applied.last_accepted_at_micros = Some(accepted_at);
        ages.push(Duration::from_micros((now - accepted_at).max(0) as u64));
    }
    config.metrics.events_aged(&config.component, &ages);
    config
        .metrics
        .apply_batch_finished(&config.component, started.elapsed());
    Ok(applied)
}
