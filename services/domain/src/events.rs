//! Event payloads and envelopes: the system of record (docs/design/events.md §2–§4).
//!
//! Field names are exactly those of the Tutor API and the Avro schemas in `schemas/`.
//! Timestamps are kept as the strings Tutor sent; they are parsed only where a rule
//! compares times ([`Timestamp::micros`]).

use serde::{Deserialize, Serialize};

use crate::ids::*;

/// A timestamp exactly as Tutor sent it (ISO-8601 UTC, at most 6 fractional digits).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub String);

impl Timestamp {
    /// Microseconds since the Unix epoch, or `None` if the text is not a valid datetime.
    ///
    /// Second 60 is read as 59.999999 (docs/design/api.md §1.6).
    pub fn micros(&self) -> Option<i64> {
        crate::time::parse_datetime_micros(&self.0)
    }
}

impl From<&str> for Timestamp {
    fn from(text: &str) -> Self {
        Timestamp(text.to_owned())
    }
}

/// The two stream kinds that carry Tutor's events.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// `<prefix>.course-events`, keyed by course uuid.
    Course,
    /// `<prefix>.ecosystem-events`, keyed by ecosystem uuid.
    Ecosystem,
}

impl StreamKind {
    /// The name used in admin requests and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Course => "course",
            StreamKind::Ecosystem => "ecosystem",
        }
    }
}

/// Why a `no_op` was written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoOpReason {
    /// `update_course_ecosystems` named a preparation this course never prepared (D7).
    PreparationUnknown,
    /// An operator filled a gap.
    AdminFill,
    /// Written by an import of original data.
    Imported,
}

impl NoOpReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            NoOpReason::PreparationUnknown => "preparation_unknown",
            NoOpReason::AdminFill => "admin_fill",
            NoOpReason::Imported => "imported",
        }
    }
}

/// `no_op`: advances the sequence, changes nothing.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct NoOp {
    pub reason: NoOpReason,
    pub actor: Option<String>,
    pub detail_json: Option<String>,
    /// A range fill (docs/design/api.md D13): this no_op stands at its sequence number and covers
    /// every slot up to and including this one that no other event holds. `None` for a
    /// no_op of one slot.
    #[serde(default)]
    pub through_sequence_number: Option<SequenceNumber>,
}

impl NoOp {
    /// The last slot this no_op covers, when it covers more than the one it stands at
    /// (`sequence_number` is the slot it stands at). A `through_sequence_number` at or
    /// below it covers nothing more.
    pub fn covers_through(&self, sequence_number: SequenceNumber) -> Option<SequenceNumber> {
        self.through_sequence_number
            .filter(|through| *through > sequence_number)
    }
}

/// `create_course`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CreateCourse {
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub ecosystem_uuid: EcosystemUuid,
    pub is_real_course: bool,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_at: Timestamp,
}

/// One old→new book container pair of an ecosystem map.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct BookContainerMapping {
    pub from_book_container_uuid: BookContainerUuid,
    pub to_book_container_uuid: BookContainerUuid,
}

/// One old exercise → new book container pair of an ecosystem map (stored, unused).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ExerciseMapping {
    pub from_exercise_uuid: ExerciseUuid,
    pub to_book_container_uuid: BookContainerUuid,
}

/// The map Tutor sends with a preparation.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct EcosystemMap {
    pub from_ecosystem_uuid: EcosystemUuid,
    pub to_ecosystem_uuid: EcosystemUuid,
    pub book_container_mappings: Vec<BookContainerMapping>,
    pub exercise_mappings: Vec<ExerciseMapping>,
}

/// `prepare_course_ecosystem`. `ecosystem_uuid` is the *next* ecosystem (the request's
/// `next_ecosystem_uuid`, stored under this key as in the original).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PrepareCourseEcosystem {
    pub preparation_uuid: PreparationUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub ecosystem_uuid: EcosystemUuid,
    pub ecosystem_map: EcosystemMap,
    pub prepared_at: Timestamp,
}

/// `update_course_ecosystem`: switch to a prepared ecosystem.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct UpdateCourseEcosystem {
    pub request_uuid: RequestUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub preparation_uuid: PreparationUuid,
    pub updated_at: Timestamp,
}

