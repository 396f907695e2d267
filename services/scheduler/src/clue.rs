//! CLUEs (docs/design/scheduler.md §6.2–§6.4): input sets with anti-cheating, the `local_query`
//! formula and the `biglearn_sparfa` CLUE.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use biglearn_domain::ids::{
    BookContainerUuid, CourseContainerUuid, EcosystemUuid, ExerciseGroupUuid, ExerciseUuid,
    ResponseUuid, SequenceNumber, StudentUuid, TrialUuid,
};
use biglearn_domain::state::StateError;
use biglearn_sparfa::Clue;

use crate::models::EcosystemModel;
use crate::reader::Reader;

/// `local_query`'s `Z` (docs/design/scheduler.md §6.3).
pub const LOCAL_QUERY_Z: f64 = 0.68;

/// One response of a CLUE input set, resolved from state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClueResponse {
    pub response_uuid: ResponseUuid,
    pub trial: TrialUuid,
    pub student: StudentUuid,
    pub exercise: ExerciseUuid,
    pub group: ExerciseGroupUuid,
    pub is_correct: bool,
    pub responded_at: i64,
    pub course_seq: SequenceNumber,
}

/// A student's resolved responses, each with its assignment's `feedback_at`, in
/// (responded_at, course_seq) order.
pub(crate) type ResolvedResponses = Rc<Vec<(ClueResponse, Option<i64>)>>;

/// The inputs of one CLUE (docs/design/scheduler.md §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClueInputs {
    pub ecosystem: EcosystemUuid,
    pub book_container: BookContainerUuid,
    /// X: the CLUE pools' exercises of the target and of every container mapped onto it.
    pub exercise_uuids: Vec<ExerciseUuid>,
    /// G: the groups of X.
    pub groups: BTreeSet<ExerciseGroupUuid>,
    /// The latest (visible) response per student and group, in (responded_at, course_seq) order.
    pub responses: Vec<ClueResponse>,
    /// Student CLUEs: the earliest future `feedback_at` of a hidden response.
    pub recalculate_at: Option<i64>,
}

/// X and G for target `(E, t)`: `same = [(E, t)] + rev(E, t)`, CLUE pools only.
pub fn clue_exercises(
    reader: &Reader<'_>,
    ecosystem: EcosystemUuid,
    book_container: BookContainerUuid,
) -> Result<(Vec<ExerciseUuid>, BTreeSet<ExerciseGroupUuid>), StateError> {
    let mut same = vec![(ecosystem, book_container)];
    same.extend(reader.mappings()?.reverse(ecosystem, book_container));
    let mut exercises = Vec::new();
    let mut seen = HashSet::new();
    for (eco, bc) in same {
        let Some(state) = reader.ecosystem(eco)? else {
            continue;
        };
        for pool in state.pools_of(bc).filter(|pool| pool.use_for_clue) {
            for exercise in &pool.exercise_uuids {
                if seen.insert(*exercise) {
                    exercises.push(*exercise);
                }
            }
        }
    }
    let mut groups = BTreeSet::new();
    for exercise in &exercises {
        if let Some(group) = reader.group(*exercise)? {
            groups.insert(group);
        }
    }
    Ok((exercises, groups))
}

/// `resp([s])`: the student's responses to exercises in X whose trial and assignment are
/// known, in (responded_at, course_seq) order, each with its assignment's `feedback_at`.
fn student_responses(
    reader: &Reader<'_>,
    student: StudentUuid,
    exercises: &HashSet<ExerciseUuid>,
) -> Result<Vec<(ClueResponse, Option<i64>)>, StateError> {
    Ok(resolved_responses(reader, student)?
        .iter()
        .filter(|(r, _)| exercises.contains(&r.exercise))
        .copied()
        .collect())
}

