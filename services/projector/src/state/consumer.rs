//! The loop that feeds the state projection from one event topic: poll, decode, stage,
//! dead-letter conflicts and undecodable records, then commit state and positions together.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use biglearn_domain::events::{CourseEvent, EcosystemEvent, StreamKind};
use biglearn_domain::ids::{EventUuid, SequenceNumber};
use biglearn_domain::sequencing::AggregateSequence;
use biglearn_events::{
    decode_course_event, decode_ecosystem_event, routing_headers, DeadLetterReason, DecodeError,
};
use biglearn_stream::{ConsumedRecord, OutgoingRecord, SharedStreamStore};
use tokio::sync::watch;
use uuid::Uuid;

use super::{RecordOutcome, StateProjection, StateRecord};
use crate::consumer::{
    dead_letter_for, is_caught_up, now_micros, resume_from_positions, ConsumerProgress,
};
use crate::ProjectionError;

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
    /// Work derived from each batch's effects, committed with the batch.
    pub hook: Option<std::sync::Arc<dyn super::BatchHook>>,
}

impl std::fmt::Debug for dyn super::BatchHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchHook")
    }
}

enum Decoded {
    Course(Box<CourseEvent>),
    Ecosystem(Box<EcosystemEvent>),
    Opaque {
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        event_uuid: EventUuid,
    },
    Unroutable,
}

