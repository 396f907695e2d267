//! Tests of the event-stream reads, including the conformance cases of docs/design/api.md §6.3.

use std::cell::Cell;

use uuid::Uuid;

use super::*;

const R: &str = "record_response";
const U: &str = "update_roster";
const SMALL: usize = 100;

/// `(aggregate, sequence_number, event_type)`; every event has `SMALL` bytes of data.
fn log(events: &[(u128, i64, &str)]) -> MemoryEventLog<String> {
    sized_log(
        &events
            .iter()
            .map(|(aggregate, seq, event_type)| (*aggregate, *seq, *event_type, SMALL))
            .collect::<Vec<_>>(),
    )
}

fn sized_log(events: &[(u128, i64, &str, usize)]) -> MemoryEventLog<String> {
    let mut log = MemoryEventLog::new();
    for (aggregate, seq, event_type, data_len) in events {
        log.insert(
            Uuid::from_u128(*aggregate),
            SequenceNumber(*seq),
            event_type,
            *data_len,
            format!("{seq}:{event_type}"),
        );
    }
    log
}

/// `(aggregate, offset, event types)`, with `request_uuid` = 1000 + index.
fn requests(specs: &[(u128, i64, &[&str])]) -> Vec<SubRequest> {
    specs
        .iter()
        .zip(1000u128..)
        .map(|((aggregate, offset, event_types), request)| SubRequest {
            request_uuid: RequestUuid(Uuid::from_u128(request)),
            aggregate: Uuid::from_u128(*aggregate),
            sequence_number_offset: SequenceNumber(*offset),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        })
        .collect()
}

