//! The read model that the scheduler and the SPARFA consumer work from (docs/design/scheduler.md
//! §2, §3): content state from ecosystem events, course state from course events.
//!
//! [`apply_course_event`] and [`apply_ecosystem_event`] are the event effects of §3 as pure
//! functions over a [`StateStore`]; they return the [`Effect`]s a scheduler turns into
//! recompute targets. The shell (sled) and [`MemoryState`] (tests, reference) implement the
//! store. Course events never read content state, so a course's state depends only on its
//! own events in sequence order, whatever the interleaving with other aggregates.

use crate::ids::{
    AssignmentUuid, CourseContainerUuid, CourseUuid, EcosystemUuid, ExerciseGroupUuid,
    ExerciseUuid, PreparationUuid, StudentUuid, TrialUuid,
};

mod apply;
mod memory;
mod model;
#[cfg(test)]
mod tests;

pub use apply::{apply_course_event, apply_ecosystem_event, register_preparation, Applied, Effect};
pub use memory::MemoryState;
pub use model::{
    AssignmentState, CompletionState, CourseContainerState, CourseState, EcosystemState,
    ExerciseState, MappingSet, PoolState, PreparationState, ResponseState, StudentState,
    TrialState,
};

/// A storage failure below the read model (the shell's database).
#[derive(Debug, thiserror::Error)]
#[error("read-model storage: {0}")]
pub struct StateError(pub String);

/// Read access to the read model. Lists come in ascending uuid order unless stated.
pub trait StateView {
    /// Ecosystems never change once created, so stores may share one decoded copy.
    fn ecosystem(
        &self,
        ecosystem: EcosystemUuid,
    ) -> Result<Option<std::sync::Arc<EcosystemState>>, StateError>;
    fn exercise(&self, exercise: ExerciseUuid) -> Result<Option<ExerciseState>, StateError>;
    /// Every exercise uuid known in any ecosystem for this group.
    fn group_versions(&self, group: ExerciseGroupUuid) -> Result<Vec<ExerciseUuid>, StateError>;

    fn course(&self, course: CourseUuid) -> Result<Option<CourseState>, StateError>;
    fn preparation(
        &self,
        course: CourseUuid,
        preparation: PreparationUuid,
    ) -> Result<Option<PreparationState>, StateError>;
    fn mappings(&self, course: CourseUuid) -> Result<MappingSet, StateError>;
    fn course_containers(
        &self,
        course: CourseUuid,
    ) -> Result<Vec<(CourseContainerUuid, CourseContainerState)>, StateError>;
    fn students(&self, course: CourseUuid) -> Result<Vec<(StudentUuid, StudentState)>, StateError>;
    fn student(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Option<StudentState>, StateError>;
    fn assignment(
        &self,
        course: CourseUuid,
        assignment: AssignmentUuid,
    ) -> Result<Option<AssignmentState>, StateError>;
    /// The student's assignments (deleted ones included).
    fn student_assignments(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Vec<AssignmentState>, StateError>;
    fn trial(&self, course: CourseUuid, trial: TrialUuid)
        -> Result<Option<TrialState>, StateError>;
    /// The completion bookkeeping of an assignment still waiting to enter the history.
    fn completion(
        &self,
        course: CourseUuid,
        assignment: AssignmentUuid,
    ) -> Result<Option<CompletionState>, StateError>;
    /// The student's responses to one exercise version, in course sequence order.
    fn student_exercise_responses(
        &self,
        course: CourseUuid,
        student: StudentUuid,
        exercise: ExerciseUuid,
    ) -> Result<Vec<ResponseState>, StateError>;
    /// All the student's responses in the course, in course sequence order.
    fn student_responses(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Vec<ResponseState>, StateError>;
}

/// Write access, used only by the apply functions.
pub trait StateStore: StateView {
    fn put_ecosystem(&mut self, ecosystem: EcosystemState) -> Result<(), StateError>;
    fn put_exercise(
        &mut self,
        exercise: ExerciseUuid,
        state: ExerciseState,
    ) -> Result<(), StateError>;
    fn add_group_version(
        &mut self,
        group: ExerciseGroupUuid,
        exercise: ExerciseUuid,
    ) -> Result<(), StateError>;
    fn put_course(&mut self, course: CourseState) -> Result<(), StateError>;
    fn put_preparation(
        &mut self,
        course: CourseUuid,
        preparation: PreparationState,
    ) -> Result<(), StateError>;
    fn put_mappings(&mut self, course: CourseUuid, mappings: MappingSet) -> Result<(), StateError>;
    fn put_course_container(
        &mut self,
        course: CourseUuid,
        container: CourseContainerUuid,
        state: CourseContainerState,
    ) -> Result<(), StateError>;
    fn remove_course_container(
        &mut self,
        course: CourseUuid,
        container: CourseContainerUuid,
    ) -> Result<(), StateError>;
    fn put_student(
        &mut self,
        course: CourseUuid,
        student: StudentUuid,
        state: StudentState,
    ) -> Result<(), StateError>;
    fn put_assignment(
        &mut self,
        course: CourseUuid,
        assignment: AssignmentState,
    ) -> Result<(), StateError>;
    fn put_trial(
        &mut self,
        course: CourseUuid,
        trial: TrialUuid,
        state: TrialState,
    ) -> Result<(), StateError>;
    fn put_response(
        &mut self,
        course: CourseUuid,
        response: ResponseState,
    ) -> Result<(), StateError>;
    /// Sets (`Some`) or removes (`None`) an assignment's completion bookkeeping.
    fn put_completion(
        &mut self,
        course: CourseUuid,
        assignment: AssignmentUuid,
        completion: Option<CompletionState>,
    ) -> Result<(), StateError>;
}
