//! Every POST path of the API (docs/design/api.md §2, §4–§7) and its per-path facts.

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

macro_rules! endpoints {
    ($($variant:ident => $path:literal, $family:ident;)*) => {
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
    };
}

endpoints! {
    CreateEcosystem => "/create_ecosystem", Write;
    CreateCourse => "/create_course", Write;
    UpdateCourseActiveDates => "/update_course_active_dates", Write;
    UpdateRosters => "/update_rosters", Write;
    PrepareCourseEcosystem => "/prepare_course_ecosystem", Write;
    UpdateCourseEcosystems => "/update_course_ecosystems", Write;
    UpdateGloballyExcludedExercises => "/update_globally_excluded_exercises", Write;
    UpdateCourseExcludedExercises => "/update_course_excluded_exercises", Write;
    CreateUpdateAssignments => "/create_update_assignments", Write;
    RecordResponses => "/record_responses", Write;
    FetchAssignmentPes => "/fetch_assignment_pes", Read;
    FetchAssignmentSpes => "/fetch_assignment_spes", Read;
    FetchPracticeWorstAreasExercises => "/fetch_practice_worst_areas_exercises", Read;
    FetchStudentClues => "/fetch_student_clues", Read;
    FetchTeacherClues => "/fetch_teacher_clues", Read;
    FetchCourseEcosystemStatuses => "/fetch_course_ecosystem_statuses", Read;
    UpdateAssignmentPes => "/update_assignment_pes", Push;
    UpdateAssignmentSpes => "/update_assignment_spes", Push;
    UpdatePracticeWorstAreasExercises => "/update_practice_worst_areas_exercises", Push;
    UpdateStudentClues => "/update_student_clues", Push;
    UpdateTeacherClues => "/update_teacher_clues", Push;
    FetchCourseMetadatas => "/fetch_course_metadatas", EventStream;
    FetchEcosystemMetadatas => "/fetch_ecosystem_metadatas", EventStream;
    FetchCourseEvents => "/fetch_course_events", EventStream;
    FetchEcosystemEvents => "/fetch_ecosystem_events", EventStream;
    AdminFillSequenceGap => "/admin/fill_sequence_gap", Admin;
    AdminListSequenceGaps => "/admin/list_sequence_gaps", Admin;
    AdminSettingsDefine => "/admin/settings/define", Admin;
    AdminSettingsChangeDefault => "/admin/settings/change_default", Admin;
    AdminSettingsSetCourseOverride => "/admin/settings/set_course_override", Admin;
    AdminSettingsClearCourseOverride => "/admin/settings/clear_course_override", Admin;
    AdminSettingsKillSwitch => "/admin/settings/kill_switch", Admin;
    AdminSettingsGet => "/admin/settings/get", Admin;
    AdminSettingsList => "/admin/settings/list", Admin;
    AdminSettingsAudit => "/admin/settings/audit", Admin;
    AdminRebuild => "/admin/rebuild", Admin;
    AdminRebuildStatus => "/admin/rebuild_status", Admin;
    AdminDlqList => "/admin/dlq/list", Admin;
    AdminDlqReplay => "/admin/dlq/replay", Admin;
    AdminStateDigest => "/admin/state_digest", Admin;
    AdminResultsList => "/admin/results/list", Admin;
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
