//! The event-log projection: every course and ecosystem event by slot, identities,
//! metadata numbers, gaps and the "known" sets the read API answers from; and the stored
//! results, typed (`event_log::results`).
//!
//! It is both the reader role's projection and the writer's index (docs/design/api.md §3.2).
//! Only consumers of the topics write it: the writer waits until they have applied what
//! it delivered, so the index is always what the log says. Re-applying a record is
//! harmless, because application is keyed by slot and identity.
//!
//! Unlike the business projections, this one does not wait for gaps: it stores every
//! event it receives at its slot, first in log order wins, and derives the contiguous
//! prefix and the open gaps from what is present.

use std::sync::Arc;

use biglearn_domain::events::{
    CourseEvent, CoursePayload, EcosystemEvent, EcosystemPayload, NoOpReason, StreamKind,
};
use biglearn_domain::ids::{
    BookContainerUuid, CourseUuid, EcosystemUuid, EventUuid, PreparationUuid, SequenceNumber,
};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::overlay::{CheckpointPolicy, Overlay, WriteBack};
use crate::writer_index::WriterIndex;

mod results;
pub use results::ResultRow;

/// Rows of a read, in key order.
type Rows<'a> = Box<dyn DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), sled::Error>> + 'a>;
use crate::ProjectionError;

const TAG_POSITION: u8 = b'P';
const TAG_EVENT: u8 = b'E';
/// Identity rows of older builds (identity → slot), dropped at open: the identities live in
/// the writer's index in memory, loaded from the event rows.
const TAG_IDENTITY: u8 = b'I';
const TAG_AGGREGATE: u8 = b'A';
const TAG_METADATA: u8 = b'M';
const TAG_KNOWN: u8 = b'K';
const TAG_BOOK_CONTAINER: u8 = b'B';
const TAG_PREPARATION: u8 = b'R';
const TAG_ECOSYSTEM_UPDATE: u8 = b'U';
/// Slots covered by a range `no_op` (docs/design/api.md D13): one row per run of covered slots,
/// keyed by the run's first slot, holding its last slot and the no_op's identity.
const TAG_COVERED: u8 = b'G';
/// Flag on the no_op-reason byte of an event row: 8 bytes of `covers_through` follow it.
const COVERS_FLAG: u8 = 0x80;

/// Things whose existence the read API reports (`*_unknown` statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnownKind {
    /// Appeared in any `create_update_assignment`.
    Assignment = 1,
    /// Appeared in any roster of any course.
    Student = 2,
    /// Appeared in any roster.
    CourseContainer = 3,
    /// Has a `create_ecosystem`.
    Ecosystem = 4,
    /// Has a `create_course`.
    Course = 5,
    /// Has a materialized SPARFA model.
    EcosystemWithModel = 6,
}

fn stream_byte(stream: StreamKind) -> u8 {
    match stream {
        StreamKind::Course => b'c',
        StreamKind::Ecosystem => b'e',
    }
}

/// One stored event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    pub event_uuid: EventUuid,
    /// The event type name; for an opaque (undecodable) record, the header's name.
    pub event_type: String,
    /// The payload as `event_data` JSON text; `None` for an opaque record.
    pub event_data: Option<String>,
    /// Set for `no_op` events.
    pub no_op_reason: Option<NoOpReason>,
    /// Set for a range `no_op`: the last slot it covers (docs/design/api.md D13).
    pub covers_through: Option<SequenceNumber>,
}

/// Where an identity lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRow {
    pub aggregate: Uuid,
    pub sequence_number: SequenceNumber,
    pub event_type: String,
    pub no_op_reason: Option<NoOpReason>,
}

/// Per-aggregate bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AggregateRow {
    /// All sequence numbers below this one are present.
    pub next_seq: i64,
    /// The highest sequence number present, or -1.
    pub max_seq: i64,
    /// How many slots are present.
    pub n_present: i64,
    /// When the current gap was first observed (micros), 0 if there is none.
    pub blocked_since_micros: i64,
    /// The aggregate's metadata sequence number, -1 until its create event is present.
    pub metadata_sequence_number: i64,
}

impl AggregateRow {
    const LEN: usize = 40;

    fn new() -> AggregateRow {
        AggregateRow {
            next_seq: 0,
            max_seq: -1,
            n_present: 0,
            blocked_since_micros: 0,
            metadata_sequence_number: -1,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(Self::LEN);
        for field in [
            self.next_seq,
            self.max_seq,
            self.n_present,
            self.blocked_since_micros,
            self.metadata_sequence_number,
        ] {
            bytes.extend_from_slice(&field.to_be_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<AggregateRow> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let field = |idx: usize| -> Option<i64> {
            Some(i64::from_be_bytes(
                bytes[idx * 8..idx * 8 + 8].try_into().ok()?,
            ))
        };
        Some(AggregateRow {
            next_seq: field(0)?,
            max_seq: field(1)?,
            n_present: field(2)?,
            blocked_since_micros: field(3)?,
            metadata_sequence_number: field(4)?,
        })
    }

    /// Whether a gap holds this aggregate back.
    pub fn has_gap(&self) -> bool {
        self.max_seq >= self.next_seq
    }
}

/// One open gap, for `/admin/list_sequence_gaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapRow {
    pub aggregate: Uuid,
    pub first_missing: i64,
    pub missing_count: i64,
    pub highest_received: i64,
    pub blocked_since_micros: i64,
}

/// One entry of a metadata list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataRow {
    pub metadata_sequence_number: i64,
    pub aggregate: Uuid,
    /// For courses: `create_course.ecosystem_uuid`.
    pub initial_ecosystem: Option<EcosystemUuid>,
}

/// What happened to one event offered to the projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Stored at its slot.
    Stored,
    /// The same identity was already stored: a re-delivery.
    Duplicate,
    /// A different identity holds the slot (split-brain); the first in log order wins.
    SlotConflict { taken_by: EventUuid },
}

/// An event as the projection sees it.
pub enum OfferedEvent<'e> {
    Course(&'e CourseEvent),
    Ecosystem(&'e EcosystemEvent),
    /// Undecodable, but its routing headers are readable: it occupies its slot.
    Opaque {
        stream: StreamKind,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        event_uuid: EventUuid,
        event_type: String,
    },
}

impl OfferedEvent<'_> {
    /// The stream kind of this event.
    pub fn stream(&self) -> StreamKind {
        match self {
            OfferedEvent::Course(_) => StreamKind::Course,
            OfferedEvent::Ecosystem(_) => StreamKind::Ecosystem,
            OfferedEvent::Opaque { stream, .. } => *stream,
        }
    }

    /// The row stored at the event's slot.
    fn row(&self) -> EventRow {
        match self {
            OfferedEvent::Course(event) => EventRow {
                event_uuid: event.meta.event_uuid,
                event_type: event.event_type().as_str().to_owned(),
                event_data: Some(event.payload.event_data_text()),
                no_op_reason: match &event.payload {
                    CoursePayload::NoOp(no_op) => Some(no_op.reason),
                    _ => None,
                },
                covers_through: match &event.payload {
                    CoursePayload::NoOp(no_op) => no_op.covers_through(event.meta.sequence_number),
                    _ => None,
                },
            },
            OfferedEvent::Ecosystem(event) => EventRow {
                event_uuid: event.meta.event_uuid,
                event_type: event.event_type().as_str().to_owned(),
                event_data: Some(event.payload.to_event_data().to_string()),
                no_op_reason: match &event.payload {
                    EcosystemPayload::NoOp(no_op) => Some(no_op.reason),
                    _ => None,
                },
                covers_through: match &event.payload {
                    EcosystemPayload::NoOp(no_op) => {
                        no_op.covers_through(event.meta.sequence_number)
                    }
                    _ => None,
                },
            },
            OfferedEvent::Opaque {
                event_uuid,
                event_type,
                ..
            } => EventRow {
                event_uuid: *event_uuid,
                event_type: event_type.clone(),
                event_data: None,
                no_op_reason: None,
                covers_through: None,
            },
        }
    }

    /// The slot this event claims and its identity.
    pub fn slot(&self) -> (Uuid, SequenceNumber, EventUuid) {
        match self {
            OfferedEvent::Course(event) => (
                event.course_uuid.0,
                event.meta.sequence_number,
                event.meta.event_uuid,
            ),
            OfferedEvent::Ecosystem(event) => (
                event.ecosystem_uuid.0,
                event.meta.sequence_number,
                event.meta.event_uuid,
            ),
            OfferedEvent::Opaque {
                aggregate,
                sequence_number,
                event_uuid,
                ..
            } => (*aggregate, *sequence_number, *event_uuid),
        }
    }
}

