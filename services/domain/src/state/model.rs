//! The rows of the read model (docs/design/scheduler.md §2.1 content state, §2.2 course state).
//!
//! Times are microseconds since the epoch (`None` where Tutor may omit them), so that rules
//! compare integers and replays never re-parse text.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{
    AssignmentUuid, BookContainerUuid, CourseContainerUuid, CourseUuid, EcosystemUuid,
    ExerciseGroupUuid, ExerciseUuid, PreparationUuid, ResponseUuid, SequenceNumber, StudentUuid,
    TrialUuid,
};

/// One ecosystem (a book version with its exercises), built by `create_ecosystem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EcosystemState {
    pub uuid: EcosystemUuid,
    pub metadata_sequence_number: Option<i64>,
    /// Every book container with its parent (`None` for the book's root), in `contents[]` order.
    pub containers: Vec<(BookContainerUuid, Option<BookContainerUuid>)>,
    /// `exercises[]` order; the order rankings start from.
    pub exercise_uuids: Vec<ExerciseUuid>,
    /// One per `contents[].pools[]` entry, in that order.
    pub pools: Vec<PoolState>,
    /// EcosystemExercise: every container (any level) with a pool that holds the exercise.
    pub exercise_book_containers: BTreeMap<ExerciseUuid, Vec<BookContainerUuid>>,
}

impl EcosystemState {
    /// The pools of one book container, in `pools[]` order.
    pub fn pools_of(&self, book_container: BookContainerUuid) -> impl Iterator<Item = &PoolState> {
        self.pools
            .iter()
            .filter(move |pool| pool.book_container_uuid == book_container)
    }

    /// The containers that have no child container: SPARFA's concepts.
    pub fn leaf_book_containers(&self) -> Vec<BookContainerUuid> {
        let parents: BTreeSet<BookContainerUuid> = self
            .containers
            .iter()
            .filter_map(|(_, parent)| *parent)
            .collect();
        self.containers
            .iter()
            .map(|(uuid, _)| *uuid)
            .filter(|uuid| !parents.contains(uuid))
            .collect()
    }

    /// Whether the ecosystem has this container.
    pub fn has_book_container(&self, book_container: BookContainerUuid) -> bool {
        self.containers
            .iter()
            .any(|(uuid, _)| *uuid == book_container)
    }
}

/// One exercise pool of a book container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub book_container_uuid: BookContainerUuid,
    pub use_for_clue: bool,
    /// `use_for_personalized_for_assignment_types`, e.g. `reading`, `homework`, `practice`.
    pub types: Vec<String>,
    pub exercise_uuids: Vec<ExerciseUuid>,
}

/// An exercise version; the first definition in any ecosystem wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExerciseState {
    pub group_uuid: ExerciseGroupUuid,
    pub version: i64,
}

/// One course.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseState {
    pub uuid: CourseUuid,
    pub initial_ecosystem: EcosystemUuid,
    pub current_ecosystem: EcosystemUuid,
    pub is_real_course: bool,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub global_excluded_exercise_uuids: Vec<ExerciseUuid>,
    pub global_excluded_group_uuids: Vec<ExerciseGroupUuid>,
    pub course_excluded_exercise_uuids: Vec<ExerciseUuid>,
    pub course_excluded_group_uuids: Vec<ExerciseGroupUuid>,
}

/// A registered `prepare_course_ecosystem`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparationState {
    pub uuid: PreparationUuid,
    pub from_ecosystem: EcosystemUuid,
    pub next_ecosystem: EcosystemUuid,
}

/// A course's book-container mappings with the chain and reverse closure (docs/design/scheduler.md
/// §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingSet {
    /// `(from_eco, to_eco, from_bc) → to_bc`; insert-if-absent.
    pub forward: BTreeMap<(EcosystemUuid, EcosystemUuid, BookContainerUuid), BookContainerUuid>,
}

impl MappingSet {
    /// `fwd(from → to, bc)` without the identity fallback: `None` when unmapped.
    pub fn forward(
        &self,
        from: EcosystemUuid,
        to: EcosystemUuid,
        book_container: BookContainerUuid,
    ) -> Option<BookContainerUuid> {
        if from == to {
            return Some(book_container);
        }
        self.forward.get(&(from, to, book_container)).copied()
    }

    /// `fwd` with the identity fallback (CLUE targets, docs/design/scheduler.md §6.1).
    pub fn forward_or_same(
        &self,
        from: EcosystemUuid,
        to: EcosystemUuid,
        book_container: BookContainerUuid,
    ) -> BookContainerUuid {
        self.forward(from, to, book_container)
            .unwrap_or(book_container)
    }

    /// `rev(to, bc)`: every `(from_eco, from_bc)` mapped onto `bc` of `to` (ascending).
    pub fn reverse(
        &self,
        to: EcosystemUuid,
        book_container: BookContainerUuid,
    ) -> Vec<(EcosystemUuid, BookContainerUuid)> {
        self.forward
            .iter()
            .filter(|((_, to_eco, _), to_bc)| *to_eco == to && **to_bc == book_container)
            .map(|((from_eco, _, from_bc), _)| (*from_eco, *from_bc))
            .collect()
    }

    /// Adds one preparation's mappings and closes the set (chain, then reverse for 1-to-1).
    pub fn add(
        &mut self,
        from: EcosystemUuid,
        to: EcosystemUuid,
        mappings: impl IntoIterator<Item = (BookContainerUuid, BookContainerUuid)>,
    ) {
        for (from_bc, to_bc) in mappings {
            if from != to {
                self.forward.entry((from, to, from_bc)).or_insert(to_bc);
            }
        }
        self.close();
    }

