//! The writer's index in memory (docs/design/api.md §3.2): which identities and which
//! slots the log holds, so that the writer checks a candidate without reading sled.
//!
//! It holds only what the request path decides on: the identities with the slot each stands
//! at, per aggregate the taken slots as a contiguous prefix plus disjoint runs above it (a
//! range `no_op` is one run, however many slots it covers), and the next metadata number of
//! each stream. What a rare answer needs besides (the row of a re-sent identity, who holds a
//! taken slot, preparations) the writer reads from the event-log projection after it has
//! caught up with everything the writer delivered.
//!
//! It is also the event-log projection's only index by identity (no sled row per identity):
//! the projection asks it where an identity was *applied* ([`WriterIndex::applied_slot`]),
//! which delivered-but-not-yet-applied identities never answer.
//!
//! Invariants:
//! - Everything it holds is in the log: it is filled from the event-log projection's rows
//!   (at first use), from records the event-log consumer applies, and from records the
//!   writer was told are delivered. Recording is idempotent, so the same record arriving
//!   by two of these ways is harmless.
//! - Taking slots is a set union: the order records arrive in does not change the result.
//!
//! Memory: about 50–60 bytes per identity (17-byte keys, 32-byte slots) and about 60 bytes per
//! aggregate, plus about 40 bytes per run of taken slots above a gap.

use std::collections::BTreeMap;

// Identities and aggregates are uuids sent by clients: a per-process seeded hash, several
// times cheaper than SipHash on 17-byte keys.
use foldhash::HashMap;

use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::{EventUuid, SequenceNumber};
use uuid::Uuid;

/// The taken slots of one aggregate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TakenSlots {
    /// Every slot below this one is taken.
    next: i64,
    /// Taken runs above `next`, first slot → last slot: disjoint, not adjacent to each
    /// other, and none starts at or below `next`.
    above: BTreeMap<i64, i64>,
}

impl TakenSlots {
    fn is_taken(&self, seq: i64) -> bool {
        seq < self.next
            || self
                .above
                .range(..=seq)
                .next_back()
                .is_some_and(|(_, &last)| last >= seq)
    }

    /// Adds the slots `first..=last` (a union: already taken slots stay taken).
    fn take(&mut self, first: i64, last: i64) {
        if last < first || last < self.next {
            return;
        }
        let mut first = first.max(self.next);
        let mut last = last;
        // The runs that overlap or touch [first, last] merge with it: walking down from
        // the last run starting at or before last + 1, ends only decrease.
        let touching: Vec<i64> = self
            .above
            .range(..=last.saturating_add(1))
            .rev()
            .take_while(|(_, &run_last)| run_last >= first.saturating_sub(1))
            .map(|(&run_first, _)| run_first)
            .collect();
        for run_first in touching {
            if let Some(run_last) = self.above.remove(&run_first) {
                first = first.min(run_first);
                last = last.max(run_last);
            }
        }
        if first <= self.next {
            self.next = last.saturating_add(1);
        } else {
            self.above.insert(first, last);
        }
    }
}

/// Where an identity stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdentitySlot {
    aggregate: Uuid,
    sequence_number: i64,
    /// Applied by the event-log projection (not only delivered by the writer).
    applied: bool,
}

/// The writer's index: identities and taken slots of both event streams.
#[derive(Clone, Debug, Default)]
pub struct WriterIndex {
    identities: HashMap<(StreamKind, EventUuid), IdentitySlot>,
    aggregates: HashMap<(StreamKind, Uuid), TakenSlots>,
    /// The metadata sequence number the next create of each stream takes: one past the
    /// highest an aggregate's first create holds (docs/design/api.md §3.4).
    next_course_metadata: i64,
    next_ecosystem_metadata: i64,
}

impl WriterIndex {
    /// An empty index.
    pub fn new() -> WriterIndex {
        WriterIndex::default()
    }

    /// Records an event the writer delivered to the log: its identity, standing at
    /// `sequence_number` and, for a range `no_op`, covering the slots through
    /// `covers_through`. An identity already known keeps its slot.
    pub fn record(
        &mut self,
        stream: StreamKind,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        covers_through: Option<SequenceNumber>,
        event_uuid: EventUuid,
    ) {
        self.identities
            .entry((stream, event_uuid))
            .or_insert(IdentitySlot {
                aggregate,
                sequence_number: sequence_number.0,
                applied: false,
            });
        self.take(stream, aggregate, sequence_number, covers_through);
    }

