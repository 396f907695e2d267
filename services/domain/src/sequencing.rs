//! Per-aggregate sequencing (docs/design/events.md §7.2): park ahead of gaps, drop duplicates,
//! detect conflicts.
//!
//! The core is [`receive`]: a pure function from one aggregate's [`AggregateSequence`], a read
//! view of its pending entries and one incoming record to an [`Outcome`], the new state and the
//! pending changes, so that a consumer writes state, pending and position in one sled batch.
//! [`SequencerMemory`] runs the same core over in-memory maps.
//!
//! A range `no_op` (docs/design/api.md D13, docs/design/events.md §5.2) is one record that stands
//! at its sequence number and *covers* every later slot up to `covers_through` that no other event
//! holds: when it is applied, the events parked inside its range are applied in order and
//! `next_seq` jumps past the range, in O(parked entries), never O(slots). A record that arrives
//! later for a covered slot is a conflict (the range holds it), exactly as for a one-slot `no_op`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{EventUuid, SequenceNumber};

mod memory;

pub use memory::SequencerMemory;

/// The sequencing state of one aggregate (one course or one ecosystem).
///
/// A new aggregate starts at [`AggregateSequence::default`]: nothing applied, nothing pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AggregateSequence {
    /// Every sequence number below this one is applied; this one is the next to apply.
    pub next_seq: SequenceNumber,
    /// Pending entries: received, above `next_seq`, not applied yet.
    pub n_pending: u64,
    /// Pending entries that are opaque (undecodable by this build).
    pub n_opaque: u64,
    /// The highest pending sequence number; `None` when nothing is pending.
    pub highest_pending: Option<SequenceNumber>,
    /// `now_micros` of the record that made pending non-empty; `None` when pending is empty.
    pub first_pending_at_micros: Option<i64>,
}

impl AggregateSequence {
    /// Whether the aggregate waits on a gap or an opaque entry.
    pub fn is_blocked(&self) -> bool {
        self.n_pending > 0
    }
}

/// What occupies one slot: a decoded event, or an opaque record routable by its headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot<E> {
    /// A decoded event. `covers_through` is set for a range `no_op`: the last slot it covers.
    Event {
        event_uuid: EventUuid,
        event: E,
        covers_through: Option<SequenceNumber>,
    },
    /// A record this build cannot decode (docs/design/events.md §4.3). `raw` is whatever the
    /// consumer needs to decode it again after an upgrade (for example the record value).
    Opaque { event_uuid: EventUuid, raw: Vec<u8> },
}

impl<E> Slot<E> {
    /// The identity of the event in this slot.
    pub fn event_uuid(&self) -> EventUuid {
        match self {
            Slot::Event { event_uuid, .. } | Slot::Opaque { event_uuid, .. } => *event_uuid,
        }
    }

    /// Whether this slot blocks its aggregate until it is decoded.
    pub fn is_opaque(&self) -> bool {
        matches!(self, Slot::Opaque { .. })
    }

    /// The last slot a range `no_op` in this slot covers (`None` for any other entry).
    pub fn covers_through(&self) -> Option<SequenceNumber> {
        match self {
            Slot::Event { covers_through, .. } => *covers_through,
            Slot::Opaque { .. } => None,
        }
    }
}

/// One record of one aggregate, as read from its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming<E> {
    pub sequence_number: SequenceNumber,
    pub slot: Slot<E>,
}

/// An event released for application, with its position and identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequenced<E> {
    pub sequence_number: SequenceNumber,
    pub event_uuid: EventUuid,
    pub event: E,
    /// Set for a range `no_op`: the last slot it covers.
    pub covers_through: Option<SequenceNumber>,
}

