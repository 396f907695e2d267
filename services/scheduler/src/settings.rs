//! The settings a scheduler computation reads (docs/design/operations.md §6.5), resolved by the
//! caller.

/// Course-scoped settings, resolved at the `settings_version` of the course's last applied
/// event (docs/design/operations.md §6.4) by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// `scheduler.default_num_pes_per_book_container`: PEs per container when `goal_pes` is null.
    pub default_num_pes_per_book_container: i64,
    /// `scheduler.random_ago_min_sequence_number`: the student-driven `student_seq` from which
    /// the extra SPE slot is random-ago.
    pub random_ago_min_sequence_number: i64,
    /// `clue.local_query.min_num_responses`: below this, a `local_query` CLUE is not real.
    pub local_query_min_num_responses: usize,
    /// `scheduler.publish_biglearn_sparfa`: false stops `biglearn_sparfa` results for the course.
    pub publish_biglearn_sparfa: bool,
}

impl SchedulerSettings {
    /// The initial values of docs/design/operations.md §6.5.
    pub const INITIAL: SchedulerSettings = SchedulerSettings {
        default_num_pes_per_book_container: 3,
        random_ago_min_sequence_number: 5,
        local_query_min_num_responses: 3,
        publish_biglearn_sparfa: true,
    };
}
