//! Which courses this process computes (docs/design/scheduler.md §1): those of the
//! course-event partitions it owns in the consumer group `<prefix>.scheduler`, so that any
//! number of scheduler processes share the courses and each course is computed by one.
//!
//! Invariants:
//! - A course belongs to the partition its events are keyed to (the murmur2 partition of
//!   its aggregate key): ownership moves with the course's events, never splits a course.
//! - Until a group has assigned anything (generation 0) a process owns no course: two
//!   processes never both compute a course because one of them has not heard yet.
//! - The batch hook derives no targets for a course another process owns (only its
//!   assignment timers, which come from the events alone); marks made before (while nothing
//!   was assigned, or while this process owned the course) stay. A process that gains
//!   partitions marks their courses whole-course dirty (its loop does,
//!   [`OwnedCourses::gained_since`]): that covers whatever the previous owner had not
//!   computed, and its recalculation timers, which are not here.
//!
//! Ownership is advisory (`biglearn_stream::GroupMembership`): around a rebalance two
//! processes may briefly both compute a course. That is harmless — results carry versions,
//! a lower version is never published over a higher one, and equal content is not
//! republished.

use std::collections::BTreeSet;
use std::sync::Arc;

use biglearn_domain::ids::CourseUuid;
use biglearn_events::aggregate_key;
use biglearn_stream::partition_for_key;

/// A snapshot of the courses this process computes, taken once per pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedCourses {
    /// Every course: a single scheduler (`up`, the embedded log).
    All,
    /// The courses of these partitions of the course-event topic.
    Partitions {
        /// The group's assignment generation (0: nothing assigned yet).
        generation: u64,
        /// Owned partitions, ascending.
        owned: BTreeSet<i32>,
        /// How many partitions the course-event topic has.
        partitions: i32,
    },
}

/// Asked once per pass for the current [`OwnedCourses`].
pub type OwnershipSource = Arc<dyn Fn() -> OwnedCourses + Send + Sync>;

impl OwnedCourses {
    /// The partition of the course-event topic that `course`'s events are keyed to.
    pub fn partition_of(course: CourseUuid, partitions: i32) -> i32 {
        partition_for_key(&aggregate_key(course.0), partitions.max(1))
    }

    /// Whether this process computes `course`.
    pub fn owns(&self, course: CourseUuid) -> bool {
        match self {
            OwnedCourses::All => true,
            OwnedCourses::Partitions {
                owned, partitions, ..
            } => owned.contains(&Self::partition_of(course, *partitions)),
        }
    }

    /// Whether a group has assigned partitions yet (always, for [`OwnedCourses::All`]).
    pub fn is_assigned(&self) -> bool {
        match self {
            OwnedCourses::All => true,
            OwnedCourses::Partitions { generation, .. } => *generation > 0,
        }
    }

    /// The partitions owned now but not in `before` (every owned one when nothing is
    /// known of before); empty for [`OwnedCourses::All`] and before the first assignment.
    pub fn gained_since(&self, before: Option<&BTreeSet<i32>>) -> BTreeSet<i32> {
        match self {
            OwnedCourses::Partitions {
                generation, owned, ..
            } if *generation > 0 => match before {
                Some(before) => owned.difference(before).copied().collect(),
                None => owned.clone(),
            },
            _ => BTreeSet::new(),
        }
    }

    /// The owned partitions as stored between runs: ascending big-endian i32s.
    pub fn encode_partitions(owned: &BTreeSet<i32>) -> Vec<u8> {
        owned.iter().flat_map(|p| p.to_be_bytes()).collect()
    }

    /// Reads [`OwnedCourses::encode_partitions`]; `None` if the bytes are not a list of i32s.
    pub fn decode_partitions(bytes: &[u8]) -> Option<BTreeSet<i32>> {
        if bytes.len() % 4 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|chunk| i32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn owning(generation: u64, owned: &[i32], partitions: i32) -> OwnedCourses {
        OwnedCourses::Partitions {
            generation,
            owned: owned.iter().copied().collect(),
            partitions,
        }
    }

    #[test]
    fn every_course_is_owned_by_exactly_one_of_complementary_assignments() {
        let first = owning(3, &[0, 2], 4);
        let second = owning(3, &[1, 3], 4);
        let mut per_partition = [0; 4];
        for n in 0..400u128 {
            let course = CourseUuid(Uuid::from_u128(n * 7_919 + 11));
            assert_ne!(first.owns(course), second.owns(course), "course {n}");
            per_partition[OwnedCourses::partition_of(course, 4) as usize] += 1;
        }
        // The split follows the event partitioner: every partition gets courses.
        assert!(per_partition.iter().all(|&n| n > 50), "{per_partition:?}");
    }

    #[test]
    fn a_course_is_owned_where_its_events_are_partitioned() {
        let course = CourseUuid(Uuid::from_u128(0xfeed));
        let partition = partition_for_key(&aggregate_key(course.0), 6);
        assert!(owning(1, &[partition], 6).owns(course));
        assert!(!owning(1, &[(partition + 1) % 6], 6).owns(course));
        assert!(OwnedCourses::All.owns(course));
    }

    #[test]
    fn nothing_is_owned_or_gained_before_the_first_assignment() {
        let unassigned = owning(0, &[], 4);
        assert!(!unassigned.is_assigned());
        assert!(!unassigned.owns(CourseUuid(Uuid::from_u128(1))));
        assert!(unassigned.gained_since(None).is_empty());
        assert!(OwnedCourses::All.gained_since(None).is_empty());
    }

    #[test]
    fn gains_are_the_partitions_not_owned_before() {
        let now = owning(2, &[0, 1, 3], 4);
        assert_eq!(
            now.gained_since(Some(&[1].into_iter().collect())),
            [0, 3].into_iter().collect()
        );
        assert_eq!(now.gained_since(None), [0, 1, 3].into_iter().collect());
        assert!(now
            .gained_since(Some(&[0, 1, 2, 3].into_iter().collect()))
            .is_empty());
    }

    #[test]
    fn owned_partitions_read_back_as_stored() {
        let owned: BTreeSet<i32> = [0, 5, 17].into_iter().collect();
        let bytes = OwnedCourses::encode_partitions(&owned);
        assert_eq!(OwnedCourses::decode_partitions(&bytes), Some(owned));
        assert_eq!(OwnedCourses::decode_partitions(&[0, 1, 2]), None);
        assert_eq!(OwnedCourses::decode_partitions(&[]), Some(BTreeSet::new()));
    }
}
