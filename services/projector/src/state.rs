//! The state projection: courses, rosters, assignments, trials, responses and content in
//! sled, applied per aggregate strictly in sequence order (docs/design/events.md §7.2).
//!
//! Each record goes through `domain::sequencing::receive`: it is applied, parked behind a
//! gap (pending rows in sled, never memory), dropped as a duplicate, or reported as a
//! conflict for the dead-letter topic. Released events go through `domain::state`'s event
//! effects. State, pending rows and the partition positions of a batch are staged in one
//! overlay and commit as one `sled::Batch` ([`StagedBatch::commit`]), after the caller has
//! made the batch's dead letters durable.

use std::collections::{BTreeMap, HashMap};

use biglearn_domain::events::{
    CourseEvent, CoursePayload, EcosystemEvent, EcosystemPayload, StreamKind,
};
use biglearn_domain::ids::{EventUuid, PreparationUuid, SequenceNumber};
use biglearn_domain::sequencing::{
    identities_not_kept, receive, AggregateSequence, Incoming, Outcome, PendingChange, PendingView,
    Sequenced, Slot,
};
use biglearn_domain::state::{
    apply_course_event, apply_ecosystem_event, register_preparation, Applied, Effect, StateError,
};
use biglearn_events::{decode_course_event, decode_ecosystem_event};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::overlay::{CheckpointPolicy, Overlay, WriteBack};
use crate::ProjectionError;

pub mod consumer;
mod store;

pub use store::{EcosystemCache, SledState};

const TAG_POSITION: u8 = b'P';
const TAG_AGGREGATE: u8 = b'A';
const TAG_PENDING: u8 = b'Q';
/// A course waiting at its next event for a preparation (docs/design/scheduler.md §3.2).
const TAG_WAITING: u8 = b'W';
/// The `settings_version` stamped in a course's last applied event: the version its
/// settings resolve at (docs/design/operations.md §6.4).
const TAG_SETTINGS_VERSION: u8 = b'V';

/// Rows a [`BatchHook`] adds (the scheduler's dirty targets): transient work, committed
/// with the events that caused it but not part of the state's digest.
pub const TAG_HOOK: u8 = b'D';

/// Called with every staged batch before it commits, so that work derived from its effects
/// (the scheduler's dirty targets) commits atomically with the events that caused it.
pub trait BatchHook: Send + Sync {
    /// `state` reads the batch's state as it will commit; rows written with
    /// [`SledState::put_hook_row`] commit with it.
    fn on_batch(&self, state: &mut SledState<'_, '_>, effects: &[Effect])
        -> Result<(), StateError>;
}

fn stream_byte(stream: StreamKind) -> u8 {
    match stream {
        StreamKind::Course => b'c',
        StreamKind::Ecosystem => b'e',
    }
}

fn position_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = vec![TAG_POSITION];
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn aggregate_key(stream: StreamKind, aggregate: Uuid) -> Vec<u8> {
    let mut key = vec![TAG_AGGREGATE, stream_byte(stream)];
    key.extend_from_slice(aggregate.as_bytes());
    key
}

fn pending_key(stream: StreamKind, aggregate: Uuid, seq: SequenceNumber) -> Vec<u8> {
    let mut key = vec![TAG_PENDING, stream_byte(stream)];
    key.extend_from_slice(aggregate.as_bytes());
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

fn settings_version_key(course: Uuid) -> Vec<u8> {
    let mut key = vec![TAG_SETTINGS_VERSION];
    key.extend_from_slice(course.as_bytes());
    key
}

fn waiting_key(course: Uuid) -> Vec<u8> {
    let mut key = vec![TAG_WAITING];
    key.extend_from_slice(course.as_bytes());
    key
}

const AGGREGATE_LEN: usize = 40;
/// Byte range of `first_pending_at_micros` in an aggregate row: wall-clock, not hashed.
const FIRST_PENDING_AT: std::ops::Range<usize> = 32..40;

fn encode_aggregate(state: &AggregateSequence) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(AGGREGATE_LEN);
    bytes.extend_from_slice(&state.next_seq.0.to_be_bytes());
    bytes.extend_from_slice(&state.n_pending.to_be_bytes());
    bytes.extend_from_slice(&state.n_opaque.to_be_bytes());
    bytes.extend_from_slice(&state.highest_pending.map_or(-1, |s| s.0).to_be_bytes());
    bytes.extend_from_slice(
        &state
            .first_pending_at_micros
            .unwrap_or(i64::MIN)
            .to_be_bytes(),
    );
    bytes
}