/// The event-log projection over one sled tree.
#[derive(Clone)]
pub struct EventLog {
    tree: sled::Tree,
    /// Serialises read-modify-write of rows between the consumers sharing this tree
    /// (course events, ecosystem events, results) and result pushes.
    apply_lock: Arc<Mutex<()>>,
    write_back: WriteBack,
    /// The writer's index in memory, loaded from this tree at its first use and kept
    /// up to date by every later `apply` (under `apply_lock`, so that none is missed).
    writer_index: Arc<std::sync::OnceLock<Arc<Mutex<WriterIndex>>>>,
}

fn slot_key(stream: StreamKind, aggregate: Uuid, seq: SequenceNumber) -> Vec<u8> {
    let mut key = Vec::with_capacity(26);
    key.push(TAG_EVENT);
    key.push(stream_byte(stream));
    key.extend_from_slice(aggregate.as_bytes());
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

fn covered_key(stream: StreamKind, aggregate: Uuid, first: SequenceNumber) -> Vec<u8> {
    let mut key = slot_key(stream, aggregate, first);
    key[0] = TAG_COVERED;
    key
}

fn aggregate_key(stream: StreamKind, aggregate: Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.push(TAG_AGGREGATE);
    key.push(stream_byte(stream));
    key.extend_from_slice(aggregate.as_bytes());
    key
}

fn metadata_key(stream: StreamKind, number: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10);
    key.push(TAG_METADATA);
    key.push(stream_byte(stream));
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn known_key(kind: KnownKind, uuid: Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.push(TAG_KNOWN);
    key.push(kind as u8);
    key.extend_from_slice(uuid.as_bytes());
    key
}

fn position_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 6);
    key.push(TAG_POSITION);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn course_key(tag: u8, course: CourseUuid, suffix: Option<Uuid>) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(tag);
    key.extend_from_slice(course.0.as_bytes());
    if let Some(suffix) = suffix {
        key.extend_from_slice(suffix.as_bytes());
    }
    key
}

fn encode_event_row(row: &EventRow) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32 + row.event_data.as_ref().map_or(0, String::len));
    bytes.extend_from_slice(row.event_uuid.0.as_bytes());
    match row.covers_through {
        Some(through) => {
            bytes.push(no_op_reason_byte(row.no_op_reason) | COVERS_FLAG);
            bytes.extend_from_slice(&through.0.to_be_bytes());
        }
        None => bytes.push(no_op_reason_byte(row.no_op_reason)),
    }
    bytes.push(row.event_type.len() as u8);
    bytes.extend_from_slice(row.event_type.as_bytes());
    match &row.event_data {
        Some(data) => {
            bytes.push(1);
            bytes.extend_from_slice(data.as_bytes());
        }
        None => bytes.push(0),
    }
    bytes
}

fn no_op_reason_byte(reason: Option<NoOpReason>) -> u8 {
    match reason {
        None => 0,
        Some(NoOpReason::PreparationUnknown) => 1,
        Some(NoOpReason::AdminFill) => 2,
        Some(NoOpReason::Imported) => 3,
    }
}

fn decode_no_op_reason(byte: u8) -> Option<NoOpReason> {
    match byte {
        1 => Some(NoOpReason::PreparationUnknown),
        2 => Some(NoOpReason::AdminFill),
        3 => Some(NoOpReason::Imported),
        _ => None,
    }
}

fn decode_event_row(whole: &[u8]) -> Option<EventRow> {
    let event_uuid = EventUuid(Uuid::from_slice(whole.get(0..16)?).ok()?);
    let reason_byte = *whole.get(16)?;
    let no_op_reason = decode_no_op_reason(reason_byte & !COVERS_FLAG);
    // Rows of range no_ops carry `covers_through` after the reason byte; the rest of the
    // layout is the same, shifted by 8.
    let (covers_through, bytes) = if reason_byte & COVERS_FLAG != 0 {
        let through = i64::from_be_bytes(whole.get(17..25)?.try_into().ok()?);
        (Some(SequenceNumber(through)), whole.get(8..)?)
    } else {
        (None, whole)
    };
    let type_len = usize::from(*bytes.get(17)?);
    let event_type = std::str::from_utf8(bytes.get(18..18 + type_len)?)
        .ok()?
        .to_owned();
    let has_data = *bytes.get(18 + type_len)?;
    let event_data = if has_data == 1 {
        Some(
            std::str::from_utf8(bytes.get(19 + type_len..)?)
                .ok()?
                .to_owned(),
        )
    } else {
        None
    };
    Some(EventRow {
        event_uuid,
        event_type,
        event_data,
        no_op_reason,
        covers_through,
    })
}

/// A run of slots covered by a range no_op: `(first, last, identity)`.
fn decode_covered(key: &[u8], value: &[u8]) -> Option<(SequenceNumber, SequenceNumber, EventUuid)> {
    let first = i64::from_be_bytes(key.get(18..26)?.try_into().ok()?);
    let last = i64::from_be_bytes(value.get(0..8)?.try_into().ok()?);
    let event_uuid = EventUuid(Uuid::from_slice(value.get(8..24)?).ok()?);
    Some((SequenceNumber(first), SequenceNumber(last), event_uuid))
}

fn encode_covered(last: SequenceNumber, event_uuid: EventUuid) -> Vec<u8> {
    let mut value = last.0.to_be_bytes().to_vec();
    value.extend_from_slice(event_uuid.0.as_bytes());
    value
}

/// The covered run holding `seq`, if any: runs never overlap, so it is the last run that
/// starts at or below `seq`, if it reaches it.
fn covering_run(
    overlay: &Overlay<'_>,
    stream: StreamKind,
    aggregate: Uuid,
    seq: SequenceNumber,
) -> Result<Option<(SequenceNumber, SequenceNumber, EventUuid)>, ProjectionError> {
    let start = covered_key(stream, aggregate, SequenceNumber(0));
    let end = covered_key(stream, aggregate, seq);
    match overlay.last_in(&start, &end)? {
        Some((key, value)) => {
            let run = decode_covered(&key, &value).ok_or_else(|| corrupt("covered run"))?;
            Ok((run.1 >= seq).then_some(run))
        }
        None => Ok(None),
    }
}

/// The bookkeeping row of an aggregate (an empty one, `max_seq` −1, before its first event).
fn aggregate_row(
    overlay: &Overlay<'_>,
    stream: StreamKind,
    aggregate: Uuid,
) -> Result<AggregateRow, ProjectionError> {
    match overlay.get(&aggregate_key(stream, aggregate))? {
        Some(bytes) => AggregateRow::decode(&bytes).ok_or_else(|| corrupt("aggregate")),
        None => Ok(AggregateRow::new()),
    }
}