    /// Records an event the event-log projection stored at its slot: as [`Self::record`],
    /// and from now on [`Self::applied_slot`] answers for its identity (a slot the writer
    /// recorded at delivery is replaced: the projection's is the log's first).
    pub fn record_applied(
        &mut self,
        stream: StreamKind,
        aggregate: Uuid,
        sequence_number: SequenceNumber,
        covers_through: Option<SequenceNumber>,
        event_uuid: EventUuid,
    ) {
        let applied = IdentitySlot {
            aggregate,
            sequence_number: sequence_number.0,
            applied: true,
        };
        let slot = self
            .identities
            .entry((stream, event_uuid))
            .or_insert(applied);
        if !slot.applied {
            *slot = applied;
        }
        self.take(stream, aggregate, sequence_number, covers_through);
    }

    /// The slot where the event-log projection stored this identity, if it did.
    pub fn applied_slot(
        &self,
        stream: StreamKind,
        event_uuid: EventUuid,
    ) -> Option<(Uuid, SequenceNumber)> {
        self.identities
            .get(&(stream, event_uuid))
            .filter(|slot| slot.applied)
            .map(|slot| (slot.aggregate, SequenceNumber(slot.sequence_number)))
    }

    /// Records slots `first..=last` (or just `first`) as taken, without an identity (a
    /// covered run of a range `no_op` whose identity is recorded at its own slot).
    pub fn take(
        &mut self,
        stream: StreamKind,
        aggregate: Uuid,
        first: SequenceNumber,
        last: Option<SequenceNumber>,
    ) {
        let last = last.map_or(first.0, |last| last.0.max(first.0));
        self.aggregates
            .entry((stream, aggregate))
            .or_default()
            .take(first.0, last);
    }

    /// Whether the log holds an event with this identity.
    pub fn has_identity(&self, stream: StreamKind, event_uuid: EventUuid) -> bool {
        self.identities.contains_key(&(stream, event_uuid))
    }

    /// Whether the slot is held, by an event standing there or by a range `no_op`.
    pub fn is_taken(&self, stream: StreamKind, aggregate: Uuid, seq: SequenceNumber) -> bool {
        self.aggregates
            .get(&(stream, aggregate))
            .is_some_and(|slots| slots.is_taken(seq.0))
    }

    /// Notes that an aggregate's first create holds metadata number `number`.
    pub fn note_metadata_number(&mut self, stream: StreamKind, number: i64) {
        let next = match stream {
            StreamKind::Course => &mut self.next_course_metadata,
            StreamKind::Ecosystem => &mut self.next_ecosystem_metadata,
        };
        *next = (*next).max(number.saturating_add(1));
    }

    /// The metadata number the next create of `stream` takes.
    pub fn next_metadata_number(&self, stream: StreamKind) -> i64 {
        match stream {
            StreamKind::Course => self.next_course_metadata,
            StreamKind::Ecosystem => self.next_ecosystem_metadata,
        }
    }

