//! Per-aggregate sequencing (spec events.md §7.2): park ahead of gaps, drop duplicates, detect conflicts.
//!
//! The core is [`receive`]: a pure function from one aggregate's [`AggregateSequence`], a read
//! view of its pending entries and one incoming record to an [`Outcome`], the new state and the
//! pending changes, so that a consumer writes state, pending and position in one sled batch.
//! [`SequencerMemory`] runs the same core over in-memory maps.

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
    /// A decoded event.
    Event { event_uuid: EventUuid, event: E },
    /// A record this build cannot decode (spec events.md §4.3). `raw` is whatever the
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
}

impl<E: Clone> PendingView<E> for std::collections::BTreeMap<SequenceNumber, Slot<E>> {
    fn get(&self, sequence_number: SequenceNumber) -> Option<Slot<E>> {
        std::collections::BTreeMap::get(self, &sequence_number).cloned()
    }

    fn contains(&self, sequence_number: SequenceNumber) -> bool {
        self.contains_key(&sequence_number)
    }
}

/// An `identity_at` for consumers that do not keep applied identities: every record below
/// `next_seq` is then a duplicate (allowed by spec events.md §7.2, the writer guarantees
/// uniqueness).
pub fn identities_not_kept(_sequence_number: SequenceNumber) -> Option<EventUuid> {
    None
}

/// Decides what to do with one incoming record of one aggregate (spec events.md §7.2).
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
        None => {
            next.n_pending += 1;
            next.n_opaque += u64::from(incoming.slot.is_opaque());
            next.highest_pending = Some(next.highest_pending.map_or(seq, |high| high.max(seq)));
            pending_changes.push(PendingChange::Put {
                sequence_number: seq,
                slot: incoming.slot,
            });
            Outcome::Parked
        }
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

/// Applies `head` (a decoded event at `state.next_seq`) and every decoded pending event
/// contiguous after it, stopping at a missing or opaque slot.
fn release<E>(
    state: &mut AggregateSequence,
    pending: &impl PendingView<E>,
    head: Incoming<E>,
    pending_changes: &mut Vec<PendingChange<E>>,
) -> Outcome<E> {
    let mut applied = Vec::new();
    if let Slot::Event { event_uuid, event } = head.slot {
        applied.push(Sequenced {
            sequence_number: head.sequence_number,
            event_uuid,
            event,
        });
    }
    state.next_seq = head.sequence_number.next();
    // Bounded by the pending count: each step removes one entry.
    while state.n_pending > 0 {
        let Some(Slot::Event { event_uuid, event }) = pending.get(state.next_seq) else {
            break;
        };
        applied.push(Sequenced {
            sequence_number: state.next_seq,
            event_uuid,
            event,
        });
        pending_changes.push(PendingChange::Remove {
            sequence_number: state.next_seq,
        });
        state.n_pending -= 1;
        state.next_seq = state.next_seq.next();
    }
    Outcome::Applied(applied)
}

/// One blocked aggregate, as listed by `/admin/list_sequence_gaps` (spec api.md §7).
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
pub fn gap_info<E>(
    aggregate: Uuid,
    state: &AggregateSequence,
    pending: &impl PendingView<E>,
) -> Option<GapInfo> {
    let highest_received = state.highest_pending?;
    let span = u64::try_from(highest_received.0 - state.next_seq.0 + 1).unwrap_or(0);
    let missing_count = span.saturating_sub(state.n_pending);
    let first_missing = if missing_count == 0 {
        None
    } else {
        // At most n_pending present slots precede the first missing one.
        let mut seq = state.next_seq;
        while seq < highest_received && pending.contains(seq) {
            seq = seq.next();
        }
        Some(seq)
    };
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
