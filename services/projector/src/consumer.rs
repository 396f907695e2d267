//! The event-log projection as a [`Projection`] of the consumer runtime: apply a decoded
//! batch with its positions in one sled batch, dead-letter what cannot be applied.

use biglearn_stream::clock::now_micros;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::EventUuid;
use biglearn_events::{encode_dead_letter, DeadLetter, DeadLetterReason};
use biglearn_runtime::{Applied, ApplyError, Batch, Projection, RunOptions, TopicConsumer};
use biglearn_stream::{ConsumedRecord, OutgoingRecord, SharedStreamStore};
use tokio::sync::watch;

pub use biglearn_runtime::{is_caught_up, ConsumerProgress};

use crate::decoded::{decoder, DecodedEvent};
use crate::event_log::{EventLog, Offered, OfferedEvent};
use crate::ProjectionError;

/// What one consumer reads and where it sends dead letters.
#[derive(Clone, Debug)]
pub struct EventLogConsumerConfig {
    /// The component name recorded in dead letters and metric labels.
    pub component: String,
    /// The stream kind of `topic`.
    pub stream: StreamKind,
    /// The event topic to read.
    pub topic: String,
    /// `<prefix>.dlq`.
    pub dlq_topic: String,
    /// Records per batch (one sled batch each).
    pub max_batch: usize,
    /// How long one poll waits for new records; also the shutdown reaction time.
    pub poll_timeout: Duration,
    /// Where dead letters and event ages are counted.
    pub metrics: biglearn_telemetry::Metrics,
    /// Off when replaying a log whose dead letters the live pass already wrote.
    pub write_dead_letters: bool,
    /// When a replay writes its in-memory state back to sled.
    pub checkpoint: crate::overlay::CheckpointPolicy,
}

/// The event-log projection of one event topic, fed by a [`TopicConsumer`].
pub struct EventLogProjection {
    log: EventLog,
    store: SharedStreamStore,
    config: EventLogConsumerConfig,
}

impl EventLogProjection {
    pub fn new(
        log: EventLog,
        store: SharedStreamStore,
        config: EventLogConsumerConfig,
    ) -> EventLogProjection {
        EventLogProjection { log, store, config }
    }
}

impl From<ProjectionError> for ApplyError {
    fn from(error: ProjectionError) -> ApplyError {
        match error {
            ProjectionError::Stream(error) => error.into(),
            // The batch was not applied; the dead letter is written again on the retry.
            ProjectionError::DeadLetterNotDelivered { .. } => {
                ApplyError::transient(error.to_string())
            }
            error => ApplyError::fatal(error.to_string()),
        }
    }
}

/// Consumes `config.topic` into `log` until `shutdown` turns true.
pub async fn run_event_log_consumer(
    log: EventLog,
    store: SharedStreamStore,
    config: EventLogConsumerConfig,
    progress: watch::Sender<ConsumerProgress>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let options = RunOptions {
        max_batch: config.max_batch,
        poll_timeout: config.poll_timeout,
        ..RunOptions::default()
    };
    TopicConsumer::new(
        config.topic.clone(),
        config.component.clone(),
        decoder(config.stream),
    )
    .feed(
        config.component.clone(),
        Arc::new(EventLogProjection::new(log, store.clone(), config.clone())),
        progress,
    )
    .options(options)
    .metrics(config.metrics.clone())
    .run(store, shutdown)
    .await
    .map_err(|error| ProjectionError::Consumer {
        detail: error.to_string(),
    })
}

#[async_trait]
impl Projection<DecodedEvent> for EventLogProjection {
    fn positions(&self, topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        (0..n_partitions)
            .map(|partition| Ok(self.log.position(topic, partition)?.unwrap_or(0)))
            .collect()
    }

    async fn apply(&self, batch: &Batch<'_, DecodedEvent>) -> Result<Applied, ApplyError> {
        Ok(apply_batch(&self.log, &self.store, &self.config, batch).await?)
    }

    fn replaying(&self, replaying: bool) -> Result<(), ApplyError> {
        if replaying {
            self.log.begin_write_back(self.config.checkpoint);
            Ok(())
        } else {
            Ok(self.log.end_write_back()?)
        }
    }
}

