//! The admin endpoints (docs/design/api.md §7): gap fills, gap listing and settings.

use serde::Deserialize;
use serde_json::{Map, Value};

use biglearn_domain::events::{StreamKind, Timestamp};
use biglearn_domain::ids::{CourseUuid, SequenceNumber};

use super::validate::{
    object, opt, req, ObjectSchema, Schema, BOOL, DATETIME, LIMIT_1_1000, MAX_NON_NEGATIVE_INTEGER,
    NON_NEGATIVE_INTEGER, UUID,
};

static STREAM: Schema = Schema::Enum(&["course", "ecosystem"]);
static REASON: Schema = Schema::Str {
    min_chars: 1,
    max_chars: 500,
};
static VALUE: Schema = Schema::Scalar;
static VALUE_TYPE_NAMES: [&str; 4] = ["bool", "int", "float", "string"];

/// A setting key: 1..200 characters, lower-case dotted words such as
/// `scheduler.default_num_pes_per_book_container` (docs/design/operations.md §6.5).
static SETTING_KEY: Schema = Schema::Checked {
    schema: &Schema::Str {
        min_chars: 1,
        max_chars: 200,
    },
    check: check_setting_key,
};

fn check_setting_key(value: &Value) -> Option<String> {
    let key = value.as_str()?;
    let is_word = |word: &str| {
        !word.is_empty()
            && word
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    };
    (!key.split('.').all(is_word)).then(|| {
        "expected a setting key: words of a-z, 0-9 and _ separated by single dots".to_owned()
    })
}

static GAP_SEQUENCE_NUMBER: Schema = Schema::Integer {
    min: 1,
    max: MAX_NON_NEGATIVE_INTEGER,
};

pub(crate) static FILL_SEQUENCE_GAP: Schema = Schema::Object(ObjectSchema {
    fields: &[
        req("stream", &STREAM),
        req("aggregate_uuid", &UUID),
        req("sequence_number", &GAP_SEQUENCE_NUMBER),
        opt("sequence_number_to", &GAP_SEQUENCE_NUMBER),
        req("reason", &REASON),
    ],
    check: Some(check_range_is_ascending),
});

/// A range fill (D13) ends at or after its first slot.
fn check_range_is_ascending(map: &Map<String, Value>) -> Vec<(Option<&'static str>, String)> {
    match (
        map.get("sequence_number").and_then(Value::as_i64),
        map.get("sequence_number_to").and_then(Value::as_i64),
    ) {
        (Some(from), Some(to)) if to < from => vec![(
            Some("sequence_number_to"),
            format!("expected sequence_number_to ≥ sequence_number ({from})"),
        )],
        _ => Vec::new(),
    }
}

pub(crate) static LIST_SEQUENCE_GAPS: Schema =
    object(&[req("stream", &STREAM), req("limit", &LIMIT_1_1000)]);

pub(crate) static SETTINGS_DEFINE: Schema = Schema::Object(ObjectSchema {
    fields: &[
        req("key", &SETTING_KEY),
        req("value_type", &Schema::Enum(&VALUE_TYPE_NAMES)),
        req("scope", &Schema::Enum(&["global", "course"])),
        req("default", &VALUE),
        opt("kill_value", &VALUE),
        req(
            "description",
            &Schema::Str {
                min_chars: 1,
                max_chars: 1000,
            },
        ),
        req("reason", &REASON),
    ],
    check: Some(check_values_match_value_type),
});

/// `default` and `kill_value` must be of the declared `value_type` (docs/design/operations.md
/// §6.3).
fn check_values_match_value_type(map: &Map<String, Value>) -> Vec<(Option<&'static str>, String)> {
    let Some(value_type) = map
        .get("value_type")
        .and_then(Value::as_str)
        .and_then(SettingValueType::parse)
    else {
        return Vec::new();
    };
    ["default", "kill_value"]
        .into_iter()
        .filter(|member| {
            map.get(*member)
                .is_some_and(|value| is_scalar(value) && !value_type.admits(value))
        })
        .map(|member| {
            (
                Some(member),
                format!("expected a {} value (value_type)", value_type.as_str()),
            )
        })
        .collect()
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::Bool(_) | Value::Number(_) | Value::String(_))
}

