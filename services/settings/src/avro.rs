//! Conversion between [`SettingsEvent`] and the Avro `SettingsEvent` of
//! `schemas/settings_event`, and the `<prefix>.settings` record (key = setting key).

use biglearn_domain::ids::CourseUuid;
use biglearn_events::apache_avro::types::Value;
use biglearn_events::{
    decode_value, encode_value, EncodedRecord, NoSchemaRegistry, SchemaFamily, SchemaLookup,
    WireFormat, HEADER_ENCODING, HEADER_EVENT_TYPE,
};
use uuid::Uuid;

use crate::error::SettingsError;
use crate::event::{Definition, SettingsBody, SettingsEvent};
use crate::value::{AppliesTo, OverridesIntent, Scope, SettingValue, ValueType};

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn symbol(idx: usize, name: &str) -> Value {
    Value::Enum(idx as u32, name.to_owned())
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

fn index_of<T: PartialEq>(all: &[T], item: &T) -> usize {
    all.iter()
        .position(|candidate| candidate == item)
        .unwrap_or(0)
}

/// The event as a generic Avro value of the current schema.
pub fn to_avro_value(event: &SettingsEvent) -> Value {
    let (branch, body) = match &event.body {
        SettingsBody::SettingDefined(definition) => (
            0,
            record(vec![
                (
                    "value_type",
                    symbol(
                        index_of(&ValueType::ALL, &definition.value_type),
                        definition.value_type.as_str(),
                    ),
                ),
                (
                    "scope",
                    symbol(
                        index_of(&Scope::ALL, &definition.scope),
                        definition.scope.as_str(),
                    ),
                ),
                ("default", string(&definition.default.to_text())),
                (
                    "kill_value",
                    match &definition.kill_value {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(kill_value) => {
                            Value::Union(1, Box::new(string(&kill_value.to_text())))
                        }
                    },
                ),
                ("description", string(&definition.description)),
            ]),
        ),
        SettingsBody::GlobalDefaultChanged {
            value,
            overrides,
            applies_to,
            existing_course_cutoff,
        } => (
            1,
            record(vec![
                ("value", string(&value.to_text())),
                (
                    "overrides",
                    symbol(
                        index_of(&OverridesIntent::ALL, overrides),
                        overrides.as_str(),
                    ),
                ),
                (
                    "applies_to",
                    symbol(index_of(&AppliesTo::ALL, applies_to), applies_to.as_str()),
                ),
                (
                    "existing_course_cutoff",
                    Value::Long(*existing_course_cutoff),
                ),
            ]),
        ),
        SettingsBody::ValuePinned { course_uuid, value } => (
            2,
            record(vec![
                ("course_uuid", Value::Uuid(course_uuid.0)),
                ("value", string(&value.to_text())),
            ]),
        ),
        SettingsBody::CourseOverrideSet { course_uuid, value } => (
            3,
            record(vec![
                ("course_uuid", Value::Uuid(course_uuid.0)),
                ("value", string(&value.to_text())),
            ]),
        ),
        SettingsBody::CourseOverrideCleared { course_uuid } => {
            (4, record(vec![("course_uuid", Value::Uuid(course_uuid.0))]))
        }
        SettingsBody::KillSwitchSet { engaged } => {
            (5, record(vec![("engaged", Value::Boolean(*engaged))]))
        }
    };
    record(vec![
        ("settings_version", Value::Long(event.settings_version)),
        ("change_id", Value::Uuid(event.change_id)),
        ("key", string(&event.key)),
        ("actor", string(&event.actor)),
        ("reason", string(&event.reason)),
        (
            "occurred_at",
            Value::TimestampMicros(event.occurred_at_micros),
        ),
        ("body", Value::Union(branch, Box::new(body))),
    ])
}

/// The event, single-object encoded.
pub fn encode_settings_event(event: &SettingsEvent) -> Result<Vec<u8>, SettingsError> {
    encode_value(
        SchemaFamily::SettingsEvent,
        to_avro_value(event),
        WireFormat::SingleObject,
    )
    .map_err(|error| SettingsError::Unencodable {
        detail: error.to_string(),
    })
}

/// The `<prefix>.settings` record of an event: key = setting key, with `bl-event-type`
/// (the body's name) and `bl-encoding` headers.
pub fn settings_record(event: &SettingsEvent) -> Result<EncodedRecord, SettingsError> {
    Ok(EncodedRecord {
        key: event.key.clone().into_bytes(),
        value: encode_settings_event(event)?,
        headers: vec![
            (
                HEADER_EVENT_TYPE.to_owned(),
                event.body.type_name().as_bytes().to_vec(),
            ),
            (
                HEADER_ENCODING.to_owned(),
                WireFormat::SingleObject.header_value().as_bytes().to_vec(),
            ),
        ],
    })
}

/// Decodes a settings record value in either framing (no registry: single-object only).
pub fn decode_settings_event(bytes: &[u8]) -> Result<SettingsEvent, SettingsError> {
    decode_settings_event_with(bytes, &NoSchemaRegistry)
}

/// Decodes a settings record value, looking Confluent schema ids up in `lookup`.
pub fn decode_settings_event_with(
    bytes: &[u8],
    lookup: &dyn SchemaLookup,
) -> Result<SettingsEvent, SettingsError> {
    let value = decode_value(SchemaFamily::SettingsEvent, bytes, lookup).map_err(|error| {
        SettingsError::Undecodable {
            detail: error.to_string(),
        }
    })?;
    from_avro_value(&value)
}

fn undecodable(detail: impl Into<String>) -> SettingsError {
    SettingsError::Undecodable {
        detail: detail.into(),
    }
}

/// The fields of a record value, by name.
struct Fields<'v>(&'v [(String, Value)]);

