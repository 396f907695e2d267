//! The loop that feeds the event-log projection from one event topic: poll a batch,
//! decode, apply with the positions in one sled batch, dead-letter what cannot be applied.

use std::collections::BTreeMap;
use std::time::Duration;

use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::{EventUuid, SequenceNumber};
use biglearn_events::{
    decode_course_event, decode_ecosystem_event, encode_dead_letter, routing_headers, DeadLetter,
    DeadLetterReason, DecodeError,
};
use biglearn_stream::{ConsumedRecord, OutgoingRecord, SharedStreamStore};
use tokio::sync::watch;

use crate::event_log::{EventLog, Offered, OfferedEvent};
use crate::ProjectionError;

/// Where a consumer stands, published after every batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// Next offset per partition, as stored in sled.
    pub positions: Vec<i64>,
    /// High watermarks observed when the consumer started.
    pub start_high_watermarks: Vec<i64>,
    /// Every partition has reached its start high watermark.
    pub caught_up: bool,
    /// Records applied since start.
    pub n_applied: u64,
    /// Re-deliveries dropped since start.
    pub n_duplicates: u64,
    /// Records dead-lettered since start.
    pub n_dead_lettered: u64,
}

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
}

/// Consumes `config.topic` into `log` until `shutdown` turns true.
pub async fn run_event_log_consumer(
    log: EventLog,
    store: SharedStreamStore,
    config: EventLogConsumerConfig,
    progress: watch::Sender<ConsumerProgress>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    let (mut reader, mut state) = resume_from_positions(&store, &config.topic, |partition| {
        log.position(&config.topic, partition)
    })
    .await?;
    progress.send_replace(state.clone());
    tracing::info!(topic = %config.topic, component = %config.component, "Event-log consumer started.");
    while !*shutdown.borrow() {
        let records = tokio::select! {
            biased;
            _ = shutdown.changed() => continue,
            records = reader.poll(config.max_batch, config.poll_timeout) => records?,
        };
        if records.is_empty() {
            continue;
        }
        apply_batch(&log, &store, &config, &records, &mut state).await?;
        state.caught_up =
            state.caught_up || is_caught_up(&state.positions, &state.start_high_watermarks);
        progress.send_replace(state.clone());
    }
    tracing::info!(topic = %config.topic, "Event-log consumer stopped.");
    Ok(())
}

/// Opens a reader of every partition of `topic` at the positions stored with a
/// projection's state (0 where none is stored), with the progress it starts from.
pub(crate) async fn resume_from_positions(
    store: &SharedStreamStore,
    topic: &str,
    stored_position: impl Fn(i32) -> Result<Option<i64>, ProjectionError>,
) -> Result<(Box<dyn biglearn_stream::StreamReader>, ConsumerProgress), ProjectionError> {
    let n_partitions = store.partition_count(topic).await?;
    let mut positions = Vec::with_capacity(n_partitions as usize);
    for partition in 0..n_partitions {
        positions.push(stored_position(partition)?.unwrap_or(0));
    }
    let start_high_watermarks = store.high_watermarks(topic).await?;
    let start: Vec<(i32, i64)> = positions
        .iter()
        .enumerate()
        .map(|(partition, offset)| (partition as i32, *offset))
        .collect();
    let reader = store.open_reader(topic, &start).await?;
    let progress = ConsumerProgress {
        caught_up: is_caught_up(&positions, &start_high_watermarks),
        positions,
        start_high_watermarks,
        ..ConsumerProgress::default()
    };
    Ok((reader, progress))
}

pub(crate) fn is_caught_up(positions: &[i64], high_watermarks: &[i64]) -> bool {
    positions
        .iter()
        .zip(high_watermarks)
        .all(|(position, high)| position >= high)
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
}

enum Decoded {
    Course(Box<biglearn_domain::events::CourseEvent>),
    Ecosystem(Box<biglearn_domain::events::EcosystemEvent>),
    Opaque {
        aggregate: uuid::Uuid,
        sequence_number: SequenceNumber,
        event_uuid: EventUuid,
        event_type: String,
    },
    Unroutable,
}