/// Removes an older build's identity rows, in batches (one row per event: a big log's worth
/// is more than one batch should hold). Returns how many there were.
fn drop_identity_rows(tree: &sled::Tree) -> Result<usize, ProjectionError> {
    let mut dropped = 0;
    loop {
        let keys: Vec<sled::IVec> = tree
            .scan_prefix([TAG_IDENTITY])
            .keys()
            .take(100_000)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            break;
        }
        let mut batch = sled::Batch::default();
        dropped += keys.len();
        for key in keys {
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
    }
    if dropped > 0 {
        tracing::info!(
            rows = dropped,
            "Dropped the identity rows of an older build: identities are indexed in memory from the event rows."
        );
    }
    Ok(dropped)
}

/// The big-endian i64 at `at` of a stored row.
fn read_i64(bytes: &[u8], at: usize, what: &str) -> Result<i64, ProjectionError> {
    bytes
        .get(at..at + 8)
        .and_then(|slice| slice.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| corrupt(what))
}

/// The 16-byte uuid at `at` of a stored row.
fn read_uuid(bytes: &[u8], at: usize, what: &str) -> Result<Uuid, ProjectionError> {
    bytes
        .get(at..at + 16)
        .and_then(|slice| Uuid::from_slice(slice).ok())
        .ok_or_else(|| corrupt(what))
}

fn corrupt(what: &str) -> ProjectionError {
    ProjectionError::Corrupt {
        detail: format!("undecodable {what} row in the event-log projection"),
    }
}

impl EventLog {
    /// Opens (or creates) the projection in tree `name` of `db`.
    pub fn open(db: &sled::Db, name: &str) -> Result<EventLog, ProjectionError> {
        let tree = db.open_tree(name)?;
        results::convert_json_results(&tree)?;
        drop_identity_rows(&tree)?;
        Ok(EventLog {
            tree,
            apply_lock: Arc::new(Mutex::new(())),
            write_back: WriteBack::default(),
            writer_index: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// The writer's index (see [`crate::writer_index`]), loaded at the first call (or the
    /// first batch applied) from the event and covered-run rows (a scan of one row per
    /// event), then kept up to date by every record this projection applies. It is also the
    /// projection's index by identity.
    pub fn writer_index(&self) -> Result<Arc<Mutex<WriterIndex>>, ProjectionError> {
        if let Some(index) = self.writer_index.get() {
            return Ok(index.clone());
        }
        // Under the apply lock no batch lands between the scan and the index taking over.
        let _guard = self.apply_lock.lock();
        self.index_under_apply_lock()
    }

    /// [`EventLog::writer_index`] for a caller holding the apply lock.
    fn index_under_apply_lock(&self) -> Result<Arc<Mutex<WriterIndex>>, ProjectionError> {
        if let Some(index) = self.writer_index.get() {
            return Ok(index.clone());
        }
        let mut index = WriterIndex::new();
        for row in self.rows_with_prefix(&[TAG_EVENT])? {
            let (key, value) = row?;
            let stream = match key.get(1) {
                Some(b'c') => StreamKind::Course,
                Some(b'e') => StreamKind::Ecosystem,
                _ => return Err(corrupt("event key")),
            };
            let aggregate = read_uuid(&key, 2, "event key")?;
            let seq = SequenceNumber(read_i64(&key, 18, "event key")?);
            let event_uuid = EventUuid(read_uuid(&value, 0, "event")?);
            index.record_applied(stream, aggregate, seq, None, event_uuid);
        }
        for row in self.rows_with_prefix(&[TAG_COVERED])? {
            let (key, value) = row?;
            let stream = match key.get(1) {
                Some(b'c') => StreamKind::Course,
                Some(b'e') => StreamKind::Ecosystem,
                _ => return Err(corrupt("covered run key")),
            };
            let aggregate = read_uuid(&key, 2, "covered run key")?;
            let (first, last, _) =
                decode_covered(&key, &value).ok_or_else(|| corrupt("covered run"))?;
            index.take(stream, aggregate, first, Some(last));
        }
        for stream in [StreamKind::Course, StreamKind::Ecosystem] {
            let next = self.next_metadata_sequence_number(stream)?;
            if next > 0 {
                index.note_metadata_number(stream, next - 1);
            }
        }
        let index = Arc::new(Mutex::new(index));
        let _ = self.writer_index.set(index.clone());
        Ok(index)
    }

    /// The underlying tree (for state hashing and size metrics).
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

    /// Reads over sled and what the write-back holds.
    fn view(&self) -> Overlay<'_> {
        Overlay::over(&self.tree, &self.write_back)
    }

    /// Rows with `start <= key <= end` in key order: streamed from sled, or merged with
    /// the write-back while it holds rows.
    fn rows_in(&self, start: &[u8], end: &[u8]) -> Result<Rows<'_>, ProjectionError> {
        if !self.write_back.is_active() {
            return Ok(Box::new(self.tree.range(start..=end).map(|row| {
                row.map(|(key, value)| (key.to_vec(), value.to_vec()))
            })));
        }
        Ok(Box::new(self.view().range(start, end)?.into_iter().map(Ok)))
    }

    /// Rows under `prefix` in key order (see [`EventLog::rows_in`]).
    fn rows_with_prefix(&self, prefix: &[u8]) -> Result<Rows<'_>, ProjectionError> {
        if !self.write_back.is_active() {
            return Ok(Box::new(self.tree.scan_prefix(prefix).map(|row| {
                row.map(|(key, value)| (key.to_vec(), value.to_vec()))
            })));
        }
        Ok(Box::new(
            self.view().scan_prefix(prefix)?.into_iter().map(Ok),
        ))
    }

    /// Applies events and stream positions as one atomic batch.
    ///
    /// `positions` are `(topic, partition, next_offset)` to store with the state; the
    /// writer's direct application passes none.
    pub fn apply(
        &self,
        events: &[OfferedEvent<'_>],
        positions: &[(&str, i32, i64)],
        now_micros: i64,
    ) -> Result<Vec<Offered>, ProjectionError> {
        let _guard = self.apply_lock.lock();
        let index = self.index_under_apply_lock()?;
        let mut overlay = self.view();
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(self.offer(&mut overlay, &index, event, now_micros)?);
        }
        for (topic, partition, next_offset) in positions {
            overlay.insert(
                position_key(topic, *partition),
                next_offset.to_be_bytes().to_vec(),
            );
        }
        overlay.commit_records(events.len())?;
        Ok(outcomes)
    }

