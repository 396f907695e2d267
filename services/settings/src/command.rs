//! Admin commands to events: each command is validated against the history and yields
//! the events to append, numbered after its last version, or an error and no event.

use biglearn_domain::ids::CourseUuid;
use serde_json::Value;
use uuid::Uuid;

use crate::error::SettingsError;
use crate::event::{Definition, SettingsBody, SettingsEvent};
use crate::history::SettingsHistory;
use crate::value::{AppliesTo, OverridesIntent, Scope, SettingValue, ValueType};

/// Who, why and when, shared by every event of one admin action.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChangeContext {
    pub change_id: Uuid,
    pub actor: String,
    pub reason: String,
    /// The writer clock, microseconds since the epoch.
    pub occurred_at_micros: i64,
}

/// `define`: create a key.
#[derive(Clone, PartialEq, Debug)]
pub struct DefineSetting {
    pub key: String,
    pub value_type: ValueType,
    pub scope: Scope,
    pub default: Value,
    pub kill_value: Option<Value>,
    pub description: String,
}

/// `change_default`: a new global default with its explicit intent.
#[derive(Clone, PartialEq, Debug)]
pub struct ChangeDefault {
    pub key: String,
    pub value: Value,
    pub overrides: OverridesIntent,
    pub applies_to: AppliesTo,
}

/// A course that exists at a change, with its metadata sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExistingCourse {
    pub course_uuid: CourseUuid,
    pub metadata_sequence_number: i64,
}

/// The courses a change sees: every course accepted so far, and the last metadata
/// sequence number (-1 when there is none). Only the writer knows these exactly, under
/// its metadata lock.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CoursesAtChange {
    pub courses: Vec<ExistingCourse>,
    pub cutoff: i64,
}

/// Whether `key` has the shape of a setting key: words of `a-z0-9_` joined by single dots,
/// 1..=200 characters.
pub fn is_valid_key(key: &str) -> bool {
    let is_word = |word: &str| {
        !word.is_empty()
            && word
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    };
    (1..=200).contains(&key.len()) && key.split('.').all(is_word)
}

fn typed_value(
    key: &str,
    field: &'static str,
    value_type: ValueType,
    json: &Value,
) -> Result<SettingValue, SettingsError> {
    SettingValue::from_json(value_type, json).ok_or_else(|| SettingsError::WrongValueType {
        key: key.to_owned(),
        field,
        expected: value_type.as_str(),
        got: json.to_string(),
    })
}

impl SettingsHistory {
    fn event(
        &self,
        context: &ChangeContext,
        offset: i64,
        key: &str,
        body: SettingsBody,
    ) -> SettingsEvent {
        SettingsEvent {
            settings_version: self.last_version() + 1 + offset,
            change_id: context.change_id,
            key: key.to_owned(),
            actor: context.actor.clone(),
            reason: context.reason.clone(),
            occurred_at_micros: context.occurred_at_micros,
            body,
        }
    }

    /// The definition of a key that must exist now.
    fn current_definition(&self, key: &str) -> Result<&Definition, SettingsError> {
        self.definition(key)
            .map(|(_, definition)| definition)
            .ok_or_else(|| SettingsError::UnknownKey {
                key: key.to_owned(),
            })
    }

    /// `define`: one `SettingDefined`; refused for an existing key or ill-typed values.
    pub fn define(
        &self,
        context: &ChangeContext,
        command: &DefineSetting,
    ) -> Result<Vec<SettingsEvent>, SettingsError> {
        let key = command.key.as_str();
        if !is_valid_key(key) {
            return Err(SettingsError::InvalidKey {
                key: key.to_owned(),
            });
        }
        if let Some((defined_at, _)) = self.definition(key) {
            return Err(SettingsError::AlreadyDefined {
                key: key.to_owned(),
                defined_at,
            });
        }
        let default = typed_value(key, "default", command.value_type, &command.default)?;
        let kill_value = command
            .kill_value
            .as_ref()
            .map(|kill_value| typed_value(key, "kill_value", command.value_type, kill_value))
            .transpose()?;
        let body = SettingsBody::SettingDefined(Definition {
            value_type: command.value_type,
            scope: command.scope,
            default,
            kill_value,
            description: command.description.clone(),
        });
        Ok(vec![self.event(context, 0, key, body)])
    }

