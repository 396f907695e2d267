//! The single writer (docs/design/api.md §3): checks identities and slots under per-aggregate
//! locks, stamps and appends new events, and answers only after every record of a
//! request is durably delivered.
//!
//! The checks of the request path read the writer's index in memory
//! (`biglearn_projector::writer_index`), never sled: a new event costs two hash lookups,
//! and the writer records what it delivered there at once (read-your-writes), without
//! waiting for the event-log projection. Only the rare answers that need a stored row (a
//! re-sent identity, a slot conflict, a preparation, a gap fill) first wait until the
//! event-log projection holds everything this writer delivered.

use biglearn_stream::clock::now_micros;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use biglearn_domain::events::{
    CourseEvent, CoursePayload, EcosystemEvent, EcosystemPayload, EnvelopeMeta, NoOpReason,
    StreamKind,
};
use biglearn_domain::ids::{CourseUuid, EcosystemUuid, EventUuid, PreparationUuid, SequenceNumber};
use biglearn_events::{course_event_record, ecosystem_event_record, EncodedRecord};
use biglearn_projector::consumer::ConsumerProgress;
use biglearn_projector::event_log::{EventLog, IdentityRow, KnownKind};
use biglearn_projector::writer_index::WriterIndex;
use biglearn_stream::volume::{SpaceError, VolumeSpace};
use biglearn_stream::{DeliveryError, OutgoingRecord, SharedStreamStore, Topics};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::requests::{Candidate, CandidatePayload};
use biglearn_telemetry::Metrics;

/// How long a write that needs a stored row waits for the event-log projection to hold
/// everything delivered before it, before answering 503 (a retry is then a no-op by
/// identity).
const INDEX_DEADLINE: std::time::Duration = std::time::Duration::from_secs(50);

/// How long a read waits for the event-log projection to hold what this process's writer
/// delivered before it answers from what is there (read-your-writes in one process).
const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Number of lock stripes (a power of two): aggregates hash onto them, so memory stays
/// bounded however many courses exist, and sorted acquisition keeps multi-course requests
/// deadlock-free.
const LOCK_STRIPES: usize = 4096;

/// What happened to one candidate of an accepted request.
#[derive(Clone, Debug, PartialEq)]
pub enum CandidateOutcome {
    /// Newly appended and delivered.
    Written,
    /// The identity was already recorded: a 200 no-op (first write wins).
    Existing(IdentityRow),
}

/// An `update_course_ecosystems` item's status (docs/design/api.md §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateStatus {
    PreparationUnknown,
    UpdatedAndReady,
    UpdatedButUnready,
}

impl UpdateStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::PreparationUnknown => "preparation_unknown",
            UpdateStatus::UpdatedAndReady => "updated_and_ready",
            UpdateStatus::UpdatedButUnready => "updated_but_unready",
        }
    }
}

/// One slot conflict of a rejected request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotConflict {
    /// JSON pointer of the offending `sequence_number`.
    pub path: String,
    pub stream: StreamKind,
    pub aggregate: Uuid,
    pub sequence_number: SequenceNumber,
    pub taken_by: EventUuid,
    /// The type of the event holding the slot, when it is already recorded.
    pub taken_by_type: Option<String>,
}

/// Why a write was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} slot conflict(s)", .0.len())]
    Conflicts(Vec<SlotConflict>),
    #[error("event log unavailable; retry with the same body ({detail})")]
    Unavailable { detail: String },
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

/// The result of an accepted write: one outcome per deduplicated candidate, and for
/// `update_course_ecosystems` a status per identity.
#[derive(Clone, Debug, Default)]
pub struct WriteReceipt {
    pub outcomes: Vec<(EventUuid, CandidateOutcome)>,
    pub update_statuses: HashMap<EventUuid, UpdateStatus>,
}

/// Writer configuration.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Recorded in every envelope, for diagnostics.
    pub writer_id: String,
    pub topics: Topics,
}

