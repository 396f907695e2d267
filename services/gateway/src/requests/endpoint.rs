//! Every POST path of the API (docs/design/api.md §2, §4–§7) and its per-path facts: the
//! one table naming each endpoint's path, family, typed request and schema.

use serde::{Deserialize, Deserializer};

use super::validate::Schema;
use super::{
    admin, push, read, stream, write, AdminRequest, EventStreamRequest, PushRequest, ReadRequest,
    Request, WriteRequest,
};

/// The family an endpoint belongs to, which decides who serves it and with which token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EndpointFamily {
    /// §2: Tutor's writes, turned into course or ecosystem events by the writer.
    Write,
    /// §4: result reads served from projections.
    Read,
    /// §5.3: calculated results pushed by external algorithms.
    Push,
    /// §6: metadata and event-stream reads.
    EventStream,
    /// §7: admin endpoints (admin token and actor header).
    Admin,
}

// The table below is a macro so that it is the one place an endpoint is named: each row
// gives its path, the family that handles it (`crate::handlers::handle` sends each family
// to its module), the typed request it parses to, and its schema, and the `Endpoint`
// enum, `schema_of`, `convert` and `Request::endpoint` are all generated from the rows. A
// hand-written match per fact would list the same 41 endpoints three more times.
//
// A row: `Variant => "/path", Family(FamilyRequest::Variant[ boxed | unit]), schema;`.
// `boxed`: the request is held in a `Box`; `unit`: the variant carries no body.
macro_rules! endpoints {
    ($(
        $variant:ident => $path:literal,
        $family:ident($family_request:ident::$request:ident $($shape:ident)?),
        $schema:expr;
    )*) => {
        /// One POST path of the API.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum Endpoint {
            $(
                #[doc = concat!("`", $path, "`")]
                $variant,
            )*
        }

        impl Endpoint {
            /// Every endpoint, in the order of docs/design/api.md.
            pub const ALL: &'static [Endpoint] = &[$(Endpoint::$variant,)*];

            /// The request path, e.g. `/record_responses`.
            pub fn path(self) -> &'static str {
                match self {
                    $(Endpoint::$variant => $path,)*
                }
            }

            /// The family of this endpoint.
            pub fn family(self) -> EndpointFamily {
                match self {
                    $(Endpoint::$variant => EndpointFamily::$family,)*
                }
            }
        }

        /// The schema a body of `endpoint` is validated against.
        pub(super) fn schema_of(endpoint: Endpoint) -> &'static Schema {
            match endpoint {
                $(Endpoint::$variant => $schema,)*
            }
        }

        /// Deserializes the typed request of `endpoint` from `body`: a `&Value` that passed
        /// its schema, or the body's bytes through the schema-checking deserializer of
        /// `one_pass.rs`.
        pub(super) fn convert<'de, D: Deserializer<'de>>(
            endpoint: Endpoint,
            body: D,
        ) -> Result<Request, D::Error> {
            Ok(match endpoint {
                $(Endpoint::$variant => Request::$family(
                    request!(build body, $family_request::$request $($shape)?)
                ),)*
            })
        }

        impl Request {
            /// The endpoint this request was parsed for.
            pub fn endpoint(&self) -> Endpoint {
                match self {
                    $(Request::$family(request!(pattern $family_request::$request $($shape)?))
                        => Endpoint::$variant,)*
                }
            }
        }
    };
}

/// The typed request of a row: built from a body, or matched as a pattern.
macro_rules! request {
    (build $body:ident, $enum:ident::$variant:ident) => {
        $enum::$variant(Deserialize::deserialize($body)?)
    };
    (build $body:ident, $enum:ident::$variant:ident boxed) => {
        $enum::$variant(Box::new(Deserialize::deserialize($body)?))
    };
    (build $body:ident, $enum:ident::$variant:ident unit) => {{
        // Nothing to keep, but the body is still read (and, in one pass, checked).
        serde::de::IgnoredAny::deserialize($body)?;
        $enum::$variant
    }};
    (pattern $enum:ident::$variant:ident $(boxed)?) => {
        $enum::$variant(_)
    };
    (pattern $enum:ident::$variant:ident unit) => {
        $enum::$variant
    };
}

