//! The read model's rows in one sled tree: [`SledState`] implements the domain's
//! `StateView`/`StateStore` over an [`Overlay`], so an event batch commits as one `sled::Batch`.
//!
//! Keys are a one-byte tag followed by binary uuids (and big-endian sequence numbers), so
//! that prefix scans return a course's, a student's or an exercise's rows in order. Values
//! are postcard, except the hot rows (responses, trials, exercises), which are fixed-width.

use biglearn_domain::ids::{
    AssignmentUuid, CourseContainerUuid, CourseUuid, EcosystemUuid, ExerciseGroupUuid,
    ExerciseUuid, PreparationUuid, ResponseUuid, SequenceNumber, StudentUuid, TrialUuid,
};
use biglearn_domain::state::{
    AssignmentState, CompletionState, CourseContainerState, CourseState, EcosystemState,
    ExerciseState, MappingSet, PreparationState, ResponseState, StateError, StateStore, StateView,
    StudentState, TrialState,
};
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::overlay::{Overlay, Rows};

pub(crate) const TAG_ECOSYSTEM: u8 = b'x';
pub(crate) const TAG_EXERCISE: u8 = b'e';
pub(crate) const TAG_GROUP_VERSION: u8 = b'g';
pub(crate) const TAG_COURSE: u8 = b'c';
pub(crate) const TAG_PREPARATION: u8 = b'r';
pub(crate) const TAG_MAPPINGS: u8 = b'm';
pub(crate) const TAG_COURSE_CONTAINER: u8 = b'k';
pub(crate) const TAG_STUDENT: u8 = b's';
pub(crate) const TAG_ASSIGNMENT: u8 = b'n';
pub(crate) const TAG_STUDENT_ASSIGNMENT: u8 = b'i';
pub(crate) const TAG_TRIAL: u8 = b't';
pub(crate) const TAG_RESPONSE: u8 = b'o';
pub(crate) const TAG_COMPLETION: u8 = b'h';

/// `tag ‖ uuid ‖ uuid ‖ …`.
pub(crate) fn key(tag: u8, parts: &[Uuid]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 16 * parts.len() + 8);
    key.push(tag);
    for part in parts {
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn storage(error: impl std::fmt::Display) -> StateError {
    StateError(error.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    postcard::to_allocvec(value).map_err(storage)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(|error| StateError(format!("corrupt row: {error}")))
}

fn uuid_at(bytes: &[u8], at: usize) -> Result<Uuid, StateError> {
    bytes
        .get(at..at + 16)
        .and_then(|slice| Uuid::from_slice(slice).ok())
        .ok_or_else(|| StateError("corrupt row: short uuid".into()))
}

fn i64_at(bytes: &[u8], at: usize) -> Result<i64, StateError> {
    bytes
        .get(at..at + 8)
        .and_then(|slice| slice.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| StateError("corrupt row: short integer".into()))
}

const RESPONSE_LEN: usize = 16 * 5 + 2 + 8 + 8;

fn encode_response(response: &ResponseState) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(RESPONSE_LEN);
    for uuid in [
        response.response_uuid.0,
        response.trial.0,
        response.student.0,
        response.exercise.0,
        response.ecosystem.0,
    ] {
        bytes.extend_from_slice(uuid.as_bytes());
    }
    bytes.push(u8::from(response.is_correct));
    bytes.push(u8::from(response.is_real));
    bytes.extend_from_slice(&response.responded_at.to_be_bytes());
    bytes.extend_from_slice(&response.course_seq.0.to_be_bytes());
    bytes
}

fn decode_response(bytes: &[u8]) -> Result<ResponseState, StateError> {
    if bytes.len() != RESPONSE_LEN {
        return Err(StateError(format!(
            "corrupt response row: {} bytes",
            bytes.len()
        )));
    }
    Ok(ResponseState {
        response_uuid: ResponseUuid(uuid_at(bytes, 0)?),
        trial: TrialUuid(uuid_at(bytes, 16)?),
        student: StudentUuid(uuid_at(bytes, 32)?),
        exercise: ExerciseUuid(uuid_at(bytes, 48)?),
        ecosystem: EcosystemUuid(uuid_at(bytes, 64)?),
        is_correct: bytes[80] == 1,
        is_real: bytes[81] == 1,
        responded_at: i64_at(bytes, 82)?,
        course_seq: SequenceNumber(i64_at(bytes, 90)?),
    })
}

fn encode_trial(trial: &TrialState) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(trial.assignment.0.as_bytes());
    bytes.extend_from_slice(trial.exercise.0.as_bytes());
    bytes.push(u8::from(trial.is_spe));
    bytes.push(u8::from(trial.is_pe));
    bytes
}