/// One node of a roster snapshot.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RosterCourseContainer {
    pub container_uuid: CourseContainerUuid,
    /// The top container's parent is the course uuid itself.
    pub parent_container_uuid: CourseContainerUuid,
    pub created_at: Timestamp,
    pub archived_at: Option<Timestamp>,
}

/// One student of a roster snapshot.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RosterStudent {
    pub student_uuid: StudentUuid,
    pub container_uuid: CourseContainerUuid,
    pub enrolled_at: Timestamp,
    pub last_course_container_change_at: Timestamp,
    pub dropped_at: Option<Timestamp>,
}

/// `update_roster`: a full snapshot, never a delta.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct UpdateRoster {
    pub request_uuid: RequestUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub course_containers: Vec<RosterCourseContainer>,
    pub students: Vec<RosterStudent>,
}

/// `update_course_active_dates`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct UpdateCourseActiveDates {
    pub request_uuid: RequestUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One exclusion: exactly one of the two fields is set.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ExerciseExclusion {
    /// Excludes one version.
    pub exercise_uuid: Option<ExerciseUuid>,
    /// Excludes every version of a group.
    pub exercise_group_uuid: Option<ExerciseGroupUuid>,
}

/// `update_globally_excluded_exercises` and `update_course_excluded_exercises`:
/// the full list, a replacement.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct UpdateExcludedExercises {
    pub request_uuid: RequestUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub exclusions: Vec<ExerciseExclusion>,
    pub updated_at: Timestamp,
}

/// Dates that drive anti-cheating and histories.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct ExclusionInfo {
    pub opens_at: Option<Timestamp>,
    pub due_at: Option<Timestamp>,
    pub feedback_at: Option<Timestamp>,
}

/// The PE or SPE result Tutor used for an assignment.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct CalculationRef {
    pub calculation_uuid: Option<CalculationUuid>,
    pub ecosystem_matrix_uuid: Option<MatrixUuid>,
}

/// One trial of an assignment.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AssignedExercise {
    pub trial_uuid: TrialUuid,
    pub exercise_uuid: ExerciseUuid,
    pub is_spe: bool,
    pub is_pe: bool,
}

/// `create_update_assignment`: the latest event per assignment wins.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CreateUpdateAssignment {
    pub request_uuid: RequestUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub assignment_uuid: AssignmentUuid,
    pub is_deleted: bool,
    pub ecosystem_uuid: EcosystemUuid,
    pub student_uuid: StudentUuid,
    pub assignment_type: String,
    pub exclusion_info: Option<ExclusionInfo>,
    pub pes: Option<CalculationRef>,
    pub spes: Option<CalculationRef>,
    pub assigned_book_container_uuids: Vec<BookContainerUuid>,
    pub goal_num_tutor_assigned_spes: Option<i64>,
    pub spes_are_assigned: bool,
    pub goal_num_tutor_assigned_pes: Option<i64>,
    pub pes_are_assigned: bool,
    pub assigned_exercises: Vec<AssignedExercise>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `record_response`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RecordResponse {
    pub response_uuid: ResponseUuid,
    pub course_uuid: CourseUuid,
    pub sequence_number: SequenceNumber,
    pub ecosystem_uuid: EcosystemUuid,
    pub trial_uuid: TrialUuid,
    pub student_uuid: StudentUuid,
    pub exercise_uuid: ExerciseUuid,
    pub is_correct: bool,
    pub is_real_response: bool,
    pub responded_at: Timestamp,
}

/// One pool of exercises attached to a book container.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Pool {
    pub use_for_clue: bool,
    pub use_for_personalized_for_assignment_types: Vec<String>,
    pub exercise_uuids: Vec<ExerciseUuid>,
}

/// One node of a book's table of contents.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct BookContainer {
    pub container_uuid: BookContainerUuid,
    /// The root's parent is the ecosystem uuid itself.
    pub container_parent_uuid: BookContainerUuid,
    pub container_cnx_identity: Option<String>,
    pub pools: Vec<Pool>,
}

/// The book of an ecosystem.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Book {
    pub cnx_identity: Option<String>,
    pub contents: Vec<BookContainer>,
}

/// One exercise version of an ecosystem.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Exercise {
    pub exercise_uuid: ExerciseUuid,
    pub group_uuid: ExerciseGroupUuid,
    pub version: i64,
    pub los: Vec<String>,
}