endpoints! {
    CreateEcosystem => "/create_ecosystem",
        Write(WriteRequest::CreateEcosystem boxed), &write::CREATE_ECOSYSTEM;
    CreateCourse => "/create_course",
        Write(WriteRequest::CreateCourse), &write::CREATE_COURSE;
    UpdateCourseActiveDates => "/update_course_active_dates",
        Write(WriteRequest::UpdateCourseActiveDates), &write::UPDATE_COURSE_ACTIVE_DATES;
    UpdateRosters => "/update_rosters",
        Write(WriteRequest::UpdateRosters), &write::UPDATE_ROSTERS;
    PrepareCourseEcosystem => "/prepare_course_ecosystem",
        Write(WriteRequest::PrepareCourseEcosystem), &write::PREPARE_COURSE_ECOSYSTEM;
    UpdateCourseEcosystems => "/update_course_ecosystems",
        Write(WriteRequest::UpdateCourseEcosystems), &write::UPDATE_COURSE_ECOSYSTEMS;
    UpdateGloballyExcludedExercises => "/update_globally_excluded_exercises",
        Write(WriteRequest::UpdateGloballyExcludedExercises), &write::UPDATE_EXCLUDED_EXERCISES;
    UpdateCourseExcludedExercises => "/update_course_excluded_exercises",
        Write(WriteRequest::UpdateCourseExcludedExercises), &write::UPDATE_EXCLUDED_EXERCISES;
    CreateUpdateAssignments => "/create_update_assignments",
        Write(WriteRequest::CreateUpdateAssignments), &write::CREATE_UPDATE_ASSIGNMENTS;
    RecordResponses => "/record_responses",
        Write(WriteRequest::RecordResponses), &write::RECORD_RESPONSES;
    FetchAssignmentPes => "/fetch_assignment_pes",
        Read(ReadRequest::FetchAssignmentPes), &read::FETCH_ASSIGNMENT_PES;
    FetchAssignmentSpes => "/fetch_assignment_spes",
        Read(ReadRequest::FetchAssignmentSpes), &read::FETCH_ASSIGNMENT_SPES;
    FetchPracticeWorstAreasExercises => "/fetch_practice_worst_areas_exercises",
        Read(ReadRequest::FetchPracticeWorstAreasExercises),
        &read::FETCH_PRACTICE_WORST_AREAS_EXERCISES;
    FetchStudentClues => "/fetch_student_clues",
        Read(ReadRequest::FetchStudentClues), &read::FETCH_STUDENT_CLUES;
    FetchTeacherClues => "/fetch_teacher_clues",
        Read(ReadRequest::FetchTeacherClues), &read::FETCH_TEACHER_CLUES;
    FetchCourseEcosystemStatuses => "/fetch_course_ecosystem_statuses",
        Read(ReadRequest::FetchCourseEcosystemStatuses), &read::FETCH_COURSE_ECOSYSTEM_STATUSES;
    UpdateAssignmentPes => "/update_assignment_pes",
        Push(PushRequest::UpdateAssignmentPes), &push::UPDATE_ASSIGNMENT_PES;
    UpdateAssignmentSpes => "/update_assignment_spes",
        Push(PushRequest::UpdateAssignmentSpes), &push::UPDATE_ASSIGNMENT_SPES;
    UpdatePracticeWorstAreasExercises => "/update_practice_worst_areas_exercises",
        Push(PushRequest::UpdatePracticeWorstAreasExercises),
        &push::UPDATE_PRACTICE_WORST_AREAS_EXERCISES;
    UpdateStudentClues => "/update_student_clues",
        Push(PushRequest::UpdateStudentClues), &push::UPDATE_STUDENT_CLUES;
    UpdateTeacherClues => "/update_teacher_clues",
        Push(PushRequest::UpdateTeacherClues), &push::UPDATE_TEACHER_CLUES;
    FetchCourseMetadatas => "/fetch_course_metadatas",
        EventStream(EventStreamRequest::FetchCourseMetadatas), stream::FETCH_COURSE_METADATAS;
    FetchEcosystemMetadatas => "/fetch_ecosystem_metadatas",
        EventStream(EventStreamRequest::FetchEcosystemMetadatas),
        stream::FETCH_ECOSYSTEM_METADATAS;
    FetchCourseEvents => "/fetch_course_events",
        EventStream(EventStreamRequest::FetchCourseEvents), &stream::FETCH_COURSE_EVENTS;
    FetchEcosystemEvents => "/fetch_ecosystem_events",
        EventStream(EventStreamRequest::FetchEcosystemEvents), &stream::FETCH_ECOSYSTEM_EVENTS;
    AdminFillSequenceGap => "/admin/fill_sequence_gap",
        Admin(AdminRequest::FillSequenceGap), &admin::FILL_SEQUENCE_GAP;
    AdminListSequenceGaps => "/admin/list_sequence_gaps",
        Admin(AdminRequest::ListSequenceGaps), &admin::LIST_SEQUENCE_GAPS;
    AdminSettingsDefine => "/admin/settings/define",
        Admin(AdminRequest::DefineSetting), &admin::SETTINGS_DEFINE;
    AdminSettingsChangeDefault => "/admin/settings/change_default",
        Admin(AdminRequest::ChangeDefault), &admin::SETTINGS_CHANGE_DEFAULT;
    AdminSettingsSetCourseOverride => "/admin/settings/set_course_override",
        Admin(AdminRequest::SetCourseOverride), &admin::SETTINGS_SET_COURSE_OVERRIDE;
    AdminSettingsClearCourseOverride => "/admin/settings/clear_course_override",
        Admin(AdminRequest::ClearCourseOverride), &admin::SETTINGS_CLEAR_COURSE_OVERRIDE;
    AdminSettingsKillSwitch => "/admin/settings/kill_switch",
        Admin(AdminRequest::KillSwitch), &admin::SETTINGS_KILL_SWITCH;
    AdminSettingsGet => "/admin/settings/get",
        Admin(AdminRequest::GetSetting), &admin::SETTINGS_GET;
    AdminSettingsList => "/admin/settings/list",
        Admin(AdminRequest::ListSettings), &admin::SETTINGS_LIST;
    AdminSettingsAudit => "/admin/settings/audit",
        Admin(AdminRequest::AuditSettings), &admin::SETTINGS_AUDIT;
    AdminRebuild => "/admin/rebuild",
        Admin(AdminRequest::Rebuild unit), &admin::EMPTY;
    AdminRebuildStatus => "/admin/rebuild_status",
        Admin(AdminRequest::RebuildStatus unit), &admin::EMPTY;
    AdminDlqList => "/admin/dlq/list",
        Admin(AdminRequest::DlqList), &admin::DLQ_LIST;
    AdminDlqReplay => "/admin/dlq/replay",
        Admin(AdminRequest::DlqReplay), &admin::DLQ_REPLAY;
    AdminStateDigest => "/admin/state_digest",
        Admin(AdminRequest::StateDigest), &admin::STATE_DIGEST;
    AdminResultsList => "/admin/results/list",
        Admin(AdminRequest::ResultsList), &admin::RESULTS_LIST;
}