/// What became of one incoming record. Every variant is an expected outcome, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<E> {
    /// Apply these now, in this order: the incoming event (or the opaque entry it decodes)
    /// followed by the contiguous run of pending events it released. Never empty.
    Applied(Vec<Sequenced<E>>),
    /// Stored as pending behind a gap or an opaque entry (or, for a decodable re-delivery of
    /// a pending opaque entry that is not next, stored in its place).
    Parked,
    /// The same identity already holds this slot (or the slot is applied and its identity is
    /// not known): dropped. Count it in `duplicates_total`.
    Duplicate,
    /// Another identity holds this slot; the first in log order wins. DLQ (`slot_conflict`).
    Conflict { taken_by: EventUuid },
}

/// A change to one aggregate's pending entries, to write in the same batch as the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingChange<E> {
    /// Store `slot` at `sequence_number`, replacing any entry there.
    Put {
        sequence_number: SequenceNumber,
        slot: Slot<E>,
    },
    /// Delete the entry at `sequence_number` (it was released for application).
    Remove { sequence_number: SequenceNumber },
}

/// The result of [`receive`]: what to do, the new state and the pending changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received<E> {
    pub outcome: Outcome<E>,
    pub state: AggregateSequence,
    pub pending_changes: Vec<PendingChange<E>>,
}

/// Read access to one aggregate's pending entries (kept in sled by the shell).
pub trait PendingView<E> {
    /// The entry at `sequence_number`, if one is pending.
    fn get(&self, sequence_number: SequenceNumber) -> Option<Slot<E>>;

    /// Whether an entry is pending at `sequence_number`.
    fn contains(&self, sequence_number: SequenceNumber) -> bool {
        self.get(sequence_number).is_some()
    }

    /// The pending entry with the smallest sequence number `≥ from` (a range read: covered
    /// ranges are skipped over in one step, never slot by slot).
    fn first_from(&self, from: SequenceNumber) -> Option<(SequenceNumber, Slot<E>)>;

    /// The pending entry with the largest sequence number `< below`.
    fn last_below(&self, below: SequenceNumber) -> Option<(SequenceNumber, Slot<E>)>;
}

impl<E: Clone> PendingView<E> for std::collections::BTreeMap<SequenceNumber, Slot<E>> {
    fn get(&self, sequence_number: SequenceNumber) -> Option<Slot<E>> {
        std::collections::BTreeMap::get(self, &sequence_number).cloned()
    }

    fn contains(&self, sequence_number: SequenceNumber) -> bool {
        self.contains_key(&sequence_number)
    }

    fn first_from(&self, from: SequenceNumber) -> Option<(SequenceNumber, Slot<E>)> {
        self.range(from..)
            .next()
            .map(|(seq, slot)| (*seq, slot.clone()))
    }

    fn last_below(&self, below: SequenceNumber) -> Option<(SequenceNumber, Slot<E>)> {
        self.range(..below)
            .next_back()
            .map(|(seq, slot)| (*seq, slot.clone()))
    }
}

/// An `identity_at` for consumers that do not keep applied identities: every record below
/// `next_seq` is then a duplicate (allowed by docs/design/events.md §7.2, the writer guarantees
/// uniqueness).
pub fn identities_not_kept(_sequence_number: SequenceNumber) -> Option<EventUuid> {
    None
}

