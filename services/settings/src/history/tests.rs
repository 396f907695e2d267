//! Resolution tests: the acceptance scenarios of docs/design/operations.md §6.4, every intent
//! combination with courses created before and after each change, kill switches,
//! explanations, the audit log and resolution as of a version.

use biglearn_domain::ids::CourseUuid;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::catalog::{bootstrap_events, keys};
use crate::command::{
    ChangeContext, ChangeDefault, CoursesAtChange, DefineSetting, ExistingCourse,
};
use crate::error::SettingsError;
use crate::event::SettingsEvent;
use crate::history::{AuditFilter, SettingsHistory, Source};
use crate::value::{AppliesTo, OverridesIntent, Scope, SettingValue, ValueType};

const PES: &str = "scheduler.default_num_pes_per_book_container";
const PUBLISH: &str = "scheduler.publish_biglearn_sparfa";
const GROWTH: &str = "sparfa.retrain_growth";

fn course(n: u128) -> CourseUuid {
    CourseUuid(Uuid::from_u128(n))
}

/// A settings topic driven like the writer drives it: commands against the history,
/// their events applied in order, courses numbered as they are created.
struct Deployment {
    history: SettingsHistory,
    courses: Vec<ExistingCourse>,
    n_changes: u128,
}

impl Deployment {
    fn bootstrapped() -> Deployment {
        let history = SettingsHistory::from_events(bootstrap_events(&SettingsHistory::new(), 1));
        Deployment {
            history,
            courses: Vec::new(),
            n_changes: 0,
        }
    }

    fn create_course(&mut self, course: CourseUuid) {
        let metadata_sequence_number = self.courses.len() as i64;
        self.courses.push(ExistingCourse {
            course_uuid: course,
            metadata_sequence_number,
        });
    }

    fn context(&mut self, actor: &str) -> ChangeContext {
        self.n_changes += 1;
        ChangeContext {
            change_id: Uuid::from_u128(1000 + self.n_changes),
            actor: actor.into(),
            reason: format!("change {}", self.n_changes),
            occurred_at_micros: 1_000_000 * self.n_changes as i64,
        }
    }

    fn at_change(&self) -> CoursesAtChange {
        CoursesAtChange {
            courses: self.courses.clone(),
            cutoff: self.courses.len() as i64 - 1,
        }
    }

    /// Applies the events of an accepted command; returns the last version.
    fn record(&mut self, events: Result<Vec<SettingsEvent>, SettingsError>) -> i64 {
        let events = events.expect("the command is accepted");
        assert!(!events.is_empty());
        for event in events {
            self.history.apply(event);
        }
        self.history.last_version()
    }

    fn change(
        &mut self,
        key: &str,
        value: Value,
        overrides: OverridesIntent,
        applies_to: AppliesTo,
    ) -> i64 {
        let context = self.context("admin");
        let command = ChangeDefault {
            key: key.into(),
            value,
            overrides,
            applies_to,
        };
        let events = self
            .history
            .change_default(&context, &command, &self.at_change());
        self.record(events)
    }

    fn set_override(&mut self, key: &str, course: CourseUuid, value: Value) -> i64 {
        let context = self.context("teacher-support");
        let events = self
            .history
            .set_course_override(&context, key, course, &value);
        self.record(events)
    }

    fn clear_override(&mut self, key: &str, course: CourseUuid) -> i64 {
        let context = self.context("teacher-support");
        let events = self.history.clear_course_override(&context, key, course);
        self.record(events)
    }

    fn kill(&mut self, key: &str, engaged: bool) -> i64 {
        let context = self.context("oncall");
        let events = self.history.kill_switch(&context, key, engaged);
        self.record(events)
    }
}