/// 32 MiB: the body limit of `/create_ecosystem` (docs/design/api.md §1.1).
pub const MAX_CREATE_ECOSYSTEM_BODY_BYTES: usize = 32 * 1024 * 1024;
/// 8 MiB: the body limit of every other path.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

impl Endpoint {
    /// The endpoint of an exact request path; `None` is a 404.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .iter()
            .copied()
            .find(|endpoint| endpoint.path() == path)
    }

    /// A §2 write: its items become course or ecosystem events ([`super::candidates`]).
    pub fn is_write(self) -> bool {
        self.family() == EndpointFamily::Write
    }

    /// A §7 admin endpoint: admin token and `Biglearn-Actor` instead of the API token.
    pub fn is_admin(self) -> bool {
        self.family() == EndpointFamily::Admin
    }

    /// A read-only admin endpoint that also accepts the observer token (docs/design/api.md §7,
    /// D14): list gaps, dead-letter list, state digest, results list, rebuild status and
    /// settings get/list/audit. Nothing else does.
    pub fn is_observable(self) -> bool {
        matches!(
            self,
            Endpoint::AdminListSequenceGaps
                | Endpoint::AdminDlqList
                | Endpoint::AdminStateDigest
                | Endpoint::AdminResultsList
                | Endpoint::AdminRebuildStatus
                | Endpoint::AdminSettingsGet
                | Endpoint::AdminSettingsList
                | Endpoint::AdminSettingsAudit
        )
    }

    /// The largest accepted request body; a larger one gets 413.
    pub fn max_body_bytes(self) -> usize {
        match self {
            Endpoint::CreateEcosystem => MAX_CREATE_ECOSYSTEM_BODY_BYTES,
            _ => MAX_BODY_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_are_unique() {
        assert_eq!(Endpoint::ALL.len(), 41);
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(endpoint.path()), Some(*endpoint));
        }
        assert_eq!(Endpoint::from_path("/record_responses/"), None);
        assert_eq!(Endpoint::from_path("/ping"), None);
    }

    #[test]
    fn only_the_eight_read_only_admin_endpoints_are_observable() {
        let observable: Vec<&str> = Endpoint::ALL
            .iter()
            .filter(|endpoint| endpoint.is_observable())
            .map(|endpoint| endpoint.path())
            .collect();
        assert_eq!(
            observable,
            [
                "/admin/list_sequence_gaps",
                "/admin/settings/get",
                "/admin/settings/list",
                "/admin/settings/audit",
                "/admin/rebuild_status",
                "/admin/dlq/list",
                "/admin/state_digest",
                "/admin/results/list",
            ]
        );
        assert!(Endpoint::ALL
            .iter()
            .filter(|endpoint| endpoint.is_observable())
            .all(|endpoint| endpoint.is_admin()));
    }

    #[test]
    fn families_and_limits() {
        let n_writes = Endpoint::ALL.iter().filter(|e| e.is_write()).count();
        let n_admin = Endpoint::ALL.iter().filter(|e| e.is_admin()).count();
        assert_eq!((n_writes, n_admin), (10, 16));
        assert_eq!(Endpoint::CreateEcosystem.max_body_bytes(), 33_554_432);
        assert_eq!(Endpoint::RecordResponses.max_body_bytes(), 8_388_608);
        assert_eq!(Endpoint::AdminSettingsAudit.max_body_bytes(), 8_388_608);
    }
}