/// Decides what to do with one incoming record of one aggregate (docs/design/events.md §7.2).
///
/// `identity_at(s)` gives the identity applied at `s < state.next_seq` when the consumer
/// keeps it; a different identity there is a conflict. `now_micros` only stamps
/// `first_pending_at_micros`. The caller applies `outcome`'s events in order and writes
/// `state` and `pending_changes` together.
pub fn receive<E>(
    state: &AggregateSequence,
    pending: &impl PendingView<E>,
    identity_at: impl Fn(SequenceNumber) -> Option<EventUuid>,
    incoming: Incoming<E>,
    now_micros: i64,
) -> Received<E> {
    let unchanged = |outcome| Received {
        outcome,
        state: *state,
        pending_changes: Vec::new(),
    };
    let seq = incoming.sequence_number;
    let event_uuid = incoming.slot.event_uuid();

    if seq < state.next_seq {
        return match identity_at(seq) {
            Some(taken_by) if taken_by != event_uuid => unchanged(Outcome::Conflict { taken_by }),
            _ => unchanged(Outcome::Duplicate),
        };
    }

    let mut next = *state;
    let mut pending_changes = Vec::new();
    let outcome = match pending.get(seq) {
        Some(existing) if existing.event_uuid() != event_uuid => {
            return unchanged(Outcome::Conflict {
                taken_by: existing.event_uuid(),
            });
        }
        // Only a decodable re-delivery of an opaque entry changes anything.
        Some(existing) if !existing.is_opaque() || incoming.slot.is_opaque() => {
            return unchanged(Outcome::Duplicate);
        }
        Some(_opaque) => {
            next.n_opaque -= 1;
            if seq == state.next_seq {
                pending_changes.push(PendingChange::Remove {
                    sequence_number: seq,
                });
                next.n_pending -= 1;
                release(&mut next, pending, incoming, &mut pending_changes)
            } else {
                pending_changes.push(PendingChange::Put {
                    sequence_number: seq,
                    slot: incoming.slot,
                });
                Outcome::Parked
            }
        }
        None if seq == state.next_seq && !incoming.slot.is_opaque() => {
            release(&mut next, pending, incoming, &mut pending_changes)
        }
        // A slot covered by a parked range no_op is held by it (first in log order wins).
        None if seq > state.next_seq && state.n_pending > 0 => {
            if let Some((_, range)) = pending
                .last_below(seq)
                .filter(|(_, slot)| slot.covers_through().is_some_and(|through| through >= seq))
            {
                return unchanged(Outcome::Conflict {
                    taken_by: range.event_uuid(),
                });
            }
            park(&mut next, incoming, &mut pending_changes)
        }
        None => park(&mut next, incoming, &mut pending_changes),
    };

    if next.n_pending == 0 {
        next.highest_pending = None;
        next.first_pending_at_micros = None;
    } else {
        next.first_pending_at_micros = Some(state.first_pending_at_micros.unwrap_or(now_micros));
    }
    Received {
        outcome,
        state: next,
        pending_changes,
    }
}

/// Stores `incoming` as pending (behind a gap or an opaque entry).
fn park<E>(
    state: &mut AggregateSequence,
    incoming: Incoming<E>,
    pending_changes: &mut Vec<PendingChange<E>>,
) -> Outcome<E> {
    let seq = incoming.sequence_number;
    state.n_pending += 1;
    state.n_opaque += u64::from(incoming.slot.is_opaque());
    state.highest_pending = Some(state.highest_pending.map_or(seq, |high| high.max(seq)));
    pending_changes.push(PendingChange::Put {
        sequence_number: seq,
        slot: incoming.slot,
    });
    Outcome::Parked
}