async fn apply_batch(
    log: &EventLog,
    store: &SharedStreamStore,
    config: &EventLogConsumerConfig,
    batch: &Batch<'_, DecodedEvent>,
) -> Result<Applied, ProjectionError> {
    let mut dead_letters = Vec::new();
    let mut offered: Vec<OfferedEvent<'_>> = Vec::with_capacity(batch.records.len());
    let mut offered_records: Vec<&ConsumedRecord> = Vec::with_capacity(batch.records.len());
    for (item, record) in batch.decoded.iter().zip(&batch.records) {
        let event = match item {
            DecodedEvent::Course(event) => OfferedEvent::Course(event),
            DecodedEvent::Ecosystem(event) => OfferedEvent::Ecosystem(event),
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
                OfferedEvent::Opaque {
                    stream: config.stream,
                    aggregate: routing.aggregate,
                    sequence_number: routing.sequence_number,
                    event_uuid: routing.event_uuid,
                    event_type: routing.event_type.clone(),
                }
            }
        };
        offered.push(event);
        offered_records.push(record);
    }
    let positions: Vec<(&str, i32, i64)> = batch
        .positions
        .iter()
        .map(|(partition, offset)| (batch.topic, *partition, *offset))
        .collect();

    // Dead letters must be durable before the positions move past their records, and
    // state and positions must commit together: so conflicts are found read-only first,
    // dead-lettered, and only then is everything applied in one batch.
    let mut claimed: BTreeMap<(uuid::Uuid, i64), EventUuid> = BTreeMap::new();
    for (event, record) in offered.iter().zip(&offered_records) {
        let (aggregate, seq, event_uuid) = event.slot();
        let taken_by = match claimed.get(&(aggregate, seq.0)) {
            Some(first) => Some(*first),
            None => log.slot_identity(config.stream, aggregate, seq)?,
        };
        match taken_by {
            Some(first) if first != event_uuid => dead_letters.push(dead_letter_for(
                &config.component,
                record,
                DeadLetterReason::SlotConflict,
                format!("sequence_number {seq} is already taken by event {first}; the first in log order wins"),
            )),
            Some(_) => {}
            None => {
                claimed.insert((aggregate, seq.0), event_uuid);
            }
        }
    }
    if !config.write_dead_letters {
        dead_letters.clear();
    }
    let mut applied = Applied {
        n_dead_lettered: dead_letters.len() as u64,
        ..Applied::default()
    };
    write_dead_letters(
        store,
        &config.dlq_topic,
        dead_letters,
        &config.component,
        &config.metrics,
    )
    .await?;
    let now = now_micros();
    let outcomes = log.apply(&offered, &positions, now)?;
    for item in &batch.decoded {
        let Some(accepted_at) = item.accepted_at_micros() else {
            continue;
        };
        applied.last_accepted_at_micros = Some(accepted_at);
        let age = Duration::from_micros((now - accepted_at).max(0) as u64);
        config.metrics.event_applied(&config.component, age);
    }
    for outcome in &outcomes {
        match outcome {
            Offered::Stored => applied.n_applied += 1,
            Offered::Duplicate => applied.n_duplicates += 1,
            Offered::SlotConflict { .. } => {}
        }
    }
    Ok(applied)
}

/// Appends `dead_letters` to `dlq_topic` and counts them; an undelivered one fails the
/// batch (retried: it is not applied yet).
pub(crate) async fn write_dead_letters(
    store: &SharedStreamStore,
    dlq_topic: &str,
    dead_letters: Vec<(OutgoingRecord, DeadLetterReason)>,
    component: &str,
    metrics: &biglearn_telemetry::Metrics,
) -> Result<(), ProjectionError> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    for (_, reason) in &dead_letters {
        metrics.dead_lettered(component, reason.as_str());
    }
    let letters: Vec<OutgoingRecord> = dead_letters.into_iter().map(|(record, _)| record).collect();
    for outcome in store.append(dlq_topic, letters).await? {
        if let Err(error) = outcome {
            return Err(ProjectionError::DeadLetterNotDelivered {
                topic: dlq_topic.to_owned(),
                detail: error.to_string(),
            });
        }
    }
    Ok(())
}

/// The dead letter of `record` (docs/design/events.md §7.4), keyed like the original.
pub fn dead_letter_for(
    component: &str,
    record: &ConsumedRecord,
    reason: DeadLetterReason,
    detail: String,
) -> (OutgoingRecord, DeadLetterReason) {
    let letter = DeadLetter {
        source_topic: record.topic.clone(),
        source_partition: record.partition,
        source_offset: record.offset,
        consumer_group_or_component: component.to_owned(),
        reason,
        detail,
        original_key: record.key.clone(),
        original_value: record.value.clone(),
        original_headers: record.headers.clone(),
        observed_at_micros: now_micros(),
    };
    (
        OutgoingRecord {
            key: record.key.clone().unwrap_or_default(),
            value: encode_dead_letter(&letter),
            headers: Vec::new(),
        },
        reason,
    )
}
