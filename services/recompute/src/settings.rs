//! The scheduler settings of a course, resolved from the settings history
//! (spec operations.md §6.4, §6.5).

use biglearn_domain::ids::CourseUuid;
use biglearn_scheduler::SchedulerSettings;
use biglearn_settings::{keys, SettingsHistory};

/// Resolves the `scheduler.*` and `clue.*` keys for `course` at the history's last version.
///
/// Simplification: spec §6.4 resolves at the `settings_version` of the course's last applied
/// event; the read model does not keep that version, so the latest one is used (they differ
/// only for a change made after the course's last event).
pub fn resolve(history: &SettingsHistory, course: CourseUuid) -> SchedulerSettings {
    let version = history.last_version();
    let course = Some(course);
    SchedulerSettings {
        default_num_pes_per_book_container: history.get(
            keys::DEFAULT_NUM_PES_PER_BOOK_CONTAINER,
            course,
            version,
        ),
        random_ago_min_sequence_number: history.get(
            keys::RANDOM_AGO_MIN_SEQUENCE_NUMBER,
            course,
            version,
        ),
        local_query_min_num_responses: history
            .get(keys::CLUE_LOCAL_QUERY_MIN_NUM_RESPONSES, course, version)
            .max(0) as usize,
        publish_biglearn_sparfa: history.get(keys::PUBLISH_BIGLEARN_SPARFA, course, version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_history_resolves_to_the_initial_settings() {
        let history = SettingsHistory::new();
        assert_eq!(
            resolve(&history, CourseUuid(uuid::Uuid::from_u128(1))),
            SchedulerSettings::INITIAL
        );
    }
}