impl<'v> Fields<'v> {
    fn of(value: &'v Value, what: &str) -> Result<Fields<'v>, SettingsError> {
        match value {
            Value::Record(fields) => Ok(Fields(fields)),
            _ => Err(undecodable(format!("{what} is not a record"))),
        }
    }

    fn get(&self, name: &str) -> Result<&'v Value, SettingsError> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
            .ok_or_else(|| undecodable(format!("field {name} is missing")))
    }

    fn long(&self, name: &str) -> Result<i64, SettingsError> {
        match self.get(name)? {
            Value::Long(long) | Value::TimestampMicros(long) => Ok(*long),
            _ => Err(undecodable(format!("field {name} is not a long"))),
        }
    }

    fn string(&self, name: &str) -> Result<&'v str, SettingsError> {
        match self.get(name)? {
            Value::String(text) => Ok(text),
            _ => Err(undecodable(format!("field {name} is not a string"))),
        }
    }

    fn uuid(&self, name: &str) -> Result<Uuid, SettingsError> {
        match self.get(name)? {
            Value::Uuid(uuid) => Ok(*uuid),
            Value::String(text) => biglearn_domain::ids::parse_hyphenated_uuid(text)
                .ok_or_else(|| undecodable(format!("field {name} is not a uuid"))),
            _ => Err(undecodable(format!("field {name} is not a uuid"))),
        }
    }

    fn symbol(&self, name: &str) -> Result<&'v str, SettingsError> {
        match self.get(name)? {
            Value::Enum(_, symbol) => Ok(symbol),
            _ => Err(undecodable(format!("field {name} is not an enum"))),
        }
    }

    fn value(&self, name: &str) -> Result<SettingValue, SettingsError> {
        let text = self.string(name)?;
        SettingValue::from_text(text)
            .ok_or_else(|| undecodable(format!("field {name} is not a JSON scalar: {text}")))
    }
}

fn parse_symbol<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    symbol: &str,
) -> Result<T, SettingsError> {
    all.iter()
        .copied()
        .find(|item| name(*item) == symbol)
        .ok_or_else(|| undecodable(format!("unknown symbol {symbol}")))
}