/// Every response of the student with a known trial, assignment and group, resolved once
/// per reader (a pass computes many CLUEs over the same students).
fn resolved_responses(
    reader: &Reader<'_>,
    student: StudentUuid,
) -> Result<ResolvedResponses, StateError> {
    if let Some(cached) = reader.clue_responses.borrow().get(&student) {
        return Ok(cached.clone());
    }
    let feedback_at: BTreeMap<_, _> = reader
        .student_assignments(student)?
        .into_iter()
        .map(|a| (a.uuid, a.feedback_at))
        .collect();
    let mut out = Vec::new();
    for response in reader.view.student_responses(reader.course, student)? {
        let Some(trial) = reader.view.trial(reader.course, response.trial)? else {
            continue;
        };
        let Some(feedback) = feedback_at.get(&trial.assignment) else {
            continue;
        };
        let Some(group) = reader.group(response.exercise)? else {
            continue;
        };
        out.push((
            ClueResponse {
                response_uuid: response.response_uuid,
                trial: response.trial,
                student,
                exercise: response.exercise,
                group,
                is_correct: response.is_correct,
                responded_at: response.responded_at,
                course_seq: response.course_seq,
            },
            *feedback,
        ));
    }
    out.sort_by_key(|(r, _)| (r.responded_at, r.course_seq));
    let out = Rc::new(out);
    reader
        .clue_responses
        .borrow_mut()
        .insert(student, out.clone());
    Ok(out)
}

/// The student CLUE inputs at logical time `now`, or `None` when there is no CLUE: responses
/// whose assignment's feedback is still in the future are hidden (anti-cheating).
pub fn student_clue_inputs(
    reader: &Reader<'_>,
    ecosystem: EcosystemUuid,
    book_container: BookContainerUuid,
    student: StudentUuid,
    now: i64,
) -> Result<Option<ClueInputs>, StateError> {
    let (exercise_uuids, groups) = clue_exercises(reader, ecosystem, book_container)?;
    if groups.is_empty() {
        return Ok(None);
    }
    let members: HashSet<ExerciseUuid> = exercise_uuids.iter().copied().collect();
    let mut visible: BTreeMap<ExerciseGroupUuid, ClueResponse> = BTreeMap::new();
    let mut recalculate_at: Option<i64> = None;
    for (response, feedback_at) in student_responses(reader, student, &members)? {
        match feedback_at {
            Some(at) if at > now => {
                recalculate_at = Some(recalculate_at.map_or(at, |r| r.min(at)));
            }
            _ => {
                visible.insert(response.group, response);
            }
        }
    }
    if visible.is_empty() && recalculate_at.is_none() {
        return Ok(None);
    }
    Ok(Some(ClueInputs {
        ecosystem,
        book_container,
        exercise_uuids,
        groups,
        responses: in_response_order(visible.into_values()),
        recalculate_at,
    }))
}

/// The teacher CLUE inputs of a course container: the latest response per (student, group)
/// of its active students, with no feedback filtering. `None` when the container is
/// unknown or empty, or nobody answered.
pub fn teacher_clue_inputs(
    reader: &Reader<'_>,
    ecosystem: EcosystemUuid,
    book_container: BookContainerUuid,
    container: CourseContainerUuid,
) -> Result<Option<ClueInputs>, StateError> {
    let Some((_, state)) = reader
        .view
        .course_containers(reader.course)?
        .into_iter()
        .find(|(uuid, _)| *uuid == container)
    else {
        return Ok(None);
    };
    if state.student_uuids.is_empty() {
        return Ok(None);
    }
    let (exercise_uuids, groups) = clue_exercises(reader, ecosystem, book_container)?;
    if groups.is_empty() {
        return Ok(None);
    }
    let members: HashSet<ExerciseUuid> = exercise_uuids.iter().copied().collect();
    let mut latest: BTreeMap<(StudentUuid, ExerciseGroupUuid), ClueResponse> = BTreeMap::new();
    for student in &state.student_uuids {
        for (response, _) in student_responses(reader, *student, &members)? {
            latest.insert((*student, response.group), response);
        }
    }
    if latest.is_empty() {
        return Ok(None);
    }
    Ok(Some(ClueInputs {
        ecosystem,
        book_container,
        exercise_uuids,
        groups,
        responses: in_response_order(latest.into_values()),
        recalculate_at: None,
    }))
}

fn in_response_order(responses: impl Iterator<Item = ClueResponse>) -> Vec<ClueResponse> {
    let mut responses: Vec<ClueResponse> = responses.collect();
    responses.sort_by_key(|r| (r.responded_at, r.course_seq, r.response_uuid));
    responses
}

