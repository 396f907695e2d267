//! The rows the recompute shell keeps under the state projection's hook tag: dirty targets,
//! courses waiting for an ecosystem, and logical-clock timers (docs/design/scheduler.md §4).

use biglearn_domain::ids::{AssignmentUuid, CourseUuid, EcosystemUuid, StudentUuid};
use biglearn_projector::state::TAG_HOOK;
use biglearn_scheduler::{Target, Timer, TimerKind};
use uuid::Uuid;

/// `d ‖ course ‖ Target::to_key()`: a dirty target of a course.
pub const DIRTY: u8 = b'd';
/// `w ‖ ecosystem ‖ course`: targets of the course wait for `create_ecosystem`.
pub const WAITING: u8 = b'w';
/// `t ‖ at ‖ course ‖ action`: something to re-dirty when the logical clock reaches `at`.
pub const TIMER: u8 = b't';
/// `a ‖ course`: every target of the course is dirty (written while catching up, when
/// deriving each effect's targets would only slow the replay down).
pub const WHOLE_COURSE: u8 = b'a';
/// `o`: the course-event partitions this process owned at its last pass (scale-out:
/// [`crate::ownership`]); absent for a single scheduler.
pub const OWNED_PARTITIONS: u8 = b'o';

/// The whole-course row of `course`.
pub fn whole_course_key(course: CourseUuid) -> Vec<u8> {
    let mut key = vec![WHOLE_COURSE];
    key.extend_from_slice(course.0.as_bytes());
    key
}

/// Parses a whole-course row key (without the hook tag).
pub fn parse_whole_course_key(key: &[u8]) -> Option<CourseUuid> {
    if key.first() != Some(&WHOLE_COURSE) || key.len() != 17 {
        return None;
    }
    Some(CourseUuid(uuid_at(key, 1)?))
}

/// A hook-row key as stored in the tree (the projection prefixes hook rows with its tag);
/// the shell's loop reads and removes rows directly on the tree.
pub fn in_tree(key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + key.len());
    full.push(TAG_HOOK);
    full.extend_from_slice(key);
    full
}

fn uuid_at(bytes: &[u8], at: usize) -> Option<Uuid> {
    Uuid::from_slice(bytes.get(at..at + 16)?).ok()
}

/// The dirty row of `target` in `course`.
pub fn dirty_key(course: CourseUuid, target: &Target) -> Vec<u8> {
    let mut key = vec![DIRTY];
    key.extend_from_slice(course.0.as_bytes());
    key.extend_from_slice(&target.to_key());
    key
}

/// Parses a dirty row key (without the hook tag).
pub fn parse_dirty_key(key: &[u8]) -> Option<(CourseUuid, Target)> {
    if key.first() != Some(&DIRTY) {
        return None;
    }
    let course = CourseUuid(uuid_at(key, 1)?);
    Some((course, Target::from_key(key.get(17..)?)?))
}

/// What a dirty row holds: when it was last made dirty (wall clock, for the latency
/// metric) and a stamp unique to that write, so that the loop removes a row only if no
/// batch re-dirtied it while it was being computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyMark {
    pub dirty_at_micros: i64,
    pub stamp: u64,
}