fn decode_aggregate(bytes: &[u8]) -> Result<AggregateSequence, ProjectionError> {
    let field = |idx: usize| -> Result<[u8; 8], ProjectionError> {
        bytes
            .get(idx * 8..idx * 8 + 8)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| ProjectionError::Corrupt {
                detail: "aggregate row of the state projection is short".into(),
            })
    };
    let highest = i64::from_be_bytes(field(3)?);
    let first = i64::from_be_bytes(field(4)?);
    Ok(AggregateSequence {
        next_seq: SequenceNumber(i64::from_be_bytes(field(0)?)),
        n_pending: u64::from_be_bytes(field(1)?),
        n_opaque: u64::from_be_bytes(field(2)?),
        highest_pending: (highest >= 0).then_some(SequenceNumber(highest)),
        first_pending_at_micros: (first != i64::MIN).then_some(first),
    })
}

/// A slot's payload is the raw record value, decoded again only if it was parked: borrowed
/// from the batch for records in flight, owned when read back from a pending row.
type Raw<'r> = std::borrow::Cow<'r, [u8]>;

/// A pending row: kind (0 event, 1 opaque, 2 range no_op), identity, for a range no_op its
/// last covered slot (8 bytes), then the raw record.
fn encode_slot(slot: &Slot<Raw<'_>>) -> Vec<u8> {
    let (kind, event_uuid, covers_through, raw) = match slot {
        Slot::Event {
            event_uuid,
            event,
            covers_through: None,
        } => (0u8, event_uuid, None, event.as_ref()),
        Slot::Event {
            event_uuid,
            event,
            covers_through: Some(through),
        } => (2u8, event_uuid, Some(*through), event.as_ref()),
        Slot::Opaque { event_uuid, raw } => (1u8, event_uuid, None, raw.as_slice()),
    };
    let mut bytes = Vec::with_capacity(25 + raw.len());
    bytes.push(kind);
    bytes.extend_from_slice(event_uuid.0.as_bytes());
    if let Some(through) = covers_through {
        bytes.extend_from_slice(&through.0.to_be_bytes());
    }
    bytes.extend_from_slice(raw);
    bytes
}

fn decode_slot(bytes: &[u8]) -> Option<Slot<Raw<'static>>> {
    let event_uuid = EventUuid(Uuid::from_slice(bytes.get(1..17)?).ok()?);
    match bytes.first()? {
        0 => Some(Slot::Event {
            event_uuid,
            event: Raw::Owned(bytes.get(17..)?.to_vec()),
            covers_through: None,
        }),
        1 => Some(Slot::Opaque {
            event_uuid,
            raw: bytes.get(17..)?.to_vec(),
        }),
        2 => Some(Slot::Event {
            event_uuid,
            covers_through: Some(SequenceNumber(i64::from_be_bytes(
                bytes.get(17..25)?.try_into().ok()?,
            ))),
            event: Raw::Owned(bytes.get(25..)?.to_vec()),
        }),
        _ => None,
    }
}

struct PendingRows<'a, 't> {
    overlay: &'a Overlay<'t>,
    stream: StreamKind,
    aggregate: Uuid,
    /// The aggregate has no pending entry: every lookup misses without reading sled (the
    /// common case, an in-order record).
    none_pending: bool,
}

