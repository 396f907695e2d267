//! [`MemoryEventLog`]: an in-memory [`EventLogView`] over `BTreeMap`s.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{EventLogView, LogRow};
use crate::ids::SequenceNumber;

/// Every received event of one stream kind, per aggregate, by sequence number.
#[derive(Clone, Debug)]
pub struct MemoryEventLog<E> {
    aggregates: BTreeMap<Uuid, BTreeMap<SequenceNumber, Entry<E>>>,
}

#[derive(Clone, Debug)]
struct Entry<E> {
    event_type: String,
    data_len: usize,
    event: E,
    /// The last slot this entry makes present: its own, or a range `no_op`'s last covered one.
    last: SequenceNumber,
}

impl<E> MemoryEventLog<E> {
    /// An empty log.
    pub fn new() -> Self {
        MemoryEventLog {
            aggregates: BTreeMap::new(),
        }
    }

    /// Stores `event` at `(aggregate, sequence_number)`, replacing any event there (the
    /// caller has already applied the slot rules). `data_len` is the length in bytes of the
    /// event's serialized `event_data`.
    pub fn insert(
        &mut self,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        event_type: &str,
        data_len: usize,
        event: E,
    ) {
        self.insert_range(
            aggregate,
            sequence_number,
            sequence_number,
            event_type,
            data_len,
            event,
        );
    }

    /// Stores a range `no_op` (docs/design/api.md D13) at `sequence_number` that also makes every
    /// slot up to `through` present (the caller has stored no other event inside it, or
    /// such events keep their slots). One entry, whatever the size of the range.
    pub fn insert_range(
        &mut self,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        through: SequenceNumber,
        event_type: &str,
        data_len: usize,
        event: E,
    ) {
        self.aggregates.entry(aggregate).or_default().insert(
            sequence_number,
            Entry {
                event_type: event_type.to_owned(),
                data_len,
                event,
                last: through.max(sequence_number),
            },
        );
    }

    fn matching<'log>(
        &'log self,
        aggregate: Uuid,
        from: SequenceNumber,
        event_types: &'log [String],
    ) -> impl Iterator<Item = (&'log SequenceNumber, &'log Entry<E>)> + 'log {
        self.aggregates
            .get(&aggregate)
            .into_iter()
            .flat_map(move |events| events.range(from..))
            .filter(move |(_, entry)| event_types.contains(&entry.event_type))
    }
}

impl<E> Default for MemoryEventLog<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Clone> EventLogView for MemoryEventLog<E> {
    type Event = E;

    fn max_sequence(&self, aggregate: Uuid) -> Option<SequenceNumber> {
        self.aggregates
            .get(&aggregate)?
            .values()
            .map(|entry| entry.last)
            .max()
    }

    fn first_missing_from(&self, aggregate: Uuid, from: SequenceNumber) -> SequenceNumber {
        let mut expected = from;
        let Some(events) = self.aggregates.get(&aggregate) else {
            return expected;
        };
        // A range standing below `from` may cover it.
        if let Some((_, entry)) = events.range(..from).next_back() {
            expected = expected.max(entry.last.next());
        }
        for (seq, entry) in events.range(from..) {
            if *seq > expected {
                break;
            }
            expected = expected.max(entry.last.next());
        }
        expected
    }

    fn events_from(
        &self,
        aggregate: Uuid,
        offset: SequenceNumber,
        event_types: &[String],
        limit: usize,
    ) -> Vec<LogRow<E>> {
        self.matching(aggregate, offset, event_types)
            .take(limit)
            .map(|(seq, entry)| LogRow {
                sequence_number: *seq,
                data_len: entry.data_len,
                event: entry.event.clone(),
            })
            .collect()
    }

    fn any_after(&self, aggregate: Uuid, after: SequenceNumber, event_types: &[String]) -> bool {
        self.matching(aggregate, after.next(), event_types)
            .next()
            .is_some()
    }
}