/// The single writer.
pub struct Writer {
    store: SharedStreamStore,
    log: EventLog,
    config: WriterConfig,
    stripes: Vec<Arc<Mutex<()>>>,
    course_metadata_lock: Mutex<()>,
    ecosystem_metadata_lock: Mutex<()>,
    /// Stamped into every envelope: the last settings version the settings follower
    /// applied from `<prefix>.settings` (0 before any settings event).
    settings_version: AtomicI64,
    /// Set after an uncertain delivery outcome until the index is resynchronised.
    resyncing: Arc<AtomicBool>,
    metrics: Metrics,
    /// Progress of the event-log consumers that build the index, per topic.
    indexed_by: HashMap<String, tokio::sync::watch::Receiver<ConsumerProgress>>,
    /// Per topic and partition, the offset after the last record this writer delivered:
    /// where the event-log projection must be before a stored row is consulted.
    delivered: std::sync::Mutex<HashMap<String, BTreeMap<i32, i64>>>,
    /// The data volume whose free space must stay above its reserve for a write to be
    /// accepted (the derived state of accepted writes needs room in sled).
    space: std::sync::OnceLock<VolumeSpace>,
}

// The settings follower tells the writer each applied version to stamp.
impl biglearn_settings_follower::StampsSettingsVersion for Writer {
    fn set_settings_version(&self, version: i64) {
        Writer::set_settings_version(self, version);
    }
}

/// The lock stripe of an aggregate: a multiplicative (Fibonacci) hash of all 128 bits,
/// its top bits taken, so that uuids differing in any byte (not only random v4 ones, but
/// sequential or structured ids too) spread over the stripes instead of sharing one lock.
fn stripe_of(stream: StreamKind, aggregate: Uuid) -> usize {
    let bytes = aggregate.as_bytes();
    let high = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or([0; 8]));
    let low = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
    let mixed = (high.rotate_left(29) ^ low ^ stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - LOCK_STRIPES.trailing_zeros())) as usize
}

impl Writer {
    /// A writer appending to `store`. Its index is `log`, which the event-log consumers
    /// feed from the topics; `indexed_by` holds their progress per topic (course and
    /// ecosystem events), which a write waits on after delivery. The writer never writes
    /// the index itself, so the index is always what the log says. It refuses writes (503)
    /// until [`crate::resync_when_caught_up`] has seen the index catch up with the log.
    pub fn new(
        store: SharedStreamStore,
        log: EventLog,
        config: WriterConfig,
        metrics: Metrics,
        indexed_by: HashMap<String, tokio::sync::watch::Receiver<ConsumerProgress>>,
    ) -> Writer {
        Writer {
            store,
            log,
            config,
            stripes: (0..LOCK_STRIPES)
                .map(|_| Arc::new(Mutex::new(())))
                .collect(),
            course_metadata_lock: Mutex::new(()),
            ecosystem_metadata_lock: Mutex::new(()),
            settings_version: AtomicI64::new(0),
            // Refusing until `resync_when_caught_up` finds the index caught up with the
            // log: a write checked against an index still behind would reuse a taken slot.
            resyncing: Arc::new(AtomicBool::new(true)),
            metrics,
            indexed_by,
            delivered: std::sync::Mutex::new(HashMap::new()),
            space: std::sync::OnceLock::new(),
        }
    }

    /// Loads the writer's index from the event-log projection now (a scan of one row per
    /// event), so that the first write does not pay for it.
    pub fn load_index(&self) -> Result<(), WriteError> {
        self.log.writer_index().map(|_| ()).map_err(Self::internal)
    }