/// Sequence numbers as runs: `0-2,5`.
fn runs(numbers: &[i64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut idx = 0;
    while idx < numbers.len() {
        let start = numbers[idx];
        let mut end = start;
        while idx + 1 < numbers.len() && numbers[idx + 1] == end + 1 {
            idx += 1;
            end += 1;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        idx += 1;
    }
    parts.join(",")
}

fn summary(response: &SubResponse<String>) -> String {
    let numbers: Vec<i64> = response
        .events
        .iter()
        .map(|(seq, event)| {
            // Every event travels with its own sequence number.
            assert!(event.starts_with(&format!("{seq}:")), "{seq} {event}");
            seq.0
        })
        .collect();
    format!(
        "events={} gap={} end={}",
        runs(&numbers),
        response.is_gap,
        response.is_end
    )
}

fn check_sized(
    log: &MemoryEventLog<String>,
    specs: &[(u128, i64, &[&str])],
    max_num_events: usize,
    size_cap_bytes: usize,
    expected: &[&str],
) {
    let requests = requests(specs);
    let responses = fetch_events(log, &requests, max_num_events, size_cap_bytes);
    for (request, response) in requests.iter().zip(&responses) {
        assert_eq!(response.request_uuid, request.request_uuid);
        assert_eq!(response.aggregate, request.aggregate);
    }
    let got: Vec<String> = responses.iter().map(summary).collect();
    assert_eq!(got, expected, "requests {specs:?}");
}

fn check(
    log: &MemoryEventLog<String>,
    specs: &[(u128, i64, &[&str])],
    max_num_events: usize,
    expected: &[&str],
) {
    check_sized(log, specs, max_num_events, MAX_EVENT_DATA_BYTES, expected);
}

#[test]
fn conformance_1_contiguous_events_of_the_requested_types() {
    let log = log(&[
        (1, 0, R),
        (1, 1, U),
        (1, 2, R),
        (2, 0, U),
        (2, 1, R),
        (2, 2, U),
    ]);
    check(
        &log,
        &[(1, 0, &[R]), (2, 0, &[U])],
        1000,
        &[
            "events=0,2 gap=false end=true",
            "events=0,2 gap=false end=true",
        ],
    );
}

#[test]
fn conformance_2_a_missing_number_holds_back_what_follows() {
    let log = log(&[
        (1, 0, R),
        (1, 1, U),
        (1, 3, R),
        (2, 0, U),
        (2, 1, R),
        (2, 3, U),
    ]);
    check(
        &log,
        &[(1, 0, &[R]), (2, 0, &[U])],
        1000,
        &["events=0 gap=true end=false", "events=0 gap=true end=false"],
    );
}

#[test]
fn conformance_3_unknown_aggregate_or_offset_beyond_the_end() {
    let log = log(&[(1, 0, R), (1, 1, U), (1, 2, R)]);
    check(
        &log,
        &[(9, 0, &[R]), (1, 3, &[R]), (1, 50, &[R, U])],
        1000,
        &[
            "events= gap=false end=true",
            "events= gap=false end=true",
            "events= gap=false end=true",
        ],
    );
}

#[test]
fn conformance_4_the_limit_is_shared_breadth_first() {
    let events: Vec<(u128, i64, &str)> = (0..600)
        .flat_map(|seq| [(1, seq, R), (2, seq + 10, R)])
        .chain((0..10).map(|seq| (2, seq, U)))
        .collect();
    // Aggregate 2 is read from offset 10, so both are at the same distances.
    check(
        &log(&events),
        &[(1, 0, &[R]), (2, 10, &[R])],
        1000,
        &[
            "events=0-499 gap=false end=false",
            "events=10-509 gap=false end=false",
        ],
    );
}

#[test]
fn conformance_5_a_hole_anywhere_below_the_offset_blocks() {
    let log = log(&[(1, 0, R), (1, 1, R), (1, 2, R), (1, 4, R), (1, 5, R)]);
    check(&log, &[(1, 5, &[R])], 1000, &["events= gap=true end=false"]);
}

#[test]
fn conformance_6_a_hole_behind_an_unrequested_type_is_detected() {
    let log = log(&[(1, 0, R), (1, 1, U), (1, 2, R), (1, 4, U), (1, 5, R)]);
    check(
        &log,
        &[(1, 0, &[R])],
        1000,
        &["events=0,2 gap=true end=false"],
    );
}

#[test]
fn a_gap_just_below_the_offset_blocks() {
    let log = log(&[(1, 0, R), (1, 1, R), (1, 2, R), (1, 4, R), (1, 5, R)]);
    check(&log, &[(1, 4, &[R])], 1000, &["events= gap=true end=false"]);
    check(&log, &[(1, 3, &[R])], 1000, &["events= gap=true end=false"]);
    check(
        &log,
        &[(1, 1, &[R])],
        1000,
        &["events=1-2 gap=true end=false"],
    );
}

#[test]
fn the_limit_can_leave_a_sub_request_empty_but_not_ended() {
    let log = log(&[(1, 0, R), (1, 1, R), (2, 0, R), (3, 0, R)]);
    check(
        &log,
        &[(1, 0, &[R]), (2, 0, &[R]), (3, 0, &[R])],
        2,
        &[
            "events=0 gap=false end=false",
            "events=0 gap=false end=true",
            "events= gap=false end=false",
        ],
    );
}

#[test]
fn no_requested_type_after_the_offset_is_an_end() {
    // The placeholder of aggregate 1 takes one unit of the limit, as in §6.3.
    let log = log(&[(1, 0, R), (1, 1, U), (1, 2, U), (2, 0, R), (2, 1, R)]);
    check(
        &log,
        &[(1, 1, &[R]), (2, 0, &[R])],
        2,
        &["events= gap=false end=true", "events=0 gap=false end=false"],
    );
}

#[test]
fn a_hole_beyond_the_limit_is_not_yet_a_gap() {
    let events: Vec<(u128, i64, &str)> = (0..6).chain([7]).map(|seq| (1, seq, R)).collect();
    let log = log(&events);
    check(
        &log,
        &[(1, 0, &[R])],
        3,
        &["events=0-2 gap=false end=false"],
    );
    check(
        &log,
        &[(1, 3, &[R])],
        3,
        &["events=3-5 gap=false end=false"],
    );
    check(&log, &[(1, 6, &[R])], 3, &["events= gap=true end=false"]);
}

#[test]
fn the_size_cap_keeps_a_prefix_and_always_the_first_row() {
    let mb = 1_000_000;
    let log = sized_log(&[
        (1, 0, R, 3 * mb / 2),
        (1, 1, R, 3 * mb / 2),
        (1, 2, R, 3 * mb / 2),
        (2, 0, R, 5 * mb),
        (3, 0, U, 10),
        (4, 0, R, 5 * mb),
        (4, 1, R, 10),
    ]);
    // 1.5 + 1.5 < 4, 4.5 ≥ 4.
    check(
        &log,
        &[(1, 0, &[R])],
        1000,
        &["events=0-1 gap=false end=false"],
    );
    // Alone and oversized: still served.
    check(
        &log,
        &[(2, 0, &[R])],
        1000,
        &["events=0 gap=false end=true"],
    );
    check(
        &log,
        &[(4, 0, &[R])],
        1000,
        &["events=0 gap=false end=false"],
    );
    // Behind a placeholder, the first row is still served.
    check(
        &log,
        &[(3, 0, &[R]), (2, 0, &[R])],
        1000,
        &["events= gap=false end=true", "events=0 gap=false end=true"],
    );
    // Breadth-first: the second aggregate's first row is the second candidate.
    check_sized(
        &log,
        &[(1, 0, &[R]), (4, 0, &[R])],
        1000,
        MAX_EVENT_DATA_BYTES,
        &[
            "events=0 gap=false end=false",
            "events= gap=false end=false",
        ],
    );
}

#[test]
fn no_sub_requests_no_responses() {
    let log = log(&[(1, 0, R)]);
    assert!(fetch_events(&log, &[], 1000, MAX_EVENT_DATA_BYTES).is_empty());
}

/// Counts the rows a fetch reads from the view.
struct CountingView<'log> {
    log: &'log MemoryEventLog<String>,
    n_rows_read: Cell<usize>,
}

impl EventLogView for CountingView<'_> {
    type Event = String;

    fn max_sequence(&self, aggregate: Uuid) -> Option<SequenceNumber> {
        self.log.max_sequence(aggregate)
    }

    fn first_missing_from(&self, aggregate: Uuid, from: SequenceNumber) -> SequenceNumber {
        self.log.first_missing_from(aggregate, from)
    }

    fn events_from(
        &self,
        aggregate: Uuid,
        offset: SequenceNumber,
        event_types: &[String],
        limit: usize,
    ) -> Vec<LogRow<String>> {
        let rows = self.log.events_from(aggregate, offset, event_types, limit);
        self.n_rows_read.set(self.n_rows_read.get() + rows.len());
        rows
    }

    fn any_after(&self, aggregate: Uuid, after: SequenceNumber, event_types: &[String]) -> bool {
        self.log.any_after(aggregate, after, event_types)
    }
}

