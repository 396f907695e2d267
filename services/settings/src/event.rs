//! Settings events (docs/design/operations.md §6.3): one record of `<prefix>.settings` each.

use biglearn_domain::ids::CourseUuid;
use uuid::Uuid;

use crate::value::{AppliesTo, OverridesIntent, Scope, SettingValue, ValueType};

/// What a `SettingDefined` event creates: a key's type, scope, default and kill value.
#[derive(Clone, PartialEq, Debug)]
pub struct Definition {
    pub value_type: ValueType,
    pub scope: Scope,
    pub default: SettingValue,
    /// What every course resolves to while the kill switch is engaged; a key without one
    /// has no kill switch.
    pub kill_value: Option<SettingValue>,
    pub description: String,
}

/// The body of a settings event: what happened to the key.
#[derive(Clone, PartialEq, Debug)]
pub enum SettingsBody {
    /// Creates the key.
    SettingDefined(Definition),
    /// A new global default, with its intent stated explicitly.
    GlobalDefaultChanged {
        value: SettingValue,
        overrides: OverridesIntent,
        applies_to: AppliesTo,
        /// The last course metadata sequence number at the change; -1 when no course existed.
        existing_course_cutoff: i64,
    },
    /// A course keeps its value through a `new_courses` change (emitted before the change).
    ValuePinned {
        course_uuid: CourseUuid,
        value: SettingValue,
    },
    CourseOverrideSet {
        course_uuid: CourseUuid,
        value: SettingValue,
    },
    CourseOverrideCleared {
        course_uuid: CourseUuid,
    },
    /// While engaged, every course resolves to the kill value.
    KillSwitchSet {
        engaged: bool,
    },
}

impl SettingsBody {
    /// The body's name in snake case (`global_default_changed`), for JSON and headers.
    pub fn type_name(&self) -> &'static str {
        match self {
            SettingsBody::SettingDefined(_) => "setting_defined",
            SettingsBody::GlobalDefaultChanged { .. } => "global_default_changed",
            SettingsBody::ValuePinned { .. } => "value_pinned",
            SettingsBody::CourseOverrideSet { .. } => "course_override_set",
            SettingsBody::CourseOverrideCleared { .. } => "course_override_cleared",
            SettingsBody::KillSwitchSet { .. } => "kill_switch_set",
        }
    }

    /// The course the body is about, if any.
    pub fn course_uuid(&self) -> Option<CourseUuid> {
        match self {
            SettingsBody::ValuePinned { course_uuid, .. }
            | SettingsBody::CourseOverrideSet { course_uuid, .. }
            | SettingsBody::CourseOverrideCleared { course_uuid } => Some(*course_uuid),
            _ => None,
        }
    }
}

/// One settings event.
#[derive(Clone, PartialEq, Debug)]
pub struct SettingsEvent {
    /// 1, 2, 3, …: the order of all settings events.
    pub settings_version: i64,
    /// Shared by every event of one admin action.
    pub change_id: Uuid,
    pub key: String,
    /// Who acted (`Biglearn-Actor`).
    pub actor: String,
    /// Why (the request's `reason`).
    pub reason: String,
    /// The writer clock, microseconds since the epoch.
    pub occurred_at_micros: i64,
    pub body: SettingsBody,
}
