//! The scheduler settings of a course, resolved from the settings history
//! (docs/design/operations.md §6.4, §6.5).

use biglearn_domain::ids::CourseUuid;
use biglearn_scheduler::SchedulerSettings;
use biglearn_settings::{keys, SettingsHistory};

/// Resolves the `scheduler.*` and `clue.*` keys for `course` at the history's last version
/// (for a course none of whose events has been applied yet).
pub fn resolve(history: &SettingsHistory, course: CourseUuid) -> SchedulerSettings {
    resolve_at(history, course, history.last_version())
}

/// Resolves the `scheduler.*` and `clue.*` keys for `course` at `version`: the
/// `settings_version` of the course's last applied event (docs/design/operations.md §6.4), so that
/// a replay resolves exactly as live processing did.
pub fn resolve_at(
    history: &SettingsHistory,
    course: CourseUuid,
    version: i64,
) -> SchedulerSettings {
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

    #[test]
    fn settings_resolve_as_of_the_version_they_are_asked_at() {
        use biglearn_settings::{
            bootstrap_events, AppliesTo, ChangeContext, ChangeDefault, CoursesAtChange,
            OverridesIntent,
        };
        let mut history = SettingsHistory::new();
        for event in bootstrap_events(&history, 0) {
            history.apply(event);
        }
        let before = history.last_version();
        let context = ChangeContext {
            change_id: uuid::Uuid::from_u128(9),
            actor: "test".into(),
            reason: "fewer PEs".into(),
            occurred_at_micros: 1,
        };
        let change = ChangeDefault {
            key: keys::DEFAULT_NUM_PES_PER_BOOK_CONTAINER.name.into(),
            value: serde_json::json!(2),
            overrides: OverridesIntent::Keep,
            applies_to: AppliesTo::All,
        };
        let at_change = CoursesAtChange {
            courses: Vec::new(),
            cutoff: -1,
        };
        for event in history
            .change_default(&context, &change, &at_change)
            .unwrap()
        {
            history.apply(event);
        }
        let course = CourseUuid(uuid::Uuid::from_u128(1));
        assert_eq!(
            resolve_at(&history, course, before).default_num_pes_per_book_container,
            3
        );
        assert_eq!(
            resolve(&history, course).default_num_pes_per_book_container,
            2
        );
    }
}