/// `create_ecosystem`: the whole content of one book version.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CreateEcosystem {
    pub ecosystem_uuid: EcosystemUuid,
    pub sequence_number: SequenceNumber,
    pub book: Book,
    pub exercises: Vec<Exercise>,
    pub imported_at: Timestamp,
}

/// The payload of a course event; the variant is named by `event_type`.
// Boxing the larger variants would buy little: payloads are built once per event and
// moved a handful of times; the hot path (record_response) is among the small ones.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Debug)]
pub enum CoursePayload {
    NoOp(NoOp),
    CreateCourse(CreateCourse),
    PrepareCourseEcosystem(PrepareCourseEcosystem),
    UpdateCourseEcosystem(UpdateCourseEcosystem),
    UpdateRoster(UpdateRoster),
    UpdateCourseActiveDates(UpdateCourseActiveDates),
    UpdateGloballyExcludedExercises(UpdateExcludedExercises),
    UpdateCourseExcludedExercises(UpdateExcludedExercises),
    CreateUpdateAssignment(CreateUpdateAssignment),
    RecordResponse(RecordResponse),
}

/// Course event types by their snake_case names (docs/design/events.md §2.1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CourseEventType {
    NoOp,
    CreateCourse,
    PrepareCourseEcosystem,
    UpdateCourseEcosystem,
    UpdateRoster,
    UpdateCourseActiveDates,
    UpdateGloballyExcludedExercises,
    UpdateCourseExcludedExercises,
    CreateUpdateAssignment,
    RecordResponse,
}

impl CourseEventType {
    /// Every course event type, in code order.
    pub const ALL: [CourseEventType; 10] = [
        CourseEventType::NoOp,
        CourseEventType::CreateCourse,
        CourseEventType::PrepareCourseEcosystem,
        CourseEventType::UpdateCourseEcosystem,
        CourseEventType::UpdateRoster,
        CourseEventType::UpdateCourseActiveDates,
        CourseEventType::UpdateGloballyExcludedExercises,
        CourseEventType::UpdateCourseExcludedExercises,
        CourseEventType::CreateUpdateAssignment,
        CourseEventType::RecordResponse,
    ];

    /// The snake_case names of [`Self::ALL`], in the same order: the one list that API
    /// schemas, metric labels and tests use.
    pub const NAMES: [&'static str; 10] = {
        let mut names = [""; 10];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// The snake_case name used in the API, in Avro and in headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            CourseEventType::NoOp => "no_op",
            CourseEventType::CreateCourse => "create_course",
            CourseEventType::PrepareCourseEcosystem => "prepare_course_ecosystem",
            CourseEventType::UpdateCourseEcosystem => "update_course_ecosystem",
            CourseEventType::UpdateRoster => "update_roster",
            CourseEventType::UpdateCourseActiveDates => "update_course_active_dates",
            CourseEventType::UpdateGloballyExcludedExercises => {
                "update_globally_excluded_exercises"
            }
            CourseEventType::UpdateCourseExcludedExercises => "update_course_excluded_exercises",
            CourseEventType::CreateUpdateAssignment => "create_update_assignment",
            CourseEventType::RecordResponse => "record_response",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(name: &str) -> Option<CourseEventType> {
        CourseEventType::ALL
            .into_iter()
            .find(|event_type| event_type.as_str() == name)
    }

    /// The original integer code (−1 for `no_op`), kept for imports.
    pub fn code(self) -> i32 {
        CourseEventType::ALL
            .iter()
            .position(|event_type| *event_type == self)
            .map(|idx| idx as i32 - 1)
            .unwrap_or(-1)
    }
}

impl CoursePayload {
    /// The event type this payload belongs to.
    pub fn event_type(&self) -> CourseEventType {
        match self {
            CoursePayload::NoOp(_) => CourseEventType::NoOp,
            CoursePayload::CreateCourse(_) => CourseEventType::CreateCourse,
            CoursePayload::PrepareCourseEcosystem(_) => CourseEventType::PrepareCourseEcosystem,
            CoursePayload::UpdateCourseEcosystem(_) => CourseEventType::UpdateCourseEcosystem,
            CoursePayload::UpdateRoster(_) => CourseEventType::UpdateRoster,
            CoursePayload::UpdateCourseActiveDates(_) => CourseEventType::UpdateCourseActiveDates,
            CoursePayload::UpdateGloballyExcludedExercises(_) => {
                CourseEventType::UpdateGloballyExcludedExercises
            }
            CoursePayload::UpdateCourseExcludedExercises(_) => {
                CourseEventType::UpdateCourseExcludedExercises
            }
            CoursePayload::CreateUpdateAssignment(_) => CourseEventType::CreateUpdateAssignment,
            CoursePayload::RecordResponse(_) => CourseEventType::RecordResponse,
        }
    }

