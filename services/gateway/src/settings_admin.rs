//! Settings changes and reads over HTTP: the writer's settings appends (validated
//! against the follower's history, `biglearn-settings-follower`) and the
//! `/admin/settings/*` answers.

use std::sync::Arc;
use std::time::Duration;

use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::CourseUuid;
use biglearn_projector::event_log::EventLog;
use biglearn_settings::avro::settings_record;
use biglearn_settings::{
    bootstrap_events, AuditFilter, ChangeContext, ChangeDefault, CoursesAtChange, DefineSetting,
    ExistingCourse, Scope, SettingValue, SettingsBody, SettingsError, SettingsEvent, ValueType,
};
use biglearn_settings_follower::Settings;
use biglearn_stream::clock::now_micros;
use biglearn_stream::{OutgoingRecord, SharedStreamStore};
use serde_json::{json, Value};

use crate::error::HandlerError;
use crate::requests::{
    AdminRequest, AppliesTo as RequestAppliesTo, OverridesPolicy, SettingScope, SettingValueType,
};
use crate::writer::Writer;
use crate::GatewayState;

/// How long a settings write waits for the follower to apply what it appended.
const APPLY_DEADLINE: Duration = Duration::from_secs(50);

/// Why a settings change was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsWriteError {
    /// 400: the command is invalid against the current settings; nothing was written.
    #[error(transparent)]
    Refused(#[from] SettingsError),
    /// 503: the settings topic did not take or return the change in time.
    #[error("settings log unavailable; retry ({detail})")]
    Unavailable { detail: String },
    /// 500.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl From<SettingsWriteError> for HandlerError {
    fn from(error: SettingsWriteError) -> Self {
        match error {
            SettingsWriteError::Refused(refused) => HandlerError::BadRequest {
                path: refused.field_pointer(),
                message: refused.to_string(),
            },
            SettingsWriteError::Unavailable { .. } => HandlerError::Unavailable {
                message: error.to_string(),
            },
            SettingsWriteError::Internal { detail } => HandlerError::Internal { detail },
        }
    }
}

/// One admin action on settings.
#[derive(Clone, Debug)]
pub enum SettingsChange {
    Define(DefineSetting),
    ChangeDefault(ChangeDefault),
    SetCourseOverride {
        key: String,
        course_uuid: CourseUuid,
        value: Value,
    },
    ClearCourseOverride {
        key: String,
        course_uuid: CourseUuid,
    },
    KillSwitch {
        key: String,
        engaged: bool,
    },
    /// Defines the initial settings that are not defined yet (docs/design/operations.md §6.5).
    Bootstrap,
}

/// What a settings append needs from the writer's process.
#[derive(Clone)]
pub struct SettingsWriter {
    pub settings: Arc<Settings>,
    pub store: SharedStreamStore,
    pub writer: Arc<Writer>,
    /// The event-log projection: the courses and their metadata numbers.
    pub log: EventLog,
}

fn unavailable(detail: impl std::fmt::Display) -> SettingsWriteError {
    SettingsWriteError::Unavailable {
        detail: detail.to_string(),
    }
}

fn internal(detail: impl std::fmt::Display) -> SettingsWriteError {
    SettingsWriteError::Internal {
        detail: detail.to_string(),
    }
}

impl SettingsWriter {
    /// Waits until the follower has applied the topic up to offset `next` (exclusive).
    async fn wait_applied(&self, next: i64) -> Result<(), SettingsWriteError> {
        let mut progress = self.settings.progress();
        let applied =
            progress.wait_for(|progress| progress.positions.first().is_some_and(|p| *p >= next));
        let outcome = tokio::time::timeout(APPLY_DEADLINE, applied)
            .await
            .map(|applied| applied.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(unavailable("the settings follower stopped")),
            Err(_) => Err(unavailable(
                "the settings follower has not applied the settings topic in time",
            )),
        }
    }

