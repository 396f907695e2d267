//! SPE allocation (docs/design/scheduler.md §10.5) over a mapped history and a k-ago map.

use std::collections::{BTreeMap, HashSet};

use biglearn_domain::ids::{BookContainerUuid, ExerciseUuid};
use biglearn_domain::state::{AssignmentState, StateError};

use crate::allocation::{choose, divmod};
use crate::history::{HistoryEntry, HistoryType, KAgo, K_AGOS_TO_LOAD};
use crate::ranking::Ranking;
use crate::reader::Reader;
use crate::shuffle::det_shuffle;

/// Why an SPE was chosen (`spy_info.exercises`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeSpy {
    /// The history position its container came from (0: the assignment's own containers).
    pub k_ago: usize,
    pub is_random_ago: bool,
}

/// `build_spes(a, h, history_type, ranking, excl)`; `excl` already holds the student's
/// exclusions and every algorithm's published PEs of `a`.
pub fn build_spes(
    reader: &Reader<'_>,
    assignment: &AssignmentState,
    history: &[HistoryEntry],
    history_type: HistoryType,
    k_ago_map: &[(KAgo, i64)],
    ranking: &Ranking,
    excl: &HashSet<ExerciseUuid>,
) -> Result<(Vec<ExerciseUuid>, BTreeMap<ExerciseUuid, SpeSpy>), StateError> {
    let mut excl = excl.clone();
    let random_pool: Vec<usize> = (1..=K_AGOS_TO_LOAD)
        .filter(|k| !k_ago_map.iter().any(|(m, _)| *m == KAgo::Ago(*k)))
        .collect();
    let containers_at = |k: usize| -> &[BookContainerUuid] {
        history
            .get(k)
            .map_or(&[][..], |entry| entry.book_container_uuids.as_slice())
    };
    let mut rem_total: i64 = 0;
    let mut chosen = Vec::new();
    let mut spy = BTreeMap::new();
    for (k, count) in k_ago_map {
        rem_total += count;
        let ks: Vec<usize> = match k {
            KAgo::Random => random_pool.clone(),
            KAgo::Ago(k) => vec![*k],
        };
        let mut bcs: Vec<BookContainerUuid> = Vec::new();
        for j in &ks {
            for bc in containers_at(*j) {
                if !bcs.contains(bc) {
                    bcs.push(*bc);
                }
            }
        }
        let bcs = det_shuffle(
            &bcs,
            &format!(
                "{}|{}|{}|{k}",
                assignment.uuid,
                ranking.calculation_uuid,
                history_type.as_str()
            ),
        );
        if bcs.is_empty() {
            // The slots carry to the next k.
            continue;
        }
        let (n, mut rem) = divmod(rem_total, bcs.len());
        for bc in &bcs {
            let c_k = if rem > 0 { n + 1 } else { n };
            if c_k <= 0 {
                continue;
            }
            let c = choose(reader, assignment, &[*bc], ranking, &excl, c_k as usize)?;
            rem_total -= c.len() as i64;
            rem += n - c.len() as i64;
            let k_ago = match k {
                KAgo::Ago(k) => *k,
                KAgo::Random => (0..history.len())
                    .find(|j| containers_at(*j).contains(bc))
                    .unwrap_or(0),
            };
            for exercise in &c {
                excl.insert(*exercise);
                spy.insert(
                    *exercise,
                    SpeSpy {
                        k_ago,
                        is_random_ago: *k == KAgo::Random,
                    },
                );
            }
            chosen.extend(c);
        }
    }
    // Fallback: all the assignment's containers together.
    let fill = choose(
        reader,
        assignment,
        &assignment.assigned_book_container_uuids,
        ranking,
        &excl,
        rem_total.max(0) as usize,
    )?;
    for exercise in &fill {
        spy.insert(
            *exercise,
            SpeSpy {
                k_ago: 0,
                is_random_ago: false,
            },
        );
    }
    chosen.extend(fill);
    Ok((chosen, spy))
}
