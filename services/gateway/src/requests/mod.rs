//! Request validation and conversion: Tutor's JSON bodies to typed requests and candidate events.
//!
//! [`parse_request`] checks a body against the endpoint's schema (docs/design/api.md §1.3
//! steps 4–5: schema, then semantic rules), collecting up to 100 pointer errors in
//! document order, and only then deserializes it into the typed [`Request`]. uuids are
//! normalised to lower case by the domain id types. [`candidates`] turns a write request
//! into one candidate event per item (§2 table) for the writer.

mod admin;
mod endpoint;
mod json_body;
mod push;
mod read;
mod stream;
mod validate;
mod write;

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use admin::{
    AdminRequest, AppliesTo, AuditSettingsRequest, ChangeDefaultRequest,
    ClearCourseOverrideRequest, DefineSettingRequest, DlqListRequest, DlqReplayRequest,
    FillSequenceGapRequest, GetSettingRequest, KillSwitchRequest, ListSequenceGapsRequest,
    ListSettingsRequest, OverridesPolicy, ResultsListRequest, SetCourseOverrideRequest,
    SettingScope, SettingValueType, StateDigestRequest,
};
pub use endpoint::{Endpoint, EndpointFamily, MAX_BODY_BYTES, MAX_CREATE_ECOSYSTEM_BODY_BYTES};
pub use json_body::{parse_json_body, JsonBodyError};
pub use push::{
    AssignmentExercisesUpdate, ClueData, PushRequest, StudentClueUpdate, TeacherClueUpdate,
    UpdateAssignmentPesRequest, UpdateAssignmentSpesRequest, UpdatePracticeWorstAreasRequest,
    UpdateStudentCluesRequest, UpdateTeacherCluesRequest, WorstAreasUpdate,
    RESERVED_ALGORITHM_MESSAGE,
};
pub use read::{
    AssignmentExercisesRequest, FetchAssignmentPesRequest, FetchAssignmentSpesRequest,
    FetchCourseEcosystemStatusesRequest, FetchPracticeWorstAreasRequest, FetchStudentCluesRequest,
    FetchTeacherCluesRequest, ReadRequest, StudentClueRequest, TeacherClueRequest,
    WorstAreasRequest,
};
pub use stream::{
    CourseEventRequest, EcosystemEventRequest, EventStreamRequest, FetchCourseEventsRequest,
    FetchEcosystemEventsRequest, FetchMetadatasRequest,
};
pub use validate::{
    push_pointer_token, FieldError, ValidationErrors, MAX_ERRORS, MAX_NON_NEGATIVE_INTEGER,
    MAX_SPY_INFO_BYTES,
};
pub use write::{
    candidates, preparation_unknown_no_op, Candidate, CandidatePayload, CreateCourseRequest,
    CreateEcosystemRequest, CreateUpdateAssignmentsRequest, PrepareCourseEcosystemRequest,
    RecordResponsesRequest, UpdateCourseEcosystemsRequest, UpdateRostersRequest, WriteRequest,
};

use validate::Schema;

/// The names of the built-in algorithms (docs/design/api.md §5.2), lower case.
pub const RESERVED_ALGORITHM_NAMES: [&str; 6] = [
    "local_query",
    "biglearn_sparfa",
    "instructor_driven_local_query",
    "student_driven_local_query",
    "instructor_driven_biglearn_sparfa",
    "student_driven_biglearn_sparfa",
];

/// An `algorithm_name` exactly as sent (1..100 characters). Compare and store it through
/// [`AlgorithmName::storage_key`]: names are case-insensitive (docs/design/api.md §5.1).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AlgorithmName(pub String);

impl AlgorithmName {
    /// The name as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unicode lower-case form, used as the storage and lookup key.
    pub fn storage_key(&self) -> String {
        self.0.to_lowercase()
    }

    /// Whether a name is one of the six built-in names, ignoring case.
    pub fn is_reserved_name(name: &str) -> bool {
        let lower = name.to_lowercase();
        RESERVED_ALGORITHM_NAMES.contains(&lower.as_str())
    }
}

impl fmt::Display for AlgorithmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AlgorithmName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(AlgorithmName)
    }
}

/// A validated request of any endpoint: the family, then one variant per endpoint.
#[derive(Clone, PartialEq, Debug)]
pub enum Request {
    Write(WriteRequest),
    Read(ReadRequest),
    Push(PushRequest),
    EventStream(EventStreamRequest),
    Admin(AdminRequest),
}

/// The message of the error returned if a body passes its schema but does not fit the
/// typed request: a bug of this module, never the client's fault.
pub const SCHEMA_MISMATCH_MESSAGE: &str = "internal error: validated body does not fit its type";