    fn close(&mut self) {
        // Chain to a fixed point; the set is small (containers × ecosystem pairs of one course).
        loop {
            let mut added = Vec::new();
            for (&(a, b, x), &y) in &self.forward {
                for (&(b2, c, y2), &z) in self.forward.range((b, EcosystemUuid::default(), y)..) {
                    if b2 != b {
                        break;
                    }
                    if y2 != y || a == c {
                        continue;
                    }
                    if !self.forward.contains_key(&(a, c, x)) {
                        added.push(((a, c, x), z));
                    }
                }
            }
            // Reverse mappings for targets reached by exactly one source container.
            let mut reached: BTreeMap<(EcosystemUuid, EcosystemUuid, BookContainerUuid), Vec<_>> =
                BTreeMap::new();
            for (&(a, b, x), &y) in &self.forward {
                reached.entry((a, b, y)).or_default().push(x);
            }
            for ((a, b, y), sources) in reached {
                if let [x] = sources.as_slice() {
                    if !self.forward.contains_key(&(b, a, y)) {
                        added.push(((b, a, y), *x));
                    }
                }
            }
            let mut changed = false;
            for (key, value) in added {
                if let std::collections::btree_map::Entry::Vacant(slot) = self.forward.entry(key) {
                    slot.insert(value);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }
}

/// A course container (period or section) of the latest roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseContainerState {
    /// `None` when the parent is the course itself.
    pub parent: Option<CourseContainerUuid>,
    pub archived_at: Option<i64>,
    /// Active students in this container or in any descendant.
    pub student_uuids: BTreeSet<StudentUuid>,
}

/// A student of a course.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudentState {
    /// The student's container first, then its ancestors (empty once dropped).
    pub containers: Vec<CourseContainerUuid>,
    pub active: bool,
}

/// An assignment of one student; the latest event replaces every field but the trials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentState {
    pub uuid: AssignmentUuid,
    pub student: StudentUuid,
    pub ecosystem: EcosystemUuid,
    pub assignment_type: String,
    pub opens_at: Option<i64>,
    pub due_at: Option<i64>,
    pub feedback_at: Option<i64>,
    pub assigned_book_container_uuids: Vec<BookContainerUuid>,
    /// Distinct, in order.
    pub assigned_exercise_uuids: Vec<ExerciseUuid>,
    pub goal_pes: Option<i64>,
    pub goal_spes: Option<i64>,
    pub pes_are_assigned: bool,
    pub spes_are_assigned: bool,
    pub is_deleted: bool,
    /// Tutor's `created_at`.
    pub created_at: Option<i64>,
    /// Sticky once set (docs/design/scheduler.md §10.1).
    pub history_at: Option<i64>,
    /// Every trial ever inserted for this assignment, in insertion order.
    pub trial_uuids: Vec<TrialUuid>,
}

impl AssignmentState {
    /// `needs_pes(a)` of docs/design/scheduler.md §3.4.
    pub fn needs_pes(&self) -> bool {
        !self.is_deleted && !self.pes_are_assigned && self.goal_pes.is_none_or(|goal| goal > 0)
    }

    /// `needs_spes(a)` of docs/design/scheduler.md §3.4.
    pub fn needs_spes(&self) -> bool {
        !self.is_deleted && !self.spes_are_assigned && self.goal_spes.is_none_or(|goal| goal > 0)
    }
}

/// A trial: inserted once, never updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialState {
    pub assignment: AssignmentUuid,
    pub exercise: ExerciseUuid,
    pub is_spe: bool,
    pub is_pe: bool,
}

/// A recorded response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseState {
    pub response_uuid: ResponseUuid,
    pub trial: TrialUuid,
    pub student: StudentUuid,
    pub exercise: ExerciseUuid,
    pub ecosystem: EcosystemUuid,
    pub is_correct: bool,
    pub is_real: bool,
    pub responded_at: i64,
    /// The course sequence number of the `record_response`: the tie-break after `responded_at`.
    pub course_seq: SequenceNumber,
}

/// What the completion rule (docs/design/scheduler.md §10.1) still waits for, per assignment with a
/// due date and no `history_at` yet; kept so that a response checks one small row instead of
/// re-reading every trial's responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionState {
    pub due_at: i64,
    /// The non-SPE trials, ascending.
    pub required: Vec<TrialUuid>,
    /// Those with at least one response by `due_at`, ascending.
    pub answered: Vec<TrialUuid>,
    /// The latest `responded_at ≤ due_at` over responses to required trials.
    pub latest_on_time: Option<i64>,
}

impl CompletionState {
    /// Counts one response to `trial` at `responded_at`; true once every required trial
    /// has an on-time response.
    pub fn record(&mut self, trial: TrialUuid, responded_at: i64) -> bool {
        if responded_at <= self.due_at && self.required.binary_search(&trial).is_ok() {
            if let Err(at) = self.answered.binary_search(&trial) {
                self.answered.insert(at, trial);
            }
            self.latest_on_time = Some(
                self.latest_on_time
                    .map_or(responded_at, |l| l.max(responded_at)),
            );
        }
        self.is_complete()
    }

    /// Every required trial has an on-time response (and there is at least one).
    pub fn is_complete(&self) -> bool {
        !self.required.is_empty() && self.answered.len() == self.required.len()
    }
}
