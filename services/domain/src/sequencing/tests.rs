//! Tests of the sequencing core and of [`SequencerMemory`].

use std::collections::BTreeMap;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

/// One delivery: `(sequence_number, tag)`. Identity and payload derive from both, so the
/// same `(seq, tag)` is a re-delivery and a different tag at one seq is a different event.
#[derive(Clone, Copy, Debug)]
enum Step {
    Event(i64, char),
    Opaque(i64, char),
    /// A range no_op at the first number covering through the second.
    Range(i64, i64, char),
}

fn identity(seq: i64, tag: char) -> EventUuid {
    EventUuid(Uuid::from_u128(((seq as u128) << 32) | tag as u128))
}

fn label(event_uuid: EventUuid) -> String {
    let bits = event_uuid.0.as_u128();
    let tag = char::from_u32((bits & 0xffff_ffff) as u32).unwrap_or('?');
    format!("{}{tag}", bits >> 32)
}

fn incoming(step: Step) -> Incoming<String> {
    match step {
        Step::Event(seq, tag) => Incoming {
            sequence_number: SequenceNumber(seq),
            slot: Slot::Event {
                event_uuid: identity(seq, tag),
                event: format!("{seq}{tag}"),
                covers_through: None,
            },
        },
        Step::Range(seq, through, tag) => Incoming {
            sequence_number: SequenceNumber(seq),
            slot: Slot::Event {
                event_uuid: identity(seq, tag),
                event: format!("{seq}{tag}"),
                covers_through: Some(SequenceNumber(through)),
            },
        },
        Step::Opaque(seq, tag) => Incoming {
            sequence_number: SequenceNumber(seq),
            slot: Slot::Opaque {
                event_uuid: identity(seq, tag),
                raw: vec![0xc3, 0x01],
            },
        },
    }
}

fn summary(outcome: &Outcome<String>) -> String {
    match outcome {
        Outcome::Applied(events) => {
            let applied: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
            // The payload must travel with its own identity and position.
            for event in events {
                assert_eq!(label(event.event_uuid), event.event);
                assert!(event.event.starts_with(&event.sequence_number.to_string()));
            }
            format!("applied {}", applied.join(" "))
        }
        Outcome::Parked => "parked".to_owned(),
        Outcome::Duplicate => "duplicate".to_owned(),
        Outcome::Conflict { taken_by } => format!("conflict {}", label(*taken_by)),
    }
}

fn state_summary(state: &AggregateSequence) -> String {
    let since = state
        .first_pending_at_micros
        .map_or("-".to_owned(), |micros| micros.to_string());
    let highest = state
        .highest_pending
        .map_or("-".to_owned(), |seq| seq.to_string());
    format!(
        "next={} pending={} opaque={} highest={highest} since={since}",
        state.next_seq, state.n_pending, state.n_opaque
    )
}

/// Runs `steps` on one aggregate (step i at now = 100 * (i + 1)) and compares every
/// outcome and the final state.
fn check_with(
    mut sequencer: SequencerMemory<String>,
    steps: &[Step],
    expected: &[&str],
    expected_state: &str,
) {
    let course = Uuid::from_u128(7);
    let outcomes: Vec<String> = steps
        .iter()
        .zip(1..)
        .map(|(step, idx)| summary(&sequencer.receive(course, incoming(*step), 100 * idx)))
        .collect();
    assert_eq!(outcomes, expected, "steps {steps:?}");
    assert_eq!(state_summary(&sequencer.state(course)), expected_state);
}

fn check(steps: &[Step], expected: &[&str], expected_state: &str) {
    check_with(
        SequencerMemory::with_identities(),
        steps,
        expected,
        expected_state,
    );
}

use Step::{Event as E, Opaque as O, Range as R};

