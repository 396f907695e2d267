//! The initial settings of docs/design/operations.md §6.5, their typed keys, and the bootstrap
//! events that define them on an empty settings topic.

use std::marker::PhantomData;

use uuid::Uuid;

use crate::event::{Definition, SettingsBody, SettingsEvent};
use crate::history::SettingsHistory;
use crate::value::{Scope, SettingValue, ValueType};

/// A value that can be written in a `const` table.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum ConstValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
}

impl ConstValue {
    /// The owned value.
    pub fn to_value(self) -> SettingValue {
        match self {
            ConstValue::Bool(flag) => SettingValue::Bool(flag),
            ConstValue::Int(int) => SettingValue::Int(int),
            ConstValue::Float(float) => SettingValue::Float(float),
            ConstValue::Str(text) => SettingValue::String(text.to_owned()),
        }
    }
}

/// One row of the initial settings table.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct InitialSetting {
    pub key: &'static str,
    pub value_type: ValueType,
    pub scope: Scope,
    pub default: ConstValue,
    pub kill_value: Option<ConstValue>,
    pub description: &'static str,
}

impl InitialSetting {
    /// The definition this row creates.
    pub fn definition(&self) -> Definition {
        Definition {
            value_type: self.value_type,
            scope: self.scope,
            default: self.default.to_value(),
            kill_value: self.kill_value.map(ConstValue::to_value),
            description: self.description.to_owned(),
        }
    }
}

/// The settings every deployment starts with (docs/design/operations.md §6.5), in the order of
/// their bootstrap versions 1..=7.
pub const INITIAL_SETTINGS: [InitialSetting; 7] = [
    InitialSetting {
        key: "scheduler.default_num_pes_per_book_container",
        value_type: ValueType::Int,
        scope: Scope::Course,
        default: ConstValue::Int(3),
        kill_value: None,
        description: "Personalized exercises allocated per book container (scheduler.md §9).",
    },
    InitialSetting {
        key: "scheduler.random_ago_min_sequence_number",
        value_type: ValueType::Int,
        scope: Scope::Course,
        default: ConstValue::Int(5),
        kill_value: None,
        description: "Smallest k of the spaced-practice k-ago map (scheduler.md §10.4).",
    },
    InitialSetting {
        key: "clue.local_query.min_num_responses",
        value_type: ValueType::Int,
        scope: Scope::Course,
        default: ConstValue::Int(3),
        kill_value: None,
        description: "Responses a local_query CLUE needs before it is real.",
    },
    InitialSetting {
        key: "scheduler.publish_biglearn_sparfa",
        value_type: ValueType::Bool,
        scope: Scope::Course,
        default: ConstValue::Bool(true),
        kill_value: Some(ConstValue::Bool(false)),
        description: "Publish biglearn_sparfa results for the course.",
    },
    InitialSetting {
        key: "sparfa.retrain_enabled",
        value_type: ValueType::Bool,
        scope: Scope::Global,
        default: ConstValue::Bool(true),
        kill_value: Some(ConstValue::Bool(false)),
        description: "Retrain SPARFA models as responses accumulate (sparfa.md §8).",
    },
    InitialSetting {
        key: "sparfa.retrain_growth",
        value_type: ValueType::Float,
        scope: Scope::Global,
        default: ConstValue::Float(0.1),
        kill_value: None,
        description: "Relative growth in observations that triggers a retrain.",
    },
    InitialSetting {
        key: "sparfa.max_training_observations",
        value_type: ValueType::Int,
        scope: Scope::Global,
        default: ConstValue::Int(20_000_000),
        kill_value: None,
        description: "Most observations one SPARFA fit trains on (sparfa.md §5).",
    },
];

/// The initial row of `key`, if it is one of [`INITIAL_SETTINGS`].
pub fn initial_setting(key: &str) -> Option<&'static InitialSetting> {
    INITIAL_SETTINGS.iter().find(|setting| setting.key == key)
}

/// A Rust type a setting's values can be read as.
pub trait SettingType: Sized {
    /// The setting value type it reads.
    const VALUE_TYPE: ValueType;
    /// The value as this type, if it is of [`Self::VALUE_TYPE`].
    fn from_value(value: &SettingValue) -> Option<Self>;
}

impl SettingType for bool {
    const VALUE_TYPE: ValueType = ValueType::Bool;
    fn from_value(value: &SettingValue) -> Option<bool> {
        match value {
            SettingValue::Bool(flag) => Some(*flag),
            _ => None,
        }
    }
}

impl SettingType for i64 {
    const VALUE_TYPE: ValueType = ValueType::Int;
    fn from_value(value: &SettingValue) -> Option<i64> {
        match value {
            SettingValue::Int(int) => Some(*int),
            _ => None,
        }
    }
}

impl SettingType for f64 {
    const VALUE_TYPE: ValueType = ValueType::Float;
    fn from_value(value: &SettingValue) -> Option<f64> {
        match value.as_type(ValueType::Float) {
            Some(SettingValue::Float(float)) => Some(float),
            _ => None,
        }
    }
}

impl SettingType for String {
    const VALUE_TYPE: ValueType = ValueType::String;
    fn from_value(value: &SettingValue) -> Option<String> {
        match value {
            SettingValue::String(text) => Some(text.clone()),
            _ => None,
        }
    }
}