pub(crate) static SETTINGS_CHANGE_DEFAULT: Schema = object(&[
    req("key", &SETTING_KEY),
    req("value", &VALUE),
    req("overrides", &Schema::Enum(&["keep", "reset"])),
    req("applies_to", &Schema::Enum(&["all", "new_courses"])),
    req("reason", &REASON),
]);

pub(crate) static SETTINGS_SET_COURSE_OVERRIDE: Schema = object(&[
    req("key", &SETTING_KEY),
    req("course_uuid", &UUID),
    req("value", &VALUE),
    req("reason", &REASON),
]);

pub(crate) static SETTINGS_CLEAR_COURSE_OVERRIDE: Schema = object(&[
    req("key", &SETTING_KEY),
    req("course_uuid", &UUID),
    req("reason", &REASON),
]);

pub(crate) static SETTINGS_KILL_SWITCH: Schema = object(&[
    req("key", &SETTING_KEY),
    req("engaged", &BOOL),
    req("reason", &REASON),
]);

pub(crate) static SETTINGS_GET: Schema = object(&[
    req("key", &SETTING_KEY),
    opt("course_uuid", &UUID),
    opt("as_of_version", &NON_NEGATIVE_INTEGER),
]);

pub(crate) static SETTINGS_LIST: Schema = object(&[opt("course_uuid", &UUID)]);

pub(crate) static SETTINGS_AUDIT: Schema = object(&[
    opt("key", &SETTING_KEY),
    opt("course_uuid", &UUID),
    opt(
        "actor",
        &Schema::Str {
            min_chars: 1,
            max_chars: 200,
        },
    ),
    opt("from", &DATETIME),
    opt("to", &DATETIME),
    opt("after_version", &NON_NEGATIVE_INTEGER),
    req("limit", &LIMIT_1_1000),
]);

/// The type of a setting's values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingValueType {
    Bool,
    Int,
    Float,
    String,
}

impl SettingValueType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingValueType::Bool => "bool",
            SettingValueType::Int => "int",
            SettingValueType::Float => "float",
            SettingValueType::String => "string",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<SettingValueType> {
        [
            SettingValueType::Bool,
            SettingValueType::Int,
            SettingValueType::Float,
            SettingValueType::String,
        ]
        .into_iter()
        .find(|value_type| value_type.as_str() == name)
    }

    /// Whether a JSON value is of this type: `int` takes integers written without
    /// fraction or exponent, `float` takes any number.
    pub fn admits(self, value: &Value) -> bool {
        match self {
            SettingValueType::Bool => value.is_boolean(),
            SettingValueType::Int => value.is_i64(),
            SettingValueType::Float => value.is_number(),
            SettingValueType::String => value.is_string(),
        }
    }
}

/// Whether a setting may be overridden per course.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingScope {
    Global,
    Course,
}

/// What a global default change does to existing course overrides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverridesPolicy {
    Keep,
    Reset,
}

/// Which courses a global default change reaches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    All,
    NewCourses,
}

/// `{}`: the rebuild endpoints take no parameters.
pub(crate) static EMPTY: Schema = object(&[]);

pub(crate) static STATE_DIGEST: Schema = object(&[opt("list_sequences", &BOOL)]);

pub(crate) static RESULTS_LIST: Schema = object(&[
    req("limit", &LIMIT_1_1000),
    opt(
        "after_key",
        &Schema::Str {
            min_chars: 0,
            max_chars: 1000,
        },
    ),
]);

/// `/admin/state_digest`: the state hash's parts and the applied per-aggregate sequence
/// numbers, from one consistent read (`biglearn staging verify`).
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDigestRequest {
    /// Also list `(stream, aggregate, next_sequence_number)` of every aggregate.
    #[serde(default)]
    pub list_sequences: bool,
}

/// `/admin/results/list`: stored results in result-key order, a page at a time
/// (`biglearn results diff`).
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsListRequest {
    pub limit: u32,
    /// Only keys strictly after this one.
    pub after_key: Option<String>,
}