    fn offer(
        &self,
        overlay: &mut Overlay<'_>,
        index: &Mutex<WriterIndex>,
        event: &OfferedEvent<'_>,
        now_micros: i64,
    ) -> Result<Offered, ProjectionError> {
        let stream = event.stream();
        let (aggregate, meta_seq, event_uuid) = event.slot();
        let slot = slot_key(stream, aggregate, meta_seq);
        let aggregate_row = aggregate_row(overlay, stream, aggregate)?;
        // The common case, the next event of an aggregate, lies above every slot it holds
        // (`max_seq` counts events and ranges alike): it can be neither a re-delivery nor
        // inside a range, so neither is looked up.
        let above_all = meta_seq.0 > aggregate_row.max_seq;
        // A re-delivery is decided on the slot before rendering any JSON.
        let existing = if above_all { None } else { overlay.get(&slot)? };
        if let Some(existing) = existing {
            let existing = decode_event_row(&existing).ok_or_else(|| corrupt("event"))?;
            if existing.event_uuid == event_uuid {
                // An opaque entry is replaced once a build that can decode it sees it again.
                if existing.event_data.is_none() && !matches!(event, OfferedEvent::Opaque { .. }) {
                    let row = event.row();
                    overlay.insert(slot, encode_event_row(&row));
                    // A range no_op decoded only now covers its range now.
                    if let Some(through) = row.covers_through {
                        index.lock().record_applied(
                            stream,
                            aggregate,
                            meta_seq,
                            Some(through),
                            event_uuid,
                        );
                        let n_covered =
                            Self::cover(overlay, stream, aggregate, meta_seq, through, event_uuid)?;
                        Self::account(
                            overlay,
                            stream,
                            aggregate,
                            aggregate_row,
                            meta_seq,
                            &row,
                            n_covered,
                            0,
                            now_micros,
                        )?;
                    }
                    self.index_effects(overlay, event)?;
                }
                return Ok(Offered::Duplicate);
            }
            return Ok(Offered::SlotConflict {
                taken_by: existing.event_uuid,
            });
        }
        // A slot covered by a range no_op is held by it (a later event there is a conflict).
        let holder = if above_all {
            None
        } else {
            covering_run(overlay, stream, aggregate, meta_seq)?
        };
        if let Some((_, _, holder)) = holder {
            return Ok(if holder == event_uuid {
                Offered::Duplicate
            } else {
                Offered::SlotConflict { taken_by: holder }
            });
        }
        let row = event.row();
        {
            // One lock per new event: the writer's request path takes it too.
            let mut index = index.lock();
            // The identity already stored at another slot: first write wins. (At this very
            // slot it is a batch applied again after its commit failed: stored again.)
            if index
                .applied_slot(stream, event_uuid)
                .is_some_and(|at| at != (aggregate, meta_seq))
            {
                return Ok(Offered::Duplicate);
            }
            index.record_applied(stream, aggregate, meta_seq, row.covers_through, event_uuid);
        }
        overlay.insert(slot, encode_event_row(&row));
        let n_covered = match row.covers_through {
            Some(through) => {
                Self::cover(overlay, stream, aggregate, meta_seq, through, event_uuid)?
            }
            None => 0,
        };

        let mut state = Self::account(
            overlay,
            stream,
            aggregate,
            aggregate_row,
            meta_seq,
            &row,
            n_covered,
            1,
            now_micros,
        )?;
        let metadata = match event {
            OfferedEvent::Course(event) => event.meta.metadata_sequence_number,
            OfferedEvent::Ecosystem(event) => event.meta.metadata_sequence_number,
            OfferedEvent::Opaque { .. } => None,
        };
        if let Some(number) = metadata {
            if state.metadata_sequence_number < 0 {
                state.metadata_sequence_number = number;
                index.lock().note_metadata_number(stream, number);
                let mut value = aggregate.as_bytes().to_vec();
                if let OfferedEvent::Course(CourseEvent {
                    payload: CoursePayload::CreateCourse(create),
                    ..
                }) = event
                {
                    value.extend_from_slice(create.ecosystem_uuid.0.as_bytes());
                }
                overlay.insert(metadata_key(stream, number), value);
            }
        }
        overlay.insert(aggregate_key(stream, aggregate), state.encode());
        self.index_effects(overlay, event)?;
        Ok(Offered::Stored)
    }

    /// Counts `n_slot + n_covered` new present slots of `row` (stored at `meta_seq`) in the
    /// aggregate's bookkeeping `state` (as read before the row was stored), advances its
    /// contiguous prefix and gap time, and stores the row (also returned, for the caller to
    /// amend).
    #[allow(clippy::too_many_arguments)]
    fn account(
        overlay: &mut Overlay<'_>,
        stream: StreamKind,
        aggregate: Uuid,
        mut state: AggregateRow,
        meta_seq: SequenceNumber,
        row: &EventRow,
        n_covered: i64,
        n_slot: i64,
        now_micros: i64,
    ) -> Result<AggregateRow, ProjectionError> {
        let aggregate_key = aggregate_key(stream, aggregate);
        state.n_present += n_slot + n_covered;
        state.max_seq = state
            .max_seq
            .max(row.covers_through.unwrap_or(meta_seq).0.max(meta_seq.0));
        // Bounded by the rows present: a covered run is crossed in one step; nothing is
        // held above `max_seq`, so the prefix stops there without a lookup.
        loop {
            let next = SequenceNumber(state.next_seq);
            if next.0 > state.max_seq {
                break;
            }
            if overlay.contains(&slot_key(stream, aggregate, next))? {
                state.next_seq += 1;
            } else if let Some(value) = overlay.get(&covered_key(stream, aggregate, next))? {
                let last = read_i64(&value, 0, "covered run")?;
                state.next_seq = last.saturating_add(1);
            } else {
                break;
            }
        }
        if state.has_gap() {
            if state.blocked_since_micros == 0 {
                state.blocked_since_micros = now_micros.max(1);
            }
        } else {
            state.blocked_since_micros = 0;
        }
        overlay.insert(aggregate_key, state.encode());
        Ok(state)
    }

