//! Student history and SPE inputs (docs/design/scheduler.md §10.1–§10.4): the past-due rule,
//! positions, mapped histories and the k-ago map.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use biglearn_domain::ids::{AssignmentUuid, BookContainerUuid, CourseUuid, ExerciseUuid};
use biglearn_domain::state::{AssignmentState, Effect, StateError, StateStore, StateView};

use crate::allocation::has_allowed;
use crate::reader::Reader;

/// `K_AGOS_TO_LOAD`.
pub const K_AGOS_TO_LOAD: usize = 5;
/// `NON_RANDOM_K_AGOS`.
pub const NON_RANDOM_K_AGOS: [usize; 3] = [1, 3, 5];

/// The two SPE histories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HistoryType {
    InstructorDriven,
    StudentDriven,
}

impl HistoryType {
    pub const ALL: [HistoryType; 2] = [HistoryType::InstructorDriven, HistoryType::StudentDriven];

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryType::InstructorDriven => "instructor_driven",
            HistoryType::StudentDriven => "student_driven",
        }
    }
}

/// The past-due rule of docs/design/scheduler.md §10.1: the student's non-deleted assignments with
/// `due_at ≤ now` and no `history_at`, returned with `history_at = due_at` (ready to store).
pub fn past_due_history(
    view: &dyn StateView,
    course: CourseUuid,
    now: i64,
) -> Result<Vec<AssignmentState>, StateError> {
    let mut entered = Vec::new();
    for (student, _) in view.students(course)? {
        for mut assignment in view.student_assignments(course, student)? {
            match assignment.due_at {
                Some(due_at)
                    if due_at <= now
                        && assignment.history_at.is_none()
                        && !assignment.is_deleted =>
                {
                    assignment.history_at = Some(due_at);
                    entered.push(assignment);
                }
                _ => {}
            }
        }
    }
    Ok(entered)
}

/// Applies the past-due rule through the store and returns the `HistoryEntered` effects,
/// which the caller turns into targets like any other effect.
pub fn enter_past_due_history(
    store: &mut impl StateStore,
    course: CourseUuid,
    now: i64,
) -> Result<Vec<Effect>, StateError> {
    let entered = past_due_history(&*store, course, now)?;
    let mut effects = Vec::with_capacity(entered.len());
    for assignment in entered {
        effects.push(Effect::HistoryEntered {
            course,
            assignment: assignment.uuid,
            student: assignment.student,
        });
        store.put_assignment(course, assignment)?;
    }
    Ok(effects)
}

/// Ascending with nulls last.
fn nulls_last(a: Option<i64>, b: Option<i64>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn by_schedule(a: &AssignmentState, b: &AssignmentState) -> Ordering {
    nulls_last(a.due_at, b.due_at)
        .then_with(|| nulls_last(a.opens_at, b.opens_at))
        .then_with(|| nulls_last(a.created_at, b.created_at))
        .then_with(|| a.uuid.cmp(&b.uuid))
}

/// Positions (docs/design/scheduler.md §10.2) over a student's non-deleted assignments of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Positions {
    pub instructor_seq: BTreeMap<AssignmentUuid, i64>,
    pub student_seq: BTreeMap<AssignmentUuid, i64>,
}

impl Positions {
    /// `assignments` may hold every assignment of the student; other types and deleted
    /// ones get no position.
    pub fn of(assignments: &[AssignmentState], assignment_type: &str) -> Positions {
        let mut same: Vec<&AssignmentState> = assignments
            .iter()
            .filter(|a| !a.is_deleted && a.assignment_type == assignment_type)
            .collect();
        same.sort_by(|a, b| by_schedule(a, b));
        let instructor_seq = same
            .iter()
            .enumerate()
            .map(|(idx, a)| (a.uuid, idx as i64 + 1))
            .collect();
        let mut in_history: Vec<&AssignmentState> = same
            .iter()
            .copied()
            .filter(|a| a.history_at.is_some())
            .collect();
        // Stable over by_schedule, so ties on history_at fall back to (due, opens, created, uuid).
        in_history.sort_by(|a, b| nulls_last(a.history_at, b.history_at));
        let mut student_seq: BTreeMap<AssignmentUuid, i64> = in_history
            .iter()
            .enumerate()
            .map(|(idx, a)| (a.uuid, idx as i64 + 1))
            .collect();
        let unfinished = in_history.len() as i64 + 1;
        for a in &same {
            student_seq.entry(a.uuid).or_insert(unfinished);
        }
        Positions {
            instructor_seq,
            student_seq,
        }
    }

    fn seq(&self, history_type: HistoryType) -> &BTreeMap<AssignmentUuid, i64> {
        match history_type {
            HistoryType::InstructorDriven => &self.instructor_seq,
            HistoryType::StudentDriven => &self.student_seq,
        }
    }

    /// The assignment's position in one history.
    pub fn position(&self, history_type: HistoryType, assignment: AssignmentUuid) -> Option<i64> {
        self.seq(history_type).get(&assignment).copied()
    }

    /// The assignment at a position, if exactly one holds it (only the shared "unfinished"
    /// rank can be held by several, and it is never before a target).
    pub fn at(&self, history_type: HistoryType, position: i64) -> Option<AssignmentUuid> {
        let mut holders = self
            .seq(history_type)
            .iter()
            .filter(|(_, p)| **p == position)
            .map(|(a, _)| *a);
        match (holders.next(), holders.next()) {
            (Some(a), None) => Some(a),
            _ => None,
        }
    }
}