    /// Notes the offsets delivered to `topic`.
    fn note_delivered(
        &self,
        topic: &str,
        outcomes: &[Result<biglearn_stream::Delivered, DeliveryError>],
    ) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let positions = delivered.entry(topic.to_owned()).or_default();
        for outcome in outcomes.iter().flatten() {
            let next = positions.entry(outcome.partition).or_insert(0);
            *next = (*next).max(outcome.offset + 1);
        }
    }

    /// Waits until the event-log projection holds every record this writer delivered
    /// so far (at most `deadline`).
    async fn sync_index(&self, deadline: std::time::Duration) -> Result<(), WriteError> {
        let targets: Vec<(String, BTreeMap<i32, i64>)> = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(topic, positions)| (topic.clone(), positions.clone()))
            .collect();
        for (topic, needed) in targets {
            self.wait_positions(&topic, &needed, deadline).await?;
        }
        Ok(())
    }

    /// Waits (briefly) until reads of the event-log projection see every write this
    /// writer answered: a read after a write's 200 sees it. Past the deadline the read
    /// answers from what the projection holds.
    pub async fn await_writes_indexed(&self) {
        if let Err(error) = self.sync_index(READ_DEADLINE).await {
            tracing::debug!(%error, "A read answers before the event-log projection caught up with the writer.");
        }
    }

    /// Refuses writes (503 at once) while `space`'s volume is below its reserve; they
    /// resume by themselves once space is freed. Set once, at start.
    pub fn guard_space(&self, space: VolumeSpace) {
        let _ = self.space.set(space);
    }

    /// `Err` while the data volume is below its reserve. A volume that cannot be
    /// measured does not block writes (the log's own errors still would).
    fn check_space(&self) -> Result<(), WriteError> {
        let Some(space) = self.space.get() else {
            return Ok(());
        };
        match space.check() {
            Ok(_) => Ok(()),
            Err(error @ SpaceError::Short { .. }) => {
                tracing::warn!(%error, "A write was refused: the data volume is short of space.");
                Err(WriteError::Unavailable {
                    detail: error.to_string(),
                })
            }
            Err(error) => {
                tracing::warn!(%error, "The data volume's free space is unknown; the write goes ahead.");
                Ok(())
            }
        }
    }

    /// Whether writes are refused until the index is resynchronised.
    pub fn is_resyncing(&self) -> bool {
        self.resyncing.load(Ordering::SeqCst)
    }

    /// The flag a resync task clears once the log has been re-read.
    pub fn resync_flag(&self) -> Arc<AtomicBool> {
        self.resyncing.clone()
    }

    /// Records the last applied settings version, stamped into every later envelope
    /// (never lowered: a re-read of the settings topic does not rewind it).
    pub fn set_settings_version(&self, version: i64) {
        self.settings_version.fetch_max(version, Ordering::SeqCst);
    }

    /// The settings version stamped into envelopes now.
    pub fn settings_version(&self) -> i64 {
        self.settings_version.load(Ordering::SeqCst)
    }

    /// Takes the course metadata lock, which every `create_course` holds until its
    /// delivery is final: a settings change holding it sees an exact course cutoff
    /// (docs/design/operations.md §6.3).
    /// Once it holds the lock it waits until the event-log projection holds every
    /// delivered create (the cutoff is read from there).
    pub async fn lock_course_metadata(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, WriteError> {
        let guard = self.course_metadata_lock.lock().await;
        self.sync_index(INDEX_DEADLINE).await?;
        Ok(guard)
    }

    async fn lock_aggregates(&self, candidates: &[Candidate]) -> Vec<OwnedMutexGuard<()>> {
        let stripes: BTreeSet<usize> = candidates
            .iter()
            .map(|candidate| stripe_of(candidate.stream, candidate.aggregate))
            .collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].clone().lock_owned().await);
        }
        guards
    }

    fn internal(error: impl std::fmt::Display) -> WriteError {
        WriteError::Internal {
            detail: error.to_string(),
        }
    }

    fn is_ready_ecosystem(&self, ecosystem: EcosystemUuid) -> Result<bool, WriteError> {
        self.log
            .is_known(KnownKind::EcosystemWithModel, ecosystem.0)
            .map_err(Self::internal)
    }

    fn update_status_of_existing(
        &self,
        course: Uuid,
        row: &IdentityRow,
        candidate: &Candidate,
    ) -> Result<UpdateStatus, WriteError> {
        if row.no_op_reason == Some(NoOpReason::PreparationUnknown) {
            return Ok(UpdateStatus::PreparationUnknown);
        }
        let preparation = match &candidate.payload {
            CandidatePayload::Course(CoursePayload::UpdateCourseEcosystem(update)) => {
                update.preparation_uuid
            }
            _ => return Ok(UpdateStatus::UpdatedButUnready),
        };
        self.update_status_for(CourseUuid(course), preparation)
    }

    fn update_status_for(
        &self,
        course: CourseUuid,
        preparation: PreparationUuid,
    ) -> Result<UpdateStatus, WriteError> {
        match self
            .log
            .preparation(course, preparation)
            .map_err(Self::internal)?
        {
            None => Ok(UpdateStatus::PreparationUnknown),
            Some((_, next_ecosystem)) => Ok(if self.is_ready_ecosystem(next_ecosystem)? {
                UpdateStatus::UpdatedAndReady
            } else {
                UpdateStatus::UpdatedButUnready
            }),
        }
    }

    /// A re-sent identity is a no-op whatever its payload (first write wins), but a
    /// different payload is worth an operator's attention: count it and say so.
    fn note_payload_mismatch(
        &self,
        candidate: &Candidate,
        recorded: &IdentityRow,
    ) -> Result<(), WriteError> {
        let Some(stored) = self
            .log
            .event(
                candidate.stream,
                recorded.aggregate,
                recorded.sequence_number,
            )
            .map_err(Self::internal)?
        else {
            return Ok(());
        };
        let sent = match &candidate.payload {
            CandidatePayload::Course(payload) => payload.to_event_data(),
            CandidatePayload::Ecosystem(payload) => payload.to_event_data(),
        };
        let stored_data: Option<serde_json::Value> = stored
            .event_data
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        let is_same = stored_data.as_ref() == Some(&sent)
            // A preparation_unknown no_op records the update it replaced.
            || stored.no_op_reason == Some(NoOpReason::PreparationUnknown);
        if !is_same {
            self.metrics
                .identity_payload_mismatch(candidate.stream.as_str());
            tracing::warn!(
                stream = candidate.stream.as_str(),
                event_uuid = %candidate.event_uuid,
                aggregate = %recorded.aggregate,
                sequence_number = recorded.sequence_number.0,
                "An identity was re-sent with a different payload; the first write stands."
            );
        }
        Ok(())
    }

    /// Checks, stamps, appends and indexes the candidates of one request (docs/design/api.md §3.3).
    pub async fn write(&self, candidates: Vec<Candidate>) -> Result<WriteReceipt, WriteError> {
        if self.is_resyncing() {
            return Err(WriteError::Unavailable {
                detail: "the writer's index is catching up with the log (at start, or after an uncertain delivery)".into(),
            });
        }
        self.check_space()?;
        // Duplicates inside one request collapse to their first occurrence.
        let mut seen = BTreeSet::new();
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .filter(|candidate| seen.insert((candidate.stream, candidate.event_uuid)))
            .collect();
        let mut receipt = WriteReceipt::default();
        if candidates.is_empty() {
            return Ok(receipt);
        }
        let _guards = self.lock_aggregates(&candidates).await;
        let index = self.log.writer_index().map_err(Self::internal)?;
        // New: neither the candidate's identity nor its slot is in the log. Any other
        // answer (a re-sent identity, a taken or covered slot) is worked out from the rows.
        let is_new: Vec<bool> = {
            let index = index.lock();
            candidates
                .iter()
                .map(|candidate| {
                    !index.has_identity(candidate.stream, candidate.event_uuid)
                        && !index.is_taken(
                            candidate.stream,
                            candidate.aggregate,
                            candidate.sequence_number,
                        )
                })
                .collect()
        };
        // Stored rows are consulted only for rare answers; they must include every
        // earlier write first.
        let needs_rows = is_new.iter().any(|is_new| !is_new)
            || candidates.iter().any(|candidate| {
                matches!(
                    candidate.payload,
                    CandidatePayload::Course(CoursePayload::UpdateCourseEcosystem(_))
                )
            });
        if needs_rows {
            self.sync_index(INDEX_DEADLINE).await?;
        }

        let mut conflicts = Vec::new();
        let mut new_candidates = Vec::new();
        let mut claimed: BTreeMap<(StreamKind, Uuid, SequenceNumber), EventUuid> = BTreeMap::new();
        for (candidate, is_new) in candidates.into_iter().zip(is_new) {
            let slot = (
                candidate.stream,
                candidate.aggregate,
                candidate.sequence_number,
            );
            if is_new {
                if let Some(first) = claimed.get(&slot) {
                    conflicts.push(SlotConflict {
                        path: format!("{}/sequence_number", candidate.item_path),
                        stream: candidate.stream,
                        aggregate: candidate.aggregate,
                        sequence_number: candidate.sequence_number,
                        taken_by: *first,
                        taken_by_type: None,
                    });
                    continue;
                }
                claimed.insert(slot, candidate.event_uuid);
                new_candidates.push(candidate);
                continue;
            }
            let existing = self
                .log
                .identity(candidate.stream, candidate.event_uuid)
                .map_err(Self::internal)?;
            if let Some(row) = existing {
                if let CandidatePayload::Course(CoursePayload::UpdateCourseEcosystem(_)) =
                    &candidate.payload
                {
                    let status =
                        self.update_status_of_existing(candidate.aggregate, &row, &candidate)?;
                    receipt.update_statuses.insert(candidate.event_uuid, status);
                }
                self.note_payload_mismatch(&candidate, &row)?;
                receipt
                    .outcomes
                    .push((candidate.event_uuid, CandidateOutcome::Existing(row)));
                continue;
            }
            let taken = self
                .log
                .event(
                    candidate.stream,
                    candidate.aggregate,
                    candidate.sequence_number,
                )
                .map_err(Self::internal)?;
            if let Some(row) = taken {
                conflicts.push(SlotConflict {
                    path: format!("{}/sequence_number", candidate.item_path),
                    stream: candidate.stream,
                    aggregate: candidate.aggregate,
                    sequence_number: candidate.sequence_number,
                    taken_by: row.event_uuid,
                    taken_by_type: Some(row.event_type),
                });
                continue;
            }
            // A slot covered by a range no_op is taken by it (docs/design/api.md D13).
            if let Some((_, _, range)) = self
                .log
                .covering(
                    candidate.stream,
                    candidate.aggregate,
                    candidate.sequence_number,
                )
                .map_err(Self::internal)?
            {
                conflicts.push(SlotConflict {
                    path: format!("{}/sequence_number", candidate.item_path),
                    stream: candidate.stream,
                    aggregate: candidate.aggregate,
                    sequence_number: candidate.sequence_number,
                    taken_by: range,
                    taken_by_type: Some("no_op".to_owned()),
                });
                continue;
            }
            // The index holds it but the projection, caught up with every delivery of
            // this writer, does not: it came from the log while we waited. Retry.
            return Err(WriteError::Unavailable {
                detail: "the writer's index and the event-log projection disagree for a moment; retry with the same body".into(),
            });
        }
        if !conflicts.is_empty() {
            for conflict in &conflicts {
                self.metrics.write_conflict(conflict.stream.as_str());
            }
            return Err(WriteError::Conflicts(conflicts));
        }

        // update_course_ecosystems: an unknown preparation becomes a no_op at its slot (D7).
        let mut prepared = Vec::with_capacity(new_candidates.len());
        for candidate in new_candidates {
            let candidate = match &candidate.payload {
                CandidatePayload::Course(CoursePayload::UpdateCourseEcosystem(update)) => {
                    let status =
                        self.update_status_for(update.course_uuid, update.preparation_uuid)?;
                    receipt.update_statuses.insert(candidate.event_uuid, status);
                    if status == UpdateStatus::PreparationUnknown {
                        candidate.into_preparation_unknown_no_op()
                    } else {
                        candidate
                    }
                }
                _ => candidate,
            };
            prepared.push(candidate);
        }

        // Creates take their stream's metadata lock until delivery is final (docs/design/api.md
        // §3.4).
        let needs_course_number = prepared.iter().any(|candidate| {
            matches!(
                candidate.payload,
                CandidatePayload::Course(CoursePayload::CreateCourse(_))
            )
        });
        let needs_ecosystem_number = prepared.iter().any(|candidate| {
            matches!(
                candidate.payload,
                CandidatePayload::Ecosystem(EcosystemPayload::CreateEcosystem(_))
            )
        });
        let _course_metadata = if needs_course_number {
            Some(self.course_metadata_lock.lock().await)
        } else {
            None
        };
        let _ecosystem_metadata = if needs_ecosystem_number {
            Some(self.ecosystem_metadata_lock.lock().await)
        } else {
            None
        };
        // From the index in memory, which holds every delivered create, including one
        // whose request released this lock a moment ago.
        let mut next_numbers = {
            let index = index.lock();
            MetadataNumbers {
                course: index.next_metadata_number(StreamKind::Course),
                ecosystem: index.next_metadata_number(StreamKind::Ecosystem),
            }
        };

        let stamp = Stamp {
            accepted_at_micros: now_micros(),
            writer_id: self.config.writer_id.clone(),
            settings_version: self.settings_version.load(Ordering::SeqCst),
        };
        let StampedEvents {
            course: course_events,
            ecosystem: ecosystem_events,
        } = stamp_events(prepared, &stamp, &mut next_numbers);
        let course_records: Vec<OutgoingRecord> = course_events
            .iter()
            .map(|event| outgoing_record(course_event_record(event)))
            .collect();
        let ecosystem_records: Vec<OutgoingRecord> = ecosystem_events
            .iter()
            .map(|event| outgoing_record(ecosystem_event_record(event)))
            .collect();
        let started = std::time::Instant::now();
        let course_topic = self.config.topics.course_events();
        let ecosystem_topic = self.config.topics.ecosystem_events();
        let (course_outcomes, ecosystem_outcomes) = tokio::join!(
            self.append_all(&course_topic, course_records),
            self.append_all(&ecosystem_topic, ecosystem_records),
        );
        let course_outcomes = course_outcomes?;
        let ecosystem_outcomes = ecosystem_outcomes?;
        self.metrics
            .produce_delivered(&course_topic, started.elapsed());

        // What was delivered is in the log: the index holds it from now on, so the next
        // check under these locks sees it; reads wait for the projection instead
        // (`await_writes_indexed`).
        let failure = course_outcomes
            .iter()
            .chain(&ecosystem_outcomes)
            .filter_map(|outcome| outcome.as_ref().err())
            .fold(None, |failure, error| Some(worse(failure, error.clone())));
        {
            let mut index = index.lock();
            fn delivered<E, T>((_, outcome): &(E, &Result<T, DeliveryError>)) -> bool {
                outcome.is_ok()
            }
            for (event, _) in course_events.iter().zip(&course_outcomes).filter(delivered) {
                let covers_through = match &event.payload {
                    CoursePayload::NoOp(no_op) => no_op.through_sequence_number,
                    _ => None,
                };
                let course = event.course_uuid.0;
                index_delivered(
                    &mut index,
                    StreamKind::Course,
                    course,
                    &event.meta,
                    covers_through,
                );
            }
            for (event, _) in ecosystem_events
                .iter()
                .zip(&ecosystem_outcomes)
                .filter(delivered)
            {
                let covers_through = match &event.payload {
                    EcosystemPayload::NoOp(no_op) => no_op.through_sequence_number,
                    _ => None,
                };
                let ecosystem = event.ecosystem_uuid.0;
                index_delivered(
                    &mut index,
                    StreamKind::Ecosystem,
                    ecosystem,
                    &event.meta,
                    covers_through,
                );
            }
        }
        self.note_delivered(&course_topic, &course_outcomes);
        self.note_delivered(&ecosystem_topic, &ecosystem_outcomes);
        for event in &course_events {
            self.metrics
                .event_written(StreamKind::Course.as_str(), event.event_type().as_str());
            if let CoursePayload::NoOp(no_op) = &event.payload {
                self.metrics
                    .no_op_written(StreamKind::Course.as_str(), no_op.reason.as_str());
            }
        }
        for event in &ecosystem_events {
            self.metrics
                .event_written(StreamKind::Ecosystem.as_str(), event.event_type().as_str());
        }
        if let Some(error) = failure {
            self.metrics.producer_error(error.outcome_label());
            if !matches!(error, DeliveryError::Definite(_)) {
                // The log may hold records we were not told about: stop writing until the
                // index has been re-read from the log (docs/design/api.md §3.5).
                self.resyncing.store(true, Ordering::SeqCst);
                self.metrics.writer_resync();
            }
            return Err(WriteError::Unavailable {
                detail: error.to_string(),
            });
        }
        for event in &course_events {
            receipt
                .outcomes
                .push((event.meta.event_uuid, CandidateOutcome::Written));
        }
        for event in &ecosystem_events {
            receipt
                .outcomes
                .push((event.meta.event_uuid, CandidateOutcome::Written));
        }
        Ok(receipt)
    }

    /// Waits until the event-log consumer of `topic` has applied every partition up to
    /// the offsets `needed` (at most `deadline`).
    async fn wait_positions(
        &self,
        topic: &str,
        needed: &BTreeMap<i32, i64>,
        deadline: std::time::Duration,
    ) -> Result<(), WriteError> {
        if needed.is_empty() {
            return Ok(());
        }
        let Some(progress) = self.indexed_by.get(topic) else {
            return Err(WriteError::Internal {
                detail: format!("the writer has no event-log consumer for {topic}"),
            });
        };
        let mut progress = progress.clone();
        let applied = progress.wait_for(|progress| {
            needed.iter().all(|(partition, next)| {
                progress
                    .positions
                    .get(*partition as usize)
                    .is_some_and(|position| position >= next)
            })
        });
        let outcome = tokio::time::timeout(deadline, applied)
            .await
            .map(|applied| applied.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Unavailable {
                detail: "the event-log consumer stopped".into(),
            }),
            Err(_) => Err(WriteError::Unavailable {
                detail: "the event-log projection is behind the writer's deliveries".into(),
            }),
        }
    }

    async fn append_all(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<biglearn_stream::Delivered, DeliveryError>>, WriteError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.store
            .append(topic, records)
            .await
            .map_err(|error| WriteError::Unavailable {
                detail: error.to_string(),
            })
    }

    /// Appends gap-filling `no_op`s (docs/design/api.md §7) and returns how many slots they filled
    /// (0: already filled).
    ///
    /// Without `through`, one `no_op` at `sequence_number` (identity
    /// `no_op/<stream>/<aggregate>/<seq>`); a slot already covered by a range no_op is
    /// already filled. With `through` (D13), every missing slot of
    /// `[sequence_number, through]`: one `no_op` per missing run, standing at the run's
    /// first slot and covering the rest of it (identity `no_op/<stream>/<aggregate>/<a>-<b>`;
    /// a run of one slot is a plain one-slot no_op), so storage grows with the number of
    /// runs, never with the size of the range. Slots already taken stay as they are.
    pub async fn fill_sequence_gap(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        through: Option<SequenceNumber>,
        actor: &str,
        reason: &str,
    ) -> Result<GapFill, WriteError> {
        // The runs are read from the projection: it must hold every earlier write.
        self.sync_index(INDEX_DEADLINE).await?;
        let runs = match through {
            None => {
                if self
                    .log
                    .covering(stream, aggregate, sequence_number)
                    .map_err(Self::internal)?
                    .is_some()
                {
                    return Ok(GapFill::Filled(0));
                }
                vec![(sequence_number, sequence_number)]
            }
            Some(through) => {
                let runs = self
                    .log
                    .missing_runs(stream, aggregate, sequence_number, through)
                    .map_err(Self::internal)?;
                if runs.len() > MAX_FILL_RUNS {
                    return Ok(GapFill::TooManyRuns(runs.len()));
                }
                runs
            }
        };
        if runs.is_empty() {
            return Ok(GapFill::Filled(0));
        }
        let candidates: Vec<Candidate> = runs
            .iter()
            .map(|(first, last)| {
                let (name, covers) = if first == last {
                    (
                        format!("no_op/{}/{}/{}", stream.as_str(), aggregate, first),
                        None,
                    )
                } else {
                    (
                        format!("no_op/{}/{}/{}-{}", stream.as_str(), aggregate, first, last),
                        Some(*last),
                    )
                };
                let no_op = biglearn_domain::events::NoOp {
                    reason: NoOpReason::AdminFill,
                    actor: Some(actor.to_owned()),
                    detail_json: Some(serde_json::json!({ "reason": reason }).to_string()),
                    through_sequence_number: covers,
                };
                let payload = match stream {
                    StreamKind::Course => CandidatePayload::Course(CoursePayload::NoOp(no_op)),
                    StreamKind::Ecosystem => {
                        CandidatePayload::Ecosystem(EcosystemPayload::NoOp(no_op))
                    }
                };
                Candidate {
                    stream,
                    aggregate,
                    sequence_number: *first,
                    event_uuid: EventUuid(biglearn_domain::ids::uuid_v5(&name)),
                    payload,
                    item_path: String::new(),
                }
            })
            .collect();
        let sizes: HashMap<EventUuid, i64> = candidates
            .iter()
            .zip(&runs)
            .map(|(candidate, (first, last))| (candidate.event_uuid, last.0 - first.0 + 1))
            .collect();
        let receipt = self.write(candidates).await?;
        Ok(GapFill::Filled(
            receipt
                .outcomes
                .iter()
                .filter(|(_, outcome)| matches!(outcome, CandidateOutcome::Written))
                .map(|(event_uuid, _)| sizes.get(event_uuid).copied().unwrap_or(0))
                .sum::<i64>() as u64,
        ))
    }
}