impl DirtyMark {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.dirty_at_micros.to_be_bytes());
        bytes.extend_from_slice(&self.stamp.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<DirtyMark> {
        Some(DirtyMark {
            dirty_at_micros: i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?),
            stamp: u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The waiting row of `course` for `ecosystem`.
pub fn waiting_key(ecosystem: EcosystemUuid, course: CourseUuid) -> Vec<u8> {
    let mut key = vec![WAITING];
    key.extend_from_slice(ecosystem.0.as_bytes());
    key.extend_from_slice(course.0.as_bytes());
    key
}

/// Parses a waiting row key (without the hook tag).
pub fn parse_waiting_key(key: &[u8]) -> Option<(EcosystemUuid, CourseUuid)> {
    if key.first() != Some(&WAITING) || key.len() != 33 {
        return None;
    }
    Some((
        EcosystemUuid(uuid_at(key, 1)?),
        CourseUuid(uuid_at(key, 17)?),
    ))
}

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// An assignment's `due_at` or `feedback_at` (docs/design/scheduler.md §4).
    Assignment(Timer),
    /// A student CLUE's `recalculate_at` (docs/design/scheduler.md §6.2): re-dirty the target.
    Target(Target),
}

/// Big-endian with the sign bit flipped, so that byte order is numeric order.
fn sortable(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// The timer row prefix of every timer at or before `at` sorts below this key.
pub fn timers_until(at: i64) -> Vec<u8> {
    let mut key = vec![TIMER];
    key.extend_from_slice(&sortable(at.saturating_add(1)));
    key
}

/// A timer row key.
pub fn timer_key(at: i64, course: CourseUuid, action: &TimerAction) -> Vec<u8> {
    let mut key = vec![TIMER];
    key.extend_from_slice(&sortable(at));
    key.extend_from_slice(course.0.as_bytes());
    match action {
        TimerAction::Assignment(timer) => {
            key.push(0);
            key.push(match timer.kind {
                TimerKind::FeedbackAt => 0,
                TimerKind::DueAt => 1,
            });
            key.extend_from_slice(timer.assignment.0.as_bytes());
            key.extend_from_slice(timer.student.0.as_bytes());
        }
        TimerAction::Target(target) => {
            key.push(1);
            key.extend_from_slice(&target.to_key());
        }
    }
    key
}

/// Parses a timer row key (without the hook tag).
pub fn parse_timer_key(key: &[u8]) -> Option<(i64, CourseUuid, TimerAction)> {
    if key.first() != Some(&TIMER) {
        return None;
    }
    let at = unsortable(key.get(1..9)?)?;
    let course = CourseUuid(uuid_at(key, 9)?);
    let action = match key.get(25)? {
        0 => {
            let kind = match key.get(26)? {
                0 => TimerKind::FeedbackAt,
                1 => TimerKind::DueAt,
                _ => return None,
            };
            if key.len() != 59 {
                return None;
            }
            TimerAction::Assignment(Timer {
                at,
                kind,
                assignment: AssignmentUuid(uuid_at(key, 27)?),
                student: StudentUuid(uuid_at(key, 43)?),
            })
        }
        1 => TimerAction::Target(Target::from_key(key.get(26..)?)?),
        _ => return None,
    };
    Some((at, course, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use biglearn_domain::ids::BookContainerUuid;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn check_timer(at: i64, action: TimerAction) {
        let course = CourseUuid(id(7));
        let key = timer_key(at, course, &action);
        assert_eq!(parse_timer_key(&key), Some((at, course, action)));
        assert!(key < timers_until(at), "a timer at {at} fires at {at}");
        assert!(
            key >= timers_until(at - 1),
            "a timer at {at} does not fire before"
        );
    }

    #[test]
    fn keys_round_trip_and_timers_sort_by_time() {
        let target = Target::StudentClue {
            ecosystem: EcosystemUuid(id(1)),
            book_container: BookContainerUuid(id(2)),
            student: StudentUuid(id(3)),
        };
        for at in [i64::MIN + 1, -5, 0, 1_700_000_000_000_000, i64::MAX - 1] {
            check_timer(at, TimerAction::Target(target));
            for kind in [TimerKind::FeedbackAt, TimerKind::DueAt] {
                check_timer(
                    at,
                    TimerAction::Assignment(Timer {
                        at,
                        kind,
                        assignment: AssignmentUuid(id(4)),
                        student: StudentUuid(id(5)),
                    }),
                );
            }
        }
        let course = CourseUuid(id(9));
        assert_eq!(
            parse_dirty_key(&dirty_key(course, &target)),
            Some((course, target))
        );
        assert_eq!(
            parse_waiting_key(&waiting_key(EcosystemUuid(id(1)), course)),
            Some((EcosystemUuid(id(1)), course))
        );
        let mark = DirtyMark {
            dirty_at_micros: -3,
            stamp: 42,
        };
        assert_eq!(DirtyMark::decode(&mark.encode()), Some(mark));
    }
}
