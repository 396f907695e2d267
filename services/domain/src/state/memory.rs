//! [`MemoryState`]: the read model in ordered maps, for tests and as the reference store.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{
    AssignmentUuid, CourseContainerUuid, CourseUuid, EcosystemUuid, ExerciseGroupUuid,
    ExerciseUuid, PreparationUuid, SequenceNumber, StudentUuid, TrialUuid,
};

use super::model::{
    AssignmentState, CompletionState, CourseContainerState, CourseState, EcosystemState,
    ExerciseState, MappingSet, PreparationState, ResponseState, StudentState, TrialState,
};
use super::{StateError, StateStore, StateView};

/// The whole read model in memory. Two states built from the same events compare equal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryState {
    pub ecosystems: BTreeMap<EcosystemUuid, EcosystemState>,
    pub exercises: BTreeMap<ExerciseUuid, ExerciseState>,
    pub group_versions: BTreeMap<ExerciseGroupUuid, BTreeSet<ExerciseUuid>>,
    pub courses: BTreeMap<CourseUuid, CourseState>,
    pub preparations: BTreeMap<(CourseUuid, PreparationUuid), PreparationState>,
    pub mappings: BTreeMap<CourseUuid, MappingSet>,
    pub course_containers: BTreeMap<(CourseUuid, CourseContainerUuid), CourseContainerState>,
    pub students: BTreeMap<(CourseUuid, StudentUuid), StudentState>,
    pub assignments: BTreeMap<(CourseUuid, AssignmentUuid), AssignmentState>,
    pub trials: BTreeMap<(CourseUuid, TrialUuid), TrialState>,
    /// Keyed like the sled store: (course, student, exercise, course_seq).
    pub responses: BTreeMap<(CourseUuid, StudentUuid, ExerciseUuid, SequenceNumber), ResponseState>,
    pub completions: BTreeMap<(CourseUuid, AssignmentUuid), CompletionState>,
}

impl StateView for MemoryState {
    fn ecosystem(
        &self,
        ecosystem: EcosystemUuid,
    ) -> Result<Option<std::sync::Arc<EcosystemState>>, StateError> {
        Ok(self
            .ecosystems
            .get(&ecosystem)
            .cloned()
            .map(std::sync::Arc::new))
    }

    fn exercise(&self, exercise: ExerciseUuid) -> Result<Option<ExerciseState>, StateError> {
        Ok(self.exercises.get(&exercise).copied())
    }

    fn group_versions(&self, group: ExerciseGroupUuid) -> Result<Vec<ExerciseUuid>, StateError> {
        Ok(self
            .group_versions
            .get(&group)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default())
    }

    fn course(&self, course: CourseUuid) -> Result<Option<CourseState>, StateError> {
        Ok(self.courses.get(&course).cloned())
    }

    fn preparation(
        &self,
        course: CourseUuid,
        preparation: PreparationUuid,
    ) -> Result<Option<PreparationState>, StateError> {
        Ok(self.preparations.get(&(course, preparation)).cloned())
    }

    fn mappings(&self, course: CourseUuid) -> Result<MappingSet, StateError> {
        Ok(self.mappings.get(&course).cloned().unwrap_or_default())
    }

    fn course_containers(
        &self,
        course: CourseUuid,
    ) -> Result<Vec<(CourseContainerUuid, CourseContainerState)>, StateError> {
        Ok(self
            .course_containers
            .range((course, CourseContainerUuid::default())..)
            .take_while(|((c, _), _)| *c == course)
            .map(|((_, uuid), state)| (*uuid, state.clone()))
            .collect())
    }

    fn students(&self, course: CourseUuid) -> Result<Vec<(StudentUuid, StudentState)>, StateError> {
        Ok(self
            .students
            .range((course, StudentUuid::default())..)
            .take_while(|((c, _), _)| *c == course)
            .map(|((_, uuid), state)| (*uuid, state.clone()))
            .collect())
    }