impl<'r> PendingView<Raw<'r>> for PendingRows<'_, '_> {
    fn get(&self, seq: SequenceNumber) -> Option<Slot<Raw<'r>>> {
        if self.none_pending {
            return None;
        }
        // A read error or corrupt row reads as "absent": the record then parks or applies
        // as new; the sled error itself resurfaces on commit.
        let bytes = self
            .overlay
            .get(&pending_key(self.stream, self.aggregate, seq))
            .ok()??;
        decode_slot(&bytes)
    }

    fn first_from(&self, from: SequenceNumber) -> Option<(SequenceNumber, Slot<Raw<'r>>)> {
        if self.none_pending {
            return None;
        }
        let (key, value) = self
            .overlay
            .first_in(
                &pending_key(self.stream, self.aggregate, from),
                &pending_key(self.stream, self.aggregate, SequenceNumber(i64::MAX)),
            )
            .ok()??;
        Some((pending_seq(&key)?, decode_slot(&value)?))
    }

    fn last_below(&self, below: SequenceNumber) -> Option<(SequenceNumber, Slot<Raw<'r>>)> {
        if self.none_pending || below.0 <= 0 {
            return None;
        }
        let (key, value) = self
            .overlay
            .last_in(
                &pending_key(self.stream, self.aggregate, SequenceNumber(0)),
                &pending_key(self.stream, self.aggregate, SequenceNumber(below.0 - 1)),
            )
            .ok()??;
        Some((pending_seq(&key)?, decode_slot(&value)?))
    }
}

/// The sequence number at the end of a pending row's key.
fn pending_seq(key: &[u8]) -> Option<SequenceNumber> {
    Some(SequenceNumber(i64::from_be_bytes(
        key.get(key.len().checked_sub(8)?..)?.try_into().ok()?,
    )))
}

/// One record offered to the projection, decoded or opaque.
#[derive(Clone, Copy, Debug)]
pub enum StateRecord<'r> {
    Course {
        event: &'r CourseEvent,
        raw: &'r [u8],
    },
    Ecosystem {
        event: &'r EcosystemEvent,
        raw: &'r [u8],
    },
    /// Undecodable by this build, routable by its headers: blocks its aggregate.
    Opaque {
        stream: StreamKind,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        event_uuid: EventUuid,
        raw: &'r [u8],
    },
}

impl<'r> StateRecord<'r> {
    fn stream(&self) -> StreamKind {
        match self {
            StateRecord::Course { .. } => StreamKind::Course,
            StateRecord::Ecosystem { .. } => StreamKind::Ecosystem,
            StateRecord::Opaque { stream, .. } => *stream,
        }
    }

    fn slot(&self) -> (Uuid, SequenceNumber, Slot<Raw<'r>>) {
        match self {
            StateRecord::Course { event, raw } => (
                event.course_uuid.0,
                event.meta.sequence_number,
                Slot::Event {
                    event_uuid: event.meta.event_uuid,
                    event: Raw::Borrowed(raw),
                    covers_through: match &event.payload {
                        CoursePayload::NoOp(no_op) => {
                            no_op.covers_through(event.meta.sequence_number)
                        }
                        _ => None,
                    },
                },
            ),
            StateRecord::Ecosystem { event, raw } => (
                event.ecosystem_uuid.0,
                event.meta.sequence_number,
                Slot::Event {
                    event_uuid: event.meta.event_uuid,
                    event: Raw::Borrowed(raw),
                    covers_through: match &event.payload {
                        EcosystemPayload::NoOp(no_op) => {
                            no_op.covers_through(event.meta.sequence_number)
                        }
                        _ => None,
                    },
                },
            ),
            StateRecord::Opaque {
                aggregate,
                sequence_number,
                event_uuid,
                raw,
                ..
            } => (
                *aggregate,
                *sequence_number,
                Slot::Opaque {
                    event_uuid: *event_uuid,
                    raw: raw.to_vec(),
                },
            ),
        }
    }
}

/// What became of one offered record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The record (and `released` parked events after it) were applied.
    Applied {
        released: usize,
    },
    Parked,
    Duplicate,
    /// Another event holds the slot: dead-letter this record.
    Conflict {
        taken_by: EventUuid,
    },
}