fn decode_trial(bytes: &[u8]) -> Result<TrialState, StateError> {
    if bytes.len() != 34 {
        return Err(StateError("corrupt trial row".into()));
    }
    Ok(TrialState {
        assignment: AssignmentUuid(uuid_at(bytes, 0)?),
        exercise: ExerciseUuid(uuid_at(bytes, 16)?),
        is_spe: bytes[32] == 1,
        is_pe: bytes[33] == 1,
    })
}

/// Decoded ecosystems shared by every batch of one projection: an ecosystem is written once
/// and never changes, and decoding one (pools, container lists) per response would dominate.
pub type EcosystemCache = Arc<RwLock<HashMap<EcosystemUuid, Arc<EcosystemState>>>>;

/// The read model as one batch over one sled tree sees it.
pub struct SledState<'o, 't> {
    overlay: &'o mut Overlay<'t>,
    ecosystems: Option<EcosystemCache>,
}

impl<'o, 't> SledState<'o, 't> {
    /// Reads and writes through `overlay`; nothing is durable until it commits.
    pub fn new(overlay: &'o mut Overlay<'t>) -> Self {
        SledState {
            overlay,
            ecosystems: None,
        }
    }

    /// Like [`SledState::new`], sharing decoded ecosystems through `cache`.
    pub fn with_cache(overlay: &'o mut Overlay<'t>, cache: EcosystemCache) -> Self {
        SledState {
            overlay,
            ecosystems: Some(cache),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.overlay.get(key).map_err(storage)
    }

    /// The courses whose current ecosystem is `ecosystem` (a scan of every course: for
    /// rare events such as an ecosystem's first model).
    pub fn courses_on_ecosystem(
        &self,
        ecosystem: biglearn_domain::ids::EcosystemUuid,
    ) -> Result<Vec<CourseUuid>, StateError> {
        let mut courses = Vec::new();
        for (_, value) in self.scan(&[TAG_COURSE])? {
            let course: CourseState = decode(&value)?;
            if course.current_ecosystem == ecosystem {
                courses.push(course.uuid);
            }
        }
        Ok(courses)
    }

    fn get_decoded<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        self.get(key)?.map(|bytes| decode(&bytes)).transpose()
    }

    fn scan(&self, prefix: &[u8]) -> Result<Rows, StateError> {
        self.overlay.scan_prefix(prefix).map_err(storage)
    }

    /// Writes a hook row: `key` is prefixed with [`super::TAG_HOOK`].
    pub fn put_hook_row(&mut self, key: &[u8], value: Vec<u8>) {
        let mut full = Vec::with_capacity(1 + key.len());
        full.push(super::TAG_HOOK);
        full.extend_from_slice(key);
        self.overlay.insert(full, value);
    }

    /// Removes a hook row.
    pub fn remove_hook_row(&mut self, key: &[u8]) {
        let mut full = Vec::with_capacity(1 + key.len());
        full.push(super::TAG_HOOK);
        full.extend_from_slice(key);
        self.overlay.remove(full);
    }