    /// How many identities it holds.
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// How many aggregates it holds.
    pub fn aggregate_count(&self) -> usize {
        self.aggregates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn taken(index: &WriterIndex, aggregate: Uuid) -> Vec<i64> {
        (0..40)
            .filter(|&seq| index.is_taken(StreamKind::Course, aggregate, SequenceNumber(seq)))
            .collect()
    }

    #[test]
    fn identities_and_slots_are_per_stream() {
        let mut index = WriterIndex::new();
        index.record(
            StreamKind::Course,
            uuid(1),
            SequenceNumber(0),
            None,
            EventUuid(uuid(9)),
        );
        assert!(index.has_identity(StreamKind::Course, EventUuid(uuid(9))));
        assert!(!index.has_identity(StreamKind::Ecosystem, EventUuid(uuid(9))));
        assert!(index.is_taken(StreamKind::Course, uuid(1), SequenceNumber(0)));
        assert!(!index.is_taken(StreamKind::Ecosystem, uuid(1), SequenceNumber(0)));
        assert!(!index.is_taken(StreamKind::Course, uuid(2), SequenceNumber(0)));
        assert!(!index.is_taken(StreamKind::Course, uuid(1), SequenceNumber(1)));
    }

    #[test]
    fn only_an_applied_identity_has_a_slot_and_the_first_applied_stays() {
        let mut index = WriterIndex::new();
        let identity = EventUuid(uuid(9));
        // Delivered by the writer: known, but not applied.
        index.record(
            StreamKind::Course,
            uuid(1),
            SequenceNumber(7),
            None,
            identity,
        );
        assert!(index.has_identity(StreamKind::Course, identity));
        assert_eq!(index.applied_slot(StreamKind::Course, identity), None);
        // Applied where the log holds it first (a racing writer put it at 5).
        index.record_applied(
            StreamKind::Course,
            uuid(1),
            SequenceNumber(5),
            None,
            identity,
        );
        assert_eq!(
            index.applied_slot(StreamKind::Course, identity),
            Some((uuid(1), SequenceNumber(5)))
        );
        // Neither a later delivery nor a later application moves it.
        index.record(
            StreamKind::Course,
            uuid(1),
            SequenceNumber(8),
            None,
            identity,
        );
        index.record_applied(
            StreamKind::Course,
            uuid(1),
            SequenceNumber(7),
            None,
            identity,
        );
        assert_eq!(
            index.applied_slot(StreamKind::Course, identity),
            Some((uuid(1), SequenceNumber(5)))
        );
        assert_eq!(index.applied_slot(StreamKind::Ecosystem, identity), None);
    }

    #[test]
    fn metadata_numbers_go_past_the_highest_noted() {
        let mut index = WriterIndex::new();
        assert_eq!(index.next_metadata_number(StreamKind::Course), 0);
        index.note_metadata_number(StreamKind::Course, 4);
        index.note_metadata_number(StreamKind::Course, 2);
        assert_eq!(index.next_metadata_number(StreamKind::Course), 5);
        assert_eq!(index.next_metadata_number(StreamKind::Ecosystem), 0);
    }

    #[test]
    fn slots_above_a_gap_stay_apart_until_the_gap_fills() {
        let mut index = WriterIndex::new();
        let course = uuid(1);
        for seq in [0, 1, 5, 7, 6, 10] {
            index.take(StreamKind::Course, course, SequenceNumber(seq), None);
        }
        assert_eq!(taken(&index, course), vec![0, 1, 5, 6, 7, 10]);
        let slots = &index.aggregates[&(StreamKind::Course, course)];
        assert_eq!(slots.next, 2);
        assert_eq!(slots.above, BTreeMap::from([(5, 7), (10, 10)]));
        // Filling the gap joins the prefix with the run above it.
        index.take(
            StreamKind::Course,
            course,
            SequenceNumber(2),
            Some(SequenceNumber(4)),
        );
        let slots = &index.aggregates[&(StreamKind::Course, course)];
        assert_eq!(slots.next, 8);
        assert_eq!(slots.above, BTreeMap::from([(10, 10)]));
    }

    #[test]
    fn a_range_merges_every_run_it_overlaps_or_touches() {
        let mut index = WriterIndex::new();
        let course = uuid(1);
        for seq in [3, 5, 9, 14] {
            index.take(StreamKind::Course, course, SequenceNumber(seq), None);
        }
        index.take(
            StreamKind::Course,
            course,
            SequenceNumber(4),
            Some(SequenceNumber(10)),
        );
        let slots = &index.aggregates[&(StreamKind::Course, course)];
        assert_eq!(slots.above, BTreeMap::from([(3, 10), (14, 14)]));
        // A range wholly inside a run, or below the prefix, changes nothing.
        let before = slots.clone();
        index.take(
            StreamKind::Course,
            course,
            SequenceNumber(6),
            Some(SequenceNumber(8)),
        );
        assert_eq!(index.aggregates[&(StreamKind::Course, course)], before);
        // Adjacent on the right: 11 touches 10 and 13 touches 14.
        index.take(
            StreamKind::Course,
            course,
            SequenceNumber(11),
            Some(SequenceNumber(13)),
        );
        assert_eq!(
            index.aggregates[&(StreamKind::Course, course)].above,
            BTreeMap::from([(3, 14)])
        );
    }

    #[test]
    fn the_order_of_records_does_not_change_the_index() {
        // Every permutation of a small set of takes ends in the same slots and runs.
        let takes: [(i64, i64); 5] = [(0, 0), (2, 4), (6, 6), (5, 5), (1, 1)];
        let mut reference: Option<TakenSlots> = None;
        let mut order: Vec<usize> = (0..takes.len()).collect();
        // Heap's algorithm, iteratively: all 120 orders.
        let mut counters = vec![0; order.len()];
        let mut check = |order: &[usize]| {
            let mut slots = TakenSlots::default();
            for &i in order {
                slots.take(takes[i].0, takes[i].1);
            }
            match &reference {
                Some(reference) => assert_eq!(&slots, reference, "order {order:?}"),
                None => reference = Some(slots),
            }
        };
        check(&order);
        let mut i = 0;
        while i < order.len() {
            if counters[i] < i {
                if i % 2 == 0 {
                    order.swap(0, i);
                } else {
                    order.swap(counters[i], i);
                }
                check(&order);
                counters[i] += 1;
                i = 0;
            } else {
                counters[i] = 0;
                i += 1;
            }
        }
        let reference = reference.expect("checked at least once");
        assert_eq!(reference.next, 7);
        assert!(reference.above.is_empty());
    }
}