pub(crate) static DLQ_LIST: Schema = object(&[
    req("limit", &LIMIT_1_1000),
    opt("after_offset", &NON_NEGATIVE_INTEGER),
]);

pub(crate) static DLQ_REPLAY: Schema = object(&[
    req("partition", &NON_NEGATIVE_INTEGER),
    req(
        "offsets",
        &Schema::Array {
            items: &NON_NEGATIVE_INTEGER,
            min_items: 1,
            max_items: 1000,
        },
    ),
    req("reason", &REASON),
]);

/// `/admin/dlq/list`: dead letters in (partition, offset) order, after `after_offset`
/// within each partition.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqListRequest {
    pub limit: u32,
    pub after_offset: Option<i64>,
}

/// `/admin/dlq/replay`: re-append these dead letters' original records to their source
/// topics (after the cause is fixed). Identity and slot dedupe make a replay idempotent.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqReplayRequest {
    pub partition: i32,
    pub offsets: Vec<i64>,
    pub reason: String,
}

/// `/admin/fill_sequence_gap`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillSequenceGapRequest {
    pub stream: StreamKind,
    pub aggregate_uuid: uuid::Uuid,
    /// ≥ 1.
    pub sequence_number: SequenceNumber,
    /// A range fill (D13): every missing slot of `[sequence_number, sequence_number_to]`.
    pub sequence_number_to: Option<SequenceNumber>,
    pub reason: String,
}

/// `/admin/list_sequence_gaps`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSequenceGapsRequest {
    pub stream: StreamKind,
    pub limit: u32,
}

/// `/admin/settings/define`. `default` and `kill_value` are scalars of `value_type`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefineSettingRequest {
    pub key: String,
    pub value_type: SettingValueType,
    pub scope: SettingScope,
    pub default: Value,
    pub kill_value: Option<Value>,
    pub description: String,
    pub reason: String,
}

/// `/admin/settings/change_default`. `value` is a scalar; its type against the key's
/// definition is the writer's check (it needs the settings state).
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeDefaultRequest {
    pub key: String,
    pub value: Value,
    pub overrides: OverridesPolicy,
    pub applies_to: AppliesTo,
    pub reason: String,
}

/// `/admin/settings/set_course_override`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCourseOverrideRequest {
    pub key: String,
    pub course_uuid: CourseUuid,
    pub value: Value,
    pub reason: String,
}

/// `/admin/settings/clear_course_override`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearCourseOverrideRequest {
    pub key: String,
    pub course_uuid: CourseUuid,
    pub reason: String,
}

/// `/admin/settings/kill_switch`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchRequest {
    pub key: String,
    pub engaged: bool,
    pub reason: String,
}

/// `/admin/settings/get`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetSettingRequest {
    pub key: String,
    pub course_uuid: Option<CourseUuid>,
    pub as_of_version: Option<i64>,
}

/// `/admin/settings/list`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSettingsRequest {
    pub course_uuid: Option<CourseUuid>,
}

/// `/admin/settings/audit`: the filters combine with AND.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettingsRequest {
    pub key: Option<String>,
    pub course_uuid: Option<CourseUuid>,
    pub actor: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub after_version: Option<i64>,
    pub limit: u32,
}

/// A validated admin request: one variant per endpoint of docs/design/api.md §7.
#[derive(Clone, PartialEq, Debug)]
pub enum AdminRequest {
    FillSequenceGap(FillSequenceGapRequest),
    ListSequenceGaps(ListSequenceGapsRequest),
    /// Start a blue/green rebuild of the derived state.
    Rebuild,
    /// Progress or outcome of the last rebuild.
    RebuildStatus,
    DlqList(DlqListRequest),
    DlqReplay(DlqReplayRequest),
    StateDigest(StateDigestRequest),
    ResultsList(ResultsListRequest),
    DefineSetting(DefineSettingRequest),
    ChangeDefault(ChangeDefaultRequest),
    SetCourseOverride(SetCourseOverrideRequest),
    ClearCourseOverride(ClearCourseOverrideRequest),
    KillSwitch(KillSwitchRequest),
    GetSetting(GetSettingRequest),
    ListSettings(ListSettingsRequest),
    AuditSettings(AuditSettingsRequest),
}