    fn student(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Option<StudentState>, StateError> {
        Ok(self.students.get(&(course, student)).cloned())
    }

    fn assignment(
        &self,
        course: CourseUuid,
        assignment: AssignmentUuid,
    ) -> Result<Option<AssignmentState>, StateError> {
        Ok(self.assignments.get(&(course, assignment)).cloned())
    }

    fn student_assignments(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Vec<AssignmentState>, StateError> {
        Ok(self
            .assignments
            .range((course, AssignmentUuid::default())..)
            .take_while(|((c, _), _)| *c == course)
            .filter(|(_, a)| a.student == student)
            .map(|(_, a)| a.clone())
            .collect())
    }

    fn trial(
        &self,
        course: CourseUuid,
        trial: TrialUuid,
    ) -> Result<Option<TrialState>, StateError> {
        Ok(self.trials.get(&(course, trial)).copied())
    }

    fn completion(
        &self,
        course: CourseUuid,
        assignment: AssignmentUuid,
    ) -> Result<Option<CompletionState>, StateError> {
        Ok(self.completions.get(&(course, assignment)).cloned())
    }

    fn student_exercise_responses(
        &self,
        course: CourseUuid,
        student: StudentUuid,
        exercise: ExerciseUuid,
    ) -> Result<Vec<ResponseState>, StateError> {
        Ok(self
            .responses
            .range((course, student, exercise, SequenceNumber(i64::MIN))..)
            .take_while(|((c, s, x, _), _)| *c == course && *s == student && *x == exercise)
            .map(|(_, r)| *r)
            .collect())
    }

    fn student_responses(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Vec<ResponseState>, StateError> {
        let mut all: Vec<ResponseState> = self
            .responses
            .range(
                (
                    course,
                    student,
                    ExerciseUuid::default(),
                    SequenceNumber(i64::MIN),
                )..,
            )
            .take_while(|((c, s, _, _), _)| *c == course && *s == student)
            .map(|(_, r)| *r)
            .collect();
        all.sort_by_key(|r| r.course_seq);
        Ok(all)
    }
}

impl StateStore for MemoryState {
    fn put_ecosystem(&mut self, ecosystem: EcosystemState) -> Result<(), StateError> {
        self.ecosystems.insert(ecosystem.uuid, ecosystem);
        Ok(())
    }

    fn put_exercise(
        &mut self,
        exercise: ExerciseUuid,
        state: ExerciseState,
    ) -> Result<(), StateError> {
        self.exercises.insert(exercise, state);
        Ok(())
    }

    fn add_group_version(
        &mut self,
        group: ExerciseGroupUuid,
        exercise: ExerciseUuid,
    ) -> Result<(), StateError> {
        self.group_versions
            .entry(group)
            .or_default()
            .insert(exercise);
        Ok(())
    }

    fn put_course(&mut self, course: CourseState) -> Result<(), StateError> {
        self.courses.insert(course.uuid, course);
        Ok(())
    }

    fn put_preparation(
        &mut self,
        course: CourseUuid,
        preparation: PreparationState,
    ) -> Result<(), StateError> {
        self.preparations
            .insert((course, preparation.uuid), preparation);
        Ok(())
    }

    fn put_mappings(&mut self, course: CourseUuid, mappings: MappingSet) -> Result<(), StateError> {
        self.mappings.insert(course, mappings);
        Ok(())
    }

    fn put_course_container(
        &mut self,
        course: CourseUuid,
        container: CourseContainerUuid,
        state: CourseContainerState,
    ) -> Result<(), StateError> {
        self.course_containers.insert((course, container), state);
        Ok(())
    }

    fn remove_course_container(
        &mut self,
        course: CourseUuid,
        container: CourseContainerUuid,
    ) -> Result<(), StateError> {
        self.course_containers.remove(&(course, container));
        Ok(())
    }

    fn put_student(
        &mut self,
        course: CourseUuid,
        student: StudentUuid,
        state: StudentState,
    ) -> Result<(), StateError> {
        self.students.insert((course, student), state);
        Ok(())
    }

    fn put_assignment(
        &mut self,
        course: CourseUuid,
        assignment: AssignmentState,
    ) -> Result<(), StateError> {
        self.assignments
            .insert((course, assignment.uuid), assignment);
        Ok(())
    }

    fn put_trial(
        &mut self,
        course: CourseUuid,
        trial: TrialUuid,
        state: TrialState,
    ) -> Result<(), StateError> {
        self.trials.insert((course, trial), state);
        Ok(())
    }

    fn put_response(
        &mut self,
        course: CourseUuid,
        response: ResponseState,
    ) -> Result<(), StateError> {
        self.responses.insert(
            (
                course,
                response.student,
                response.exercise,
                response.course_seq,
            ),
            response,
        );
        Ok(())
    }

    fn put_completion(
        &mut self,
        course: CourseUuid,
        assignment: AssignmentUuid,
        completion: Option<CompletionState>,
    ) -> Result<(), StateError> {
        match completion {
            Some(completion) => self.completions.insert((course, assignment), completion),
            None => self.completions.remove(&(course, assignment)),
        };
        Ok(())
    }
}
