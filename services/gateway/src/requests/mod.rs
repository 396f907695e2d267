//! Request validation and conversion: Tutor's JSON bodies to typed requests and candidate events.
//!
//! [`parse_request_body`] is the way in: bytes to the typed [`Request`] in one pass, every
//! value checked against the endpoint's schema on the way (`one_pass.rs`; each endpoint's
//! schema and typed request are named in the one table of `endpoint.rs`). Only a body it
//! refuses is read again, by the two steps that say what is wrong and where:
//!
//! - [`parse_json_body`] reads the bytes (docs/design/api.md §1.3 step 3): an object with a
//!   repeated key is refused, with its pointer;
//! - [`parse_request`] checks the JSON against the schema (docs/design/api.md §1.3
//!   steps 4–5: schema, then semantic rules), collecting up to 100 pointer errors in
//!   document order, and only then deserializes it into the typed [`Request`].
//!
//! Both ways accept the same bodies and build the same requests (tests/requests_proptest.rs).
//! uuids are normalised to lower case by the domain id types. [`candidates`] turns a write
//! request into one candidate event per item (§2 table) for the writer.

mod admin;
mod endpoint;
mod json_body;
mod one_pass;
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

/// Why a body was refused (400): not JSON this API reads, or not a valid request of its
/// endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyRefusal {
    /// Not JSON, or an object with a repeated key.
    Json(JsonBodyError),
    /// Valid JSON that breaks the endpoint's schema or rules: 1..=100 pointer errors.
    Invalid(ValidationErrors),
}

/// A request body's bytes to the typed request of `endpoint` (docs/design/api.md §1.3
/// steps 3–5). A valid body is read once, straight into its typed request; a body that
/// is refused is read again to list every error with its pointer.
pub fn parse_request_body(endpoint: Endpoint, bytes: &[u8]) -> Result<Request, BodyRefusal> {
    if let Some(request) = parse_request_in_one_pass(endpoint, bytes) {
        return Ok(request);
    }
    let body = parse_json_body(bytes).map_err(BodyRefusal::Json)?;
    parse_request(endpoint, &body).map_err(BodyRefusal::Invalid)
}

/// The one-pass reading alone: `Some` for a body [`parse_request_body`] accepts without
/// reading it again, `None` for any other. Public for the tests that hold it to
/// [`parse_json_body`] and [`parse_request`].
pub fn parse_request_in_one_pass(endpoint: Endpoint, bytes: &[u8]) -> Option<Request> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let checked = one_pass::Checked::new(endpoint::schema_of(endpoint), &mut deserializer);
    let request = endpoint::convert(endpoint, checked).ok()?;
    deserializer.end().ok()?;
    Some(request)
}

/// Validates `body` for `endpoint` and converts it to the typed request.
///
/// `Err` holds 1..=100 errors in document order; nothing of an invalid request may be
/// acted on (docs/design/api.md §1.3).
pub fn parse_request(endpoint: Endpoint, body: &Value) -> Result<Request, ValidationErrors> {
    validate::validate(endpoint::schema_of(endpoint), body)?;
    endpoint::convert(endpoint, body).map_err(|error| {
        ValidationErrors::single("", format!("{SCHEMA_MISMATCH_MESSAGE}: {error}"))
    })
}