/// Validates `body` for `endpoint` and converts it to the typed request.
///
/// `Err` holds 1..=100 errors in document order; nothing of an invalid request may be
/// acted on (docs/design/api.md §1.3).
pub fn parse_request(endpoint: Endpoint, body: &Value) -> Result<Request, ValidationErrors> {
    validate::validate(schema_of(endpoint), body)?;
    convert(endpoint, body).map_err(|error| {
        ValidationErrors::single("", format!("{SCHEMA_MISMATCH_MESSAGE}: {error}"))
    })
}

fn schema_of(endpoint: Endpoint) -> &'static Schema {
    match endpoint {
        Endpoint::CreateEcosystem => &write::CREATE_ECOSYSTEM,
        Endpoint::CreateCourse => &write::CREATE_COURSE,
        Endpoint::UpdateCourseActiveDates => &write::UPDATE_COURSE_ACTIVE_DATES,
        Endpoint::UpdateRosters => &write::UPDATE_ROSTERS,
        Endpoint::PrepareCourseEcosystem => &write::PREPARE_COURSE_ECOSYSTEM,
        Endpoint::UpdateCourseEcosystems => &write::UPDATE_COURSE_ECOSYSTEMS,
        Endpoint::UpdateGloballyExcludedExercises | Endpoint::UpdateCourseExcludedExercises => {
            &write::UPDATE_EXCLUDED_EXERCISES
        }
        Endpoint::CreateUpdateAssignments => &write::CREATE_UPDATE_ASSIGNMENTS,
        Endpoint::RecordResponses => &write::RECORD_RESPONSES,
        Endpoint::FetchAssignmentPes => &read::FETCH_ASSIGNMENT_PES,
        Endpoint::FetchAssignmentSpes => &read::FETCH_ASSIGNMENT_SPES,
        Endpoint::FetchPracticeWorstAreasExercises => &read::FETCH_PRACTICE_WORST_AREAS_EXERCISES,
        Endpoint::FetchStudentClues => &read::FETCH_STUDENT_CLUES,
        Endpoint::FetchTeacherClues => &read::FETCH_TEACHER_CLUES,
        Endpoint::FetchCourseEcosystemStatuses => &read::FETCH_COURSE_ECOSYSTEM_STATUSES,
        Endpoint::UpdateAssignmentPes => &push::UPDATE_ASSIGNMENT_PES,
        Endpoint::UpdateAssignmentSpes => &push::UPDATE_ASSIGNMENT_SPES,
        Endpoint::UpdatePracticeWorstAreasExercises => &push::UPDATE_PRACTICE_WORST_AREAS_EXERCISES,
        Endpoint::UpdateStudentClues => &push::UPDATE_STUDENT_CLUES,
        Endpoint::UpdateTeacherClues => &push::UPDATE_TEACHER_CLUES,
        Endpoint::FetchCourseMetadatas => stream::FETCH_COURSE_METADATAS,
        Endpoint::FetchEcosystemMetadatas => stream::FETCH_ECOSYSTEM_METADATAS,
        Endpoint::FetchCourseEvents => &stream::FETCH_COURSE_EVENTS,
        Endpoint::FetchEcosystemEvents => &stream::FETCH_ECOSYSTEM_EVENTS,
        Endpoint::AdminFillSequenceGap => &admin::FILL_SEQUENCE_GAP,
        Endpoint::AdminListSequenceGaps => &admin::LIST_SEQUENCE_GAPS,
        Endpoint::AdminRebuild | Endpoint::AdminRebuildStatus => &admin::EMPTY,
        Endpoint::AdminDlqList => &admin::DLQ_LIST,
        Endpoint::AdminDlqReplay => &admin::DLQ_REPLAY,
        Endpoint::AdminStateDigest => &admin::STATE_DIGEST,
        Endpoint::AdminResultsList => &admin::RESULTS_LIST,
        Endpoint::AdminSettingsDefine => &admin::SETTINGS_DEFINE,
        Endpoint::AdminSettingsChangeDefault => &admin::SETTINGS_CHANGE_DEFAULT,
        Endpoint::AdminSettingsSetCourseOverride => &admin::SETTINGS_SET_COURSE_OVERRIDE,
        Endpoint::AdminSettingsClearCourseOverride => &admin::SETTINGS_CLEAR_COURSE_OVERRIDE,
        Endpoint::AdminSettingsKillSwitch => &admin::SETTINGS_KILL_SWITCH,
        Endpoint::AdminSettingsGet => &admin::SETTINGS_GET,
        Endpoint::AdminSettingsList => &admin::SETTINGS_LIST,
        Endpoint::AdminSettingsAudit => &admin::SETTINGS_AUDIT,
    }
}

