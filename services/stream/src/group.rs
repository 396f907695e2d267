//! Consumer-group membership: which partitions this instance owns; positions stay in sled.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;

use crate::StreamError;

/// The partitions this member owns, per topic; `generation` increases on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// 0 until the first assignment arrives, then +1 on every change of `partitions`.
    pub generation: u64,
    /// `(topic, partition)` pairs this member owns.
    pub partitions: BTreeSet<(String, i32)>,
}

impl Assignment {
    /// The partitions of `topic` this member owns, ascending.
    pub fn partitions_of(&self, topic: &str) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(owned, _)| owned == topic)
            .map(|&(_, partition)| partition)
            .collect()
    }
}

/// Membership in a consumer group. Dropping it leaves the group (promptly: the others
/// rebalance).
///
/// Ownership is advisory: a member learns of a change asynchronously, so two instances
/// may briefly both act on a partition around a rebalance. Consumers tolerate that by
/// deduplicating and by never publishing a lower sequence than one already published.
#[async_trait]
pub trait GroupMembership: Send + Sync {
    /// The current assignment (empty until the first one arrives).
    fn current(&self) -> Assignment;

    /// Waits up to `timeout` for the assignment to change from `seen_generation`;
    /// returns the new one, or None on timeout.
    async fn changed(
        &self,
        seen_generation: u64,
        timeout: Duration,
    ) -> Result<Option<Assignment>, StreamError>;
}

/// A membership that owns a fixed set of partitions forever, at generation 1: the
/// embedded backend's, where a single process owns the whole log.
#[derive(Clone, Debug)]
pub struct SoleMembership {
    assignment: Assignment,
}

impl SoleMembership {
    /// Owns every partition of each `(topic, partition count)`.
    pub fn owning_all(topics: &[(String, i32)]) -> SoleMembership {
        let partitions = topics
            .iter()
            .flat_map(|(topic, count)| (0..*count).map(move |p| (topic.clone(), p)))
            .collect();
        SoleMembership {
            assignment: Assignment {
                generation: 1,
                partitions,
            },
        }
    }
}

#[async_trait]
impl GroupMembership for SoleMembership {
    fn current(&self) -> Assignment {
        self.assignment.clone()
    }

    async fn changed(
        &self,
        seen_generation: u64,
        timeout: Duration,
    ) -> Result<Option<Assignment>, StreamError> {
        if seen_generation != self.assignment.generation {
            return Ok(Some(self.assignment.clone()));
        }
        // Nothing ever changes; wait as asked so callers' loops keep their pace.
        tokio::time::sleep(timeout).await;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(topics: &[(&str, i32)], expected: &[(&str, i32)]) {
        let topics: Vec<(String, i32)> = topics.iter().map(|&(t, n)| (t.to_owned(), n)).collect();
        let expected: BTreeSet<(String, i32)> =
            expected.iter().map(|&(t, p)| (t.to_owned(), p)).collect();
        let membership = SoleMembership::owning_all(&topics);
        assert_eq!(
            membership.current(),
            Assignment {
                generation: 1,
                partitions: expected
            }
        );
    }

    #[test]
    fn a_sole_member_owns_every_partition() {
        check(&[], &[]);
        check(&[("a", 1)], &[("a", 0)]);
        check(
            &[("a", 2), ("b", 3)],
            &[("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)],
        );
    }

    #[test]
    fn partitions_of_filters_by_topic() {
        let membership = SoleMembership::owning_all(&[("a".to_owned(), 2), ("b".to_owned(), 3)]);
        assert_eq!(membership.current().partitions_of("a"), vec![0, 1]);
        assert_eq!(membership.current().partitions_of("b"), vec![0, 1, 2]);
        assert!(membership.current().partitions_of("c").is_empty());
    }

    #[tokio::test]
    async fn a_sole_membership_never_changes() {
        let membership = SoleMembership::owning_all(&[("a".to_owned(), 2)]);
        let waited = membership.changed(1, Duration::from_millis(20)).await;
        assert_eq!(waited.expect("no error"), None);
        let caught_up = membership.changed(0, Duration::from_secs(30)).await;
        assert_eq!(caught_up.expect("no error"), Some(membership.current()));
    }
}