    /// `change_default`: for `applies_to: new_courses`, one `ValuePinned` per course with
    /// metadata number ≤ the cutoff, holding what it resolved to just before (ignoring
    /// kill switch and overrides), then the `GlobalDefaultChanged`.
    pub fn change_default(
        &self,
        context: &ChangeContext,
        command: &ChangeDefault,
        at_change: &CoursesAtChange,
    ) -> Result<Vec<SettingsEvent>, SettingsError> {
        let key = command.key.as_str();
        let definition = self.current_definition(key)?;
        let value = typed_value(key, "value", definition.value_type, &command.value)?;
        let mut events = Vec::new();
        if command.applies_to == AppliesTo::NewCourses {
            if definition.scope == Scope::Global {
                return Err(SettingsError::GlobalScopePin {
                    key: key.to_owned(),
                });
            }
            let mut courses: Vec<ExistingCourse> = at_change
                .courses
                .iter()
                .filter(|course| course.metadata_sequence_number <= at_change.cutoff)
                .copied()
                .collect();
            courses.sort_by_key(|course| (course.metadata_sequence_number, course.course_uuid));
            courses.dedup_by_key(|course| course.course_uuid);
            let version = self.last_version();
            for course in courses {
                let pinned = self.base_value(key, course.course_uuid, version)?;
                let body = SettingsBody::ValuePinned {
                    course_uuid: course.course_uuid,
                    value: pinned,
                };
                events.push(self.event(context, events.len() as i64, key, body));
            }
        }
        let body = SettingsBody::GlobalDefaultChanged {
            value,
            overrides: command.overrides,
            applies_to: command.applies_to,
            existing_course_cutoff: at_change.cutoff,
        };
        events.push(self.event(context, events.len() as i64, key, body));
        Ok(events)
    }

    /// `set_course_override`: refused for a key of scope global.
    pub fn set_course_override(
        &self,
        context: &ChangeContext,
        key: &str,
        course_uuid: CourseUuid,
        value: &Value,
    ) -> Result<Vec<SettingsEvent>, SettingsError> {
        let definition = self.current_definition(key)?;
        if definition.scope == Scope::Global {
            return Err(SettingsError::GlobalScopeOverride {
                key: key.to_owned(),
            });
        }
        let value = typed_value(key, "value", definition.value_type, value)?;
        let body = SettingsBody::CourseOverrideSet { course_uuid, value };
        Ok(vec![self.event(context, 0, key, body)])
    }

    /// `clear_course_override`: recorded even when no override is set (the admin's
    /// statement of intent is part of the audit log); refused for scope global.
    pub fn clear_course_override(
        &self,
        context: &ChangeContext,
        key: &str,
        course_uuid: CourseUuid,
    ) -> Result<Vec<SettingsEvent>, SettingsError> {
        let definition = self.current_definition(key)?;
        if definition.scope == Scope::Global {
            return Err(SettingsError::GlobalScopeOverride {
                key: key.to_owned(),
            });
        }
        let body = SettingsBody::CourseOverrideCleared { course_uuid };
        Ok(vec![self.event(context, 0, key, body)])
    }

    /// `kill_switch`: refused for a key without a kill value.
    pub fn kill_switch(
        &self,
        context: &ChangeContext,
        key: &str,
        engaged: bool,
    ) -> Result<Vec<SettingsEvent>, SettingsError> {
        let definition = self.current_definition(key)?;
        if definition.kill_value.is_none() {
            return Err(SettingsError::NoKillValue {
                key: key.to_owned(),
            });
        }
        let body = SettingsBody::KillSwitchSet { engaged };
        Ok(vec![self.event(context, 0, key, body)])
    }
}