/// The event of a generic Avro value of the current schema.
pub fn from_avro_value(value: &Value) -> Result<SettingsEvent, SettingsError> {
    let fields = Fields::of(value, "the settings event")?;
    let (branch, body) = match fields.get("body")? {
        Value::Union(branch, body) => (*branch, body.as_ref()),
        _ => return Err(undecodable("field body is not a union")),
    };
    let body_fields = Fields::of(body, "the body")?;
    let course = || body_fields.uuid("course_uuid").map(CourseUuid);
    let body = match branch {
        0 => SettingsBody::SettingDefined(Definition {
            value_type: parse_symbol(
                &ValueType::ALL,
                ValueType::as_str,
                body_fields.symbol("value_type")?,
            )?,
            scope: parse_symbol(&Scope::ALL, Scope::as_str, body_fields.symbol("scope")?)?,
            default: body_fields.value("default")?,
            kill_value: match body_fields.get("kill_value")? {
                Value::Union(_, inner) if matches!(inner.as_ref(), Value::Null) => None,
                Value::Null => None,
                Value::Union(_, inner) => match inner.as_ref() {
                    Value::String(text) => {
                        Some(SettingValue::from_text(text).ok_or_else(|| {
                            undecodable(format!("kill_value is not a JSON scalar: {text}"))
                        })?)
                    }
                    _ => return Err(undecodable("kill_value is not a string")),
                },
                _ => return Err(undecodable("kill_value is not a union")),
            },
            description: body_fields.string("description")?.to_owned(),
        }),
        1 => SettingsBody::GlobalDefaultChanged {
            value: body_fields.value("value")?,
            overrides: parse_symbol(
                &OverridesIntent::ALL,
                OverridesIntent::as_str,
                body_fields.symbol("overrides")?,
            )?,
            applies_to: parse_symbol(
                &AppliesTo::ALL,
                AppliesTo::as_str,
                body_fields.symbol("applies_to")?,
            )?,
            existing_course_cutoff: body_fields.long("existing_course_cutoff")?,
        },
        2 => SettingsBody::ValuePinned {
            course_uuid: course()?,
            value: body_fields.value("value")?,
        },
        3 => SettingsBody::CourseOverrideSet {
            course_uuid: course()?,
            value: body_fields.value("value")?,
        },
        4 => SettingsBody::CourseOverrideCleared {
            course_uuid: course()?,
        },
        5 => SettingsBody::KillSwitchSet {
            engaged: match body_fields.get("engaged")? {
                Value::Boolean(engaged) => *engaged,
                _ => return Err(undecodable("field engaged is not a boolean")),
            },
        },
        other => return Err(undecodable(format!("unknown body branch {other}"))),
    };
    Ok(SettingsEvent {
        settings_version: fields.long("settings_version")?,
        change_id: fields.uuid("change_id")?,
        key: fields.string("key")?.to_owned(),
        actor: fields.string("actor")?.to_owned(),
        reason: fields.string("reason")?.to_owned(),
        occurred_at_micros: fields.long("occurred_at")?,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: i64, body: SettingsBody) -> SettingsEvent {
        SettingsEvent {
            settings_version: version,
            change_id: Uuid::from_u128(900 + version as u128),
            key: "scheduler.default_num_pes_per_book_container".into(),
            actor: "ops@example.org".into(),
            reason: "term start".into(),
            occurred_at_micros: 1_700_000_000_000_000 + version,
            body,
        }
    }

    fn check(event: SettingsEvent) {
        let record = settings_record(&event).unwrap();
        assert_eq!(record.key, event.key.as_bytes());
        assert_eq!(decode_settings_event(&record.value).unwrap(), event);
        assert!(decode_settings_event(&record.value[..record.value.len() - 1]).is_err());
    }

    #[test]
    fn every_body_round_trips_through_avro() {
        let course = CourseUuid(Uuid::from_u128(7));
        let bodies = [
            SettingsBody::SettingDefined(Definition {
                value_type: ValueType::Float,
                scope: Scope::Global,
                default: SettingValue::Float(0.1),
                kill_value: None,
                description: "growth".into(),
            }),
            SettingsBody::SettingDefined(Definition {
                value_type: ValueType::Bool,
                scope: Scope::Course,
                default: SettingValue::Bool(true),
                kill_value: Some(SettingValue::Bool(false)),
                description: "publish".into(),
            }),
            SettingsBody::GlobalDefaultChanged {
                value: SettingValue::Int(4),
                overrides: OverridesIntent::Reset,
                applies_to: AppliesTo::NewCourses,
                existing_course_cutoff: -1,
            },
            SettingsBody::ValuePinned {
                course_uuid: course,
                value: SettingValue::String("a \"quoted\" name".into()),
            },
            SettingsBody::CourseOverrideSet {
                course_uuid: course,
                value: SettingValue::Float(3.0),
            },
            SettingsBody::CourseOverrideCleared {
                course_uuid: course,
            },
            SettingsBody::KillSwitchSet { engaged: true },
        ];
        for (idx, body) in bodies.into_iter().enumerate() {
            check(event(idx as i64 + 1, body));
        }
    }

    #[test]
    fn foreign_bytes_are_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xc3\x01", b"{\"json\": true}"] {
            assert!(matches!(
                decode_settings_event(bytes),
                Err(SettingsError::Undecodable { .. })
            ));
        }
    }
}