/// A typed key of the initial settings; its `fallback` is the docs/design/operations.md §6.5
/// default, which is what every course resolves to before the key is defined (settings
/// version 0, i.e. events recorded before any settings event existed).
#[derive(Clone, Copy, Debug)]
pub struct Key<T> {
    pub name: &'static str,
    pub fallback: T,
    value_type: PhantomData<T>,
}

impl<T> Key<T> {
    const fn new(name: &'static str, fallback: T) -> Key<T> {
        Key {
            name,
            fallback,
            value_type: PhantomData,
        }
    }
}

/// The typed keys of [`INITIAL_SETTINGS`], for the scheduler and the SPARFA consumer.
pub mod keys {
    use super::Key;

    /// PEs per book container (course scope).
    pub const DEFAULT_NUM_PES_PER_BOOK_CONTAINER: Key<i64> =
        Key::new("scheduler.default_num_pes_per_book_container", 3);
    /// Smallest k of the SPE k-ago map (course scope).
    pub const RANDOM_AGO_MIN_SEQUENCE_NUMBER: Key<i64> =
        Key::new("scheduler.random_ago_min_sequence_number", 5);
    /// Responses a `local_query` CLUE needs (course scope).
    pub const CLUE_LOCAL_QUERY_MIN_NUM_RESPONSES: Key<i64> =
        Key::new("clue.local_query.min_num_responses", 3);
    /// Publish `biglearn_sparfa` results for a course (course scope, kill value false).
    pub const PUBLISH_BIGLEARN_SPARFA: Key<bool> =
        Key::new("scheduler.publish_biglearn_sparfa", true);
    /// SPARFA retraining on (global, kill value false).
    pub const SPARFA_RETRAIN_ENABLED: Key<bool> = Key::new("sparfa.retrain_enabled", true);
    /// Retrain threshold (global).
    pub const SPARFA_RETRAIN_GROWTH: Key<f64> = Key::new("sparfa.retrain_growth", 0.1);
    /// Most observations per fit (global).
    pub const SPARFA_MAX_TRAINING_OBSERVATIONS: Key<i64> =
        Key::new("sparfa.max_training_observations", 20_000_000);
}

/// Who the bootstrap events name as their actor.
pub const BOOTSTRAP_ACTOR: &str = "biglearn";

/// The change id of the bootstrap: the same in every deployment.
pub fn bootstrap_change_id() -> Uuid {
    biglearn_domain::ids::uuid_v5("settings/bootstrap")
}

/// `SettingDefined` events for every initial setting that `history` does not define yet,
/// numbered after its last version: on an empty topic, versions 1..=7 in table order.
pub fn bootstrap_events(history: &SettingsHistory, occurred_at_micros: i64) -> Vec<SettingsEvent> {
    let mut version = history.last_version();
    INITIAL_SETTINGS
        .iter()
        .filter(|setting| !history.is_defined(setting.key))
        .map(|setting| {
            version += 1;
            SettingsEvent {
                settings_version: version,
                change_id: bootstrap_change_id(),
                key: setting.key.to_owned(),
                actor: BOOTSTRAP_ACTOR.to_owned(),
                reason: "initial settings (spec operations.md §6.5)".to_owned(),
                occurred_at_micros,
                body: SettingsBody::SettingDefined(setting.definition()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: SettingType + PartialEq + std::fmt::Debug>(key: Key<T>) {
        let row =
            initial_setting(key.name).unwrap_or_else(|| panic!("{} is in the table", key.name));
        assert_eq!(row.value_type, T::VALUE_TYPE, "{}", key.name);
        assert_eq!(
            T::from_value(&row.default.to_value()),
            Some(key.fallback),
            "{}",
            key.name
        );
        if let Some(kill_value) = row.kill_value {
            assert_eq!(kill_value.to_value().value_type(), row.value_type);
        }
    }

    #[test]
    fn every_typed_key_matches_its_row_of_the_table() {
        check(keys::DEFAULT_NUM_PES_PER_BOOK_CONTAINER);
        check(keys::RANDOM_AGO_MIN_SEQUENCE_NUMBER);
        check(keys::CLUE_LOCAL_QUERY_MIN_NUM_RESPONSES);
        check(keys::PUBLISH_BIGLEARN_SPARFA);
        check(keys::SPARFA_RETRAIN_ENABLED);
        check(keys::SPARFA_RETRAIN_GROWTH);
        check(keys::SPARFA_MAX_TRAINING_OBSERVATIONS);
    }

    #[test]
    fn bootstrap_defines_the_table_as_versions_1_to_7_then_nothing() {
        let mut history = SettingsHistory::new();
        let events = bootstrap_events(&history, 42);
        let versions: Vec<i64> = events.iter().map(|event| event.settings_version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
        let keys: Vec<&str> = events.iter().map(|event| event.key.as_str()).collect();
        let table: Vec<&str> = INITIAL_SETTINGS.iter().map(|setting| setting.key).collect();
        assert_eq!(keys, table);
        for event in events {
            history.apply(event);
        }
        assert_eq!(bootstrap_events(&history, 43), Vec::new());
        assert_eq!(
            history.get(keys::SPARFA_MAX_TRAINING_OBSERVATIONS, None, 7),
            20_000_000
        );
    }
}