/// The result of staging one batch.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// One per offered record, in order.
    pub outcomes: Vec<RecordOutcome>,
    /// Effects of every applied event, in application order.
    pub effects: Vec<Effect>,
    /// Applied events by type name.
    pub applied_by_type: BTreeMap<&'static str, u64>,
    /// The new sequencing state of every aggregate the batch touched.
    pub aggregates: BTreeMap<(StreamKind, Uuid), AggregateSequence>,
    /// Courses that started waiting for an unknown preparation.
    pub unknown_preparation_blocks: u64,
}

/// A batch staged in memory; nothing is durable until [`StagedBatch::commit`].
pub struct StagedBatch<'t> {
    overlay: Overlay<'t>,
    ecosystems: EcosystemCache,
    /// Records staged, counted toward the write-back's checkpoint.
    n_records: usize,
    pub report: BatchReport,
}

impl<'t> StagedBatch<'t> {
    /// The batch's state as it will commit, for a [`BatchHook`] to read and add rows to.
    pub fn state(&mut self) -> SledState<'_, 't> {
        SledState::with_cache(&mut self.overlay, self.ecosystems.clone())
    }

    /// Commits state, pending rows and positions as one atomic sled batch (or, while the
    /// projection replays, into its write-back, checkpointed by its policy).
    pub fn commit(self) -> Result<(), ProjectionError> {
        self.overlay.commit_records(self.n_records)?;
        Ok(())
    }
}

/// The state projection over one sled tree.
#[derive(Clone)]
pub struct StateProjection {
    tree: sled::Tree,
    ecosystems: EcosystemCache,
    write_back: WriteBack,
}

fn state_error(error: StateError) -> ProjectionError {
    ProjectionError::Corrupt {
        detail: error.to_string(),
    }
}

impl StateProjection {
    /// Opens (or creates) the projection in tree `name` of `db`.
    pub fn open(db: &sled::Db, name: &str) -> Result<StateProjection, ProjectionError> {
        Ok(StateProjection {
            tree: db.open_tree(name)?,
            ecosystems: EcosystemCache::default(),
            write_back: WriteBack::default(),
        })
    }

    /// The sled tree, for hashing and size metrics.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Keeps applied batches in memory, written back at checkpoints (while replaying).
    pub fn begin_write_back(&self, policy: CheckpointPolicy) {
        self.write_back.begin(policy);
    }

    /// Writes back everything kept in memory; batches commit to sled again.
    pub fn end_write_back(&self) -> Result<(), ProjectionError> {
        Ok(self.write_back.end(&self.tree)?)
    }

