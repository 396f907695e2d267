//! The event-stream reads of docs/design/api.md §6: contiguous-prefix event fetches and metadata
//! lists.
//!
//! [`fetch_events`] runs the §6.3 algorithm over a read-only [`EventLogView`];
//! [`metadata_prefix`] applies the §6.1 contiguous-prefix rule. [`MemoryEventLog`] is a
//! `BTreeMap` view for tests and small deployments.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use uuid::Uuid;

use crate::ids::{RequestUuid, SequenceNumber};

mod memory;

pub use memory::MemoryEventLog;

/// The size cap on the serialized `event_data` of one fetch response: the original's
/// `MAX_DATA_SIZE = 3.2e7` bits.
pub const MAX_EVENT_DATA_BYTES: usize = 4_000_000;

/// One event of an aggregate's log, as a view returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRow<E> {
    pub sequence_number: SequenceNumber,
    /// Length of the event's serialized `event_data` JSON, in bytes (for the size cap).
    pub data_len: usize,
    pub event: E,
}

/// Read-only access to the event log of one stream kind (every received event, gaps included).
pub trait EventLogView {
    /// What a response carries per event (for example uuid, type and `event_data`).
    type Event;

    /// The highest sequence number of any type; `None` when the aggregate is unknown.
    fn max_sequence(&self, aggregate: Uuid) -> Option<SequenceNumber>;

    /// The smallest sequence number `s ≥ from` with no event of any type.
    fn first_missing_from(&self, aggregate: Uuid, from: SequenceNumber) -> SequenceNumber;

    /// Up to `limit` events with sequence number `≥ offset` and a type in `event_types`,
    /// ascending by sequence number.
    fn events_from(
        &self,
        aggregate: Uuid,
        offset: SequenceNumber,
        event_types: &[String],
        limit: usize,
    ) -> Vec<LogRow<Self::Event>>;

    /// Whether an event with sequence number `> after` and a type in `event_types` exists.
    fn any_after(&self, aggregate: Uuid, after: SequenceNumber, event_types: &[String]) -> bool;
}

/// One sub-request of `fetch_course_events` / `fetch_ecosystem_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubRequest {
    pub request_uuid: RequestUuid,
    pub aggregate: Uuid,
    pub sequence_number_offset: SequenceNumber,
    /// Event type names (validated by the caller); at least one.
    pub event_types: Vec<String>,
}

/// The answer to one [`SubRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubResponse<E> {
    pub request_uuid: RequestUuid,
    pub aggregate: Uuid,
    /// A contiguous prefix, ascending by sequence number.
    pub events: Vec<(SequenceNumber, E)>,
    /// Events were held back by a missing sequence number.
    pub is_gap: bool,
    /// Nothing more of the requested types exists after these events.
    pub is_end: bool,
}

/// Where the hole check starts.
///
/// The spec's definition of `m_r` starts at `max(offset − 1, 0)`, but its conformance case 5
/// (events at 4 and 5, 3 missing, offset 5 → `events: []`, `is_gap: true`) needs the whole
/// prefix checked. Checking from 0 satisfies both the case and "every sequence number from
/// `offset − 1` upward is checked"; for a reader that only advanced over what it was served
/// the two agree, because events are never deleted.
const HOLE_CHECK_FROM: SequenceNumber = SequenceNumber::ZERO;

/// One sub-request's lazily fetched rows, ascending by sequence number.
struct Cursor<E> {
    request_idx: usize,
    buffer: VecDeque<LogRow<E>>,
    /// The offset of the next `events_from` call.
    next_from: SequenceNumber,
    /// The view has no more rows at or after `next_from`.
    is_exhausted: bool,
    chunk: usize,
}

impl<E> Cursor<E> {
    fn refill<V: EventLogView<Event = E>>(&mut self, view: &V, request: &SubRequest, limit: usize) {
        let rows = view.events_from(
            request.aggregate,
            self.next_from,
            &request.event_types,
            limit,
        );
        self.is_exhausted = rows.len() < limit;
        if let Some(last) = rows.last() {
            self.next_from = last.sequence_number.next();
        }
        self.buffer.extend(rows);
    }

    fn head_key(&self, offset: SequenceNumber) -> Option<Reverse<(i64, usize, SequenceNumber)>> {
        self.buffer.front().map(|row| {
            let distance = row.sequence_number.0 - offset.0;
            Reverse((distance, self.request_idx, row.sequence_number))
        })
    }
}

/// A candidate of the global, breadth-first list of §6.3.
enum Candidate<E> {
    /// An active sub-request with no rows of its types at or after its offset.
    Placeholder(usize),
    Row(usize, LogRow<E>),
}