    /// Every course accepted so far and the last metadata number, read under the
    /// course metadata lock.
    fn courses_at_change(&self) -> Result<CoursesAtChange, SettingsWriteError> {
        let courses = self
            .log
            .metadata_from(StreamKind::Course, 0, usize::MAX, true)
            .map_err(internal)?
            .into_iter()
            .map(|row| ExistingCourse {
                course_uuid: CourseUuid(row.aggregate),
                metadata_sequence_number: row.metadata_sequence_number,
            })
            .collect();
        let cutoff = self
            .log
            .next_metadata_sequence_number(StreamKind::Course)
            .map_err(internal)?
            - 1;
        Ok(CoursesAtChange { courses, cutoff })
    }

    /// Validates `change` against the latest settings, appends its events and waits until
    /// the follower has applied them; returns the last settings version. A refused change
    /// writes nothing.
    pub async fn append(
        &self,
        change: SettingsChange,
        actor: &str,
        reason: &str,
    ) -> Result<i64, SettingsWriteError> {
        let _settings_guard = self.settings.lock_changes().await;
        // A default change holds the course metadata lock until its events are applied:
        // every course accepted before it is pinned, none after (docs/design/operations.md §6.3).
        let _metadata_guard = match change {
            SettingsChange::ChangeDefault(_) => Some(
                self.writer
                    .lock_course_metadata()
                    .await
                    .map_err(unavailable)?,
            ),
            _ => None,
        };
        let topic = self.settings.topic().to_owned();
        let high = self
            .store
            .high_watermarks(&topic)
            .await
            .map_err(unavailable)?;
        self.wait_applied(high.first().copied().unwrap_or(0))
            .await?;
        let at_change = match change {
            SettingsChange::ChangeDefault(_) => self.courses_at_change()?,
            _ => CoursesAtChange {
                courses: Vec::new(),
                cutoff: -1,
            },
        };
        let context = ChangeContext {
            change_id: uuid::Uuid::new_v4(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            occurred_at_micros: now_micros(),
        };
        let events = {
            let history = self.settings.history();
            match &change {
                SettingsChange::Define(define) => history.define(&context, define)?,
                SettingsChange::ChangeDefault(change) => {
                    history.change_default(&context, change, &at_change)?
                }
                SettingsChange::SetCourseOverride {
                    key,
                    course_uuid,
                    value,
                } => history.set_course_override(&context, key, *course_uuid, value)?,
                SettingsChange::ClearCourseOverride { key, course_uuid } => {
                    history.clear_course_override(&context, key, *course_uuid)?
                }
                SettingsChange::KillSwitch { key, engaged } => {
                    history.kill_switch(&context, key, *engaged)?
                }
                SettingsChange::Bootstrap => bootstrap_events(&history, context.occurred_at_micros),
            }
        };
        let Some(last_version) = events.last().map(|event| event.settings_version) else {
            return Ok(self.settings.last_version());
        };
        let records = events
            .iter()
            .map(|event| {
                settings_record(event).map(|encoded| OutgoingRecord {
                    key: encoded.key,
                    value: encoded.value,
                    headers: encoded.headers,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let outcomes = self
            .store
            .append(&topic, records)
            .await
            .map_err(unavailable)?;
        // Whatever landed is applied by the follower; the next change catches up with it
        // first, so versions stay dense, and pins of an incomplete change never count.
        if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
            return Err(unavailable(error));
        }
        let next = outcomes
            .iter()
            .flatten()
            .map(|delivered| delivered.offset + 1)
            .max()
            .unwrap_or(0);
        self.wait_applied(next).await?;
        tracing::info!(
            actor,
            reason,
            settings_version = last_version,
            n_events = events.len(),
            key = %events[0].key,
            "Settings changed."
        );
        Ok(last_version)
    }
}

fn value_type_of(value_type: SettingValueType) -> ValueType {
    match value_type {
        SettingValueType::Bool => ValueType::Bool,
        SettingValueType::Int => ValueType::Int,
        SettingValueType::Float => ValueType::Float,
        SettingValueType::String => ValueType::String,
    }
}

/// A settings event as the admin endpoints show it (in `because` and `audit`).
pub fn event_json(event: &SettingsEvent) -> Value {
    let mut json = json!({
        "settings_version": event.settings_version,
        "change_id": event.change_id,
        "key": event.key,
        "type": event.body.type_name(),
        "actor": event.actor,
        "reason": event.reason,
        "occurred_at": biglearn_domain::time::format_datetime_micros(event.occurred_at_micros),
    });
    let body = match &event.body {
        SettingsBody::SettingDefined(definition) => json!({
            "value_type": definition.value_type.as_str(),
            "scope": definition.scope.as_str(),
            "default": definition.default.to_json(),
            "kill_value": definition.kill_value.as_ref().map(SettingValue::to_json),
            "description": definition.description,
        }),
        SettingsBody::GlobalDefaultChanged {
            value,
            overrides,
            applies_to,
            existing_course_cutoff,
        } => json!({
            "value": value.to_json(),
            "overrides": overrides.as_str(),
            "applies_to": applies_to.as_str(),
            "existing_course_cutoff": existing_course_cutoff,
        }),
        SettingsBody::ValuePinned { course_uuid, value }
        | SettingsBody::CourseOverrideSet { course_uuid, value } => json!({
            "course_uuid": course_uuid,
            "value": value.to_json(),
        }),
        SettingsBody::CourseOverrideCleared { course_uuid } => json!({"course_uuid": course_uuid}),
        SettingsBody::KillSwitchSet { engaged } => json!({"engaged": engaged}),
    };
    if let (Value::Object(fields), Value::Object(body)) = (&mut json, body) {
        fields.extend(body);
    }
    json
}

fn settings_writer(state: &GatewayState) -> Result<SettingsWriter, HandlerError> {
    let writer = state
        .writer
        .clone()
        .ok_or_else(HandlerError::not_the_writer)?;
    Ok(SettingsWriter {
        settings: state.settings.clone(),
        store: state.store.clone(),
        writer,
        log: state.log.clone(),
    })
}

/// Answers one `/admin/settings/*` request.
pub async fn answer_settings(
    state: &GatewayState,
    request: AdminRequest,
    actor: &str,
) -> Result<Value, HandlerError> {
    let (change, reason) = match request {
        AdminRequest::DefineSetting(define) => (
            SettingsChange::Define(DefineSetting {
                key: define.key,
                value_type: value_type_of(define.value_type),
                scope: match define.scope {
                    SettingScope::Global => Scope::Global,
                    SettingScope::Course => Scope::Course,
                },
                default: define.default,
                kill_value: define.kill_value,
                description: define.description,
            }),
            define.reason,
        ),
        AdminRequest::ChangeDefault(change) => (
            SettingsChange::ChangeDefault(ChangeDefault {
                key: change.key,
                value: change.value,
                overrides: match change.overrides {
                    OverridesPolicy::Keep => biglearn_settings::OverridesIntent::Keep,
                    OverridesPolicy::Reset => biglearn_settings::OverridesIntent::Reset,
                },
                applies_to: match change.applies_to {
                    RequestAppliesTo::All => biglearn_settings::AppliesTo::All,
                    RequestAppliesTo::NewCourses => biglearn_settings::AppliesTo::NewCourses,
                },
            }),
            change.reason,
        ),
        AdminRequest::SetCourseOverride(set) => (
            SettingsChange::SetCourseOverride {
                key: set.key,
                course_uuid: set.course_uuid,
                value: set.value,
            },
            set.reason,
        ),
        AdminRequest::ClearCourseOverride(clear) => (
            SettingsChange::ClearCourseOverride {
                key: clear.key,
                course_uuid: clear.course_uuid,
            },
            clear.reason,
        ),
        AdminRequest::KillSwitch(kill) => (
            SettingsChange::KillSwitch {
                key: kill.key,
                engaged: kill.engaged,
            },
            kill.reason,
        ),
        read => return answer_settings_read(state, read),
    };
    let settings_version = settings_writer(state)?
        .append(change, actor, &reason)
        .await?;
    Ok(json!({ "settings_version": settings_version }))
}

fn refused(error: SettingsError) -> HandlerError {
    SettingsWriteError::Refused(error).into()
}

fn answer_settings_read(
    state: &GatewayState,
    request: AdminRequest,
) -> Result<Value, HandlerError> {
    let history = state.settings.history();
    match request {
        AdminRequest::GetSetting(get) => {
            let version = get.as_of_version.unwrap_or(i64::MAX);
            let resolution = history
                .resolve(&get.key, get.course_uuid, version)
                .map_err(refused)?;
            Ok(json!({
                "value": resolution.value.to_json(),
                "source": resolution.source.as_str(),
                "settings_version": resolution.settings_version,
                "because": resolution.because.iter().map(event_json).collect::<Vec<_>>(),
            }))
        }
        AdminRequest::ListSettings(list) => Ok(json!({
            "settings": history.list(list.course_uuid).iter().map(|setting| json!({
                "key": setting.key,
                "value_type": setting.definition.value_type.as_str(),
                "scope": setting.definition.scope.as_str(),
                "default": setting.default.to_json(),
                "value": setting.value.to_json(),
                "source": setting.source.as_str(),
            })).collect::<Vec<_>>(),
            // Flags are static per environment, listed here so one call shows both kinds.
            "feature_flags": state.flags.describe().iter().map(|(flag, enabled)| json!({
                "name": flag.name,
                "enabled": enabled,
                "description": flag.description,
            })).collect::<Vec<_>>(),
        })),
        AdminRequest::AuditSettings(audit) => {
            let micros = |timestamp: &Option<biglearn_domain::events::Timestamp>| {
                timestamp.as_ref().and_then(|timestamp| timestamp.micros())
            };
            let filter = AuditFilter {
                key: audit.key,
                course: audit.course_uuid,
                actor: audit.actor,
                from_micros: micros(&audit.from),
                to_micros: micros(&audit.to),
                after_version: audit.after_version,
                limit: audit.limit as usize,
            };
            Ok(json!({
                "events": history.audit(&filter).into_iter().map(event_json).collect::<Vec<_>>(),
            }))
        }
        other => Err(HandlerError::Internal {
            detail: format!("not a settings request: {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use biglearn_settings::{OverridesIntent, Source};
    use uuid::Uuid;

    fn check(event: SettingsEvent, expected: Value) {
        assert_eq!(event_json(&event), expected);
    }

    #[test]
    fn events_show_their_envelope_and_body_fields() {
        let envelope = |version: i64, body: SettingsBody| SettingsEvent {
            settings_version: version,
            change_id: Uuid::from_u128(1),
            key: "sparfa.retrain_growth".into(),
            actor: "ops".into(),
            reason: "tune".into(),
            occurred_at_micros: 1_500_000_000_000_000,
            body,
        };
        let common = |version: i64, type_name: &str| {
            json!({
                "settings_version": version,
                "change_id": "00000000-0000-0000-0000-000000000001",
                "key": "sparfa.retrain_growth",
                "type": type_name,
                "actor": "ops",
                "reason": "tune",
                "occurred_at": "2017-07-14T02:40:00.000000Z",
            })
        };
        let with = |mut base: Value, extra: Value| {
            if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
                base.extend(extra);
            }
            base
        };
        check(
            envelope(
                2,
                SettingsBody::GlobalDefaultChanged {
                    value: SettingValue::Float(0.2),
                    overrides: OverridesIntent::Keep,
                    applies_to: biglearn_settings::AppliesTo::All,
                    existing_course_cutoff: 4,
                },
            ),
            with(
                common(2, "global_default_changed"),
                json!({"value": 0.2, "overrides": "keep", "applies_to": "all", "existing_course_cutoff": 4}),
            ),
        );
        check(
            envelope(3, SettingsBody::KillSwitchSet { engaged: false }),
            with(common(3, "kill_switch_set"), json!({"engaged": false})),
        );
        check(
            envelope(
                4,
                SettingsBody::CourseOverrideCleared {
                    course_uuid: CourseUuid(Uuid::from_u128(2)),
                },
            ),
            with(
                common(4, "course_override_cleared"),
                json!({"course_uuid": "00000000-0000-0000-0000-000000000002"}),
            ),
        );
        assert_eq!(Source::Pinned.as_str(), "pinned");
    }
}