/// Deserializes a body that passed its schema; borrows from `body`, no clone.
fn convert(endpoint: Endpoint, body: &Value) -> Result<Request, serde_json::Error> {
    fn typed<'a, T: Deserialize<'a>>(body: &'a Value) -> Result<T, serde_json::Error> {
        T::deserialize(body)
    }
    use AdminRequest as A;
    use EventStreamRequest as E;
    use PushRequest as P;
    use ReadRequest as R;
    use WriteRequest as W;
    Ok(match endpoint {
        Endpoint::CreateEcosystem => Request::Write(W::CreateEcosystem(Box::new(typed(body)?))),
        Endpoint::CreateCourse => Request::Write(W::CreateCourse(typed(body)?)),
        Endpoint::UpdateCourseActiveDates => {
            Request::Write(W::UpdateCourseActiveDates(typed(body)?))
        }
        Endpoint::UpdateRosters => Request::Write(W::UpdateRosters(typed(body)?)),
        Endpoint::PrepareCourseEcosystem => Request::Write(W::PrepareCourseEcosystem(typed(body)?)),
        Endpoint::UpdateCourseEcosystems => Request::Write(W::UpdateCourseEcosystems(typed(body)?)),
        Endpoint::UpdateGloballyExcludedExercises => {
            Request::Write(W::UpdateGloballyExcludedExercises(typed(body)?))
        }
        Endpoint::UpdateCourseExcludedExercises => {
            Request::Write(W::UpdateCourseExcludedExercises(typed(body)?))
        }
        Endpoint::CreateUpdateAssignments => {
            Request::Write(W::CreateUpdateAssignments(typed(body)?))
        }
        Endpoint::RecordResponses => Request::Write(W::RecordResponses(typed(body)?)),
        Endpoint::FetchAssignmentPes => Request::Read(R::FetchAssignmentPes(typed(body)?)),
        Endpoint::FetchAssignmentSpes => Request::Read(R::FetchAssignmentSpes(typed(body)?)),
        Endpoint::FetchPracticeWorstAreasExercises => {
            Request::Read(R::FetchPracticeWorstAreasExercises(typed(body)?))
        }
        Endpoint::FetchStudentClues => Request::Read(R::FetchStudentClues(typed(body)?)),
        Endpoint::FetchTeacherClues => Request::Read(R::FetchTeacherClues(typed(body)?)),
        Endpoint::FetchCourseEcosystemStatuses => {
            Request::Read(R::FetchCourseEcosystemStatuses(typed(body)?))
        }
        Endpoint::UpdateAssignmentPes => Request::Push(P::UpdateAssignmentPes(typed(body)?)),
        Endpoint::UpdateAssignmentSpes => Request::Push(P::UpdateAssignmentSpes(typed(body)?)),
        Endpoint::UpdatePracticeWorstAreasExercises => {
            Request::Push(P::UpdatePracticeWorstAreasExercises(typed(body)?))
        }
        Endpoint::UpdateStudentClues => Request::Push(P::UpdateStudentClues(typed(body)?)),
        Endpoint::UpdateTeacherClues => Request::Push(P::UpdateTeacherClues(typed(body)?)),
        Endpoint::FetchCourseMetadatas => {
            Request::EventStream(E::FetchCourseMetadatas(typed(body)?))
        }
        Endpoint::FetchEcosystemMetadatas => {
            Request::EventStream(E::FetchEcosystemMetadatas(typed(body)?))
        }
        Endpoint::FetchCourseEvents => Request::EventStream(E::FetchCourseEvents(typed(body)?)),
        Endpoint::FetchEcosystemEvents => {
            Request::EventStream(E::FetchEcosystemEvents(typed(body)?))
        }
        Endpoint::AdminFillSequenceGap => Request::Admin(A::FillSequenceGap(typed(body)?)),
        Endpoint::AdminListSequenceGaps => Request::Admin(A::ListSequenceGaps(typed(body)?)),
        Endpoint::AdminRebuild => Request::Admin(A::Rebuild),
        Endpoint::AdminRebuildStatus => Request::Admin(A::RebuildStatus),
        Endpoint::AdminDlqList => Request::Admin(A::DlqList(typed(body)?)),
        Endpoint::AdminDlqReplay => Request::Admin(A::DlqReplay(typed(body)?)),
        Endpoint::AdminStateDigest => Request::Admin(A::StateDigest(typed(body)?)),
        Endpoint::AdminResultsList => Request::Admin(A::ResultsList(typed(body)?)),
        Endpoint::AdminSettingsDefine => Request::Admin(A::DefineSetting(typed(body)?)),
        Endpoint::AdminSettingsChangeDefault => Request::Admin(A::ChangeDefault(typed(body)?)),
        Endpoint::AdminSettingsSetCourseOverride => {
            Request::Admin(A::SetCourseOverride(typed(body)?))
        }
        Endpoint::AdminSettingsClearCourseOverride => {
            Request::Admin(A::ClearCourseOverride(typed(body)?))
        }
        Endpoint::AdminSettingsKillSwitch => Request::Admin(A::KillSwitch(typed(body)?)),
        Endpoint::AdminSettingsGet => Request::Admin(A::GetSetting(typed(body)?)),
        Endpoint::AdminSettingsList => Request::Admin(A::ListSettings(typed(body)?)),
        Endpoint::AdminSettingsAudit => Request::Admin(A::AuditSettings(typed(body)?)),
    })
}