/// The `local_query` CLUE of docs/design/scheduler.md §6.3 over responses `(trial, is_correct)` in
/// order: one value per distinct trial (its last response).
pub fn local_query_clue(responses: &[(TrialUuid, bool)], min_num_responses: usize) -> Clue {
    let mut last: BTreeMap<TrialUuid, bool> = BTreeMap::new();
    for (trial, is_correct) in responses {
        last.insert(*trial, *is_correct);
    }
    let x: Vec<f64> = last.values().map(|c| f64::from(u8::from(*c))).collect();
    let n = x.len();
    if n < min_num_responses.max(2) {
        return Clue::NOT_REAL;
    }
    let z2 = LOCAL_QUERY_Z * LOCAL_QUERY_Z;
    let (nf, s) = (n as f64, x.iter().sum::<f64>());
    let p = (s + 0.5 * z2) / (nf + z2);
    let var = x.iter().map(|xi| (p - xi).powi(2)).sum::<f64>() / (nf - 1.0);
    let w = LOCAL_QUERY_Z * (p * (1.0 - p) / (nf + z2)).sqrt() + 0.1 * var.sqrt() + 0.05;
    Clue {
        minimum: (p - w).max(0.0),
        most_likely: p,
        maximum: (p + w).min(1.0),
        is_real: true,
    }
}

/// The `biglearn_sparfa` CLUE of docs/design/scheduler.md §6.4 / docs/design/sparfa.md §10.2: one
/// learner per student; responses whose group the model does not know are ignored.
pub fn sparfa_clue(model: &EcosystemModel, inputs: &ClueInputs) -> Clue {
    let mut learners: BTreeMap<StudentUuid, Vec<(usize, bool)>> = BTreeMap::new();
    for response in &inputs.responses {
        if let Some(q) = model.question(response.group) {
            learners
                .entry(response.student)
                .or_default()
                .push((q, response.is_correct));
        }
    }
    let targets: Vec<usize> = inputs
        .groups
        .iter()
        .filter_map(|group| model.question(*group))
        .collect();
    let learners: Vec<&[(usize, bool)]> = learners.values().map(Vec::as_slice).collect();
    model.serving.clue(&learners, &targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn check(trials: &[u8], expected: (f64, f64, f64, bool)) {
        let responses: Vec<(TrialUuid, bool)> = trials
            .iter()
            .enumerate()
            .map(|(idx, c)| (TrialUuid(Uuid::from_u128(idx as u128 + 1)), *c == 1))
            .collect();
        let clue = local_query_clue(&responses, 3);
        let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
        assert_eq!(
            (
                round(clue.minimum),
                round(clue.most_likely),
                round(clue.maximum),
                clue.is_real
            ),
            expected,
            "trials {trials:?}"
        );
    }

    /// Scenario 10.
    #[test]
    fn local_query_values_match_the_spec() {
        check(&[1, 1, 0], (0.3617, 0.6444, 0.9271, true));
        check(&[1, 1, 1], (0.7838, 0.9332, 1.0, true));
        check(&[0, 0, 0, 0], (0.0, 0.0518, 0.1791, true));
        check(
            &[1, 0, 1, 0, 1, 1, 1, 0, 1, 1],
            (0.4957, 0.6912, 0.8866, true),
        );
        check(&[1, 0], (0.0, 0.5, 1.0, false));
        check(&[], (0.0, 0.5, 1.0, false));
    }

    #[test]
    fn local_query_counts_each_trial_once_with_its_last_response() {
        let t = |n: u128| TrialUuid(Uuid::from_u128(n));
        // Trial 1 answered wrong then right: counts as one correct.
        let repeated = [(t(1), false), (t(1), true), (t(2), true), (t(3), false)];
        assert_eq!(
            local_query_clue(&repeated, 3),
            local_query_clue(&[(t(1), true), (t(2), true), (t(3), false)], 3)
        );
        assert!(!local_query_clue(&repeated[..3], 3).is_real, "two trials");
        assert!(
            local_query_clue(&repeated[..3], 2).is_real,
            "the setting lowers the bar"
        );
    }
}