    fn view(&self) -> Overlay<'_> {
        Overlay::over(&self.tree, &self.write_back)
    }

    /// The next offset to read from `topic`/`partition`, if any record was applied.
    pub fn position(&self, topic: &str, partition: i32) -> Result<Option<i64>, ProjectionError> {
        match self.view().get(&position_key(topic, partition))? {
            Some(bytes) => Ok(Some(i64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| ProjectionError::Corrupt {
                        detail: "position row of the state projection is not 8 bytes".into(),
                    })?,
            ))),
            None => Ok(None),
        }
    }

    /// The sequencing state of one aggregate.
    pub fn aggregate(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
    ) -> Result<AggregateSequence, ProjectionError> {
        match self.view().get(&aggregate_key(stream, aggregate))? {
            Some(bytes) => decode_aggregate(&bytes),
            None => Ok(AggregateSequence::default()),
        }
    }

    /// The `settings_version` of the course's last applied event, if any was applied: the
    /// version at which the scheduler resolves the course's settings.
    pub fn settings_version(&self, course: Uuid) -> Result<Option<i64>, ProjectionError> {
        match self.view().get(&settings_version_key(course))? {
            Some(bytes) => Ok(Some(i64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| ProjectionError::Corrupt {
                        detail: "settings-version row of the state projection is not 8 bytes"
                            .into(),
                    })?,
            ))),
            None => Ok(None),
        }
    }

    /// Every course with an applied event, in uuid order (each has a settings-version row).
    pub fn courses(&self) -> Result<Vec<Uuid>, ProjectionError> {
        let mut courses = Vec::new();
        for (key, _) in self.view().scan_prefix(&[TAG_SETTINGS_VERSION])? {
            if let Some(course) = key
                .get(1..17)
                .and_then(|bytes| Uuid::from_slice(bytes).ok())
            {
                courses.push(course);
            }
        }
        Ok(courses)
    }

    /// Every aggregate currently blocked (pending entries behind a gap or an opaque entry).
    pub fn blocked(&self) -> Result<Vec<(StreamKind, Uuid, AggregateSequence)>, ProjectionError> {
        let mut blocked = Vec::new();
        for (key, value) in self.view().scan_prefix(&[TAG_AGGREGATE])? {
            let state = decode_aggregate(&value)?;
            if !state.is_blocked() {
                continue;
            }
            let stream = match key.get(1) {
                Some(b'c') => StreamKind::Course,
                _ => StreamKind::Ecosystem,
            };
            let aggregate = key
                .get(2..18)
                .and_then(|bytes| Uuid::from_slice(bytes).ok())
                .unwrap_or_default();
            blocked.push((stream, aggregate, state));
        }
        Ok(blocked)
    }

    /// Reads the read model as committed (for the scheduler, the SPARFA consumer and tests).
    pub fn with_view<T>(&self, read: impl FnOnce(&SledState<'_, '_>) -> T) -> T {
        let mut overlay = self.view();
        let view = SledState::with_cache(&mut overlay, self.ecosystems.clone());
        read(&view)
    }

    /// Stages `records` (in log order) and the positions they advance to.
    pub fn stage<'t>(
        &'t self,
        records: &[StateRecord<'_>],
        positions: &[(&str, i32, i64)],
        now_micros: i64,
    ) -> Result<StagedBatch<'t>, ProjectionError> {
        let mut staging = Staging {
            ecosystems: self.ecosystems.clone(),
            overlay: self.view(),
            aggregates: HashMap::new(),
            settings_versions: HashMap::new(),
            report: BatchReport::default(),
            now_micros,
        };
        for record in records {
            let outcome = staging.stage_record(record)?;
            staging.report.outcomes.push(outcome);
        }
        let Staging {
            mut overlay,
            aggregates,
            settings_versions,
            mut report,
            ..
        } = staging;
        for (course, version) in settings_versions {
            overlay.insert(settings_version_key(course), version.to_be_bytes().to_vec());
        }
        // Aggregate rows are written once per batch, however many records touched them.
        for ((stream, aggregate), sequence) in aggregates {
            overlay.insert(
                aggregate_key(stream, aggregate),
                encode_aggregate(&sequence),
            );
            report.aggregates.insert((stream, aggregate), sequence);
        }
        for (topic, partition, offset) in positions {
            overlay.insert(
                position_key(topic, *partition),
                offset.to_be_bytes().to_vec(),
            );
        }
        Ok(StagedBatch {
            overlay,
            ecosystems: self.ecosystems.clone(),
            n_records: records.len(),
            report,
        })
    }

    /// A deterministic digest of the derived state: every row except stream positions and
    /// wall-clock gap times, in key order. Equal logs give equal hashes, however batched.
    pub fn state_hash(&self) -> Result<String, ProjectionError> {
        self.write_back.checkpoint(&self.tree)?;
        let mut hasher = Sha256::new();
        hash_tree_into(&self.tree, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    }
}

/// One batch being staged: the overlay, the aggregates it touched, and the report.
struct Staging<'t> {
    ecosystems: EcosystemCache,
    overlay: Overlay<'t>,
    aggregates: HashMap<(StreamKind, Uuid), AggregateSequence>,
    /// Per course, the `settings_version` of the last event applied in this batch.
    settings_versions: HashMap<Uuid, i64>,
    report: BatchReport,
    now_micros: i64,
}

impl<'t> Staging<'t> {
    fn state(&mut self) -> SledState<'_, 't> {
        SledState::with_cache(&mut self.overlay, self.ecosystems.clone())
    }