/// What the writer stamps into every envelope of one request (docs/design/api.md §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub accepted_at_micros: i64,
    pub writer_id: String,
    pub settings_version: i64,
}

/// The metadata sequence numbers the next creates take: a `create_course` the course
/// one, a `create_ecosystem` the ecosystem one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataNumbers {
    pub course: i64,
    pub ecosystem: i64,
}

/// The candidates of one request as events, per stream, in candidate order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StampedEvents {
    pub course: Vec<CourseEvent>,
    pub ecosystem: Vec<EcosystemEvent>,
}

/// Stamps candidates into events: every envelope gets `stamp`, and each create the next
/// metadata sequence number of its stream (`next` advances). Pure: the writer and the
/// offline generator (which supplies its own time and numbers) stamp alike through it.
pub fn stamp_events(
    candidates: impl IntoIterator<Item = Candidate>,
    stamp: &Stamp,
    next: &mut MetadataNumbers,
) -> StampedEvents {
    let mut events = StampedEvents::default();
    for candidate in candidates {
        let mut meta = EnvelopeMeta {
            event_uuid: candidate.event_uuid,
            sequence_number: candidate.sequence_number,
            accepted_at_micros: stamp.accepted_at_micros,
            writer_id: stamp.writer_id.clone(),
            settings_version: stamp.settings_version,
            metadata_sequence_number: None,
        };
        match candidate.payload {
            CandidatePayload::Course(payload) => {
                if matches!(payload, CoursePayload::CreateCourse(_)) {
                    meta.metadata_sequence_number = Some(next.course);
                    next.course += 1;
                }
                events.course.push(CourseEvent {
                    meta,
                    course_uuid: CourseUuid(candidate.aggregate),
                    payload,
                });
            }
            CandidatePayload::Ecosystem(payload) => {
                if matches!(payload, EcosystemPayload::CreateEcosystem(_)) {
                    meta.metadata_sequence_number = Some(next.ecosystem);
                    next.ecosystem += 1;
                }
                events.ecosystem.push(EcosystemEvent {
                    meta,
                    ecosystem_uuid: EcosystemUuid(candidate.aggregate),
                    payload,
                });
            }
        }
    }
    events
}