    /// [`CoursePayload::to_event_data`] as JSON text. The payloads that have no optional
    /// field (responses, course creations) are written straight from their fields, with
    /// no `Value` in between: every response event is stored this way.
    pub fn event_data_text(&self) -> String {
        let direct = match self {
            CoursePayload::RecordResponse(p) => serde_json::to_string(p),
            CoursePayload::CreateCourse(p) => serde_json::to_string(p),
            CoursePayload::UpdateCourseActiveDates(p) => serde_json::to_string(p),
            _ => return self.to_event_data().to_string(),
        };
        direct.expect("payload types serialize to JSON infallibly")
    }

    /// The payload as the JSON `event_data` of `fetch_course_events`: optional fields
    /// that are `null` are omitted, as the original stored the request item sliced to
    /// present keys.
    pub fn to_event_data(&self) -> serde_json::Value {
        let value = match self {
            CoursePayload::NoOp(p) => serde_json::to_value(p),
            CoursePayload::CreateCourse(p) => serde_json::to_value(p),
            CoursePayload::PrepareCourseEcosystem(p) => serde_json::to_value(p),
            CoursePayload::UpdateCourseEcosystem(p) => serde_json::to_value(p),
            CoursePayload::UpdateRoster(p) => serde_json::to_value(p),
            CoursePayload::UpdateCourseActiveDates(p) => serde_json::to_value(p),
            CoursePayload::UpdateGloballyExcludedExercises(p) => serde_json::to_value(p),
            CoursePayload::UpdateCourseExcludedExercises(p) => serde_json::to_value(p),
            CoursePayload::CreateUpdateAssignment(p) => serde_json::to_value(p),
            CoursePayload::RecordResponse(p) => serde_json::to_value(p),
        };
        strip_nulls(value.expect("payload types serialize to JSON infallibly"))
    }
}

/// The payload of an ecosystem event.
#[derive(Clone, PartialEq, Debug)]
pub enum EcosystemPayload {
    NoOp(NoOp),
    CreateEcosystem(Box<CreateEcosystem>),
}

/// Ecosystem event types (docs/design/events.md §2.2).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EcosystemEventType {
    NoOp,
    CreateEcosystem,
}

impl EcosystemEventType {
    /// Every ecosystem event type.
    pub const ALL: [EcosystemEventType; 2] = [
        EcosystemEventType::NoOp,
        EcosystemEventType::CreateEcosystem,
    ];

    /// The snake_case names of [`Self::ALL`], in the same order.
    pub const NAMES: [&'static str; 2] = {
        let mut names = [""; 2];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EcosystemEventType::NoOp => "no_op",
            EcosystemEventType::CreateEcosystem => "create_ecosystem",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(name: &str) -> Option<EcosystemEventType> {
        EcosystemEventType::ALL
            .into_iter()
            .find(|event_type| event_type.as_str() == name)
    }
}

impl EcosystemPayload {
    /// The event type this payload belongs to.
    pub fn event_type(&self) -> EcosystemEventType {
        match self {
            EcosystemPayload::NoOp(_) => EcosystemEventType::NoOp,
            EcosystemPayload::CreateEcosystem(_) => EcosystemEventType::CreateEcosystem,
        }
    }

    /// The payload as JSON `event_data`, with `null` optional fields omitted.
    pub fn to_event_data(&self) -> serde_json::Value {
        let value = match self {
            EcosystemPayload::NoOp(p) => serde_json::to_value(p),
            EcosystemPayload::CreateEcosystem(p) => serde_json::to_value(p),
        };
        strip_nulls(value.expect("payload types serialize to JSON infallibly"))
    }
}

/// Removes object members whose value is `null`, at every depth.
fn strip_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, member)| !member.is_null())
                .map(|(key, member)| (key, strip_nulls(member)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}

/// Fields every envelope carries besides its aggregate and payload (docs/design/events.md §4.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EnvelopeMeta {
    /// The event identity.
    pub event_uuid: EventUuid,
    /// Per-aggregate position.
    pub sequence_number: SequenceNumber,
    /// Writer clock at acceptance, microseconds since the epoch.
    pub accepted_at_micros: i64,
    /// Writer instance id, for diagnostics.
    pub writer_id: String,
    /// Latest settings version known to the writer at acceptance.
    pub settings_version: i64,
    /// Set only on `create_course` / `create_ecosystem`.
    pub metadata_sequence_number: Option<i64>,
}