    fn aggregate(
        &mut self,
        stream: StreamKind,
        aggregate: Uuid,
    ) -> Result<AggregateSequence, ProjectionError> {
        if let Some(sequence) = self.aggregates.get(&(stream, aggregate)) {
            return Ok(*sequence);
        }
        match self.overlay.get(&aggregate_key(stream, aggregate))? {
            Some(bytes) => decode_aggregate(&bytes),
            None => Ok(AggregateSequence::default()),
        }
    }

    fn stage_record(&mut self, record: &StateRecord<'_>) -> Result<RecordOutcome, ProjectionError> {
        let stream = record.stream();
        let (aggregate, seq, slot) = record.slot();

        // Preparations count from receipt, even behind a gap (docs/design/scheduler.md §3.2).
        let mut prepared: Option<PreparationUuid> = None;
        if let StateRecord::Course { event, .. } = record {
            if let CoursePayload::PrepareCourseEcosystem(prepare) = &event.payload {
                register_preparation(&mut self.state(), prepare).map_err(state_error)?;
                prepared = Some(prepare.preparation_uuid);
            }
        }

        let state = self.aggregate(stream, aggregate)?;
        let received = {
            let pending = PendingRows {
                overlay: &self.overlay,
                stream,
                aggregate,
                none_pending: state.n_pending == 0,
            };
            receive(
                &state,
                &pending,
                identities_not_kept,
                Incoming {
                    sequence_number: seq,
                    slot,
                },
                self.now_micros,
            )
        };
        for change in &received.pending_changes {
            match change {
                PendingChange::Put {
                    sequence_number,
                    slot,
                } => self.overlay.insert(
                    pending_key(stream, aggregate, *sequence_number),
                    encode_slot(slot),
                ),
                PendingChange::Remove { sequence_number } => {
                    self.overlay
                        .remove(pending_key(stream, aggregate, *sequence_number))
                }
            }
        }
        let mut next_state = received.state;
        let outcome = match received.outcome {
            Outcome::Applied(run) => {
                let released = run.len() - 1;
                self.apply_run(record, stream, aggregate, run, &mut next_state)?;
                RecordOutcome::Applied { released }
            }
            Outcome::Parked => RecordOutcome::Parked,
            Outcome::Duplicate => RecordOutcome::Duplicate,
            Outcome::Conflict { taken_by } => RecordOutcome::Conflict { taken_by },
        };
        self.aggregates.insert((stream, aggregate), next_state);

        // A course waiting for this preparation resumes now.
        if let Some(preparation) = prepared {
            self.resume_waiting(aggregate, preparation)?;
        }
        Ok(outcome)
    }

    /// Applies a released run; stops at an update whose preparation is unknown and parks
    /// it (and the rest of the run) again, marking the course as waiting.
    fn apply_run(
        &mut self,
        record: &StateRecord<'_>,
        stream: StreamKind,
        aggregate: Uuid,
        run: Vec<Sequenced<Raw<'_>>>,
        state: &mut AggregateSequence,
    ) -> Result<(), ProjectionError> {
        let mut run = run.into_iter();
        while let Some(item) = run.next() {
            match stream {
                StreamKind::Course => {
                    let decoded;
                    let event = match record {
                        StateRecord::Course { event, .. }
                            if event.meta.sequence_number == item.sequence_number =>
                        {
                            *event
                        }
                        _ => {
                            decoded = decode_course_event(&item.event).map_err(|error| {
                                ProjectionError::Corrupt {
                                    detail: format!(
                                        "a parked course event no longer decodes: {error}"
                                    ),
                                }
                            })?;
                            &decoded
                        }
                    };
                    match apply_course_event(&mut self.state(), event).map_err(state_error)? {
                        Applied::Done(effects) => {
                            self.settings_versions
                                .insert(aggregate, event.meta.settings_version);
                            *self
                                .report
                                .applied_by_type
                                .entry(event.event_type().as_str())
                                .or_default() += 1;
                            self.report.effects.extend(effects);
                        }
                        Applied::WaitForPreparation(preparation) => {
                            self.report.unknown_preparation_blocks += 1;
                            self.overlay
                                .insert(waiting_key(aggregate), preparation.0.as_bytes().to_vec());
                            let mut parked = vec![item];
                            parked.extend(run.by_ref());
                            self.repark(stream, aggregate, parked, state);
                            return Ok(());
                        }
                    }
                }
                StreamKind::Ecosystem => {
                    let decoded;
                    let event = match record {
                        StateRecord::Ecosystem { event, .. }
                            if event.meta.sequence_number == item.sequence_number =>
                        {
                            *event
                        }
                        _ => {
                            decoded = decode_ecosystem_event(&item.event).map_err(|error| {
                                ProjectionError::Corrupt {
                                    detail: format!(
                                        "a parked ecosystem event no longer decodes: {error}"
                                    ),
                                }
                            })?;
                            &decoded
                        }
                    };
                    let effects =
                        apply_ecosystem_event(&mut self.state(), event).map_err(state_error)?;
                    *self
                        .report
                        .applied_by_type
                        .entry(event.event_type().as_str())
                        .or_default() += 1;
                    self.report.effects.extend(effects);
                }
            }
        }
        Ok(())
    }