/// Records one delivered event in the writer's index: its slot (with the run a range
/// no_op covers), its identity and its metadata number.
fn index_delivered(
    index: &mut WriterIndex,
    stream: StreamKind,
    aggregate: Uuid,
    meta: &EnvelopeMeta,
    covers_through: Option<SequenceNumber>,
) {
    index.record(
        stream,
        aggregate,
        meta.sequence_number,
        covers_through,
        meta.event_uuid,
    );
    if let Some(number) = meta.metadata_sequence_number {
        index.note_metadata_number(stream, number);
    }
}

/// An encoded record as the stream store appends it.
pub fn outgoing_record(encoded: EncodedRecord) -> OutgoingRecord {
    OutgoingRecord {
        key: encoded.key,
        value: encoded.value,
        headers: encoded.headers,
    }
}

/// At most this many separate missing runs are filled by one range fill (each is one
/// record in one request); more answer 400 and the operator fills a smaller range.
pub const MAX_FILL_RUNS: usize = 1000;

/// The outcome of [`Writer::fill_sequence_gap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapFill {
    /// This many slots were filled (0: they already were).
    Filled(u64),
    /// The range holds this many separate missing runs, more than [`MAX_FILL_RUNS`];
    /// nothing was written.
    TooManyRuns(usize),
}