    /// Hook rows under `prefix` (without the tag), in key order.
    pub fn hook_rows(&self, prefix: &[u8]) -> Result<Rows, StateError> {
        let mut full = vec![super::TAG_HOOK];
        full.extend_from_slice(prefix);
        Ok(self
            .scan(&full)?
            .into_iter()
            .map(|(key, value)| (key[1..].to_vec(), value))
            .collect())
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StateError> {
        let bytes = encode(value)?;
        self.overlay.insert(key, bytes);
        Ok(())
    }
}

impl StateView for SledState<'_, '_> {
    fn ecosystem(
        &self,
        ecosystem: EcosystemUuid,
    ) -> Result<Option<Arc<EcosystemState>>, StateError> {
        if let Some(cache) = &self.ecosystems {
            if let Some(found) = cache.read().get(&ecosystem) {
                return Ok(Some(found.clone()));
            }
        }
        let decoded: Option<EcosystemState> =
            self.get_decoded(&key(TAG_ECOSYSTEM, &[ecosystem.0]))?;
        let decoded = decoded.map(Arc::new);
        if let (Some(cache), Some(found)) = (&self.ecosystems, &decoded) {
            cache.write().insert(ecosystem, found.clone());
        }
        Ok(decoded)
    }

    fn exercise(&self, exercise: ExerciseUuid) -> Result<Option<ExerciseState>, StateError> {
        match self.get(&key(TAG_EXERCISE, &[exercise.0]))? {
            Some(bytes) => Ok(Some(ExerciseState {
                group_uuid: ExerciseGroupUuid(uuid_at(&bytes, 0)?),
                version: i64_at(&bytes, 16)?,
            })),
            None => Ok(None),
        }
    }

    fn group_versions(&self, group: ExerciseGroupUuid) -> Result<Vec<ExerciseUuid>, StateError> {
        self.scan(&key(TAG_GROUP_VERSION, &[group.0]))?
            .into_iter()
            .map(|(k, _)| uuid_at(&k, 17).map(ExerciseUuid))
            .collect()
    }

    fn course(&self, course: CourseUuid) -> Result<Option<CourseState>, StateError> {
        self.get_decoded(&key(TAG_COURSE, &[course.0]))
    }

    fn preparation(
        &self,
        course: CourseUuid,
        preparation: PreparationUuid,
    ) -> Result<Option<PreparationState>, StateError> {
        self.get_decoded(&key(TAG_PREPARATION, &[course.0, preparation.0]))
    }

    fn mappings(&self, course: CourseUuid) -> Result<MappingSet, StateError> {
        Ok(self
            .get_decoded(&key(TAG_MAPPINGS, &[course.0]))?
            .unwrap_or_default())
    }

    fn course_containers(
        &self,
        course: CourseUuid,
    ) -> Result<Vec<(CourseContainerUuid, CourseContainerState)>, StateError> {
        self.scan(&key(TAG_COURSE_CONTAINER, &[course.0]))?
            .into_iter()
            .map(|(k, v)| Ok((CourseContainerUuid(uuid_at(&k, 17)?), decode(&v)?)))
            .collect()
    }

    fn students(&self, course: CourseUuid) -> Result<Vec<(StudentUuid, StudentState)>, StateError> {
        self.scan(&key(TAG_STUDENT, &[course.0]))?
            .into_iter()
            .map(|(k, v)| Ok((StudentUuid(uuid_at(&k, 17)?), decode(&v)?)))
            .collect()
    }