    /// Puts a run back into pending: the first as a blocking (opaque-like) entry, so that
    /// the course waits at it exactly as at a gap.
    fn repark(
        &mut self,
        stream: StreamKind,
        aggregate: Uuid,
        parked: Vec<Sequenced<Raw<'_>>>,
        state: &mut AggregateSequence,
    ) {
        let first = parked[0].sequence_number;
        let mut highest = state.highest_pending;
        for (idx, item) in parked.into_iter().enumerate() {
            let slot = if idx == 0 {
                Slot::Opaque {
                    event_uuid: item.event_uuid,
                    raw: item.event.into_owned(),
                }
            } else {
                Slot::Event {
                    event_uuid: item.event_uuid,
                    event: item.event,
                    covers_through: item.covers_through,
                }
            };
            highest = Some(highest.map_or(item.sequence_number, |h| h.max(item.sequence_number)));
            self.overlay.insert(
                pending_key(stream, aggregate, item.sequence_number),
                encode_slot(&slot),
            );
            state.n_pending += 1;
        }
        state.n_opaque += 1;
        state.next_seq = first;
        state.highest_pending = highest;
        state.first_pending_at_micros.get_or_insert(self.now_micros);
    }

    fn resume_waiting(
        &mut self,
        course: Uuid,
        preparation: PreparationUuid,
    ) -> Result<(), ProjectionError> {
        let Some(waiting_for) = self.overlay.get(&waiting_key(course))? else {
            return Ok(());
        };
        if waiting_for != preparation.0.as_bytes() {
            return Ok(());
        }
        self.overlay.remove(waiting_key(course));
        let state = self.aggregate(StreamKind::Course, course)?;
        let Some(Slot::Opaque { raw, .. }) = PendingView::<Raw<'static>>::get(
            &PendingRows {
                overlay: &self.overlay,
                stream: StreamKind::Course,
                aggregate: course,
                none_pending: false,
            },
            state.next_seq,
        ) else {
            return Ok(());
        };
        let event = decode_course_event(&raw).map_err(|error| ProjectionError::Corrupt {
            detail: format!("a waiting course event no longer decodes: {error}"),
        })?;
        // Offer it again as a decodable record: the sequencer releases it and the run
        // parked behind it.
        self.stage_record(&StateRecord::Course {
            event: &event,
            raw: &raw,
        })?;
        Ok(())
    }
}

/// Feeds every row of a state tree into `hasher` (see [`StateProjection::state_hash`]).
pub fn hash_tree_into(tree: &sled::Tree, hasher: &mut Sha256) -> Result<(), ProjectionError> {
    for row in tree.iter() {
        let (key, value) = row?;
        if matches!(key.first(), Some(&TAG_POSITION) | Some(&TAG_HOOK)) {
            continue;
        }
        let mut value = value.to_vec();
        if key.first() == Some(&TAG_AGGREGATE) && value.len() == AGGREGATE_LEN {
            value[FIRST_PENDING_AT].fill(0);
        }
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(&key);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(&value);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
