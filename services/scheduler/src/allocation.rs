//! Exclusions, the chooser (docs/design/scheduler.md §8) and PE allocation (§9).

use std::collections::HashSet;

use biglearn_domain::ids::{BookContainerUuid, ExerciseUuid, StudentUuid};
use biglearn_domain::state::{AssignmentState, StateError};

use crate::ranking::Ranking;
use crate::reader::Reader;
use crate::shuffle::det_shuffle;

/// `excluded(s, now)`: course and global exclusions (versions, and every version of
/// excluded groups) plus every version of a group assigned in any assignment of the student
/// (deleted ones and the one being computed included) that is not yet due or whose
/// feedback is in the future.
pub fn excluded(
    reader: &Reader<'_>,
    student: StudentUuid,
    now: i64,
) -> Result<HashSet<ExerciseUuid>, StateError> {
    let mut excl = HashSet::new();
    if let Some(course) = reader.course_state()? {
        excl.extend(course.global_excluded_exercise_uuids.iter().copied());
        excl.extend(course.course_excluded_exercise_uuids.iter().copied());
        for group in course
            .global_excluded_group_uuids
            .iter()
            .chain(&course.course_excluded_group_uuids)
        {
            excl.extend(reader.versions(*group)?.iter().copied());
        }
    }
    for assignment in reader.student_assignments(student)? {
        if is_open_for_anti_cheating(&assignment, now) {
            for exercise in &assignment.assigned_exercise_uuids {
                excl.extend(reader.versions_of_exercise(*exercise)?);
            }
        }
    }
    Ok(excl)
}

/// `a.due_at > now or a.feedback_at > now`: the assignment's exercises must not be shown
/// elsewhere yet.
pub fn is_open_for_anti_cheating(assignment: &AssignmentState, now: i64) -> bool {
    assignment.due_at.is_some_and(|at| at > now)
        || assignment.feedback_at.is_some_and(|at| at > now)
}

/// `M(a.type, bc) − excl` is non-empty.
pub(crate) fn has_allowed(
    reader: &Reader<'_>,
    assignment: &AssignmentState,
    book_container: BookContainerUuid,
    excl: &HashSet<ExerciseUuid>,
) -> Result<bool, StateError> {
    Ok(reader
        .pool_exercises(
            assignment.ecosystem,
            book_container,
            &assignment.assignment_type,
        )?
        .iter()
        .any(|e| !excl.contains(e)))
}

/// `choose(a, bcs, ranking, excl, n)`: the first `n` ranked exercises of the containers'
/// pools for a's type, minus a's own exercises and `excl`.
pub fn choose(
    reader: &Reader<'_>,
    assignment: &AssignmentState,
    book_containers: &[BookContainerUuid],
    ranking: &Ranking,
    excl: &HashSet<ExerciseUuid>,
    n: usize,
) -> Result<Vec<ExerciseUuid>, StateError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut allowed = HashSet::new();
    for bc in book_containers {
        allowed.extend(reader.pool_exercises(
            assignment.ecosystem,
            *bc,
            &assignment.assignment_type,
        )?);
    }
    for exercise in assignment.assigned_exercise_uuids.iter().chain(excl) {
        allowed.remove(exercise);
    }
    Ok(ranking
        .exercise_uuids
        .iter()
        .filter(|e| allowed.contains(e))
        .take(n)
        .copied()
        .collect())
}

/// Splits `total` slots over `n` containers: `(per container, remainder)`.
pub(crate) fn divmod(total: i64, n: usize) -> (i64, i64) {
    let n = n as i64;
    (total.div_euclid(n), total.rem_euclid(n))
}

/// `build_pes(a, ranking, excl)` of docs/design/scheduler.md §9.
pub fn build_pes(
    reader: &Reader<'_>,
    assignment: &AssignmentState,
    ranking: &Ranking,
    excl: &HashSet<ExerciseUuid>,
    default_num_pes_per_book_container: i64,
) -> Result<Vec<ExerciseUuid>, StateError> {
    let mut bcs = Vec::new();
    for bc in &assignment.assigned_book_container_uuids {
        if !bcs.contains(bc) && has_allowed(reader, assignment, *bc, excl)? {
            bcs.push(*bc);
        }
    }
    let bcs = det_shuffle(
        &bcs,
        &format!("{}|{}|pe", assignment.uuid, ranking.calculation_uuid),
    );
    if bcs.is_empty() {
        return Ok(Vec::new());
    }
    let (n, mut rem) = match assignment.goal_pes {
        None => (default_num_pes_per_book_container, 0),
        Some(goal) => divmod(goal.max(0), bcs.len()),
    };
    let mut excl = excl.clone();
    let mut chosen = Vec::new();
    for bc in &bcs {
        let k = if rem > 0 { n + 1 } else { n };
        if k <= 0 {
            continue;
        }
        let c = choose(reader, assignment, &[*bc], ranking, &excl, k as usize)?;
        // A shortfall carries forward; using the extra slot consumes it.
        rem += n - c.len() as i64;
        excl.extend(c.iter().copied());
        chosen.extend(c);
    }
    Ok(chosen)
}