#[test]
fn reads_about_the_limit_from_the_view_not_every_row() {
    // Ten busy aggregates, then one busy aggregate among nine with nothing to return.
    let busy: Vec<(u128, i64, &str)> = (0..10)
        .flat_map(|aggregate| (0..3000).map(move |seq| (aggregate, seq, R)))
        .collect();
    let lopsided: Vec<(u128, i64, &str)> = (0..5000)
        .map(|seq| (0, seq, R))
        .chain((1..10).map(|aggregate| (aggregate, 0, U)))
        .collect();
    let cases = [
        (busy, "events=0-99 gap=false end=false"),
        (lopsided, "events=0-990 gap=false end=false"),
    ];
    for (events, expected_first) in cases {
        let log = log(&events);
        let view = CountingView {
            log: &log,
            n_rows_read: Cell::new(0),
        };
        let specs: Vec<(u128, i64, &[&str])> =
            (0..10).map(|aggregate| (aggregate, 0, &[R][..])).collect();
        let responses = fetch_events(&view, &requests(&specs), 1000, MAX_EVENT_DATA_BYTES);
        let n_returned: usize = responses.iter().map(|r| r.events.len()).sum();
        assert_eq!(summary(&responses[0]), expected_first);
        assert!(n_returned <= 1000);
        assert!(
            view.n_rows_read.get() <= 2 * 1000 + 10,
            "read {} rows",
            view.n_rows_read.get()
        );
    }
}

fn check_metadata(
    numbers: &[i64],
    offset: i64,
    max: usize,
    is_fully_caught_up: bool,
    expected: &[i64],
) {
    let consumed = Cell::new(0usize);
    let numbered = numbers.iter().map(|number| {
        consumed.set(consumed.get() + 1);
        (*number, format!("course {number}"))
    });
    let listed = metadata_prefix(numbered, offset, max, is_fully_caught_up);
    for (number, entry) in &listed {
        assert_eq!(entry, &format!("course {number}"));
    }
    let got: Vec<i64> = listed.iter().map(|(number, _)| *number).collect();
    assert_eq!(
        got, expected,
        "{numbers:?} from {offset} max {max} caught up {is_fully_caught_up}"
    );
    let n_below_offset = numbers.iter().filter(|number| **number < offset).count();
    assert!(
        consumed.get() <= n_below_offset + expected.len() + 1,
        "read too far"
    );
}

