//! [`Reader`]: the read model of one course with per-computation caches.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use biglearn_domain::ids::{
    AssignmentUuid, BookContainerUuid, CourseUuid, EcosystemUuid, ExerciseGroupUuid, ExerciseUuid,
    StudentUuid,
};
use biglearn_domain::state::{
    AssignmentState, CourseState, EcosystemState, MappingSet, StateError, StateView, StudentState,
};

/// Reads one course and the content it uses. Content and mappings are cached for the
/// lifetime of the reader (one computation pass), since they do not change within it.
pub struct Reader<'a> {
    pub view: &'a dyn StateView,
    pub course: CourseUuid,
    ecosystems: RefCell<BTreeMap<EcosystemUuid, Option<Arc<EcosystemState>>>>,
    groups: RefCell<HashMap<ExerciseUuid, Option<ExerciseGroupUuid>>>,
    versions: RefCell<HashMap<ExerciseGroupUuid, Rc<Vec<ExerciseUuid>>>>,
    mappings: OnceCell<Rc<MappingSet>>,
    /// Per student: every response with a known trial, assignment and group, resolved for
    /// CLUEs, with its assignment's `feedback_at` (filled by [`crate::clue`]).
    pub(crate) clue_responses: RefCell<ClueResponseCache>,
}

pub(crate) type ClueResponseCache = HashMap<StudentUuid, crate::clue::ResolvedResponses>;

impl<'a> Reader<'a> {
    pub fn new(view: &'a dyn StateView, course: CourseUuid) -> Reader<'a> {
        Reader {
            view,
            course,
            ecosystems: RefCell::default(),
            groups: RefCell::default(),
            versions: RefCell::default(),
            mappings: OnceCell::new(),
            clue_responses: RefCell::default(),
        }
    }

    pub fn course_state(&self) -> Result<Option<CourseState>, StateError> {
        self.view.course(self.course)
    }

    pub fn ecosystem(
        &self,
        ecosystem: EcosystemUuid,
    ) -> Result<Option<Arc<EcosystemState>>, StateError> {
        if let Some(cached) = self.ecosystems.borrow().get(&ecosystem) {
            return Ok(cached.clone());
        }
        let loaded = self.view.ecosystem(ecosystem)?;
        self.ecosystems
            .borrow_mut()
            .insert(ecosystem, loaded.clone());
        Ok(loaded)
    }

    pub fn group(&self, exercise: ExerciseUuid) -> Result<Option<ExerciseGroupUuid>, StateError> {
        if let Some(cached) = self.groups.borrow().get(&exercise) {
            return Ok(*cached);
        }
        let group = self.view.exercise(exercise)?.map(|e| e.group_uuid);
        self.groups.borrow_mut().insert(exercise, group);
        Ok(group)
    }

    /// Every known version of the group.
    pub fn versions(&self, group: ExerciseGroupUuid) -> Result<Rc<Vec<ExerciseUuid>>, StateError> {
        if let Some(cached) = self.versions.borrow().get(&group) {
            return Ok(cached.clone());
        }
        let versions = Rc::new(self.view.group_versions(group)?);
        self.versions.borrow_mut().insert(group, versions.clone());
        Ok(versions)
    }

    /// Every version of the exercise's group; the exercise alone if its group is unknown.
    pub fn versions_of_exercise(
        &self,
        exercise: ExerciseUuid,
    ) -> Result<Vec<ExerciseUuid>, StateError> {
        Ok(match self.group(exercise)? {
            Some(group) => {
                let mut versions = self.versions(group)?.as_ref().clone();
                if !versions.contains(&exercise) {
                    versions.push(exercise);
                }
                versions
            }
            None => vec![exercise],
        })
    }

    pub fn mappings(&self) -> Result<Rc<MappingSet>, StateError> {
        if let Some(mappings) = self.mappings.get() {
            return Ok(mappings.clone());
        }
        let loaded = Rc::new(self.view.mappings(self.course)?);
        Ok(self.mappings.get_or_init(|| loaded).clone())
    }

    pub fn student(&self, student: StudentUuid) -> Result<Option<StudentState>, StateError> {
        self.view.student(self.course, student)
    }

    /// A student that results are computed for: not known-and-dropped (docs/design/scheduler.md
    /// §3.3).
    pub fn is_served(&self, student: StudentUuid) -> Result<bool, StateError> {
        Ok(self.student(student)?.is_none_or(|s| s.active))
    }

    pub fn is_active(&self, student: StudentUuid) -> Result<bool, StateError> {
        Ok(self.student(student)?.is_some_and(|s| s.active))
    }

    pub fn assignment(
        &self,
        assignment: AssignmentUuid,
    ) -> Result<Option<AssignmentState>, StateError> {
        self.view.assignment(self.course, assignment)
    }

    pub fn student_assignments(
        &self,
        student: StudentUuid,
    ) -> Result<Vec<AssignmentState>, StateError> {
        self.view.student_assignments(self.course, student)
    }

    /// `M(T, bc)` of docs/design/scheduler.md §8 in ecosystem `E`: the exercises of `bc`'s pools
    /// usable for assignment type `T`, in pool order (duplicates kept; callers test membership).
    pub fn pool_exercises(
        &self,
        ecosystem: EcosystemUuid,
        book_container: BookContainerUuid,
        assignment_type: &str,
    ) -> Result<Vec<ExerciseUuid>, StateError> {
        let Some(eco) = self.ecosystem(ecosystem)? else {
            return Ok(Vec::new());
        };
        Ok(eco
            .pools_of(book_container)
            .filter(|pool| pool.types.iter().any(|t| t == assignment_type))
            .flat_map(|pool| pool.exercise_uuids.iter().copied())
            .collect())
    }
}