    fn student(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Option<StudentState>, StateError> {
        self.get_decoded(&key(TAG_STUDENT, &[course.0, student.0]))
    }

    fn assignment(
        &self,
        course: CourseUuid,
        assignment: AssignmentUuid,
    ) -> Result<Option<AssignmentState>, StateError> {
        self.get_decoded(&key(TAG_ASSIGNMENT, &[course.0, assignment.0]))
    }

    fn student_assignments(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Vec<AssignmentState>, StateError> {
        let mut assignments = Vec::new();
        for (k, _) in self.scan(&key(TAG_STUDENT_ASSIGNMENT, &[course.0, student.0]))? {
            let assignment = AssignmentUuid(uuid_at(&k, 33)?);
            if let Some(state) = self.assignment(course, assignment)? {
                assignments.push(state);
            }
        }
        Ok(assignments)
    }

    fn trial(
        &self,
        course: CourseUuid,
        trial: TrialUuid,
    ) -> Result<Option<TrialState>, StateError> {
        self.get(&key(TAG_TRIAL, &[course.0, trial.0]))?
            .map(|bytes| decode_trial(&bytes))
            .transpose()
    }

    fn completion(
        &self,
        course: CourseUuid,
        assignment: AssignmentUuid,
    ) -> Result<Option<CompletionState>, StateError> {
        self.get_decoded(&key(TAG_COMPLETION, &[course.0, assignment.0]))
    }

    fn student_exercise_responses(
        &self,
        course: CourseUuid,
        student: StudentUuid,
        exercise: ExerciseUuid,
    ) -> Result<Vec<ResponseState>, StateError> {
        self.scan(&key(TAG_RESPONSE, &[course.0, student.0, exercise.0]))?
            .into_iter()
            .map(|(_, v)| decode_response(&v))
            .collect()
    }

    fn student_responses(
        &self,
        course: CourseUuid,
        student: StudentUuid,
    ) -> Result<Vec<ResponseState>, StateError> {
        let mut responses = self
            .scan(&key(TAG_RESPONSE, &[course.0, student.0]))?
            .into_iter()
            .map(|(_, v)| decode_response(&v))
            .collect::<Result<Vec<_>, _>>()?;
        responses.sort_by_key(|r| r.course_seq);
        Ok(responses)
    }
}

impl StateStore for SledState<'_, '_> {
    fn put_ecosystem(&mut self, ecosystem: EcosystemState) -> Result<(), StateError> {
        self.put(key(TAG_ECOSYSTEM, &[ecosystem.uuid.0]), &ecosystem)
    }

    fn put_exercise(
        &mut self,
        exercise: ExerciseUuid,
        state: ExerciseState,
    ) -> Result<(), StateError> {
        let mut bytes = state.group_uuid.0.as_bytes().to_vec();
        bytes.extend_from_slice(&state.version.to_be_bytes());
        self.overlay.insert(key(TAG_EXERCISE, &[exercise.0]), bytes);
        Ok(())
    }

    fn add_group_version(
        &mut self,
        group: ExerciseGroupUuid,
        exercise: ExerciseUuid,
    ) -> Result<(), StateError> {
        self.overlay
            .insert(key(TAG_GROUP_VERSION, &[group.0, exercise.0]), Vec::new());
        Ok(())
    }

    fn put_course(&mut self, course: CourseState) -> Result<(), StateError> {
        self.put(key(TAG_COURSE, &[course.uuid.0]), &course)
    }

    fn put_preparation(
        &mut self,
        course: CourseUuid,
        preparation: PreparationState,
    ) -> Result<(), StateError> {
        self.put(
            key(TAG_PREPARATION, &[course.0, preparation.uuid.0]),
            &preparation,
        )
    }

    fn put_mappings(&mut self, course: CourseUuid, mappings: MappingSet) -> Result<(), StateError> {
        self.put(key(TAG_MAPPINGS, &[course.0]), &mappings)
    }

    fn put_course_container(
        &mut self,
        course: CourseUuid,
        container: CourseContainerUuid,
        state: CourseContainerState,
    ) -> Result<(), StateError> {
        self.put(key(TAG_COURSE_CONTAINER, &[course.0, container.0]), &state)
    }

    fn remove_course_container(
        &mut self,
        course: CourseUuid,
        container: CourseContainerUuid,
    ) -> Result<(), StateError> {
        self.overlay
            .remove(key(TAG_COURSE_CONTAINER, &[course.0, container.0]));
        Ok(())
    }

    fn put_student(
        &mut self,
        course: CourseUuid,
        student: StudentUuid,
        state: StudentState,
    ) -> Result<(), StateError> {
        self.put(key(TAG_STUDENT, &[course.0, student.0]), &state)
    }

    fn put_assignment(
        &mut self,
        course: CourseUuid,
        assignment: AssignmentState,
    ) -> Result<(), StateError> {
        // The student index row is written every time: an update may move the assignment
        // to another student (Tutor never does, but the row must follow the state).
        if let Some(previous) = self.assignment(course, assignment.uuid)? {
            if previous.student != assignment.student {
                self.overlay.remove(key(
                    TAG_STUDENT_ASSIGNMENT,
                    &[course.0, previous.student.0, assignment.uuid.0],
                ));
            }
        }
        self.overlay.insert(
            key(
                TAG_STUDENT_ASSIGNMENT,
                &[course.0, assignment.student.0, assignment.uuid.0],
            ),
            Vec::new(),
        );
        self.put(
            key(TAG_ASSIGNMENT, &[course.0, assignment.uuid.0]),
            &assignment,
        )
    }

    fn put_trial(
        &mut self,
        course: CourseUuid,
        trial: TrialUuid,
        state: TrialState,
    ) -> Result<(), StateError> {
        self.overlay
            .insert(key(TAG_TRIAL, &[course.0, trial.0]), encode_trial(&state));
        Ok(())
    }

    fn put_response(
        &mut self,
        course: CourseUuid,
        response: ResponseState,
    ) -> Result<(), StateError> {
        let mut k = key(
            TAG_RESPONSE,
            &[course.0, response.student.0, response.exercise.0],
        );
        k.extend_from_slice(&response.course_seq.0.to_be_bytes());
        self.overlay.insert(k, encode_response(&response));
        Ok(())
    }

    fn put_completion(
        &mut self,
        course: CourseUuid,
        assignment: AssignmentUuid,
        completion: Option<CompletionState>,
    ) -> Result<(), StateError> {
        let k = key(TAG_COMPLETION, &[course.0, assignment.0]);
        match completion {
            Some(completion) => self.put(k, &completion),
            None => {
                self.overlay.remove(k);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_rows_round_trip() {
        let response = ResponseState {
            response_uuid: ResponseUuid(Uuid::from_u128(1)),
            trial: TrialUuid(Uuid::from_u128(2)),
            student: StudentUuid(Uuid::from_u128(3)),
            exercise: ExerciseUuid(Uuid::from_u128(4)),
            ecosystem: EcosystemUuid(Uuid::from_u128(5)),
            is_correct: true,
            is_real: false,
            responded_at: -7,
            course_seq: SequenceNumber(42),
        };
        assert_eq!(
            decode_response(&encode_response(&response)).unwrap(),
            response
        );
        assert!(decode_response(&[0; 3]).is_err());
        let trial = TrialState {
            assignment: AssignmentUuid(Uuid::from_u128(9)),
            exercise: ExerciseUuid(Uuid::from_u128(8)),
            is_spe: true,
            is_pe: false,
        };
        assert_eq!(decode_trial(&encode_trial(&trial)).unwrap(), trial);
    }

    #[test]
    fn postcard_rows_hold_uuids_as_raw_bytes() {
        let student = StudentState {
            containers: vec![CourseContainerUuid(Uuid::from_u128(7))],
            active: true,
        };
        let bytes = encode(&student).unwrap();
        assert!(
            bytes.len() < 24,
            "16 bytes per uuid, not 36 characters: {}",
            bytes.len()
        );
        assert_eq!(decode::<StudentState>(&bytes).unwrap(), student);
        assert!(
            decode::<StudentState>(&bytes[..5]).is_err(),
            "a short row is an error"
        );
    }
}