/// Applies `head` (a decoded event at `state.next_seq`) and every decoded pending event
/// contiguous after it, stopping at a missing or opaque slot.
///
/// A range `no_op` makes every slot up to its `covers_through` contiguous: the entries
/// parked inside the range are found with range reads and applied in order, and `next_seq`
/// then jumps past the range. The work is bounded by the pending count, whatever the size
/// of the range.
fn release<E>(
    state: &mut AggregateSequence,
    pending: &impl PendingView<E>,
    head: Incoming<E>,
    pending_changes: &mut Vec<PendingChange<E>>,
) -> Outcome<E> {
    let mut applied = Vec::new();
    // Every slot up to `reach` is applied or covered, except the entries parked inside.
    let mut reach = head.sequence_number;
    if let Slot::Event {
        event_uuid,
        event,
        covers_through,
    } = head.slot
    {
        reach = reach.max(covers_through.unwrap_or(reach));
        applied.push(Sequenced {
            sequence_number: head.sequence_number,
            event_uuid,
            event,
            covers_through,
        });
    }
    state.next_seq = head.sequence_number.next();
    // Bounded by the pending count: each step removes one entry or ends a covered range.
    loop {
        if state.next_seq <= reach {
            // Inside a covered range: the next parked entry in it, if any.
            match pending
                .first_from(state.next_seq)
                .filter(|(seq, _)| *seq <= reach)
            {
                Some((seq, Slot::Opaque { .. })) => {
                    state.next_seq = seq;
                    break;
                }
                Some((
                    seq,
                    Slot::Event {
                        event_uuid,
                        event,
                        covers_through,
                    },
                )) => {
                    reach = reach.max(covers_through.unwrap_or(seq));
                    applied.push(Sequenced {
                        sequence_number: seq,
                        event_uuid,
                        event,
                        covers_through,
                    });
                    pending_changes.push(PendingChange::Remove {
                        sequence_number: seq,
                    });
                    state.n_pending -= 1;
                    state.next_seq = seq.next();
                }
                None => state.next_seq = SequenceNumber(reach.0.saturating_add(1)),
            }
            continue;
        }
        if state.n_pending == 0 {
            break;
        }
        let Some(Slot::Event {
            event_uuid,
            event,
            covers_through,
        }) = pending.get(state.next_seq)
        else {
            break;
        };
        let seq = state.next_seq;
        reach = covers_through.unwrap_or(seq);
        applied.push(Sequenced {
            sequence_number: seq,
            event_uuid,
            event,
            covers_through,
        });
        pending_changes.push(PendingChange::Remove {
            sequence_number: seq,
        });
        state.n_pending -= 1;
        state.next_seq = seq.next();
    }
    Outcome::Applied(applied)
}

/// One blocked aggregate, as listed by `/admin/list_sequence_gaps` (docs/design/api.md §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapInfo {
    pub aggregate: Uuid,
    /// The lowest sequence number not received; `None` when only opaque entries block.
    pub first_missing: Option<SequenceNumber>,
    /// Sequence numbers not received between `next_seq` and `highest_received`.
    pub missing_count: u64,
    pub highest_received: SequenceNumber,
    /// Pending entries waiting for an upgraded build to decode them.
    pub n_opaque: u64,
    /// When the aggregate became blocked (`first_pending_at_micros`).
    pub blocked_since_micros: i64,
}

/// The gap of one aggregate, or `None` when it is not blocked.
///
/// Slots covered by a parked range `no_op` count as received. Reads every pending entry
/// once (O(pending), whatever the size of a covered range).
pub fn gap_info<E>(
    aggregate: Uuid,
    state: &AggregateSequence,
    pending: &impl PendingView<E>,
) -> Option<GapInfo> {
    state.highest_pending?;
    let mut first_missing = None;
    let mut missing_count = 0u64;
    // Every slot below `expected` is applied, parked or covered.
    let mut expected = state.next_seq;
    let mut highest_received = state.next_seq;
    let mut cursor = state.next_seq;
    while let Some((seq, slot)) = pending.first_from(cursor) {
        if seq > expected {
            first_missing.get_or_insert(expected);
            missing_count += u64::try_from(seq.0 - expected.0).unwrap_or(0);
        }
        let last = slot.covers_through().unwrap_or(seq).max(seq);
        highest_received = highest_received.max(last);
        expected = expected.max(SequenceNumber(last.0.saturating_add(1)));
        cursor = seq.next();
    }
    Some(GapInfo {
        aggregate,
        first_missing,
        missing_count,
        highest_received,
        n_opaque: state.n_opaque,
        blocked_since_micros: state.first_pending_at_micros.unwrap_or(0),
    })
}

/// Sorts gaps as `/admin/list_sequence_gaps` lists them: oldest first, then by aggregate.
pub fn sort_oldest_first(gaps: &mut [GapInfo]) {
    gaps.sort_by_key(|gap| (gap.blocked_since_micros, gap.aggregate));
}

#[cfg(test)]
mod tests;