#[test]
fn metadata_lists_are_a_contiguous_prefix_unless_caught_up() {
    check_metadata(&[0, 1, 2, 4, 5], 0, 10, false, &[0, 1, 2]);
    check_metadata(&[0, 1, 2, 4, 5], 0, 10, true, &[0, 1, 2, 4, 5]);
    check_metadata(&[0, 1, 2, 4, 5], 0, 2, false, &[0, 1]);
    check_metadata(&[0, 1, 2, 4, 5], 0, 4, true, &[0, 1, 2, 4]);
    check_metadata(&[4, 5], 3, 10, false, &[]);
    check_metadata(&[4, 5], 3, 10, true, &[4, 5]);
    check_metadata(&[1, 2, 3, 4], 3, 10, false, &[3, 4]);
    check_metadata(&[], 0, 10, true, &[]);
}

/// A log with range no_ops: `(aggregate, sequence_number, through)`.
fn with_ranges(
    mut log: MemoryEventLog<String>,
    ranges: &[(u128, i64, i64)],
) -> MemoryEventLog<String> {
    for (aggregate, seq, through) in ranges {
        log.insert_range(
            Uuid::from_u128(*aggregate),
            SequenceNumber(*seq),
            SequenceNumber(*through),
            "no_op",
            SMALL,
            format!("{seq}:no_op"),
        );
    }
    log
}

const N: &str = "no_op";

#[test]
fn a_range_no_op_makes_two_million_slots_present_and_is_one_row() {
    let log = with_ranges(
        log(&[(1, 0, R), (1, 1, R), (1, 2_000_002, R), (1, 2_000_003, U)]),
        &[(1, 2, 2_000_001)],
    );
    check(
        &log,
        &[(1, 0, &[R]), (1, 0, &[R, N]), (1, 1_000_000, &[R, U])],
        1000,
        &[
            "events=0-1,2000002 gap=false end=true",
            // The no_op is one row at its own slot, however many slots it covers.
            "events=0-2,2000002 gap=false end=true",
            "events=2000002-2000003 gap=false end=true",
        ],
    );
    let view = &log;
    assert_eq!(
        view.first_missing_from(Uuid::from_u128(1), SequenceNumber(0)),
        SequenceNumber(2_000_004)
    );
    // From inside the range.
    assert_eq!(
        view.first_missing_from(Uuid::from_u128(1), SequenceNumber(77)),
        SequenceNumber(2_000_004)
    );
}

#[test]
fn a_range_no_op_ending_beyond_every_event_is_the_aggregate_s_maximum() {
    let log = with_ranges(log(&[(1, 0, R), (1, 1, R)]), &[(1, 2, 50)]);
    assert_eq!(
        log.max_sequence(Uuid::from_u128(1)),
        Some(SequenceNumber(50))
    );
    check(
        &log,
        &[(1, 0, &[R]), (1, 30, &[R]), (1, 51, &[R])],
        1000,
        &[
            "events=0-1 gap=false end=true",
            "events= gap=false end=true",
            "events= gap=false end=true",
        ],
    );
}

#[test]
fn a_range_that_does_not_reach_the_next_event_leaves_a_gap() {
    // 11 is missing: the range covers 4..=10 only.
    let short = with_ranges(
        log(&[(1, 0, R), (1, 1, R), (1, 2, R), (1, 3, R), (1, 12, R)]),
        &[(1, 4, 10)],
    );
    check(
        &short,
        &[(1, 0, &[R])],
        1000,
        &["events=0-3 gap=true end=false"],
    );
    // Events inside a range keep their slots and are served (a range filled around them).
    let around = with_ranges(
        log(&[(1, 0, R), (1, 5, R), (1, 9, R), (1, 12, R)]),
        &[(1, 1, 11)],
    );
    check(
        &around,
        &[(1, 0, &[R])],
        1000,
        &["events=0,5,9,12 gap=false end=true"],
    );
}

#[test]
fn responses_over_a_covered_range_stay_bounded_by_max_num_events() {
    let mut events: Vec<(u128, i64, &str)> = (0..10).map(|seq| (1, seq, R)).collect();
    events.extend((1_000_000..1_000_010).map(|seq| (1, seq, R)));
    let log = with_ranges(log(&events), &[(1, 10, 999_999)]);
    check(
        &log,
        &[(1, 0, &[R, N])],
        5,
        &["events=0-4 gap=false end=false"],
    );
    check(
        &log,
        &[(1, 8, &[R, N])],
        4,
        &["events=8-10,1000000 gap=false end=false"],
    );
}