async fn apply_batch(
    log: &EventLog,
    store: &SharedStreamStore,
    config: &EventLogConsumerConfig,
    records: &[ConsumedRecord],
    state: &mut ConsumerProgress,
) -> Result<(), ProjectionError> {
    let mut decoded = Vec::with_capacity(records.len());
    let mut dead_letters = Vec::new();
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
        let item = match result {
            Ok(item) => item,
            Err(error) => {
                let reason = match error {
                    DecodeError::UnknownEventType { .. } => DeadLetterReason::UnknownType,
                    _ => DeadLetterReason::Undecodable,
                };
                dead_letters.push(dead_letter(config, record, reason, error.to_string()));
                match routing_headers(&record.headers) {
                    Some(routing) => Decoded::Opaque {
                        aggregate: routing.aggregate_uuid,
                        sequence_number: SequenceNumber(routing.sequence_number),
                        event_uuid: EventUuid(routing.event_uuid),
                        event_type: routing.event_type,
                    },
                    None => Decoded::Unroutable,
                }
            }
        };
        decoded.push(item);
    }
    let offered: Vec<OfferedEvent<'_>> = decoded
        .iter()
        .filter_map(|item| match item {
            Decoded::Course(event) => Some(OfferedEvent::Course(event)),
            Decoded::Ecosystem(event) => Some(OfferedEvent::Ecosystem(event)),
            Decoded::Opaque {
                aggregate,
                sequence_number,
                event_uuid,
                event_type,
            } => Some(OfferedEvent::Opaque {
                stream: config.stream,
                aggregate: *aggregate,
                sequence_number: *sequence_number,
                event_uuid: *event_uuid,
                event_type: event_type.clone(),
            }),
            Decoded::Unroutable => None,
        })
        .collect();
    let offered_records: Vec<&ConsumedRecord> = decoded
        .iter()
        .zip(records)
        .filter(|(item, _)| !matches!(item, Decoded::Unroutable))
        .map(|(_, record)| record)
        .collect();

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
            Some(first) if first != event_uuid => dead_letters.push(dead_letter(
                config,
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
    if !dead_letters.is_empty() {
        state.n_dead_lettered += dead_letters.len() as u64;
        for (_, reason) in &dead_letters {
            config
                .metrics
                .dead_lettered(&config.component, reason.as_str());
        }
        let dead_letters: Vec<OutgoingRecord> =
            dead_letters.into_iter().map(|(record, _)| record).collect();
        let outcomes = store.append(&config.dlq_topic, dead_letters).await?;
        for outcome in outcomes {
            if let Err(error) = outcome {
                return Err(ProjectionError::DeadLetterNotDelivered {
                    topic: config.dlq_topic.clone(),
                    detail: error.to_string(),
                });
            }
        }
    }
    let now = now_micros();
    let outcomes = log.apply(&offered, &positions, now)?;
    for item in &decoded {
        let accepted_at = match item {
            Decoded::Course(event) => event.meta.accepted_at_micros,
            Decoded::Ecosystem(event) => event.meta.accepted_at_micros,
            _ => continue,
        };
        let age = Duration::from_micros((now - accepted_at).max(0) as u64);
        config.metrics.event_applied(&config.component, age);
    }
    for outcome in &outcomes {
        match outcome {
            Offered::Stored => state.n_applied += 1,
            Offered::Duplicate => state.n_duplicates += 1,
            Offered::SlotConflict { .. } => {}
        }
    }
    for (partition, offset) in next_offsets {
        if let Some(position) = state.positions.get_mut(partition as usize) {
            *position = offset;
        }
    }
    Ok(())
}

fn dead_letter(
    config: &EventLogConsumerConfig,
    record: &ConsumedRecord,
    reason: DeadLetterReason,
    detail: String,
) -> (OutgoingRecord, DeadLetterReason) {
    dead_letter_for(&config.component, record, reason, detail)
}

/// The dead letter of `record` (docs/design/events.md §7.4), keyed like the original.
pub(crate) fn dead_letter_for(
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
