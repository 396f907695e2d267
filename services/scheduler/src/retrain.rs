//! The retrain-trigger counting rule (docs/design/scheduler.md §14), used by the SPARFA consumer.

use std::collections::{BTreeMap, BTreeSet};

use biglearn_domain::ids::{ExerciseGroupUuid, TrialUuid};

/// `sparfa.retrain_growth`'s initial value: refit after 10 % growth.
pub const DEFAULT_RETRAIN_GROWTH: f64 = 0.1;

/// Per group: distinct trials answered, and the count at which it triggers a retrain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCount {
    pub count: u64,
    pub threshold: u64,
}

/// Distinct-trial counts per exercise group and their retrain thresholds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetrainCounts {
    groups: BTreeMap<ExerciseGroupUuid, GroupCount>,
    counted_trials: BTreeSet<TrialUuid>,
}

impl RetrainCounts {
    /// A `create_ecosystem` was applied: groups seen for the first time start at threshold 1.
    pub fn groups_seen(&mut self, groups: impl IntoIterator<Item = ExerciseGroupUuid>) {
        for group in groups {
            self.groups.entry(group).or_insert(GroupCount {
                count: 0,
                threshold: 1,
            });
        }
    }

    /// A `record_response` (any ecosystem, real or not) to `trial`, whose exercise is a
    /// version of `group`. Returns true when the group has reached its threshold: every
    /// ecosystem holding a version of it must be marked for retrain.
    pub fn record_response(&mut self, group: ExerciseGroupUuid, trial: TrialUuid) -> bool {
        let entry = self.groups.entry(group).or_insert(GroupCount {
            count: 0,
            threshold: 1,
        });
        if self.counted_trials.insert(trial) {
            entry.count += 1;
        }
        entry.count >= entry.threshold
    }

    /// A retrain of an ecosystem with these groups was snapshotted:
    /// `threshold = floor((1 + growth) · count) + 1`.
    pub fn retrain_snapshotted(
        &mut self,
        groups: impl IntoIterator<Item = ExerciseGroupUuid>,
        growth: f64,
    ) {
        for group in groups {
            let entry = self.groups.entry(group).or_insert(GroupCount {
                count: 0,
                threshold: 1,
            });
            // The epsilon keeps exact products (1.1 · 10 = 11) from flooring one below.
            let grown = (entry.count as f64 * (1.0 + growth) + 1e-9).floor() as u64;
            entry.threshold = grown + 1;
        }
    }

    pub fn group(&self, group: ExerciseGroupUuid) -> Option<GroupCount> {
        self.groups.get(&group).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn trial(n: u128) -> TrialUuid {
        TrialUuid(Uuid::from_u128(n))
    }

    /// Scenario 22.
    #[test]
    fn groups_trigger_at_one_then_after_ten_percent_growth() {
        let g = ExerciseGroupUuid(Uuid::from_u128(0x91));
        let mut counts = RetrainCounts::default();
        counts.groups_seen([g]);
        assert_eq!(
            counts.group(g),
            Some(GroupCount {
                count: 0,
                threshold: 1
            })
        );
        assert!(
            counts.record_response(g, trial(1)),
            "the first response triggers"
        );
        for n in 2..=10 {
            counts.record_response(g, trial(n));
        }
        assert!(
            counts.record_response(g, trial(10)),
            "a repeated trial is not counted"
        );
        assert_eq!(counts.group(g).map(|c| c.count), Some(10));
        counts.retrain_snapshotted([g], DEFAULT_RETRAIN_GROWTH);
        assert_eq!(
            counts.group(g),
            Some(GroupCount {
                count: 10,
                threshold: 12
            })
        );
        assert!(
            !counts.record_response(g, trial(11)),
            "count 11 does not trigger"
        );
        assert!(counts.record_response(g, trial(12)), "count 12 does");
        // Seeing the group again in another ecosystem keeps its threshold.
        counts.groups_seen([g]);
        assert_eq!(counts.group(g).map(|c| c.threshold), Some(12));
    }

    #[test]
    fn thresholds_grow_by_the_setting() {
        let g = ExerciseGroupUuid(Uuid::from_u128(0x92));
        let mut counts = RetrainCounts::default();
        for (n, growth, expected) in [(100, 0.1, 111), (100, 0.5, 151), (0, 0.1, 1), (7, 0.0, 8)] {
            let mut c = counts.clone();
            for t in 0..n {
                c.record_response(g, trial(1000 + t));
            }
            c.retrain_snapshotted([g], growth);
            assert_eq!(
                c.group(g).map(|c| c.threshold),
                Some(expected),
                "{n} at {growth}"
            );
        }
        counts.retrain_snapshotted([g], 0.1);
        assert_eq!(counts.group(g).map(|c| c.threshold), Some(1));
    }
}