/// The more alarming of two delivery errors: fatal > uncertain > definite.
fn worse(current: Option<DeliveryError>, next: DeliveryError) -> DeliveryError {
    let rank = |error: &DeliveryError| match error {
        DeliveryError::Definite(_) => 0,
        DeliveryError::Uncertain(_) => 1,
        DeliveryError::Fatal(_) => 2,
    };
    match current {
        Some(current) if rank(&current) >= rank(&next) => current,
        _ => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many distinct stripes `n` ids made by `make` take.
    fn stripes_taken(n: u32, make: impl Fn(u32) -> Uuid) -> usize {
        (0..n)
            .map(|i| stripe_of(StreamKind::Course, make(i)))
            .collect::<BTreeSet<_>>()
            .len()
    }

    #[test]
    fn ids_that_differ_in_any_part_spread_over_the_stripes() {
        // 200 ids differing only in their last bytes, only in their first bytes, or only
        // in a middle byte: each set takes (nearly) 200 stripes of 4096, never a few.
        let last = stripes_taken(200, |i| {
            Uuid::from_u128(0x1234_5678_0001_4000_8000_0000_0000_0000 | i as u128)
        });
        let first = stripes_taken(200, |i| {
            Uuid::from_u128(((i as u128) << 96) | 0x4000_8000_0000_0000_0001)
        });
        let middle = stripes_taken(200, |i| Uuid::from_u128(((i as u128 & 0xff) << 56) | 7));
        for (what, taken) in [("last", last), ("first", first), ("middle", middle)] {
            assert!(
                taken >= 190,
                "ids differing in their {what} bytes take {taken} stripes"
            );
        }
        assert!((0..10_000u32).all(|i| stripe_of(
            StreamKind::Ecosystem,
            Uuid::from_u128(i as u128 * 7919)
        ) < LOCK_STRIPES));
    }
}
