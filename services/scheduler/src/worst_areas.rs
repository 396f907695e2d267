//! Practice worst areas (docs/design/scheduler.md §11): the weakest CLUEs' practice pools, drawn
//! through the slot table with borrowing.

use std::collections::HashSet;

use biglearn_domain::ids::{BookContainerUuid, EcosystemUuid, ExerciseUuid};
use biglearn_domain::state::StateError;
use biglearn_events::ResultRecord;
use uuid::Uuid;

use crate::ranking::Ranking;
use crate::reader::Reader;

/// `NUM_PES_PER_STUDENT`: candidates per weak area.
pub const NUM_PES_PER_STUDENT: usize = 5;
/// `MAX_NUM_WORST_CLUES`.
pub const MAX_NUM_WORST_CLUES: usize = 5;

/// The slot table: exercises drawn for each weak area, by number of weak areas.
pub fn slots(n_worst: usize) -> &'static [usize] {
    match n_worst {
        0 => &[],
        1 => &[5],
        2 => &[3, 2],
        3 => &[2, 2, 1],
        4 => &[2, 1, 1, 1],
        _ => &[1, 1, 1, 1, 1],
    }
}

/// The weakest containers: the student's CLUEs (one algorithm) in ecosystem E, by
/// (most_likely, book_container_uuid) ascending, at most [`MAX_NUM_WORST_CLUES`].
pub fn worst_containers(
    clues: &[ResultRecord],
    ecosystem: EcosystemUuid,
) -> Vec<BookContainerUuid> {
    let mut worst: Vec<(f64, Uuid)> = clues
        .iter()
        .filter_map(|record| {
            let clue = record.clue_data.as_ref()?;
            let bc = record.book_container_uuid?;
            (clue.ecosystem_uuid == Some(ecosystem.0)).then_some((clue.most_likely, bc))
        })
        .collect();
    worst.sort_by(|(pa, a), (pb, b)| pa.total_cmp(pb).then_with(|| a.cmp(b)));
    worst
        .into_iter()
        .take(MAX_NUM_WORST_CLUES)
        .map(|(_, bc)| BookContainerUuid(bc))
        .collect()
}

/// The slot allocation: area i takes its slots from its own candidates first, then borrows
/// from the earlier areas', then from the later areas'.
pub fn allocate(candidates: &[Vec<ExerciseUuid>]) -> Vec<ExerciseUuid> {
    let slots = slots(candidates.len());
    let mut chosen: Vec<ExerciseUuid> = Vec::new();
    for (i, n) in slots.iter().enumerate() {
        let order = candidates[i]
            .iter()
            .chain(candidates[..i].iter().flatten())
            .chain(candidates[i + 1..].iter().flatten());
        let mut taken = 0;
        let mut seen = HashSet::new();
        for exercise in order {
            if taken == *n {
                break;
            }
            if seen.insert(*exercise) && !chosen.contains(exercise) {
                chosen.push(*exercise);
                taken += 1;
            }
        }
    }
    chosen
}

/// The worst-areas exercises for the weakest containers of ecosystem E.
pub fn build_worst_areas(
    reader: &Reader<'_>,
    ecosystem: EcosystemUuid,
    worst: &[BookContainerUuid],
    ranking: &Ranking,
    excl: &HashSet<ExerciseUuid>,
) -> Result<Vec<ExerciseUuid>, StateError> {
    let mut candidates = Vec::with_capacity(worst.len());
    for bc in worst {
        let practice: HashSet<ExerciseUuid> = reader
            .pool_exercises(ecosystem, *bc, "practice")?
            .into_iter()
            .filter(|e| !excl.contains(e))
            .collect();
        candidates.push(
            ranking
                .exercise_uuids
                .iter()
                .filter(|e| practice.contains(e))
                .take(NUM_PES_PER_STUDENT)
                .copied()
                .collect(),
        );
    }
    Ok(allocate(&candidates))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(n: u128) -> ExerciseUuid {
        ExerciseUuid(Uuid::from_u128(n))
    }

    fn check(candidates: &[&[u128]], expected: &[u128]) {
        let candidates: Vec<Vec<ExerciseUuid>> = candidates
            .iter()
            .map(|c| c.iter().map(|n| x(*n)).collect())
            .collect();
        let expected: Vec<ExerciseUuid> = expected.iter().map(|n| x(*n)).collect();
        assert_eq!(allocate(&candidates), expected, "{candidates:?}");
    }

    /// Scenario 19 (allocation part).
    #[test]
    fn slots_follow_the_table_and_empty_areas_borrow() {
        check(&[], &[]);
        check(&[&[1, 2, 3, 4, 5, 6]], &[1, 2, 3, 4, 5]);
        check(&[&[1, 2, 3, 4], &[11, 12, 13]], &[1, 2, 3, 11, 12]);
        check(&[&[1, 2, 3], &[11, 12, 13], &[21, 22]], &[1, 2, 11, 12, 21]);
        // The second area has nothing: it borrows from the first (earlier areas first).
        check(&[&[1, 2, 3, 4], &[], &[21, 22]], &[1, 2, 3, 4, 21]);
        // The first area has nothing: it borrows from the later ones.
        check(&[&[], &[11, 12, 13], &[21, 22]], &[11, 12, 13, 21, 22]);
        // Shared candidates are chosen once.
        check(&[&[1, 2], &[1, 2, 3]], &[1, 2, 3]);
        check(&[&[1], &[2], &[3], &[4], &[5], &[6]], &[1, 2, 3, 4, 5]);
        check(&[&[], &[]], &[]);
    }
}