/// One record of `<prefix>.course-events`.
#[derive(Clone, PartialEq, Debug)]
pub struct CourseEvent {
    pub meta: EnvelopeMeta,
    pub course_uuid: CourseUuid,
    pub payload: CoursePayload,
}

impl CourseEvent {
    /// The event type named by the payload.
    pub fn event_type(&self) -> CourseEventType {
        self.payload.event_type()
    }
}

/// One record of `<prefix>.ecosystem-events`.
#[derive(Clone, PartialEq, Debug)]
pub struct EcosystemEvent {
    pub meta: EnvelopeMeta,
    pub ecosystem_uuid: EcosystemUuid,
    pub payload: EcosystemPayload,
}

impl EcosystemEvent {
    /// The event type named by the payload.
    pub fn event_type(&self) -> EcosystemEventType {
        self.payload.event_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_and_codes_match_the_catalogue() {
        assert_eq!(CourseEventType::NoOp.code(), -1);
        assert_eq!(CourseEventType::CreateCourse.code(), 0);
        assert_eq!(CourseEventType::RecordResponse.code(), 8);
        for event_type in CourseEventType::ALL {
            assert_eq!(
                CourseEventType::parse(event_type.as_str()),
                Some(event_type)
            );
            assert_eq!(
                serde_json::to_value(event_type).unwrap(),
                serde_json::json!(event_type.as_str())
            );
        }
        assert_eq!(CourseEventType::parse("create_ecosystem"), None);
        assert_eq!(
            EcosystemEventType::parse("create_ecosystem"),
            Some(EcosystemEventType::CreateEcosystem)
        );
    }

    #[test]
    fn event_data_omits_null_optional_fields() {
        let payload = CoursePayload::NoOp(NoOp {
            reason: NoOpReason::AdminFill,
            actor: Some("ops".into()),
            detail_json: None,
            through_sequence_number: None,
        });
        assert_eq!(
            payload.to_event_data(),
            serde_json::json!({"reason": "admin_fill", "actor": "ops"})
        );
        assert_eq!(
            payload.event_data_text(),
            payload.to_event_data().to_string()
        );
    }

    #[test]
    fn event_data_text_written_directly_is_the_text_of_event_data() {
        let id = |n: u128| uuid::Uuid::from_u128(0x9ba7_f072_ebd5_4adf_ad18_7a18_1715_0000 + n);
        let at = |day: u32| Timestamp(format!("2026-10-{day:02}T12:00:00.000001Z"));
        let payloads = [
            CoursePayload::RecordResponse(RecordResponse {
                response_uuid: ResponseUuid(id(1)),
                course_uuid: CourseUuid(id(2)),
                sequence_number: SequenceNumber(7),
                ecosystem_uuid: EcosystemUuid(id(3)),
                trial_uuid: TrialUuid(id(4)),
                student_uuid: StudentUuid(id(5)),
                exercise_uuid: ExerciseUuid(id(6)),
                is_correct: false,
                is_real_response: true,
                responded_at: at(1),
            }),
            CoursePayload::CreateCourse(CreateCourse {
                course_uuid: CourseUuid(id(2)),
                sequence_number: SequenceNumber(0),
                ecosystem_uuid: EcosystemUuid(id(3)),
                is_real_course: true,
                starts_at: at(2),
                ends_at: at(30),
                created_at: at(1),
            }),
            CoursePayload::UpdateCourseActiveDates(UpdateCourseActiveDates {
                request_uuid: RequestUuid(id(7)),
                course_uuid: CourseUuid(id(2)),
                sequence_number: SequenceNumber(2_147_483_647),
                starts_at: at(3),
                ends_at: at(31),
                updated_at: at(2),
            }),
        ];
        for payload in payloads {
            assert_eq!(
                payload.event_data_text(),
                payload.to_event_data().to_string()
            );
        }
    }
}