/// One entry `h[k]` of a mapped history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    pub assignment_uuid: Option<AssignmentUuid>,
    pub book_container_uuids: Vec<BookContainerUuid>,
}

/// `h[0..=5]` of docs/design/scheduler.md §10.3 for assignment `a` in one history type: each
/// container appears once, at its most recent position, mapped into a's ecosystem, and only while
/// it still has allowed exercises for a's type.
pub fn mapped_history(
    reader: &Reader<'_>,
    assignment: &AssignmentState,
    assignments: &[AssignmentState],
    positions: &Positions,
    history_type: HistoryType,
    excl: &HashSet<ExerciseUuid>,
) -> Result<Vec<HistoryEntry>, StateError> {
    let mut history = vec![HistoryEntry {
        assignment_uuid: Some(assignment.uuid),
        book_container_uuids: assignment.assigned_book_container_uuids.clone(),
    }];
    let mut seen: Vec<BookContainerUuid> = assignment.assigned_book_container_uuids.clone();
    let own = positions.position(history_type, assignment.uuid);
    let mappings = reader.mappings()?;
    for k in 1..=K_AGOS_TO_LOAD {
        let earlier = own
            .and_then(|p| positions.at(history_type, p - k as i64))
            .and_then(|uuid| assignments.iter().find(|b| b.uuid == uuid));
        let Some(earlier) = earlier else {
            history.push(HistoryEntry::default());
            continue;
        };
        let mut mapped = Vec::new();
        for bc in &earlier.assigned_book_container_uuids {
            let Some(bc) = mappings.forward(earlier.ecosystem, assignment.ecosystem, *bc) else {
                continue;
            };
            if seen.contains(&bc) || !has_allowed(reader, assignment, bc, excl)? {
                continue;
            }
            seen.push(bc);
            mapped.push(bc);
        }
        history.push(HistoryEntry {
            assignment_uuid: Some(earlier.uuid),
            book_container_uuids: mapped,
        });
    }
    Ok(history)
}

/// A slot group of the k-ago map: a fixed k (0 = the assignment's own containers) or random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KAgo {
    Ago(usize),
    Random,
}

impl std::fmt::Display for KAgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KAgo::Ago(k) => write!(f, "{k}"),
            KAgo::Random => f.write_str("random"),
        }
    }
}

/// `X` of docs/design/scheduler.md §10.4: random-ago only for the student-driven history from
/// `student_seq ≥ min`.
pub fn extra_slot(
    history_type: HistoryType,
    student_seq: Option<i64>,
    random_ago_min: i64,
) -> KAgo {
    match (history_type, student_seq) {
        (HistoryType::StudentDriven, Some(seq)) if seq >= random_ago_min => KAgo::Random,
        _ => KAgo::Ago(0),
    }
}

/// `k_ago_map(goal_spes, X)` of docs/design/scheduler.md §10.4.
pub fn k_ago_map(goal_spes: Option<i64>, extra: KAgo) -> Vec<(KAgo, i64)> {
    let Some(goal) = goal_spes else {
        return vec![
            (KAgo::Ago(1), 1),
            (KAgo::Ago(3), 1),
            (KAgo::Ago(5), 1),
            (extra, 1),
        ];
    };
    if goal <= 0 {
        return Vec::new();
    }
    // One slot is reserved for X.
    let (q, r) = ((goal - 1) / 3, (goal - 1) % 3);
    let mut map: Vec<(KAgo, i64)> = NON_RANDOM_K_AGOS
        .iter()
        .enumerate()
        .map(|(idx, k)| (KAgo::Ago(*k), q + i64::from((idx as i64) < r)))
        .filter(|(_, count)| *count > 0)
        .collect();
    map.push((extra, 1));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(goal: Option<i64>, expected: &[(KAgo, i64)]) {
        assert_eq!(k_ago_map(goal, KAgo::Random), expected, "goal {goal:?}");
    }

    /// Scenario 12.
    #[test]
    fn k_ago_maps_match_the_spec() {
        use KAgo::{Ago, Random as X};
        check(None, &[(Ago(1), 1), (Ago(3), 1), (Ago(5), 1), (X, 1)]);
        check(Some(0), &[]);
        check(Some(1), &[(X, 1)]);
        check(Some(2), &[(Ago(1), 1), (X, 1)]);
        check(Some(3), &[(Ago(1), 1), (Ago(3), 1), (X, 1)]);
        check(Some(4), &[(Ago(1), 1), (Ago(3), 1), (Ago(5), 1), (X, 1)]);
        check(Some(5), &[(Ago(1), 2), (Ago(3), 1), (Ago(5), 1), (X, 1)]);
        check(Some(7), &[(Ago(1), 2), (Ago(3), 2), (Ago(5), 2), (X, 1)]);
        check(Some(-3), &[]);
    }

    #[test]
    fn the_extra_slot_is_random_only_for_student_driven_from_the_minimum() {
        let cases = [
            (HistoryType::StudentDriven, Some(5), KAgo::Random),
            (HistoryType::StudentDriven, Some(6), KAgo::Random),
            (HistoryType::StudentDriven, Some(4), KAgo::Ago(0)),
            (HistoryType::StudentDriven, None, KAgo::Ago(0)),
            (HistoryType::InstructorDriven, Some(9), KAgo::Ago(0)),
        ];
        for (history_type, seq, expected) in cases {
            assert_eq!(
                extra_slot(history_type, seq, 5),
                expected,
                "{history_type:?} {seq:?}"
            );
        }
    }
}