/// Consumes `config.topic` into `projection` until `shutdown` turns true (or, with
/// `stop_when_caught_up`, until the start high watermarks are reached). The effects of
/// applied events go to `config.hook`, inside the batch they belong to.
pub async fn run_state_consumer(
    projection: StateProjection,
    store: SharedStreamStore,
    config: StateConsumerConfig,
    progress: watch::Sender<ConsumerProgress>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let (mut reader, mut state) = resume_from_positions(&store, &config.topic, |partition| {
        projection.position(&config.topic, partition)
    })
    .await?;
    progress.send_replace(state.clone());
    let mut blocked: BTreeMap<Uuid, AggregateSequence> = projection
        .blocked()?
        .into_iter()
        .filter(|(stream, _, _)| *stream == config.stream)
        .map(|(_, aggregate, sequence)| (aggregate, sequence))
        .collect();
    let mut last_lag_check = Instant::now() - Duration::from_secs(60);
    let mut last_accepted_at: Option<i64> = None;
    tracing::info!(topic = %config.topic, component = %config.component, "State consumer started.");
    while !*shutdown.borrow() {
        if config.stop_when_caught_up && state.caught_up {
            break;
        }
        let records = tokio::select! {
            biased;
            _ = shutdown.changed() => continue,
            records = reader.poll(config.max_batch, config.poll_timeout) => records?,
        };
        if !records.is_empty() {
            let accepted_at = apply_batch(
                &projection,
                &store,
                &config,
                &records,
                &mut state,
                &mut blocked,
            )
            .await?;
            last_accepted_at = accepted_at.or(last_accepted_at);
            state.caught_up =
                state.caught_up || is_caught_up(&state.positions, &state.start_high_watermarks);
            progress.send_replace(state.clone());
            observe_gaps(&config, &blocked);
        }
        if last_lag_check.elapsed() >= Duration::from_secs(1) {
            last_lag_check = Instant::now();
            observe_lag(&store, &config, &state.positions, last_accepted_at).await;
        }
    }
    tracing::info!(topic = %config.topic, component = %config.component, applied = state.n_applied, "State consumer stopped.");
    Ok(())
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

async fn observe_lag(
    store: &SharedStreamStore,
    config: &StateConsumerConfig,
    positions: &[i64],
    last_accepted_at: Option<i64>,
) {
    let Ok(high) = store.high_watermarks(&config.topic).await else {
        return;
    };
    let lags: Vec<i64> = high
        .iter()
        .zip(positions)
        .map(|(high, position)| (high - position).max(0))
        .collect();
    let total: i64 = lags.iter().sum();
    let max = lags.iter().copied().max().unwrap_or(0);
    // The oldest unapplied record was accepted after the last applied one, so its age is
    // at most the age of that one: an upper bound, exact enough to alert on.
    let seconds = match (total, last_accepted_at) {
        (0, _) | (_, None) => 0.0,
        (_, Some(accepted_at)) => ((now_micros() - accepted_at).max(0) as f64) / 1e6,
    };
    config
        .metrics
        .consumer_lag_observed(&config.component, &config.topic, total, max, seconds);
}

async fn apply_batch(
    projection: &StateProjection,
    store: &SharedStreamStore,
    config: &StateConsumerConfig,
    records: &[ConsumedRecord],
    progress: &mut ConsumerProgress,
    blocked: &mut BTreeMap<Uuid, AggregateSequence>,
) -> Result<Option<i64>, ProjectionError> {
    let started = Instant::now();
    let mut dead_letters: Vec<(OutgoingRecord, DeadLetterReason)> = Vec::new();
    let mut decoded = Vec::with_capacity(records.len());
    for record in records {
        let value = record.value.as_deref().unwrap_or_default();
        let result = match config.stream {
            StreamKind::Course => {
                decode_course_event(value).map(|event| Decoded::Course(Box::new(event)))
            }
            StreamKind::Ecosystem => {
                decode_ecosystem_event(value).map(|event| Decoded::Ecosystem(Box::new(event)))
            }
        };
        decoded.push(match result {
            Ok(item) => item,
            Err(error) => {
                let reason = match error {
                    DecodeError::UnknownEventType { .. } => DeadLetterReason::UnknownType,
                    _ => DeadLetterReason::Undecodable,
                };
                dead_letters.push(dead_letter_for(
                    &config.component,
                    record,
                    reason,
                    error.to_string(),
                ));
                match routing_headers(&record.headers) {
                    Some(routing) => Decoded::Opaque {
                        aggregate: routing.aggregate_uuid,
                        sequence_number: SequenceNumber(routing.sequence_number),
                        event_uuid: EventUuid(routing.event_uuid),
                    },
                    None => Decoded::Unroutable,
                }
            }
        });
    }
    let mut offered = Vec::with_capacity(records.len());
    let mut offered_records = Vec::with_capacity(records.len());
    for (item, record) in decoded.iter().zip(records) {
        let raw = record.value.as_deref().unwrap_or_default();
        let offer = match item {
            Decoded::Course(event) => StateRecord::Course { event, raw },
            Decoded::Ecosystem(event) => StateRecord::Ecosystem { event, raw },
            Decoded::Opaque {
                aggregate,
                sequence_number,
                event_uuid,
            } => StateRecord::Opaque {
                stream: config.stream,
                aggregate: *aggregate,
                sequence_number: *sequence_number,
                event_uuid: *event_uuid,
                raw,
            },
            Decoded::Unroutable => continue,
        };
        offered.push(offer);
        offered_records.push(record);
    }

    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for record in records {
        let entry = next_offsets
            .entry(record.partition)
            .or_insert(record.offset + 1);
        *entry = (*entry).max(record.offset + 1);
    }
    let positions: Vec<(&str, i32, i64)> = next_offsets
        .iter()
        .map(|(partition, offset)| (config.topic.as_str(), *partition, *offset))
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
    for (outcome, record) in report.outcomes.iter().zip(&offered_records) {
        match outcome {
            RecordOutcome::Applied { released } => progress.n_applied += 1 + *released as u64,
            RecordOutcome::Parked => {}
            RecordOutcome::Duplicate => {
                progress.n_duplicates += 1;
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
    if !dead_letters.is_empty() {
        progress.n_dead_lettered += dead_letters.len() as u64;
        for (_, reason) in &dead_letters {
            config
                .metrics
                .dead_lettered(&config.component, reason.as_str());
        }
        let letters: Vec<OutgoingRecord> =
            dead_letters.into_iter().map(|(record, _)| record).collect();
        for outcome in store.append(&config.dlq_topic, letters).await? {
            if let Err(error) = outcome {
                return Err(ProjectionError::DeadLetterNotDelivered {
                    topic: config.dlq_topic.clone(),
                    detail: error.to_string(),
                });
            }
        }
    }
    staged.commit()?;
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
    for _ in 0..report.unknown_preparation_blocks {
        config.metrics.unknown_preparation_block();
    }
    for (event_type, count) in &report.applied_by_type {
        config
            .metrics
            .events_applied(&config.component, event_type, *count);
    }
    let mut last_accepted_at = None;
    let mut ages = Vec::with_capacity(decoded.len());
    for item in &decoded {
        let accepted_at = match item {
            Decoded::Course(event) => event.meta.accepted_at_micros,
            Decoded::Ecosystem(event) => event.meta.accepted_at_micros,
            _ => continue,
        };
        last_accepted_at = Some(accepted_at);
        ages.push(Duration::from_micros((now - accepted_at).max(0) as u64));
    }
    config.metrics.events_aged(&config.component, &ages);
    config
        .metrics
        .apply_batch_finished(&config.component, started.elapsed());
    for (partition, offset) in next_offsets {
        if let Some(position) = progress.positions.get_mut(partition as usize) {
            *position = offset;
        }
    }
    Ok(last_accepted_at)
}