impl Request {
    /// The endpoint this request was parsed for.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Request::Write(write) => match write {
                WriteRequest::CreateEcosystem(_) => Endpoint::CreateEcosystem,
                WriteRequest::CreateCourse(_) => Endpoint::CreateCourse,
                WriteRequest::UpdateCourseActiveDates(_) => Endpoint::UpdateCourseActiveDates,
                WriteRequest::UpdateRosters(_) => Endpoint::UpdateRosters,
                WriteRequest::PrepareCourseEcosystem(_) => Endpoint::PrepareCourseEcosystem,
                WriteRequest::UpdateCourseEcosystems(_) => Endpoint::UpdateCourseEcosystems,
                WriteRequest::UpdateGloballyExcludedExercises(_) => {
                    Endpoint::UpdateGloballyExcludedExercises
                }
                WriteRequest::UpdateCourseExcludedExercises(_) => {
                    Endpoint::UpdateCourseExcludedExercises
                }
                WriteRequest::CreateUpdateAssignments(_) => Endpoint::CreateUpdateAssignments,
                WriteRequest::RecordResponses(_) => Endpoint::RecordResponses,
            },
            Request::Read(read) => match read {
                ReadRequest::FetchAssignmentPes(_) => Endpoint::FetchAssignmentPes,
                ReadRequest::FetchAssignmentSpes(_) => Endpoint::FetchAssignmentSpes,
                ReadRequest::FetchPracticeWorstAreasExercises(_) => {
                    Endpoint::FetchPracticeWorstAreasExercises
                }
                ReadRequest::FetchStudentClues(_) => Endpoint::FetchStudentClues,
                ReadRequest::FetchTeacherClues(_) => Endpoint::FetchTeacherClues,
                ReadRequest::FetchCourseEcosystemStatuses(_) => {
                    Endpoint::FetchCourseEcosystemStatuses
                }
            },
            Request::Push(push) => match push {
                PushRequest::UpdateAssignmentPes(_) => Endpoint::UpdateAssignmentPes,
                PushRequest::UpdateAssignmentSpes(_) => Endpoint::UpdateAssignmentSpes,
                PushRequest::UpdatePracticeWorstAreasExercises(_) => {
                    Endpoint::UpdatePracticeWorstAreasExercises
                }
                PushRequest::UpdateStudentClues(_) => Endpoint::UpdateStudentClues,
                PushRequest::UpdateTeacherClues(_) => Endpoint::UpdateTeacherClues,
            },
            Request::EventStream(stream) => match stream {
                EventStreamRequest::FetchCourseMetadatas(_) => Endpoint::FetchCourseMetadatas,
                EventStreamRequest::FetchEcosystemMetadatas(_) => Endpoint::FetchEcosystemMetadatas,
                EventStreamRequest::FetchCourseEvents(_) => Endpoint::FetchCourseEvents,
                EventStreamRequest::FetchEcosystemEvents(_) => Endpoint::FetchEcosystemEvents,
            },
            Request::Admin(admin) => match admin {
                AdminRequest::FillSequenceGap(_) => Endpoint::AdminFillSequenceGap,
                AdminRequest::ListSequenceGaps(_) => Endpoint::AdminListSequenceGaps,
                AdminRequest::Rebuild => Endpoint::AdminRebuild,
                AdminRequest::RebuildStatus => Endpoint::AdminRebuildStatus,
                AdminRequest::DlqList(_) => Endpoint::AdminDlqList,
                AdminRequest::DlqReplay(_) => Endpoint::AdminDlqReplay,
                AdminRequest::StateDigest(_) => Endpoint::AdminStateDigest,
                AdminRequest::ResultsList(_) => Endpoint::AdminResultsList,
                AdminRequest::DefineSetting(_) => Endpoint::AdminSettingsDefine,
                AdminRequest::ChangeDefault(_) => Endpoint::AdminSettingsChangeDefault,
                AdminRequest::SetCourseOverride(_) => Endpoint::AdminSettingsSetCourseOverride,
                AdminRequest::ClearCourseOverride(_) => Endpoint::AdminSettingsClearCourseOverride,
                AdminRequest::KillSwitch(_) => Endpoint::AdminSettingsKillSwitch,
                AdminRequest::GetSetting(_) => Endpoint::AdminSettingsGet,
                AdminRequest::ListSettings(_) => Endpoint::AdminSettingsList,
                AdminRequest::AuditSettings(_) => Endpoint::AdminSettingsAudit,
            },
        }
    }
}
