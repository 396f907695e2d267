//! Result versions (docs/design/scheduler.md §12): a result from an older calculation never
//! overwrites a newer one, and unchanged content is not republished.

use biglearn_events::ResultRecord;

/// `(input_seq, model_seq, computed_at)`, compared lexicographically; defined beside
/// `ResultRecord`, so that every crate compares the same type.
pub use biglearn_events::ResultVersion;

/// A stored result is replaced iff the new version is ≥ the stored one.
pub fn may_replace(new: ResultVersion, stored: ResultVersion) -> bool {
    new >= stored
}

/// What to do with a freshly computed record, given what is stored under its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishDecision {
    Publish,
    /// The stored result has a higher version.
    SkipOlder,
    /// Same content as the stored result: nothing to publish.
    SkipUnchanged,
}

/// Decides publication of `new` over the stored `(version, content hash)`, if any.
pub fn publish_decision(
    new: &ResultRecord,
    stored: Option<(ResultVersion, [u8; 32])>,
) -> PublishDecision {
    match stored {
        None => PublishDecision::Publish,
        Some((version, _)) if !may_replace(ResultVersion::of(new), version) => {
            PublishDecision::SkipOlder
        }
        Some((_, hash)) if hash == content_hash(new) => PublishDecision::SkipUnchanged,
        Some(_) => PublishDecision::Publish,
    }
}

/// SHA-256 over what a reader sees of a result (defined beside `ResultRecord`, so that the
/// results digest of the event log hashes the same bytes).
pub use biglearn_events::result_content_hash as content_hash;

#[cfg(test)]
mod tests {
    use super::*;

    fn v(input_seq: i64, model_seq: i64, computed_at_micros: i64) -> ResultVersion {
        ResultVersion {
            input_seq,
            model_seq,
            computed_at_micros,
        }
    }

    fn check(new: ResultVersion, stored: ResultVersion, expected: bool) {
        assert_eq!(
            may_replace(new, stored),
            expected,
            "{new:?} over {stored:?}"
        );
    }

    /// Scenario 21.
    #[test]
    fn a_lower_version_never_replaces_a_higher_one() {
        let t = 1_000;
        for t_prime in [0, t, t + 1, i64::MAX] {
            check(v(9, 5, t_prime), v(10, 2, t), false);
        }
        for t_second in [0, t, t + 1] {
            check(v(10, 3, t_second), v(10, 2, t), true);
        }
        check(v(10, 2, t), v(10, 2, t), true);
        check(v(10, 2, t - 1), v(10, 2, t), false);
        check(v(11, -1, 0), v(10, 2, t), true);
    }

    fn record(exercises: Vec<u128>, input_seq: i64) -> ResultRecord {
        ResultRecord {
            kind: biglearn_events::ResultKind::AssignmentPes,
            student_uuid: None,
            course_container_uuid: None,
            book_container_uuid: None,
            assignment_uuid: Some(uuid::Uuid::from_u128(1)),
            algorithm_name: "local_query".into(),
            calculation_uuid: uuid::Uuid::from_u128(input_seq as u128),
            ecosystem_matrix_uuid: None,
            exercise_uuids: Some(exercises.into_iter().map(uuid::Uuid::from_u128).collect()),
            clue_data: None,
            spy_info_json: "{}".into(),
            input_seq,
            model_seq: -1,
            computed_at_micros: 0,
            course_uuid: None,
            producer: "scheduler".into(),
        }
    }

    #[test]
    fn publication_skips_older_and_unchanged_results() {
        let stored = record(vec![1, 2], 5);
        let stored_state = Some((ResultVersion::of(&stored), content_hash(&stored)));
        assert_eq!(
            publish_decision(&record(vec![1, 2], 4), stored_state),
            PublishDecision::SkipOlder
        );
        assert_eq!(
            publish_decision(&record(vec![1, 2], 6), stored_state),
            PublishDecision::SkipUnchanged,
            "a new calculation uuid alone is not a change"
        );
        assert_eq!(
            publish_decision(&record(vec![2, 1], 6), stored_state),
            PublishDecision::Publish
        );
        assert_eq!(
            publish_decision(&record(vec![], 0), None),
            PublishDecision::Publish
        );
    }
}