#[test]
fn applies_in_order_delivery_at_once() {
    check(
        &[E(0, 'a'), E(1, 'a'), E(2, 'a')],
        &["applied 0a", "applied 1a", "applied 2a"],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn parks_ahead_of_a_gap_and_releases_the_contiguous_run() {
    check(
        &[E(2, 'a'), E(0, 'a'), E(1, 'a')],
        &["parked", "applied 0a", "applied 1a 2a"],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
    check(
        &[E(0, 'a'), E(2, 'a'), E(3, 'a'), E(5, 'a'), E(1, 'a')],
        &[
            "applied 0a",
            "parked",
            "parked",
            "parked",
            "applied 1a 2a 3a",
        ],
        "next=4 pending=1 opaque=0 highest=5 since=200",
    );
}

#[test]
fn a_no_op_fills_a_gap_like_any_event() {
    check(
        &[E(0, 'a'), E(2, 'a'), E(1, 'n')],
        &["applied 0a", "parked", "applied 1n 2a"],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn drops_duplicates_before_and_after_application() {
    check(
        &[
            E(0, 'a'),
            E(2, 'a'),
            E(2, 'a'),
            E(1, 'a'),
            E(2, 'a'),
            E(0, 'a'),
        ],
        &[
            "applied 0a",
            "parked",
            "duplicate",
            "applied 1a 2a",
            "duplicate",
            "duplicate",
        ],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn a_different_identity_at_a_taken_slot_is_a_conflict_and_the_first_wins() {
    // At an applied slot whose identity is known.
    check(
        &[E(0, 'a'), E(0, 'b'), E(1, 'a')],
        &["applied 0a", "conflict 0a", "applied 1a"],
        "next=2 pending=0 opaque=0 highest=- since=-",
    );
    // At a pending slot.
    check(
        &[E(0, 'a'), E(2, 'a'), E(2, 'b'), E(1, 'a')],
        &["applied 0a", "parked", "conflict 2a", "applied 1a 2a"],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
    // An opaque record conflicts like any other.
    check(
        &[E(0, 'a'), E(2, 'a'), O(2, 'b'), O(0, 'b')],
        &["applied 0a", "parked", "conflict 2a", "conflict 0a"],
        "next=1 pending=1 opaque=0 highest=2 since=200",
    );
}

#[test]
fn without_identities_an_applied_slot_only_yields_duplicates() {
    check_with(
        SequencerMemory::new(),
        &[E(0, 'a'), E(0, 'b'), E(2, 'a'), E(2, 'b')],
        &["applied 0a", "duplicate", "parked", "conflict 2a"],
        "next=1 pending=1 opaque=0 highest=2 since=300",
    );
}

#[test]
fn an_opaque_entry_blocks_its_slot_until_decoded() {
    // Opaque at the next slot: everything after it waits, even contiguous events.
    check(
        &[E(0, 'a'), O(1, 'a'), E(2, 'a'), O(1, 'a'), E(1, 'a')],
        &[
            "applied 0a",
            "parked",
            "parked",
            "duplicate",
            "applied 1a 2a",
        ],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
    // Opaque further out: decoded in place, released when the gap before it closes.
    check(
        &[E(0, 'a'), O(2, 'a'), E(2, 'a'), E(1, 'a')],
        &["applied 0a", "parked", "parked", "applied 1a 2a"],
        "next=3 pending=0 opaque=0 highest=- since=-",
    );
    check(
        &[E(0, 'a'), O(2, 'a'), E(1, 'a')],
        &["applied 0a", "parked", "applied 1a"],
        "next=2 pending=1 opaque=1 highest=2 since=200",
    );
    // An opaque re-delivery never replaces a decoded entry.
    check(
        &[E(2, 'a'), O(2, 'a'), O(0, 'a'), E(1, 'a'), O(1, 'a')],
        &["parked", "duplicate", "parked", "parked", "duplicate"],
        "next=0 pending=3 opaque=1 highest=2 since=100",
    );
}

#[test]
fn first_pending_at_is_set_when_pending_fills_and_cleared_when_it_empties() {
    let course = Uuid::from_u128(1);
    let mut sequencer = SequencerMemory::with_identities();
    let steps = [
        (
            E(0, 'a'),
            100,
            "next=1 pending=0 opaque=0 highest=- since=-",
        ),
        (
            E(2, 'a'),
            200,
            "next=1 pending=1 opaque=0 highest=2 since=200",
        ),
        (
            E(4, 'a'),
            300,
            "next=1 pending=2 opaque=0 highest=4 since=200",
        ),
        // Part of the block resolves; the aggregate stays blocked since 200.
        (
            E(1, 'a'),
            400,
            "next=3 pending=1 opaque=0 highest=4 since=200",
        ),
        // A duplicate or conflict changes nothing.
        (
            E(4, 'b'),
            450,
            "next=3 pending=1 opaque=0 highest=4 since=200",
        ),
        (
            E(3, 'a'),
            500,
            "next=5 pending=0 opaque=0 highest=- since=-",
        ),
        (
            E(6, 'a'),
            600,
            "next=5 pending=1 opaque=0 highest=6 since=600",
        ),
    ];
    for (step, now, expected) in steps {
        sequencer.receive(course, incoming(step), now);
        assert_eq!(
            state_summary(&sequencer.state(course)),
            expected,
            "{step:?}"
        );
    }
}

#[test]
fn a_gap_in_one_aggregate_never_holds_up_another() {
    let (blocked, flowing) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let mut sequencer = SequencerMemory::new();
    let deliveries = [
        (blocked, E(0, 'a'), "applied 0a"),
        (blocked, E(2, 'a'), "parked"),
        (flowing, E(0, 'a'), "applied 0a"),
        (flowing, E(1, 'a'), "applied 1a"),
        // Same sequence number and tag, other aggregate: not a duplicate.
        (flowing, E(2, 'a'), "applied 2a"),
        (blocked, E(1, 'a'), "applied 1a 2a"),
    ];
    for (aggregate, step, expected) in deliveries {
        assert_eq!(
            summary(&sequencer.receive(aggregate, incoming(step), 1)),
            expected
        );
    }
    assert_eq!(sequencer.state(blocked).next_seq, SequenceNumber(3));
    assert_eq!(sequencer.state(flowing).next_seq, SequenceNumber(3));
    assert_eq!(sequencer.n_duplicates(), 0);
}

#[test]
fn receive_reports_the_pending_changes_to_write_in_one_batch() {
    let mut pending: BTreeMap<SequenceNumber, Slot<String>> = BTreeMap::new();
    let state = AggregateSequence::default();

    let parked = receive(
        &state,
        &pending,
        identities_not_kept,
        incoming(E(1, 'a')),
        10,
    );
    assert_eq!(parked.outcome, Outcome::Parked);
    assert_eq!(
        parked.pending_changes,
        vec![PendingChange::Put {
            sequence_number: SequenceNumber(1),
            slot: incoming(E(1, 'a')).slot,
        }]
    );
    pending.insert(SequenceNumber(1), incoming(E(1, 'a')).slot);

    let released = receive(
        &parked.state,
        &pending,
        identities_not_kept,
        incoming(E(0, 'a')),
        20,
    );
    assert_eq!(summary(&released.outcome), "applied 0a 1a");
    // The event applied directly is never written to pending.
    assert_eq!(
        released.pending_changes,
        vec![PendingChange::Remove {
            sequence_number: SequenceNumber(1)
        }]
    );
    assert_eq!(
        state_summary(&released.state),
        "next=2 pending=0 opaque=0 highest=- since=-"
    );
}

#[test]
fn gap_info_describes_missing_numbers_and_opaque_blocks() {
    let course = Uuid::from_u128(9);
    let cases: [(&[Step], &str); 4] = [
        (&[E(0, 'a'), E(1, 'a')], "not blocked"),
        (
            &[E(0, 'a'), E(2, 'a'), E(3, 'a'), E(6, 'a')],
            "first_missing=1 missing=3 highest=6 opaque=0",
        ),
        (
            &[E(0, 'a'), O(1, 'a'), E(2, 'a'), E(4, 'a')],
            "first_missing=3 missing=1 highest=4 opaque=1",
        ),
        // Only an opaque entry blocks.
        (
            &[E(0, 'a'), O(1, 'a'), E(2, 'a')],
            "first_missing=- missing=0 highest=2 opaque=1",
        ),
    ];
    for (steps, expected) in cases {
        let mut sequencer = SequencerMemory::new();
        for (step, now) in steps.iter().zip(1..) {
            sequencer.receive(course, incoming(*step), now * 1000);
        }
        let got = match sequencer.gaps().as_slice() {
            [] => "not blocked".to_owned(),
            [gap] => {
                assert_eq!(gap.aggregate, course);
                assert_eq!(gap.blocked_since_micros, 2000);
                let first_missing = gap
                    .first_missing
                    .map_or("-".to_owned(), |seq| seq.to_string());
                format!(
                    "first_missing={first_missing} missing={} highest={} opaque={}",
                    gap.missing_count, gap.highest_received, gap.n_opaque
                )
            }
            more => format!("{} gaps", more.len()),
        };
        assert_eq!(got, expected, "{steps:?}");
    }
}

#[test]
fn gaps_are_listed_oldest_first() {
    let (young, old, fine) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let mut sequencer = SequencerMemory::new();
    sequencer.receive(fine, incoming(E(0, 'a')), 50);
    sequencer.receive(young, incoming(E(3, 'a')), 300);
    sequencer.receive(old, incoming(E(1, 'a')), 100);
    sequencer.receive(young, incoming(E(5, 'a')), 400);
    let listed: Vec<(Uuid, i64, i64)> = sequencer
        .gaps()
        .iter()
        .map(|gap| {
            (
                gap.aggregate,
                gap.blocked_since_micros,
                gap.highest_received.0,
            )
        })
        .collect();
    assert_eq!(listed, vec![(old, 100, 1), (young, 300, 5)]);
}

#[test]
fn a_range_no_op_fills_two_million_slots_in_one_step() {
    check(
        &[
            E(0, 'a'),
            E(2_000_002, 'a'),
            R(1, 2_000_001, 'n'),
            E(2_000_003, 'a'),
        ],
        &[
            "applied 0a",
            "parked",
            "applied 1n 2000002a",
            "applied 2000003a",
        ],
        "next=2000004 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn a_range_no_op_below_a_stray_maximal_sequence_number_lets_the_course_read_through() {
    // A client bug sent 2^31 - 1; everything missing below it is filled by one record.
    check(
        &[
            E(0, 'a'),
            E(1, 'a'),
            E(2_147_483_647, 's'),
            E(3, 'a'),
            R(2, 2_147_483_646, 'n'),
        ],
        &[
            "applied 0a",
            "applied 1a",
            "parked",
            "parked",
            "applied 2n 3a 2147483647s",
        ],
        "next=2147483648 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn events_parked_inside_a_range_keep_their_slots_and_apply_in_order() {
    // 5 and 7 were received before the range: they hold their slots, the range covers the
    // rest of 1..=10; 20 stays parked behind the new gap at 11.
    check(
        &[E(0, 'a'), E(7, 'a'), E(5, 'a'), E(20, 'a'), R(1, 10, 'n')],
        &[
            "applied 0a",
            "parked",
            "parked",
            "parked",
            "applied 1n 5a 7a",
        ],
        "next=11 pending=1 opaque=0 highest=20 since=200",
    );
    // A range parked inside another range extends it.
    check(
        &[E(0, 'a'), E(3, 'a'), R(8, 30, 'm'), R(1, 10, 'n')],
        &["applied 0a", "parked", "parked", "applied 1n 3a 8m"],
        "next=31 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn a_range_parked_behind_a_gap_applies_when_the_gap_closes() {
    check(
        &[
            E(0, 'a'),
            R(3, 1_000, 'n'),
            E(1_001, 'a'),
            E(2, 'a'),
            E(1, 'a'),
        ],
        &[
            "applied 0a",
            "parked",
            "parked",
            "parked",
            "applied 1a 2a 3n 1001a",
        ],
        "next=1002 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn a_later_record_for_a_covered_slot_is_a_conflict_with_the_range() {
    // Covered by an applied range: the range's identity holds the slot.
    check(
        &[
            E(0, 'a'),
            R(1, 100, 'n'),
            E(50, 'b'),
            R(1, 100, 'n'),
            E(101, 'a'),
        ],
        &[
            "applied 0a",
            "applied 1n",
            "conflict 1n",
            "duplicate",
            "applied 101a",
        ],
        "next=102 pending=0 opaque=0 highest=- since=-",
    );
    // Covered by a parked range.
    check(
        &[
            E(0, 'a'),
            R(3, 100, 'n'),
            E(50, 'b'),
            O(60, 'c'),
            E(2, 'a'),
            E(1, 'a'),
        ],
        &[
            "applied 0a",
            "parked",
            "conflict 3n",
            "conflict 3n",
            "parked",
            "applied 1a 2a 3n",
        ],
        "next=101 pending=0 opaque=0 highest=- since=-",
    );
    // A consumer that keeps no identities drops it as a duplicate.
    check_with(
        SequencerMemory::new(),
        &[E(0, 'a'), R(1, 100, 'n'), E(50, 'b')],
        &["applied 0a", "applied 1n", "duplicate"],
        "next=101 pending=0 opaque=0 highest=- since=-",
    );
}

#[test]
fn gaps_count_slots_covered_by_a_parked_range_as_received() {
    let course = Uuid::from_u128(9);
    let mut sequencer = SequencerMemory::with_identities();
    for (step, now) in [E(0, 'a'), R(5, 1_000, 'n'), E(2_000, 'a')]
        .into_iter()
        .zip(1..)
    {
        sequencer.receive(course, incoming(step), now);
    }
    let gaps = sequencer.gaps();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].first_missing, Some(SequenceNumber(1)));
    // 1..=4 and 1001..=1999.
    assert_eq!(gaps[0].missing_count, 4 + 999);
    assert_eq!(gaps[0].highest_received, SequenceNumber(2_000));
    // A range parked at the end: the highest received is its last covered slot.
    let mut sequencer = SequencerMemory::with_identities();
    sequencer.receive(course, incoming(E(0, 'a')), 1);
    sequencer.receive(course, incoming(R(2, 2_000_000, 'n')), 2);
    let gaps = sequencer.gaps();
    assert_eq!(gaps[0].first_missing, Some(SequenceNumber(1)));
    assert_eq!(gaps[0].missing_count, 1);
    assert_eq!(gaps[0].highest_received, SequenceNumber(2_000_000));
}

/// Every sequence number of `0..n` once, plus random re-deliveries, in random order.
fn shuffled_deliveries() -> impl Strategy<Value = (i64, Vec<i64>)> {
    (1..40i64).prop_flat_map(|n| {
        proptest::collection::vec(0..n, 0..(n as usize)).prop_flat_map(move |duplicates| {
            let mut deliveries: Vec<i64> = (0..n).collect();
            deliveries.extend(duplicates);
            (Just(n), Just(deliveries).prop_shuffle())
        })
    })
}

/// Events at some numbers of `0..n`, one range no_op per missing run (as the writer fills
/// them), and re-deliveries, in random order.
fn shuffled_with_ranges() -> impl Strategy<Value = (i64, Vec<Step>)> {
    (2..60i64, proptest::collection::vec(any::<bool>(), 60)).prop_flat_map(|(n, present)| {
        let mut steps = Vec::new();
        let mut seq = 0;
        while seq < n {
            if seq == 0 || present[seq as usize] {
                steps.push(E(seq, 'a'));
                seq += 1;
            } else {
                let from = seq;
                while seq < n && !present[seq as usize] {
                    seq += 1;
                }
                steps.push(R(from, seq - 1, 'n'));
            }
        }
        let mut deliveries = steps.clone();
        deliveries.extend(steps.iter().take(3).copied());
        (Just(n), Just(deliveries).prop_shuffle())
    })
}

proptest! {
    #[test]
    fn ranges_in_any_delivery_order_apply_every_record_once_in_order((n, deliveries) in shuffled_with_ranges()) {
        let course = Uuid::from_u128(5);
        let mut sequencer = SequencerMemory::with_identities();
        let mut applied = Vec::new();
        for (step, now) in deliveries.iter().zip(0..) {
            if let Outcome::Applied(events) = sequencer.receive(course, incoming(*step), now) {
                applied.extend(events.into_iter().map(|event| event.sequence_number.0));
            }
        }
        let mut expected: Vec<i64> = deliveries
            .iter()
            .map(|step| match step {
                E(seq, _) | O(seq, _) | R(seq, _, _) => *seq,
            })
            .collect();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(applied, expected);
        prop_assert_eq!(sequencer.n_conflicts(), 0);
        prop_assert_eq!(
            state_summary(&sequencer.state(course)),
            format!("next={n} pending=0 opaque=0 highest=- since=-")
        );
    }

    #[test]
    fn any_delivery_order_applies_each_number_once_in_order((n, deliveries) in shuffled_deliveries()) {
        let course = Uuid::from_u128(3);
        let mut sequencer = SequencerMemory::with_identities();
        let mut applied = Vec::new();
        for (seq, now) in deliveries.iter().zip(0..) {
            if let Outcome::Applied(events) = sequencer.receive(course, incoming(E(*seq, 'a')), now) {
                applied.extend(events.into_iter().map(|event| event.sequence_number.0));
            }
        }
        prop_assert_eq!(applied, (0..n).collect::<Vec<_>>());
        prop_assert_eq!(sequencer.n_duplicates(), deliveries.len() as u64 - n as u64);
        prop_assert_eq!(sequencer.n_conflicts(), 0);
        prop_assert_eq!(
            state_summary(&sequencer.state(course)),
            format!("next={n} pending=0 opaque=0 highest=- since=-")
        );
    }

    #[test]
    fn an_opaque_delivery_anywhere_only_delays((n, deliveries) in shuffled_deliveries(), opaque_pick in any::<prop::sample::Index>(), at_pick in any::<prop::sample::Index>()) {
        let course = Uuid::from_u128(4);
        let opaque_seq = opaque_pick.index(n as usize) as i64;
        let mut steps: Vec<Step> = deliveries.iter().map(|seq| E(*seq, 'a')).collect();
        steps.insert(at_pick.index(steps.len() + 1), O(opaque_seq, 'a'));
        let mut sequencer = SequencerMemory::with_identities();
        let mut applied = Vec::new();
        for (step, now) in steps.into_iter().zip(0..) {
            if let Outcome::Applied(events) = sequencer.receive(course, incoming(step), now) {
                applied.extend(events.into_iter().map(|event| event.sequence_number.0));
            }
        }
        prop_assert_eq!(applied, (0..n).collect::<Vec<_>>());
        prop_assert!(sequencer.gaps().is_empty());
    }
}