/// Answers the sub-requests of one event-stream read (docs/design/api.md §6.3), in request order.
///
/// `max_num_events` is shared by all sub-requests, breadth-first by distance from each
/// offset; `size_cap_bytes` (normally [`MAX_EVENT_DATA_BYTES`]) bounds the total
/// `event_data`, but the first row is always kept (the spec's pseudo-code keeps candidate 0,
/// which may be a placeholder; its prose keeps the first row, which is what this does). At most about
/// `2 × max_num_events + requests.len()` rows are read from the view.
pub fn fetch_events<V: EventLogView>(
    view: &V,
    requests: &[SubRequest],
    max_num_events: usize,
    size_cap_bytes: usize,
) -> Vec<SubResponse<V::Event>> {
    let is_active: Vec<bool> = requests
        .iter()
        .map(|request| {
            view.max_sequence(request.aggregate)
                .is_some_and(|max| max >= request.sequence_number_offset)
        })
        .collect();
    let n_active = is_active.iter().filter(|active| **active).count();

    // Open every active cursor with an equal share of the limit.
    let first_chunk = max_num_events.div_ceil(n_active.max(1)).max(1);
    let mut cursors: Vec<Option<Cursor<V::Event>>> = requests
        .iter()
        .zip(&is_active)
        .enumerate()
        .map(|(request_idx, (request, active))| {
            active.then(|| {
                let mut cursor = Cursor {
                    request_idx,
                    buffer: VecDeque::new(),
                    next_from: request.sequence_number_offset,
                    is_exhausted: false,
                    chunk: first_chunk,
                };
                if max_num_events > 0 {
                    cursor.refill(view, request, first_chunk);
                }
                cursor
            })
        })
        .collect();

    // Placeholders have distance −1: they come first, in request order.
    let mut candidates: Vec<Candidate<V::Event>> = Vec::new();
    for cursor in cursors.iter().flatten() {
        if cursor.buffer.is_empty() && cursor.is_exhausted && candidates.len() < max_num_events {
            candidates.push(Candidate::Placeholder(cursor.request_idx));
        }
    }
    let mut heap: BinaryHeap<_> = cursors
        .iter()
        .flatten()
        .filter_map(|cursor| cursor.head_key(requests[cursor.request_idx].sequence_number_offset))
        .collect();
    while candidates.len() < max_num_events {
        let Some(Reverse((_, request_idx, _))) = heap.pop() else {
            break;
        };
        let request = &requests[request_idx];
        let Some(cursor) = cursors[request_idx].as_mut() else {
            continue;
        };
        let Some(row) = cursor.buffer.pop_front() else {
            continue;
        };
        candidates.push(Candidate::Row(request_idx, row));
        let remaining = max_num_events - candidates.len();
        if cursor.buffer.is_empty() && !cursor.is_exhausted && remaining > 0 {
            // Grow geometrically, but never read past what the limit can still take.
            cursor.chunk = (cursor.chunk * 2).min(remaining);
            let chunk = cursor.chunk;
            cursor.refill(view, request, chunk);
        }
        heap.extend(cursor.head_key(request.sequence_number_offset));
    }

    // The size cap drops a suffix of the global list; placeholders cost nothing.
    let mut kept_rows: Vec<Vec<LogRow<V::Event>>> = requests.iter().map(|_| Vec::new()).collect();
    let mut has_placeholder = vec![false; requests.len()];
    let mut has_dropped = vec![false; requests.len()];
    let mut total_bytes = 0usize;
    let mut is_first_row = true;
    for candidate in candidates {
        match candidate {
            Candidate::Placeholder(request_idx) => has_placeholder[request_idx] = true,
            Candidate::Row(request_idx, row) => {
                total_bytes = total_bytes.saturating_add(row.data_len);
                // The first row always goes out, even behind placeholders, so that one
                // oversized event cannot stall a reader.
                if std::mem::take(&mut is_first_row) || total_bytes < size_cap_bytes {
                    kept_rows[request_idx].push(row);
                } else {
                    has_dropped[request_idx] = true;
                }
            }
        }
    }

    requests
        .iter()
        .zip(kept_rows)
        .enumerate()
        .map(|(request_idx, (request, rows))| {
            let answer = |events, is_gap, is_end| SubResponse {
                request_uuid: request.request_uuid,
                aggregate: request.aggregate,
                events,
                is_gap,
                is_end,
            };
            let Some(cursor) = cursors[request_idx].as_ref() else {
                return answer(Vec::new(), false, true);
            };
            let Some(last) = rows.last().map(|row| row.sequence_number) else {
                return answer(Vec::new(), false, has_placeholder[request_idx]);
            };
            let first_missing = view.first_missing_from(request.aggregate, HOLE_CHECK_FROM);
            let is_gap = last > first_missing;
            let more_after_last = has_dropped[request_idx]
                || !cursor.buffer.is_empty()
                || (!cursor.is_exhausted
                    && view.any_after(request.aggregate, last, &request.event_types));
            let events = rows
                .into_iter()
                .take_while(|row| row.sequence_number < first_missing)
                .map(|row| (row.sequence_number, row.event))
                .collect();
            answer(events, is_gap, !is_gap && !more_after_last)
        })
        .collect()
}

/// The §6.1 metadata list: numbered aggregates from `offset` on, at most `max_num_metadatas`,
/// stopping before the first number not seen yet unless the projection is fully caught up on
/// every partition, in which case missing numbers are skipped.
///
/// `numbered` yields `(metadata_sequence_number, entry)` ascending, from `offset` on (any
/// number below `offset` is ignored); it is read lazily, at most one item past the answer.
pub fn metadata_prefix<T>(
    numbered: impl IntoIterator<Item = (i64, T)>,
    offset: i64,
    max_num_metadatas: usize,
    is_fully_caught_up: bool,
) -> Vec<(i64, T)> {
    let mut listed = Vec::new();
    let mut expected = offset;
    for (number, entry) in numbered {
        if listed.len() >= max_num_metadatas {
            break;
        }
        if number < expected {
            continue;
        }
        if number > expected && !is_fully_caught_up {
            break;
        }
        listed.push((number, entry));
        expected = number + 1;
    }
    listed
}

#[cfg(test)]
mod tests;