    /// Records the slots of `(at, through]` that no row holds as covered by the range no_op
    /// `event_uuid` standing at `at`: one row per free run, so the work is bounded by the
    /// rows inside the range, never its size. Returns how many slots it covered.
    fn cover(
        overlay: &mut Overlay<'_>,
        stream: StreamKind,
        aggregate: Uuid,
        at: SequenceNumber,
        through: SequenceNumber,
        event_uuid: EventUuid,
    ) -> Result<i64, ProjectionError> {
        let first = SequenceNumber(at.0.saturating_add(1));
        if through < first {
            return Ok(0);
        }
        // What already holds slots inside the range: events, and runs of other ranges.
        let mut held: Vec<(i64, i64)> = Vec::new();
        for (key, _) in overlay.range(
            &slot_key(stream, aggregate, first),
            &slot_key(stream, aggregate, through),
        )? {
            let seq = read_i64(&key, 18, "slot key")?;
            held.push((seq, seq));
        }
        for (key, value) in overlay.range(
            &covered_key(stream, aggregate, first),
            &covered_key(stream, aggregate, through),
        )? {
            let (run_first, run_last, _) =
                decode_covered(&key, &value).ok_or_else(|| corrupt("covered run"))?;
            held.push((run_first.0, run_last.0.min(through.0)));
        }
        held.sort_unstable();
        let mut n_covered = 0;
        let mut free_from = first.0;
        let mut add_run = |overlay: &mut Overlay<'_>, from: i64, to: i64| {
            if from <= to {
                overlay.insert(
                    covered_key(stream, aggregate, SequenceNumber(from)),
                    encode_covered(SequenceNumber(to), event_uuid),
                );
                n_covered += to - from + 1;
            }
        };
        for (held_first, held_last) in held {
            add_run(overlay, free_from, held_first - 1);
            free_from = free_from.max(held_last.saturating_add(1));
        }
        add_run(overlay, free_from, through.0);
        Ok(n_covered)
    }

    /// Updates the known sets and course bookkeeping an event implies.
    fn index_effects(
        &self,
        overlay: &mut Overlay<'_>,
        event: &OfferedEvent<'_>,
    ) -> Result<(), ProjectionError> {
        match event {
            OfferedEvent::Course(event) => match &event.payload {
                CoursePayload::CreateCourse(create) => {
                    overlay.insert(
                        known_key(KnownKind::Course, create.course_uuid.0),
                        Vec::new(),
                    );
                }
                CoursePayload::UpdateRoster(roster) => {
                    for container in &roster.course_containers {
                        overlay.insert(
                            known_key(KnownKind::CourseContainer, container.container_uuid.0),
                            Vec::new(),
                        );
                    }
                    for student in &roster.students {
                        overlay.insert(
                            known_key(KnownKind::Student, student.student_uuid.0),
                            Vec::new(),
                        );
                    }
                }
                CoursePayload::CreateUpdateAssignment(assignment) => {
                    overlay.insert(
                        known_key(KnownKind::Assignment, assignment.assignment_uuid.0),
                        Vec::new(),
                    );
                }
                CoursePayload::PrepareCourseEcosystem(preparation) => {
                    let mut value = preparation.sequence_number.0.to_be_bytes().to_vec();
                    value.extend_from_slice(preparation.ecosystem_uuid.0.as_bytes());
                    overlay.insert(
                        course_key(
                            TAG_PREPARATION,
                            preparation.course_uuid,
                            Some(preparation.preparation_uuid.0),
                        ),
                        value,
                    );
                }
                CoursePayload::UpdateCourseEcosystem(update) => {
                    let key = course_key(TAG_ECOSYSTEM_UPDATE, update.course_uuid, None);
                    let newer = match overlay.get(&key)? {
                        Some(bytes) => {
                            let stored = read_i64(&bytes, 0, "update")?;
                            update.sequence_number.0 > stored
                        }
                        None => true,
                    };
                    if newer {
                        let mut value = update.sequence_number.0.to_be_bytes().to_vec();
                        value.extend_from_slice(update.preparation_uuid.0.as_bytes());
                        overlay.insert(key, value);
                    }
                }
                _ => {}
            },
            OfferedEvent::Ecosystem(event) => {
                if let EcosystemPayload::CreateEcosystem(create) = &event.payload {
                    overlay.insert(
                        known_key(KnownKind::Ecosystem, create.ecosystem_uuid.0),
                        Vec::new(),
                    );
                    let number = event.meta.metadata_sequence_number.unwrap_or(i64::MAX);
                    for container in &create.book.contents {
                        let key = {
                            let mut key = vec![TAG_BOOK_CONTAINER];
                            key.extend_from_slice(container.container_uuid.0.as_bytes());
                            key
                        };
                        // The ecosystem of a container is the one with the lowest metadata number.
                        let replace = match overlay.get(&key)? {
                            Some(bytes) => {
                                let stored = read_i64(&bytes, 16, "book container")?;
                                number < stored
                            }
                            None => true,
                        };
                        if replace {
                            let mut value = create.ecosystem_uuid.0.as_bytes().to_vec();
                            value.extend_from_slice(&number.to_be_bytes());
                            overlay.insert(key, value);
                        }
                    }
                }
            }
            OfferedEvent::Opaque { .. } => {}
        }
        Ok(())
    }

    /// Marks an ecosystem as having a materialized model (from `<prefix>.models`): it is
    /// "ready" from now on (docs/design/api.md §2.6, §4.5, D10). Idempotent.
    pub fn mark_model_materialized(&self, ecosystem: EcosystemUuid) -> Result<(), ProjectionError> {
        self.tree.insert(
            known_key(KnownKind::EcosystemWithModel, ecosystem.0),
            Vec::<u8>::new(),
        )?;
        Ok(())
    }

    /// Marks every ecosystem of `ecosystems` as ready in one batch, and returns how many
    /// were not marked before. A process calls it at start with every ecosystem its model
    /// store holds: readiness is derived from `<prefix>.models`, and this tree may be a
    /// fresh generation (`biglearn rebuild`) that has never seen a model.
    pub fn mark_models_materialized(
        &self,
        ecosystems: &[EcosystemUuid],
    ) -> Result<usize, ProjectionError> {
        let mut batch = sled::Batch::default();
        let mut added = 0;
        for ecosystem in ecosystems {
            let key = known_key(KnownKind::EcosystemWithModel, ecosystem.0);
            if !self.tree.contains_key(&key)? {
                batch.insert(key, Vec::<u8>::new());
                added += 1;
            }
        }
        if added > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(added)
    }

    /// Whether an ecosystem has a materialized SPARFA model ("ready", D10).
    pub fn has_materialized_model(
        &self,
        ecosystem: EcosystemUuid,
    ) -> Result<bool, ProjectionError> {
        self.is_known(KnownKind::EcosystemWithModel, ecosystem.0)
    }

    /// The stored next offset of a partition, if any.
    pub fn position(&self, topic: &str, partition: i32) -> Result<Option<i64>, ProjectionError> {
        Ok(self
            .tree
            .get(position_key(topic, partition))?
            .and_then(|bytes| bytes.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Where an identity is stored.
    pub fn identity(
        &self,
        stream: StreamKind,
        event_uuid: EventUuid,
    ) -> Result<Option<IdentityRow>, ProjectionError> {
        let slot = self.writer_index()?.lock().applied_slot(stream, event_uuid);
        let Some((aggregate, sequence_number)) = slot else {
            return Ok(None);
        };
        Ok(self
            .event(stream, aggregate, sequence_number)?
            .map(|row| IdentityRow {
                aggregate,
                sequence_number,
                event_type: row.event_type,
                no_op_reason: row.no_op_reason,
            }))
    }

    /// The event stored at a slot.
    pub fn event(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        seq: SequenceNumber,
    ) -> Result<Option<EventRow>, ProjectionError> {
        match self.view().get(&slot_key(stream, aggregate, seq))? {
            Some(bytes) => Ok(Some(
                decode_event_row(&bytes).ok_or_else(|| corrupt("event"))?,
            )),
            None => Ok(None),
        }
    }

    /// The identity holding a slot, read without decoding the rest of the row (the
    /// consumer checks every record for slot conflicts): the event stored there, or the
    /// range no_op covering it.
    pub fn slot_identity(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        seq: SequenceNumber,
    ) -> Result<Option<EventUuid>, ProjectionError> {
        let view = self.view();
        // Nothing is held above the aggregate's highest slot: one lookup for the common case.
        if seq.0 > aggregate_row(&view, stream, aggregate)?.max_seq {
            return Ok(None);
        }
        match view.get(&slot_key(stream, aggregate, seq))? {
            Some(bytes) => Ok(Some(EventUuid(read_uuid(&bytes, 0, "event")?))),
            None => Ok(self
                .covering(stream, aggregate, seq)?
                .map(|(_, _, event_uuid)| event_uuid)),
        }
    }

    /// The covered run `(first, last, range no_op identity)` holding `seq`, if a range
    /// no_op covers it (docs/design/api.md D13).
    pub fn covering(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        seq: SequenceNumber,
    ) -> Result<Option<(SequenceNumber, SequenceNumber, EventUuid)>, ProjectionError> {
        covering_run(&self.view(), stream, aggregate, seq)
    }

    /// The maximal runs of slots in `[from, to]` that nothing holds (no event, no range
    /// no_op), ascending. Reads the rows inside the range, never every slot of it.
    pub fn missing_runs(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        from: SequenceNumber,
        to: SequenceNumber,
    ) -> Result<Vec<(SequenceNumber, SequenceNumber)>, ProjectionError> {
        let overlay = self.view();
        let mut held: Vec<(i64, i64)> = Vec::new();
        if let Some((first, last, _)) = covering_run(&overlay, stream, aggregate, from)? {
            held.push((first.0, last.0));
        }
        for (key, _) in overlay.range(
            &slot_key(stream, aggregate, from),
            &slot_key(stream, aggregate, to),
        )? {
            let seq = read_i64(&key, 18, "slot key")?;
            held.push((seq, seq));
        }
        for (key, value) in overlay.range(
            &covered_key(stream, aggregate, from),
            &covered_key(stream, aggregate, to),
        )? {
            let (first, last, _) =
                decode_covered(&key, &value).ok_or_else(|| corrupt("covered run"))?;
            held.push((first.0, last.0));
        }
        held.sort_unstable();
        let mut runs = Vec::new();
        let mut free_from = from.0;
        for (held_first, held_last) in held {
            if held_first > free_from {
                runs.push((
                    SequenceNumber(free_from),
                    SequenceNumber((held_first - 1).min(to.0)),
                ));
            }
            free_from = free_from.max(held_last.saturating_add(1));
        }
        if free_from <= to.0 {
            runs.push((SequenceNumber(free_from), to));
        }
        Ok(runs)
    }

    /// The smallest `s ≥ from` that nothing holds (no event, no range no_op), crossing a
    /// covered run in one step.
    pub fn first_missing_from(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        from: SequenceNumber,
    ) -> Result<SequenceNumber, ProjectionError> {
        let overlay = self.view();
        let mut seq = from;
        loop {
            if overlay.contains(&slot_key(stream, aggregate, seq))? {
                seq = seq.next();
            } else if let Some((_, last, _)) = covering_run(&overlay, stream, aggregate, seq)? {
                seq = SequenceNumber(last.0.saturating_add(1));
            } else {
                return Ok(seq);
            }
        }
    }

    /// Events of an aggregate from `from` upward, in sequence order, at most `limit`.
    pub fn events_from(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
        from: SequenceNumber,
        limit: usize,
    ) -> Result<Vec<(SequenceNumber, EventRow)>, ProjectionError> {
        let start = slot_key(stream, aggregate, SequenceNumber(from.0.max(0)));
        let end = slot_key(stream, aggregate, SequenceNumber(i64::MAX));
        let mut rows = Vec::new();
        for entry in self.rows_in(&start, &end)? {
            if rows.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let seq = i64::from_be_bytes(key[18..26].try_into().map_err(|_| corrupt("slot key"))?);
            rows.push((
                SequenceNumber(seq),
                decode_event_row(&value).ok_or_else(|| corrupt("event"))?,
            ));
        }
        Ok(rows)
    }

    /// Per-aggregate bookkeeping.
    pub fn aggregate(
        &self,
        stream: StreamKind,
        aggregate: Uuid,
    ) -> Result<Option<AggregateRow>, ProjectionError> {
        match self.view().get(&aggregate_key(stream, aggregate))? {
            Some(bytes) => Ok(Some(
                AggregateRow::decode(&bytes).ok_or_else(|| corrupt("aggregate"))?,
            )),
            None => Ok(None),
        }
    }

    /// Metadata entries with number ≥ `offset`, ascending, at most `max`; stops before
    /// the first number not present (the contiguous prefix of docs/design/api.md §6.1) unless
    /// `skip_missing`.
    pub fn metadata_from(
        &self,
        stream: StreamKind,
        offset: i64,
        max: usize,
        skip_missing: bool,
    ) -> Result<Vec<MetadataRow>, ProjectionError> {
        let start = metadata_key(stream, offset.max(0));
        let end = metadata_key(stream, i64::MAX);
        let mut rows = Vec::new();
        let mut expected = offset.max(0);
        for entry in self.rows_in(&start, &end)? {
            if rows.len() >= max {
                break;
            }
            let (key, value) = entry?;
            let number =
                i64::from_be_bytes(key[2..10].try_into().map_err(|_| corrupt("metadata key"))?);
            if number != expected && !skip_missing {
                break;
            }
            expected = number + 1;
            let aggregate = read_uuid(&value, 0, "metadata")?;
            let initial_ecosystem = value
                .get(16..32)
                .and_then(|bytes| Uuid::from_slice(bytes).ok())
                .map(EcosystemUuid);
            rows.push(MetadataRow {
                metadata_sequence_number: number,
                aggregate,
                initial_ecosystem,
            });
        }
        Ok(rows)
    }

    /// The next metadata number of a stream kind: one more than the highest stored.
    pub fn next_metadata_sequence_number(
        &self,
        stream: StreamKind,
    ) -> Result<i64, ProjectionError> {
        let start = metadata_key(stream, 0);
        let end = metadata_key(stream, i64::MAX);
        match self.rows_in(&start, &end)?.next_back() {
            Some(entry) => {
                let (key, _) = entry?;
                Ok(
                    i64::from_be_bytes(key[2..10].try_into().map_err(|_| corrupt("metadata key"))?)
                        + 1,
                )
            }
            None => Ok(0),
        }
    }

    /// Whether something has been seen (see [`KnownKind`]).
    pub fn is_known(&self, kind: KnownKind, uuid: Uuid) -> Result<bool, ProjectionError> {
        Ok(self.view().contains(&known_key(kind, uuid))?)
    }

    /// The ecosystem of a book container: the one with the lowest metadata number.
    pub fn book_container_ecosystem(
        &self,
        book_container: BookContainerUuid,
    ) -> Result<Option<EcosystemUuid>, ProjectionError> {
        let mut key = vec![TAG_BOOK_CONTAINER];
        key.extend_from_slice(book_container.0.as_bytes());
        Ok(self
            .tree
            .get(key)?
            .and_then(|bytes| Uuid::from_slice(&bytes[..16.min(bytes.len())]).ok())
            .map(EcosystemUuid))
    }

    /// The next ecosystem and sequence number of a preparation of this course.
    pub fn preparation(
        &self,
        course: CourseUuid,
        preparation: PreparationUuid,
    ) -> Result<Option<(SequenceNumber, EcosystemUuid)>, ProjectionError> {
        match self
            .tree
            .get(course_key(TAG_PREPARATION, course, Some(preparation.0)))?
        {
            Some(bytes) => {
                let seq = read_i64(&bytes, 0, "preparation")?;
                let ecosystem = read_uuid(&bytes, 8, "preparation")?;
                Ok(Some((SequenceNumber(seq), EcosystemUuid(ecosystem))))
            }
            None => Ok(None),
        }
    }

    /// Every preparation of a course: `(preparation, sequence_number, next ecosystem)`.
    pub fn preparations(
        &self,
        course: CourseUuid,
    ) -> Result<Vec<(PreparationUuid, SequenceNumber, EcosystemUuid)>, ProjectionError> {
        let prefix = course_key(TAG_PREPARATION, course, None);
        let mut rows = Vec::new();
        for entry in self.rows_with_prefix(&prefix)? {
            let (key, bytes) = entry?;
            let preparation = read_uuid(&key, 17, "preparation")?;
            let seq = read_i64(&bytes, 0, "preparation")?;
            let ecosystem = read_uuid(&bytes, 8, "preparation")?;
            rows.push((
                PreparationUuid(preparation),
                SequenceNumber(seq),
                EcosystemUuid(ecosystem),
            ));
        }
        Ok(rows)
    }

    /// The highest-sequence `update_course_ecosystem` of a course: `(seq, preparation)`.
    pub fn last_ecosystem_update(
        &self,
        course: CourseUuid,
    ) -> Result<Option<(SequenceNumber, PreparationUuid)>, ProjectionError> {
        match self
            .tree
            .get(course_key(TAG_ECOSYSTEM_UPDATE, course, None))?
        {
            Some(bytes) => {
                let seq = read_i64(&bytes, 0, "update")?;
                let preparation = read_uuid(&bytes, 8, "update")?;
                Ok(Some((SequenceNumber(seq), PreparationUuid(preparation))))
            }
            None => Ok(None),
        }
    }

    /// Open gaps of a stream kind, oldest first, at most `limit`.
    pub fn gaps(&self, stream: StreamKind, limit: usize) -> Result<Vec<GapRow>, ProjectionError> {
        let prefix = [TAG_AGGREGATE, stream_byte(stream)];
        let mut gaps = Vec::new();
        for entry in self.rows_with_prefix(&prefix)? {
            let (key, value) = entry?;
            let row = AggregateRow::decode(&value).ok_or_else(|| corrupt("aggregate"))?;
            if !row.has_gap() {
                continue;
            }
            let aggregate = Uuid::from_slice(&key[2..18]).map_err(|_| corrupt("aggregate key"))?;
            gaps.push(GapRow {
                aggregate,
                first_missing: row.next_seq,
                missing_count: row.max_seq + 1 - row.n_present,
                highest_received: row.max_seq,
                blocked_since_micros: row.blocked_since_micros,
            });
        }
        gaps.sort_by_key(|gap| (gap.blocked_since_micros, gap.aggregate));
        gaps.truncate(limit);
        Ok(gaps)
    }
}

/// A result's version: the one type the scheduler, the results consumer and this store
/// share (docs/design/scheduler.md §12).
pub use biglearn_events::ResultVersion;

#[cfg(test)]
mod readiness_tests {
    use super::*;

    #[test]
    fn readiness_marks_are_idempotent_and_counted() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = EventLog::open(&db, "event_log").unwrap();
        let (a, b) = (
            EcosystemUuid(Uuid::from_u128(1)),
            EcosystemUuid(Uuid::from_u128(2)),
        );
        assert!(!log.has_materialized_model(a).unwrap());
        log.mark_model_materialized(a).unwrap();
        assert!(log.has_materialized_model(a).unwrap());
        assert_eq!(log.mark_models_materialized(&[a, b]).unwrap(), 1);
        assert_eq!(log.mark_models_materialized(&[a, b]).unwrap(), 0);
        assert!(log.has_materialized_model(b).unwrap());
        assert!(!log
            .has_materialized_model(EcosystemUuid(Uuid::from_u128(3)))
            .unwrap());
    }
}

#[cfg(test)]
mod range_tests {
    //! Range no_ops (docs/design/api.md D13) in the event-log projection: one covered-run row per
    //! free run, slots covered count as present, later events there are conflicts.

    use biglearn_domain::events::{EnvelopeMeta, NoOp, RecordResponse};
    use biglearn_domain::ids::{ExerciseUuid, ResponseUuid, StudentUuid, TrialUuid};

    use super::*;

    const COURSE: u128 = 7;

    fn course_event(seq: i64, identity: u128, payload: CoursePayload) -> CourseEvent {
        CourseEvent {
            meta: EnvelopeMeta {
                event_uuid: EventUuid(Uuid::from_u128(identity)),
                sequence_number: SequenceNumber(seq),
                accepted_at_micros: 0,
                writer_id: "test".into(),
                settings_version: 0,
                metadata_sequence_number: None,
            },
            course_uuid: CourseUuid(Uuid::from_u128(COURSE)),
            payload,
        }
    }

    fn response(seq: i64) -> CourseEvent {
        let id = |n: u128| Uuid::from_u128(1000 + n);
        course_event(
            seq,
            100_000 + seq as u128,
            CoursePayload::RecordResponse(RecordResponse {
                response_uuid: ResponseUuid(id(seq as u128)),
                course_uuid: CourseUuid(Uuid::from_u128(COURSE)),
                sequence_number: SequenceNumber(seq),
                ecosystem_uuid: EcosystemUuid(id(1)),
                trial_uuid: TrialUuid(id(2)),
                student_uuid: StudentUuid(id(3)),
                exercise_uuid: ExerciseUuid(id(4)),
                is_correct: true,
                is_real_response: true,
                responded_at: "2017-01-01T00:00:00Z".into(),
            }),
        )
    }

    fn range(seq: i64, through: i64) -> CourseEvent {
        course_event(
            seq,
            200_000 + seq as u128,
            CoursePayload::NoOp(NoOp {
                reason: NoOpReason::AdminFill,
                actor: Some("ops".into()),
                detail_json: None,
                through_sequence_number: Some(SequenceNumber(through)),
            }),
        )
    }

    fn offer(log: &EventLog, events: &[CourseEvent]) -> Vec<Offered> {
        let offered: Vec<OfferedEvent<'_>> = events.iter().map(OfferedEvent::Course).collect();
        log.apply(&offered, &[], 1).unwrap()
    }

    fn open() -> (sled::Db, EventLog) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = EventLog::open(&db, "event_log").unwrap();
        (db, log)
    }

    fn course() -> Uuid {
        Uuid::from_u128(COURSE)
    }

    /// The writer's index as the slots 0..40 and the identities of `events` see it.
    fn writer_view(log: &EventLog, events: &[CourseEvent]) -> (Vec<i64>, Vec<bool>) {
        let index = log.writer_index().unwrap();
        let index = index.lock();
        let taken = (0..40)
            .filter(|&seq| index.is_taken(StreamKind::Course, course(), SequenceNumber(seq)))
            .collect();
        let known = events
            .iter()
            .map(|event| index.has_identity(StreamKind::Course, event.meta.event_uuid))
            .collect();
        (taken, known)
    }

    #[test]
    fn the_writer_index_loaded_from_rows_equals_the_one_fed_by_apply() {
        let events = [
            response(0),
            response(1),
            response(5),
            range(7, 9),
            response(20),
        ];
        let later = [response(2), range(10, 12)];
        // Loaded before anything is applied, then fed by every apply.
        let (_db, fed) = open();
        fed.writer_index().unwrap();
        offer(&fed, &events);
        offer(&fed, &later);
        // Loaded from the rows after everything was applied.
        let (db, _) = open();
        let stored = EventLog::open(&db, "event_log").unwrap();
        offer(&stored, &events);
        offer(&stored, &later);
        let reopened = EventLog::open(&db, "event_log").unwrap();
        let all: Vec<CourseEvent> = events.iter().chain(&later).cloned().collect();
        let expected_taken: Vec<i64> = [0, 1, 2, 5, 7, 8, 9, 10, 11, 12, 20].to_vec();
        assert_eq!(
            writer_view(&fed, &all),
            (expected_taken.clone(), vec![true; 7])
        );
        assert_eq!(
            writer_view(&reopened, &all),
            (expected_taken, vec![true; 7])
        );
        // An event the log does not hold is unknown, its slot free.
        let (taken, known) = writer_view(&reopened, &[response(3)]);
        assert!(!taken.contains(&3) && known == [false]);
    }

    #[test]
    fn an_identity_is_stored_once_and_found_without_a_row_of_its_own() {
        let (db, log) = open();
        let first = response(0);
        // The same identity at another slot (a racing writer): the first in log order wins.
        let mut again = response(1);
        again.meta.event_uuid = first.meta.event_uuid;
        assert_eq!(
            offer(&log, &[first.clone(), again.clone()]),
            [Offered::Stored, Offered::Duplicate]
        );
        assert_eq!(log.tree().scan_prefix([TAG_IDENTITY]).count(), 0);
        let found = IdentityRow {
            aggregate: course(),
            sequence_number: SequenceNumber(0),
            event_type: "record_response".into(),
            no_op_reason: None,
        };
        assert_eq!(
            log.identity(StreamKind::Course, first.meta.event_uuid)
                .unwrap(),
            Some(found.clone())
        );
        // After a restart, from the event rows alone.
        let reopened = EventLog::open(&db, "event_log").unwrap();
        assert_eq!(
            reopened
                .identity(StreamKind::Course, first.meta.event_uuid)
                .unwrap(),
            Some(found)
        );
        assert_eq!(offer(&reopened, &[again]), [Offered::Duplicate]);
        assert_eq!(
            reopened
                .identity(StreamKind::Course, response(5).meta.event_uuid)
                .unwrap(),
            None
        );
    }

    #[test]
    fn an_identity_the_writer_delivered_is_stored_when_its_record_arrives() {
        let (_db, log) = open();
        let event = response(0);
        // The writer records what it delivered before the consumer applies it.
        log.writer_index().unwrap().lock().record(
            StreamKind::Course,
            course(),
            SequenceNumber(0),
            None,
            event.meta.event_uuid,
        );
        assert_eq!(
            log.identity(StreamKind::Course, event.meta.event_uuid)
                .unwrap(),
            None,
            "delivered is not stored"
        );
        assert_eq!(offer(&log, &[event]), [Offered::Stored]);
        assert!(log
            .event(StreamKind::Course, course(), SequenceNumber(0))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_batch_applied_again_after_its_commit_failed_is_stored() {
        let (_db, log) = open();
        let event = response(0);
        // The batch's events reached the index, its rows never reached sled.
        log.writer_index().unwrap().lock().record_applied(
            StreamKind::Course,
            course(),
            SequenceNumber(0),
            None,
            event.meta.event_uuid,
        );
        assert_eq!(offer(&log, &[event]), [Offered::Stored]);
        assert!(log
            .event(StreamKind::Course, course(), SequenceNumber(0))
            .unwrap()
            .is_some());
    }

    #[test]
    fn identity_rows_of_an_older_build_are_dropped_at_open() {
        let (db, log) = open();
        offer(&log, &[response(0), response(1)]);
        let before = log.tree().len();
        for n in 0..3u128 {
            let mut key = vec![TAG_IDENTITY, b'c'];
            key.extend_from_slice(Uuid::from_u128(100_000 + n).as_bytes());
            log.tree().insert(key, vec![0u8; 30]).unwrap();
        }
        let reopened = EventLog::open(&db, "event_log").unwrap();
        assert_eq!(reopened.tree().len(), before);
        assert_eq!(
            reopened
                .identity(StreamKind::Course, response(1).meta.event_uuid)
                .unwrap()
                .map(|row| row.sequence_number),
            Some(SequenceNumber(1))
        );
    }

    #[test]
    fn a_range_of_two_million_slots_is_one_row_and_closes_the_gap() {
        let (_db, log) = open();
        offer(&log, &[response(0), response(1), response(2_000_002)]);
        let before = log.tree().len();
        let gaps = log.gaps(StreamKind::Course, 10).unwrap();
        assert_eq!(
            (gaps[0].first_missing, gaps[0].missing_count),
            (2, 2_000_000)
        );
        assert_eq!(
            log.missing_runs(
                StreamKind::Course,
                course(),
                SequenceNumber(1),
                SequenceNumber(2_000_003)
            )
            .unwrap(),
            [
                (SequenceNumber(2), SequenceNumber(2_000_001)),
                (SequenceNumber(2_000_003), SequenceNumber(2_000_003))
            ]
        );

        assert_eq!(offer(&log, &[range(2, 2_000_001)]), [Offered::Stored]);
        // The slot row and one covered-run row (identities are indexed in memory).
        assert_eq!(log.tree().len(), before + 2);
        assert!(log.gaps(StreamKind::Course, 10).unwrap().is_empty());
        let row = log
            .aggregate(StreamKind::Course, course())
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.next_seq, row.max_seq, row.n_present),
            (2_000_003, 2_000_002, 2_000_003)
        );
        assert_eq!(
            log.first_missing_from(StreamKind::Course, course(), SequenceNumber(5))
                .unwrap(),
            SequenceNumber(2_000_003)
        );
        let stored = log
            .event(StreamKind::Course, course(), SequenceNumber(2))
            .unwrap()
            .unwrap();
        assert_eq!(stored.covers_through, Some(SequenceNumber(2_000_001)));
        assert_eq!(stored.no_op_reason, Some(NoOpReason::AdminFill));
        // A covered slot is held by the range; a later event there is a conflict.
        let holder = EventUuid(Uuid::from_u128(200_002));
        assert_eq!(
            log.slot_identity(StreamKind::Course, course(), SequenceNumber(1_000_000))
                .unwrap(),
            Some(holder)
        );
        assert_eq!(
            offer(&log, &[response(1_000_000), range(2, 2_000_001)]),
            [
                Offered::SlotConflict { taken_by: holder },
                Offered::Duplicate
            ]
        );
        assert!(log
            .missing_runs(
                StreamKind::Course,
                course(),
                SequenceNumber(1),
                SequenceNumber(2_000_002)
            )
            .unwrap()
            .is_empty());
    }

    #[test]
    fn events_already_inside_a_range_keep_their_slots() {
        let (_db, log) = open();
        offer(&log, &[response(0), response(5), response(9), response(12)]);
        // One batch: the range and a later event into it.
        assert_eq!(
            offer(&log, &[range(1, 10), response(7)]),
            [
                Offered::Stored,
                Offered::SlotConflict {
                    taken_by: EventUuid(Uuid::from_u128(200_001))
                }
            ]
        );
        let row = log
            .aggregate(StreamKind::Course, course())
            .unwrap()
            .unwrap();
        // 11 is still missing.
        assert_eq!((row.next_seq, row.n_present), (11, 12));
        let gaps = log.gaps(StreamKind::Course, 10).unwrap();
        assert_eq!((gaps[0].first_missing, gaps[0].missing_count), (11, 1));
        // The events inside stay where they are; the free runs are covered.
        assert_eq!(
            log.slot_identity(StreamKind::Course, course(), SequenceNumber(5))
                .unwrap(),
            Some(EventUuid(Uuid::from_u128(100_005)))
        );
        for seq in [2, 4, 6, 8, 10] {
            assert_eq!(
                log.slot_identity(StreamKind::Course, course(), SequenceNumber(seq))
                    .unwrap(),
                Some(EventUuid(Uuid::from_u128(200_001))),
                "{seq}"
            );
        }
        assert_eq!(
            log.missing_runs(
                StreamKind::Course,
                course(),
                SequenceNumber(0),
                SequenceNumber(20)
            )
            .unwrap(),
            [
                (SequenceNumber(11), SequenceNumber(11)),
                (SequenceNumber(13), SequenceNumber(20))
            ]
        );
        offer(&log, &[response(11)]);
        let row = log
            .aggregate(StreamKind::Course, course())
            .unwrap()
            .unwrap();
        assert_eq!(row.next_seq, 13);
        assert!(log.gaps(StreamKind::Course, 10).unwrap().is_empty());
    }

    #[test]
    fn rows_with_and_without_a_covered_range_round_trip() {
        for covers_through in [None, Some(SequenceNumber(2_147_483_646))] {
            for event_data in [None, Some("{\"reason\":\"admin_fill\"}".to_owned())] {
                let row = EventRow {
                    event_uuid: EventUuid(Uuid::from_u128(5)),
                    event_type: "no_op".into(),
                    event_data: event_data.clone(),
                    no_op_reason: Some(NoOpReason::AdminFill),
                    covers_through,
                };
                assert_eq!(decode_event_row(&encode_event_row(&row)), Some(row));
            }
        }
    }
}