/// Checks `(course, as_of_version) → (value, source, because)`, where `because` is the
/// chain as `(body type, version)` pairs.
fn check(history: &SettingsHistory, key: &str, cases: &[Case<'_>]) {
    for (course, version, value, source, because) in cases {
        let resolution = history.resolve(key, *course, *version).unwrap();
        let got_because: Vec<(&str, i64)> = resolution
            .because
            .iter()
            .map(|event| (event.body.type_name(), event.settings_version))
            .collect();
        assert_eq!(
            (resolution.value.to_json(), resolution.source, got_because),
            (value.clone(), *source, because.to_vec()),
            "{key} for {course:?} as of {version}"
        );
        assert_eq!(
            history.value(key, *course, *version).unwrap(),
            resolution.value,
            "value() agrees with resolve()"
        );
    }
}

const DEFINED: (&str, i64) = ("setting_defined", 1);

/// `(course, as_of_version, value, source, because as (body type, version))`.
type Case<'c> = (Option<CourseUuid>, i64, Value, Source, &'c [(&'c str, i64)]);

/// `(command outcome, expected error, expected JSON pointer)`.
type Refusal = (
    Result<Vec<SettingsEvent>, SettingsError>,
    SettingsError,
    &'static str,
);

#[test]
fn scenario_1_keep_all_leaves_overrides_winning() {
    let mut deployment = Deployment::bootstrapped();
    let (a, b) = (course(1), course(2));
    deployment.create_course(a);
    deployment.create_course(b);
    let overridden = deployment.set_override(PES, a, json!(5));
    let changed = deployment.change(PES, json!(4), OverridesIntent::Keep, AppliesTo::All);
    check(
        &deployment.history,
        PES,
        &[
            (
                Some(a),
                changed,
                json!(5),
                Source::Override,
                &[
                    DEFINED,
                    ("course_override_set", overridden),
                    ("global_default_changed", changed),
                ],
            ),
            (
                Some(b),
                changed,
                json!(4),
                Source::Default,
                &[DEFINED, ("global_default_changed", changed)],
            ),
            (
                None,
                changed,
                json!(4),
                Source::Default,
                &[DEFINED, ("global_default_changed", changed)],
            ),
        ],
    );
}

#[test]
fn scenario_2_reset_all_displaces_overrides() {
    let mut deployment = Deployment::bootstrapped();
    let (a, b) = (course(1), course(2));
    deployment.create_course(a);
    deployment.create_course(b);
    let overridden = deployment.set_override(PES, a, json!(5));
    let changed = deployment.change(PES, json!(4), OverridesIntent::Reset, AppliesTo::All);
    check(
        &deployment.history,
        PES,
        &[
            (
                Some(a),
                changed,
                json!(4),
                Source::Default,
                &[
                    DEFINED,
                    ("course_override_set", overridden),
                    ("global_default_changed", changed),
                ],
            ),
            (
                Some(b),
                changed,
                json!(4),
                Source::Default,
                &[DEFINED, ("global_default_changed", changed)],
            ),
            // Before the change, the override still applied.
            (
                Some(a),
                changed - 1,
                json!(5),
                Source::Override,
                &[DEFINED, ("course_override_set", overridden)],
            ),
        ],
    );
    // An override set after the reset applies again.
    let again = deployment.set_override(PES, a, json!(7));
    check(
        &deployment.history,
        PES,
        &[(
            Some(a),
            again,
            json!(7),
            Source::Override,
            &[DEFINED, ("course_override_set", again)],
        )],
    );
}

#[test]
fn scenarios_3_and_4_new_courses_pins_existing_ones_until_a_change_for_all() {
    let mut deployment = Deployment::bootstrapped();
    let (a, b, c) = (course(1), course(2), course(3));
    deployment.create_course(a);
    deployment.create_course(b);
    let pinned = deployment.change(PES, json!(4), OverridesIntent::Keep, AppliesTo::NewCourses);
    // One pin per existing course, in metadata order, then the change itself.
    let (pin_a, pin_b) = (pinned - 2, pinned - 1);
    deployment.create_course(c);
    check(
        &deployment.history,
        PES,
        &[
            (
                Some(a),
                pinned,
                json!(3),
                Source::Pinned,
                &[
                    DEFINED,
                    ("value_pinned", pin_a),
                    ("global_default_changed", pinned),
                ],
            ),
            (
                Some(b),
                pinned,
                json!(3),
                Source::Pinned,
                &[
                    DEFINED,
                    ("value_pinned", pin_b),
                    ("global_default_changed", pinned),
                ],
            ),
            (
                Some(c),
                pinned,
                json!(4),
                Source::Default,
                &[DEFINED, ("global_default_changed", pinned)],
            ),
            // While only the pins are recorded, they do not count yet (the value is the same).
            (Some(a), pin_b, json!(3), Source::Default, &[DEFINED]),
        ],
    );
    let all = deployment.change(PES, json!(6), OverridesIntent::Keep, AppliesTo::All);
    check(
        &deployment.history,
        PES,
        &[
            (
                Some(a),
                all,
                json!(6),
                Source::Default,
                &[
                    DEFINED,
                    ("value_pinned", pin_a),
                    ("global_default_changed", all),
                ],
            ),
            (
                Some(b),
                all,
                json!(6),
                Source::Default,
                &[
                    DEFINED,
                    ("value_pinned", pin_b),
                    ("global_default_changed", all),
                ],
            ),
            (
                Some(c),
                all,
                json!(6),
                Source::Default,
                &[DEFINED, ("global_default_changed", all)],
            ),
        ],
    );
}

#[test]
fn scenario_5_the_kill_switch_beats_overrides_and_release_restores_them() {
    let mut deployment = Deployment::bootstrapped();
    let (a, b) = (course(1), course(2));
    deployment.create_course(a);
    deployment.create_course(b);
    let overridden = deployment.set_override(PUBLISH, a, json!(true));
    let engaged = deployment.kill(PUBLISH, true);
    let publish_defined = ("setting_defined", 4);
    check(
        &deployment.history,
        PUBLISH,
        &[
            (
                Some(a),
                engaged,
                json!(false),
                Source::KillSwitch,
                &[publish_defined, ("kill_switch_set", engaged)],
            ),
            (
                Some(b),
                engaged,
                json!(false),
                Source::KillSwitch,
                &[publish_defined, ("kill_switch_set", engaged)],
            ),
            (
                None,
                engaged,
                json!(false),
                Source::KillSwitch,
                &[publish_defined, ("kill_switch_set", engaged)],
            ),
        ],
    );
    assert!(!deployment
        .history
        .get(keys::PUBLISH_BIGLEARN_SPARFA, Some(a), engaged));
    let released = deployment.kill(PUBLISH, false);
    check(
        &deployment.history,
        PUBLISH,
        &[
            (
                Some(a),
                released,
                json!(true),
                Source::Override,
                &[
                    publish_defined,
                    ("course_override_set", overridden),
                    ("kill_switch_set", released),
                ],
            ),
            (
                Some(b),
                released,
                json!(true),
                Source::Default,
                &[publish_defined, ("kill_switch_set", released)],
            ),
        ],
    );
    // A global key's kill switch works the same way.
    let retrain_killed = deployment.kill("sparfa.retrain_enabled", true);
    assert!(!deployment
        .history
        .get(keys::SPARFA_RETRAIN_ENABLED, None, retrain_killed));
    assert!(deployment
        .history
        .get(keys::SPARFA_RETRAIN_ENABLED, None, retrain_killed - 1));
}

/// One combination, with two changes of the same intent: A overridden and B plain before
/// the first change, C created between the changes, D after the second.
fn check_combination(
    overrides: OverridesIntent,
    applies_to: AppliesTo,
    expected: [[(Value, Source); 4]; 2],
) {
    let mut deployment = Deployment::bootstrapped();
    let (a, b, c, d) = (course(1), course(2), course(3), course(4));
    deployment.create_course(a);
    deployment.create_course(b);
    deployment.set_override(PES, a, json!(5));
    let before = deployment.history.last_version();
    let first = deployment.change(PES, json!(4), overrides, applies_to);
    deployment.create_course(c);
    let second = deployment.change(PES, json!(6), overrides, applies_to);
    deployment.create_course(d);
    let label = format!("{} {}", overrides.as_str(), applies_to.as_str());
    let courses = [a, b, c, d];
    // Before the first change: A's override, the default 3 for everyone else, whenever
    // they were created (a replay of their early events resolves at that version).
    for (course, expected) in courses.iter().zip([
        (json!(5), Source::Override),
        (json!(3), Source::Default),
        (json!(3), Source::Default),
        (json!(3), Source::Default),
    ]) {
        let resolution = deployment
            .history
            .resolve(PES, Some(*course), before)
            .unwrap();
        assert_eq!(
            (resolution.value.to_json(), resolution.source),
            expected,
            "{label}: {course:?} before"
        );
    }
    for (version, expected_row) in [first, second].into_iter().zip(expected) {
        for (course, expected) in courses.iter().zip(expected_row) {
            let resolution = deployment
                .history
                .resolve(PES, Some(*course), version)
                .unwrap();
            assert_eq!(
                (resolution.value.to_json(), resolution.source),
                expected,
                "{label}: {course:?} as of {version}"
            );
            // The explanation names the event the value comes from, and it carries the value.
            let last = resolution.because.last().unwrap();
            let carries = match &last.body {
                crate::event::SettingsBody::GlobalDefaultChanged { value, .. } => {
                    // A pin's or override's value is in an earlier event of the chain.
                    resolution.source != Source::Default || *value == resolution.value
                }
                _ => true,
            };
            assert!(
                carries,
                "{label}: {course:?} as of {version}: {:?}",
                resolution.because
            );
            assert!(resolution
                .because
                .windows(2)
                .all(|pair| pair[0].settings_version < pair[1].settings_version));
        }
    }
    // The audit log of each course holds exactly its pins and overrides.
    let pins_of = |course: CourseUuid| -> Vec<(String, Value)> {
        deployment
            .history
            .audit(&AuditFilter {
                key: Some(PES.into()),
                course: Some(course),
                actor: None,
                from_micros: None,
                to_micros: None,
                after_version: None,
                limit: 100,
            })
            .iter()
            .map(|event| {
                (
                    event.body.type_name().to_owned(),
                    json!(event.settings_version),
                )
            })
            .collect()
    };
    let n_pins = |course: CourseUuid| {
        pins_of(course)
            .iter()
            .filter(|(type_name, _)| type_name == "value_pinned")
            .count()
    };
    let expected_pins = match applies_to {
        AppliesTo::All => [0, 0, 0, 0],
        // A and B pinned by both changes, C by the second only, D by none.
        AppliesTo::NewCourses => [2, 2, 1, 0],
    };
    assert_eq!(
        courses.map(n_pins),
        expected_pins,
        "{label}: pins per course"
    );
    assert_eq!(pins_of(a)[0].0, "course_override_set", "{label}");
}

#[test]
fn all_four_intent_combinations_with_courses_before_and_after_each_change() {
    use Source::{Default, Override, Pinned};
    check_combination(
        OverridesIntent::Keep,
        AppliesTo::All,
        [
            [
                (json!(5), Override),
                (json!(4), Default),
                (json!(4), Default),
                (json!(4), Default),
            ],
            [
                (json!(5), Override),
                (json!(6), Default),
                (json!(6), Default),
                (json!(6), Default),
            ],
        ],
    );
    check_combination(
        OverridesIntent::Reset,
        AppliesTo::All,
        [
            [
                (json!(4), Default),
                (json!(4), Default),
                (json!(4), Default),
                (json!(4), Default),
            ],
            [
                (json!(6), Default),
                (json!(6), Default),
                (json!(6), Default),
                (json!(6), Default),
            ],
        ],
    );
    check_combination(
        OverridesIntent::Keep,
        AppliesTo::NewCourses,
        [
            // C did not exist at the first change: it sees the new default.
            [
                (json!(5), Override),
                (json!(3), Pinned),
                (json!(4), Default),
                (json!(4), Default),
            ],
            // The second change pins C at 4 and re-pins B at its pin; D sees 6.
            [
                (json!(5), Override),
                (json!(3), Pinned),
                (json!(4), Pinned),
                (json!(6), Default),
            ],
        ],
    );
    check_combination(
        OverridesIntent::Reset,
        AppliesTo::NewCourses,
        [
            // A's override is reset; its pin holds its value without the override.
            [
                (json!(3), Pinned),
                (json!(3), Pinned),
                (json!(4), Default),
                (json!(4), Default),
            ],
            [
                (json!(3), Pinned),
                (json!(3), Pinned),
                (json!(4), Pinned),
                (json!(6), Default),
            ],
        ],
    );
}

#[test]
fn a_cleared_override_falls_back_and_says_why() {
    let mut deployment = Deployment::bootstrapped();
    let a = course(1);
    deployment.create_course(a);
    let set = deployment.set_override(PES, a, json!(9));
    let cleared = deployment.clear_override(PES, a);
    check(
        &deployment.history,
        PES,
        &[
            (
                Some(a),
                set,
                json!(9),
                Source::Override,
                &[DEFINED, ("course_override_set", set)],
            ),
            (
                Some(a),
                cleared,
                json!(3),
                Source::Default,
                &[DEFINED, ("course_override_cleared", cleared)],
            ),
        ],
    );
}

#[test]
fn scenario_6_resolving_as_of_each_version_reproduces_live_values() {
    let mut deployment = Deployment::bootstrapped();
    let courses = [course(1), course(2), course(3)];
    let mut live: Vec<(i64, Vec<SettingValue>)> = Vec::new();
    let mut observe = |deployment: &Deployment| {
        let version = deployment.history.last_version();
        let values = courses
            .iter()
            .map(|course| {
                deployment
                    .history
                    .value(PES, Some(*course), version)
                    .unwrap()
            })
            .collect();
        live.push((version, values));
    };
    deployment.create_course(courses[0]);
    observe(&deployment);
    deployment.set_override(PES, courses[0], json!(8));
    observe(&deployment);
    deployment.create_course(courses[1]);
    deployment.change(PES, json!(2), OverridesIntent::Keep, AppliesTo::NewCourses);
    observe(&deployment);
    deployment.kill(PUBLISH, true);
    observe(&deployment);
    deployment.create_course(courses[2]);
    deployment.change(PES, json!(7), OverridesIntent::Reset, AppliesTo::All);
    observe(&deployment);
    deployment.set_override(PES, courses[2], json!(1));
    observe(&deployment);
    // A rebuild reads the whole topic first, then resolves each course event at the
    // version it was stamped with.
    let rebuilt = SettingsHistory::from_events(deployment.history.events().to_vec());
    assert!(live.len() == 6 && live.windows(2).all(|pair| pair[0].0 < pair[1].0));
    for (version, values) in live {
        let replayed: Vec<SettingValue> = courses
            .iter()
            .map(|course| rebuilt.value(PES, Some(*course), version).unwrap())
            .collect();
        assert_eq!(replayed, values, "as of {version}");
    }
}

#[test]
fn re_delivered_events_change_nothing() {
    let deployment = Deployment::bootstrapped();
    let mut history = deployment.history.clone();
    let last = history.last_version();
    let first = history.events()[0].clone();
    assert_eq!(
        history.apply(first),
        crate::history::Applied::Stale { last_version: last }
    );
    assert_eq!(history.events().len(), deployment.history.events().len());
}

#[test]
fn typed_accessors_read_values_and_fall_back_before_definitions() {
    let mut deployment = Deployment::bootstrapped();
    let a = course(1);
    deployment.create_course(a);
    let history = &deployment.history;
    // Version 0: events recorded before any settings event existed.
    assert_eq!(
        history.get(keys::DEFAULT_NUM_PES_PER_BOOK_CONTAINER, Some(a), 0),
        3
    );
    assert_eq!(
        SettingsHistory::new().get(keys::SPARFA_RETRAIN_GROWTH, None, 5),
        0.1
    );
    let changed = deployment.change(GROWTH, json!(0.25), OverridesIntent::Keep, AppliesTo::All);
    let history = &deployment.history;
    assert_eq!(
        history.get(keys::SPARFA_RETRAIN_GROWTH, None, changed),
        0.25
    );
    assert_eq!(history.float(GROWTH, None, changed), Ok(0.25));
    assert_eq!(history.int(PES, Some(a), changed), Ok(3));
    assert_eq!(history.bool(PUBLISH, Some(a), changed), Ok(true));
    assert!(matches!(
        history.int(GROWTH, None, changed),
        Err(SettingsError::WrongValueType { .. })
    ));
    assert!(matches!(
        history.string("no.such_key", None, changed),
        Err(SettingsError::UnknownKey { .. })
    ));
    assert!(matches!(
        history.int(PES, None, 0),
        Err(SettingsError::NotDefinedAt { .. })
    ));
}

#[test]
fn list_gives_every_key_with_its_effective_value() {
    let mut deployment = Deployment::bootstrapped();
    let a = course(1);
    deployment.create_course(a);
    deployment.set_override(PES, a, json!(5));
    deployment.change(PES, json!(4), OverridesIntent::Keep, AppliesTo::All);
    let listed = deployment.history.list(Some(a));
    assert_eq!(listed.len(), 7);
    let pes = listed.iter().find(|setting| setting.key == PES).unwrap();
    assert_eq!(
        (
            pes.default.clone(),
            pes.value.clone(),
            pes.source,
            pes.definition.scope
        ),
        (
            SettingValue::Int(4),
            SettingValue::Int(5),
            Source::Override,
            Scope::Course
        )
    );
    let global = deployment.history.list(None);
    let pes = global.iter().find(|setting| setting.key == PES).unwrap();
    assert_eq!(
        (pes.value.clone(), pes.source),
        (SettingValue::Int(4), Source::Default)
    );
}

#[test]
fn the_audit_filters_combine() {
    let mut deployment = Deployment::bootstrapped();
    let (a, b) = (course(1), course(2));
    deployment.create_course(a);
    deployment.create_course(b);
    let set_a = deployment.set_override(PES, a, json!(5)); // teacher-support, t = 1 s
    let pinned = deployment.change(PES, json!(4), OverridesIntent::Keep, AppliesTo::NewCourses); // admin, 2 s
    let killed = deployment.kill(PUBLISH, true); // oncall, 3 s
    let all = AuditFilter {
        key: None,
        course: None,
        actor: None,
        from_micros: None,
        to_micros: None,
        after_version: None,
        limit: 1000,
    };
    let check_audit = |filter: AuditFilter, expected: &[i64]| {
        let versions: Vec<i64> = deployment
            .history
            .audit(&filter)
            .iter()
            .map(|event| event.settings_version)
            .collect();
        assert_eq!(versions, expected, "{filter:?}");
    };
    check_audit(all.clone(), &(1..=killed).collect::<Vec<_>>());
    check_audit(
        AuditFilter {
            after_version: Some(7),
            ..all.clone()
        },
        &[set_a, pinned - 2, pinned - 1, pinned, killed],
    );
    check_audit(
        AuditFilter {
            course: Some(a),
            ..all.clone()
        },
        &[set_a, pinned - 2],
    );
    check_audit(
        AuditFilter {
            course: Some(b),
            key: Some(PUBLISH.into()),
            ..all.clone()
        },
        &[],
    );
    check_audit(
        AuditFilter {
            actor: Some("admin".into()),
            ..all.clone()
        },
        &[pinned - 2, pinned - 1, pinned],
    );
    check_audit(
        AuditFilter {
            key: Some(PUBLISH.into()),
            ..all.clone()
        },
        &[4, killed],
    );
    check_audit(
        AuditFilter {
            from_micros: Some(2_000_000),
            to_micros: Some(2_000_000),
            ..all.clone()
        },
        &[pinned - 2, pinned - 1, pinned],
    );
    check_audit(
        AuditFilter {
            from_micros: Some(2_000_001),
            ..all.clone()
        },
        &[killed],
    );
    check_audit(
        AuditFilter {
            after_version: Some(7),
            limit: 2,
            ..all.clone()
        },
        &[set_a, pinned - 2],
    );
}

#[test]
fn refused_commands_produce_no_event() {
    let mut deployment = Deployment::bootstrapped();
    deployment.create_course(course(1));
    let context = deployment.context("admin");
    let history = &deployment.history;
    let at_change = deployment.at_change();
    let define = |key: &str, value_type: ValueType, default: Value, kill_value: Option<Value>| {
        DefineSetting {
            key: key.into(),
            value_type,
            scope: Scope::Course,
            default,
            kill_value,
            description: "d".into(),
        }
    };
    let change = |key: &str, value: Value, applies_to: AppliesTo| ChangeDefault {
        key: key.into(),
        value,
        overrides: OverridesIntent::Keep,
        applies_to,
    };
    // (outcome, expected error, expected JSON pointer)
    let cases: Vec<Refusal> = vec![
        (
            history.define(&context, &define(PES, ValueType::Int, json!(3), None)),
            SettingsError::AlreadyDefined {
                key: PES.into(),
                defined_at: 1,
            },
            "/key",
        ),
        (
            history.define(
                &context,
                &define("new.flag", ValueType::Bool, json!(1), None),
            ),
            SettingsError::WrongValueType {
                key: "new.flag".into(),
                field: "default",
                expected: "bool",
                got: "1".into(),
            },
            "/default",
        ),
        (
            history.define(
                &context,
                &define("new.flag", ValueType::Bool, json!(true), Some(json!("off"))),
            ),
            SettingsError::WrongValueType {
                key: "new.flag".into(),
                field: "kill_value",
                expected: "bool",
                got: "\"off\"".into(),
            },
            "/kill_value",
        ),
        (
            history.define(
                &context,
                &define("Bad..Key", ValueType::Int, json!(1), None),
            ),
            SettingsError::InvalidKey {
                key: "Bad..Key".into(),
            },
            "/key",
        ),
        (
            history.change_default(
                &context,
                &change("no.such_key", json!(1), AppliesTo::All),
                &at_change,
            ),
            SettingsError::UnknownKey {
                key: "no.such_key".into(),
            },
            "/key",
        ),
        (
            history.change_default(
                &context,
                &change(PES, json!(4.5), AppliesTo::All),
                &at_change,
            ),
            SettingsError::WrongValueType {
                key: PES.into(),
                field: "value",
                expected: "int",
                got: "4.5".into(),
            },
            "/value",
        ),
        (
            history.change_default(
                &context,
                &change(GROWTH, json!(0.2), AppliesTo::NewCourses),
                &at_change,
            ),
            SettingsError::GlobalScopePin { key: GROWTH.into() },
            "/applies_to",
        ),
        (
            history.set_course_override(&context, GROWTH, course(1), &json!(0.2)),
            SettingsError::GlobalScopeOverride { key: GROWTH.into() },
            "/course_uuid",
        ),
        (
            history.set_course_override(&context, PES, course(1), &json!("five")),
            SettingsError::WrongValueType {
                key: PES.into(),
                field: "value",
                expected: "int",
                got: "\"five\"".into(),
            },
            "/value",
        ),
        (
            history.clear_course_override(&context, "no.such_key", course(1)),
            SettingsError::UnknownKey {
                key: "no.such_key".into(),
            },
            "/key",
        ),
        (
            history.kill_switch(&context, PES, true),
            SettingsError::NoKillValue { key: PES.into() },
            "/engaged",
        ),
    ];
    for (outcome, expected, pointer) in cases {
        assert_eq!(outcome.as_ref().err(), Some(&expected));
        assert_eq!(expected.field_pointer(), pointer, "{expected}");
    }
}

#[test]
fn a_definition_then_its_commands_are_numbered_in_order() {
    let mut deployment = Deployment::bootstrapped();
    let context = deployment.context("admin");
    let defined = deployment.history.define(
        &context,
        &DefineSetting {
            key: "tutor.practice_label".into(),
            value_type: ValueType::String,
            scope: Scope::Course,
            default: json!("Practice"),
            kill_value: None,
            description: "label".into(),
        },
    );
    let version = deployment.record(defined);
    assert_eq!(version, 8);
    assert_eq!(
        deployment
            .history
            .string("tutor.practice_label", Some(course(1)), version),
        Ok("Practice".to_owned())
    );
    // The cutoff decides which courses are pinned, whatever else the list holds.
    deployment.create_course(course(1));
    deployment.create_course(course(2));
    let context = deployment.context("admin");
    let events = deployment
        .history
        .change_default(
            &context,
            &ChangeDefault {
                key: "tutor.practice_label".into(),
                value: json!("Review"),
                overrides: OverridesIntent::Keep,
                applies_to: AppliesTo::NewCourses,
            },
            &CoursesAtChange {
                courses: deployment.courses.clone(),
                cutoff: 0,
            },
        )
        .unwrap();
    let summary: Vec<(i64, &str, Option<CourseUuid>)> = events
        .iter()
        .map(|event| {
            (
                event.settings_version,
                event.body.type_name(),
                event.body.course_uuid(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (9, "value_pinned", Some(course(1))),
            (10, "global_default_changed", None)
        ]
    );
    assert!(events
        .iter()
        .all(|event| event.change_id == context.change_id));
}
