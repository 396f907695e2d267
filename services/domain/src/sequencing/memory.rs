//! [`SequencerMemory`]: the sequencing core over in-memory maps, for tests and small consumers.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{
    gap_info, receive, sort_oldest_first, AggregateSequence, GapInfo, Incoming, Outcome,
    PendingChange, Slot,
};
use crate::ids::{EventUuid, SequenceNumber};

/// Sequences the aggregates of one stream kind in memory, with the same rules as [`receive`].
#[derive(Clone, Debug)]
pub struct SequencerMemory<E> {
    aggregates: BTreeMap<Uuid, AggregateMemory<E>>,
    keeps_identities: bool,
    n_duplicates: u64,
    n_conflicts: u64,
}

#[derive(Clone, Debug)]
struct AggregateMemory<E> {
    state: AggregateSequence,
    pending: BTreeMap<SequenceNumber, Slot<E>>,
    /// Applied identities, only when the sequencer keeps them.
    applied: BTreeMap<SequenceNumber, EventUuid>,
    /// Applied range no_ops by their first slot: `(covers_through, identity)`.
    applied_ranges: BTreeMap<SequenceNumber, (SequenceNumber, EventUuid)>,
}

impl<E> AggregateMemory<E> {
    /// The identity applied at `seq`: the event there, or the range no_op covering it.
    fn identity_at(&self, seq: SequenceNumber) -> Option<EventUuid> {
        self.applied.get(&seq).copied().or_else(|| {
            self.applied_ranges
                .range(..=seq)
                .next_back()
                .filter(|(_, (through, _))| *through >= seq)
                .map(|(_, (_, event_uuid))| *event_uuid)
        })
    }
}

impl<E> Default for AggregateMemory<E> {
    fn default() -> Self {
        AggregateMemory {
            state: AggregateSequence::default(),
            pending: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_ranges: BTreeMap::new(),
        }
    }
}

impl<E: Clone> SequencerMemory<E> {
    /// A sequencer that drops every record below `next_seq` as a duplicate.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// A sequencer that remembers applied identities, so that a different identity at an
    /// applied slot is reported as a conflict (as the event-log projection and writer do).
    pub fn with_identities() -> Self {
        Self::build(true)
    }

    fn build(keeps_identities: bool) -> Self {
        SequencerMemory {
            aggregates: BTreeMap::new(),
            keeps_identities,
            n_duplicates: 0,
            n_conflicts: 0,
        }
    }

    /// Receives one record of `aggregate`; see [`receive`].
    pub fn receive(
        &mut self,
        aggregate: Uuid,
        incoming: Incoming<E>,
        now_micros: i64,
    ) -> Outcome<E> {
        let entry = self.aggregates.entry(aggregate).or_default();
        let received = receive(
            &entry.state,
            &entry.pending,
            |seq| entry.identity_at(seq),
            incoming,
            now_micros,
        );
        entry.state = received.state;
        for change in received.pending_changes {
            match change {
                PendingChange::Put {
                    sequence_number,
                    slot,
                } => {
                    entry.pending.insert(sequence_number, slot);
                }
                PendingChange::Remove { sequence_number } => {
                    entry.pending.remove(&sequence_number);
                }
            }
        }
        match &received.outcome {
            Outcome::Applied(events) if self.keeps_identities => {
                entry.applied.extend(
                    events
                        .iter()
                        .map(|sequenced| (sequenced.sequence_number, sequenced.event_uuid)),
                );
                entry
                    .applied_ranges
                    .extend(events.iter().filter_map(|sequenced| {
                        let through = sequenced.covers_through?;
                        Some((sequenced.sequence_number, (through, sequenced.event_uuid)))
                    }));
            }
            Outcome::Duplicate => self.n_duplicates += 1,
            Outcome::Conflict { .. } => self.n_conflicts += 1,
            Outcome::Applied(_) | Outcome::Parked => {}
        }
        received.outcome
    }

    /// The state of `aggregate` (the initial state if nothing was received for it).
    pub fn state(&self, aggregate: Uuid) -> AggregateSequence {
        self.aggregates
            .get(&aggregate)
            .map(|entry| entry.state)
            .unwrap_or_default()
    }

    /// Every blocked aggregate, oldest first.
    pub fn gaps(&self) -> Vec<GapInfo> {
        let mut gaps: Vec<GapInfo> = self
            .aggregates
            .iter()
            .filter_map(|(aggregate, entry)| gap_info(*aggregate, &entry.state, &entry.pending))
            .collect();
        sort_oldest_first(&mut gaps);
        gaps
    }

    /// Records dropped as duplicates so far.
    pub fn n_duplicates(&self) -> u64 {
        self.n_duplicates
    }

    /// Records dropped as slot conflicts so far.
    pub fn n_conflicts(&self) -> u64 {
        self.n_conflicts
    }
}

impl<E: Clone> Default for SequencerMemory<E> {
    fn default() -> Self {
        Self::new()
    }
}
